"""TemperatureScheduler: change the distillation temperature during fit."""

from keras_kd.callbacks._scheduler import VariableScheduler
from keras_kd.utils import validation


class TemperatureScheduler(VariableScheduler):
    """Sets `distiller.temperature` from a schedule during `fit`.

    The temperature is a variable read by the compiled train step, so the
    next step uses the new value without retracing. The value is logged as
    `temperature` in the history.

    Args:
        schedule: Function `(step, current_temperature) -> temperature`,
            where `step` is the epoch index (or the batch count with
            `update_freq="batch"`). `keras_kd.callbacks.linear`, `cosine`,
            `step_decay` build common ones.
        update_freq: `"epoch"` or `"batch"`. Defaults to `"epoch"`.
        verbose: Integer, 1 prints each change. Defaults to `0`.

    Example:

    ```python
    schedule = keras_kd.callbacks.linear(start=8.0, end=2.0, steps=10)
    distiller.fit(x, y, epochs=10,
                  callbacks=[keras_kd.callbacks.TemperatureScheduler(schedule)])
    ```
    """

    attribute = "temperature"

    def check(self, value):
        return validation.check_positive_number("temperature", value)
