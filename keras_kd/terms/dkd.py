"""DKD: decoupled knowledge distillation (Zhao et al., CVPR 2022).

The loss function `dkd` and its term `DKD`, in one file as mdistiller keeps
one file per method.
"""

import keras
from keras import ops

from keras_kd.terms.base import LogitTerm
from keras_kd.utils import validation


def dkd(
    teacher_logits,
    student_logits,
    labels,
    temperature=4.0,
    tckd_weight=1.0,
    nckd_weight=8.0,
):
    """Per-sample decoupled KD loss: target-class and non-target-class KL.

    Splits the Hinton KL into the binary KL of the target class against all
    other classes (TCKD) and the KL of the distributions over the non-target
    classes (NCKD), and weighs the two separately.

    Everything is computed in log space, in float32: `log_softmax`, and a
    `logsumexp` over the non-target classes with the target masked out. The
    reference code (mdistiller's `DKD.py`) takes the log of products of
    probabilities and masks the target with `-1000`; at `temperature=1`,
    with logits of magnitude 30, a student probability underflows to 0 in
    float32 and the loss is `inf`. This function stays finite and exact for
    such confident logits.

    Formula:

    ```python
    p = softmax(logits / T)          # teacher: p_t, student: p_s
    b = p[target]                    # target-class probability
    q = softmax over the non-target classes of logits / T
    tckd = b_t * log(b_t / b_s) + (1 - b_t) * log((1 - b_t) / (1 - b_s))
    nckd = sum(q_t * log(q_t / q_s))
    loss = T**2 * (tckd_weight * tckd + nckd_weight * nckd)
    ```

    Args:
        teacher_logits: Tensor of shape `(batch_size, num_classes)`, with
            `num_classes >= 2`.
        student_logits: Tensor of the same shape as `teacher_logits`.
        labels: Integer class ids of shape `(batch_size,)` or
            `(batch_size, 1)`, one-hot (or soft) labels of shape
            `(batch_size, num_classes)` (the target is the row's argmax), or
            `None`. The target class of an unlabeled sample (class id `-1`,
            an all-zero one-hot row, or `labels=None`) is the teacher's
            argmax: DKD needs a target class, and the teacher's prediction
            is the best stand-in for a missing label. A class id outside
            `[0, num_classes)` other than `-1` gives NaN for its sample (a
            traced step cannot raise).
        temperature: Positive float or scalar tensor. Defaults to `4.0`
            (the paper's CIFAR-100 value; 1 on ImageNet).
        tckd_weight: Non-negative float, the weight of TCKD (the paper's
            alpha, renamed: `alpha` is the Distiller's label weight).
            Defaults to `1.0`.
        nckd_weight: Non-negative float, the weight of NCKD (the paper's
            beta). Defaults to `8.0` (mdistiller's CIFAR-100 default).

    Returns:
        Float32 tensor of shape `(batch_size,)`.

    Example:

    >>> t = np.array([[4.0, 1.0, 0.0]])
    >>> keras_kd.terms.dkd.dkd(t, t, np.array([0]))  # identical logits
    array([0.], dtype=float32)

    Reference:
    - [Zhao et al., 2022](https://arxiv.org/abs/2203.08679)
    """
    teacher_logits = ops.cast(teacher_logits, "float32")
    student_logits = ops.cast(student_logits, "float32")
    _check_logits("dkd", teacher_logits, student_logits)
    target, invalid = _target_mask(labels, teacher_logits)
    temperature = ops.cast(temperature, "float32")
    t = teacher_logits / temperature
    s = student_logits / temperature
    zeros = ops.zeros_like(t)
    neg_inf = ops.full_like(t, float("-inf"))
    # log of the normaliser over all classes and over the non-target ones.
    t_lse = ops.logsumexp(t, axis=-1)
    s_lse = ops.logsumexp(s, axis=-1)
    t_lse_other = ops.logsumexp(ops.where(target, neg_inf, t), axis=-1)
    s_lse_other = ops.logsumexp(ops.where(target, neg_inf, s), axis=-1)
    # TCKD: log b = z_target - lse, log(1 - b) = lse_other - lse.
    log_b_t = ops.sum(ops.where(target, t, zeros), axis=-1) - t_lse
    log_b_s = ops.sum(ops.where(target, s, zeros), axis=-1) - s_lse
    log_r_t = t_lse_other - t_lse
    log_r_s = s_lse_other - s_lse
    tckd = ops.exp(log_b_t) * (log_b_t - log_b_s) + ops.exp(log_r_t) * (
        log_r_t - log_r_s
    )
    # NCKD: log q over the non-target classes; the target entry is set to 0
    # (exp(0) * (0 - 0) = 0) so nothing overflows in values or gradients.
    log_q_t = ops.where(target, zeros, t - ops.expand_dims(t_lse_other, -1))
    log_q_s = ops.where(target, zeros, s - ops.expand_dims(s_lse_other, -1))
    nckd = ops.sum(ops.exp(log_q_t) * (log_q_t - log_q_s), axis=-1)
    values = ops.square(temperature) * (
        tckd_weight * tckd + nckd_weight * nckd
    )
    return ops.where(invalid, ops.full_like(values, float("nan")), values)


def _check_logits(fn_name, teacher_logits, student_logits):
    for argument, x in (
        ("teacher_logits", teacher_logits),
        ("student_logits", student_logits),
    ):
        shape = tuple(x.shape)
        if len(shape) != 2:
            raise ValueError(
                f"Argument `{argument}` of `{fn_name}` must have shape "
                f"(batch_size, num_classes). Received: {argument}.shape="
                f"{shape}. Flatten extra axes into the batch first."
            )
    num_classes = teacher_logits.shape[-1]
    if num_classes != student_logits.shape[-1]:
        raise ValueError(
            f"`{fn_name}` needs teacher and student logits with the same "
            f"number of classes. Received: teacher_logits.shape="
            f"{tuple(teacher_logits.shape)}, student_logits.shape="
            f"{tuple(student_logits.shape)}"
        )
    if num_classes is not None and num_classes < 2:
        raise ValueError(
            f"`{fn_name}` needs softmax logits with at least 2 classes. "
            f"Received: num_classes={num_classes}. For one sigmoid output "
            "use `keras_kd.losses.bernoulli_kl`."
        )


def _target_mask(labels, teacher_logits):
    """Boolean `(batch, C)` target mask and boolean `(batch,)` invalid ids."""
    from keras_kd.losses.logits import is_dense_labels

    num_classes = teacher_logits.shape[-1]
    teacher_class = ops.cast(ops.argmax(teacher_logits, axis=-1), "int32")
    invalid = ops.zeros_like(teacher_class) > 0
    if labels is None:
        target = teacher_class
    else:
        labels = ops.convert_to_tensor(labels)
        if is_dense_labels(labels, num_classes):
            dense = ops.cast(labels, "float32")
            labeled = ops.sum(dense, axis=-1) > 0
            label_class = ops.cast(ops.argmax(dense, axis=-1), "int32")
        else:
            if len(labels.shape) >= 2 and labels.shape[-1] == 1:
                labels = ops.squeeze(labels, axis=-1)
            as_float = ops.cast(labels, "float32")
            labeled = as_float != -1.0
            invalid = ops.logical_and(
                labeled,
                ops.logical_or(
                    ops.logical_or(as_float < 0, as_float >= num_classes),
                    ops.floor(as_float) != as_float,
                ),
            )
            labeled = ops.logical_and(labeled, ops.logical_not(invalid))
            safe = ops.where(labeled, as_float, ops.zeros_like(as_float))
            label_class = ops.cast(safe, "int32")
        target = ops.where(labeled, label_class, teacher_class)
    classes = ops.arange(num_classes, dtype="int32")
    return ops.expand_dims(target, -1) == classes, invalid



@keras.saving.register_keras_serializable(package="keras_kd")
class DKD(LogitTerm):
    """Decoupled knowledge distillation term (Zhao et al., CVPR 2022).

    Computes `dkd` on the teacher's and the student's logits: the
    target-class KL (TCKD) weighted by `tckd_weight` and the non-target-class KL
    (NCKD) weighted by `nckd_weight`, times `temperature**2`.

    The paper adds DKD on top of the cross-entropy with the labels at
    weight 1 (`loss = CE + DKD`), so this term declares `response = False`:
    `Distiller(alpha=...)` does not scale it by `1 - alpha`; use `weight`.
    To follow the paper, pass it with `keras_kd.HardLoss()` in `terms=`
    and no `alpha`: both then count at weight 1 (see the example).

    The paper's code (mdistiller) ramps the term's weight up linearly over
    the first `warmup_epochs` epochs: `min(epoch / warmup_epochs, 1)` with
    epochs counted from 1. Keras counts
    epochs from 0, so the term multiplies its values by
    `min((epoch + 1) / warmup_epochs, 1)`, where `epoch` is the 0-based
    index that `on_epoch_begin` received (the Distiller calls it at the
    start of each epoch). The first epoch thus trains at `1 / 20` of the
    weight and epoch 20 (index 19) onwards at full weight. The epoch is kept
    in the non-trainable variable `epoch` (0 until `on_epoch_begin` is
    called, so a term used outside `fit` is at its first-epoch weight).

    Samples without a label use the teacher's argmax as their target class
    (see `dkd`), so the term runs on labeled and unlabeled samples alike.

    Args:
        tckd_weight: Non-negative float, the weight of TCKD (the paper's
            alpha, renamed: `alpha` is the Distiller's label weight).
            Defaults to `1.0`.
        nckd_weight: Non-negative float, the weight of NCKD (the paper's
            beta). Defaults to `8.0` (mdistiller's CIFAR-100 default; a few
            CIFAR pairs use 6, and its ImageNet configs use `nckd_weight=0.5`, `temperature=1` and a
            1-epoch warm-up).
        temperature: Positive float, or `None` to use the Distiller's
            temperature. The paper uses `4` (1 on ImageNet). Defaults to
            `None`.
        warmup_epochs: Integer >= 0, the number of epochs of the linear
            warm-up of the term's weight; `0` disables the warm-up.
            Defaults to `20` (mdistiller's).
        standardize: Boolean, z-score the logits of each sample before the
            loss (logit standardization, Sun et al., CVPR 2024, whose base
            temperature is 2). Defaults to `False`.
        weight: Non-negative float, the weight of the term in the total
            loss. Defaults to `1.0`.
        name: String, the term's name and history key. Defaults to `"dkd"`.
        **kwargs: As in `keras_kd.Term` (`teacher_layer`, `student_layer`,
            `teacher`).

    Call arguments:
        teacher: Teacher logits `(batch_size, num_classes)`, or a list of
            them (several teachers, ensembled by `LogitTerm`).
        student: Student logits `(batch_size, num_classes)`.
        labels: Labels as `dkd` accepts them, or `None`.

    Returns:
        Float32 tensor `(batch_size,)`.

    Example:

    ```python
    distiller = keras_kd.Distiller(
        teacher, student,
        terms=[keras_kd.HardLoss(), keras_kd.DKD(temperature=4.0)])
    ```

    Reference:
    - [Zhao et al., 2022](https://arxiv.org/abs/2203.08679)
    """

    response = False
    supported_outputs = ("softmax",)

    def __init__(
        self,
        tckd_weight=1.0,
        nckd_weight=8.0,
        temperature=None,
        warmup_epochs=20,
        standardize=False,
        weight=1.0,
        name="dkd",
        **kwargs,
    ):
        super().__init__(
            temperature=temperature,
            standardize=standardize,
            weight=weight,
            name=name,
            **kwargs,
        )
        self.tckd_weight = validation.check_non_negative_number(
            "tckd_weight", tckd_weight
        )
        self.nckd_weight = validation.check_non_negative_number(
            "nckd_weight", nckd_weight
        )
        self.warmup_epochs = validation.check_non_negative_integer(
            "warmup_epochs", warmup_epochs
        )
        self.epoch = self.add_weight(
            name="epoch",
            shape=(),
            initializer="zeros",
            trainable=False,
            dtype="float32",
        )

    def on_epoch_begin(self, epoch):
        """Records Keras' 0-based index of the epoch that begins."""
        self.epoch.assign(float(epoch))

    def warmup_factor(self):
        """`min((epoch + 1) / warmup_epochs, 1)`, or 1 without warm-up."""
        if not self.warmup_epochs:
            return ops.ones((), "float32")
        epoch = ops.cast(self.epoch, "float32")
        return ops.minimum((epoch + 1.0) / float(self.warmup_epochs), 1.0)

    def call(self, teacher, student, labels=None):
        teacher, student = self.logits_pair(teacher, student)
        values = dkd(
            teacher,
            student,
            labels,
            self.temperature,
            self.tckd_weight,
            self.nckd_weight,
        )
        return values * self.warmup_factor()

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "tckd_weight": self.tckd_weight,
                "nckd_weight": self.nckd_weight,
                "warmup_epochs": self.warmup_epochs,
            }
        )
        return config
