"""Token-level divergences: forward and reverse KL, generalized JSD, skew KL.

Each function compares the teacher's and the student's temperature-softened
distributions over the last axis (the classes, or a language model's
vocabulary) and returns one float32 value per position: the logits' shape
without the last axis, `(batch_size,)` for a classifier and
`(batch_size, sequence)` for a language model. Masks, sample weights and the
mean over real tokens are left to the caller (the `Loss` reduction or the
Distiller).

With `p = softmax(teacher / T)` and `q = softmax(student / T)`, everything
is computed from log-softmaxes in float32 (mixtures through `logaddexp`), so
logits of magnitude 100 at `T=1` give finite values and gradients, and a
probability that underflows to 0 contributes 0, never NaN.

`chunk_size` bounds the memory of the loss over a large vocabulary: the
positions are processed `chunk_size` at a time, forward and backward, with
the analytic gradient (`keras.ops.custom_gradient`), so no full-size
`(positions, vocabulary)` temporary is kept for the backward pass. Values and
gradients are those of `chunk_size=None` (to float32 rounding). The gradient
with respect to `temperature` is not propagated on that path (it is treated
as a constant, as the Distiller's non-trainable temperature is). JAX and
TensorFlow loop over the chunks with `fori_loop`; under XLA the unused
gradient of the teacher logits is pruned, so the loss keeps only the two
logits, their gradient and a few `(chunk_size, vocabulary)` temporaries
(`benchmarks/memory_benchmark.py`). PyTorch runs the chunks in a Python loop,
eagerly, and keeps only the logits for the backward pass; in eager mode
(TensorFlow or PyTorch) the teacher's gradient is computed too, and dropped.
"""

import math

import keras
from keras import ops

from keras_kd.losses._ops import to_float32 as _to_float32
from keras_kd.losses._wrapper import LossFunctionWrapper
from keras_kd.utils import validation

# A divergence is `(kind, swap, coefficient)`: kind "skew" is
# KL(u || c * u + (1 - c) * v) with (u, v) = (p, q), or (q, p) if `swap`;
# kind "jsd" is the generalized JSD with beta = c.
_FORWARD = ("skew", False, 0.0)
_REVERSE = ("skew", True, 0.0)


def forward_kl_divergence(teacher_logits, student_logits, temperature=1.0,
                          scale_by_temperature_squared=True, chunk_size=None):
    """Forward KL divergence `KL(p || q)` per position.

    The teacher's distribution is the reference: the student is pushed to
    cover every token the teacher gives mass to (mass-covering). The same
    numbers as `keras_kd.losses.soft_target_kl`, without its mean over the
    axes between the batch and the classes.

    Formula:

    ```python
    p, q = softmax(teacher / T), softmax(student / T)
    loss = T**2 * sum(p * (log p - log q), axis=-1)
    ```

    Args:
        teacher_logits: Tensor of shape `(..., num_classes)`.
        student_logits: Tensor of the same shape.
        temperature: Positive float or scalar tensor. Defaults to `1.0`.
        scale_by_temperature_squared: Boolean, multiply by `T**2`.
            Defaults to `True`.
        chunk_size: Positive integer, the number of positions (over the
            flattened leading axes) processed at a time to bound the
            memory, or `None` for all at once. Defaults to `None`.

    Returns:
        Float32 tensor of the logits' shape without the last axis.

    Example:

    >>> t = np.array([[[2.0, 0.0, -1.0], [0.0, 1.0, 0.0]]])  # (1, 2, 3)
    >>> keras_kd.losses.forward_kl_divergence(t, t).shape
    (1, 2)

    Reference:
    - [Hinton et al., 2015](https://arxiv.org/abs/1503.02531)
    """
    return _divergence(_FORWARD, teacher_logits, student_logits, temperature,
                       scale_by_temperature_squared, chunk_size,
                       "forward_kl_divergence")


def reverse_kl_divergence(teacher_logits, student_logits, temperature=1.0,
                          scale_by_temperature_squared=True, chunk_size=None):
    """Reverse KL divergence `KL(q || p)` per position.

    The student's distribution is the reference: the student is pushed to
    put its mass where the teacher's is (mode-seeking), as in MiniLLM.

    Formula:

    ```python
    p, q = softmax(teacher / T), softmax(student / T)
    loss = T**2 * sum(q * (log q - log p), axis=-1)
    ```

    Args:
        teacher_logits: Tensor of shape `(..., num_classes)`.
        student_logits: Tensor of the same shape.
        temperature: Positive float or scalar tensor. Defaults to `1.0`.
        scale_by_temperature_squared: Boolean, multiply by `T**2`.
            Defaults to `True`.
        chunk_size: Positive integer, positions per chunk, or `None`.
            Defaults to `None`.

    Returns:
        Float32 tensor of the logits' shape without the last axis.

    Example:

    >>> t = np.array([[2.0, 0.0, -1.0]])
    >>> keras_kd.losses.reverse_kl_divergence(t, t + 3.0)  # a shift: 0
    array([0.], dtype=float32)

    Reference:
    - [Gu et al., 2024](https://arxiv.org/abs/2306.08543) (MiniLLM)
    """
    return _divergence(_REVERSE, teacher_logits, student_logits, temperature,
                       scale_by_temperature_squared, chunk_size,
                       "reverse_kl_divergence")


def generalized_js_divergence(teacher_logits, student_logits, beta=0.5,
                              temperature=1.0,
                              scale_by_temperature_squared=True,
                              chunk_size=None):
    """Generalized Jensen-Shannon divergence of GKD, per position.

    With the mixture `m = beta * p + (1 - beta) * q`, the loss is
    `beta * KL(p || m) + (1 - beta) * KL(q || m)` (Agarwal et al., 2024,
    eq. 1, and TRL's `GKDTrainer.generalized_jsd_loss`). `beta=0.5` is the
    symmetric Jensen-Shannon divergence. The formula itself vanishes at both
    ends (near them it behaves like `beta * KL(p || q)` and
    `(1 - beta) * KL(q || p)`), so, as TRL does, the ends are defined as the
    limits of its direction: `beta=0` is the forward KL `KL(p || q)` and
    `beta=1` the reverse KL `KL(q || p)`, exactly. The value therefore jumps
    at `beta=0` and `beta=1`.

    Formula:

    ```python
    p, q = softmax(teacher / T), softmax(student / T)
    m = beta * p + (1 - beta) * q
    loss = T**2 * (beta * KL(p || m) + (1 - beta) * KL(q || m))
    # beta == 0: T**2 * KL(p || q);  beta == 1: T**2 * KL(q || p)
    ```

    Args:
        teacher_logits: Tensor of shape `(..., num_classes)`.
        student_logits: Tensor of the same shape.
        beta: Python float in `[0, 1]`, the teacher's share of the mixture.
            Defaults to `0.5`.
        temperature: Positive float or scalar tensor. Defaults to `1.0`.
        scale_by_temperature_squared: Boolean, multiply by `T**2`.
            Defaults to `True`.
        chunk_size: Positive integer, positions per chunk, or `None`.
            Defaults to `None`.

    Returns:
        Float32 tensor of the logits' shape without the last axis.

    Example:

    >>> t = np.array([[4.0, 0.0, -1.0]])
    >>> keras_kd.losses.generalized_js_divergence(t, -t, beta=0.5)
    array([0.6255403], dtype=float32)

    Reference:
    - [Agarwal et al., 2024](https://arxiv.org/abs/2306.13649) (GKD)
    """
    beta = validation.check_unit_interval("beta", beta)
    if beta == 0.0:
        spec = _FORWARD
    elif beta == 1.0:
        spec = _REVERSE
    else:
        spec = ("jsd", False, beta)
    return _divergence(spec, teacher_logits, student_logits, temperature,
                       scale_by_temperature_squared, chunk_size,
                       "generalized_js_divergence")


def skew_kl_divergence(teacher_logits, student_logits, skew=0.1,
                       temperature=1.0, scale_by_temperature_squared=True,
                       chunk_size=None):
    """Skew KL divergence of DistiLLM, per position.

    The forward KL against a mixture leaning on the student:
    `KL(p || skew * p + (1 - skew) * q)`. The mixture never has less than
    `skew` times the teacher's mass, which bounds the loss and its gradient
    where the student gives a token almost no probability; `skew=0` is the
    forward KL. DistiLLM's `skewed_forward_kl` returns the cross-entropy
    `-sum(p * log m)`, which differs from this KL by the teacher's entropy,
    a constant for the student: the gradients are the same.

    Formula:

    ```python
    p, q = softmax(teacher / T), softmax(student / T)
    m = skew * p + (1 - skew) * q
    loss = T**2 * sum(p * (log p - log m), axis=-1)
    ```

    Args:
        teacher_logits: Tensor of shape `(..., num_classes)`.
        student_logits: Tensor of the same shape.
        skew: Python float in `[0, 1)`, the teacher's share of the mixture.
            Defaults to `0.1` (the paper's).
        temperature: Positive float or scalar tensor. Defaults to `1.0`.
        scale_by_temperature_squared: Boolean, multiply by `T**2`.
            Defaults to `True`.
        chunk_size: Positive integer, positions per chunk, or `None`.
            Defaults to `None`.

    Returns:
        Float32 tensor of the logits' shape without the last axis.

    Example:

    >>> t = np.array([[4.0, 0.0, -1.0]])
    >>> keras_kd.losses.skew_kl_divergence(t, -t, skew=0.1)
    array([2.1262982], dtype=float32)

    Reference:
    - [Ko et al., 2024](https://arxiv.org/abs/2402.03898) (DistiLLM)
    """
    skew = check_skew(skew)
    return _divergence(("skew", False, skew), teacher_logits, student_logits,
                       temperature, scale_by_temperature_squared, chunk_size,
                       "skew_kl_divergence")


def skew_reverse_kl_divergence(teacher_logits, student_logits, skew=0.1,
                               temperature=1.0,
                               scale_by_temperature_squared=True,
                               chunk_size=None):
    """Skew reverse KL divergence of DistiLLM, per position.

    The reverse KL against a mixture leaning on the teacher:
    `KL(q || (1 - skew) * p + skew * q)`, as DistiLLM's `skewed_reverse_kl`.
    `skew=0` is the reverse KL.

    Formula:

    ```python
    p, q = softmax(teacher / T), softmax(student / T)
    m = (1 - skew) * p + skew * q
    loss = T**2 * sum(q * (log q - log m), axis=-1)
    ```

    Args:
        teacher_logits: Tensor of shape `(..., num_classes)`.
        student_logits: Tensor of the same shape.
        skew: Python float in `[0, 1)`, the student's share of the mixture.
            Defaults to `0.1` (the paper's).
        temperature: Positive float or scalar tensor. Defaults to `1.0`.
        scale_by_temperature_squared: Boolean, multiply by `T**2`.
            Defaults to `True`.
        chunk_size: Positive integer, positions per chunk, or `None`.
            Defaults to `None`.

    Returns:
        Float32 tensor of the logits' shape without the last axis.

    Example:

    >>> t = np.array([[4.0, 0.0, -1.0]])
    >>> keras_kd.losses.skew_reverse_kl_divergence(t, -t, skew=0.1)
    array([2.0830562], dtype=float32)

    Reference:
    - [Ko et al., 2024](https://arxiv.org/abs/2402.03898) (DistiLLM)
    """
    skew = check_skew(skew)
    return _divergence(("skew", True, skew), teacher_logits, student_logits,
                       temperature, scale_by_temperature_squared, chunk_size,
                       "skew_reverse_kl_divergence")


def check_skew(skew):
    """Returns `skew` as a float if it lies in `[0, 1)`."""
    skew = validation.check_unit_interval("skew", skew)
    if skew == 1.0:
        raise ValueError(
            "Argument `skew` must be a number in [0, 1): at 1 the mixture is "
            "the reference distribution itself and the loss is always 0. "
            f"Received: skew={skew}. The paper uses 0.1."
        )
    return skew


def check_chunk_size(chunk_size):
    """Returns `chunk_size` if it is `None` or a positive integer."""
    if chunk_size is None:
        return None
    return validation.check_positive_integer("chunk_size", chunk_size)


# --- The math, on `a = teacher / T` and `b = student / T`. ---------------


def _log_mixture(log_u, log_v, weight_u):
    """`log(weight_u * u + (1 - weight_u) * v)` from log-probabilities."""
    return ops.logaddexp(log_u + math.log(weight_u),
                         log_v + math.log1p(-weight_u))


def _log_pair(spec, a, b):
    log_p = ops.log_softmax(a, axis=-1)
    log_q = ops.log_softmax(b, axis=-1)
    if spec[1]:
        return log_q, log_p
    return log_p, log_q


def _values(spec, a, b):
    """The divergence of each row, written for autodiff."""
    kind, _, coefficient = spec
    log_u, log_v = _log_pair(spec, a, b)
    if kind == "jsd":
        log_m = _log_mixture(log_u, log_v, coefficient)
        kl_u = ops.sum(ops.exp(log_u) * (log_u - log_m), axis=-1)
        kl_v = ops.sum(ops.exp(log_v) * (log_v - log_m), axis=-1)
        return coefficient * kl_u + (1.0 - coefficient) * kl_v
    if coefficient:
        log_v = _log_mixture(log_u, log_v, coefficient)
    return ops.sum(ops.exp(log_u) * (log_u - log_v), axis=-1)


def _values_and_grads(spec, a, b):
    """Row values and their analytic gradients w.r.t. `a` and `b`.

    For `D = KL(u || m)`, `m = s * u + (1 - s) * v`, `u = softmax(x)`,
    `v = softmax(y)`:
    `dD/dx = u * (log u - log m - D) - s * (z - u * sum(z))` with
    `z = u**2 / m`, and `dD/dy = -(1 - s) * (w - v * sum(w))` with
    `w = u * v / m`; both bounded (`m >= s * u`, `m >= (1 - s) * v`).
    For the JSD, `dD/da = beta * p * (log p - log m - KL(p || m))` and
    `dD/db = (1 - beta) * q * (log q - log m - KL(q || m))`.
    """
    kind, swap, coefficient = spec
    log_u, log_v = _log_pair(spec, a, b)
    u, v = ops.exp(log_u), ops.exp(log_v)
    if kind == "jsd":
        log_m = _log_mixture(log_u, log_v, coefficient)
        diff_u, diff_v = log_u - log_m, log_v - log_m
        kl_u = ops.sum(u * diff_u, axis=-1, keepdims=True)
        kl_v = ops.sum(v * diff_v, axis=-1, keepdims=True)
        values = coefficient * kl_u + (1.0 - coefficient) * kl_v
        grad_u = coefficient * u * (diff_u - kl_u)
        grad_v = (1.0 - coefficient) * v * (diff_v - kl_v)
    elif coefficient == 0.0:
        diff = log_u - log_v
        values = ops.sum(u * diff, axis=-1, keepdims=True)
        grad_u = u * (diff - values)
        grad_v = v - u
    else:
        log_m = _log_mixture(log_u, log_v, coefficient)
        diff = log_u - log_m
        values = ops.sum(u * diff, axis=-1, keepdims=True)
        z = ops.exp(2.0 * log_u - log_m)
        w = ops.exp(log_u + log_v - log_m)
        grad_u = u * (diff - values) - coefficient * (
            z - u * ops.sum(z, axis=-1, keepdims=True))
        grad_v = -(1.0 - coefficient) * (
            w - v * ops.sum(w, axis=-1, keepdims=True))
    values = ops.squeeze(values, axis=-1)
    if swap:
        return values, grad_v, grad_u
    return values, grad_u, grad_v


# --- Shapes and chunks. ---------------------------------------------------


def _check_shapes(name, teacher, student):
    t_shape, s_shape = tuple(teacher.shape), tuple(student.shape)
    if len(t_shape) < 1 or len(t_shape) != len(s_shape) or any(
        a is not None and b is not None and a != b
        for a, b in zip(t_shape, s_shape)
    ):
        raise ValueError(
            f"`{name}` compares the teacher's and the student's "
            "distributions position by position, so both logits must have "
            "the same shape `(..., num_classes)`. Received: "
            f"teacher_logits.shape={t_shape}, student_logits.shape={s_shape}"
        )


def _divergence(spec, teacher_logits, student_logits, temperature, scale,
                chunk_size, name):
    teacher = _to_float32(teacher_logits)
    student = _to_float32(student_logits)
    _check_shapes(name, teacher, student)
    temperature = _to_float32(temperature)
    chunk_size = check_chunk_size(chunk_size)
    if chunk_size is None:
        values = _values(spec, teacher / temperature, student / temperature)
        if scale:
            values = values * ops.square(temperature)
        return values
    return _chunked(spec, teacher, student, temperature, bool(scale),
                    chunk_size)


def _chunked(spec, teacher, student, temperature, scale, chunk_size):
    shape = ops.shape(teacher)
    num_classes = teacher.shape[-1]
    if num_classes is None:
        raise ValueError(
            "`chunk_size` needs the number of classes (the last axis of the "
            "logits) to be known. Received: logits of shape "
            f"{tuple(teacher.shape)}. Pass `chunk_size=None`."
        )
    teacher = ops.reshape(teacher, (-1, num_classes))
    student = ops.reshape(student, (-1, num_classes))

    @ops.custom_gradient
    def divergence(teacher, student, temperature):
        factor = ops.square(temperature) if scale else ops.ones_like(
            temperature)

        def rows(t, s):
            return _values(spec, t / temperature, s / temperature)

        values = _map_rows(rows, (teacher, student), chunk_size, None)
        values = values * factor

        def grad(*args, upstream=None):
            if upstream is None:
                (upstream,) = args
            upstream = _to_float32(upstream) * factor / temperature

            def grads(index):
                def fn(t, s, g):
                    _, g_t, g_s = _values_and_grads(
                        spec, t / temperature, s / temperature)
                    return (g_t, g_s)[index] * ops.expand_dims(g, -1)
                return fn

            inputs = (teacher, student, upstream)
            return (
                _map_rows(grads(0), inputs, chunk_size, num_classes),
                _map_rows(grads(1), inputs, chunk_size, num_classes),
                ops.zeros_like(temperature),
            )

        return values, grad

    values = divergence(teacher, student, temperature)
    return ops.reshape(values, shape[:-1])


def _map_rows(fn, inputs, chunk_size, width):
    """`fn` applied to `chunk_size` rows at a time; rows of width `width`
    (or one value per row if `width` is None), stitched together.

    JAX and TensorFlow run a `fori_loop` that writes each chunk into the
    output in place; the last chunk is moved back to end at the last row
    (it recomputes a few rows rather than padding a copy of the inputs).
    PyTorch runs eagerly: a Python loop and a concatenation.
    """
    n = inputs[0].shape[0]
    if keras.backend.backend() == "torch":
        n = int(n)
        parts = [fn(*(x[start:start + chunk_size] for x in inputs))
                 for start in range(0, n, chunk_size)]
        return ops.concatenate(parts, axis=0)
    if n is not None and n <= chunk_size:
        return fn(*inputs)
    if n is None:
        n = ops.shape(inputs[0])[0]
        chunk = ops.minimum(chunk_size, n)
    else:
        chunk = chunk_size
    num_chunks = (n + chunk_size - 1) // chunk_size
    out_shape = (n,) if width is None else (n, width)
    init = ops.zeros(out_shape, "float32")

    def body(i, out):
        start = ops.minimum(i * chunk_size, n - chunk)
        rows = [
            ops.slice(x, (start,) + (0,) * (len(x.shape) - 1),
                      (chunk,) + tuple(x.shape[1:]))
            for x in inputs
        ]
        starts = (start,) if width is None else (start, 0)
        return ops.slice_update(out, starts, fn(*rows))

    return ops.fori_loop(0, num_chunks, body, init)


@keras.saving.register_keras_serializable(package="keras_kd")
class ReverseKLDivergence(LossFunctionWrapper):
    """Reverse KL `KL(q || p)`, per position. `y_true`: teacher logits,
    `y_pred`: student logits.

    Formula:

    ```python
    loss = T**2 * sum(q * (log q - log p)),  p, q = softmax(logits / T)
    ```

    Args:
        temperature: Positive float. Defaults to `1.0`.
        scale_by_temperature_squared: Boolean. Defaults to `True`.
        chunk_size: Positive integer or `None`, positions per chunk.
            Defaults to `None`.
        reduction, name, dtype: As in `keras.losses.Loss`.

    Example:

    >>> loss = keras_kd.losses.ReverseKLDivergence(temperature=2.0)
    >>> loss(teacher_logits, student_logits)

    Reference:
    - [Gu et al., 2024](https://arxiv.org/abs/2306.08543) (MiniLLM)
    """

    def __init__(self, temperature=1.0, scale_by_temperature_squared=True,
                 chunk_size=None, reduction="sum_over_batch_size",
                 name="reverse_kl_divergence", dtype=None):
        super().__init__(
            reverse_kl_divergence, reduction=reduction, name=name,
            dtype=dtype, **_common(temperature, scale_by_temperature_squared,
                                   chunk_size))


@keras.saving.register_keras_serializable(package="keras_kd")
class GeneralizedJSDivergence(LossFunctionWrapper):
    """Generalized JSD of GKD, per position (see
    `generalized_js_divergence`; `beta=0` and `beta=1` are the forward and
    the reverse KL). `y_true`: teacher logits, `y_pred`: student logits.

    Formula:

    ```python
    m = beta * p + (1 - beta) * q
    loss = T**2 * (beta * KL(p || m) + (1 - beta) * KL(q || m))
    ```

    Args:
        beta: Float in `[0, 1]`. Defaults to `0.5`.
        temperature: Positive float. Defaults to `1.0`.
        scale_by_temperature_squared: Boolean. Defaults to `True`.
        chunk_size: Positive integer or `None`. Defaults to `None`.
        reduction, name, dtype: As in `keras.losses.Loss`.

    Example:

    >>> loss = keras_kd.losses.GeneralizedJSDivergence(beta=0.9)
    >>> loss(teacher_logits, student_logits)

    Reference:
    - [Agarwal et al., 2024](https://arxiv.org/abs/2306.13649) (GKD)
    """

    def __init__(self, beta=0.5, temperature=1.0,
                 scale_by_temperature_squared=True, chunk_size=None,
                 reduction="sum_over_batch_size",
                 name="generalized_js_divergence", dtype=None):
        super().__init__(
            generalized_js_divergence, reduction=reduction, name=name,
            dtype=dtype, beta=validation.check_unit_interval("beta", beta),
            **_common(temperature, scale_by_temperature_squared, chunk_size))


@keras.saving.register_keras_serializable(package="keras_kd")
class SkewKLDivergence(LossFunctionWrapper):
    """Skew KL `KL(p || skew * p + (1 - skew) * q)` of DistiLLM, per
    position. `y_true`: teacher logits, `y_pred`: student logits.

    Args:
        skew: Float in `[0, 1)`. Defaults to `0.1`.
        temperature: Positive float. Defaults to `1.0`.
        scale_by_temperature_squared: Boolean. Defaults to `True`.
        chunk_size: Positive integer or `None`. Defaults to `None`.
        reduction, name, dtype: As in `keras.losses.Loss`.

    Example:

    >>> loss = keras_kd.losses.SkewKLDivergence(skew=0.1)
    >>> loss(teacher_logits, student_logits)

    Reference:
    - [Ko et al., 2024](https://arxiv.org/abs/2402.03898) (DistiLLM)
    """

    def __init__(self, skew=0.1, temperature=1.0,
                 scale_by_temperature_squared=True, chunk_size=None,
                 reduction="sum_over_batch_size", name="skew_kl_divergence",
                 dtype=None):
        super().__init__(
            skew_kl_divergence, reduction=reduction, name=name, dtype=dtype,
            skew=check_skew(skew),
            **_common(temperature, scale_by_temperature_squared, chunk_size))


@keras.saving.register_keras_serializable(package="keras_kd")
class SkewReverseKLDivergence(LossFunctionWrapper):
    """Skew reverse KL `KL(q || (1 - skew) * p + skew * q)` of DistiLLM,
    per position. `y_true`: teacher logits, `y_pred`: student logits.

    Args:
        skew: Float in `[0, 1)`. Defaults to `0.1`.
        temperature: Positive float. Defaults to `1.0`.
        scale_by_temperature_squared: Boolean. Defaults to `True`.
        chunk_size: Positive integer or `None`. Defaults to `None`.
        reduction, name, dtype: As in `keras.losses.Loss`.

    Example:

    >>> loss = keras_kd.losses.SkewReverseKLDivergence(skew=0.1)
    >>> loss(teacher_logits, student_logits)

    Reference:
    - [Ko et al., 2024](https://arxiv.org/abs/2402.03898) (DistiLLM)
    """

    def __init__(self, skew=0.1, temperature=1.0,
                 scale_by_temperature_squared=True, chunk_size=None,
                 reduction="sum_over_batch_size",
                 name="skew_reverse_kl_divergence", dtype=None):
        super().__init__(
            skew_reverse_kl_divergence, reduction=reduction, name=name,
            dtype=dtype, skew=check_skew(skew),
            **_common(temperature, scale_by_temperature_squared, chunk_size))


def _common(temperature, scale_by_temperature_squared, chunk_size):
    return {
        "temperature": validation.check_positive_number(
            "temperature", temperature),
        "scale_by_temperature_squared": validation.check_bool(
            "scale_by_temperature_squared", scale_by_temperature_squared),
        "chunk_size": check_chunk_size(chunk_size),
    }
