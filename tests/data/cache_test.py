"""Tests of keras_kd/data/cache.py."""

import os

import keras
import numpy as np
import tensorflow as tf

import keras_kd
from keras_kd.data import TeacherOutputCache
from keras_kd.data import cache_teacher_outputs
from tests.conftest import make_conv_pair
from tests.conftest import make_data
from tests.conftest import make_dense_pair
from tests.test_case import TestCase


class TeacherOutputCacheTest(TestCase):
    def setUp(self):
        super().setUp()
        self.teacher, self.student = make_dense_pair()
        self.x, self.y = make_data(50)

    def test_logits_equal_the_teacher(self):
        cache = cache_teacher_outputs(self.teacher, self.x, batch_size=16,
                                      verbose=0)
        self.assertEqual(len(cache), 50)
        self.assertAllClose(cache.logits,
                            self.teacher.predict(self.x, verbose=0),
                            atol=1e-5)

    def test_cached_path_gives_the_live_loss(self):
        d = keras_kd.Distiller(self.teacher, self.student, alpha=0.3)
        d.compile(metrics=["accuracy"])
        cache = cache_teacher_outputs(d, self.x, verbose=0)
        live = d.evaluate(self.x, self.y, batch_size=50, verbose=0,
                          return_dict=True)
        cached = d.evaluate(self.x, cache.targets(self.y, x=self.x),
                            batch_size=50, verbose=0, return_dict=True)
        for key in live:
            self.assertAllClose(cached[key], live[key], rtol=1e-5, atol=1e-6)

    def test_cached_training_skips_the_teacher(self):
        calls = []

        class Count(keras.layers.Layer):
            def call(self, x):
                calls.append(1)
                return x

        teacher = keras.Sequential([keras.Input((20,)), Count(),
                                    self.teacher])
        d = keras_kd.Distiller(teacher, self.student)
        cache = cache_teacher_outputs(d, self.x, verbose=0)
        d.compile(optimizer="adam", run_eagerly=True)
        calls.clear()
        history = d.fit(self.x, cache.targets(self.y), batch_size=10,
                        epochs=2, verbose=0)
        self.assertEqual(calls, [])
        self.assertLess(history.history["soft_loss"][-1],
                        history.history["soft_loss"][0])

    def test_features_are_cached_and_used(self):
        teacher, student = make_conv_pair()
        x = np.random.default_rng(0).normal(size=(12, 16, 16, 3)).astype(
            "float32")
        y = np.arange(12) % 10
        match = keras_kd.FeatureMatch("t_conv2", "s_conv1", loss="mse")
        d = keras_kd.Distiller(teacher, student, features=[match])
        d.compile(metrics=["accuracy"])
        cache = cache_teacher_outputs(d, x, batch_size=5, verbose=0)
        self.assertEqual(list(cache.features), ["t_conv2"])
        self.assertEqual(cache.features["t_conv2"].shape, (12, 8, 8, 16))
        live = d.evaluate(x, y, batch_size=12, verbose=0, return_dict=True)
        cached = d.evaluate(x, cache.targets(y, x=x, distiller=d),
                            batch_size=12, verbose=0, return_dict=True)
        for key in live:
            self.assertAllClose(cached[key], live[key], rtol=1e-5, atol=1e-5)

    def test_disk_cache_round_trip_and_memory_map(self):
        path = os.path.join(self.get_temp_dir(), "cache")
        cache = cache_teacher_outputs(self.teacher, self.x, batch_size=7,
                                      path=path, verbose=0)
        self.assertIsInstance(cache.logits, np.memmap)
        again = TeacherOutputCache.load(path)
        self.assertAllClose(again.logits,
                            self.teacher.predict(self.x, verbose=0),
                            atol=1e-5)
        self.assertEqual(sorted(os.listdir(os.path.dirname(path))),
                         ["cache"])

    def test_deterministic_dataset_is_cached(self):
        ds = tf.data.Dataset.from_tensor_slices(self.x).batch(8)
        path = os.path.join(self.get_temp_dir(), "cache")
        cache = cache_teacher_outputs(self.teacher, ds, path=path, verbose=0)
        self.assertAllClose(cache.logits,
                            self.teacher.predict(self.x, verbose=0),
                            atol=1e-5)

    def test_shuffling_dataset_is_refused(self):
        ds = tf.data.Dataset.from_tensor_slices(self.x).shuffle(50).batch(8)
        with self.assertRaisesRegex(ValueError, "different batches on two "
                                    "passes"):
            cache_teacher_outputs(self.teacher, ds, verbose=0)

    def test_wrong_length_is_refused(self):
        cache = cache_teacher_outputs(self.teacher, self.x, verbose=0)
        with self.assertRaisesRegex(ValueError, "number of samples"):
            cache.targets(self.y[:40], x=self.x[:40])
        with self.assertRaisesRegex(ValueError, "number of labels"):
            cache.targets(self.y[:40])

    def test_other_inputs_are_refused(self):
        cache = cache_teacher_outputs(self.teacher, self.x, verbose=0)
        with self.assertRaisesRegex(ValueError, "fingerprint"):
            cache.targets(self.y, x=self.x[::-1])

    def test_wrong_class_count_is_refused(self):
        other = keras.Sequential([keras.Input((20,)), keras.layers.Dense(4)])
        cache = cache_teacher_outputs(other, self.x, verbose=0)
        d = keras_kd.Distiller(self.teacher, self.student)
        with self.assertRaisesRegex(ValueError, "number of classes"):
            cache.targets(self.y, distiller=d)
        d.compile()
        with self.assertRaisesRegex(ValueError, "number of classes"):
            d.evaluate(self.x, cache.targets(self.y), verbose=0)

    def test_missing_feature_is_refused(self):
        teacher, student = make_conv_pair()
        x = np.zeros((4, 16, 16, 3), "float32")
        d = keras_kd.Distiller(teacher, student, features=[
            keras_kd.FeatureMatch("t_conv2", "s_conv1")])
        cache = cache_teacher_outputs(teacher, x, verbose=0)
        with self.assertRaisesRegex(ValueError, "matched layers"):
            cache.targets(None, distiller=d)

    def test_replaced_disk_cache_file_is_refused(self):
        path = os.path.join(self.get_temp_dir(), "cache")
        cache_teacher_outputs(self.teacher, self.x, path=path, verbose=0)
        np.save(os.path.join(path, "teacher_logits.npy"),
                np.zeros((10, 10), "float32"))
        with self.assertRaisesRegex(
                ValueError, r"teacher_logits\.npy' is damaged: it holds an "
                r"array of shape \(10, 10\).*says \(50, 10\).*Rebuild"):
            TeacherOutputCache.load(path)

    def test_augmentation_and_cache_do_not_mix(self):
        d = keras_kd.Distiller(self.teacher, self.student,
                               augmentation=keras.layers.GaussianNoise(0.1))
        cache = cache_teacher_outputs(self.teacher, self.x, verbose=0)
        with self.assertRaisesRegex(ValueError, "augmentation"):
            cache.targets(self.y, distiller=d)
        d.compile(optimizer="adam")
        with self.assertRaisesRegex(ValueError, "augmentation"):
            d.fit(self.x, cache.targets(self.y), verbose=0)

    def test_dataset_helper(self):
        cache = cache_teacher_outputs(self.teacher, self.x, verbose=0)
        ds = cache.dataset(self.x, self.y, batch_size=10, seed=0)
        d = keras_kd.Distiller(self.teacher, self.student)
        d.compile(optimizer="adam")
        history = d.fit(ds, epochs=1, verbose=0)
        self.assertIn("hard_loss", history.history)


class CacheKnowsItsDataTest(TestCase):
    """The fingerprint covers every input byte; stored arrays are checked."""

    def setUp(self):
        super().setUp()
        self.teacher, _ = make_dense_pair()
        self.x, self.y = make_data(50)
        self.cache = cache_teacher_outputs(self.teacher, self.x,
                                           batch_size=16, verbose=0)

    def test_a_swap_of_two_rows_is_refused(self):
        swapped = self.x.copy()
        swapped[[3, 4]] = swapped[[4, 3]]
        with self.assertRaisesRegex(ValueError, "fingerprint of all their "
                                    "bytes differs"):
            self.cache.targets(self.y, x=swapped)

    def test_one_changed_value_is_refused(self):
        changed = self.x.copy()
        changed[17, 5] += 1e-3  # a row the old 16-row sample skipped
        with self.assertRaisesRegex(ValueError, "not the ones the cache"):
            self.cache.check(changed)

    def test_most_rows_replaced_are_refused(self):
        other = make_data(50, seed=1)[0]
        other[::7] = self.x[::7]
        with self.assertRaisesRegex(ValueError, "fingerprint"):
            self.cache.check(other)

    def test_same_inputs_pass_and_dtype_counts(self):
        self.cache.check(self.x.copy())
        self.assertTrue(self.cache.fingerprint.startswith("sha256:"))
        with self.assertRaisesRegex(ValueError, "another dtype"):
            self.cache.check(self.x.astype("float64"))

    def test_dataset_cache_has_a_fingerprint_and_is_rechecked(self):
        ds = tf.data.Dataset.from_tensor_slices(self.x).batch(8)
        cache = cache_teacher_outputs(self.teacher, ds, verbose=0)
        # Batching does not change the fingerprint: the array matches.
        self.assertEqual(cache.fingerprint, self.cache.fingerprint)
        self.assertIs(cache.check(ds), cache)
        self.assertIs(cache.check(self.x), cache)
        other = tf.data.Dataset.from_tensor_slices(self.x[::-1]).batch(8)
        with self.assertRaisesRegex(ValueError, "fingerprint"):
            cache.check(other)
        fewer = tf.data.Dataset.from_tensor_slices(self.x[:49]).batch(8)
        with self.assertRaisesRegex(ValueError, "fingerprint"):
            cache.check(fewer)

    def test_disk_cache_from_a_dataset_keeps_its_fingerprint(self):
        path = os.path.join(self.get_temp_dir(), "cache")
        ds = tf.data.Dataset.from_tensor_slices(self.x).batch(8)
        cache_teacher_outputs(self.teacher, ds, path=path, verbose=0)
        again = TeacherOutputCache.load(path)
        self.assertEqual(again.fingerprint, self.cache.fingerprint)
        with self.assertRaisesRegex(ValueError, "fingerprint"):
            again.check(self.x[::-1])

    def _disk_cache(self):
        path = os.path.join(self.get_temp_dir(), "cache")
        cache_teacher_outputs(self.teacher, self.x, path=path, verbose=0)
        return path, os.path.join(path, "teacher_logits.npy")

    def test_logits_edited_on_disk_are_detected(self):
        path, file = self._disk_cache()
        logits = np.load(file, mmap_mode="r+")
        logits[10, 3] += 5.0  # same size, same header: only the values
        logits.flush()
        del logits
        with self.assertRaisesRegex(
                ValueError, r"teacher_logits\.npy' was modified after it "
                "was written: its checksum differs.*Rebuild"):
            TeacherOutputCache.load(path)
        # The check can be skipped on purpose.
        self.assertEqual(len(TeacherOutputCache.load(path, verify=False)), 50)

    def test_truncated_file_names_the_file(self):
        path, file = self._disk_cache()
        with open(file, "r+b") as f:
            f.truncate(os.path.getsize(file) - 40)
        with self.assertRaisesRegex(
                ValueError, r"cache file '.*teacher_logits\.npy' is "
                r"truncated: it has \d+ bytes.*Rebuild"):
            TeacherOutputCache.load(path)

    def test_corrupt_header_names_the_file(self):
        path, file = self._disk_cache()
        with open(file, "r+b") as f:
            f.seek(12)
            f.write(b"garbage" * 4)
        with self.assertRaisesRegex(
                ValueError, r"teacher_logits\.npy' is damaged: its \.npy "
                "header cannot be read"):
            TeacherOutputCache.load(path)

    def test_corrupt_metadata_names_the_file(self):
        path, _ = self._disk_cache()
        with open(os.path.join(path, "keras_kd_cache.json"), "w") as f:
            f.write("{not json")
        with self.assertRaisesRegex(
                ValueError, r"keras_kd_cache\.json' is damaged: it is not "
                "valid JSON"):
            TeacherOutputCache.load(path)


class CacheNeverLosesFilesTest(TestCase):
    """A cache replaces only a folder that keras_kd wrote itself."""

    def setUp(self):
        super().setUp()
        self.teacher, _ = make_dense_pair()
        self.x, _ = make_data(20)
        self.folder = self.get_temp_dir()

    def _user_folder(self, name="results"):
        folder = os.path.join(self.folder, name)
        os.makedirs(folder)
        with open(os.path.join(folder, "thesis.txt"), "w") as f:
            f.write("three years of work")
        return folder

    def assertUntouched(self, folder):
        with open(os.path.join(folder, "thesis.txt")) as f:
            self.assertEqual(f.read(), "three years of work")

    def test_the_working_directory_is_refused(self):
        cwd = os.getcwd()
        folder = self._user_folder()
        os.chdir(folder)
        self.addCleanup(os.chdir, cwd)
        for path in (".", folder, os.path.dirname(folder)):
            with self.assertRaisesRegex(ValueError, "working directory"):
                cache_teacher_outputs(self.teacher, self.x, path=path,
                                      verbose=0)
        self.assertUntouched(folder)

    def test_a_user_folder_is_refused_before_the_teacher_runs(self):
        folder = self._user_folder()
        calls = []

        class Spy(keras.layers.Layer):
            def call(self, x):
                calls.append(1)
                return x

        teacher = keras.Sequential([keras.Input((20,)), Spy(), self.teacher])
        calls.clear()  # building the model traced it once
        with self.assertRaisesRegex(
                ValueError, "names an existing folder that keras_kd did not "
                f"write.*Received: path={folder!r}"):
            cache_teacher_outputs(teacher, self.x, path=folder, verbose=0)
        self.assertEqual(calls, [])
        self.assertUntouched(folder)
        cache = cache_teacher_outputs(self.teacher, self.x, verbose=0)
        with self.assertRaisesRegex(ValueError, "did not write"):
            cache.save(folder)
        self.assertUntouched(folder)
        self.assertEqual(os.listdir(self.folder), ["results"])

    def test_a_file_is_refused(self):
        file = os.path.join(self.folder, "notes.txt")
        with open(file, "w") as f:
            f.write("keep me")
        with self.assertRaisesRegex(ValueError, "names an existing file"):
            cache_teacher_outputs(self.teacher, self.x, path=file, verbose=0)
        with open(file) as f:
            self.assertEqual(f.read(), "keep me")

    def test_own_cache_and_empty_folder_are_replaced(self):
        path = os.path.join(self.folder, "cache")
        os.makedirs(path)  # empty: nothing to lose
        first = cache_teacher_outputs(self.teacher, self.x, path=path,
                                      verbose=0)
        second = cache_teacher_outputs(self.teacher, self.x[::-1], path=path,
                                       verbose=0)
        self.assertNotEqual(first.fingerprint, second.fingerprint)
        self.assertEqual(TeacherOutputCache.load(path).fingerprint,
                         second.fingerprint)
        self.assertEqual(os.listdir(self.folder), ["cache"])

    def test_failure_keeps_the_previous_cache(self):
        path = os.path.join(self.folder, "cache")
        before = cache_teacher_outputs(self.teacher, self.x, path=path,
                                       verbose=0)
        with self.assertRaisesRegex(RuntimeError, "disk is full"):
            cache_teacher_outputs(self.teacher, FailsOnSecondPass(self.x),
                                  path=path, verbose=0)
        again = TeacherOutputCache.load(path)
        self.assertEqual(again.fingerprint, before.fingerprint)
        self.assertEqual(os.listdir(self.folder), ["cache"])


class FailsOnSecondPass:
    """Batches of `x`; the second pass stops with an error half way."""

    def __init__(self, x):
        self.x, self.passes = x, 0

    def __iter__(self):
        self.passes += 1
        yield self.x[:10]
        if self.passes > 1:
            raise RuntimeError("the disk is full")
        yield self.x[10:]
