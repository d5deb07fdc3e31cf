"""Tests of keras_kd/callbacks/temperature_scheduler.py and alpha_scheduler."""

import keras
import numpy as np

import keras_kd
from tests.conftest import make_data
from tests.conftest import make_dense_pair
from tests.test_case import TestCase


def _value(variable):
    return float(keras.ops.convert_to_numpy(variable.value))


class TemperatureSchedulerTest(TestCase):
    def test_epoch_schedule_sets_and_logs_temperature(self):
        teacher, student = make_dense_pair()
        d = keras_kd.Distiller(teacher, student, temperature=8.0)
        d.compile(optimizer="sgd")
        x, y = make_data(32)
        callback = keras_kd.callbacks.TemperatureScheduler(
            keras_kd.callbacks.linear(8.0, 2.0, steps=3))
        history = d.fit(x, y, epochs=3, verbose=0, callbacks=[callback])
        np.testing.assert_allclose(history.history["temperature"],
                                   [8.0, 5.0, 2.0])
        self.assertEqual(_value(d.temperature), 2.0)

    def test_invalid_value_from_schedule_is_refused(self):
        teacher, student = make_dense_pair()
        d = keras_kd.Distiller(teacher, student)
        d.compile(optimizer="sgd")
        x, y = make_data(16)
        callback = keras_kd.callbacks.TemperatureScheduler(lambda s, v: 0.0)
        with self.assertRaisesRegex(ValueError, "Received: temperature=0"):
            d.fit(x, y, epochs=1, verbose=0, callbacks=[callback])

    def test_needs_a_distiller(self):
        model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
        model.compile(optimizer="sgd", loss="mse")
        callback = keras_kd.callbacks.TemperatureScheduler(lambda s, v: 1.0)
        with self.assertRaisesRegex(ValueError, "keras_kd.Distiller"):
            model.fit(np.zeros((4, 3)), np.zeros((4, 2)), verbose=0,
                      callbacks=[callback])

    def test_schedule_must_be_callable(self):
        with self.assertRaisesRegex(TypeError, "schedule=4.0"):
            keras_kd.callbacks.TemperatureScheduler(4.0)
        with self.assertRaisesRegex(ValueError, "update_freq"):
            keras_kd.callbacks.TemperatureScheduler(lambda s, v: v,
                                                    update_freq="step")


class AlphaSchedulerTest(TestCase):
    def test_batch_schedule(self):
        teacher, student = make_dense_pair()
        d = keras_kd.Distiller(teacher, student, alpha=0.0)
        d.compile(optimizer="sgd")
        x, y = make_data(64)
        seen = []

        class Record(keras.callbacks.Callback):
            def on_train_batch_end(self, batch, logs=None):
                if keras.backend.backend() == "jax":
                    self.model.jax_state_sync()
                seen.append(_value(self.model.alpha))

        callback = keras_kd.callbacks.AlphaScheduler(
            lambda step, _: min(1.0, step / 4), update_freq="batch")
        d.fit(x, y, epochs=1, batch_size=16, verbose=0,
              callbacks=[callback, Record()])
        np.testing.assert_allclose(seen, [0.0, 0.25, 0.5, 0.75])

    def test_out_of_range_alpha(self):
        teacher, student = make_dense_pair()
        d = keras_kd.Distiller(teacher, student)
        d.compile(optimizer="sgd")
        x, y = make_data(16)
        callback = keras_kd.callbacks.AlphaScheduler(lambda s, v: 1.5)
        with self.assertRaisesRegex(ValueError, "Received: alpha=1.5"):
            d.fit(x, y, epochs=1, verbose=0, callbacks=[callback])
