"""The fused path against the unfused one: same values and gradients."""

import keras
import numpy as np
import pytest
from absl.testing import parameterized

import keras_kd
from keras_kd import fused
from keras_kd.losses import tokens
from tests.test_case import TestCase

keras_hub = pytest.importorskip("keras_hub")

from tests.hub_test import causal_lm  # noqa: E402
from tests.hub_test import token_batch  # noqa: E402


def _grads(fn, args):
    """Gradients of sum(fn(*args)) w.r.t. every arg, with the backend."""
    backend = keras.backend.backend()
    args = [np.asarray(a, "float32") for a in args]
    if backend == "jax":
        import jax

        return jax.grad(lambda *a: keras.ops.sum(fn(*a)),
                        argnums=tuple(range(len(args))))(*args)
    if backend == "tensorflow":
        import tensorflow as tf

        values = [tf.constant(a) for a in args]
        with tf.GradientTape() as tape:
            tape.watch(values)
            total = tf.reduce_sum(fn(*values))
        return tape.gradient(total, values)
    import torch

    values = [torch.tensor(a, requires_grad=True) for a in args]
    torch.sum(fn(*values)).backward()
    return [v.grad for v in values]


def _weights(distiller, teacher=None):
    return [keras.ops.convert_to_numpy(v)
            for v in distiller.student.trainable_weights]


class FusedTokenLossTest(TestCase):
    @parameterized.named_parameters(
        ("forward", "forward_kl", 0.5, 1.0, False, False),
        ("reverse_t2", "reverse_kl", 0.5, 2.0, True, False),
        ("jsd_tied", "jsd", 0.3, 1.5, True, True),
        ("skew", "skew_kl", 0.5, 1.0, False, True),
    )
    def test_values_and_gradients_match_unfused(self, kind, beta, temperature,
                                                transposed, bias):
        rng = np.random.default_rng(0)
        n, width, vocab = 15, 6, 11  # 15 rows, chunks of 4: a partial one
        hidden = rng.normal(size=(3, 5, width)).astype("float32")
        kernel = rng.normal(size=(vocab, width) if transposed else (
            width, vocab)).astype("float32")
        b = rng.normal(size=(vocab,)).astype("float32")
        teacher = rng.normal(scale=3.0, size=(3, 5, vocab)).astype("float32")
        spec = fused._SPECS[kind](beta if kind == "jsd" else 0.1)
        weights = keras.ops.convert_to_tensor(
            rng.uniform(size=(3, 5)).astype("float32"))
        del n

        def unfused(h, k, bb):
            z = keras.ops.matmul(h, keras.ops.transpose(k) if transposed
                                 else k)
            if bias:
                z = z + bb
            return tokens._divergence(spec, teacher, z, temperature, True,
                                      None, kind) * weights

        def fast(h, k, bb):
            return fused.fused_token_loss(
                h, k, bias=bb if bias else None, teacher_logits=teacher,
                spec=spec, temperature=temperature, transposed=transposed,
                chunk_size=4) * weights

        self.assertAllClose(fast(hidden, kernel, b),
                            unfused(hidden, kernel, b), rtol=1e-5, atol=1e-6)
        for g_fast, g_ref in zip(_grads(fast, (hidden, kernel, b)),
                                 _grads(unfused, (hidden, kernel, b))):
            if g_ref is None:
                continue
            self.assertAllClose(g_fast, g_ref, rtol=1e-5, atol=1e-6)

    def test_cross_entropy_matches_unfused(self):
        rng = np.random.default_rng(1)
        hidden = rng.normal(size=(2, 7, 5)).astype("float32")
        kernel = rng.normal(size=(5, 9)).astype("float32")
        labels = rng.integers(0, 9, size=(2, 7))
        labels[0, :2] = -1  # ignored positions

        def reference(h, k):
            z = keras.ops.log_softmax(keras.ops.matmul(h, k), axis=-1)
            one_hot = keras.ops.one_hot(np.maximum(labels, 0), 9)
            valid = keras.ops.convert_to_tensor((labels >= 0).astype(
                "float32"))
            return -keras.ops.sum(one_hot * z, axis=-1) * valid

        def fast(h, k):
            return fused.fused_token_loss(h, k, labels=labels, chunk_size=3)

        self.assertAllClose(fast(hidden, kernel), reference(hidden, kernel),
                            rtol=1e-5, atol=1e-6)
        for a, b in zip(_grads(fast, (hidden, kernel)),
                        _grads(reference, (hidden, kernel))):
            self.assertAllClose(a, b, rtol=1e-5, atol=1e-6)


class FusedStudentTest(TestCase):
    def _pair(self, fused_student):
        teacher = causal_lm(2, 16, seed=1)
        student = causal_lm(1, 16, seed=2)
        if fused_student:
            student = fused.FusedStudent(student, chunk_size=7)
            terms = [fused.FusedHardLoss(),
                     fused.FusedDivergence("jsd", beta=0.5)]
        else:
            terms = [keras_kd.HardLoss(),
                     keras_kd.GeneralizedJSD(beta=0.5, name="soft_loss")]
        d = keras_kd.Distiller(teacher, student, alpha=0.3,
                               temperature=2.0, terms=terms)
        d.compile(optimizer=keras.optimizers.SGD(1.0))
        return d

    def test_same_loss_and_step_as_unfused(self):
        x, y, w = token_batch()
        results = []
        for fused_student in (False, True):
            d = self._pair(fused_student)
            logs = d.evaluate(x, y, sample_weight=w, verbose=0,
                              return_dict=True)
            d.fit(x, y, sample_weight=w, batch_size=6, epochs=1,
                  shuffle=False, verbose=0)
            results.append((logs, _weights(d)))
        (logs_a, w_a), (logs_b, w_b) = results
        for key in ("loss", "hard_loss", "soft_loss", "teacher_agreement"):
            self.assertAllClose(logs_b[key], logs_a[key], rtol=1e-5,
                                msg=key)
        self.assertEqual(len(w_a), len(w_b))
        for a, b in zip(w_a, w_b):
            self.assertAllClose(b, a, rtol=1e-5, atol=1e-6)

    def test_head_logits_and_config(self):
        model = causal_lm(1, 16, seed=2)
        student = fused.FusedStudent(model, chunk_size=5)
        x, _, _ = token_batch()
        self.assertAllClose(student.logits(student(x)), model(x),
                            rtol=1e-5, atol=1e-5)
        self.assertEqual(student.vocabulary_size, 40)
        revived = keras.saving.deserialize_keras_object(
            keras.saving.serialize_keras_object(student))
        self.assertEqual(revived.chunk_size, 5)
        self.assertIsInstance(revived.model, keras_hub.models.GPT2CausalLM)

    def test_dense_head(self):
        inputs = keras.Input((4, 3))
        hidden = keras.layers.Dense(5, activation="tanh")(inputs)
        model = keras.Model(inputs, keras.layers.Dense(7)(hidden))
        student = fused.FusedStudent(model, chunk_size=3)
        self.assertEqual(tuple(student(np.zeros((2, 4, 3))).shape),
                         (2, 4, 5))

    def test_refusals(self):
        teacher = causal_lm(1, 8, seed=1)
        student = fused.FusedStudent(causal_lm(1, 8, seed=2))
        with self.assertRaisesRegex(ValueError, "must be fused"):
            keras_kd.Distiller(teacher, student)
        with self.assertRaisesRegex(ValueError, "needs a student wrapped"):
            keras_kd.Distiller(teacher, causal_lm(1, 8, seed=2),
                               terms=[fused.FusedDivergence()])
        wide = fused.FusedStudent(causal_lm(1, 8, vocabulary=32, seed=2))
        with self.assertRaisesRegex(ValueError, "share one vocabulary"):
            keras_kd.Distiller(teacher, wide,
                               terms=[fused.FusedDivergence()])
        d = keras_kd.Distiller(teacher, student,
                               terms=[fused.FusedDivergence()])
        with self.assertRaisesRegex(ValueError, "compiled metrics"):
            d.compile(optimizer="sgd", metrics=["accuracy"])
        inputs = keras.Input((3,))
        softmax = keras.Model(inputs, keras.layers.Dense(
            4, activation="softmax")(inputs))
        with self.assertRaisesRegex(ValueError, "without activation"):
            fused.FusedStudent(softmax)
