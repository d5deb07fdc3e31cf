"""Tests of keras_kd/terms/dist.py against NumPy references."""

import os

import keras
import numpy as np
from absl.testing import parameterized

import keras_kd
from keras_kd.terms.dist import DIST
from keras_kd.terms.dist import dist
from tests.conftest import make_data
from tests.conftest import make_dense_pair
from tests.terms.dkd_test import backend_gradient
from tests.terms.dkd_test import compiled
from tests.terms.dkd_test import random
from tests.test_case import TestCase


def reference_softmax(x):
    x = x - x.max(-1, keepdims=True)
    e = np.exp(x)
    return e / e.sum(-1, keepdims=True)


def reference_pearson_rows(a, b, eps=1e-8):
    """The official `pearson_correlation`: cosine of centred rows."""
    a = a - a.mean(1, keepdims=True)
    b = b - b.mean(1, keepdims=True)
    norms = np.sqrt((a * a).sum(1)) * np.sqrt((b * b).sum(1))
    return (a * b).sum(1) / (norms + eps)


def reference_dist_parts(teacher, student, temperature):
    """Official DIST (hunto/image_classification_sota, dist_kd.py) in
    float64: per-sample inter-class part and the batch intra-class part,
    both times `tau**2`."""
    y_t = reference_softmax(np.asarray(teacher, "float64") / temperature)
    y_s = reference_softmax(np.asarray(student, "float64") / temperature)
    inter = temperature**2 * (1.0 - reference_pearson_rows(y_s, y_t))
    intra = temperature**2 * (
        1.0 - reference_pearson_rows(y_s.T, y_t.T).mean()
    )
    return inter, intra


def reference_dist(teacher, student, temperature, beta=1.0, gamma=1.0):
    """The official scalar loss: beta * inter.mean() + gamma * intra."""
    inter, intra = reference_dist_parts(teacher, student, temperature)
    return beta * inter.mean() + gamma * intra


class DISTFunctionTest(TestCase):
    @parameterized.named_parameters(
        ("t1", 1.0, 1.0, 1.0), ("t4", 4.0, 1.0, 1.0),
        ("t8", 8.0, 1.0, 1.0), ("t4_b2_g2", 4.0, 2.0, 2.0),
        ("t2_inter_only", 2.0, 1.0, 0.0), ("t2_intra_only", 2.0, 0.0, 3.0),
    )
    def test_mean_is_the_official_loss(self, temperature, beta, gamma):
        teacher = random(12, 10, scale=3.0, seed=1)
        student = random(12, 10, scale=2.0, seed=2)
        values = dist(teacher, student, temperature, beta, gamma)
        self.assertEqual(tuple(values.shape), (12,))
        self.assertEqual(keras.backend.standardize_dtype(values.dtype),
                         "float32")
        expected = reference_dist(teacher, student, temperature, beta, gamma)
        self.assertGreater(expected, 1e-2)  # a test that can fail
        self.assertAllClose(np.mean(keras.ops.convert_to_numpy(values)),
                            expected, rtol=1e-5)

    @parameterized.named_parameters(("t1", 1.0), ("t4", 4.0))
    def test_rows_are_inter_part_plus_broadcast_intra_part(self,
                                                           temperature):
        teacher = random(6, 5, scale=3.0, seed=3)
        student = random(6, 5, scale=3.0, seed=4)
        inter, intra = reference_dist_parts(teacher, student, temperature)
        self.assertGreater(inter.std(), 1e-2)
        self.assertAllClose(
            dist(teacher, student, temperature, beta=2.0, gamma=0.5),
            2.0 * inter + 0.5 * intra, rtol=1e-5, atol=1e-6,
        )

    def test_values_depend_on_the_rest_of_the_batch(self):
        teacher = random(4, 6, scale=2.0, seed=5)
        student = random(4, 6, scale=2.0, seed=6)
        changed = student.copy()
        changed[3] = random(6, scale=2.0, seed=7)
        before = keras.ops.convert_to_numpy(dist(teacher, student))
        after = keras.ops.convert_to_numpy(dist(teacher, changed))
        self.assertGreater(abs(after[0] - before[0]), 1e-4)
        self.assertAllClose(dist(teacher, student, gamma=0.0)[:3],
                            dist(teacher, changed, gamma=0.0)[:3])

    def test_identical_and_shifted_logits_give_zero(self):
        # Zero up to the official epsilon (T**2 * 1e-8 / norm**2 per part,
        # here about 1e-5) and float32 rounding of 16 * (1 - ~1).
        logits = random(8, 10, scale=3.0, seed=8)
        inter, intra = reference_dist_parts(logits, logits, 4.0)
        self.assertLess(np.abs(inter + intra).max(), 2e-5)
        for shift in (0.0, 5.0):
            values = keras.ops.convert_to_numpy(dist(logits, logits + shift))
            self.assertLess(np.abs(values).max(), 3e-5, msg=str(values))
        # A different student is far from zero.
        self.assertGreater(
            np.min(keras.ops.convert_to_numpy(dist(logits, -logits))), 1.0
        )

    def test_confident_logits_are_finite_and_exact(self):
        teacher = random(8, 10, scale=40.0, seed=9)
        student = random(8, 10, scale=80.0, seed=10)
        values = keras.ops.convert_to_numpy(dist(teacher, student, 1.0))
        self.assertTrue(np.all(np.isfinite(values)))
        self.assertAllClose(values.mean(),
                            reference_dist(teacher, student, 1.0),
                            rtol=1e-5)

    def test_uniform_student_and_single_sample_match_the_official_value(
            self):
        teacher = random(4, 5, scale=2.0, seed=11)
        uniform = np.zeros((4, 5), "float32")
        self.assertAllClose(np.mean(keras.ops.convert_to_numpy(
            dist(teacher, uniform))), reference_dist(teacher, uniform, 4.0),
            rtol=1e-6)
        # One sample: the intra-class part is the constant 1 (times T**2).
        one_t, one_s = teacher[:1], random(1, 5, seed=12)
        self.assertAllClose(dist(one_t, one_s),
                            [reference_dist(one_t, one_s, 4.0)], rtol=1e-5)
        inter, intra = reference_dist_parts(one_t, one_s, 4.0)
        self.assertAllClose(intra, 16.0)

    def test_constant_vectors_have_finite_small_gradients(self):
        teacher = random(4, 5, scale=2.0, seed=13)
        student = random(4, 5, scale=2.0, seed=14)
        student[1] = 0.0  # a uniform student row
        cases = (
            (teacher, student),
            (teacher, np.zeros_like(student)),  # zero-initialized head
            (np.zeros_like(teacher), student),  # uniform teacher
            (teacher[:1], student[:1]),  # one sample
        )
        for t, s in cases:
            grad = backend_gradient(lambda x: dist(t, x), s)
            self.assertTrue(np.all(np.isfinite(grad)), msg=str(grad))
            # No `1 / 1e-8` spikes from centred rounding noise.
            self.assertLess(np.abs(grad).max(), 1e3, msg=str(grad))

    @parameterized.named_parameters(("t1", 1.0), ("t4", 4.0))
    def test_gradient_matches_finite_differences(self, temperature):
        teacher = random(4, 5, scale=2.0, seed=15)
        student = random(4, 5, scale=2.0, seed=16)
        grad = backend_gradient(lambda s: dist(teacher, s, temperature),
                                student)
        numeric = np.zeros(student.shape)
        h = 1e-5
        for index in np.ndindex(*student.shape):
            up = student.astype("float64")
            down = student.astype("float64")
            up[index] += h
            down[index] -= h
            # The values sum to batch_size * the official loss.
            numeric[index] = len(student) * (
                reference_dist(teacher, up, temperature)
                - reference_dist(teacher, down, temperature)
            ) / (2 * h)
        self.assertGreater(np.abs(numeric).max(), 1e-2)
        self.assertAllClose(grad, numeric, rtol=1e-3, atol=1e-4)

    def test_compiled_matches_eager(self):
        teacher = random(6, 5, scale=3.0, seed=17)
        student = random(6, 5, scale=3.0, seed=18)
        student[2] = 0.0

        def fn(t, s):
            return dist(t, s, 2.0)

        jitted = compiled(fn, teacher)
        if jitted is None:
            self.skipTest("Compilation is checked on TensorFlow and JAX.")
        self.assertAllClose(jitted(teacher, student), fn(teacher, student),
                            rtol=1e-5, atol=1e-6)

    def test_rejects_bad_shapes(self):
        with self.assertRaisesRegex(
            ValueError, r"Received: student_logits.shape=\(4,\)"
        ):
            dist(np.ones((4, 3)), np.ones(4))
        with self.assertRaisesRegex(
            ValueError, r"teacher_logits.shape=\(2, 4\), "
            r"student_logits.shape=\(2, 5\)"
        ):
            dist(np.ones((2, 4)), np.ones((2, 5)))


class DISTTest(TestCase):
    def test_config(self):
        term = DIST(beta=2.0, gamma=0.5, temperature=1.0, standardize=True,
                    weight=2.0, name="dist/b2")
        revived = self.run_serialization_test(term)
        config = revived.get_config()
        self.assertEqual(
            {k: config[k] for k in ("beta", "gamma", "temperature",
                                    "standardize", "weight", "name")},
            {"beta": 2.0, "gamma": 0.5, "temperature": 1.0,
             "standardize": True, "weight": 2.0, "name": "dist/b2"},
        )
        teacher, student = random(2, 4, 6, seed=19)
        self.assertAllClose(revived(teacher, student), term(teacher, student))

    def test_defaults_and_declarations(self):
        config = DIST().get_config()
        self.assertEqual(
            (config["beta"], config["gamma"], config["temperature"],
             config["standardize"], config["weight"], config["name"]),
            (1.0, 1.0, None, False, 1.0, "dist"),
        )
        self.assertTrue(DIST.relational)
        # Added on top of the hard loss at weight 1, as the official code.
        self.assertFalse(DIST.response)
        self.assertFalse(DIST.needs_labels)
        self.assertEqual(tuple(DIST.supported_outputs), ("softmax",))
        self.assertEqual(DIST().weights, [])

    def test_term_matches_the_function(self):
        teacher, student = random(2, 6, 7, scale=3.0, seed=20)
        term = DIST(beta=2.0, gamma=3.0, temperature=4.0)
        self.assertAllClose(
            keras.ops.mean(term(teacher, student, np.arange(6))),
            reference_dist(teacher, student, 4.0, 2.0, 3.0), rtol=1e-5,
        )

    def test_shared_temperature_variable(self):
        teacher, student = random(2, 6, 7, scale=3.0, seed=21)
        term = DIST()
        self.assertAllClose(keras.ops.mean(term(teacher, student)),
                            reference_dist(teacher, student, 4.0),
                            rtol=1e-5)
        variable = keras.Variable(1.0, trainable=False, dtype="float32")
        term._attach("softmax", variable)
        self.assertAllClose(keras.ops.mean(term(teacher, student)),
                            reference_dist(teacher, student, 1.0),
                            rtol=1e-5)

    def test_standardize(self):
        teacher, student = random(2, 6, 7, scale=5.0, seed=22)

        def zscore(x):
            x = x.astype("float64")
            return (x - x.mean(-1, keepdims=True)) / (
                x.std(-1, keepdims=True) + 1e-7
            )

        term = DIST(temperature=2.0, standardize=True)
        self.assertAllClose(
            keras.ops.mean(term(teacher, student)),
            reference_dist(zscore(teacher), zscore(student), 2.0),
            rtol=1e-4,
        )

    def test_rejects_bad_arguments(self):
        with self.assertRaisesRegex(ValueError, "Received: beta=-1"):
            DIST(beta=-1)
        with self.assertRaisesRegex(ValueError, "Received: gamma=-1"):
            DIST(gamma=-1)
        with self.assertRaisesRegex(TypeError, "Received: gamma=None"):
            DIST(gamma=None)
        with self.assertRaisesRegex(ValueError, "Received: temperature=-4"):
            DIST(temperature=-4)
        with self.assertRaisesRegex(ValueError, "Received: outputs='sigmoid'"):
            DIST()._attach("sigmoid", None)


class DISTDistillerTest(TestCase):
    def test_fit_evaluates_the_batch_loss_saves_and_reloads(self):
        teacher, student = make_dense_pair()
        x, y = make_data(32)
        d = keras_kd.Distiller(
            teacher, student,
            terms=[keras_kd.HardLoss(), DIST(temperature=4.0)])
        d.compile(optimizer="adam")
        history = d.fit(x, y, epochs=1, batch_size=8, verbose=0)
        self.assertTrue(np.all(np.isfinite(history.history["dist"])))
        logs = d.evaluate(x, y, batch_size=32, verbose=0, return_dict=True)
        t = keras.ops.convert_to_numpy(teacher(x))
        s = keras.ops.convert_to_numpy(student(x))
        self.assertAllClose(logs["dist"], reference_dist(t, s, 4.0),
                            rtol=1e-4)
        path = os.path.join(self.get_temp_dir(), "dist.keras")
        d.save(path)
        loaded = keras_kd.load_distiller(path, teacher=teacher)
        self.assertIsInstance(loaded.terms[1], DIST)
        reloaded = loaded.evaluate(x, y, batch_size=32, verbose=0,
                                   return_dict=True)
        self.assertAllClose(reloaded["dist"], logs["dist"], rtol=1e-5)

    def test_relational_declaration_refuses_single_sample_batches(self):
        teacher, student = make_dense_pair()
        x, y = make_data(8)
        d = keras_kd.Distiller(teacher, student,
                               terms=[keras_kd.HardLoss(), DIST()])
        d.compile(optimizer="adam")
        with self.assertRaisesRegex(ValueError, "Received: batch_size=1"):
            d.fit(x, y, batch_size=1, verbose=0)
