"""Small `keras.ops` helpers shared by the loss modules."""

from keras import ops


def to_float32(x):
    return ops.cast(x, "float32")


def mean_over_inner_axes(values):
    """Reduces `(batch, d1, ..., dk)` to `(batch,)` by a mean."""
    if len(values.shape) > 1:
        values = ops.mean(values, axis=tuple(range(1, len(values.shape))))
    return values
