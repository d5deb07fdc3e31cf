"""Tests of keras_kd/losses/logits.py against NumPy references."""

import keras
import numpy as np
from absl.testing import parameterized

from keras_kd import losses
from tests.test_case import TestCase
from tests.test_case import gradient


def reference_log_softmax(x):
    x = x - x.max(-1, keepdims=True)
    return x - np.log(np.exp(x).sum(-1, keepdims=True))


def reference_soft_target_kl(teacher, student, temperature, squared=True):
    """NumPy reference, written independently of keras_kd."""
    t = reference_log_softmax(teacher.astype("float64") / temperature)
    s = reference_log_softmax(student.astype("float64") / temperature)
    kl = (np.exp(t) * (t - s)).sum(-1)
    return kl * temperature**2 if squared else kl


def reference_cross_entropy(labels, logits):
    log_p = reference_log_softmax(logits.astype("float64"))
    out = np.zeros(len(labels))
    for i, label in enumerate(labels):
        out[i] = 0.0 if label < 0 else -log_p[i, label]
    return out


class SoftTargetKLTest(TestCase):
    def test_config(self):
        self.run_serialization_test(
            losses.SoftTargetKL(temperature=2.0,
                                scale_by_temperature_squared=False)
        )

    @parameterized.named_parameters(
        ("t1", 1.0), ("t4", 4.0), ("t20", 20.0), ("t0_5", 0.5)
    )
    def test_matches_reference(self, temperature):
        rng = np.random.default_rng(0)
        teacher, student = rng.normal(scale=5.0, size=(2, 8, 10)).astype(
            "float32"
        )
        values = losses.soft_target_kl(teacher, student, temperature)
        self.assertEqual(tuple(values.shape), (8,))
        self.assertAllClose(
            values,
            reference_soft_target_kl(teacher, student, temperature),
            rtol=1e-4,
            atol=1e-6,
        )
        loss = losses.SoftTargetKL(temperature)(teacher, student)
        self.assertAllClose(
            loss,
            reference_soft_target_kl(teacher, student, temperature).mean(),
            rtol=1e-4,
        )

    def test_without_temperature_squared(self):
        rng = np.random.default_rng(1)
        teacher, student = rng.normal(size=(2, 4, 5)).astype("float32")
        values = losses.soft_target_kl(
            teacher, student, 3.0, scale_by_temperature_squared=False
        )
        self.assertAllClose(
            values,
            reference_soft_target_kl(teacher, student, 3.0, squared=False),
            rtol=1e-4,
        )

    @parameterized.named_parameters(("t1", 1.0), ("t20", 20.0))
    def test_extreme_logits_are_finite_and_exact(self, temperature):
        teacher = np.array([[80.0, -80.0, 0.0], [-80.0, 80.0, 79.0]],
                           "float32")
        student = np.array([[-80.0, 80.0, 1.0], [80.0, -80.0, 0.0]],
                           "float32")
        values = losses.soft_target_kl(teacher, student, temperature)
        self.assertTrue(np.all(np.isfinite(keras.ops.convert_to_numpy(values))))
        self.assertAllClose(
            values,
            reference_soft_target_kl(teacher, student, temperature),
            rtol=1e-4,
        )

    def test_identical_logits_give_zero(self):
        logits = np.random.default_rng(2).normal(size=(6, 10)) * 10
        values = losses.soft_target_kl(logits.astype("float32"),
                                       logits.astype("float32"), 4.0)
        self.assertAllClose(values, np.zeros(6), atol=1e-5)

    def test_shifted_logits_give_zero(self):
        logits = np.array([[80.0, -80.0, 1.0]], "float32")
        loss = losses.SoftTargetKL()(logits, logits + 5.0)
        self.assertAllClose(loss, 0.0, atol=1e-5)

    def test_half_precision_inputs_compute_in_float32(self):
        rng = np.random.default_rng(3)
        teacher, student = rng.normal(scale=3, size=(2, 4, 10))
        values = losses.soft_target_kl(
            teacher.astype("float16"), student.astype("float16"), 20.0
        )
        self.assertEqual(keras.backend.standardize_dtype(values.dtype),
                         "float32")
        self.assertAllClose(
            values,
            reference_soft_target_kl(teacher.astype("float16"),
                                     student.astype("float16"), 20.0),
            rtol=1e-3,
        )

    @parameterized.named_parameters(("t1", 1.0), ("t2", 2.0), ("t8", 8.0))
    def test_gradient_scales_with_temperature(self, temperature):
        # d/ds [T^2 KL] = T * (softmax(s/T) - softmax(t/T)).
        rng = np.random.default_rng(4)
        teacher, student = rng.normal(size=(2, 3, 6)).astype("float32")
        grad = gradient(
            lambda s: losses.soft_target_kl(teacher, s, temperature), student
        )
        p_t = np.exp(reference_log_softmax(teacher / temperature))
        p_s = np.exp(reference_log_softmax(student / temperature))
        self.assertAllClose(grad, temperature * (p_s - p_t), rtol=1e-4,
                            atol=1e-6)

    def test_rejects_non_positive_temperature(self):
        with self.assertRaisesRegex(ValueError, "Received: temperature=0"):
            losses.SoftTargetKL(temperature=0)
        with self.assertRaisesRegex(ValueError, "temperature=inf"):
            losses.SoftTargetKL(temperature=float("inf"))
        with self.assertRaisesRegex(TypeError, "temperature='4'"):
            losses.SoftTargetKL(temperature="4")


class HardCrossEntropyTest(TestCase):
    def test_sparse_labels_match_reference(self):
        rng = np.random.default_rng(5)
        logits = rng.normal(scale=4, size=(8, 5)).astype("float32")
        labels = rng.integers(0, 5, size=(8,))
        self.assertAllClose(
            losses.hard_cross_entropy(labels, logits),
            reference_cross_entropy(labels, logits),
            rtol=1e-5,
        )
        self.assertAllClose(
            losses.hard_cross_entropy(labels[:, None], logits),
            reference_cross_entropy(labels, logits),
            rtol=1e-5,
        )

    def test_one_hot_labels_equal_sparse(self):
        rng = np.random.default_rng(6)
        logits = rng.normal(size=(8, 5)).astype("float32")
        labels = rng.integers(0, 5, size=(8,))
        one_hot = np.eye(5, dtype="float32")[labels]
        self.assertAllClose(
            losses.hard_cross_entropy(one_hot, logits),
            reference_cross_entropy(labels, logits),
            rtol=1e-5,
        )

    def test_unlabeled_samples_give_zero_and_are_masked(self):
        logits = np.zeros((3, 4), "float32")
        labels = np.array([1, -1, 3])
        self.assertAllClose(
            losses.hard_cross_entropy(labels, logits),
            [np.log(4.0), 0.0, np.log(4.0)],
            rtol=1e-6,
        )
        self.assertAllClose(losses.label_mask(labels, 4), [1.0, 0.0, 1.0])
        one_hot = np.array([[0, 1, 0, 0], [0, 0, 0, 0]], "float32")
        self.assertAllClose(losses.label_mask(one_hot, 4), [1.0, 0.0])
