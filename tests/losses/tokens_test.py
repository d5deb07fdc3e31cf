"""Tests of keras_kd/losses/tokens.py against NumPy references."""

import keras
import numpy as np
import pytest
from absl.testing import parameterized

from keras_kd import losses
from keras_kd.losses import tokens
from tests.terms.dkd_test import compiled
from tests.test_case import TestCase
from tests.test_case import gradient


def reference_softmax(x):
    x = np.asarray(x, "float64")
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def reference_kl(a, b):
    """KL(a || b) over the last axis, from probabilities, in float64."""
    ratio = np.where(a > 0, a / np.where(b > 0, b, 1.0), 1.0)
    return np.sum(np.where(a > 0, a * np.log(ratio), 0.0), axis=-1)


def reference(kind, teacher, student, temperature=1.0, scale=True,
              coefficient=None):
    """Each divergence written from its paper, one position at a time."""
    p = reference_softmax(np.asarray(teacher, "float64") / temperature)
    q = reference_softmax(np.asarray(student, "float64") / temperature)
    if kind == "forward":
        value = reference_kl(p, q)
    elif kind == "reverse":
        value = reference_kl(q, p)
    elif kind == "jsd":
        beta = coefficient
        if beta == 0.0:  # TRL's special cases
            value = reference_kl(p, q)
        elif beta == 1.0:
            value = reference_kl(q, p)
        else:
            m = beta * p + (1 - beta) * q
            value = beta * reference_kl(p, m) + (1 - beta) * reference_kl(
                q, m)
    elif kind == "skew":
        value = reference_kl(p, coefficient * p + (1 - coefficient) * q)
    elif kind == "skew_reverse":
        value = reference_kl(q, (1 - coefficient) * p + coefficient * q)
    return value * (temperature**2 if scale else 1.0)


def function(kind, coefficient=None):
    """The keras_kd function of `kind`, with its coefficient bound."""
    if kind == "forward":
        return tokens.forward_kl_divergence
    if kind == "reverse":
        return tokens.reverse_kl_divergence
    if kind == "jsd":
        return lambda t, s, **kw: tokens.generalized_js_divergence(
            t, s, beta=coefficient, **kw)
    if kind == "skew":
        return lambda t, s, **kw: tokens.skew_kl_divergence(
            t, s, skew=coefficient, **kw)
    return lambda t, s, **kw: tokens.skew_reverse_kl_divergence(
        t, s, skew=coefficient, **kw)


def random(*shape, scale=3.0, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(scale=scale, size=shape).astype("float32")


KINDS = (
    ("forward", "forward", None),
    ("reverse", "reverse", None),
    ("jsd_half", "jsd", 0.5),
    ("jsd_0_9", "jsd", 0.9),
    ("jsd_0", "jsd", 0.0),
    ("jsd_1", "jsd", 1.0),
    ("skew", "skew", 0.1),
    ("skew_0_5", "skew", 0.5),
    ("skew_reverse", "skew_reverse", 0.1),
)

# One case per code path (the JSD ends run the KL paths), for the slower
# gradient tests.
PATHS = tuple(case for case in KINDS if case[0] in (
    "forward", "reverse", "jsd_0_9", "skew", "skew_reverse"))


class TokenDivergenceTest(TestCase):
    @parameterized.named_parameters(*KINDS)
    def test_matches_reference_per_position(self, kind, coefficient):
        fn = function(kind, coefficient)
        for shape, temperature, scale in (((6, 11), 1.0, True),
                                          ((3, 5, 11), 2.5, True),
                                          ((2, 3, 4, 7), 4.0, False)):
            teacher = random(*shape, seed=1)
            student = random(*shape, seed=2)
            values = fn(teacher, student, temperature=temperature,
                        scale_by_temperature_squared=scale)
            self.assertEqual(tuple(values.shape), shape[:-1])
            self.assertEqual(
                keras.backend.standardize_dtype(values.dtype), "float32")
            expected = reference(kind, teacher, student, temperature, scale,
                                 coefficient)
            self.assertGreater(expected.min(), 1e-3)  # a test that can fail
            self.assertAllClose(values, expected, rtol=1e-5, atol=1e-6)

    @parameterized.named_parameters(*PATHS)
    def test_large_logits_are_finite_and_exact(self, kind, coefficient):
        # Magnitude 100 at T=1: most probabilities underflow to 0 in float32.
        teacher = random(4, 3, 9, scale=100.0, seed=3)
        student = random(4, 3, 9, scale=100.0, seed=4)
        fn = function(kind, coefficient)
        values = fn(teacher, student, temperature=1.0)
        self.assertTrue(np.all(np.isfinite(
            keras.ops.convert_to_numpy(values))))
        expected = reference(kind, teacher, student, 1.0, True, coefficient)
        self.assertAllClose(values, expected, rtol=1e-4, atol=1e-3)
        for chunk_size in (None, 5):
            for grad in (
                gradient(lambda s: fn(teacher, s, chunk_size=chunk_size),
                         student),
                gradient(lambda t: fn(t, student, chunk_size=chunk_size),
                         teacher),
            ):
                self.assertTrue(np.all(np.isfinite(grad)), chunk_size)

    @parameterized.named_parameters(*KINDS)
    def test_identical_and_shifted_logits_give_zero(self, kind, coefficient):
        teacher = random(3, 4, 6, seed=5)
        values = function(kind, coefficient)(teacher, teacher + 7.0,
                                             temperature=2.0)
        self.assertAllClose(values, np.zeros((3, 4)), atol=1e-5)

    def test_jsd_ends_are_forward_and_reverse_kl(self):
        teacher, student = random(5, 8, seed=6), random(5, 8, seed=7)
        forward = reference("forward", teacher, student, 2.0)
        reverse = reference("reverse", teacher, student, 2.0)
        self.assertGreater(np.abs(forward - reverse).max(), 1e-2)
        self.assertAllClose(tokens.generalized_js_divergence(
            teacher, student, beta=0.0, temperature=2.0), forward, rtol=1e-5)
        self.assertAllClose(tokens.generalized_js_divergence(
            teacher, student, beta=1.0, temperature=2.0), reverse, rtol=1e-5)
        # Between the ends the formula itself vanishes like beta * KL(p||q)
        # and (1 - beta) * KL(q||p): the special cases are limits of
        # direction, not of value.
        self.assertAllClose(tokens.generalized_js_divergence(
            teacher, student, beta=1e-4, temperature=2.0) / 1e-4, forward,
            rtol=2e-2)
        self.assertAllClose(tokens.generalized_js_divergence(
            teacher, student, beta=1 - 1e-4, temperature=2.0) / 1e-4,
            reverse, rtol=2e-2)

    def test_skew_zero_is_plain_kl(self):
        teacher, student = random(5, 8, seed=8), random(5, 8, seed=9)
        self.assertAllClose(
            tokens.skew_kl_divergence(teacher, student, skew=0.0),
            reference("forward", teacher, student), rtol=1e-5)
        self.assertAllClose(
            tokens.skew_reverse_kl_divergence(teacher, student, skew=0.0),
            reference("reverse", teacher, student), rtol=1e-5)

    def test_skew_kl_is_distillm_cross_entropy_minus_teacher_entropy(self):
        # DistiLLM's `skewed_forward_kl` returns -sum(p * log m).
        teacher, student = random(4, 6, seed=10), random(4, 6, seed=11)
        p, q = reference_softmax(teacher), reference_softmax(student)
        m = 0.1 * p + 0.9 * q
        cross_entropy = -np.sum(p * np.log(m), -1)
        entropy = -np.sum(p * np.log(p), -1)
        self.assertAllClose(tokens.skew_kl_divergence(teacher, student),
                            cross_entropy - entropy, rtol=1e-5)

    def test_forward_kl_is_soft_target_kl(self):
        teacher, student = random(6, 10, seed=12), random(6, 10, seed=13)
        self.assertAllEqual(
            tokens.forward_kl_divergence(teacher, student, 4.0),
            losses.soft_target_kl(teacher, student, 4.0))

    @parameterized.named_parameters(*PATHS)
    def test_chunked_equals_unchunked(self, kind, coefficient):
        fn = function(kind, coefficient)
        teacher = random(3, 5, 13, seed=14)
        student = random(3, 5, 13, seed=15)
        # 15 positions: chunks of 4 (the last one moved back), or one.
        for chunk_size in (4, 15):
            kwargs = dict(temperature=2.0)
            self.assertAllClose(
                fn(teacher, student, chunk_size=chunk_size, **kwargs),
                fn(teacher, student, **kwargs), atol=1e-5, rtol=0)
            for wrt in ("teacher", "student"):
                def loss(x, chunk):
                    pair = (x, student) if wrt == "teacher" else (teacher, x)
                    return fn(*pair, chunk_size=chunk, **kwargs)

                x = teacher if wrt == "teacher" else student
                self.assertAllClose(
                    gradient(lambda v: loss(v, chunk_size), x),
                    gradient(lambda v: loss(v, None), x), atol=1e-5, rtol=0,
                    msg=f"{wrt}, chunk_size={chunk_size}")

    @pytest.mark.backends("tensorflow", "jax")
    def test_chunked_compiles_with_unknown_batch(self):
        teacher = random(4, 6, 9, seed=16)
        student = random(4, 6, 9, seed=17)
        fn = compiled(
            lambda t, s: tokens.generalized_js_divergence(
                t, s, beta=0.3, temperature=2.0, chunk_size=5),
            teacher)
        self.assertAllClose(
            fn(teacher, student),
            reference("jsd", teacher, student, 2.0, True, 0.3),
            rtol=1e-5, atol=1e-6)
        self.assertAllClose(
            gradient(lambda s: tokens.skew_kl_divergence(
                teacher, s, chunk_size=7), student, compiled=True),
            gradient(lambda s: tokens.skew_kl_divergence(teacher, s),
                     student), atol=1e-5, rtol=0)

    def test_chunked_scaled_upstream(self):
        # A non-uniform upstream gradient (sample weights) reaches each row.
        teacher, student = random(10, 7, seed=18), random(10, 7, seed=19)
        weights = np.linspace(0.0, 2.0, 10).astype("float32")

        def loss(s, chunk):
            return keras.ops.multiply(tokens.reverse_kl_divergence(
                teacher, s, temperature=3.0, chunk_size=chunk), weights)

        self.assertAllClose(gradient(lambda s: loss(s, 3), student),
                            gradient(lambda s: loss(s, None), student),
                            atol=1e-5, rtol=0)

    def test_half_precision_inputs_compute_in_float32(self):
        teacher = random(4, 8, seed=20).astype("float16")
        student = random(4, 8, seed=21).astype("float16")
        values = tokens.skew_reverse_kl_divergence(teacher, student)
        self.assertEqual(keras.backend.standardize_dtype(values.dtype),
                         "float32")
        self.assertAllClose(
            values, reference("skew_reverse", teacher, student, 1.0, True,
                              0.1), rtol=1e-5, atol=1e-6)

    def test_rejects_bad_arguments(self):
        t = np.zeros((2, 3), "float32")
        with self.assertRaisesRegex(ValueError, r"Received: beta=1\.5"):
            tokens.generalized_js_divergence(t, t, beta=1.5)
        with self.assertRaisesRegex(ValueError, r"\[0, 1\).*skew=1\.0"):
            tokens.skew_kl_divergence(t, t, skew=1.0)
        with self.assertRaisesRegex(ValueError, "Received: chunk_size=0"):
            tokens.reverse_kl_divergence(t, t, chunk_size=0)
        with self.assertRaisesRegex(TypeError, "chunk_size=2.5"):
            tokens.reverse_kl_divergence(t, t, chunk_size=2.5)
        with self.assertRaisesRegex(ValueError, r"student_logits.shape=\(2, "
                                    r"4\)"):
            tokens.reverse_kl_divergence(t, np.zeros((2, 4), "float32"))


class TokenLossTest(TestCase):
    @parameterized.named_parameters(
        ("reverse", losses.ReverseKLDivergence, {"temperature": 2.0}),
        ("jsd", losses.GeneralizedJSDivergence,
         {"beta": 0.9, "chunk_size": 8}),
        ("skew", losses.SkewKLDivergence, {"skew": 0.2}),
        ("skew_reverse", losses.SkewReverseKLDivergence,
         {"scale_by_temperature_squared": False}),
    )
    def test_config(self, cls, kwargs):
        revived = self.run_serialization_test(cls(**kwargs))
        for key, value in kwargs.items():
            self.assertEqual(getattr(revived, key), value)

    @parameterized.named_parameters(
        ("reverse", "reverse_kl", "reverse", None),
        ("jsd", "jsd", "jsd", 0.5),
        ("skew", "skew_kl", "skew", 0.1),
        ("skew_reverse", "skew_reverse_kl", "skew_reverse", 0.1),
    )
    def test_id_gives_the_mean_over_positions(self, name, kind, coefficient):
        teacher = random(2, 3, 6, seed=22)
        student = random(2, 3, 6, seed=23)
        loss = losses.get(name, temperature=2.0)
        self.assertIsInstance(loss, keras.losses.Loss)
        expected = reference(kind, teacher, student, 2.0, True, coefficient)
        self.assertAllClose(loss(teacher, student), expected.mean(),
                            rtol=1e-5)

    def test_forward_kl_id_is_soft_target_kl(self):
        self.assertIsInstance(losses.get("forward_kl"), losses.SoftTargetKL)

    def test_rejects_bad_arguments(self):
        with self.assertRaisesRegex(ValueError, "Received: temperature=0"):
            losses.ReverseKLDivergence(temperature=0)
        with self.assertRaisesRegex(ValueError, r"Received: beta=-0\.1"):
            losses.GeneralizedJSDivergence(beta=-0.1)
        with self.assertRaisesRegex(ValueError, "skew=1.0"):
            losses.SkewKLDivergence(skew=1)
        with self.assertRaisesRegex(ValueError, "Received: chunk_size=0"):
            losses.SkewReverseKLDivergence(chunk_size=0)
