"""Tests for keras_kd/losses/feature.py against NumPy references."""

import keras
import numpy as np
from absl.testing import parameterized

from keras_kd import losses
from tests.test_case import TestCase
from tests.test_case import gradient


def reference_mse(teacher, student):
    diff = (teacher.astype("float64") - student).reshape(len(teacher), -1)
    return (diff**2).mean(axis=1)


def reference_l1(teacher, student):
    diff = (teacher.astype("float64") - student).reshape(len(teacher), -1)
    return np.abs(diff).mean(axis=1)


def reference_smooth_l1(teacher, student, delta):
    """Huber with an explicit branch per element."""
    diff = (teacher.astype("float64") - student).reshape(len(teacher), -1)
    out = np.zeros(diff.shape)
    for index, d in np.ndenumerate(np.abs(diff)):
        out[index] = 0.5 * d * d if d < delta else delta * (d - 0.5 * delta)
    return out.mean(axis=1)


def reference_cosine(teacher, student):
    """Loops over samples and positions; cosine over the last axis."""
    channels = teacher.shape[-1]
    t = teacher.astype("float64").reshape(len(teacher), -1, channels)
    s = student.astype("float64").reshape(len(student), -1, channels)
    out = np.zeros(len(t))
    for i in range(len(t)):
        values = []
        for u, v in zip(t[i], s[i]):
            values.append(1.0 - u @ v / (np.linalg.norm(u) * np.linalg.norm(v)))
        out[i] = np.mean(values)
    return out


def reference_attention_transfer(teacher, student, p):
    """mdistiller's `_at` in NumPy, pooling the attention maps by blocks."""

    def attention(x, height, width):
        energy = (np.abs(x.astype("float64")) ** p).mean(axis=-1)
        bh, bw = energy.shape[1] // height, energy.shape[2] // width
        pooled = np.zeros((len(x), height, width))
        for r in range(height):
            for c in range(width):
                block = energy[:, r * bh:(r + 1) * bh, c * bw:(c + 1) * bw]
                pooled[:, r, c] = block.mean(axis=(1, 2))
        flat = pooled.reshape(len(x), -1)
        norm = np.linalg.norm(flat, axis=1, keepdims=True)
        return flat / np.maximum(norm, 1e-12)

    height = min(teacher.shape[1], student.shape[1])
    width = min(teacher.shape[2], student.shape[2])
    diff = attention(teacher, height, width) - attention(student, height, width)
    return (diff**2).mean(axis=1)


def random(*shape, scale=1.0, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(scale=scale, size=shape).astype("float32")


# (loss class, function, string id, NumPy reference without hyper-parameters)
ELEMENTWISE = (
    ("mse", losses.FeatureMSE, losses.feature_mse, reference_mse),
    ("l1", losses.FeatureL1, losses.feature_l1, reference_l1),
    (
        "smooth_l1",
        losses.FeatureSmoothL1,
        losses.feature_smooth_l1,
        lambda t, s: reference_smooth_l1(t, s, 1.0),
    ),
    ("cosine", losses.FeatureCosine, losses.feature_cosine, reference_cosine),
)
SHAPES = (("rank2", (4, 6)), ("rank3", (3, 5, 4)), ("rank4", (2, 3, 4, 5)))


def to_numpy(value):
    return np.asarray(keras.ops.convert_to_numpy(value))


class FeatureLossesTest(TestCase):
    """Checks shared by the four element-wise feature losses."""

    @parameterized.named_parameters(
        (name, cls, name) for name, cls, _, _ in ELEMENTWISE
    )
    def test_config(self, cls, string_id):
        revived = self.run_serialization_test(cls(reduction="sum", name="x"))
        self.assertEqual((revived.name, revived.reduction), ("x", "sum"))
        self.assertIsInstance(losses.get(string_id), cls)

    @parameterized.named_parameters(
        (f"{name}_{shape_name}", fn, reference, shape)
        for name, _, fn, reference in ELEMENTWISE
        for shape_name, shape in SHAPES
    )
    def test_matches_reference(self, fn, reference, shape):
        teacher = random(*shape, scale=2.0, seed=1)
        student = random(*shape, scale=2.0, seed=2)
        loss = fn(teacher, student)
        self.assertEqual(tuple(loss.shape), (shape[0],))
        self.assertEqual(keras.backend.standardize_dtype(loss.dtype), "float32")
        self.assertAllClose(loss, reference(teacher, student), rtol=1e-5)

    @parameterized.named_parameters(
        (name, cls, reference) for name, cls, _, reference in ELEMENTWISE
    )
    def test_loss_class_reduces_and_weights(self, cls, reference):
        teacher, student = random(4, 3, 5, seed=3), random(4, 3, 5, seed=4)
        expected = reference(teacher, student)
        self.assertAllClose(cls()(teacher, student), expected.mean(), rtol=1e-5)
        weights = np.array([1.0, 0.0, 2.0, 0.5], "float32")
        self.assertAllClose(
            cls()(teacher, student, sample_weight=weights),
            (expected * weights).mean(),
            rtol=1e-5,
        )

    @parameterized.named_parameters(
        (name, fn) for name, _, fn, _ in ELEMENTWISE
    )
    def test_identical_inputs_give_zero(self, fn):
        features = random(3, 4, 5, scale=3.0)
        self.assertAllClose(fn(features, features), np.zeros(3), atol=1e-6)

    @parameterized.named_parameters(
        (name, fn, reference) for name, _, fn, reference in ELEMENTWISE
    )
    def test_float16_inputs_compute_in_float32(self, fn, reference):
        teacher = random(3, 8, seed=5).astype("float16")
        student = random(3, 8, seed=6).astype("float16")
        loss = fn(teacher, student)
        self.assertEqual(keras.backend.standardize_dtype(loss.dtype), "float32")
        self.assertAllClose(
            loss,
            fn(teacher.astype("float32"), student.astype("float32")),
            rtol=1e-6,
        )
        self.assertAllClose(loss, reference(teacher, student), rtol=1e-5)

    @parameterized.named_parameters(
        (name, fn) for name, _, fn, _ in ELEMENTWISE
    )
    def test_rejects_shape_mismatch_naming_both_shapes(self, fn):
        with self.assertRaisesRegex(
            ValueError,
            r"teacher_features.shape=\(2, 4\), "
            r"student_features.shape=\(2, 5\)",
        ):
            fn(np.ones((2, 4)), np.ones((2, 5)))

    @parameterized.named_parameters(
        (name, fn) for name, _, fn, _ in ELEMENTWISE
    )
    def test_zero_and_large_features_are_finite(self, fn):
        zeros = np.zeros((2, 3, 4), "float32")
        large = random(2, 3, 4, scale=1e18)
        for teacher, student in ((zeros, zeros), (zeros, large)):
            self.assertTrue(np.all(np.isfinite(to_numpy(fn(teacher, student)))))
        grad = gradient(lambda s: fn(zeros, s), zeros)
        if grad is None:
            self.skipTest("Gradients are checked on TensorFlow and JAX.")
        self.assertTrue(np.all(np.isfinite(keras.ops.convert_to_numpy(grad))))


class FeatureMSETest(TestCase):
    def test_hand_computed_value(self):
        teacher = np.array([[1.0, 2.0], [0.0, 0.0]])
        student = np.array([[0.0, 0.0], [3.0, -1.0]])
        # (1 + 4) / 2 = 2.5 and (9 + 1) / 2 = 5.
        self.assertAllClose(losses.feature_mse(teacher, student), [2.5, 5.0])


class FeatureL1Test(TestCase):
    def test_hand_computed_value(self):
        teacher = np.array([[1.0, 2.0], [0.0, 0.0]])
        student = np.array([[0.0, 0.0], [3.0, -1.0]])
        self.assertAllClose(losses.feature_l1(teacher, student), [1.5, 2.0])


class FeatureSmoothL1Test(TestCase):
    def test_config(self):
        revived = self.run_serialization_test(losses.FeatureSmoothL1(delta=0.5))
        self.assertEqual(revived.delta, 0.5)

    @parameterized.named_parameters(
        ("small_delta", 0.3), ("unit_delta", 1.0), ("large_delta", 4.0)
    )
    def test_matches_reference(self, delta):
        teacher, student = random(3, 4, 5, scale=2.0, seed=7), random(
            3, 4, 5, scale=2.0, seed=8
        )
        self.assertAllClose(
            losses.FeatureSmoothL1(delta=delta, reduction=None)(
                teacher, student
            ),
            reference_smooth_l1(teacher, student, delta),
            rtol=1e-5,
        )

    def test_hand_computed_value(self):
        # d = 0.5 -> 0.125; d = 3 -> 3 - 0.5 = 2.5; mean = 1.3125.
        teacher, student = np.array([[0.5, 3.0]]), np.zeros((1, 2))
        self.assertAllClose(
            losses.feature_smooth_l1(teacher, student), [1.3125]
        )

    def test_rejects_non_positive_delta(self):
        with self.assertRaisesRegex(ValueError, "Received: delta=0"):
            losses.FeatureSmoothL1(delta=0)


class FeatureCosineTest(TestCase):
    def test_per_position_not_flattened(self):
        # Position 0 agrees, position 1 is orthogonal: mean(0, 1) = 0.5.
        # Over the flattened sample it would be 1 - 9 / 10 = 0.1.
        teacher = np.array([[[3.0, 0.0], [1.0, 0.0]]])
        student = np.array([[[3.0, 0.0], [0.0, 1.0]]])
        self.assertAllClose(
            losses.feature_cosine(teacher, student), [0.5], atol=1e-6
        )

    def test_zero_vector_has_distance_one(self):
        loss = losses.feature_cosine(np.zeros((1, 3)), np.ones((1, 3)))
        self.assertAllClose(loss, [1.0])

    def test_scale_invariance(self):
        teacher, student = random(2, 3, 4, seed=9), random(2, 3, 4, seed=10)
        expected = losses.feature_cosine(teacher, student)
        for scale in (1e-3, 7.0, 1e25):
            self.assertAllClose(
                losses.feature_cosine(teacher, student * scale),
                expected,
                rtol=1e-5,
                atol=1e-6,
            )

    def test_rejects_rank_one(self):
        with self.assertRaisesRegex(ValueError, r"Received: .*shape=\(3,\)"):
            losses.feature_cosine(np.ones(3), np.ones(3))


class AttentionTransferTest(TestCase):
    def test_config(self):
        revived = self.run_serialization_test(losses.AttentionTransfer(p=4.0))
        self.assertEqual(revived.p, 4.0)

    @parameterized.named_parameters(
        ("same_size_p2", (2, 4, 4, 6), (2, 4, 4, 3), 2.0),
        ("teacher_larger_p2", (2, 8, 8, 4), (2, 4, 4, 5), 2.0),
        ("student_larger_p1", (2, 3, 3, 4), (2, 6, 9, 2), 1.0),
        ("mixed_sizes_p4", (3, 8, 2, 4), (3, 4, 6, 4), 4.0),
    )
    def test_matches_reference(self, teacher_shape, student_shape, p):
        teacher = random(*teacher_shape, seed=11)
        student = random(*student_shape, seed=12)
        loss = losses.attention_transfer(teacher, student, p=p)
        self.assertEqual(tuple(loss.shape), (teacher_shape[0],))
        self.assertAllClose(
            loss,
            reference_attention_transfer(teacher, student, p),
            rtol=1e-5,
            atol=1e-8,
        )
        self.assertAllClose(
            losses.AttentionTransfer(p=p)(teacher, student),
            reference_attention_transfer(teacher, student, p).mean(),
            rtol=1e-5,
        )

    def test_identical_maps_and_scaled_maps_give_zero(self):
        teacher = random(2, 4, 4, 3)
        self.assertAllClose(
            losses.attention_transfer(teacher, teacher), [0.0, 0.0]
        )
        # Different channel counts with the same energy per position.
        student = np.concatenate([teacher, -teacher], axis=-1) * 5.0
        self.assertAllClose(
            losses.attention_transfer(teacher, student), [0.0, 0.0], atol=1e-7
        )

    def test_large_and_float16_maps(self):
        teacher = random(2, 4, 4, 3, seed=13)
        student = random(2, 4, 4, 2, seed=14)
        expected = reference_attention_transfer(teacher, student, 2.0)
        self.assertAllClose(
            losses.attention_transfer(teacher * 1e25, student * 1e-20),
            expected,
            rtol=1e-5,
        )
        teacher, student = teacher.astype("float16"), student.astype("float16")
        loss = losses.attention_transfer(teacher, student)
        self.assertEqual(keras.backend.standardize_dtype(loss.dtype), "float32")
        self.assertAllClose(
            loss,
            reference_attention_transfer(teacher, student, 2.0),
            rtol=1e-5,
        )

    def test_zero_maps_are_finite(self):
        zeros = np.zeros((2, 4, 4, 3), "float32")
        teacher = random(2, 4, 4, 3, seed=13)
        # A zero map normalises to zero: the loss is mean(a_t**2) = 1 / 16.
        self.assertAllClose(
            losses.attention_transfer(teacher, zeros), [1 / 16, 1 / 16]
        )
        self.assertAllClose(losses.attention_transfer(zeros, zeros), [0, 0])
        grad = gradient(lambda s: losses.attention_transfer(teacher, s), zeros)
        if grad is None:
            self.skipTest("Gradients are checked on TensorFlow and JAX.")
        self.assertTrue(np.all(np.isfinite(keras.ops.convert_to_numpy(grad))))

    def test_string_ids(self):
        for string_id in ("attention", "attention_transfer"):
            loss = losses.get(string_id, p=1.0)
            self.assertIsInstance(loss, losses.AttentionTransfer)
            self.assertEqual(loss.p, 1.0)

    def test_rejects_spatial_sizes_that_do_not_divide(self):
        with self.assertRaisesRegex(
            ValueError,
            r"teacher_features.shape=\(2, 8, 8, 4\), "
            r"student_features.shape=\(2, 3, 3, 4\)",
        ):
            losses.attention_transfer(
                np.ones((2, 8, 8, 4)), np.ones((2, 3, 3, 4))
            )

    def test_rejects_wrong_rank(self):
        with self.assertRaisesRegex(
            ValueError, r"rank 4.*Received: student_features.shape=\(2, 8\)"
        ):
            losses.attention_transfer(np.ones((2, 4, 4, 3)), np.ones((2, 8)))

    def test_rejects_p_below_one(self):
        with self.assertRaisesRegex(ValueError, "Received: p=0.5"):
            losses.AttentionTransfer(p=0.5)
