"""Relation-based losses: match how samples relate to each other in a batch.

Each function takes the teacher's features first and the student's second,
any rank >= 2 (each sample is flattened to a vector), and widths may differ.
The losses compare samples within a batch, so they return one value per
anchor row, shape `(batch_size,)`, whose batch mean equals the published loss.
"""

import math

import keras
from keras import ops

from keras_kd.losses.feature import _huber
from keras_kd.losses.feature import _l2_normalize
from keras_kd.losses.feature import _magnitude
from keras_kd.losses.feature import _rescale
from keras_kd.losses import _ops
from keras_kd.losses._ops import to_float32 as _to_float32
from keras_kd.losses._wrapper import LossFunctionWrapper
from keras_kd.utils import validation

# Loss weights of the reference recipes (CIFAR-100, ResNet32x4 -> ResNet8x4):
# mdistiller `mdistiller/engine/cfg.py`: CFG.RKD.DISTANCE_WEIGHT = 25,
# CFG.RKD.ANGLE_WEIGHT = 50, CFG.SP.LOSS.FEAT_WEIGHT = 3000.0 and
# CFG.PKT.LOSS.FEAT_WEIGHT = 30000.0 (the same as RepDistiller's scripts).
DEFAULT_WEIGHTS = {
    "rkd_distance": 25.0,
    "rkd_angle": 50.0,
    "similarity_preserving": 3000.0,
    "pkt": 30000.0,
}

# mdistiller's `_pdist` clamps squared distances to this before `sqrt`.
_DISTANCE_EPSILON = 1e-12


def _flatten(x):
    inner = x.shape[1:]
    if None in inner:
        return ops.reshape(x, (ops.shape(x)[0], -1))
    return ops.reshape(x, (-1, math.prod(inner)))


def _flat_pair(loss_name, teacher_features, student_features):
    """Checks the pair, casts to float32 and flattens to `(batch, width)`."""
    teacher = _to_float32(teacher_features)
    student = _to_float32(student_features)
    for argument, x in (
        ("teacher_features", teacher),
        ("student_features", student),
    ):
        if len(x.shape) < 2:
            raise _ops.feature_rank_error(
                loss_name, argument, x.shape, "rank 2 or more"
            )
    t_batch, s_batch = teacher.shape[0], student.shape[0]
    if None not in (t_batch, s_batch) and t_batch != s_batch:
        raise _ops.batch_size_mismatch_error(
            loss_name, teacher.shape, student.shape
        )
    _ops.check_relation_batch_size(
        loss_name, t_batch if t_batch is not None else s_batch
    )
    return _flatten(teacher), _flatten(student)


def _batch_size(x):
    return ops.cast(ops.shape(x)[0], "float32")


def _off_diagonal_mask(x):
    index = ops.arange(ops.shape(x)[0])
    return ops.cast(
        ops.expand_dims(index, 1) != ops.expand_dims(index, 0), "float32"
    )


def _center(x):
    """Subtracts the batch mean: the same distances, less float32 rounding."""
    return x - ops.mean(x, axis=0, keepdims=True)


def _normalized_distances(x):
    """Pairwise distances divided by their mean over the off-diagonal pairs.

    As mdistiller's `_pdist`: squared distances from the Gram matrix, clamped
    to `1e-12` before `sqrt` (a finite gradient for duplicate rows), and a
    zero diagonal. Clamped pairs are `1e-6 > 0`, so the reference's mean over
    `d > 0` is the mean over all `b * (b - 1)` off-diagonal pairs.
    """
    squares = ops.sum(ops.square(x), axis=-1)
    squared = (
        ops.expand_dims(squares, 1)
        + ops.expand_dims(squares, 0)
        - 2.0 * ops.matmul(x, ops.transpose(x))
    )
    distances = ops.sqrt(ops.maximum(squared, _DISTANCE_EPSILON))
    distances = distances * _off_diagonal_mask(x)
    n = _batch_size(x)
    mean = ops.sum(distances) / ops.maximum(n * (n - 1.0), 1.0)
    return distances / ops.maximum(mean, _DISTANCE_EPSILON)


def rkd_distance(teacher_features, student_features):
    """Per-row RKD distance loss (Park et al., 2019).

    Matches the pairwise Euclidean distances of the samples, each set divided
    by its mean distance, with a Huber (smooth L1, `delta=1`) penalty. Scaling
    all features of a batch by a positive constant changes nothing.

    Formula:

    ```python
    d_ij = norm(x_i - x_j) / mean_{i != j} norm(x_i - x_j)  # d_ii = 0
    loss = mean_{i, j} smooth_l1(d_ij(student) - d_ij(teacher))
    ```

    This is mdistiller's `RKD.py` (and torchdistill's `RKDLoss`, both from the
    authors' `lenscloth/RKD`): the mean distance is taken over the
    `b * (b - 1)` off-diagonal pairs, and the smooth L1 is averaged over all
    `b**2` entries, the zero diagonal included.

    Args:
        teacher_features: Tensor of shape `(batch_size, ...)`.
        student_features: Tensor of shape `(batch_size, ...)`; its width may
            differ from the teacher's.

    Returns:
        Float32 tensor of shape `(batch_size,)`: row `i` is
        `mean_j smooth_l1(...)`, so the batch mean is the published loss.

    Raises:
        ValueError: if the static batch size is 1 or the batch sizes differ.

    Example:

    >>> t = np.random.normal(size=(8, 64))
    >>> loss = keras_kd.losses.rkd_distance(t, 3.0 * t)  # scale-invariant
    >>> bool(np.allclose(loss, 0.0, atol=1e-6))
    True

    Reference:
    - [Park et al., 2019](https://arxiv.org/abs/1904.05068)
    """
    teacher, student = _flat_pair(
        "rkd_distance", teacher_features, student_features
    )
    t_distances = _normalized_distances(_rescale(_center(teacher)))
    s_distances = _normalized_distances(_rescale(_center(student)))
    return ops.mean(_huber(s_distances - t_distances), axis=-1)


# Pairs closer than this fraction of the batch's largest squared distance
# count as coincident: their difference vector is 0, as for exact duplicates.
# Below it the Gram form's float32 rounding decides the direction.
_COINCIDENT = 1e-6


def _angles(x):
    """`(b, width)` -> `(b, b, b)`: `[i, j, k] = cos of angle j-i-k`.

    Computed from the Gram matrix `g = x x^T`, which costs `b**2 * width`
    instead of the `b**3 * width` of the `b` products of difference vectors:
    `dot(x_j - x_i, x_k - x_i) = g_jk - g_ij - g_ik + g_ii` and
    `norm(x_j - x_i)**2 = g_ii + g_jj - 2 g_ij`. Entries with `j == i` or
    `k == i`, and pairs closer than `_COINCIDENT` (relative, squared), are 0:
    a zero difference vector is normalised to 0, as `F.normalize` does.
    """
    x = _rescale(_center(x))
    gram = ops.matmul(x, ops.transpose(x))
    diagonal = ops.diagonal(gram)
    squared = (
        ops.expand_dims(diagonal, 1) + ops.expand_dims(diagonal, 0)
        - 2.0 * gram
    )
    distinct = squared > _COINCIDENT * ops.stop_gradient(ops.max(squared))
    safe = ops.where(distinct, squared, ops.ones_like(squared))
    inverse = ops.where(distinct, 1.0 / ops.sqrt(safe), ops.zeros_like(safe))
    dots = (
        ops.expand_dims(gram, 0)
        - ops.expand_dims(gram, 2)
        - ops.expand_dims(gram, 1)
        + ops.reshape(diagonal, (-1, 1, 1))
    )
    return dots * ops.expand_dims(inverse, 2) * ops.expand_dims(inverse, 1)


def rkd_angle(teacher_features, student_features):
    """Per-row RKD angle loss (Park et al., 2019).

    Matches the cosines of the angles formed by every triplet of samples,
    with a Huber (smooth L1, `delta=1`) penalty. Scaling or shifting all
    features of a batch changes nothing. Compute grows as `b**2 * width +
    b**3` (the angles come from the batch's Gram matrix) and memory as `b**3`.

    Formula:

    ```python
    e_ij = (x_j - x_i) / norm(x_j - x_i)
    a_ijk = dot(e_ij, e_ik)
    loss = mean_{i, j, k} smooth_l1(a_ijk(student) - a_ijk(teacher))
    ```

    This is mdistiller's `RKD.py` (and torchdistill's `RKDLoss`): all `b**3`
    triplets are averaged, the degenerate ones (`j == i` or `k == i`, both
    angles 0) included. Two samples closer than `1e-3` times the batch's
    largest distance count as duplicates (angle 0), where the reference
    takes the direction of their float32 difference, a gradient spike.

    Args:
        teacher_features: Tensor of shape `(batch_size, ...)`.
        student_features: Tensor of shape `(batch_size, ...)`; its width may
            differ from the teacher's.

    Returns:
        Float32 tensor of shape `(batch_size,)`: row `i` averages the
        triplets with vertex `i`, so the batch mean is the published loss.

    Raises:
        ValueError: if the static batch size is 1 or the batch sizes differ.

    Example:

    >>> t = np.random.normal(size=(8, 64))
    >>> loss = keras_kd.losses.rkd_angle(t, 2.0 * t + 1.0)  # scale, shift
    >>> bool(np.allclose(loss, 0.0, atol=1e-6))
    True

    Reference:
    - [Park et al., 2019](https://arxiv.org/abs/1904.05068)
    """
    teacher, student = _flat_pair(
        "rkd_angle", teacher_features, student_features
    )
    t_angles = _angles(teacher)
    s_angles = _angles(student)
    return ops.mean(_huber(s_angles - t_angles), axis=(1, 2))


def _normalized_gram(x):
    return _l2_normalize(ops.matmul(x, ops.transpose(x)), axis=-1)


def similarity_preserving(teacher_features, student_features):
    """Per-row similarity-preserving loss (Tung & Mori, 2019).

    Matches the batch Gram matrices `G = F F^T`, each row L2-normalised.
    Scaling all features of a batch by a positive constant changes nothing.

    Formula:

    ```python
    G = normalize(F @ F.T, axis=1)  # F: (b, width)
    loss = norm(G_teacher - G_student, "fro") ** 2 / b**2
    ```

    This is mdistiller's `SP.py` `similarity_loss` (and torchdistill's
    `SPKDLoss` with `reduction='batchmean'`).

    Args:
        teacher_features: Tensor of shape `(batch_size, ...)`.
        student_features: Tensor of shape `(batch_size, ...)`; its width may
            differ from the teacher's.

    Returns:
        Float32 tensor of shape `(batch_size,)`: row `i` is
        `sum_j (G_t - G_s)_ij**2 / b`, so the batch mean is
        `||G_t - G_s||_F**2 / b**2`.

    Raises:
        ValueError: if the static batch size is 1 or the batch sizes differ.

    Example:

    >>> t = np.random.normal(size=(8, 4, 4, 16))
    >>> loss = keras_kd.losses.similarity_preserving(t, 5.0 * t)
    >>> bool(np.allclose(loss, 0.0, atol=1e-6))
    True

    Reference:
    - [Tung & Mori, 2019](https://arxiv.org/abs/1907.09682)
    """
    teacher, student = _flat_pair(
        "similarity_preserving", teacher_features, student_features
    )
    g_teacher = _normalized_gram(_rescale(teacher))
    g_student = _normalized_gram(_rescale(student))
    return ops.sum(ops.square(g_teacher - g_student), axis=-1) / _batch_size(
        teacher
    )


def _conditional_probabilities(x, epsilon):
    """Cosine kernel mapped to [0, 1], each row divided by its sum.

    `x / (norm(x) + eps)` is computed as `y / (norm(y) + eps / m)` with
    `y = x / m`, `m = max(|x|)`: the same value, without float32 overflow.
    """
    scale = _magnitude(x, axis=-1)
    x = _l2_normalize(x / scale, axis=-1, epsilon=epsilon / scale)
    kernel = (ops.matmul(x, ops.transpose(x)) + 1.0) / 2.0
    return kernel / ops.sum(kernel, axis=-1, keepdims=True)


def pkt(teacher_features, student_features, epsilon=1e-7):
    """Per-row probabilistic knowledge transfer loss (Passalis & Tefas, 2018).

    Turns the cosine similarities of the samples into conditional
    probabilities `p(j | i)` and matches the student's to the teacher's with
    `KL(teacher || student)`. Scaling any sample by a positive constant
    changes (almost) nothing.

    Formula:

    ```python
    k_ij = (cos(x_i, x_j) + 1) / 2
    p_ij = k_ij / sum_j k_ij
    loss = mean_{i, j} p_t_ij * log((p_t_ij + eps) / (p_s_ij + eps))
    ```

    This is the authors' `passalis/probabilistic_kt` `cosine_similarity_loss`
    as in mdistiller's `PKT.py` and torchdistill's `PKTLoss`: vectors are
    divided by `norm + eps`, and the KL terms are averaged over all `b**2`
    pairs (not summed per row), which mdistiller's weight `30000` assumes.

    Args:
        teacher_features: Tensor of shape `(batch_size, ...)`.
        student_features: Tensor of shape `(batch_size, ...)`; its width may
            differ from the teacher's.
        epsilon: Small positive float added to the norms and the
            probabilities. Defaults to `1e-7`.

    Returns:
        Float32 tensor of shape `(batch_size,)`: row `i` is
        `mean_j p_t_ij * log(...)`, so the batch mean is the published loss.

    Raises:
        ValueError: if the static batch size is 1 or the batch sizes differ.

    Example:

    >>> t = np.random.normal(size=(8, 64))
    >>> s = np.random.normal(size=(8, 16))  # any width
    >>> keras_kd.losses.pkt(t, s).shape
    (8,)

    Reference:
    - [Passalis & Tefas, 2018](https://arxiv.org/abs/1803.10837)
    """
    teacher, student = _flat_pair("pkt", teacher_features, student_features)
    p_teacher = _conditional_probabilities(teacher, epsilon)
    p_student = _conditional_probabilities(student, epsilon)
    kl = p_teacher * (
        ops.log(p_teacher + epsilon) - ops.log(p_student + epsilon)
    )
    return ops.mean(kl, axis=-1)


@keras.saving.register_keras_serializable(package="keras_kd")
class RKDDistance(LossFunctionWrapper):
    """RKD distance loss. `y_true`: teacher features, `y_pred`: student.

    Formula:

    ```python
    loss = mean_{i, j} smooth_l1(d_ij(student) - d_ij(teacher))
    ```

    with `d_ij` the distances divided by their off-diagonal mean; see
    `rkd_distance`. The published weight is
    `keras_kd.losses.relation.DEFAULT_WEIGHTS["rkd_distance"]` (25).

    Args:
        reduction: As in `keras.losses.Loss`. Defaults to
            `"sum_over_batch_size"`, the batch mean.
        name: Name of the loss. Defaults to `"rkd_distance"`.
        dtype: As in `keras.losses.Loss`; the math is float32 regardless.

    Example:

    >>> loss = keras_kd.losses.RKDDistance()
    >>> loss(teacher_features, student_features)

    Reference:
    - [Park et al., 2019](https://arxiv.org/abs/1904.05068)
    """

    # Compares the samples of a batch with each other (read by the
    # Distiller, which then feeds it the global batch); needs no head.
    relational = True
    shape_free = True

    def __init__(
        self, reduction="sum_over_batch_size", name="rkd_distance", dtype=None
    ):
        super().__init__(
            rkd_distance, reduction=reduction, name=name, dtype=dtype
        )


@keras.saving.register_keras_serializable(package="keras_kd")
class RKDAngle(LossFunctionWrapper):
    """RKD angle loss. `y_true`: teacher features, `y_pred`: student.

    Formula:

    ```python
    loss = mean_{i, j, k} smooth_l1(a_ijk(student) - a_ijk(teacher))
    ```

    with `a_ijk` the cosine of the angle at sample `i`; see `rkd_angle`. The
    published weight is
    `keras_kd.losses.relation.DEFAULT_WEIGHTS["rkd_angle"]` (50).

    Args:
        reduction: As in `keras.losses.Loss`. Defaults to
            `"sum_over_batch_size"`, the batch mean.
        name: Name of the loss. Defaults to `"rkd_angle"`.
        dtype: As in `keras.losses.Loss`; the math is float32 regardless.

    Example:

    >>> loss = keras_kd.losses.RKDAngle()
    >>> loss(teacher_features, student_features)

    Reference:
    - [Park et al., 2019](https://arxiv.org/abs/1904.05068)
    """

    # Compares the samples of a batch with each other (read by the
    # Distiller, which then feeds it the global batch); needs no head.
    relational = True
    shape_free = True

    def __init__(
        self, reduction="sum_over_batch_size", name="rkd_angle", dtype=None
    ):
        super().__init__(
            rkd_angle, reduction=reduction, name=name, dtype=dtype
        )


@keras.saving.register_keras_serializable(package="keras_kd")
class SimilarityPreserving(LossFunctionWrapper):
    """Similarity-preserving loss. `y_true`: teacher, `y_pred`: student.

    Formula:

    ```python
    loss = norm(G_teacher - G_student, "fro") ** 2 / b**2
    ```

    with `G` the row-normalised Gram matrix of the batch; see
    `similarity_preserving`. The published weight is
    `keras_kd.losses.relation.DEFAULT_WEIGHTS["similarity_preserving"]`
    (3000).

    Args:
        reduction: As in `keras.losses.Loss`. Defaults to
            `"sum_over_batch_size"`, the batch mean.
        name: Name of the loss. Defaults to `"similarity_preserving"`.
        dtype: As in `keras.losses.Loss`; the math is float32 regardless.

    Example:

    >>> loss = keras_kd.losses.SimilarityPreserving()
    >>> loss(teacher_features, student_features)

    Reference:
    - [Tung & Mori, 2019](https://arxiv.org/abs/1907.09682)
    """

    # Compares the samples of a batch with each other (read by the
    # Distiller, which then feeds it the global batch); needs no head.
    relational = True
    shape_free = True

    def __init__(
        self,
        reduction="sum_over_batch_size",
        name="similarity_preserving",
        dtype=None,
    ):
        super().__init__(
            similarity_preserving, reduction=reduction, name=name, dtype=dtype
        )


@keras.saving.register_keras_serializable(package="keras_kd")
class PKT(LossFunctionWrapper):
    """Probabilistic knowledge transfer. `y_true`: teacher, `y_pred`: student.

    Formula:

    ```python
    loss = mean_{i, j} p_t_ij * log((p_t_ij + eps) / (p_s_ij + eps))
    ```

    with `p_ij` the row-normalised cosine kernel `(cos + 1) / 2`; see `pkt`.
    The published weight is `keras_kd.losses.relation.DEFAULT_WEIGHTS["pkt"]`
    (30000).

    Args:
        epsilon: Small positive float added to the norms and the
            probabilities. Defaults to `1e-7`.
        reduction: As in `keras.losses.Loss`. Defaults to
            `"sum_over_batch_size"`, the batch mean.
        name: Name of the loss. Defaults to `"pkt"`.
        dtype: As in `keras.losses.Loss`; the math is float32 regardless.

    Example:

    >>> loss = keras_kd.losses.PKT()
    >>> loss(teacher_features, student_features)

    Reference:
    - [Passalis & Tefas, 2018](https://arxiv.org/abs/1803.10837)
    """

    # Compares the samples of a batch with each other (read by the
    # Distiller, which then feeds it the global batch); needs no head.
    relational = True
    shape_free = True

    def __init__(
        self,
        epsilon=1e-7,
        reduction="sum_over_batch_size",
        name="pkt",
        dtype=None,
    ):
        super().__init__(
            pkt,
            reduction=reduction,
            name=name,
            dtype=dtype,
            epsilon=validation.check_positive_number("epsilon", epsilon),
        )
