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
        with self.assertRaisesRegex(ValueError, "checksum"):
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
        with self.assertRaisesRegex(ValueError, "matched teacher layers"):
            cache.targets(None, distiller=d)

    def test_truncated_disk_cache_is_refused(self):
        path = os.path.join(self.get_temp_dir(), "cache")
        cache_teacher_outputs(self.teacher, self.x, path=path, verbose=0)
        np.save(os.path.join(path, "teacher_logits.npy"),
                np.zeros((10, 10), "float32"))
        with self.assertRaisesRegex(ValueError, "truncated"):
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
