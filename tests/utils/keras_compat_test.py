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

    def test_producing_node_of_a_shared_layer(self):
        inputs = keras.Input((4,))
        shared = keras.layers.Dense(4, name="shared")
        hidden = shared(inputs)
        out = shared(hidden)
        keras.Model(inputs, out)
        self.assertIs(keras_compat.producing_node(out).input_tensors[0],
                      hidden)
        self.assertIs(keras_compat.producing_node(hidden).input_tensors[0],
                      inputs)
        self.assertIsNone(keras_compat.producing_node(np.zeros(2)))

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

    def test_user_metrics_as_compiled(self):
        model = small_model()
        model.compile(loss="mse", metrics=["mae"], weighted_metrics=["mse"])
        self.assertEqual(keras_compat.user_metrics(
            keras_compat.compile_metrics(model)), (["mae"], ["mse"]))

    def test_sequential_graph_exists_once_built(self):
        unbuilt = keras.Sequential([keras.layers.Dense(2)])
        self.assertIsNone(keras_compat.sequential_graph(unbuilt))
        built = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
        graph = keras_compat.sequential_graph(built)
        self.assertIsInstance(graph, keras.Model)
        self.assertAllClose(graph(np.ones((1, 3))), built(np.ones((1, 3))))

    def test_nodes_by_depth_orders_the_graph(self):
        model = small_model()
        by_depth = keras_compat.nodes_by_depth(model)
        order = [n.operation.name for d in sorted(by_depth, reverse=True)
                 for n in by_depth[d]]
        self.assertEqual(order[1:], ["hidden", "block"])
        self.assertIsNone(keras_compat.nodes_by_depth(
            keras.layers.Dense(2)))

    def test_input_and_output_structures_keep_nesting(self):
        a, b = keras.Input((2,), name="a"), keras.Input((3,), name="b")
        out = keras.layers.Dense(1)(keras.layers.Concatenate()([a, b]))
        model = keras.Model({"a": a, "b": b}, [out, out])
        self.assertEqual(sorted(keras_compat.input_structure(model)),
                         ["a", "b"])
        outputs = keras_compat.output_structure(model)
        self.assertIsInstance(outputs, list)
        self.assertEqual(len(outputs), 2)

    def test_replay_arguments_fill_in_the_inputs(self):
        model = small_model()
        by_depth = keras_compat.nodes_by_depth(model)
        node = next(n for nodes in by_depth.values() for n in nodes
                    if n.operation.name == "hidden")
        replacement = keras.ops.ones((1, 4))
        args, kwargs = keras_compat.replay_arguments(
            node, {id(node.input_tensors[0]): replacement})
        self.assertIs(args[0], replacement)
        self.assertEqual(kwargs, {})
