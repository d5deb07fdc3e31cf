"""`HardLoss`: the label term of a Distiller (cross-entropy from logits)."""

import keras
from keras import ops

from keras_kd.losses.logits import binary_cross_entropy
from keras_kd.losses.logits import hard_cross_entropy
from keras_kd.losses.logits import is_dense_labels
from keras_kd.losses.logits import label_mask
from keras_kd.terms.base import Term

# Keras' string ids of cross-entropy expect probabilities by default. The
# student of a Distiller outputs logits, so these ids mean "from logits" here.
_CROSS_ENTROPY_IDS = (
    "crossentropy",
    "categorical_crossentropy",
    "sparse_categorical_crossentropy",
    "binary_crossentropy",
)


@keras.saving.register_keras_serializable(package="keras_kd")
class HardLoss(Term):
    """The loss of the student's logits against the labels.

    Cross-entropy from logits by default: softmax cross-entropy with sparse
    class ids or one-hot rows (decided by the label shape), or binary
    cross-entropy (mean over the outputs) for sigmoid outputs. Unlabeled
    samples (label `-1`) are masked out and the term is averaged over the
    labeled samples of the global batch.

    Args:
        loss: `None` for cross-entropy from logits, a Keras loss id, a
            function `fn(labels, logits)` or a `keras.losses.Loss` computed
            per sample. The Keras cross-entropy ids mean "from logits" here.
            `Distiller.compile(loss=...)` sets it too. Defaults to `None`.
        weight: Non-negative float. Defaults to `1.0`.
        name: The history key. Defaults to `"hard_loss"`.

    Example:

    ```python
    distiller = keras_kd.Distiller(
        teacher, student, terms=[keras_kd.HardLoss(), keras_kd.DKD()])
    ```
    """

    needs_labels = True
    uses_teacher = False

    def __init__(self, loss=None, weight=1.0, name="hard_loss", **kwargs):
        super().__init__(weight=weight, name=name, **kwargs)
        self.set_label_loss(loss)

    def set_label_loss(self, loss):
        """Replaces the label loss (`Distiller.compile(loss=...)`)."""
        self.loss = loss
        self._per_sample = _resolve(loss)

    def call(self, teacher, student, labels=None):
        if self._per_sample is None:
            if self.outputs == "sigmoid":
                return binary_cross_entropy(labels, student)
            return hard_cross_entropy(labels, student)
        # Unlabeled samples get a valid placeholder class and a zero loss,
        # so a user loss never sees an out-of-range label.
        num_classes = student.shape[-1]
        rank = len(student.shape)
        mask = label_mask(labels, num_classes, self.outputs, rank) > 0
        if is_dense_labels(labels, num_classes, self.outputs, rank):
            row_mask = mask
            for _ in range(len(labels.shape) - len(mask.shape)):
                row_mask = ops.expand_dims(row_mask, -1)
            safe = ops.where(row_mask, labels, ops.zeros_like(labels))
        else:
            if len(labels.shape) >= rank and labels.shape[-1] == 1:
                labels = ops.squeeze(labels, axis=-1)
            safe = ops.where(mask, labels, ops.zeros_like(labels))
        values = ops.cast(
            self._per_sample(safe, ops.cast(student, "float32")), "float32")
        # One value per position (sample, or token of a sequence).
        extra = tuple(range(rank - 1, len(values.shape)))
        if extra:
            values = ops.mean(values, axis=extra)
        return ops.where(mask, values, ops.zeros_like(values))

    def get_config(self):
        config = super().get_config()
        config["loss"] = keras.saving.serialize_keras_object(self.loss)
        return config

    @classmethod
    def from_config(cls, config):
        config = config.copy()
        if isinstance(config.get("loss"), dict):
            config["loss"] = keras.saving.deserialize_keras_object(
                config["loss"]
            )
        return cls(**config)


def _resolve(loss):
    """Returns `None` (cross-entropy) or a per-sample `fn(labels, logits)`."""
    if loss is None or (isinstance(loss, str) and loss in _CROSS_ENTROPY_IDS):
        return None
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
        return loss.call
    if callable(loss):
        return loss
    raise TypeError(
        "Argument `loss` must be None, a string id, a function or a "
        f"`keras.losses.Loss`. Received: loss={loss!r}"
    )
