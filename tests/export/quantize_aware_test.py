"""Export of quantize-aware students (keras_kd.quantization) to int8 LiteRT."""

import os

import keras
import numpy as np
import pytest

from keras_kd import export
from keras_kd import quantization
from tests.conftest import make_data
from tests.conftest import make_dense_pair
from tests.test_case import TestCase

try:
    from ai_edge_litert.interpreter import Interpreter

    LITERT_AVAILABLE = True
except ImportError:
    LITERT_AVAILABLE = False

requires_litert = pytest.mark.skipif(
    not LITERT_AVAILABLE, reason="`ai_edge_litert` is not available."
)


def mobile_student(seed=0):
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
    z = keras.layers.SeparableConv2D(
        8, 3, padding="same", activation="relu6")(x)
    x = keras.layers.Concatenate()([x, z])
    x = keras.layers.MaxPooling2D()(x)
    x = keras.layers.Conv2D(8, 3, activation="hard_swish")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    x = keras.layers.Dropout(0.1)(x)
    x = keras.layers.Dense(16, activation="relu")(x)
    outputs = keras.layers.Dense(10)(x)
    model = keras.Model(inputs, outputs, name="mobile_student")
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            gamma, beta, mean, var = layer.get_weights()
            layer.set_weights([
                rng.uniform(0.5, 1.5, gamma.shape).astype("float32"),
                rng.normal(0, 0.2, beta.shape).astype("float32"),
                rng.normal(0, 0.2, mean.shape).astype("float32"),
                rng.uniform(0.5, 1.5, var.shape).astype("float32"),
            ])
    return model


def images(n, seed=0):
    rng = np.random.default_rng(seed)
    return rng.uniform(0, 1, size=(n, 12, 12, 3)).astype("float32")


def float_tensors(path):
    """Names and types of the tensors that are not int8 / int32."""
    interpreter = Interpreter(model_path=path)
    interpreter.allocate_tensors()
    return [
        (t["name"], np.dtype(t["dtype"]).name)
        for t in interpreter.get_tensor_details()
        if np.dtype(t["dtype"]) not in (np.int8, np.int32)
    ], sorted({op["op_name"] for op in interpreter._get_ops_details()})


@requires_litert
@pytest.mark.backends("tensorflow")
class QuantizeAwareExportTest(TestCase):
    def setUp(self):
        super().setUp()
        self.dir = self.get_temp_dir()
        self.x = images(200)
        self.model = quantization.quantize_aware(
            mobile_student(), self.x[:64]
        )

    def test_full_integer_without_representative_data(self):
        path = export.export_student(
            self.model, os.path.join(self.dir, "q.tflite"),
            quantization="int8")
        others, ops = float_tensors(path)
        # Only the float input and output remain; every op is integer.
        self.assertEqual(sorted(dtype for _, dtype in others),
                         ["float32", "float32"])
        self.assertEqual(ops[0:1], ["ADD"])
        for op in ("CONV_2D", "DEPTHWISE_CONV_2D", "HARD_SWISH",
                   "CONCATENATION", "FULLY_CONNECTED", "QUANTIZE",
                   "DEQUANTIZE"):
            self.assertIn(op, ops)
        report = export.parity_report(self.model, path, self.x)
        self.assertGreaterEqual(report.top1_agreement, 0.995)
        self.assertLessEqual(report.max_diff_steps, 2.0)
        self.assertEqual(report.quantization, "int8")
        self.assertIn("int8 steps", str(report))

    def test_int8_io(self):
        path = export.export_student(
            self.model, os.path.join(self.dir, "q.tflite"),
            quantization="int8", int8_io=True)
        others, _ = float_tensors(path)
        self.assertEqual(others, [])
        runner = export.LiteRTModel(path)
        # The input quantization is the trained input range.
        low, high = self.model.layers[1].range()
        scale = float(keras.ops.convert_to_numpy(high - low)) / 255
        self.assertAllClose(runner.input_quantization[0], scale, rtol=1e-5)
        report = export.parity_report(self.model, path, self.x)
        self.assertGreaterEqual(report.top1_agreement, 0.995)
        self.assertLessEqual(report.max_diff_steps, 2.0)

    def test_after_training_uses_the_trained_ranges(self):
        _, student = make_dense_pair()
        x, y = make_data(64)
        model = quantization.quantize_aware(student)
        model.compile(
            optimizer="adam",
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        model.fit(x, y, epochs=1, batch_size=16, verbose=0)
        path = export.export_student(
            model, os.path.join(self.dir, "d.tflite"), quantization="int8")
        others, _ = float_tensors(path)
        self.assertEqual(len(others), 2)
        report = export.parity_report(model, path, (x, y))
        self.assertEqual(report.top1_agreement, 1.0)
        self.assertLessEqual(report.max_diff_steps, 2.0)

    def test_representative_data_is_ignored_with_a_warning(self):
        with self.assertWarnsRegex(UserWarning, "trained ones"):
            export.export_student(
                self.model, os.path.join(self.dir, "q.tflite"),
                quantization="int8", representative_data=self.x)

    def test_float_export_of_a_quantize_aware_student(self):
        path = export.export_student(
            self.model, os.path.join(self.dir, "f.tflite"))
        report = export.parity_report(self.model, path, self.x)
        self.assertGreaterEqual(report.top1_agreement, 0.995)


@requires_litert
@pytest.mark.slow
@pytest.mark.backends("jax", "torch")
class QuantizeAwareExportOtherBackendsTest(TestCase):
    def test_converts_in_a_tensorflow_process(self):
        _, student = make_dense_pair()
        x, _ = make_data(64)
        model = quantization.quantize_aware(student, x)
        path = export.export_student(
            model, os.path.join(self.get_temp_dir(), "q.tflite"),
            quantization="int8")
        others, _ = float_tensors(path)
        self.assertEqual(len(others), 2)
        runner = export.LiteRTModel(path)
        expected = keras.ops.convert_to_numpy(model(x, training=False))
        actual = runner.predict(x)
        step = model.layers[-1].scale()
        self.assertLessEqual(np.abs(actual - expected).max(), 2.0 * step)
        np.testing.assert_array_equal(
            actual.argmax(-1), expected.argmax(-1))


def separable_student(seed=0):
    """MobileNet-like: the layers of the CIFAR-10 QAD benchmark's student."""
    keras.utils.set_random_seed(seed)
    layers = keras.layers
    inputs = keras.Input((12, 12, 3))
    x = layers.Conv2D(8, 3, padding="same", use_bias=False)(inputs)
    x = layers.BatchNormalization()(x)
    x = layers.ReLU(6.0)(x)
    for filters, stride in ((16, 2), (16, 1)):
        x = layers.DepthwiseConv2D(3, strides=stride, padding="same",
                                   use_bias=False)(x)
        x = layers.BatchNormalization()(x)
        x = layers.ReLU(6.0)(x)
        x = layers.Conv2D(filters, 1, use_bias=False)(x)
        x = layers.BatchNormalization()(x)
        x = layers.ReLU(6.0)(x)
    x = layers.GlobalAveragePooling2D()(x)
    model = keras.Model(inputs, layers.Dense(10)(x))
    rng = np.random.default_rng(seed)
    for layer in model.layers:  # Trained-looking statistics.
        if isinstance(layer, layers.BatchNormalization):
            shape = layer.gamma.shape
            layer.set_weights([
                rng.uniform(0.5, 1.5, shape), rng.normal(0, 0.2, shape),
                rng.normal(0, 0.2, shape), rng.uniform(0.5, 1.5, shape),
            ])
    return model


@requires_litert
@pytest.mark.backends("tensorflow")
class IntegerParityTest(TestCase):
    def test_keras_inference_rounds_as_the_int8_file(self):
        x = images(300, seed=1) * 255.0
        model = quantization.quantize_aware(separable_student(), x[:100])
        path = export.export_student(
            model, os.path.join(self.get_temp_dir(), "q.tflite"),
            quantization="int8")
        lite = export.LiteRTModel(path).predict(x)
        step = model.layers[-1].scale()
        off = np.abs(keras.ops.convert_to_numpy(model(x)) - lite) / step
        # Exact integer sums: (almost) every logit is LiteRT's, where the
        # float path (below) is a step off on a few percent of them.
        self.assertLessEqual(np.mean(off > 0.5), 0.002)
        self.assertLessEqual(off.max(), 1.01)
        for layer in model.layers:
            if isinstance(layer, quantization.QuantizeWrapper):
                layer._calibrating = True
        floating = np.abs(keras.ops.convert_to_numpy(model(x)) - lite) / step
        self.assertGreater(np.mean(floating > 0.5), 0.005)
