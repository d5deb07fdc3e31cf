"""On-policy batches: sampled completions, prompt masks, seeds, logs."""

import importlib

import keras
import numpy as np
import pytest
from absl.testing import parameterized

import keras_kd
from keras_kd.data import _generation
from tests.test_case import TestCase

# The module (`keras_kd.data.on_policy` is also the function's name).
on_policy_module = importlib.import_module("keras_kd.data.on_policy")

VOCAB = 12
EOS = 1


def TRAINING_TERMS():
    return [keras_kd.HardLoss(), keras_kd.terms.ReverseKL()]


def causal_lm(width, seed, vocabulary=VOCAB, causal=True):
    """Embedding -> causal self-attention -> Dense: a tiny causal LM."""
    keras.utils.set_random_seed(seed)
    ids = keras.Input((None,), dtype="int32")
    h = keras.layers.Embedding(vocabulary, width)(ids)
    h = h + keras.layers.MultiHeadAttention(2, width // 2)(
        h, h, use_causal_mask=causal)
    h = keras.layers.Dense(width, activation="tanh")(h)
    return keras.Model(ids, keras.layers.Dense(vocabulary)(h))


def prompt_data(n=6, seed=0, completion=3):
    rng = np.random.default_rng(seed)
    lengths = rng.integers(1, 5, n)
    lengths[0] = 4
    ids = np.zeros((n, 4), "int32")
    for i, length in enumerate(lengths):
        ids[i, :length] = rng.integers(2, VOCAB, length)
    mask = (np.arange(4)[None] < lengths[:, None]).astype("int32")
    comp = rng.integers(2, VOCAB, (n, completion)).astype("int32")
    comp_len = rng.integers(1, completion + 1, n)
    comp_mask = (np.arange(completion)[None] < comp_len[:, None]).astype(
        "int32")
    return ({"token_ids": ids, "padding_mask": mask},
            {"token_ids": comp * comp_mask, "padding_mask": comp_mask})


def distiller(terms=None, lr=0.1, **kwargs):
    teacher, student = causal_lm(16, 0), causal_lm(8, 1)
    if callable(terms):
        terms = terms()
    d = keras_kd.Distiller(teacher, student, temperature=2.0,
                           terms=terms or [keras_kd.terms.ReverseKL()],
                           **kwargs)
    d.compile(optimizer=keras.optimizers.SGD(lr))
    return d


def source(d, lmbda=1.0, seed=0, **kwargs):
    prompts, completions = prompt_data()
    kwargs.setdefault("max_new_tokens", 3)
    kwargs.setdefault("end_token_id", EOS)
    return keras_kd.data.on_policy(d, prompts, completions, batch_size=4,
                                   lmbda=lmbda, seed=seed, **kwargs)


def numpy_batch(batch):
    return keras.tree.map_structure(
        lambda v: np.asarray(keras.ops.convert_to_numpy(v)), batch)


def weights_of(model):
    return [np.asarray(keras.ops.convert_to_numpy(w))
            for w in model.trainable_weights]


def _log_softmax(z):
    z = z - z.max(-1, keepdims=True)
    return z - np.log(np.exp(z).sum(-1, keepdims=True))


def reference(kind, t_logits, s_logits, labels, temperature, beta=0.5):
    """NumPy float64 reverse KL / generalized JSD, `T**2`-scaled, averaged
    over the positions whose label is not -1."""
    log_p = _log_softmax(t_logits.astype("float64") / temperature)
    log_q = _log_softmax(s_logits.astype("float64") / temperature)
    p, q = np.exp(log_p), np.exp(log_q)
    if kind == "reverse_kl":
        values = (q * (log_q - log_p)).sum(-1)
    else:
        m = beta * p + (1 - beta) * q
        values = beta * (p * (log_p - np.log(m))).sum(-1) + (1 - beta) * (
            q * (log_q - np.log(m))).sum(-1)
    real = labels != -1
    return temperature ** 2 * (values * real).sum() / real.sum()


class OnPolicyLossTest(TestCase):
    @parameterized.named_parameters(
        ("reverse_kl", "reverse_kl", None),
        ("reverse_kl_chunks", "reverse_kl", 5),
        ("jsd", "jsd", None),
        ("jsd_chunks", "jsd", 5),
    )
    def test_loss_on_sampled_tokens_matches_numpy(self, kind, chunk_size):
        if kind == "reverse_kl":
            term = keras_kd.terms.ReverseKL(temperature=2.0,
                                            chunk_size=chunk_size)
        else:
            term = keras_kd.terms.GeneralizedJSD(beta=0.5, temperature=2.0,
                                                 chunk_size=chunk_size)
        d = distiller(terms=[term])
        data = source(d, lmbda=1.0, temperature=1.5)
        x, labels, weights = numpy_batch(data._prepare(data[0]))
        # The completions were sampled (not the data's) and only they count.
        self.assertTrue(data._last_stats["student"])
        np.testing.assert_array_equal(weights > 0, labels != -1)
        logs = d.evaluate(x, labels, sample_weight=weights, batch_size=4,
                          verbose=0, return_dict=True)
        t = np.asarray(keras.ops.convert_to_numpy(d.teacher(x)))
        s = np.asarray(keras.ops.convert_to_numpy(d.student(x)))
        self.assertAllClose(logs["loss"], reference(kind, t, s, labels, 2.0),
                            rtol=1e-5)

    def test_prompt_positions_change_nothing(self):
        d = distiller(terms=[keras_kd.HardLoss(),
                             keras_kd.terms.ReverseKL()], alpha=0.5)
        data = source(d, lmbda=1.0)
        x, labels, weights = numpy_batch(data._prepare(data[0]))
        t = np.asarray(keras.ops.convert_to_numpy(d.teacher(x)))
        prompt = (labels == -1)[..., None]
        noise = np.random.default_rng(0).normal(scale=5, size=t.shape)

        def loss(teacher_logits, y):
            # The label -1 masks a position (a dict target takes no
            # per-token sample weight in Keras' array adapter).
            return d.evaluate(
                x, {"labels": y, "teacher_logits": teacher_logits},
                batch_size=4, verbose=0, return_dict=True)["loss"]

        base = loss(t, labels)
        self.assertAllClose(base, d.evaluate(
            x, labels, sample_weight=weights, batch_size=4, verbose=0,
            return_dict=True)["loss"], rtol=1e-6)
        moved = loss(np.where(prompt, t + noise, t).astype("float32"),
                     labels)
        self.assertAllClose(moved, base, rtol=1e-6)
        # Can fail: counting the prompt positions gives another loss.
        counted = loss(np.where(prompt, t + noise, t).astype("float32"),
                       np.where(labels == -1, 3, labels))
        self.assertGreater(abs(counted - base), 1e-3)


class OnPolicySamplingTest(TestCase):
    def test_same_seed_same_samples(self):
        d = distiller()
        a = numpy_batch(source(d, seed=3)._prepare(source(d, seed=3)[0]))
        b = numpy_batch(source(d, seed=3)._prepare(source(d, seed=3)[0]))
        c = numpy_batch(source(d, seed=4)._prepare(source(d, seed=4)[0]))
        keras.tree.map_structure(np.testing.assert_array_equal, a, b)
        self.assertFalse(np.array_equal(a[0], c[0]))

    def test_greedy_matches_numpy_argmax(self):
        d = distiller()
        prompts, _ = prompt_data()
        out = keras_kd.data.generate(d.student, prompts, max_new_tokens=3,
                                     top_k=1)
        ids = out["token_ids"]
        for b, p in enumerate(out["prompt_length"]):
            row = list(prompts["token_ids"][b, :p])
            for _ in range(3):
                logits = keras.ops.convert_to_numpy(
                    d.student(np.array([row], "int32")))[0, -1]
                row.append(int(np.argmax(logits)))
            np.testing.assert_array_equal(ids[b, :p + 3], row)

    @parameterized.named_parameters(
        ("temperature", 0.5, None, None), ("top_k", 1.0, 3, None),
        ("top_p", 1.0, None, 0.6), ("both", 2.0, 4, 0.8))
    def test_sampler_matches_numpy_inverse_cdf(self, temperature, top_k,
                                               top_p):
        rng = np.random.default_rng(0)
        logits = rng.normal(scale=2.0, size=(64, 10)).astype("float32")
        u = rng.random(64).astype("float32")
        got = keras.ops.convert_to_numpy(_generation.sample_tokens(
            logits, u, temperature, top_k, top_p))
        # Temperature, then top-k, then top-p on what top-k kept (the
        # order of Hugging Face's logits warpers).
        z = logits.astype("float64") / temperature
        keep = np.ones_like(z, bool)
        if top_k is not None:
            keep &= z >= np.sort(z, -1)[:, -top_k][:, None]
        if top_p is not None:
            order = np.argsort(-z, -1)
            kept_z = np.where(keep, z, -np.inf)
            p = np.exp(_log_softmax(np.take_along_axis(kept_z, order, -1)))
            kept_sorted = (np.cumsum(p, -1) - p) < top_p
            kept = np.zeros_like(keep)
            np.put_along_axis(kept, order, kept_sorted, -1)
            keep &= kept
        z = np.where(keep, z, -np.inf)
        probs = np.exp(_log_softmax(z))
        expected = (np.cumsum(probs, -1) < u[:, None]).sum(-1)
        np.testing.assert_array_equal(got, np.minimum(expected, 9))
        self.assertTrue(np.all(keep[np.arange(64), got]))

    def test_end_token_ends_each_completion(self):
        d = distiller()
        # A frequent token as the end token: some rows end early.
        data = source(d, max_new_tokens=6, end_token_id=7, temperature=3.0)
        x, labels, weights = numpy_batch(data._prepare(data[0]))
        prompt_length = data[0][0]["_on_policy"]["prompt_length"]
        ended = 0
        for b, p in enumerate(prompt_length):
            row = x[b]
            completion = row[p:p + 6]
            stop = np.where(completion == 7)[0]
            n = stop[0] + 1 if len(stop) else 6
            ended += len(stop) > 0
            np.testing.assert_array_equal(row[p + n:], 0)
            np.testing.assert_array_equal(
                np.where(labels[b] != -1)[0], np.arange(p - 1, p - 1 + n))
            np.testing.assert_array_equal(labels[b, p - 1:p - 1 + n],
                                          completion[:n])
        self.assertGreater(ended, 0)

    def test_generation_uses_current_weights(self):
        d = distiller()
        data = source(d)
        before = numpy_batch(data._prepare(data[0]))[0]
        for w in d.student.trainable_weights:
            w.assign(w * 3.0 + 0.5)
        after = numpy_batch(data._prepare(data[0]))[0]
        self.assertFalse(np.array_equal(before, after))

    def test_fit_generates_with_the_weights_of_each_step(self):
        # Inside `fit` (on JAX the training state lives outside the model)
        # the second batch is sampled with the weights after step one.
        def run(steps):
            keras.backend.clear_session()
            d = distiller(lr=20.0, terms=TRAINING_TERMS, alpha=0.5)
            data = source(d, seed=1, shuffle=False)
            seen = []
            prepare = data._prepare

            def capture(batch, state=None, epoch=0, step=0):
                out = prepare(batch, state, epoch, step)
                seen.append(numpy_batch(out)[0])
                return out

            data._prepare = capture
            d.fit(data, epochs=1, steps_per_epoch=steps, verbose=0)
            return d, data, seen

        _, _, seen = run(2)
        d, data, _ = run(1)  # The same first step.
        expected = numpy_batch(data._prepare(data[1], step=1))[0]
        np.testing.assert_array_equal(seen[1], expected)
        fresh = distiller(lr=20.0, terms=TRAINING_TERMS, alpha=0.5)
        stale = source(fresh, seed=1, shuffle=False)
        old = numpy_batch(stale._prepare(stale[1], step=1))[0]
        self.assertFalse(np.array_equal(seen[1], old))

    def test_seq_kd_uses_the_teachers_completions(self):
        d = distiller()
        data = source(d, lmbda=0.0, seq_kd=True, top_k=1, shuffle=False)
        x, _, _ = numpy_batch(data._prepare(data[0]))
        prompts, _ = prompt_data()
        rows = {k: v[:4] for k, v in prompts.items()}
        out = keras_kd.data.generate(d.teacher, rows, max_new_tokens=3,
                                     top_k=1, end_token_id=EOS)
        np.testing.assert_array_equal(x[:, :out["token_ids"].shape[1]],
                                      out["token_ids"])


class OnPolicyFitTest(TestCase):
    def test_lmbda_zero_is_the_off_policy_path(self):
        d = distiller(terms=[keras_kd.HardLoss(),
                             keras_kd.terms.ReverseKL()], alpha=0.5)
        data = source(d, lmbda=0.0, shuffle=False)
        history = d.fit(data, epochs=1, verbose=0).history
        trained = weights_of(d.student)
        prompts, completions = prompt_data()
        # Today's path: prompt + completion ids, labels -1 on the prompt.
        rows = [prompts["token_ids"][i, :n] for i, n in
                enumerate(prompts["padding_mask"].sum(1))]
        comps = [completions["token_ids"][i, :n] for i, n in
                 enumerate(completions["padding_mask"].sum(1))]
        ids = np.zeros((6, 7), "int32")
        labels = np.full((6, 7), -1, "int32")
        for b, (p, c) in enumerate(zip(rows, comps)):
            ids[b, :len(p) + len(c)] = np.concatenate([p, c])
            labels[b, len(p) - 1:len(p) + len(c) - 1] = c
        keras.backend.clear_session()
        plain = distiller(terms=[keras_kd.HardLoss(),
                                 keras_kd.terms.ReverseKL()], alpha=0.5)
        reference = plain.fit(ids, labels, sample_weight=(
            labels != -1).astype("float32"), batch_size=4, shuffle=False,
            epochs=1, verbose=0).history
        self.assertAllClose(history["loss"], reference["loss"], rtol=1e-6)
        for a, b in zip(trained, weights_of(plain.student)):
            self.assertAllClose(a, b, atol=1e-7, rtol=1e-6)
        self.assertNotIn("generation_time", history)

    def test_logs_of_generation(self):
        d = distiller()
        history = d.fit(source(d, lmbda=1.0), epochs=2, verbose=0).history
        for key in on_policy_module.LOG_KEYS:
            self.assertEqual(len(history[key]), 2, msg=key)
        self.assertEqual(history["on_policy_fraction"], [1.0, 1.0])
        self.assertTrue(all(1 <= n <= 3 for n in
                            history["completion_length"]))
        self.assertTrue(all(v < 0 for v in history["teacher_log_prob"]))
        self.assertTrue(np.all(np.isfinite(history["loss"])))

    def test_compiled_metrics_count_the_completion_tokens(self):
        # Keras builds the metrics symbolically from a batch that still
        # carries the generation instructions (`Distiller.call` drops them).
        d = distiller()
        d.compile(optimizer="sgd", metrics=["sparse_categorical_accuracy"])
        history = d.fit(source(d, lmbda=0.0), epochs=1, verbose=0).history
        self.assertTrue(0.0 <= history["sparse_categorical_accuracy"][0]
                        <= 1.0)

    def test_teacher_log_prob_matches_numpy(self):
        d = distiller()
        data = source(d, lmbda=1.0)
        x, labels, _ = numpy_batch(data._prepare(data[0]))
        t = _log_softmax(np.asarray(keras.ops.convert_to_numpy(
            d.teacher(x))).astype("float64"))
        real = labels != -1
        picked = np.take_along_axis(t, np.maximum(labels, 0)[..., None],
                                    -1)[..., 0]
        stats = data._last_stats
        self.assertAllClose(stats["log_prob"] / stats["log_prob_count"],
                            (picked * real).sum() / real.sum(), rtol=1e-5)

    def test_lmbda_decides_per_batch(self):
        d = distiller()
        prompts, completions = prompt_data(n=6)
        prompts = {k: np.tile(v, (20, 1)) for k, v in prompts.items()}
        completions = {k: np.tile(v, (20, 1)) for k, v in completions.items()}
        data = keras_kd.data.on_policy(d, prompts, completions, batch_size=1,
                                       lmbda=0.3, max_new_tokens=2, seed=0)
        sources = [data.source_of(0, i, 1)[0] for i in range(len(data))]
        self.assertAllClose(np.mean(sources), 0.3, atol=0.1)
        self.assertEqual(sources, [data.source_of(0, i, 1)[0]
                                   for i in range(len(data))])
        self.assertNotEqual(sources, [data.source_of(1, i, 1)[0]
                                      for i in range(len(data))])


class OnPolicyInputsTest(TestCase):
    def test_strings_through_the_students_tokenizer(self):
        keras_hub = pytest.importorskip("keras_hub")
        from tests.hub_test import PreprocessorTest
        from tests.hub_test import causal_lm as hub_lm

        preprocessor = PreprocessorTest._preprocessor(None)
        vocabulary = preprocessor.tokenizer.vocabulary_size()
        teacher = hub_lm(1, 16, vocabulary=vocabulary, seed=1)
        student = hub_lm(1, 8, vocabulary=vocabulary, seed=2,
                         preprocessor=preprocessor)
        d = keras_kd.Distiller(teacher, student,
                               terms=[keras_kd.terms.ReverseKL()])
        d.compile(optimizer="adam")
        prompts, completions = ["the cat", "a"], [" sat", " cat at"]
        data = keras_kd.data.on_policy(d, prompts, completions, batch_size=2,
                                       lmbda=0.0, shuffle=False, seed=0)
        tok = preprocessor.tokenizer
        start, end = tok.start_token_id, tok.end_token_id

        def ids(text):
            return [int(i) for i in keras.ops.convert_to_numpy(
                tok.tokenize(text))]

        as_dict = keras_kd.data.on_policy(
            d, _pad([[start] + ids(p) for p in prompts]),
            _pad([ids(c) + [end] for c in completions]), batch_size=2,
            lmbda=0.0, shuffle=False, seed=0)
        a, b = numpy_batch(data[0]), numpy_batch(as_dict[0])
        keras.tree.map_structure(np.testing.assert_array_equal, a, b)
        self.assertEqual(data.end_token_id, end)
        self.assertIsInstance(keras_hub.models.GPT2CausalLM, type)
        history = d.fit(keras_kd.data.on_policy(
            d, prompts, completions, batch_size=2, lmbda=1.0,
            max_new_tokens=3, seed=0), epochs=1, verbose=0).history
        self.assertTrue(np.isfinite(history["loss"][0]))
        self.assertIn("teacher_log_prob", history)


def _pad(rows):
    width = max(len(r) for r in rows)
    ids = np.zeros((len(rows), width), "int32")
    for i, r in enumerate(rows):
        ids[i, :len(r)] = r
    lengths = np.array([len(r) for r in rows])
    mask = np.arange(width)[None] < lengths[:, None]
    return {"token_ids": ids, "padding_mask": mask.astype("int32")}


class OnPolicyErrorsTest(TestCase):
    @parameterized.named_parameters(
        ("lmbda_high", {"lmbda": 1.5}, ValueError, "lmbda=1.5"),
        ("lmbda_low", {"lmbda": -0.1}, ValueError, "lmbda=-0.1"),
        ("max_new_tokens", {"max_new_tokens": 0}, ValueError,
         "max_new_tokens=0"),
        ("temperature", {"temperature": 0.0}, ValueError, "temperature=0"),
        ("top_p", {"top_p": 1.5}, ValueError, "top_p=1.5"),
        ("top_k", {"top_k": 0}, ValueError, "top_k=0"),
        ("seed", {"seed": "a"}, TypeError, "seed='a'"),
        ("batch_size", {"batch_size": 0}, ValueError, "batch_size=0"),
    )
    def test_bad_arguments(self, kwargs, error, message):
        d = distiller()
        prompts, completions = prompt_data()
        kwargs = {"max_new_tokens": 3, **kwargs}
        with self.assertRaisesRegex(error, message):
            keras_kd.data.on_policy(d, prompts, completions, **kwargs)

    def test_non_causal_student_is_refused(self):
        teacher, student = causal_lm(16, 0), causal_lm(8, 1, causal=False)
        d = keras_kd.Distiller(teacher, student,
                               terms=[keras_kd.terms.ReverseKL()])
        prompts, completions = prompt_data()
        with self.assertRaisesRegex(ValueError, "is not causal"):
            keras_kd.data.on_policy(d, prompts, completions,
                                    max_new_tokens=2)

    def test_classifier_student_is_refused(self):
        from tests.conftest import make_dense_pair

        teacher, student = make_dense_pair()
        d = keras_kd.Distiller(teacher, student)
        prompts, completions = prompt_data()
        with self.assertRaisesRegex(ValueError, "language-model student"):
            keras_kd.data.on_policy(d, prompts, completions,
                                    max_new_tokens=2)

    def test_missing_completions_and_strings_without_tokenizer(self):
        d = distiller()
        prompts, _ = prompt_data()
        with self.assertRaisesRegex(ValueError, "`completions` is needed"):
            keras_kd.data.on_policy(d, prompts, lmbda=0.5, max_new_tokens=2)
        with self.assertRaisesRegex(ValueError, "has none"):
            keras_kd.data.on_policy(d, ["a b"], lmbda=1.0, max_new_tokens=2)
        with self.assertRaisesRegex(ValueError, "right-padded"):
            keras_kd.data.on_policy(
                d, {"token_ids": np.ones((1, 3), "int32"),
                    "padding_mask": np.array([[0, 1, 1]])},
                lmbda=1.0, max_new_tokens=2)
        with self.assertRaisesRegex(ValueError, "vocabulary"):
            keras_kd.data.on_policy(
                d, {"token_ids": np.full((1, 2), 99, "int32")}, lmbda=1.0,
                max_new_tokens=2)

    def test_steps_per_execution_must_be_one(self):
        d = distiller()
        d.compile(optimizer="sgd", steps_per_execution=2)
        with self.assertRaisesRegex(ValueError, "steps_per_execution"):
            d.fit(source(d), epochs=1, verbose=0)

    def test_another_distillers_batches_are_refused(self):
        d, other = distiller(), distiller()
        with self.assertRaisesRegex(ValueError, "another Distiller"):
            other.fit(source(d), epochs=1, verbose=0)


_DATA_PARALLEL = r'''
import json, os, sys
os.environ["KERAS_BACKEND"] = "jax"
os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=2"
sys.path.insert(0, sys.argv[2])
import keras
import numpy as np
from tests.data.on_policy_test import TRAINING_TERMS, distiller, numpy_batch
from tests.data.on_policy_test import source

assert len(keras.distribution.list_devices()) == 2
if sys.argv[1] == "2":
    keras.distribution.set_distribution(keras.distribution.DataParallel(
        devices=keras.distribution.list_devices()))
d = distiller(terms=TRAINING_TERMS, alpha=0.5, lr=1.0)
data = source(d, lmbda=1.0, shuffle=False)
seen = []
prepare = data._prepare

def capture(batch, state=None, epoch=0, step=0):
    out = prepare(batch, state, epoch, step)
    seen.append(numpy_batch(out)[0].tolist())
    return out

data._prepare = capture
d.fit(data, epochs=2, verbose=0)
print(json.dumps({"ids": seen, "weights": [
    np.asarray(w).tolist() for w in d.student.trainable_weights]}))
'''


@pytest.mark.slow
@pytest.mark.backends("jax")
def test_jax_data_parallel_matches_one_device():
    """1 vs 2 host devices (`DataParallel`): the same generated sequences
    and the same weights after 4 on-policy steps."""
    import json
    import os
    import subprocess
    import sys

    root = os.path.dirname(os.path.dirname(os.path.dirname(
        os.path.abspath(__file__))))
    results = []
    for devices in ("1", "2"):
        out = subprocess.run(
            [sys.executable, "-c", _DATA_PARALLEL, devices, root],
            capture_output=True, text=True, timeout=600,
            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
        assert out.returncode == 0, out.stderr[-3000:]
        results.append(json.loads(out.stdout.strip().splitlines()[-1]))
    one, two = results
    assert len(one["ids"]) == 4
    assert one["ids"] == two["ids"]
    for a, b in zip(one["weights"], two["weights"]):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
