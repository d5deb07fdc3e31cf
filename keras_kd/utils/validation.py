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


def check_student_trainable(student):
    if not student.trainable_weights:
        raise ValueError(
            f"The student model {student.name!r} has no trainable weights, so "
            "distillation cannot change it. Set `student.trainable = True` "
            "(and unfreeze its layers). Received: "
            f"len(student.trainable_weights)=0"
        )


def check_class_counts(teacher_classes, student_classes):
    if (
        teacher_classes is not None
        and student_classes is not None
        and teacher_classes != student_classes
    ):
        raise ValueError(
            "The teacher and the student must predict the same classes, but "
            f"the teacher outputs {teacher_classes} logits and the student "
            f"{student_classes}. Give the student a last layer with "
            f"{teacher_classes} units. Received: teacher classes="
            f"{teacher_classes}, student classes={student_classes}"
        )


def input_shape_mismatch_error(teacher_shape, student_shape):
    return ValueError(
        "The teacher and the student take inputs of different shapes, and no "
        "preprocessing maps the batch to both. Pass "
        "`teacher_preprocessing=` and/or `student_preprocessing=` (for example "
        "`keras.layers.Resizing(...)`) so each model receives the shape it "
        f"expects. Received: teacher input {teacher_shape}, student input "
        f"{student_shape}"
    )


def student_probabilities_error(student_name, how):
    return ValueError(
        f"The student {student_name!r} outputs probabilities ({how}), but "
        "distillation trains on logits: a softmax before the loss squashes "
        "the gradients and breaks the temperature. Build the student with "
        "`activation=None` on its last layer; add `keras.layers.Softmax()` "
        "after training if the deployed model must return probabilities."
    )


def teacher_probabilities_message(teacher_name, how):
    return (
        f"The teacher {teacher_name!r} outputs probabilities ({how}). "
        "keras_kd converts them to logits with `log(p)` (exact up to a "
        "constant, which softmax ignores). Pass `teacher_outputs='logits'` to "
        "silence this check, or `'probabilities'` to say so explicitly."
    )


def check_teacher_outputs_mode(value):
    return check_one_of(
        "teacher_outputs", value, ("auto", "logits", "probabilities")
    )


def cache_mismatch_error(what, expected, received):
    return ValueError(
        f"The cached teacher outputs do not match this Distiller: {what}. "
        f"Expected: {expected}. Received: {received}. Recompute the cache "
        "with `keras_kd.data.cache_teacher_outputs` for this teacher and "
        "these features."
    )


def missing_teacher_error():
    return ValueError(
        "This Distiller was saved without its teacher (the default, so the "
        "file holds only the student, the heads and the training state). "
        "Load it with `keras_kd.load_distiller(path, teacher=teacher)`, "
        "where `teacher` is the teacher model or the path of its `.keras` "
        "file; or save with `Distiller(..., save_teacher=True)`."
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


def _shape_text(shape):
    return str(tuple(shape))


def feature_shape_mismatch_error(loss_name, teacher_shape, student_shape):
    return ValueError(
        f"`{loss_name}` compares teacher and student features element by "
        "element, so both must have the same shape. Received: "
        f"teacher_features.shape={_shape_text(teacher_shape)}, "
        f"student_features.shape={_shape_text(student_shape)}. Put a "
        "projection on the student (for example a `Dense` or 1x1 `Conv2D` "
        "layer) so its features take the teacher's shape."
    )


def feature_rank_error(loss_name, argument, shape, expected):
    return ValueError(
        f"`{loss_name}` expects `{argument}` of {expected}. Received: "
        f"{argument}.shape={_shape_text(shape)}"
    )


def attention_spatial_mismatch_error(teacher_shape, student_shape):
    return ValueError(
        "`attention_transfer` average-pools the larger attention map down to "
        "the smaller one, which needs each spatial size of the larger map to "
        "be a multiple of the smaller one. Received: "
        f"teacher_features.shape={_shape_text(teacher_shape)}, "
        f"student_features.shape={_shape_text(student_shape)}. Pick layers "
        "whose spatial sizes divide evenly, or resize one of the maps first "
        "(for example with `keras.layers.Resizing`)."
    )


def batch_size_mismatch_error(loss_name, teacher_shape, student_shape):
    return ValueError(
        f"`{loss_name}` needs the teacher and the student features of the "
        "same samples, so both must have the same batch size. Received: "
        f"teacher_features.shape={_shape_text(teacher_shape)}, "
        f"student_features.shape={_shape_text(student_shape)}"
    )


def check_relation_batch_size(loss_name, batch_size):
    """Raises if a relation loss gets a batch with a single sample."""
    if batch_size is not None and batch_size < 2:
        raise ValueError(
            f"`{loss_name}` compares the samples of a batch with each other, "
            "so it needs at least 2 samples per batch. Received: "
            f"batch_size={batch_size}. Use a batch size of 2 or more (and "
            "`drop_remainder=True` in `tf.data`, or a dataset size that the "
            "batch size divides, so the last batch is not a single sample)."
        )
    return batch_size


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
