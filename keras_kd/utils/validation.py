"""Generic argument checks shared by keras_kd's modules.

Numbers, probabilities, names and models: each message follows the Keras
sentence (the argument in backticks, what is expected, the value received,
and how to fix it). Error text specific to one area (data, export, tuning,
the command line) lives in the module that raises it, as in Keras and
KerasTuner. Checks of paths and files are in `keras_kd.utils.io`.

Importing this module does not import Keras (the command line parses its
arguments before loading it).
"""

import difflib
import math
import numbers


def check_positive_number(name, value):
    """Returns `value` as a float if it is a positive finite number."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(
            f"Argument `{name}` must be a positive finite number. "
            f"Received: {name}={value!r} of type {type(value).__name__}"
        )
    if not math.isfinite(value) or value <= 0:
        raise ValueError(
            f"Argument `{name}` must be a positive finite number. "
            f"Received: {name}={value}"
        )
    return float(value)


def check_non_negative_number(name, value):
    """Returns `value` as a float if it is a finite number >= 0."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(
            f"Argument `{name}` must be a finite number >= 0. "
            f"Received: {name}={value!r} of type {type(value).__name__}"
        )
    if not math.isfinite(value) or value < 0:
        raise ValueError(
            f"Argument `{name}` must be a finite number >= 0. "
            f"Received: {name}={value}"
        )
    return float(value)


def check_unit_interval(name, value):
    """Returns `value` as a float if it lies in [0, 1]."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(
            f"Argument `{name}` must be a number in [0, 1]. "
            f"Received: {name}={value!r} of type {type(value).__name__}"
        )
    if not math.isfinite(value) or not 0.0 <= value <= 1.0:
        raise ValueError(
            f"Argument `{name}` must be a number in [0, 1]. "
            f"Received: {name}={value}"
        )
    return float(value)


def check_one_of(name, value, options):
    """Returns `value` if it is one of `options`, else a helpful error."""
    if value in options:
        return value
    message = (
        f"Argument `{name}` must be one of {sorted(options)}. "
        f"Received: {name}={value!r}"
    )
    if isinstance(value, str):
        close = difflib.get_close_matches(value, [str(o) for o in options])
        if close:
            message += f". Did you mean {close[0]!r}?"
    raise ValueError(message)


def unknown_name_error(kind, name, known, where=""):
    """Builds the ValueError for a name that does not exist."""
    close = difflib.get_close_matches(str(name), list(known), n=3)
    hint = f" Close matches: {close}." if close else ""
    where = f" in {where}" if where else ""
    return ValueError(
        f"Unknown {kind} {name!r}{where}. Expected one of "
        f"{sorted(known)}.{hint}"
    )


def check_model(role, model):
    """Checks that `model` is a built `keras.Model`."""
    import keras

    if not isinstance(model, keras.Model):
        raise TypeError(
            f"Argument `{role}` must be a `keras.Model`. "
            f"Received: {role}={model!r} of type {type(model).__name__}"
        )
    if not model.built:
        raise ValueError(
            f"The {role} model {model.name!r} is not built, so its weights "
            f"and output shape are unknown. Build it first: give it an "
            f"`keras.Input`, call `{role}.build(input_shape)`, or call it on a "
            f"batch of data. Received: {role}.built=False"
        )
    return model


def cache_mismatch_error(what, expected, received):
    return ValueError(
        f"The cached teacher outputs do not match this Distiller: {what}. "
        f"Expected: {expected}. Received: {received}. Recompute the cache "
        "with `keras_kd.data.cache_teacher_outputs` for this teacher and "
        "these features."
    )


def check_number_at_least(name, value, minimum):
    """Returns `value` as a float if it is a finite number >= `minimum`."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(
            f"Argument `{name}` must be a finite number >= {minimum}. "
            f"Received: {name}={value!r} of type {type(value).__name__}"
        )
    if not math.isfinite(value) or value < minimum:
        raise ValueError(
            f"Argument `{name}` must be a finite number >= {minimum}. "
            f"Received: {name}={value}"
        )
    return float(value)


def check_non_negative_integer(name, value):
    """Returns `value` if it is an integer >= 0."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(
            f"Argument `{name}` must be an integer >= 0. "
            f"Received: {name}={value!r} of type {type(value).__name__}"
        )
    if value < 0:
        raise ValueError(
            f"Argument `{name}` must be an integer >= 0. "
            f"Received: {name}={value}"
        )
    return int(value)


def check_positive_integer(name, value):
    """Returns `value` if it is an integer >= 1."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(
            f"Argument `{name}` must be a positive integer. "
            f"Received: {name}={value!r} of type {type(value).__name__}"
        )
    if value < 1:
        raise ValueError(
            f"Argument `{name}` must be a positive integer. "
            f"Received: {name}={value}"
        )
    return int(value)


def check_bool(name, value):
    """Returns `value` as a bool if it is a Python or NumPy boolean."""
    import numpy as np

    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(
            f"Argument `{name}` must be a boolean. "
            f"Received: {name}={value!r} of type {type(value).__name__}"
        )
    return bool(value)


def short_repr(value, limit=80):
    """`repr(value)`, cut to `limit` characters for error messages."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


_short_repr = short_repr


def augmented_cache_error():
    return ValueError(
        "This batch carries cached teacher outputs, but the Distiller has an "
        "`augmentation`: the teacher's cached outputs belong to the original "
        "images, not to the augmented ones the student would see. Use the "
        "live teacher with augmentation (no cache), or drop `augmentation=` "
        "to train on the cache."
    )
