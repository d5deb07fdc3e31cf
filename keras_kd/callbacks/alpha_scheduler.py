"""AlphaScheduler: change the weight of the hard loss during fit."""

from keras_kd.callbacks._scheduler import VariableScheduler
from keras_kd.utils import validation


class AlphaScheduler(VariableScheduler):
    """Sets `distiller.alpha` (the hard-loss weight) from a schedule.

    Args:
        schedule: Function `(step, current_alpha) -> alpha` in [0, 1], where
            `step` is the epoch index (or the batch count with
            `update_freq="batch"`). See `keras_kd.callbacks.linear`.
        update_freq: `"epoch"` or `"batch"`. Defaults to `"epoch"`.
        verbose: Integer, 1 prints each change. Defaults to `0`.

    Example:

    ```python
    # Lean on the teacher first, then on the labels.
    schedule = keras_kd.callbacks.linear(start=0.1, end=0.7, steps=10)
    distiller.fit(x, y, epochs=10,
                  callbacks=[keras_kd.callbacks.AlphaScheduler(schedule)])
    ```
    """

    attribute = "alpha"

    def check(self, value):
        return validation.check_unit_interval("alpha", value)
