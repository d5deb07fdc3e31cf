"""Helpers shared by the loss modules: small `keras.ops` steps and the
errors about feature shapes that the loss functions raise."""

from keras import ops


def to_float32(x):
    return ops.cast(x, "float32")


def mean_over_inner_axes(values):
    """Reduces `(batch, d1, ..., dk)` to `(batch,)` by a mean."""
    if len(values.shape) > 1:
        values = ops.mean(values, axis=tuple(range(1, len(values.shape))))
    return values


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
