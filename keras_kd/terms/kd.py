"""`SoftTargets`: Hinton's soft-target term, for softmax and sigmoid outputs."""

import keras

from keras_kd.losses.logits import bernoulli_kl
from keras_kd.losses.logits import soft_target_kl
from keras_kd.terms.base import LogitTerm
from keras_kd.utils import validation


@keras.saving.register_keras_serializable(package="keras_kd")
class SoftTargets(LogitTerm):
    """Matches the teacher's temperature-softened outputs (Hinton KD).

    Softmax outputs: `T**2 * KL(softmax(t / T) || softmax(s / T))`. Sigmoid
    outputs (binary or multi-label): the mean over the outputs of the
    Bernoulli KL of `sigmoid(t / T)` and `sigmoid(s / T)`, times `T**2`. With
    several teachers their softened probabilities are averaged. It is a
    response term: `Distiller(alpha=...)` weighs it by `1 - alpha`.

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
                 standardize=False, weight=1.0, name="soft_loss", **kwargs):
        super().__init__(temperature=temperature, standardize=standardize,
                         weight=weight, name=name, **kwargs)
        self.scale_by_temperature_squared = validation.check_bool(
            "scale_by_temperature_squared", scale_by_temperature_squared
        )

    def call(self, teacher, student, labels=None):
        teacher, student = self.logits_pair(teacher, student)
        fn = bernoulli_kl if self.outputs == "sigmoid" else soft_target_kl
        return fn(teacher, student, self.temperature,
                  self.scale_by_temperature_squared)

    def get_config(self):
        config = super().get_config()
        config["scale_by_temperature_squared"] = (
            self.scale_by_temperature_squared
        )
        return config
