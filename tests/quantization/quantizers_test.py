"""Tests of keras_kd/quantization/quantizers.py against NumPy references."""

import keras
import numpy as np
from absl.testing import parameterized

from keras_kd import quantization
from tests.test_case import TestCase
from tests.test_case import gradient


def reference_fake_quant(x, low, high, narrow_range=False):
    """TensorFlow's FakeQuantWithMinMaxArgs (quantize_training kernels),
    written in float32 NumPy: nudge, clamp, round half up on the grid."""
    x = np.asarray(x, "float32")
    low = np.asarray(low, "float32")
    high = np.asarray(high, "float32")
    q_min = np.float32(1.0 if narrow_range else 0.0)
    q_max = np.float32(255.0)
    scale = (high - low) / (q_max - q_min)
    zero_from_min = q_min - low / scale
    zero = np.where(
        zero_from_min < q_min,
        q_min,
        np.where(zero_from_min > q_max, q_max, np.floor(zero_from_min + 0.5)),
    ).astype("float32")
    n_min = (q_min - zero) * scale
    n_max = (q_max - zero) * scale
    clamped = np.minimum(np.maximum(x, n_min), n_max)
    inverse = np.float32(1.0) / scale
    return np.floor((clamped - n_min) * inverse + 0.5) * scale + n_min


def reference_int8(x, low, high):
    """The int8 values LiteRT stores: zero point and scale of the range."""
    scale = (high - low) / 255.0
    zero_point = -128 - round(low / scale)
    q = np.clip(np.floor(x / scale + 0.5) + zero_point, -128, 127)
    return q, scale, zero_point


class FakeQuantTest(TestCase):
    @parameterized.named_parameters(
        ("relu6", 0.0, 6.0),
        ("asymmetric", -1.3, 4.7),
        ("negative", -3.0, 0.5),
        ("unnudged", -0.1234, 2.71),
    )
    def test_matches_reference(self, low, high):
        rng = np.random.default_rng(0)
        x = rng.uniform(low - 2, high + 2, size=(64, 5)).astype("float32")
        expected = reference_fake_quant(x, low, high)
        actual = quantization.fake_quant(x, low, high)
        self.assertAllClose(actual, expected, atol=1e-6)
        # At most 256 levels, and 0.0 is one of them.
        levels = np.unique(keras.ops.convert_to_numpy(actual))
        self.assertLessEqual(len(levels), 256)
        self.assertIn(0.0, quantization.fake_quant([0.0], low, high))

    def test_zero_is_exact_after_nudging(self):
        low, high, scale = quantization.nudged_range(-0.1234, 2.71)
        low, high, scale = (float(keras.ops.convert_to_numpy(v))
                            for v in (low, high, scale))
        self.assertAlmostEqual(-low / scale, round(-low / scale), places=4)
        self.assertAlmostEqual(high - low, 255 * scale, places=5)

    def test_int8_grid_as_litert_stores_it(self):
        low, high = -1.0, 3.0
        # Random points (exact ties depend on float rounding, tested below).
        x = np.random.default_rng(0).uniform(-2, 4, 200).astype("float32")
        q, scale, zero_point = reference_int8(x, low, high)
        n_low, _, n_scale = quantization.nudged_range(low, high)
        self.assertAllClose(n_scale, scale, atol=1e-7)
        self.assertAllClose(
            quantization.fake_quant(x, low, high),
            (q - zero_point) * scale,
            atol=1e-6,
        )

    def test_rounds_half_up_on_the_grid(self):
        # With range [0, 2.55] the step is 0.01: 0.015 sits between levels
        # 1 and 2 and goes up (TensorFlow's floor(v + 0.5)).
        step = 2.55 / 255
        x = np.array([0.5 * step, 1.5 * step, 2.5 * step], "float32")
        expected = reference_fake_quant(x, 0.0, 2.55)
        self.assertAllClose(
            quantization.fake_quant(x, 0.0, 2.55), expected, atol=1e-7
        )

    def test_clips_to_the_range(self):
        y = quantization.fake_quant(np.array([-5.0, 9.0], "float32"), 0.0, 6.0)
        self.assertAllClose(y, [0.0, 6.0], atol=1e-6)

    def test_straight_through_gradient(self):
        x = np.array([-2.0, -0.5, 0.0, 1.2, 5.9, 6.5, 100.0], "float32")
        grad = gradient(lambda v: quantization.fake_quant(v, -1.0, 6.0), x)
        _, n_high, _ = quantization.nudged_range(-1.0, 6.0)
        inside = (x >= -1.0) & (x <= float(keras.ops.convert_to_numpy(n_high)))
        self.assertAllEqual(grad, inside.astype("float32"))

    def test_matches_tensorflow_op(self):
        if keras.backend.backend() != "tensorflow":
            self.skipTest("Compares with the TensorFlow op.")
        import tensorflow as tf

        rng = np.random.default_rng(1)
        x = rng.normal(scale=3, size=(256,)).astype("float32")
        expected = tf.quantization.fake_quant_with_min_max_args(
            x, min=-2.3, max=5.1, num_bits=8
        )
        # Same level everywhere; the float products differ by an ulp.
        self.assertAllClose(
            quantization.fake_quant(x, -2.3, 5.1), expected, atol=1e-6
        )


class WeightQuantTest(TestCase):
    def test_per_channel_symmetric_narrow_range(self):
        rng = np.random.default_rng(0)
        kernel = rng.normal(size=(3, 3, 4, 6)).astype("float32")
        kernel[..., 2] *= 10.0
        largest = np.abs(kernel).max(axis=(0, 1, 2))
        scale = largest / 127.0
        q = np.clip(np.floor(kernel / scale + 0.5), -127, 127)
        expected = q * scale
        actual = quantization.fake_quant_weights(kernel)
        self.assertAllClose(actual, expected, atol=1e-5, rtol=1e-5)
        actual = keras.ops.convert_to_numpy(actual)
        for channel in range(6):
            levels = np.round(actual[..., channel] / scale[channel])
            self.assertLessEqual(np.abs(levels).max(), 127)
            self.assertEqual(np.abs(levels).max(), 127)

    def test_per_tensor(self):
        rng = np.random.default_rng(0)
        kernel = rng.normal(size=(20, 10)).astype("float32")
        scale = np.abs(kernel).max() / 127.0
        expected = np.clip(np.floor(kernel / scale + 0.5), -127, 127) * scale
        self.assertAllClose(
            quantization.fake_quant_weights(kernel, per_channel=False),
            expected,
            atol=1e-5,
        )

    def test_zero_channel_stays_zero(self):
        kernel = np.zeros((4, 2), "float32")
        kernel[:, 1] = 1.0
        self.assertAllClose(quantization.fake_quant_weights(kernel), kernel)

    def test_weight_gradient_passes_through(self):
        rng = np.random.default_rng(0)
        kernel = rng.normal(size=(5, 3)).astype("float32")
        grad = gradient(quantization.fake_quant_weights, kernel)
        self.assertAllEqual(grad, np.ones_like(kernel))
