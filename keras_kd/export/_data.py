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
            return _to_numpy(x), None if y is None else _to_numpy(y)
    raise validation.export_data_type_error(name, data)


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
        raise validation.export_data_type_error(name, data)
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
        raise validation.empty_data_error(name, data)
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
    samples, pending = [], []
    for x, _ in iter_batches("representative_data", data):
        check_shape("representative_data", x.shape, shape)
        pending.extend(np.asarray(x, dtype=dtype))
        while len(pending) >= batch and len(samples) < steps:
            samples.append(np.stack(pending[:batch]))
            del pending[:batch]
        if len(samples) >= steps:
            break
    if not samples:
        raise validation.empty_data_error("representative_data", data)
    return samples


def check_shape(name, received, expected):
    """Checks all axes but the batch axis against `expected` (`None` = any)."""
    received = tuple(received)
    ok = len(received) == len(expected) and all(
        e is None or e == r for e, r in zip(expected[1:], received[1:])
    )
    if not ok:
        raise validation.input_shape_error(name, tuple(expected), received)
