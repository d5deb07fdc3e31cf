"""DIST: distillation from a stronger teacher (Huang et al., NeurIPS 2022).

The loss function `dist` and its term `DIST`, in one file as mdistiller keeps
one file per method.
"""

import keras
from keras import ops

from keras_kd.terms.base import LogitTerm
from keras_kd.terms.dkd import _check_logits
from keras_kd.utils import validation

# The official code's epsilon in `cosine_similarity`.
_EPSILON = 1e-8


def dist(teacher_logits, student_logits, temperature=4.0, beta=1.0,
         gamma=1.0):
    """Per-sample DIST loss: inter- and intra-class Pearson relations.

    DIST matches the relations of the softened probabilities rather than
    the probabilities themselves: for each sample, the Pearson correlation
    of the student's and the teacher's class probabilities (inter-class
    relation), and for each class, their Pearson correlation over the
    batch (intra-class relation).

    The intra-class relation is one value for the whole batch. It is added
    to every row, so the mean of the returned values is the published loss
    `beta * inter + gamma * intra`. Like every relation loss in keras_kd,
    the values of a sample depend on the rest of the batch.

    The Pearson correlation is computed as in the official code
    (`hunto/image_classification_sota`, `lib/models/losses/dist_kd.py`): the
    cosine similarity of the mean-centred vectors,
    `sum(a * b) / (norm(a) * norm(b) + 1e-8)`. A constant vector (a uniform
    student, or a class column of a one-sample batch) has correlation 0, its
    value in exact arithmetic, with a zero gradient: the official code
    divides its float32 rounding noise by `1e-8` instead, which gives a
    zero-initialized student head gradients of 2e5 (100 classes) to 3e7
    (5 classes). A batch of one sample is accepted; its intra-class part is
    then the constant `1`.

    Formula:

    ```python
    y_t, y_s = softmax(teacher / T), softmax(student / T)   # (batch, C)
    pearson(a, b) = cos(a - mean(a), b - mean(b))
    inter_i = 1 - pearson(y_s[i, :], y_t[i, :])
    intra = 1 - mean_c pearson(y_s[:, c], y_t[:, c])
    loss_i = T**2 * (beta * inter_i + gamma * intra)
    ```

    Args:
        teacher_logits: Tensor of shape `(batch_size, num_classes)`.
        student_logits: Tensor of the same shape as `teacher_logits`.
        temperature: Positive float or scalar tensor. Defaults to `4.0`. The
            official code's `DIST` class defaults to 1 (its ImageNet
            setting `dist`); its `dist_t<tau>` settings choose another.
        beta: Non-negative float, the weight of the inter-class relation.
            Defaults to `1.0` (the paper's).
        gamma: Non-negative float, the weight of the intra-class relation.
            Defaults to `1.0` (the paper's).

    Returns:
        Float32 tensor of shape `(batch_size,)` whose mean is the published
        batch loss.

    Example:

    >>> t = np.array([[4.0, 1.0, 0.0], [0.0, 2.0, 1.0]])
    >>> values = keras_kd.terms.dist.dist(t, t + 3.0)  # a shift: no loss
    >>> np.round(keras.ops.convert_to_numpy(values), 4)
    array([0., 0.], dtype=float32)

    Reference:
    - [Huang et al., 2022](https://arxiv.org/abs/2205.10536)
    """
    teacher_logits = ops.cast(teacher_logits, "float32")
    student_logits = ops.cast(student_logits, "float32")
    _check_logits("dist", teacher_logits, student_logits)
    temperature = ops.cast(temperature, "float32")
    y_t = ops.softmax(teacher_logits / temperature, axis=-1)
    y_s = ops.softmax(student_logits / temperature, axis=-1)
    inter = 1.0 - _pearson(y_s, y_t, axis=1)
    intra = 1.0 - ops.mean(_pearson(y_s, y_t, axis=0))
    return ops.square(temperature) * (beta * inter + gamma * intra)


def _pearson(a, b, axis):
    """The official DIST Pearson correlation along `axis`.

    A constant vector (max == min) has correlation 0, the official value
    `0 / (0 + 1e-8)` in exact arithmetic, with a zero gradient: centring it
    in float32 leaves rounding noise that the official formula divides by
    `1e-8`, giving noisy values and gradients near `1 / 1e-8`.
    """
    varies = ops.logical_and(_varies(a, axis), _varies(b, axis))
    a = a - ops.mean(a, axis=axis, keepdims=True)
    b = b - ops.mean(b, axis=axis, keepdims=True)
    dot = ops.sum(a * b, axis=axis)
    value = dot / (_norm(a, axis) * _norm(b, axis) + _EPSILON)
    return ops.where(varies, value, ops.zeros_like(value))


def _varies(x, axis):
    return ops.max(x, axis=axis) > ops.min(x, axis=axis)


def _norm(x, axis):
    """Euclidean norm with a zero (not NaN) gradient at the zero vector."""
    squares = ops.sum(ops.square(x), axis=axis)
    positive = squares > 0
    safe = ops.where(positive, squares, ops.ones_like(squares))
    return ops.where(positive, ops.sqrt(safe), ops.zeros_like(squares))


@keras.saving.register_keras_serializable(package="keras_kd")
class DIST(LogitTerm):
    """DIST term: Pearson relations of the softened probabilities.

    Computes `dist` on the teacher's and the student's logits. The term is
    relational (`relational = True`): its intra-class part correlates each
    class over the batch, so under several replicas it receives the global
    batch, and the mean of its per-sample values is the published loss.

    The official code adds DIST on top of the cross-entropy with the labels,
    both at weight 1 (`ori_loss_weight = kd_loss_weight = 1`, with
    `beta = gamma = 1`), so this term declares `response = False`:
    `Distiller(alpha=...)` does not scale it by `1 - alpha`; use `weight`.
    To follow the paper, pass it with `keras_kd.HardLoss()` in `terms=`
    and no `alpha`: both then count at weight 1 (see the example).

    Args:
        beta: Non-negative float, the weight of the inter-class relation.
            Defaults to `1.0`.
        gamma: Non-negative float, the weight of the intra-class relation.
            Defaults to `1.0`.
        temperature: Positive float, or `None` to use the Distiller's
            temperature. The official ImageNet setting
            (`kd_method='dist'`) uses `1`; the function `dist` defaults to
            `4`. Defaults to `None`.
        standardize: Boolean, z-score the logits of each sample before the
            loss (logit standardization, Sun et al., CVPR 2024). Defaults to
            `False`.
        weight: Non-negative float, the weight of the term in the total
            loss. Defaults to `1.0`.
        name: String, the term's name and history key. Defaults to
            `"dist"`.
        **kwargs: As in `keras_kd.Term` (`teacher_layer`, `student_layer`,
            `teacher`).

    Call arguments:
        teacher: Teacher logits `(batch_size, num_classes)`, or a list of
            them (several teachers, ensembled by `LogitTerm`).
        student: Student logits `(batch_size, num_classes)`.
        labels: Ignored.

    Returns:
        Float32 tensor `(batch_size,)`.

    Example:

    ```python
    distiller = keras_kd.Distiller(
        teacher, student,
        terms=[keras_kd.HardLoss(), keras_kd.DIST(temperature=4.0)])
    ```

    Reference:
    - [Huang et al., 2022](https://arxiv.org/abs/2205.10536)
    """

    relational = True
    response = False
    supported_outputs = ("softmax",)

    def __init__(self, beta=1.0, gamma=1.0, temperature=None,
                 standardize=False, weight=1.0, name="dist", **kwargs):
        super().__init__(temperature=temperature, standardize=standardize,
                         weight=weight, name=name, **kwargs)
        self.beta = validation.check_non_negative_number("beta", beta)
        self.gamma = validation.check_non_negative_number("gamma", gamma)

    def call(self, teacher, student, labels=None):
        teacher, student = self.logits_pair(teacher, student)
        return dist(teacher, student, self.temperature, self.beta,
                    self.gamma)

    def get_config(self):
        config = super().get_config()
        config.update({"beta": self.beta, "gamma": self.gamma})
        return config
