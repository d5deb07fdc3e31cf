"""Tests for keras_kd/losses/relation.py against NumPy references."""

import itertools

import keras
import numpy as np
from absl.testing import parameterized

from keras_kd import losses
from keras_kd.losses import relation
from tests.test_case import TestCase
from tests.test_case import gradient


def flatten(x):
    return np.asarray(x, "float64").reshape(len(x), -1)


def smooth_l1(x):
    x = np.abs(x)
    return np.where(x < 1.0, 0.5 * x * x, x - 0.5)


def reference_rkd_distance(teacher, student):
    """mdistiller's RKD distance term, with loops; one mean per row."""

    def distances(x):
        x, b = flatten(x), len(x)
        d = np.zeros((b, b))
        for i in range(b):
            for j in range(b):
                if i != j:
                    d[i, j] = np.sqrt(max(((x[i] - x[j]) ** 2).sum(), 1e-12))
        return d / d[d > 0].mean()

    return smooth_l1(distances(student) - distances(teacher)).mean(axis=1)


def reference_rkd_angle(teacher, student):
    """mdistiller's RKD angle term over all b**3 triplets, with loops."""

    def angles(x):
        x, b = flatten(x), len(x)
        a = np.zeros((b, b, b))
        for i in range(b):
            for j in range(b):
                for k in range(b):
                    u, v = x[j] - x[i], x[k] - x[i]
                    nu, nv = np.linalg.norm(u), np.linalg.norm(v)
                    if nu > 0 and nv > 0:
                        a[i, j, k] = u @ v / (nu * nv)
        return a

    return smooth_l1(angles(student) - angles(teacher)).mean(axis=(1, 2))


def reference_similarity_gap(teacher, student):
    """`G_t - G_s` with row-normalised Gram matrices (mdistiller SP.py)."""

    def gram(x):
        x = flatten(x)
        g = x @ x.T
        return g / np.maximum(np.linalg.norm(g, axis=1, keepdims=True), 1e-12)

    return gram(teacher) - gram(student)


def reference_similarity_preserving(teacher, student):
    gap = reference_similarity_gap(teacher, student)
    return (gap**2).sum(axis=1) / len(teacher)


def reference_pkt(teacher, student, eps=1e-7):
    """mdistiller's `pkt_loss`, keeping the (b, b) terms before the mean."""

    def probabilities(x):
        x = flatten(x)
        x = x / (np.sqrt((x**2).sum(axis=1, keepdims=True)) + eps)
        kernel = (x @ x.T + 1.0) / 2.0
        return kernel / kernel.sum(axis=1, keepdims=True)

    p_t, p_s = probabilities(teacher), probabilities(student)
    return (p_t * np.log((p_t + eps) / (p_s + eps))).mean(axis=1)


def compile_modes():
    """JAX always compiles; TF runs unknown-batch graphs and XLA alike."""
    return (True,) if keras.backend.backend() == "jax" else (False, True)


def compile_function(fn, teacher, student, jit_compile):
    """`fn` traced with an unknown batch size (TF), or jitted (TF, JAX)."""
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        return tf.function(
            fn,
            input_signature=[
                tf.TensorSpec((None,) + teacher.shape[1:], "float32"),
                tf.TensorSpec((None,) + student.shape[1:], "float32"),
            ],
            jit_compile=jit_compile,
        )
    if backend == "jax":
        import jax

        return jax.jit(fn)
    return None


def random(*shape, scale=1.0, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(scale=scale, size=shape).astype("float32")


# (name, loss class, function, NumPy reference)
RELATIONS = (
    ("rkd_distance", losses.RKDDistance, losses.rkd_distance,
     reference_rkd_distance),
    ("rkd_angle", losses.RKDAngle, losses.rkd_angle, reference_rkd_angle),
    ("similarity_preserving", losses.SimilarityPreserving,
     losses.similarity_preserving, reference_similarity_preserving),
    ("pkt", losses.PKT, losses.pkt, reference_pkt),
)
# Teacher and student shapes: any rank >= 2, widths may differ.
PAIRS = (
    ("same_width", (6, 8), (6, 8)),
    ("narrow_student", (5, 12), (5, 3, 2)),
    ("maps", (4, 2, 3, 4), (4, 7)),
)


def to_numpy(value):
    return np.asarray(keras.ops.convert_to_numpy(value))


class RelationLossesTest(TestCase):
    """Checks shared by RKDDistance, RKDAngle, SimilarityPreserving, PKT."""

    @parameterized.named_parameters(
        (f"{name}_{pair}", fn, reference, t_shape, s_shape)
        for name, _, fn, reference in RELATIONS
        for pair, t_shape, s_shape in PAIRS
    )
    def test_matches_reference(self, fn, reference, t_shape, s_shape):
        teacher = random(*t_shape, scale=2.0, seed=1)
        student = random(*s_shape, scale=0.5, seed=2)
        loss = fn(teacher, student)
        self.assertEqual(tuple(loss.shape), (t_shape[0],))
        self.assertEqual(keras.backend.standardize_dtype(loss.dtype), "float32")
        expected = reference(teacher, student)
        self.assertGreater(expected.mean(), 1e-4)  # a test that can fail
        self.assertAllClose(loss, expected, rtol=1e-4, atol=1e-7)

    @parameterized.named_parameters(
        (name, cls, reference) for name, cls, _, reference in RELATIONS
    )
    def test_loss_class_gives_the_published_batch_value(self, cls, reference):
        teacher, student = random(5, 6, seed=3), random(5, 4, seed=4)
        self.assertAllClose(
            cls()(teacher, student),
            reference(teacher, student).mean(),
            rtol=1e-4,
        )

    @parameterized.named_parameters(
        (name, cls, name) for name, cls, _, _ in RELATIONS
    )
    def test_config(self, cls, string_id):
        revived = self.run_serialization_test(cls(reduction="sum", name="x"))
        self.assertEqual((revived.name, revived.reduction), ("x", "sum"))
        self.assertIsInstance(losses.get(string_id), cls)

    @parameterized.named_parameters(
        (name, fn) for name, _, fn, _ in RELATIONS
    )
    def test_identical_inputs_give_zero(self, fn):
        features = random(5, 3, 4, scale=3.0)
        self.assertAllClose(fn(features, features), np.zeros(5), atol=1e-6)

    @parameterized.named_parameters(
        (name, fn, reference) for name, _, fn, reference in RELATIONS
    )
    def test_float16_inputs_compute_in_float32(self, fn, reference):
        teacher = random(4, 8, seed=5).astype("float16")
        student = random(4, 6, seed=6).astype("float16")
        loss = fn(teacher, student)
        self.assertEqual(keras.backend.standardize_dtype(loss.dtype), "float32")
        self.assertAllClose(
            loss,
            fn(teacher.astype("float32"), student.astype("float32")),
            rtol=1e-6,
        )
        self.assertAllClose(loss, reference(teacher, student), rtol=1e-4)

    @parameterized.named_parameters(
        (name, fn) for name, _, fn, _ in RELATIONS
    )
    def test_duplicate_and_zero_rows_have_finite_gradients(self, fn):
        teacher = random(4, 6, seed=7)
        duplicates = random(4, 5, seed=8)
        duplicates[1] = duplicates[0]
        duplicates[3] = duplicates[0]
        zeros = np.zeros((4, 5), "float32")
        cases = (
            (teacher, duplicates),
            (teacher[[0, 0, 2, 0]], duplicates),  # duplicates in both
            (teacher, zeros),
            (zeros[:, :3], zeros),
            (teacher * 1e6, duplicates * 1e-6),
        )
        for (t, s), compiled in itertools.product(cases, compile_modes()):
            self.assertTrue(np.all(np.isfinite(to_numpy(fn(t, s)))))
            grad = gradient(lambda x: fn(t, x), s, compiled)
            if grad is None:
                self.skipTest("Gradients are checked on TensorFlow and JAX.")
            grad = keras.ops.convert_to_numpy(grad)
            self.assertTrue(np.all(np.isfinite(grad)), msg=str(grad))
            # Duplicate rows and zero rows get no huge `1 / eps` spikes.
            self.assertLess(np.abs(grad).max(), 1e7)

    @parameterized.named_parameters(
        (name, fn) for name, _, fn, _ in RELATIONS
    )
    def test_compiled_matches_eager(self, fn):
        teacher, student = random(5, 2, 3, seed=9), random(5, 4, seed=10)
        student[1] = student[0]  # duplicates must stay exact under XLA
        for jit_compile in compile_modes():
            compiled = compile_function(fn, teacher, student, jit_compile)
            if compiled is None:
                self.skipTest("Compilation is checked on TensorFlow and JAX.")
            self.assertAllClose(
                compiled(teacher, student), fn(teacher, student), rtol=1e-5
            )

    @parameterized.named_parameters(
        (name, fn, name) for name, _, fn, _ in RELATIONS
    )
    def test_rejects_a_single_sample(self, fn, name):
        with self.assertRaisesRegex(
            ValueError,
            f"`{name}` .* needs at least 2 samples per batch. "
            "Received: batch_size=1",
        ):
            fn(np.ones((1, 4)), np.ones((1, 3)))

    @parameterized.named_parameters(
        (name, fn) for name, _, fn, _ in RELATIONS
    )
    def test_rejects_bad_shapes(self, fn):
        with self.assertRaisesRegex(
            ValueError,
            r"teacher_features.shape=\(3, 4\), "
            r"student_features.shape=\(2, 4\)",
        ):
            fn(np.ones((3, 4)), np.ones((2, 4)))
        with self.assertRaisesRegex(
            ValueError, r"rank 2 or more.*teacher_features.shape=\(3,\)"
        ):
            fn(np.ones(3), np.ones((3, 4)))

    def test_default_weights(self):
        # mdistiller's `mdistiller/engine/cfg.py` defaults.
        self.assertEqual(
            relation.DEFAULT_WEIGHTS,
            {
                "rkd_distance": 25.0,
                "rkd_angle": 50.0,
                "similarity_preserving": 3000.0,
                "pkt": 30000.0,
            },
        )


class RKDDistanceTest(TestCase):
    def test_hand_computed_value(self):
        # Teacher: a 3-4-5 triangle, mean distance 4. Student: equilateral.
        teacher = np.array([[0.0, 0.0], [3.0, 0.0], [0.0, 4.0]])
        student = np.array([[0.0, 0.0], [1.0, 0.0], [0.5, np.sqrt(0.75)]])
        # Normalised gaps per pair: 1 - 3/4, 1 - 4/4, 1 - 5/4 -> 0.25, 0, 0.25
        # smooth L1 0.03125, 0, 0.03125; rows sum two pairs over b = 3.
        expected = np.array([0.03125, 0.0625, 0.03125]) / 3
        self.assertAllClose(
            losses.rkd_distance(teacher, student), expected, rtol=1e-5
        )

    def test_scale_and_shift_invariance(self):
        teacher, student = random(6, 5, seed=11), random(6, 3, seed=12)
        expected = losses.rkd_distance(teacher, student)
        for scale, shift in ((1e-3, 0.0), (7.0, 0.0), (1e25, 0.0), (1, 100)):
            self.assertAllClose(
                losses.rkd_distance(teacher, student * scale + shift),
                expected,
                rtol=1e-4,
                atol=1e-7,
            )


class RKDAngleTest(TestCase):
    def test_hand_computed_value(self):
        # Teacher: right angle at sample 0; student: the three on one line.
        teacher = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
        student = np.array([[0.0, 0.0], [1.0, 0.0], [2.0, 0.0]])
        loss = losses.rkd_angle(teacher, student)
        self.assertAllClose(
            loss, reference_rkd_angle(teacher, student), rtol=1e-5
        )
        # Vertex 0: cos(angle 1-0-2) goes 0 -> 1, twice (j, k and k, j).
        self.assertAllClose(loss[0], 2 * 0.5 / 9, rtol=1e-5)

    def test_scale_and_shift_invariance(self):
        teacher, student = random(5, 4, seed=13), random(5, 6, seed=14)
        expected = losses.rkd_angle(teacher, student)
        for scale, shift in ((1e-3, 0.0), (7.0, 0.0), (1e25, 0.0), (1, 100)):
            self.assertAllClose(
                losses.rkd_angle(teacher * scale - shift, student),
                expected,
                rtol=1e-4,
                atol=1e-7,
            )

    def test_near_duplicates_count_as_duplicates(self):
        teacher, student = random(6, 5, seed=21), random(6, 40, seed=22)
        exact = student.copy()
        exact[4] = exact[3]
        near = exact.copy()
        near[4] += 1e-5  # far below 1e-3 of the batch's largest distance
        expected = reference_rkd_angle(teacher, exact)
        self.assertAllClose(
            losses.rkd_angle(teacher, near), expected, rtol=1e-4, atol=1e-7
        )
        grad_exact = gradient(lambda x: losses.rkd_angle(teacher, x), exact)
        if grad_exact is None:
            self.skipTest("Gradients are checked on TensorFlow and JAX.")
        grad_near = gradient(lambda x: losses.rkd_angle(teacher, x), near)
        # No spike along the float32 direction of the tiny difference.
        self.assertAllClose(grad_near, grad_exact, atol=1e-5)

    def test_wide_features_match_reference(self):
        # Width much larger than the batch: the Gram path's regime.
        teacher, student = random(5, 300, seed=23), random(5, 1000, seed=24)
        self.assertAllClose(
            losses.rkd_angle(teacher, student),
            reference_rkd_angle(teacher, student),
            rtol=1e-4,
            atol=1e-7,
        )


class SimilarityPreservingTest(TestCase):
    def test_batch_mean_is_frobenius_norm_over_b_squared(self):
        teacher, student = random(6, 2, 2, 3, seed=15), random(6, 5, seed=16)
        gap = reference_similarity_gap(teacher, student)
        published = np.linalg.norm(gap, "fro") ** 2 / 6**2
        loss = losses.similarity_preserving(teacher, student)
        self.assertAllClose(keras.ops.mean(loss), published, rtol=1e-5)

    def test_scale_invariance(self):
        teacher, student = random(5, 4, seed=17), random(5, 6, seed=18)
        expected = losses.similarity_preserving(teacher, student)
        for scale in (1e-3, 7.0, 1e25):
            self.assertAllClose(
                losses.similarity_preserving(teacher, student * scale),
                expected,
                rtol=1e-4,
                atol=1e-7,
            )

    def test_string_ids(self):
        for string_id in ("sp", "similarity_preserving"):
            self.assertIsInstance(
                losses.get(string_id), losses.SimilarityPreserving
            )


class PKTTest(TestCase):
    def test_config(self):
        revived = self.run_serialization_test(losses.PKT(epsilon=1e-5))
        self.assertEqual(revived.epsilon, 1e-5)

    @parameterized.named_parameters(("eps_1e-7", 1e-7), ("eps_1e-3", 1e-3))
    def test_matches_reference_for_epsilon(self, epsilon):
        teacher, student = random(5, 6, seed=19), random(5, 3, seed=20)
        self.assertAllClose(
            losses.PKT(epsilon=epsilon, reduction=None)(teacher, student),
            reference_pkt(teacher, student, epsilon),
            rtol=1e-4,
        )

    def test_per_sample_scale_invariance(self):
        teacher, student = random(5, 4, seed=21), random(5, 6, seed=22)
        expected = losses.pkt(teacher, student)
        scales = np.array([[1e-3], [7.0], [1e25], [1.0], [0.5]], "float32")
        self.assertAllClose(
            losses.pkt(teacher, student * scales), expected, rtol=1e-4
        )

    def test_rejects_non_positive_epsilon(self):
        with self.assertRaisesRegex(ValueError, "Received: epsilon=0"):
            losses.PKT(epsilon=0)
