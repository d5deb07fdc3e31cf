"""Response-based losses: soft targets (Hinton et al.) and the hard label loss.

All functions return one value per sample, shape `(batch_size,)`, computed in
float32 whatever the dtype of the logits.
"""

import keras
from keras import ops

from keras_kd.losses._ops import to_float32 as _to_float32
from keras_kd.losses._wrapper import LossFunctionWrapper
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
        Float32 tensor of the logits' shape without the last axis: one value
        per sample, or per token of `(batch, sequence, vocabulary)` logits.

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
    return kl


def is_dense_labels(labels, num_classes, outputs="softmax", logits_rank=None):
    """Whether `labels` are one-hot (or soft) rows rather than class ids.

    The one place keras_kd decides between sparse and dense labels. Sigmoid
    outputs always take dense labels (one 0/1 value per output); a softmax
    model takes dense labels of shape `(..., num_classes)` (with
    `num_classes > 1`) and sparse class ids otherwise. With `logits_rank`
    (3 for `(batch, sequence, vocabulary)` logits), dense labels must have
    the logits' rank, so sparse token ids `(batch, sequence)` are never
    mistaken for one-hot rows when the sequence length equals the
    vocabulary size.
    """
    if outputs == "sigmoid":
        return True
    shape = tuple(labels.shape)
    if logits_rank is not None and len(shape) != logits_rank:
        return False
    return len(shape) >= 2 and shape[-1] == num_classes and num_classes != 1


def label_mask(labels, num_classes, outputs="softmax", logits_rank=None):
    """Marks the samples that carry a label.

    The sparse label `-1` (or an all-zero one-hot row) marks an unlabeled
    sample, so labeled and unlabeled samples can share a batch. For sigmoid
    outputs, a sample whose labels are all `-1` is unlabeled.

    Args:
        labels: Integer class ids of shape `(batch_size,)` or
            `(batch_size, 1)`, or one-hot / soft labels of shape
            `(batch_size, num_classes)`; for sigmoid outputs, 0/1 targets of
            shape `(batch_size, num_classes)` (or `(batch_size,)` for one
            output).
        num_classes: Integer, the number of classes (outputs) of the logits.
        outputs: `"softmax"` or `"sigmoid"`. Defaults to `"softmax"`.
        logits_rank: Optional integer, the rank of the logits (see
            `is_dense_labels`). Defaults to `None`.

    Returns:
        Float32 tensor of the logits' shape without the last axis
        (`(batch_size,)` for a classifier, `(batch_size, sequence_length)`
        per token): 1 for labeled positions, 0 for unlabeled ones.
    """
    if outputs == "sigmoid":
        dense = _to_float32(labels)
        if len(dense.shape) >= 2:
            dense = ops.max(dense, axis=-1)
        return ops.cast(dense != -1.0, "float32")
    if is_dense_labels(labels, num_classes, logits_rank=logits_rank):
        return ops.cast(ops.sum(_to_float32(labels), axis=-1) > 0, "float32")
    sparse = _sparse_labels(labels)
    return ops.cast(sparse != -1, "float32")


def _sparse_labels(labels):
    if len(labels.shape) >= 2 and labels.shape[-1] == 1:
        labels = ops.squeeze(labels, axis=-1)
    return labels


def _invalid_to_nan(values, invalid):
    """NaN where a label is invalid: a traced step cannot raise, and a
    silent zero would hide the error."""
    return ops.where(invalid, ops.full_like(values, float("nan")), values)


def hard_cross_entropy(labels, logits):
    """Per-sample cross-entropy with the labels, from logits.

    Accepts sparse class ids and one-hot (or soft) labels alike, decided from
    the label shape. Unlabeled samples (`-1`, or an all-zero row) get 0. A
    class id outside `[0, num_classes)` other than `-1`, or a non-integer
    class id, gives NaN (a traced step cannot raise; `Distiller.fit` checks
    labels before training).

    Args:
        labels: Integer class ids `(batch_size,)`/`(batch_size, 1)`, or
            one-hot labels `(batch_size, num_classes)`.
        logits: Tensor of shape `(batch_size, num_classes)`.

    Returns:
        Float32 tensor of the logits' shape without the last axis (one value
        per token for `(batch, sequence, vocabulary)` logits).

    Example:

    >>> keras_kd.losses.hard_cross_entropy(np.array([0, -1]), np.zeros((2, 4)))
    array([1.3862944, 0.], dtype=float32)
    """
    logits = _to_float32(logits)
    num_classes = logits.shape[-1]
    if is_dense_labels(labels, num_classes, logits_rank=len(logits.shape)):
        return keras.losses.categorical_crossentropy(
            _to_float32(labels), logits, from_logits=True
        )
    sparse = _sparse_labels(labels)
    as_float = _to_float32(sparse)
    mask = sparse != -1
    invalid = ops.logical_and(
        mask,
        ops.logical_or(
            ops.logical_or(as_float < 0, as_float >= num_classes),
            ops.floor(as_float) != as_float,
        ),
    )
    safe = ops.where(ops.logical_and(mask, ops.logical_not(invalid)),
                     sparse, ops.zeros_like(sparse))
    ce = keras.losses.sparse_categorical_crossentropy(
        ops.cast(safe, "int32"), logits, from_logits=True
    )
    ce = ops.where(mask, ce, ops.zeros_like(ce))
    return _invalid_to_nan(ce, invalid)


def binary_cross_entropy(labels, logits):
    """Per-sample binary cross-entropy of sigmoid outputs, from logits.

    The mean over the outputs of each sample, as Keras'
    `binary_crossentropy`. A sample whose labels are all `-1` is unlabeled
    and gets 0; a target outside `[0, 1]` otherwise gives NaN.

    Args:
        labels: 0/1 (or soft) targets, shape `(batch_size, num_outputs)`, or
            `(batch_size,)` for one output.
        logits: Tensor of shape `(batch_size, num_outputs)`.

    Returns:
        Float32 tensor of shape `(batch_size,)`.

    Example:

    >>> keras_kd.losses.binary_cross_entropy(np.array([[1.0]]),
    ...                                      np.array([[0.0]]))
    array([0.6931472], dtype=float32)
    """
    logits = _to_float32(logits)
    labels = ops.reshape(_to_float32(labels), ops.shape(logits))
    mask = label_mask(labels, logits.shape[-1], "sigmoid")
    invalid = ops.any(ops.logical_or(labels < 0, labels > 1), axis=-1)
    invalid = ops.logical_and(invalid, mask > 0)
    safe = ops.clip(labels, 0.0, 1.0)
    # log(1 + exp(-|x|)) form: exact for large logits.
    values = (ops.maximum(logits, 0.0) - logits * safe
              + ops.log1p(ops.exp(-ops.abs(logits))))
    values = ops.mean(values, axis=-1) * mask
    return _invalid_to_nan(values, invalid)


def bernoulli_kl(
    teacher_logits,
    student_logits,
    temperature=4.0,
    scale_by_temperature_squared=True,
):
    """Per-sample KL divergence of temperature-softened sigmoid outputs.

    Each output is a Bernoulli variable with probability
    `sigmoid(logit / T)`; the value of a sample is the mean over its outputs
    of `KL(Bernoulli(p_t) || Bernoulli(p_s))`, computed from log-sigmoids in
    float32 (exact for logits of any magnitude), times `T**2`.

    Formula:

    ```python
    p_t, p_s = sigmoid(teacher / T), sigmoid(student / T)
    kl = p_t * (log p_t - log p_s) + (1 - p_t) * (log(1 - p_t) - log(1 - p_s))
    loss = T**2 * mean(kl, axis=-1)
    ```

    Args:
        teacher_logits: Tensor `(batch_size, num_outputs)`.
        student_logits: Tensor of the same shape.
        temperature: Positive float or scalar tensor. Defaults to `4.0`.
        scale_by_temperature_squared: Boolean. Defaults to `True`.

    Returns:
        Float32 tensor of the logits' shape without the last axis.

    Example:

    >>> t = np.array([[3.0, -2.0]])
    >>> keras_kd.losses.bernoulli_kl(t, t)
    array([0.], dtype=float32)

    Reference:
    - [Hinton et al., 2015](https://arxiv.org/abs/1503.02531), applied to
      each sigmoid output.
    """
    temperature = _to_float32(temperature)
    t = _to_float32(teacher_logits) / temperature
    s = _to_float32(student_logits) / temperature
    log_pt, log_qt = ops.log_sigmoid(t), ops.log_sigmoid(-t)
    log_ps, log_qs = ops.log_sigmoid(s), ops.log_sigmoid(-s)
    kl = ops.exp(log_pt) * (log_pt - log_ps) + ops.exp(log_qt) * (
        log_qt - log_qs
    )
    kl = ops.mean(kl, axis=-1)
    if scale_by_temperature_squared:
        kl = kl * ops.square(temperature)
    return kl


def standardize_logits(logits, epsilon=1e-7):
    """Z-scores the logits of each sample over the classes.

    Logit standardization (Sun et al., CVPR 2024): `(z - mean(z)) /
    (std(z) + epsilon)` over the last axis, so a student matches the
    relations between the teacher's logits, not their range.

    Args:
        logits: Tensor `(batch_size, ..., num_classes)`.
        epsilon: Small float added to the standard deviation. Defaults to
            `1e-7`.

    Returns:
        Float32 tensor of the same shape.

    Example:

    >>> keras_kd.losses.standardize_logits(np.array([[1.0, 3.0]]))
    array([[-1.,  1.]], dtype=float32)

    Reference:
    - [Sun et al., 2024](https://arxiv.org/abs/2403.01427)
    """
    logits = _to_float32(logits)
    mean = ops.mean(logits, axis=-1, keepdims=True)
    std = ops.std(logits, axis=-1, keepdims=True)
    return (logits - mean) / (std + epsilon)


def ensemble_logits(teacher_logits, temperature=4.0, outputs="softmax"):
    """Logits of the average softened distribution of several teachers.

    Averages the teachers' probabilities at temperature `T`, not their
    logits, and returns logits whose softened distribution is that average:
    `T * log(mean_i softmax(t_i / T))` for softmax outputs,
    `T * logit(mean_i sigmoid(t_i / T))` for sigmoid outputs.

    Args:
        teacher_logits: List of tensors of the same shape, one per teacher.
        temperature: Positive float or scalar tensor. Defaults to `4.0`.
        outputs: `"softmax"` or `"sigmoid"`. Defaults to `"softmax"`.

    Returns:
        Float32 tensor of the teachers' shape.
    """
    temperature = _to_float32(temperature)
    scaled = ops.stack([_to_float32(t) / temperature for t in teacher_logits])
    log_n = ops.log(ops.cast(len(teacher_logits), "float32"))
    if outputs == "sigmoid":
        log_p = ops.logsumexp(ops.log_sigmoid(scaled), axis=0) - log_n
        log_q = ops.logsumexp(ops.log_sigmoid(-scaled), axis=0) - log_n
        return temperature * (log_p - log_q)
    log_p = ops.logsumexp(ops.log_softmax(scaled, axis=-1), axis=0) - log_n
    return temperature * log_p


@keras.saving.register_keras_serializable(package="keras_kd")
class SoftTargetKL(LossFunctionWrapper):
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
        super().__init__(
            soft_target_kl,
            reduction=reduction,
            name=name,
            dtype=dtype,
            temperature=validation.check_positive_number(
                "temperature", temperature
            ),
            scale_by_temperature_squared=bool(scale_by_temperature_squared),
        )
