"""Feature-based losses: match intermediate teacher and student features.

All functions take the teacher's features first and the student's second and
return one value per sample, shape `(batch_size,)`, computed in float32
whatever the dtype of the features.
"""

import keras
from keras import ops

from keras_kd.losses._ops import mean_over_inner_axes as _mean_over_inner_axes
from keras_kd.losses import _ops
from keras_kd.losses._ops import to_float32 as _to_float32
from keras_kd.losses._wrapper import LossFunctionWrapper
from keras_kd.utils import validation


def _magnitude(x, axis=None):
    """The largest `|x|` along `axis` (1 if all zero), without gradient."""
    scale = ops.stop_gradient(ops.max(ops.abs(x), axis=axis, keepdims=True))
    return ops.where(scale > 0, scale, ops.ones_like(scale))


def _rescale(x, axis=None):
    """Divides `x` by its largest magnitude along `axis`, without gradient.

    Only for losses that a positive scale leaves unchanged: value and gradient
    stay the same, and squares of huge features no longer overflow float32.
    """
    return x / _magnitude(x, axis)


def _l2_normalize(x, axis=-1, epsilon=0.0):
    """Returns `x / (||x|| + epsilon)` along `axis`; zero vectors stay zero.

    The double `where` keeps the gradient finite (zero) at zero vectors, where
    `sqrt` has an infinite slope.
    """
    squared = ops.sum(ops.square(x), axis=axis, keepdims=True)
    nonzero = squared > 0
    norm = ops.sqrt(ops.where(nonzero, squared, ops.ones_like(squared)))
    return ops.where(nonzero, x / (norm + epsilon), ops.zeros_like(x))


def _huber(error, delta=1.0):
    """Elementwise Huber loss, written without `where` so no branch overflows.

    Equals PyTorch's `smooth_l1_loss` (`beta=1`) when `delta=1`.
    """
    error = ops.abs(error)
    quadratic = ops.minimum(error, delta)
    return 0.5 * ops.square(quadratic) + delta * (error - quadratic)


def _same_shape_features(loss_name, teacher_features, student_features):
    teacher = _to_float32(teacher_features)
    student = _to_float32(student_features)
    t_shape, s_shape = tuple(teacher.shape), tuple(student.shape)
    if len(t_shape) != len(s_shape) or any(
        t is not None and s is not None and t != s
        for t, s in zip(t_shape, s_shape)
    ):
        raise _ops.feature_shape_mismatch_error(
            loss_name, t_shape, s_shape
        )
    return teacher, student


def feature_mse(teacher_features, student_features):
    """Per-sample mean squared error between two feature tensors.

    FitNets-style hint loss: the student's features (after a projection, if
    their shapes differ) regress the teacher's.

    Formula:

    ```python
    loss = mean((teacher_features - student_features) ** 2)  # per sample
    ```

    Args:
        teacher_features: Tensor of shape `(batch_size, ...)`.
        student_features: Tensor of the same shape as `teacher_features`.

    Returns:
        Float32 tensor of shape `(batch_size,)`: the mean over all non-batch
        elements.

    Raises:
        ValueError: if the two static shapes differ.

    Example:

    >>> keras_kd.losses.feature_mse(np.ones((2, 3)), np.zeros((2, 3)))
    array([1., 1.], dtype=float32)

    Reference:
    - [Romero et al., 2015](https://arxiv.org/abs/1412.6550)
    """
    teacher, student = _same_shape_features(
        "feature_mse", teacher_features, student_features
    )
    return _mean_over_inner_axes(ops.square(teacher - student))


def feature_l1(teacher_features, student_features):
    """Per-sample mean absolute error between two feature tensors.

    Formula:

    ```python
    loss = mean(abs(teacher_features - student_features))  # per sample
    ```

    Args:
        teacher_features: Tensor of shape `(batch_size, ...)`.
        student_features: Tensor of the same shape as `teacher_features`.

    Returns:
        Float32 tensor of shape `(batch_size,)`: the mean over all non-batch
        elements.

    Raises:
        ValueError: if the two static shapes differ.

    Example:

    >>> keras_kd.losses.feature_l1(np.full((2, 3), 2.0), np.zeros((2, 3)))
    array([2., 2.], dtype=float32)

    Reference:
    - [Romero et al., 2015](https://arxiv.org/abs/1412.6550) (with an L1
      distance instead of L2)
    """
    teacher, student = _same_shape_features(
        "feature_l1", teacher_features, student_features
    )
    return _mean_over_inner_axes(ops.abs(teacher - student))


def feature_smooth_l1(teacher_features, student_features, delta=1.0):
    """Per-sample Huber (smooth L1) loss between two feature tensors.

    Quadratic for small differences and linear for large ones, so outlier
    activations do not dominate. The values equal `keras.losses.Huber(delta)`
    per sample, and PyTorch's `smooth_l1_loss` when `delta=1`.

    Formula:

    ```python
    d = abs(teacher_features - student_features)
    loss = mean(where(d < delta, 0.5 * d**2, delta * (d - 0.5 * delta)))
    ```

    Args:
        teacher_features: Tensor of shape `(batch_size, ...)`.
        student_features: Tensor of the same shape as `teacher_features`.
        delta: Positive float, where the loss turns from quadratic to
            linear. Defaults to `1.0`.

    Returns:
        Float32 tensor of shape `(batch_size,)`: the mean over all non-batch
        elements.

    Raises:
        ValueError: if the two static shapes differ.

    Example:

    >>> keras_kd.losses.feature_smooth_l1(np.array([[0.5, 3.0]]),
    ...                                   np.zeros((1, 2)))
    array([1.3125], dtype=float32)

    Reference:
    - [Huber, 1964](https://doi.org/10.1214/aoms/1177703732)
    """
    teacher, student = _same_shape_features(
        "feature_smooth_l1", teacher_features, student_features
    )
    return _mean_over_inner_axes(_huber(teacher - student, delta))


def feature_cosine(teacher_features, student_features):
    """Per-sample cosine distance, per position over the channel axis.

    Each feature vector along the last (channel) axis, at every spatial
    position or token, is compared by `1 - cosine similarity`; the values are
    averaged over the positions. For rank-2 features `(batch_size, width)`
    this is the cosine distance of the two feature vectors. A zero vector has
    a cosine similarity of 0 with anything (distance 1), with a finite
    gradient.

    Formula:

    ```python
    cos = sum(t * s, axis=-1) / (norm(t, axis=-1) * norm(s, axis=-1))
    loss = mean(1 - cos)  # over the positions of each sample
    ```

    Args:
        teacher_features: Tensor of shape `(batch_size, ..., channels)`.
        student_features: Tensor of the same shape as `teacher_features`.

    Returns:
        Float32 tensor of shape `(batch_size,)`, each value in `[0, 2]`.

    Raises:
        ValueError: if the two static shapes differ or the rank is below 2.

    Example:

    >>> t = np.array([[1.0, 0.0], [0.0, 2.0]])
    >>> keras_kd.losses.feature_cosine(t, np.array([[0.0, 1.0], [0.0, 3.0]]))
    array([1., 0.], dtype=float32)

    Reference:
    - [Romero et al., 2015](https://arxiv.org/abs/1412.6550) (hint learning,
      here with a cosine distance per position)
    """
    teacher, student = _same_shape_features(
        "feature_cosine", teacher_features, student_features
    )
    if len(teacher.shape) < 2:
        raise _ops.feature_rank_error(
            "feature_cosine",
            "teacher_features",
            teacher.shape,
            "rank 2 or more, `(batch_size, ..., channels)`",
        )
    teacher = _l2_normalize(_rescale(teacher, axis=-1), axis=-1)
    student = _l2_normalize(_rescale(student, axis=-1), axis=-1)
    return _mean_over_inner_axes(1.0 - ops.sum(teacher * student, axis=-1))


def _attention_map(features, p):
    """`(batch, h, w, c)` -> `(batch, h, w)`: the mean over channels of |x|**p.

    Each sample is divided by its largest magnitude first; the L2
    normalisation that follows removes that scale again.
    """
    features = _rescale(features, axis=(1, 2, 3))
    return ops.mean(ops.power(ops.abs(features), p), axis=-1)


def _average_pool(maps, height, width):
    """Average-pools `(batch, H, W)` maps to `(batch, height, width)`."""
    big_height, big_width = maps.shape[1], maps.shape[2]
    if (big_height, big_width) == (height, width):
        return maps
    maps = ops.reshape(
        maps,
        (-1, height, big_height // height, width, big_width // width),
    )
    return ops.mean(maps, axis=(2, 4))


def attention_transfer(teacher_features, student_features, p=2.0):
    """Per-sample attention transfer loss (Zagoruyko & Komodakis, 2017).

    The attention map of a channels-last feature map is the mean over the
    channels of `|x|**p`, flattened over space and L2-normalised per sample.
    The loss is the mean over positions of the squared difference of the two
    maps. Teacher and student may have different channel counts. If their
    spatial sizes differ, the larger attention map is average-pooled down to
    the smaller one (each size must divide evenly).

    This matches the authors' code (`at`, `at_loss` in
    `szagoruyko/attention-transfer/utils.py`), mdistiller's `AT.py` and
    torchdistill's `ATLoss(mode='code')`: the batch mean equals their
    `(at(s) - at(t)).pow(2).mean()`. Two differences, both outside the
    common case: `|x|**p` instead of `x**p` (the same for even `p` and for
    non-negative ReLU maps), and mdistiller pools the features, not the
    attention maps, when spatial sizes differ.

    Formula:

    ```python
    a = normalize(flatten(mean(abs(x) ** p, axis=-1)))  # (batch, h * w)
    loss = mean((a_teacher - a_student) ** 2, axis=-1)
    ```

    Args:
        teacher_features: Tensor of shape `(batch_size, h_t, w_t, c_t)`.
        student_features: Tensor of shape `(batch_size, h_s, w_s, c_s)`.
        p: Float >= 1, the power applied to the activations. Defaults to
            `2.0`, the paper's choice. mdistiller weights this loss by
            `1000`.

    Returns:
        Float32 tensor of shape `(batch_size,)`.

    Raises:
        ValueError: if an input is not rank 4, the batch sizes differ, or the
            larger spatial size is not a multiple of the smaller one.

    Example:

    >>> t = np.random.normal(size=(2, 8, 8, 16))
    >>> s = np.random.normal(size=(2, 4, 4, 8))  # pooled to 4x4
    >>> keras_kd.losses.attention_transfer(t, s).shape
    (2,)

    Reference:
    - [Zagoruyko & Komodakis, 2017](https://arxiv.org/abs/1612.03928)
    """
    teacher = _to_float32(teacher_features)
    student = _to_float32(student_features)
    for argument, x in (
        ("teacher_features", teacher),
        ("student_features", student),
    ):
        if len(x.shape) != 4:
            raise _ops.feature_rank_error(
                "attention_transfer",
                argument,
                x.shape,
                "rank 4, `(batch_size, height, width, channels)`",
            )
    t_shape, s_shape = tuple(teacher.shape), tuple(student.shape)
    if None not in (t_shape[0], s_shape[0]) and t_shape[0] != s_shape[0]:
        raise _ops.batch_size_mismatch_error(
            "attention_transfer", t_shape, s_shape
        )
    if None in t_shape[1:3] + s_shape[1:3]:
        height = width = None  # unknown until run time: no pooling
    else:
        height = min(t_shape[1], s_shape[1])
        width = min(t_shape[2], s_shape[2])
        for shape in (t_shape, s_shape):
            if shape[1] % height or shape[2] % width:
                raise _ops.attention_spatial_mismatch_error(
                    t_shape, s_shape
                )
    maps = []
    for x in (teacher, student):
        energy = _attention_map(x, p)
        if height is not None and width is not None:
            energy = _average_pool(energy, height, width)
        energy = ops.reshape(energy, (ops.shape(energy)[0], -1))
        maps.append(_l2_normalize(energy, axis=-1))
    return ops.mean(ops.square(maps[0] - maps[1]), axis=-1)


@keras.saving.register_keras_serializable(package="keras_kd")
class FeatureMSE(LossFunctionWrapper):
    """Feature mean squared error. `y_true`: teacher, `y_pred`: student.

    Formula:

    ```python
    loss = mean((teacher_features - student_features) ** 2)  # per sample
    ```

    Args:
        reduction: As in `keras.losses.Loss`. Defaults to
            `"sum_over_batch_size"`, the batch mean.
        name: Name of the loss. Defaults to `"feature_mse"`.
        dtype: As in `keras.losses.Loss`; the math is float32 regardless.

    Example:

    >>> loss = keras_kd.losses.FeatureMSE()
    >>> loss(np.ones((2, 3)), np.zeros((2, 3)))
    1.0

    Reference:
    - [Romero et al., 2015](https://arxiv.org/abs/1412.6550)
    """

    def __init__(
        self, reduction="sum_over_batch_size", name="feature_mse", dtype=None
    ):
        super().__init__(
            feature_mse, reduction=reduction, name=name, dtype=dtype
        )


@keras.saving.register_keras_serializable(package="keras_kd")
class FeatureL1(LossFunctionWrapper):
    """Feature mean absolute error. `y_true`: teacher, `y_pred`: student.

    Formula:

    ```python
    loss = mean(abs(teacher_features - student_features))  # per sample
    ```

    Args:
        reduction: As in `keras.losses.Loss`. Defaults to
            `"sum_over_batch_size"`, the batch mean.
        name: Name of the loss. Defaults to `"feature_l1"`.
        dtype: As in `keras.losses.Loss`; the math is float32 regardless.

    Example:

    >>> loss = keras_kd.losses.FeatureL1()
    >>> loss(np.full((2, 3), 2.0), np.zeros((2, 3)))
    2.0

    Reference:
    - [Romero et al., 2015](https://arxiv.org/abs/1412.6550)
    """

    def __init__(
        self, reduction="sum_over_batch_size", name="feature_l1", dtype=None
    ):
        super().__init__(
            feature_l1, reduction=reduction, name=name, dtype=dtype
        )


@keras.saving.register_keras_serializable(package="keras_kd")
class FeatureSmoothL1(LossFunctionWrapper):
    """Huber loss between features. `y_true`: teacher, `y_pred`: student.

    Formula:

    ```python
    d = abs(teacher_features - student_features)
    loss = mean(where(d < delta, 0.5 * d**2, delta * (d - 0.5 * delta)))
    ```

    Args:
        delta: Positive float, where the loss turns from quadratic to
            linear. Defaults to `1.0`.
        reduction: As in `keras.losses.Loss`. Defaults to
            `"sum_over_batch_size"`, the batch mean.
        name: Name of the loss. Defaults to `"feature_smooth_l1"`.
        dtype: As in `keras.losses.Loss`; the math is float32 regardless.

    Example:

    >>> loss = keras_kd.losses.FeatureSmoothL1(delta=1.0)
    >>> loss(np.array([[0.5, 3.0]]), np.zeros((1, 2)))
    1.3125

    Reference:
    - [Huber, 1964](https://doi.org/10.1214/aoms/1177703732)
    """

    def __init__(
        self,
        delta=1.0,
        reduction="sum_over_batch_size",
        name="feature_smooth_l1",
        dtype=None,
    ):
        super().__init__(
            feature_smooth_l1,
            reduction=reduction,
            name=name,
            dtype=dtype,
            delta=validation.check_positive_number("delta", delta),
        )


@keras.saving.register_keras_serializable(package="keras_kd")
class FeatureCosine(LossFunctionWrapper):
    """Cosine distance between features. `y_true`: teacher, `y_pred`: student.

    `1 - cosine similarity` over the channel (last) axis at each position,
    averaged over the positions of each sample.

    Formula:

    ```python
    loss = mean(1 - cos(t, s, axis=-1))  # per sample
    ```

    Args:
        reduction: As in `keras.losses.Loss`. Defaults to
            `"sum_over_batch_size"`, the batch mean.
        name: Name of the loss. Defaults to `"feature_cosine"`.
        dtype: As in `keras.losses.Loss`; the math is float32 regardless.

    Example:

    >>> loss = keras_kd.losses.FeatureCosine()
    >>> loss(np.array([[1.0, 0.0]]), np.array([[0.0, 1.0]]))
    1.0

    Reference:
    - [Romero et al., 2015](https://arxiv.org/abs/1412.6550)
    """

    def __init__(
        self,
        reduction="sum_over_batch_size",
        name="feature_cosine",
        dtype=None,
    ):
        super().__init__(
            feature_cosine, reduction=reduction, name=name, dtype=dtype
        )


@keras.saving.register_keras_serializable(package="keras_kd")
class AttentionTransfer(LossFunctionWrapper):
    """Attention transfer loss. `y_true`: teacher maps, `y_pred`: student maps.

    Compares the L2-normalised spatial attention maps `mean(|x|**p)` over
    channels of two channels-last feature maps; see `attention_transfer`.

    Formula:

    ```python
    a = normalize(flatten(mean(abs(x) ** p, axis=-1)))
    loss = mean((a_teacher - a_student) ** 2, axis=-1)
    ```

    Args:
        p: Float >= 1, the power applied to the activations. Defaults to
            `2.0`.
        reduction: As in `keras.losses.Loss`. Defaults to
            `"sum_over_batch_size"`, the batch mean.
        name: Name of the loss. Defaults to `"attention_transfer"`.
        dtype: As in `keras.losses.Loss`; the math is float32 regardless.

    Example:

    >>> loss = keras_kd.losses.AttentionTransfer(p=2.0)
    >>> loss(teacher_maps, student_maps)  # (b, 8, 8, 64), (b, 8, 8, 16)

    Reference:
    - [Zagoruyko & Komodakis, 2017](https://arxiv.org/abs/1612.03928)
    """

    # Compares maps of any widths: needs no projection head.
    shape_free = True

    def __init__(
        self,
        p=2.0,
        reduction="sum_over_batch_size",
        name="attention_transfer",
        dtype=None,
    ):
        super().__init__(
            attention_transfer,
            reduction=reduction,
            name=name,
            dtype=dtype,
            p=validation.check_number_at_least("p", p, 1),
        )
