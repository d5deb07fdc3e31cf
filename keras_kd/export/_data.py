"""Reads arrays, `(x, y)` tuples, datasets and iterables as NumPy batches.

Export and the parity report accept the same data forms as `Model.fit`, with
one input tensor per batch. Nothing here imports TensorFlow: a
`tf.data.Dataset` is recognised by its `as_numpy_iterator` method.
"""

import keras
import numpy as np

from keras_kd.utils import validation


def _is_array(value):
    return isinstance(value, np.ndarray) or (
        hasattr(value, "shape") and hasattr(value, "dtype")
    )


def _to_numpy(value):
    if isinstance(value, np.ndarray):
        return value
    return np.asarray(keras.ops.convert_to_numpy(value))


def _unpack(name, batch, data):
    """Returns `(x, y)` NumPy arrays from one batch; `y` may be `None`."""
    if _is_array(batch):
        return _to_numpy(batch), None
    if isinstance(batch, tuple) and 1 <= len(batch) <= 3:
        x, y, _ = keras.utils.unpack_x_y_sample_weight(batch)
        if _is_array(x) and (y is None or _is_array(y)):
            x = _to_numpy(x)
            if y is None:
                return x, None
            y = _to_numpy(y)
            if y.ndim == 0 or len(y) != len(x):
                raise ValueError(
                    f"Argument `{name}` must hold one label per input, but a "
                    f"batch holds {len(x)} inputs and "
                    f"{1 if y.ndim == 0 else len(y)} labels. Received: "
                    f"{name} with x.shape={tuple(x.shape)} and "
                    f"y.shape={tuple(y.shape)}. Pass `(x, y)` with "
                    "`len(x) == len(y)`, or `x` alone for a report without "
                    "accuracies."
                )
            return x, y
    raise export_data_type_error(name, data)


def iter_batches(name, data):
    """Yields `(x, y)` NumPy batches from the supported data forms.

    Args:
        name: String, the argument name used in error messages.
        data: A NumPy array or tensor of inputs, an `(x, y)` or
            `(x, y, sample_weight)` tuple of arrays, a `tf.data.Dataset`, or
            any iterable of such batches (a generator, a list, a
            `keras.utils.PyDataset`).

    Returns:
        A generator of `(x, y)` pairs; `y` is `None` when there are no
        labels.
    """
    if _is_array(data) or isinstance(data, tuple):
        yield _unpack(name, data, data)
        return
    if hasattr(data, "as_numpy_iterator"):
        batches = data.as_numpy_iterator()
    elif isinstance(data, (dict, str, bytes)) or not hasattr(data, "__iter__"):
        raise export_data_type_error(name, data)
    else:
        batches = iter(data)
    for batch in batches:
        yield _unpack(name, batch, data)


def collect(name, data, max_examples=None):
    """Concatenates the batches of `data` into `(x, y)` arrays.

    Stops once `max_examples` examples are read (all of them if `None`).
    `y` is `None` if any batch lacks labels.
    """
    xs, ys, count = [], [], 0
    for x, y in iter_batches(name, data):
        xs.append(x)
        ys.append(y)
        count += len(x)
        if max_examples is not None and count >= max_examples:
            break
    if not xs or count == 0:
        raise empty_data_error(name, data)
    x = np.concatenate(xs)[:max_examples]
    if any(y is None for y in ys):
        return x, None
    return x, np.concatenate(ys)[:max_examples]


def calibration_samples(data, steps, shape, dtype):
    """Cuts `data` into at most `steps` calibration batches for the converter.

    Each batch holds one example, as the TFLite converter expects, or the
    signature's fixed batch size when the student was built with one.

    Args:
        data: Representative data in any form `iter_batches` reads; labels
            are dropped.
        steps: Positive integer, the maximum number of batches.
        shape: Tuple, the student's input shape (`None` for free sizes).
        dtype: The student's input dtype.

    Returns:
        A list of NumPy arrays, each of shape `(batch, *shape[1:])`.
    """
    batch = shape[0] if isinstance(shape[0], int) else 1
    samples, pending, seen = [], [], 0
    for x, _ in iter_batches("representative_data", data):
        check_shape("representative_data", x.shape, shape)
        check_finite("representative_data", x, seen)
        seen += len(x)
        pending.extend(np.asarray(x, dtype=dtype))
        while len(pending) >= batch and len(samples) < steps:
            samples.append(np.stack(pending[:batch]))
            del pending[:batch]
        if len(samples) >= steps:
            break
    if not samples:
        raise empty_data_error("representative_data", data)
    return samples


def check_finite(name, x, offset=0):
    """Refuses inputs holding NaN or Inf (int8 calibration cannot use them).

    The converter would take its activation ranges from them and write an
    unquantized or damaged model without a word.
    """
    if not np.issubdtype(x.dtype, np.floating):
        return
    finite = np.isfinite(x)
    if finite.all():
        return
    bad = ~finite.reshape(len(x), -1).all(axis=-1)
    first = offset + int(np.argmax(bad))
    raise ValueError(
        f"Argument `{name}` must hold finite numbers: int8 calibration "
        "measures the activation ranges on these inputs, and NaN or Inf "
        "would give an unquantized or damaged model. Received: "
        f"{name} with {int((~finite).sum())} NaN or Inf values in "
        f"{int(bad.sum())} example(s), the first at index {first}. Remove "
        "or repair those examples (for example keep "
        "`x[np.isfinite(x).reshape(len(x), -1).all(axis=1)]`)."
    )


def check_shape(name, received, expected):
    """Checks all axes but the batch axis against `expected` (`None` = any)."""
    received = tuple(received)
    ok = len(received) == len(expected) and all(
        e is None or e == r for e, r in zip(expected[1:], received[1:])
    )
    if not ok:
        raise input_shape_error(name, tuple(expected), received)


# Error messages.


def empty_data_error(name, data):
    return ValueError(
        f"Argument `{name}` yielded no examples. Pass at least one batch of "
        "inputs (int8 calibration and the parity report measure on them). "
        f"Received: {name}={validation.short_repr(data)}"
    )


def export_data_type_error(name, data):
    return TypeError(
        f"Argument `{name}` must be a NumPy array or tensor of inputs, an "
        "`(x, y)` or `(x, y, sample_weight)` tuple, a `tf.data.Dataset` or "
        "an iterable of such batches, with one input tensor per batch. "
        f"Received: {name}={validation.short_repr(data)} of type "
        f"{type(data).__name__}"
    )


def input_shape_error(name, expected, received):
    return ValueError(
        f"Argument `{name}` holds inputs of shape {received}, but the model "
        f"takes inputs of shape {expected} (`None` is any size). Reshape the "
        f"data to match the student's input. Received: {name} of shape "
        f"{received}"
    )


def multiple_io_error(what, count):
    return NotImplementedError(
        f"keras_kd.export runs and calibrates models with one input and one "
        f"output, but this model has {count} {what}s. Export it with "
        "`model.export(path, format='litert')` and drive "
        "`ai_edge_litert.interpreter.Interpreter` yourself. Received: "
        f"{count} {what}s"
    )
