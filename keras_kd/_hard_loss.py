"""The hard (label) loss of the Distiller, from `compile(loss=...)`."""

import keras
from keras import ops

from keras_kd.losses._ops import mean_over_inner_axes as _mean_over_inner_axes
from keras_kd.losses.logits import _sparse_labels
from keras_kd.losses.logits import hard_cross_entropy

# Keras' string ids of cross-entropy expect probabilities by default. The
# student of a Distiller outputs logits, so these ids mean "from logits" here.
_CROSS_ENTROPY_IDS = (
    "crossentropy",
    "categorical_crossentropy",
    "sparse_categorical_crossentropy",
)


def resolve_hard_loss(loss):
    """Returns `fn(labels, logits) -> (batch_size,)` for `compile(loss=...)`.

    `None` and the cross-entropy string ids give `hard_cross_entropy` (sparse
    or one-hot labels, from logits). Other strings, functions and
    `keras.losses.Loss` objects are applied per sample.
    """
    if loss is None or (isinstance(loss, str) and loss in _CROSS_ENTROPY_IDS):
        return hard_cross_entropy
    if isinstance(loss, (list, tuple, dict)):
        raise TypeError(
            "Argument `loss` must be one loss: the student of a Distiller has "
            f"one logits output. Received: loss={loss!r}"
        )
    if isinstance(loss, str):
        loss = keras.losses.get(loss)
    if isinstance(loss, keras.losses.Loss):
        if getattr(loss, "from_logits", True) is False:
            raise ValueError(
                f"The hard loss {type(loss).__name__} has `from_logits=False`, "
                "but the student of a Distiller outputs logits. Pass "
                f"`{type(loss).__name__}(from_logits=True)`. Received: "
                "from_logits=False"
            )
        per_sample = loss.call
    elif callable(loss):
        per_sample = loss
    else:
        raise TypeError(
            "Argument `loss` must be None, a string id, a function or a "
            f"`keras.losses.Loss`. Received: loss={loss!r}"
        )

    def hard_loss(labels, logits):
        # Unlabeled samples (-1) get a valid placeholder class and a zero
        # loss, so a user loss never sees an out-of-range label.
        num_classes = logits.shape[-1]
        dense = len(labels.shape) >= 2 and labels.shape[-1] == num_classes
        if dense:
            mask = ops.sum(ops.cast(labels, "float32"), axis=-1) > 0
            safe = labels
        else:
            labels = _sparse_labels(labels)
            mask = labels >= 0
            safe = ops.where(mask, labels, ops.zeros_like(labels))
        values = per_sample(safe, ops.cast(logits, "float32"))
        values = _mean_over_inner_axes(ops.cast(values, "float32"))
        return ops.where(mask, values, ops.zeros_like(values))

    return hard_loss
