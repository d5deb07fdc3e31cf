"""Tests of keras_kd/data/topk.py (top-k teacher caches)."""

import os

import keras
import numpy as np

import keras_kd
from keras_kd.data import TeacherOutputCache
from keras_kd.data import cache_teacher_outputs
from keras_kd.data import topk
from tests.conftest import make_conv_pair
from tests.conftest import make_data
from tests.conftest import make_dense_pair
from tests.test_case import TestCase

VOCAB = 50
SEQ = 6
# float16 keeps 11 significant bits: a rounding error of at most |x| * 2**-11.
F16 = dict(rtol=2.0**-11, atol=1e-5)


def log_softmax(logits):
    """NumPy reference in float64, written independently of keras_kd."""
    z = np.asarray(logits, "float64")
    z = z - z.max(-1, keepdims=True)
    return z - np.log(np.exp(z).sum(-1, keepdims=True))


def reference_top_k(logits, k):
    """Top-k log-probabilities, indices and log of the rest (NumPy)."""
    lp = log_softmax(logits)
    idx = np.argsort(-lp, axis=-1, kind="stable")[..., :k]
    values = np.take_along_axis(lp, idx, axis=-1)
    mask = np.ones(lp.shape, bool)
    np.put_along_axis(mask, idx, False, axis=-1)
    rest = np.log(np.where(mask, np.exp(lp), 0.0).sum(-1))
    return values, idx, rest


def make_lm(vocab=VOCAB, seq=SEQ, scale=3.0):
    """A tiny token model: `(n, seq)` ids to `(n, seq, vocab)` logits."""
    keras.utils.set_random_seed(0)
    return keras.Sequential([
        keras.Input((seq,), dtype="int32"),
        keras.layers.Embedding(vocab, 8),
        keras.layers.Dense(vocab, kernel_initializer=keras.initializers.
                           RandomNormal(stddev=scale)),
    ])


def tokens(n=20, vocab=VOCAB, seq=SEQ, seed=0):
    return np.random.default_rng(seed).integers(0, vocab, (n, seq)).astype(
        "int32")


def read_folder(path):
    contents = {}
    for name in os.listdir(path):
        with open(os.path.join(path, name), "rb") as f:
            contents[name] = f.read()
    return contents


class FailingBatches:
    """Batches of `x` whose second pass fails after its first batch."""

    def __init__(self, x, batch_size):
        self.x, self.batch_size, self.passes = x, batch_size, 0

    def __iter__(self):
        self.passes += 1
        for i, start in enumerate(range(0, len(self.x), self.batch_size)):
            if self.passes == 2 and i == 1:
                raise RuntimeError("the data source failed")
            yield self.x[start:start + self.batch_size]


class Identity(keras.Model):
    """A teacher that outputs its input: the logits are the data."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.calls = 0

    def call(self, x):
        self.calls += 1  # Counts traces: 0 means it never ran.
        return x


class TopKCacheTest(TestCase):
    def setUp(self):
        super().setUp()
        self.teacher = make_lm()
        self.x = tokens()
        self.logits = self.teacher.predict(self.x, verbose=0)

    def cache(self, k=5, **kwargs):
        kwargs.setdefault("verbose", 0)
        kwargs.setdefault("batch_size", 7)
        return cache_teacher_outputs(self.teacher, self.x, top_k=k, **kwargs)

    def test_round_trip_in_memory_and_on_disk(self):
        values, idx, rest = reference_top_k(self.logits, 5)
        path = os.path.join(self.get_temp_dir(), "cache")
        for cache in (self.cache(), self.cache(path=path),
                      TeacherOutputCache.load(path)):
            self.assertEqual((len(cache), cache.top_k, cache.num_classes),
                             (20, 5, VOCAB))
            self.assertEqual(cache.values.dtype, np.float16)
            self.assertEqual(cache.indices.dtype, np.uint16)
            self.assertEqual(cache.tail_log_mass.dtype, np.float32)
            self.assertAllEqual(cache.indices, idx)
            self.assertAllClose(cache.values, values, **F16)
            self.assertAllClose(cache.tail_log_mass, rest, rtol=1e-5)
        self.assertIsInstance(cache.values, np.memmap)
        self.assertEqual(
            sorted(os.listdir(path)),
            ["keras_kd_cache.json", "tail_log_mass.npy", "top_k_indices.npy",
             "top_k_values.npy"])

    def test_large_vocabulary_uses_int32_indices(self):
        self.assertEqual(topk.index_dtype(65535), np.uint16)
        self.assertEqual(topk.index_dtype(65536), np.int32)
        logits = np.random.default_rng(1).normal(size=(2, 70000)).astype(
            "float32")
        cache = cache_teacher_outputs(Identity(), logits, top_k=3,
                                      verbose=0)
        self.assertEqual(cache.indices.dtype, np.int32)
        self.assertAllEqual(cache.indices, reference_top_k(logits, 3)[1])

    def test_densified_softmax_gives_the_stored_probabilities(self):
        cache = self.cache(k=5)
        dense = keras.ops.convert_to_numpy(topk.densify_top_k(
            cache.values, cache.indices, cache.tail_log_mass, VOCAB))
        self.assertEqual(dense.shape, (20, SEQ, VOCAB))
        self.assertEqual(dense.dtype, np.float32)
        p = np.exp(log_softmax(dense))
        self.assertAllClose(p.sum(-1), 1.0, atol=1e-6)
        kept = np.take_along_axis(p, cache.indices.astype("int64"), -1)
        stored = np.exp(cache.values.astype("float64"))
        tail = np.exp(cache.tail_log_mass.astype("float64"))
        total = stored.sum(-1) + tail
        # Exactly the stored probabilities, normalised over what is stored;
        # the normaliser differs from 1 by float16 rounding only.
        self.assertAllClose(kept, stored / total[..., None], rtol=1e-5)
        self.assertAllClose(total, 1.0, atol=1e-3)
        self.assertAllClose(kept, np.exp(reference_top_k(self.logits, 5)[0]),
                            rtol=2e-3)
        # The remaining mass, spread uniformly over the other entries.
        rest = p.sum(-1) - kept.sum(-1)
        self.assertAllClose(rest, tail / total, rtol=1e-4)
        mask = np.ones(p.shape, bool)
        np.put_along_axis(mask, cache.indices.astype("int64"), False, -1)
        others = p[mask].reshape(20, SEQ, VOCAB - 5)
        self.assertAllClose(others, np.broadcast_to(others[..., :1],
                                                    others.shape), rtol=1e-6)

    def test_tail_mass_stays_right_when_the_top_k_hold_nearly_all(self):
        # Very peaked rows: 1 - sum(exp(float16 top-k)) is mostly rounding.
        logits = np.zeros((4, VOCAB))
        logits[:, 0] = [12.0, 15.0, 18.0, 30.0]
        logits[:, 1:4] = 3.0
        values, indices, tail = (keras.ops.convert_to_numpy(v) for v in
                                 topk.top_k_log_probs(logits, 4))
        expected = reference_top_k(logits, 4)[2]
        self.assertAllClose(tail, expected, rtol=1e-5)
        naive = np.log(np.maximum(1 - np.exp(
            values.astype("float64")).sum(-1), 1e-300))
        self.assertGreater(np.abs(naive - expected).max(), 1.0)

    def test_densify_in_the_pipeline_equals_keras_ops(self):
        cache = self.cache(k=7)
        in_ops = topk.densify_top_k(cache.values, cache.indices,
                                    cache.tail_log_mass, VOCAB)
        in_tf = topk._densify_tf(cache.values, cache.indices,
                                 cache.tail_log_mass, VOCAB)
        self.assertAllEqual(in_ops, np.asarray(in_tf))

    def test_full_vocabulary_reproduces_the_dense_logits(self):
        dense = cache_teacher_outputs(self.teacher, self.x, verbose=0)
        cache = self.cache(k=VOCAB)
        rebuilt = keras.ops.convert_to_numpy(topk.densify_top_k(
            cache.values, cache.indices, cache.tail_log_mass, VOCAB))
        shift = np.asarray(dense.logits, "float64") - rebuilt
        # Equal up to one constant per position (the log-normaliser).
        self.assertAllClose(shift, np.broadcast_to(shift[..., :1],
                                                   shift.shape), atol=4e-3)
        self.assertAllClose(rebuilt, log_softmax(dense.logits), **F16)

    def test_classifier_outputs_work(self):
        teacher, _ = make_dense_pair()
        x, _ = make_data(30)
        cache = cache_teacher_outputs(teacher, x, top_k=3, verbose=0)
        values, idx, rest = reference_top_k(teacher.predict(x, verbose=0), 3)
        self.assertEqual(cache.tail_log_mass.shape, (30,))
        self.assertAllEqual(cache.indices, idx)
        self.assertAllClose(cache.values, values, **F16)

    def test_other_inputs_are_refused(self):
        cache = self.cache()
        other = self.x.copy()
        other[3, 2] += 1
        with self.assertRaisesRegex(ValueError, "fingerprint"):
            cache.dataset(other)
        with self.assertRaisesRegex(ValueError, "number of samples"):
            cache.dataset(self.x[:10])
        with self.assertRaisesRegex(ValueError, "number of labels"):
            cache.dataset(self.x, self.x[:5])

    def test_damaged_files_are_named(self):
        path = os.path.join(self.get_temp_dir(), "cache")
        self.cache(path=path)
        values = os.path.join(path, topk.VALUES)
        with open(values, "r+b") as f:
            f.seek(-3, os.SEEK_END)
            f.write(b"\x00\x7f\x01")
        with self.assertRaisesRegex(ValueError, f"{values!r} was modified"):
            TeacherOutputCache.load(path)
        tail = os.path.join(path, topk.TAIL)
        with open(tail, "r+b") as f:
            f.truncate(os.path.getsize(tail) - 8)
        with self.assertRaisesRegex(ValueError, f"{tail!r} is truncated"):
            topk.TopKTeacherCache.load(path, verify=False)
        meta = os.path.join(path, "keras_kd_cache.json")
        with open(meta, "w") as f:
            f.write('{"keras_kd_format": "teacher_top_k_cache"')
        with self.assertRaisesRegex(ValueError, "keras_kd_cache.json.*not "
                                    "valid JSON"):
            topk.TopKTeacherCache.load(path)

    def test_bad_k_is_refused_before_the_teacher_runs(self):
        teacher = Identity()
        x = np.random.default_rng(0).normal(size=(8, 3, 10)).astype(
            "float32")
        for k, error, text in ((0, ValueError, "Received: top_k=0"),
                               (-2, ValueError, "Received: top_k=-2"),
                               (2.5, TypeError, "top_k=2.5"),
                               (True, TypeError, "top_k=True"),
                               ("4", TypeError, "top_k='4'")):
            with self.assertRaisesRegex(error, text):
                cache_teacher_outputs(teacher, x, top_k=k, verbose=0)
        with self.assertRaisesRegex(ValueError, r"at most the vocabulary "
                                    r"size.*\b50\b.*Received: top_k=51"):
            cache_teacher_outputs(self.teacher, self.x, top_k=51, verbose=0)
        self.assertEqual(teacher.calls, 0)
        # A subclassed teacher's vocabulary is known at its first batch.
        path = os.path.join(self.get_temp_dir(), "cache")
        with self.assertRaisesRegex(ValueError, "Received: top_k=11"):
            cache_teacher_outputs(teacher, x, top_k=11, path=path, verbose=0)
        self.assertEqual(os.listdir(os.path.dirname(path)), [])

    def test_failed_write_leaves_no_temporary_files(self):
        folder = self.get_temp_dir()
        path = os.path.join(folder, "cache")
        x = np.random.default_rng(0).normal(size=(8, 3, 10)).astype(
            "float32")
        first = cache_teacher_outputs(Identity(), x, top_k=2, path=path,
                                      batch_size=4, verbose=0)
        before = read_folder(path)
        with self.assertRaisesRegex(RuntimeError, "the data source failed"):
            cache_teacher_outputs(Identity(), FailingBatches(x[::-1], 4),
                                  top_k=3, path=path, verbose=0)
        self.assertEqual(os.listdir(folder), ["cache"])
        self.assertEqual(read_folder(path), before)
        self.assertAllEqual(TeacherOutputCache.load(path).values,
                            first.values)

    def test_foreign_folder_is_refused(self):
        folder = os.path.join(self.get_temp_dir(), "mine")
        os.makedirs(folder)
        with open(os.path.join(folder, "notes.txt"), "w") as f:
            f.write("keep me")
        teacher = Identity()
        x = np.zeros((4, 10), "float32")
        with self.assertRaisesRegex(ValueError, "keras_kd did not write"):
            cache_teacher_outputs(teacher, x, top_k=2, path=folder,
                                  verbose=0)
        self.assertEqual(teacher.calls, 0)
        self.assertEqual(os.listdir(folder), ["notes.txt"])

    def test_dataset_yields_the_distiller_targets(self):
        path = os.path.join(self.get_temp_dir(), "cache")
        cache = self.cache(k=4, path=path)
        y = tokens(seed=1)
        weights = np.random.default_rng(2).uniform(size=(20, SEQ)).astype(
            "float32")
        ds = cache.dataset(self.x, y, batch_size=8, shuffle=False,
                           sample_weight=weights)
        batches = list(ds)
        self.assertEqual([len(b[0]) for b in batches], [8, 8, 4])
        x_b, targets, w_b = batches[1]
        self.assertEqual(sorted(targets), ["labels", "teacher_logits"])
        self.assertEqual(tuple(targets["teacher_logits"].shape),
                         (8, SEQ, VOCAB))
        self.assertEqual(targets["teacher_logits"].dtype.name, "float32")
        self.assertAllEqual(x_b, self.x[8:16])
        self.assertAllEqual(targets["labels"], y[8:16])
        self.assertAllEqual(w_b, weights[8:16])
        expected = topk.densify_top_k(cache.values[8:16],
                                      cache.indices[8:16],
                                      cache.tail_log_mass[8:16], VOCAB)
        self.assertAllEqual(targets["teacher_logits"], expected)
        # The soft targets are the teacher's, up to float16 and the tail.
        agree = np.argmax(targets["teacher_logits"], -1) == np.argmax(
            self.logits[8:16], -1)
        self.assertTrue(agree.all())
        # Shuffled: every sample once per epoch, inputs paired with targets.
        ds = cache.dataset(self.x, y, batch_size=6, seed=0)
        seen = np.concatenate([b[1]["labels"].numpy() for b in ds])
        self.assertAllEqual(np.sort(seen, axis=0), np.sort(y, axis=0))
        for x_b, targets in cache.dataset(self.x, batch_size=6, seed=3):
            self.assertNotIn("labels", targets)
            live = log_softmax(self.teacher.predict(x_b.numpy(), verbose=0))
            top = np.argmax(live, -1)[..., None]
            self.assertAllClose(
                np.take_along_axis(targets["teacher_logits"].numpy(), top,
                                   -1), np.take_along_axis(live, top, -1),
                **F16)

    def test_distiller_trains_on_a_classifier_top_k_cache(self):
        teacher, student = make_dense_pair()
        x, y = make_data(40)
        distiller = keras_kd.Distiller(teacher, student, alpha=0.3,
                                       temperature=2.0)
        distiller.compile(optimizer="adam")
        cache = cache_teacher_outputs(distiller, x, top_k=10, verbose=0)
        live = distiller.evaluate(x, y, batch_size=40, verbose=0,
                                  return_dict=True)
        cached = distiller.evaluate(
            cache.dataset(x, y, batch_size=40, shuffle=False,
                          distiller=distiller),
            verbose=0, return_dict=True)
        for key in ("loss", "hard_loss", "soft_loss"):
            self.assertAllClose(cached[key], live[key], rtol=2e-3, atol=1e-5)
        history = distiller.fit(cache.dataset(x, y, batch_size=10),
                                epochs=1, verbose=0)
        self.assertTrue(np.isfinite(history.history["loss"][-1]))

    def test_distiller_trains_on_a_language_model_top_k_cache(self):
        student = make_lm(scale=1.0)
        distiller = keras_kd.Distiller(self.teacher, student, alpha=0.3,
                                       temperature=1.0)
        distiller.compile(optimizer="adam")
        y = tokens(seed=1)
        weights = np.random.default_rng(2).uniform(size=(20, SEQ)).astype(
            "float32")
        live = distiller.evaluate(self.x, y, sample_weight=weights,
                                  batch_size=20, verbose=0, return_dict=True)
        cache = cache_teacher_outputs(distiller, self.x, top_k=VOCAB,
                                      verbose=0)
        cached = distiller.evaluate(
            cache.dataset(self.x, y, batch_size=20, shuffle=False,
                          sample_weight=weights, distiller=distiller),
            verbose=0, return_dict=True)
        for key in ("loss", "hard_loss", "soft_loss"):
            self.assertAllClose(cached[key], live[key], rtol=2e-3, atol=1e-5)
        small = cache_teacher_outputs(distiller, self.x, top_k=4, verbose=0)
        history = distiller.fit(
            small.dataset(self.x, y, batch_size=5, sample_weight=weights),
            epochs=1, verbose=0)
        self.assertTrue(np.isfinite(history.history["soft_loss"][-1]))

    def test_top_k_cache_refuses_what_it_cannot_hold(self):
        cache = self.cache()
        with self.assertRaisesRegex(NotImplementedError, "dataset"):
            cache.targets(self.x)
        teacher, student = make_conv_pair()
        distiller = keras_kd.Distiller(teacher, student, features=[
            keras_kd.FeatureMatch("t_conv2", "s_conv1")])
        x = np.zeros((4, 16, 16, 3), "float32")
        with self.assertRaisesRegex(NotImplementedError, "t_conv2"):
            cache_teacher_outputs(distiller, x, top_k=2, verbose=0)
        with self.assertRaisesRegex(ValueError, "vocabulary size"):
            self.cache().check(distiller=distiller)

    def test_a_dataset_in_a_fixed_order_streams_to_disk(self):
        import tensorflow as tf

        path = os.path.join(self.get_temp_dir(), "cache")
        ds = tf.data.Dataset.from_tensor_slices(self.x).batch(7)
        cache = cache_teacher_outputs(self.teacher, ds, top_k=5, path=path,
                                      verbose=0)
        from_array = self.cache()
        self.assertEqual(cache.fingerprint, from_array.fingerprint)
        self.assertAllEqual(cache.indices, from_array.indices)
        self.assertAllEqual(cache.values, from_array.values)
        cache.check(self.x)

    def test_dense_dataset_takes_sample_weight_too(self):
        dense = cache_teacher_outputs(self.teacher, self.x, verbose=0)
        weights = np.arange(20, dtype="float32")
        x_b, targets, w_b = next(iter(dense.dataset(
            self.x, self.x, batch_size=5, shuffle=False,
            sample_weight=weights)))
        self.assertAllEqual(w_b, weights[:5])
        self.assertAllEqual(targets["labels"], self.x[:5])
        with self.assertRaisesRegex(ValueError, "number of sample weights"):
            dense.dataset(self.x, sample_weight=weights[:3])

    def test_save_of_a_cache_in_memory(self):
        cache = self.cache()
        path = os.path.join(self.get_temp_dir(), "cache")
        loaded = cache.save(path)
        self.assertEqual(loaded.path, path)
        for name in ("values", "indices", "tail_log_mass"):
            self.assertAllEqual(getattr(loaded, name), getattr(cache, name))
        self.assertEqual(loaded.fingerprint, cache.fingerprint)
        dense = cache_teacher_outputs(self.teacher, self.x, path=path,
                                      verbose=0)
        self.assertIsInstance(dense, TeacherOutputCache)
