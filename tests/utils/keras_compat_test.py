"""Fails when Keras changes a private API that keras_kd relies on."""

import inspect

import keras
import numpy as np
import pytest

from keras_kd.utils import keras_compat
from tests.test_case import TestCase


def small_model():
    inputs = keras.Input((4,))
    hidden = keras.layers.Dense(3, name="hidden")(inputs)
    block = keras.Sequential([keras.layers.Dense(2, name="inner")],
                             name="block")
    return keras.Model(inputs, block(hidden), name="model")


class KerasCompatTest(TestCase):
    def test_flatten_layers_reaches_nested_layers(self):
        names = [layer.name for layer in keras_compat.flatten_layers(
            small_model())]
        self.assertIn("hidden", names)
        self.assertIn("inner", names)
        self.assertNotIn("model", names)

    def test_keras_mask_of_an_embedding_with_mask_zero(self):
        ids = keras.Input((None,), dtype="int32")
        h = keras.layers.Embedding(5, 3, mask_zero=True)(ids)
        model = keras.Model(ids, keras.layers.Dense(4)(h))
        out = model(np.array([[1, 2, 0]], "int32"))
        mask = keras_compat.keras_mask(out)
        self.assertIsNotNone(mask)
        self.assertAllEqual(mask, [[True, True, False]])
        self.assertIsNone(keras_compat.keras_mask(keras.ops.ones((2,))))

    def test_producing_operation(self):
        model = small_model()
        self.assertIs(keras_compat.producing_operation(
            model.get_layer("hidden").output), model.get_layer("hidden"))
        self.assertIsNone(keras_compat.producing_operation(np.zeros(2)))

    def test_compile_metrics_split_weighted_and_unweighted(self):
        model = small_model()
        self.assertIsNone(keras_compat.compile_metrics(model))
        model.compile(loss="mse", metrics=["mae"], weighted_metrics=["mse"])
        model.evaluate(np.zeros((2, 4)), np.zeros((2, 2)), verbose=0)
        container = keras_compat.compile_metrics(model)
        self.assertTrue(container.built)
        unweighted, weighted = keras_compat.flat_metrics(container)
        container.reset_state()
        y, pred = np.zeros((2, 2)), np.array([[1.0, 1.0], [3.0, 3.0]])
        for metric in unweighted:
            metric.update_state(y, pred, sample_weight=np.array([1.0, 0.0]))
        for metric in weighted:
            metric.update_state(y, pred, sample_weight=np.array([0.0, 1.0]))
        result = {k: float(v) for k, v in container.result().items()}
        self.assertAllClose(result["mae"], 1.0)
        self.assertAllClose(result["mse"], 9.0)
        tracker = keras_compat.loss_tracker(model)
        self.assertIsInstance(tracker, keras.metrics.Mean)
        self.assertEqual(tracker.name, "loss")

    @pytest.mark.skipif(keras.backend.backend() != "tensorflow",
                        reason="tf.distribute is TensorFlow-only.")
    def test_strategy_accessors(self):
        import tensorflow as tf

        strategy = tf.distribute.OneDeviceStrategy("/cpu:0")
        self.assertFalse(keras_compat.in_multi_worker_mode(strategy))
        with strategy.scope():
            model = small_model()
        self.assertIs(keras_compat.distribute_strategy(model), strategy)

    @pytest.mark.skipif(keras.backend.backend() != "tensorflow",
                        reason="Only the TensorFlow steps override it.")
    def test_overridden_trainer_methods_still_exist(self):
        for name in keras_compat.OVERRIDDEN_TRAINER_METHODS:
            method = getattr(keras.Model, name)
            params = inspect.signature(method).parameters
            self.assertIn("iterator", params)
            self.assertIn("data_batch", params)
