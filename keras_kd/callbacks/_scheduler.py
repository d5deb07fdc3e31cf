"""Shared logic of the callbacks that change a Distiller variable."""

import keras

from keras_kd.utils import validation


class VariableScheduler(keras.callbacks.Callback):
    """Sets a non-trainable Distiller variable from a schedule.

    Subclasses set `attribute` (the Distiller property holding the variable)
    and `check` (the validation of a value).
    """

    attribute = None

    def __init__(self, schedule, update_freq="epoch", verbose=0):
        super().__init__()
        if not callable(schedule):
            raise TypeError(
                "Argument `schedule` must be a function `(step, value) -> "
                "value` or one of `keras_kd.callbacks.linear/cosine/...`. "
                f"Received: schedule={schedule!r}"
            )
        self.schedule = schedule
        self.update_freq = validation.check_one_of(
            "update_freq", update_freq, ("epoch", "batch")
        )
        self.verbose = verbose
        self._batches_seen = 0

    def check(self, value):
        raise NotImplementedError

    def _variable(self):
        variable = getattr(self.model, self.attribute, None)
        if not isinstance(variable, keras.Variable):
            raise ValueError(
                f"{type(self).__name__} needs a model with a `{self.attribute}`"
                " variable, such as `keras_kd.Distiller`. Received: model="
                f"{type(self.model).__name__}"
            )
        return variable

    def _set(self, step):
        if keras.backend.backend() == "jax":
            # The JAX trainer holds the state outside the variables during an
            # epoch; sync it back so the next step reads the new value.
            self.model.jax_state_sync()
        variable = self._variable()
        current = float(keras.ops.convert_to_numpy(variable.value))
        value = self.check(float(self.schedule(step, current)))
        variable.assign(value)
        if self.verbose:
            print(f"\n{type(self).__name__}: step {step}, "
                  f"{self.attribute} = {value:.5g}")

    def on_epoch_begin(self, epoch, logs=None):
        if self.update_freq == "epoch":
            self._set(epoch)

    def on_train_batch_begin(self, batch, logs=None):
        if self.update_freq == "batch":
            self._set(self._batches_seen)
            self._batches_seen += 1

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            if keras.backend.backend() == "jax":
                self.model.jax_state_sync()
            logs[self.attribute] = float(
                keras.ops.convert_to_numpy(self._variable().value)
            )
