"""Tests of keras_kd/data/sources.py."""

import os

import numpy as np

from keras_kd.data import load_dataset
from tests.test_case import TestCase


class LoadDatasetTest(TestCase):
    def test_digits(self):
        (x, y), (xt, yt) = load_dataset("digits")
        self.assertEqual(x.shape[1:], (8, 8, 1))
        self.assertEqual(len(x) + len(xt), 1797)
        self.assertLessEqual(float(x.max()), 1.0)
        self.assertEqual(sorted(np.unique(y)), list(range(10)))

    def test_mnist_subset_ships_with_the_package(self):
        (x, y), (xt, yt) = load_dataset("mnist_subset")
        self.assertEqual(x.shape, (5000, 28, 28, 1))
        self.assertEqual(xt.shape, (2000, 28, 28, 1))
        self.assertEqual(sorted(np.unique(y)), list(range(10)))
        self.assertLessEqual(float(x.max()), 1.0)

    def test_npz(self):
        path = os.path.join(self.get_temp_dir(), "d.npz")
        rng = np.random.default_rng(0)
        np.savez(path, x_train=rng.integers(0, 256, (5, 4, 4), "uint8"),
                 y_train=np.arange(5), x_test=np.zeros((2, 4, 4), "uint8"),
                 y_test=np.arange(2))
        (x, y), (xt, yt) = load_dataset(path)
        self.assertEqual(x.shape, (5, 4, 4, 1))
        self.assertEqual(x.dtype, np.float32)
        self.assertLessEqual(float(x.max()), 1.0)

    def test_errors(self):
        with self.assertRaisesRegex(FileNotFoundError, "No dataset file"):
            load_dataset("missing.npz")
        path = os.path.join(self.get_temp_dir(), "bad.npz")
        np.savez(path, a=np.zeros(2))
        with self.assertRaisesRegex(ValueError, "keras.datasets layout"):
            load_dataset(path)
        with self.assertRaisesRegex(ValueError, "data_dir"):
            load_dataset("mnist")
        with self.assertRaisesRegex(ValueError, "not prepared"):
            load_dataset("mnist", data_dir=self.get_temp_dir())
