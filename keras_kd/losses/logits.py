"""Response-based losses: soft targets (Hinton et al.) and the hard label loss.

All functions return one value per sample, shape `(batch_size,)`, computed in
float32 whatever the dtype of the logits.
"""

import keras
from keras import ops

from keras_kd.losses._ops import mean_over_inner_axes as _mean_over_inner_axes
from keras_kd.losses._ops import to_float32 as _to_float32
from keras_kd.utils import validation


def soft_target_kl(
    teacher_logits,
    student_logits,
    temperature=4.0,
    scale_by_temperature_squared=True,
):
    """Per-sample KL divergence between temperature-softened distributions.

    Computes `KL(softmax(t / T) || softmax(s / T))` from log-softmax in
    float32, so it stays exact for large temperatures, extreme logits and
    half-precision models.

    Formula:

    ```python
    p_t = softmax(teacher_logits / temperature)
    loss = temperature**2 * sum(p_t * (log p_t - log_softmax(student / T)))
    ```

    Args:
        teacher_logits: Tensor of shape `(batch_size, ..., num_classes)`.
        student_logits: Tensor of the same shape as `teacher_logits`.
        temperature: Positive float or scalar tensor (a `keras.Variable` works,
            so it can change during training). Defaults to `4.0`.
        scale_by_temperature_squared: Boolean. If `True`, multiplies the KL by
            `temperature**2` so the gradient scale does not shrink as the
            temperature grows (Hinton et al., section 2). Defaults to `True`.

    Returns:
        Float32 tensor of shape `(batch_size,)`. Extra axes between the batch
        and the classes (e.g. tokens) are averaged.

    Example:

    >>> t = np.array([[2.0, 0.0, -1.0]])
    >>> keras_kd.losses.soft_target_kl(t, t + 3.0)  # a shift changes nothing
    array([0.], dtype=float32)

    Reference:
    - [Hinton et al., 2015](https://arxiv.org/abs/1503.02531)
    """
    temperature = _to_float32(temperature)
    log_p_t = ops.log_softmax(_to_float32(teacher_logits) / temperature, -1)
    log_p_s = ops.log_softmax(_to_float32(student_logits) / temperature, -1)
    kl = ops.sum(ops.exp(log_p_t) * (log_p_t - log_p_s), axis=-1)
    if scale_by_temperature_squared:
        kl = kl * ops.square(temperature)
    return _mean_over_inner_axes(kl)


def label_mask(labels, num_classes):
    """Marks the samples that carry a label.

    A sparse label below zero (`-1`) or an all-zero one-hot row marks an
    unlabeled sample, so labeled and unlabeled samples can share a batch.

    Args:
        labels: Integer class ids of shape `(batch_size,)` or
            `(batch_size, 1)`, or one-hot / soft labels of shape
            `(batch_size, num_classes)`.
        num_classes: Integer, the number of classes of the logits.

    Returns:
        Float32 tensor of shape `(batch_size,)`: 1 for labeled samples, 0 for
        unlabeled ones.
    """
    if _is_dense_labels(labels, num_classes):
        return ops.cast(ops.sum(_to_float32(labels), axis=-1) > 0, "float32")
    sparse = _sparse_labels(labels)
    return ops.cast(sparse >= 0, "float32")


def _is_dense_labels(labels, num_classes):
    shape = tuple(labels.shape)
    return len(shape) >= 2 and shape[-1] == num_classes and num_classes != 1


def _sparse_labels(labels):
    if len(labels.shape) >= 2 and labels.shape[-1] == 1:
        labels = ops.squeeze(labels, axis=-1)
    return labels


def hard_cross_entropy(labels, logits):
    """Per-sample cross-entropy with the labels, from logits.

    Accepts sparse class ids and one-hot (or soft) labels alike, decided from
    the label shape. Unlabeled samples (`-1`, or an all-zero row) get 0.

    Args:
        labels: Integer class ids `(batch_size,)`/`(batch_size, 1)`, or
            one-hot labels `(batch_size, num_classes)`.
        logits: Tensor of shape `(batch_size, num_classes)`.

    Returns:
        Float32 tensor of shape `(batch_size,)`.

    Example:

    >>> keras_kd.losses.hard_cross_entropy(np.array([0, -1]), np.zeros((2, 4)))
    array([1.3862944, 0.], dtype=float32)
    """
    logits = _to_float32(logits)
    num_classes = logits.shape[-1]
    if _is_dense_labels(labels, num_classes):
        return keras.losses.categorical_crossentropy(
            _to_float32(labels), logits, from_logits=True
        )
    sparse = _sparse_labels(labels)
    mask = sparse >= 0
    safe = ops.where(mask, sparse, ops.zeros_like(sparse))
    ce = keras.losses.sparse_categorical_crossentropy(
        ops.cast(safe, "int32"), logits, from_logits=True
    )
    return ops.where(mask, ce, ops.zeros_like(ce))


@keras.saving.register_keras_serializable(package="keras_kd")
class SoftTargetKL(keras.losses.Loss):
    """Hinton soft-target loss. `y_true`: teacher logits, `y_pred`: student.

    Formula:

    ```python
    loss = T**2 * sum(p_t * (log p_t - log p_s)),  p = softmax(logits / T)
    ```

    Args:
        temperature: Positive float. Defaults to `4.0`.
        scale_by_temperature_squared: Boolean, multiply by `T**2`.
            Defaults to `True`.
        reduction: As in `keras.losses.Loss`. Defaults to
            `"sum_over_batch_size"`.
        name: Name of the loss. Defaults to `"soft_target_kl"`.
        dtype: As in `keras.losses.Loss`. The math is float32 regardless.

    Example:

    >>> loss = keras_kd.losses.SoftTargetKL(temperature=4.0)
    >>> loss(teacher_logits, student_logits)

    Reference:
    - [Hinton et al., 2015](https://arxiv.org/abs/1503.02531)
    """

    def __init__(
        self,
        temperature=4.0,
        scale_by_temperature_squared=True,
        reduction="sum_over_batch_size",
        name="soft_target_kl",
        dtype=None,
    ):
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        self.temperature = validation.check_positive_number(
            "temperature", temperature
        )
        self.scale_by_temperature_squared = bool(scale_by_temperature_squared)

    def call(self, y_true, y_pred):
        return soft_target_kl(
            y_true,
            y_pred,
            self.temperature,
            self.scale_by_temperature_squared,
        )

    def get_config(self):
        return {
            **super().get_config(),
            "temperature": self.temperature,
            "scale_by_temperature_squared": self.scale_by_temperature_squared,
        }
