"""`SoftTargets`: Hinton's soft-target term, for softmax and sigmoid outputs."""

import keras

from keras_kd.losses import tokens
from keras_kd.losses.logits import bernoulli_kl
from keras_kd.terms.base import LogitTerm
from keras_kd.utils import validation


@keras.saving.register_keras_serializable(package="keras_kd")
class SoftTargets(LogitTerm):
    """Matches the teacher's temperature-softened outputs (Hinton KD).

    Softmax outputs: `T**2 * KL(softmax(t / T) || softmax(s / T))`. Sigmoid
    outputs (binary or multi-label): the mean over the outputs of the
    Bernoulli KL of `sigmoid(t / T)` and `sigmoid(s / T)`, times `T**2`. With
    several teachers their softened probabilities are averaged. It is a
    response term: `Distiller(alpha=...)` weighs it by `1 - alpha`. It
    returns one value per position: `(batch_size,)` for classifiers,
    `(batch_size, sequence)` for `(batch_size, sequence, vocabulary)`
    logits (term id `"forward_kl"`).

    Formula:

    ```python
    loss = T**2 * sum(p_t * (log p_t - log p_s)),  p = softmax(logits / T)
    ```

    Args:
        temperature: Positive float, or `None` for the Distiller's
            (schedulable) temperature. Defaults to `None`.
        scale_by_temperature_squared: Boolean, multiply by `T**2`.
            Defaults to `True`.
        standardize: Boolean, logit standardization (Sun et al., 2024; the
            paper's base temperature is 2). Defaults to `False`.
        weight: Non-negative float. Defaults to `1.0`.
        name: The history key. Defaults to `"soft_loss"`.
        chunk_size: Positive integer, positions per chunk to bound the
            memory over a large vocabulary (softmax outputs; see
            `keras_kd.losses.tokens`), or `None`. Same values and
            gradients. Defaults to `None`.

    Returns:
        Float32 tensor, the logits' shape without the last axis.

    Example:

    ```python
    distiller = keras_kd.Distiller(
        teacher, student, alpha=0.1, temperature=2.0,
        terms=[keras_kd.HardLoss(), keras_kd.SoftTargets(standardize=True)])
    ```

    Reference:
    - [Hinton et al., 2015](https://arxiv.org/abs/1503.02531)
    - [Sun et al., 2024](https://arxiv.org/abs/2403.01427) (`standardize`)
    """

    def __init__(self, temperature=None, scale_by_temperature_squared=True,
                 standardize=False, weight=1.0, name="soft_loss",
                 chunk_size=None, **kwargs):
        super().__init__(temperature=temperature, standardize=standardize,
                         weight=weight, name=name, **kwargs)
        self.scale_by_temperature_squared = validation.check_bool(
            "scale_by_temperature_squared", scale_by_temperature_squared
        )
        self.chunk_size = tokens.check_chunk_size(chunk_size)

    def call(self, teacher, student, labels=None):
        teacher, student = self.logits_pair(teacher, student)
        if self.outputs == "sigmoid":
            return bernoulli_kl(teacher, student, self.temperature,
                                self.scale_by_temperature_squared)
        # The numbers of `soft_target_kl`, one value per position.
        return tokens.forward_kl_divergence(
            teacher, student, self.temperature,
            self.scale_by_temperature_squared, self.chunk_size)

    def get_config(self):
        config = super().get_config()
        config["scale_by_temperature_squared"] = (
            self.scale_by_temperature_squared
        )
        config["chunk_size"] = self.chunk_size
        return config
