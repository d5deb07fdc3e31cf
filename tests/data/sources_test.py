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

    def write(self, **arrays):
        rng = np.random.default_rng(0)
        base = dict(x_train=rng.integers(0, 256, (6, 4, 4), "uint8"),
                    y_train=np.arange(6) % 3,
                    x_test=rng.integers(0, 256, (2, 4, 4), "uint8"),
                    y_test=np.arange(2))
        base.update(arrays)
        path = os.path.join(self.get_temp_dir(), "d.npz")
        np.savez(path, **base)
        return path

    def test_one_hot_labels_become_class_ids(self):
        path = self.write(y_train=np.eye(3)[np.arange(6) % 3],
                          y_test=np.eye(3, dtype="uint8")[[2, 0]])
        (_, y), (_, yt) = load_dataset(path)
        self.assertEqual(y.tolist(), [0, 1, 2, 0, 1, 2])
        self.assertEqual(yt.tolist(), [2, 0])
        self.assertEqual(y.dtype, np.int32)

    def test_bad_npz_contents(self):
        cases = (
            (dict(y_train=np.arange(5)), "holds 6 train inputs but 5 labels"),
            (dict(x_test=np.zeros((0, 4, 4), "uint8"),
                  y_test=np.zeros(0)), "holds no test samples"),
            (dict(y_train=np.array([0, 1, 2.5, 0, 1, 2])),
             r"not whole numbers.*y_train\[2\]="),
            (dict(y_train=np.array([0, 1, -3, 0, 1, 2])),
             r"negative class id.*y_train\[2\]="),
            (dict(y_train=np.array(list("abcdef"))), "dtype <U1"),
            (dict(y_train=np.full((6, 3), 1 / 3)),
             "neither class ids nor one-hot rows"),
            (dict(x_train=np.full((6, 4, 4), np.nan, "float32")),
             r"NaN or Inf in `x_train` \(6 sample\(s\), the first at "
             "index 0"),
        )
        for arrays, message in cases:
            with self.assertRaisesRegex(ValueError, message):
                load_dataset(self.write(**arrays))

    def test_damaged_npz(self):
        path = self.write()
        with open(path, "rb") as f:
            content = f.read()
        with open(path, "wb") as f:
            f.write(content[:100])
        with self.assertRaisesRegex(ValueError, "is not a readable `.npz`"):
            load_dataset(path)
