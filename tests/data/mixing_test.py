"""Tests of keras_kd/data/mixing.py."""

import numpy as np
import tensorflow as tf

import keras_kd
from keras_kd.data import mix_labeled_unlabeled
from tests.conftest import make_data
from tests.conftest import make_dense_pair
from tests.test_case import TestCase


class MixLabeledUnlabeledTest(TestCase):
    def setUp(self):
        super().setUp()
        self.x, self.y = make_data(40)
        self.labeled = tf.data.Dataset.from_tensor_slices(
            (self.x[:6], self.y[:6]))
        self.unlabeled = tf.data.Dataset.from_tensor_slices(self.x)

    def test_every_batch_has_the_fraction(self):
        ds = mix_labeled_unlabeled(self.labeled, self.unlabeled,
                                   labeled_fraction=0.25, batch_size=8)
        self.assertEqual(int(ds.cardinality()), 7)
        batches = list(ds.as_numpy_iterator())
        for x, y in batches[:-1]:
            self.assertEqual(x.shape, (8, 20))
            self.assertEqual(int(np.sum(y >= 0)), 2)
            self.assertEqual(int(np.sum(y == -1)), 6)
        seen = np.concatenate([x[2:] for x, _ in batches])
        self.assertAllClose(seen, self.x)

    def test_fit_on_mixed_batches(self):
        teacher, student = make_dense_pair()
        d = keras_kd.Distiller(teacher, student)
        d.compile(optimizer="adam", metrics=["accuracy"])
        ds = mix_labeled_unlabeled(self.labeled, self.unlabeled, 0.5, 10)
        history = d.fit(ds, epochs=1, verbose=0)
        self.assertIn("hard_loss", history.history)
        self.assertTrue(np.isfinite(history.history["loss"][0]))

    def test_bad_arguments(self):
        with self.assertRaisesRegex(ValueError, "labeled_fraction"):
            mix_labeled_unlabeled(self.labeled, self.unlabeled, 0.01, 8)
        with self.assertRaisesRegex(ValueError, "batch_size=1"):
            mix_labeled_unlabeled(self.labeled, self.unlabeled, 0.5, 1)
        with self.assertRaisesRegex(TypeError, "tf.data.Dataset"):
            mix_labeled_unlabeled((self.x, self.y), self.unlabeled)
        one_hot = tf.data.Dataset.from_tensor_slices(
            (self.x, np.eye(10, dtype="float32")[self.y]))
        with self.assertRaisesRegex(ValueError, "integer class ids"):
            mix_labeled_unlabeled(one_hot, self.unlabeled)
