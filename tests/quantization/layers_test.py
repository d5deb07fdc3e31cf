"""Tests of keras_kd/quantization/layers.py."""

import keras
import numpy as np

from keras_kd import quantization
from tests.test_case import TestCase


def reference_fake_quant(x, low, high):
    scale = (high - low) / 255.0
    zero = np.clip(np.floor(-low / scale + 0.5), 0, 255)
    n_min, n_max = -zero * scale, (255 - zero) * scale
    x = np.clip(x, n_min, n_max)
    return np.floor((x - n_min) / scale + 0.5) * scale + n_min


def reference_weights(kernel, per_channel=True):
    axes = tuple(range(kernel.ndim - 1)) if per_channel else None
    scale = np.abs(kernel).max(axis=axes) / 127.0
    return np.clip(np.floor(kernel / scale + 0.5), -127, 127) * scale


class FakeQuantTest(TestCase):
    def test_config(self):
        layer = quantization.FakeQuant(ema_decay=0.9, name="q")
        revived = self.run_serialization_test(layer)
        self.assertEqual(revived.ema_decay, 0.9)

    def test_calibrate_covers_the_data_and_zero(self):
        layer = quantization.FakeQuant()
        layer.build((None, 3))
        layer.calibrate(np.array([[0.5, 2.0, 1.0]], "float32"))
        layer.calibrate(np.array([[0.7, 3.0, 0.9]], "float32"))
        low, high = layer.range()
        self.assertAllClose(low, 0.0)  # 0.5 widened to include 0.
        self.assertAllClose(high, 3.0)
        self.assertAlmostEqual(layer.scale(), 3.0 / 255, places=6)

    def test_moving_average_in_training_only(self):
        layer = quantization.FakeQuant(ema_decay=0.9)
        layer.build((None, 2))
        x = np.array([[-1.0, 4.0]], "float32")
        layer(x, training=True)  # First batch sets the range.
        self.assertAllClose(layer.min_value, -1.0)
        self.assertAllClose(layer.max_value, 4.0)
        layer(np.array([[-3.0, 2.0]], "float32"), training=True)
        self.assertAllClose(layer.min_value, 0.9 * -1.0 + 0.1 * -3.0, 1e-6)
        self.assertAllClose(layer.max_value, 0.9 * 4.0 + 0.1 * 2.0, 1e-6)
        before = keras.ops.convert_to_numpy(layer.max_value)
        y = layer(np.array([[-2.0, 9.0]], "float32"), training=False)
        self.assertAllClose(layer.max_value, before)
        self.assertAllClose(y, reference_fake_quant(
            np.array([[-2.0, 9.0]]), -1.2, 3.8), atol=1e-5)

    def test_rejects_bad_decay(self):
        with self.assertRaisesRegex(ValueError, "Received: ema_decay=1.0"):
            quantization.FakeQuant(ema_decay=1.0)


def conv_bn(kind="Conv2D"):
    keras.utils.set_random_seed(0)
    if kind == "Conv2D":
        conv = keras.layers.Conv2D(6, 3, padding="same", name="conv")
    elif kind == "DepthwiseConv2D":
        conv = keras.layers.DepthwiseConv2D(3, depth_multiplier=2, name="conv")
    else:
        conv = keras.layers.Dense(6, name="conv")
    bn = keras.layers.BatchNormalization(name="bn")
    shape = (5, 4) if kind == "Dense" else (8, 8, 4)
    inputs = keras.Input(shape)
    outputs = bn(conv(inputs))
    rng = np.random.default_rng(0)
    bn.set_weights([
        rng.uniform(0.5, 2.0, w.shape).astype("float32") if i in (0, 3)
        else rng.normal(0, 0.5, w.shape).astype("float32")
        for i, w in enumerate(bn.get_weights())
    ])
    return keras.Model(inputs, outputs), conv, bn, shape


class QuantizeWrapperTest(TestCase):
    def test_config(self):
        wrapper = quantization.QuantizeWrapper(
            keras.layers.Conv2D(4, 3, activation="relu6"),
            keras.layers.BatchNormalization(),
            name="w",
        )
        revived = self.run_serialization_test(wrapper)
        self.assertIsInstance(revived.layer, keras.layers.Conv2D)
        self.assertIsInstance(
            revived.batch_norm, keras.layers.BatchNormalization
        )

    def _check_folding(self, kind):
        model, conv, bn, shape = conv_bn(kind)
        wrapper = quantization.QuantizeWrapper(
            keras.layers.deserialize(keras.layers.serialize(conv)),
            keras.layers.deserialize(keras.layers.serialize(bn)),
        )
        x = np.random.default_rng(1).normal(size=(3,) + shape).astype(
            "float32")
        wrapper(x)
        wrapper.layer.set_weights(conv.get_weights())
        wrapper.batch_norm.set_weights(bn.get_weights())
        gamma, beta, mean, var = bn.get_weights()
        factor = gamma / np.sqrt(var + bn.epsilon)
        kernel, bias = conv.get_weights()
        folded_bias = (bias - mean) * factor + beta
        if kind == "DepthwiseConv2D":
            folded = kernel * factor.reshape(kernel.shape[-2:])
            flat = folded.reshape(-1, folded.shape[-2] * folded.shape[-1])
            expected_kernel = reference_weights(flat).reshape(folded.shape)
        else:
            folded = kernel * factor
            expected_kernel = reference_weights(folded, kind != "Dense")
        got_kernel, got_bias = wrapper.folded_kernel_and_bias()
        self.assertAllClose(got_kernel, folded, atol=1e-5, rtol=1e-5)
        self.assertAllClose(got_bias, folded_bias, atol=1e-5, rtol=1e-5)
        self.assertAllClose(
            wrapper.quantized_kernel(got_kernel), expected_kernel, atol=1e-5,
            rtol=1e-5)
        # The folded, quantized layer matches the float conv + BN (inference)
        # within the weight quantization error.
        expected = keras.ops.convert_to_numpy(model(x, training=False))
        actual = keras.ops.convert_to_numpy(wrapper(x))
        error = np.abs(actual - expected).max()
        self.assertLess(error, 0.03 * np.abs(expected).max())
        self.assertGreater(error, 0.0)

    def test_folds_batch_norm_into_conv2d(self):
        self._check_folding("Conv2D")

    def test_folds_batch_norm_into_depthwise(self):
        self._check_folding("DepthwiseConv2D")

    def test_folds_batch_norm_into_dense(self):
        self._check_folding("Dense")

    def test_moving_statistics_stay_frozen(self):
        model, conv, bn, shape = conv_bn()
        qat = quantization.quantize_aware(model)
        wrapper = [layer for layer in qat.layers
                   if isinstance(layer, quantization.QuantizeWrapper)][0]
        before = keras.ops.convert_to_numpy(wrapper.batch_norm.moving_mean)
        qat(np.ones((2,) + shape, "float32") * 5.0, training=True)
        self.assertAllClose(wrapper.batch_norm.moving_mean, before)

    def test_rejects_other_layers(self):
        with self.assertRaisesRegex(TypeError, "Received: layer=.*LSTM"):
            quantization.QuantizeWrapper(keras.layers.LSTM(3))

    def test_rejects_unsupported_activation(self):
        with self.assertRaisesRegex(ValueError, "activation='sigmoid'"):
            quantization.QuantizeWrapper(
                keras.layers.Dense(3, activation="sigmoid"))

    def test_rejects_channels_first(self):
        with self.assertRaisesRegex(ValueError, "channels_first"):
            quantization.QuantizeWrapper(
                keras.layers.Conv2D(3, 3, data_format="channels_first"))


def reference_levels(kernel, per_channel=True):
    """Integer weight levels and scales, as LiteRT stores them."""
    axes = tuple(range(kernel.ndim - 1)) if per_channel else None
    scale = (2 * np.abs(kernel).max(axis=axes) / 254.0).astype("float32")
    return np.clip(np.floor(kernel / scale + 0.5), -127, 127), scale


def reference_integer_conv(x, kernel, stride, depthwise=False):
    """Exact int64 convolution with 'same' padding (zero = the zero point)."""
    h, w = kernel.shape[:2]
    x = np.pad(x, ((0, 0), (h // 2, h // 2), (w // 2, w // 2), (0, 0)))
    rows = (x.shape[1] - h) // stride + 1
    cols = (x.shape[2] - w) // stride + 1
    out = 0
    for i in range(h):
        for j in range(w):
            patch = x[:, i:i + stride * rows:stride, j:j + stride * cols:stride]
            if depthwise:
                taps = patch[..., :, None] * kernel[i, j]
                out = out + taps.reshape(taps.shape[:-2] + (-1,))
            else:
                out = out + patch @ kernel[i, j]
    return out


class IntegerInferenceTest(TestCase):
    """Inference with `input_range` computes what LiteRT's int8 kernels do:
    an exact integer sum, the bias on the int32 grid, one scale."""

    def _check(self, layer, shape, reference):
        rng = np.random.default_rng(2)
        wrapper = quantization.QuantizeWrapper(layer)
        low, high = -1.3, 2.9
        scale = np.float32((high - low) / 255.0)
        zero = np.floor(-low / scale + 0.5)
        levels = rng.integers(-128, 128, size=(3,) + shape)
        x = ((levels + 128 - zero) * scale).astype("float32")
        x_levels = np.round(x / scale)
        wrapper(x)
        kernel, bias = [w for w in layer.get_weights()][-2:]
        bias = rng.normal(0, 0.3, bias.shape).astype("float32")
        layer.set_weights(layer.get_weights()[:-1] + [bias])
        expected = reference(x_levels.astype("int64"), scale, bias)
        got = wrapper(
            x, input_range=np.array([low, high], "float32"), training=False
        )
        self.assertAllClose(got, expected, rtol=1e-6, atol=1e-6)
        # The float path (training, or no range) differs by float sums only.
        floating = keras.ops.convert_to_numpy(wrapper(x, training=False))
        self.assertAllClose(floating, expected, rtol=1e-4, atol=1e-4)
        return expected

    def _requantize(self, acc, x_scale, w_scale, bias):
        accumulator_scale = x_scale * w_scale
        return (acc + np.round(bias / accumulator_scale)) * accumulator_scale

    def test_conv2d(self):
        layer = keras.layers.Conv2D(5, 3, strides=2, padding="same")

        def reference(x, scale, bias):
            kernel = layer.get_weights()[0]
            w, w_scale = reference_levels(kernel)
            acc = reference_integer_conv(x, w.astype("int64"), 2)
            return self._requantize(acc, scale, w_scale, bias)

        self._check(layer, (7, 7, 4), reference)

    def test_depthwise_conv2d(self):
        layer = keras.layers.DepthwiseConv2D(
            3, padding="same", depth_multiplier=2, activation="relu6"
        )

        def reference(x, scale, bias):
            kernel = layer.get_weights()[0]
            flat = kernel.reshape(-1, kernel.shape[-2] * kernel.shape[-1])
            w, w_scale = reference_levels(flat)
            w = w.reshape(kernel.shape).astype("int64")
            acc = reference_integer_conv(x, w, 1, depthwise=True)
            return np.clip(self._requantize(acc, scale, w_scale, bias), 0, 6)

        self._check(layer, (6, 6, 3), reference)

    def test_dense_per_tensor(self):
        layer = keras.layers.Dense(7, activation="relu")

        def reference(x, scale, bias):
            w, w_scale = reference_levels(layer.get_weights()[0], False)
            acc = x @ w.astype("int64")
            return np.maximum(self._requantize(acc, scale, w_scale, bias), 0)

        self._check(layer, (9,), reference)

    def test_separable_requantizes_between_its_halves(self):
        layer = keras.layers.SeparableConv2D(4, 3, padding="same")
        wrapper = quantization.QuantizeWrapper(layer)
        x = np.random.default_rng(3).uniform(0, 2, (2, 6, 6, 3))
        x = np.round(x / (2 / 255)) * (2 / 255)
        wrapper(x.astype("float32"))
        wrapper.depthwise_quantizer.calibrate(
            np.array([-3.0, 3.0], "float32"))
        got = wrapper(x.astype("float32"), training=False,
                      input_range=np.array([0.0, 2.0], "float32"))
        depthwise, pointwise, bias = layer.get_weights()
        flat = depthwise.reshape(-1, depthwise.shape[-2] * depthwise.shape[-1])
        dw, dw_scale = reference_levels(flat)
        scale = np.float32(2 / 255)
        acc = reference_integer_conv(
            np.round(x / scale).astype("int64"),
            dw.reshape(depthwise.shape).astype("int64"), 1, depthwise=True)
        inner = reference_fake_quant(acc * (scale * dw_scale), -3.0, 3.0)
        inner_scale = np.float32(6 / 255)
        pw, pw_scale = reference_levels(pointwise)
        acc = np.round(inner / inner_scale).astype("int64") @ pw[0, 0].astype(
            "int64")
        expected = self._requantize(acc, inner_scale, pw_scale, bias)
        self.assertAllClose(got, expected, rtol=1e-5, atol=1e-5)
