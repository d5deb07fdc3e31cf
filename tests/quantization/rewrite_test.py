"""Tests of keras_kd/quantization/rewrite.py (`quantize_aware`)."""

import os

import keras
import numpy as np
import pytest

import keras_kd
from keras_kd import quantization
from tests.conftest import make_data
from tests.conftest import make_dense_pair
from tests.test_case import TestCase


def mobile_student(seed=0):
    """Conv + BN + ReLU6, depthwise separable block, residual Add, pooling."""
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((12, 12, 3))
    x = keras.layers.Conv2D(8, 3, padding="same", use_bias=False)(inputs)
    x = keras.layers.BatchNormalization()(x)
    x = keras.layers.ReLU(6.0)(x)
    y = keras.layers.DepthwiseConv2D(3, padding="same", use_bias=False)(x)
    y = keras.layers.BatchNormalization()(y)
    y = keras.layers.ReLU(6.0)(y)
    y = keras.layers.Conv2D(8, 1)(y)
    x = keras.layers.Add()([x, y])
    x = keras.layers.SeparableConv2D(12, 3, activation="relu6")(x)
    x = keras.layers.MaxPooling2D()(x)
    x = keras.layers.Conv2D(8, 3, activation="hard_swish")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    x = keras.layers.Dropout(0.1)(x)
    outputs = keras.layers.Dense(10)(x)
    return keras.Model(inputs, outputs, name="mobile_student")


def images(n=32, seed=0):
    rng = np.random.default_rng(seed)
    return rng.uniform(0, 1, size=(n, 12, 12, 3)).astype("float32")


def layer_types(model):
    return [type(layer).__name__ for layer in model.layers]


class QuantizeAwareTest(TestCase):
    def test_places_quantizers_where_litert_does(self):
        _, student = make_dense_pair()
        qat = quantization.quantize_aware(student)
        self.assertEqual(
            layer_types(qat),
            ["InputLayer", "FakeQuant", "QuantizeWrapper", "FakeQuant",
             "QuantizeWrapper", "FakeQuant"],
        )
        student = mobile_student()
        qat = quantization.quantize_aware(student, images())
        types = layer_types(qat)
        # Batch norms are folded; a fused conv + BN + ReLU6 block has one
        # quantizer, after the ReLU6.
        self.assertNotIn("BatchNormalization", types)
        first_relu = types.index("ReLU")
        self.assertEqual(types[first_relu - 1], "QuantizeWrapper")
        self.assertEqual(types[first_relu + 1], "FakeQuant")
        self.assertEqual(types[types.index("Add") + 1], "FakeQuant")
        self.assertEqual(types[types.index("MaxPooling2D") - 1], "FakeQuant")
        self.assertEqual(types[-1], "FakeQuant")

    # Eager convolutions are slow on JAX; the same math runs there in the
    # dense tests and in the Distiller test.
    @pytest.mark.backends("tensorflow", "torch")
    def test_close_to_the_float_student_and_does_not_modify_it(self):
        student = mobile_student()
        weights = [w.copy() for w in student.get_weights()]
        x = images(16)
        qat = quantization.quantize_aware(student, x)
        for before, after in zip(weights, student.get_weights()):
            self.assertAllEqual(before, after)
        expected = keras.ops.convert_to_numpy(student(x, training=False))
        actual = keras.ops.convert_to_numpy(qat(x, training=False))
        step = qat.layers[-1].scale()
        # A few int8 steps of the output per quantized layer, at most.
        self.assertLess(np.abs(actual - expected).max(), 20 * step)
        self.assertGreater(np.abs(actual - expected).max(), 0.0)

    def test_calibration_sets_the_ranges(self):
        _, student = make_dense_pair()
        x, _ = make_data(64)
        qat = quantization.quantize_aware(student, x)
        first = qat.layers[1]
        self.assertAllClose(first.min_value, min(x.min(), 0.0))
        self.assertAllClose(first.max_value, x.max())
        # Calibration runs with quantized weights and float activations.
        kernel, bias = student.layers[0].get_weights()
        scale = np.abs(kernel).max() / 127.0
        kernel = np.clip(np.floor(kernel / scale + 0.5), -127, 127) * scale
        hidden = np.maximum(x @ kernel + bias, 0.0)
        self.assertAllClose(qat.layers[3].max_value, hidden.max(), rtol=1e-5)
        self.assertAllClose(qat.layers[3].min_value, 0.0)

    def test_save_and_reload_dense(self):
        _, student = make_dense_pair()
        x, _ = make_data(16)
        qat = quantization.quantize_aware(student, x)
        path = os.path.join(self.get_temp_dir(), "qat.keras")
        qat.save(path)
        revived = keras.saving.load_model(path)
        self.assertAllClose(
            revived(x, training=False), qat(x, training=False), atol=1e-6
        )

    @pytest.mark.backends("tensorflow", "torch")
    def test_save_and_reload(self):
        student = mobile_student()
        x = images()
        qat = quantization.quantize_aware(student, x)
        path = os.path.join(self.get_temp_dir(), "qat.keras")
        qat.save(path)
        revived = keras.saving.load_model(path)
        self.assertEqual(layer_types(revived), layer_types(qat))
        self.assertAllClose(
            revived(x, training=False), qat(x, training=False), atol=1e-6
        )
        # The reloaded wrappers still get their input ranges: their exact
        # integer inference differs from the float path (the one they take
        # while calibrating) on some elements.
        wrappers = [layer for layer in revived.layers
                    if isinstance(layer, quantization.QuantizeWrapper)]
        # Every quantized activation, not only the output (which the coarse
        # steps at the end can leave equal).
        tap = keras.Model(revived.inputs[0], [
            layer.output[0] for layer in revived.layers
            if isinstance(layer, quantization.FakeQuant)
            and isinstance(layer.output, (tuple, list))
        ])
        held_out = images(300, seed=1)
        exact = np.concatenate([
            keras.ops.convert_to_numpy(t).ravel() for t in tap(held_out)])
        for layer in wrappers:
            layer._calibrating = True
        floating = np.concatenate([
            keras.ops.convert_to_numpy(t).ravel() for t in tap(held_out)])
        self.assertGreater(np.abs(floating - exact).max(), 1e-4)
        self.assertAllClose(
            revived.layers[1].max_value, qat.layers[1].max_value
        )

    def test_sequential_student(self):
        keras.utils.set_random_seed(0)
        student = keras.Sequential([
            keras.Input((8, 8, 1)),
            keras.layers.Conv2D(4, 3, activation="relu"),
            keras.layers.Flatten(),
            keras.layers.Dense(5),
        ])
        qat = quantization.quantize_aware(student)
        self.assertEqual(qat.output.shape, (None, 5))

    def test_unsupported_layer_is_named(self):
        inputs = keras.Input((6,))
        x = keras.layers.Dense(4)(inputs)
        x = keras.layers.LayerNormalization(name="norm")(x)
        model = keras.Model(inputs, keras.layers.Dense(2)(x))
        with self.assertRaisesRegex(
            ValueError, "Layer 'norm' of class LayerNormalization.*Supported"
        ):
            quantization.quantize_aware(model)

    def test_unsupported_activation_is_named(self):
        inputs = keras.Input((6,))
        x = keras.layers.Dense(4, activation="tanh", name="hidden")(inputs)
        with self.assertRaisesRegex(ValueError, "'hidden'.*'tanh'"):
            quantization.quantize_aware(keras.Model(inputs, x))

    def test_batch_norm_after_activation(self):
        inputs = keras.Input((6,))
        x = keras.layers.Dense(4, activation="relu", name="hidden")(inputs)
        x = keras.layers.BatchNormalization(name="bn")(x)
        with self.assertRaisesRegex(ValueError, "'bn'.*follows 'hidden'"):
            quantization.quantize_aware(keras.Model(inputs, x))

    def test_shared_layer(self):
        inputs = keras.Input((4,))
        dense = keras.layers.Dense(4, name="shared")
        model = keras.Model(inputs, dense(dense(inputs)))
        with self.assertRaisesRegex(ValueError, "'shared'.*2 calls"):
            quantization.quantize_aware(model)

    def test_nested_model(self):
        _, inner = make_dense_pair()
        inputs = keras.Input((20,))
        model = keras.Model(inputs, inner(inputs))
        with self.assertRaisesRegex(ValueError, "nested model"):
            quantization.quantize_aware(model)

    def test_only_int8(self):
        _, student = make_dense_pair()
        with self.assertRaisesRegex(ValueError, "Received: weights='int4'"):
            quantization.quantize_aware(student, weights="int4")
        with self.assertRaisesRegex(
            ValueError, "Received: activations='int16'"
        ):
            quantization.quantize_aware(student, activations="int16")

    def test_empty_representative_data(self):
        _, student = make_dense_pair()
        with self.assertRaisesRegex(ValueError, "holds no examples"):
            quantization.quantize_aware(
                student, np.zeros((0, 20), "float32")
            )


class DistillQuantizeAwareTest(TestCase):
    def test_distiller_trains_the_quantize_aware_student(self):
        teacher, student = make_dense_pair()
        x, y = make_data(32)
        qat = quantization.quantize_aware(student, x[:16])
        kernel = [w for w in qat.trainable_weights if "kernel" in w.path][0]
        before = keras.ops.convert_to_numpy(kernel).copy()
        ranges = keras.ops.convert_to_numpy(qat.layers[-1].max_value)
        distiller = keras_kd.Distiller(teacher, qat, alpha=0.0)
        distiller.compile(optimizer=keras.optimizers.Adam(0.01))
        history = distiller.fit(x, y, batch_size=16, epochs=1, verbose=0)
        self.assertTrue(np.isfinite(history.history["loss"][0]))
        self.assertFalse(
            np.allclose(keras.ops.convert_to_numpy(kernel), before)
        )
        # The output range moved with the moving average.
        self.assertNotEqual(
            float(keras.ops.convert_to_numpy(qat.layers[-1].max_value)),
            float(ranges),
        )
