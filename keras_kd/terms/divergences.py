"""Token-level divergence terms: reverse KL, generalized JSD, skew KL.

Terms for the distributions a language model (or a classifier) produces at
each position. The math is in `keras_kd.losses.tokens`; the forward KL is
`SoftTargets` (term id `"forward_kl"`).
"""

import keras

from keras_kd.losses import tokens
from keras_kd.terms.base import LogitTerm
from keras_kd.utils import validation


class _TokenDivergence(LogitTerm):
    """Shared arguments of the divergence terms (not public)."""

    response = True
    supported_outputs = ("softmax",)
    _function = None

    def __init__(self, temperature=None, scale_by_temperature_squared=True,
                 chunk_size=None, standardize=False, weight=1.0, name=None,
                 **kwargs):
        super().__init__(temperature=temperature, standardize=standardize,
                         weight=weight, name=name, **kwargs)
        self.scale_by_temperature_squared = validation.check_bool(
            "scale_by_temperature_squared", scale_by_temperature_squared)
        self.chunk_size = tokens.check_chunk_size(chunk_size)

    def _arguments(self):
        return {}

    def call(self, teacher, student, labels=None):
        teacher, student = self.logits_pair(teacher, student)
        return type(self)._function(
            teacher, student, temperature=self.temperature,
            scale_by_temperature_squared=self.scale_by_temperature_squared,
            chunk_size=self.chunk_size, **self._arguments())

    def get_config(self):
        config = super().get_config()
        config.update({
            "scale_by_temperature_squared": self.scale_by_temperature_squared,
            "chunk_size": self.chunk_size,
            **self._arguments(),
        })
        return config


@keras.saving.register_keras_serializable(package="keras_kd")
class ReverseKL(_TokenDivergence):
    """Reverse KL term: `T**2 * KL(q || p)` at each position.

    Mode-seeking: the student puts its mass where the teacher's is, rather
    than covering every token the teacher allows (MiniLLM). A response term:
    `Distiller(alpha=...)` weighs it by `1 - alpha`. It returns one value per
    position (`(batch_size,)` for a classifier, `(batch_size, sequence)` for
    a language model); the Distiller weighs and averages them.

    Formula:

    ```python
    p, q = softmax(teacher / T), softmax(student / T)
    loss = T**2 * sum(q * (log q - log p), axis=-1)
    ```

    Args:
        temperature: Positive float, or `None` for the Distiller's
            (schedulable) temperature. Defaults to `None`.
        scale_by_temperature_squared: Boolean, multiply by `T**2`.
            Defaults to `True`.
        chunk_size: Positive integer, positions per chunk to bound the
            memory over a large vocabulary (see
            `keras_kd.losses.tokens`), or `None`. Defaults to `None`.
        standardize: Boolean, logit standardization. Defaults to `False`.
        weight: Non-negative float. Defaults to `1.0`.
        name: The history key. Defaults to `"reverse_kl"`.
        **kwargs: As in `keras_kd.Term` (`teacher`, `teacher_layer`, ...).

    Returns:
        Float32 tensor, the logits' shape without the last axis.

    Example:

    ```python
    distiller = keras_kd.Distiller(
        teacher, student,
        terms=[keras_kd.HardLoss(), keras_kd.terms.ReverseKL()])
    ```

    Reference:
    - [Gu et al., 2024](https://arxiv.org/abs/2306.08543) (MiniLLM)
    """

    _function = staticmethod(tokens.reverse_kl_divergence)


@keras.saving.register_keras_serializable(package="keras_kd")
class GeneralizedJSD(_TokenDivergence):
    """Generalized Jensen-Shannon term of GKD at each position.

    `beta * KL(p || m) + (1 - beta) * KL(q || m)` with the mixture
    `m = beta * p + (1 - beta) * q`, times `T**2`, as TRL's
    `generalized_jsd_loss`. `beta=0` is exactly the forward KL `KL(p || q)`
    and `beta=1` exactly the reverse KL `KL(q || p)`: the formula vanishes
    at both ends, so they are special-cased to the direction it tends to,
    as TRL does (the value jumps there). A response term.

    Formula:

    ```python
    p, q = softmax(teacher / T), softmax(student / T)
    m = beta * p + (1 - beta) * q
    loss = T**2 * (beta * KL(p || m) + (1 - beta) * KL(q || m))
    ```

    Args:
        beta: Float in `[0, 1]`, the teacher's share of the mixture.
            Defaults to `0.5` (the symmetric JSD).
        temperature: Positive float, or `None` for the Distiller's.
            Defaults to `None`.
        scale_by_temperature_squared: Boolean. Defaults to `True`.
        chunk_size: Positive integer or `None`, positions per chunk.
            Defaults to `None`.
        standardize: Boolean, logit standardization. Defaults to `False`.
        weight: Non-negative float. Defaults to `1.0`.
        name: The history key. Defaults to `"generalized_jsd"`.
        **kwargs: As in `keras_kd.Term`.

    Returns:
        Float32 tensor, the logits' shape without the last axis.

    Example:

    ```python
    term = keras_kd.terms.GeneralizedJSD(beta=0.9, temperature=1.0)
    distiller = keras_kd.Distiller(teacher, student,
                                   terms=[keras_kd.HardLoss(), term])
    ```

    Reference:
    - [Agarwal et al., 2024](https://arxiv.org/abs/2306.13649) (GKD)
    """

    _function = staticmethod(tokens.generalized_js_divergence)

    def __init__(self, beta=0.5, **kwargs):
        beta = validation.check_unit_interval("beta", beta)
        super().__init__(**kwargs)
        self.beta = beta

    def _arguments(self):
        return {"beta": self.beta}


@keras.saving.register_keras_serializable(package="keras_kd")
class SkewKL(_TokenDivergence):
    """Skew KL term of DistiLLM: `T**2 * KL(p || skew*p + (1-skew)*q)`.

    The forward KL against a mixture that keeps at least `skew` times the
    teacher's mass, so a token the student nearly excludes cannot blow the
    loss up. `skew=0` is the forward KL (`SoftTargets`). The value is a KL
    (0 when the student matches the teacher); DistiLLM's code returns the
    cross-entropy, larger by the teacher's entropy, with the same gradients.
    A response term.

    Formula:

    ```python
    p, q = softmax(teacher / T), softmax(student / T)
    loss = T**2 * sum(p * (log p - log(skew * p + (1 - skew) * q)), -1)
    ```

    Args:
        skew: Float in `[0, 1)`. Defaults to `0.1` (the paper's).
        temperature: Positive float, or `None` for the Distiller's.
            Defaults to `None`.
        scale_by_temperature_squared: Boolean. Defaults to `True`.
        chunk_size: Positive integer or `None`, positions per chunk.
            Defaults to `None`.
        standardize: Boolean, logit standardization. Defaults to `False`.
        weight: Non-negative float. Defaults to `1.0`.
        name: The history key. Defaults to `"skew_kl"`.
        **kwargs: As in `keras_kd.Term`.

    Returns:
        Float32 tensor, the logits' shape without the last axis.

    Example:

    ```python
    distiller = keras_kd.Distiller(
        teacher, student, temperature=1.0,
        terms=[keras_kd.HardLoss(), keras_kd.terms.SkewKL(skew=0.1)])
    ```

    Reference:
    - [Ko et al., 2024](https://arxiv.org/abs/2402.03898) (DistiLLM)
    """

    _function = staticmethod(tokens.skew_kl_divergence)

    def __init__(self, skew=0.1, **kwargs):
        skew = tokens.check_skew(skew)
        super().__init__(**kwargs)
        self.skew = skew

    def _arguments(self):
        return {"skew": self.skew}


@keras.saving.register_keras_serializable(package="keras_kd")
class SkewReverseKL(SkewKL):
    """Skew reverse KL term of DistiLLM:
    `T**2 * KL(q || (1-skew)*p + skew*q)`.

    The reverse KL against a mixture that keeps at least `skew` times the
    student's mass. `skew=0` is `ReverseKL`. A response term.

    Formula:

    ```python
    p, q = softmax(teacher / T), softmax(student / T)
    loss = T**2 * sum(q * (log q - log((1 - skew) * p + skew * q)), -1)
    ```

    Args:
        skew: Float in `[0, 1)`. Defaults to `0.1` (the paper's).
        temperature: Positive float, or `None` for the Distiller's.
            Defaults to `None`.
        scale_by_temperature_squared: Boolean. Defaults to `True`.
        chunk_size: Positive integer or `None`, positions per chunk.
            Defaults to `None`.
        standardize: Boolean, logit standardization. Defaults to `False`.
        weight: Non-negative float. Defaults to `1.0`.
        name: The history key. Defaults to `"skew_reverse_kl"`.
        **kwargs: As in `keras_kd.Term`.

    Returns:
        Float32 tensor, the logits' shape without the last axis.

    Example:

    ```python
    term = keras_kd.terms.SkewReverseKL(skew=0.1, chunk_size=256)
    ```

    Reference:
    - [Ko et al., 2024](https://arxiv.org/abs/2402.03898) (DistiLLM)
    """

    _function = staticmethod(tokens.skew_reverse_kl_divergence)
