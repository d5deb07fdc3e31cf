"""Tests of keras_kd/data/teacher_labels.py."""

import os

import numpy as np

from keras_kd.data import densify_top_k
from keras_kd.data import teacher_labels
from tests.conftest import make_data
from tests.conftest import make_dense_pair
from tests.test_case import TestCase


class TeacherLabelsTest(TestCase):
    def setUp(self):
        super().setUp()
        self.teacher, _ = make_dense_pair()
        self.x, _ = make_data(40)
        self.logits = self.teacher.predict(self.x, verbose=0)

    def test_logits(self):
        out = teacher_labels(self.teacher, self.x, verbose=0)
        self.assertAllClose(out, self.logits, atol=1e-5)

    def test_hard_labels_with_threshold(self):
        z = self.logits - self.logits.max(-1, keepdims=True)
        p = np.exp(z) / np.exp(z).sum(-1, keepdims=True)
        threshold = float(np.median(p.max(-1)))
        out = teacher_labels(self.teacher, self.x, kind="hard",
                             threshold=threshold, verbose=0)
        expected = np.where(p.max(-1) >= threshold, p.argmax(-1), -1)
        self.assertAllEqual(out, expected)
        self.assertTrue(0 < np.sum(out == -1) < len(out))

    def test_hard_labels_without_threshold(self):
        out = teacher_labels(self.teacher, self.x, kind="hard", verbose=0)
        self.assertAllEqual(out, self.logits.argmax(-1))

    def test_top_k_and_densify(self):
        values, ids = teacher_labels(self.teacher, self.x, kind="top_k",
                                     top_k=3, verbose=0)
        order = np.argsort(-self.logits, -1)[:, :3]
        self.assertAllEqual(ids, order)
        self.assertAllClose(values, np.take_along_axis(self.logits, order, -1),
                            atol=1e-5)
        dense = densify_top_k(values, ids, 10)
        self.assertAllClose(np.take_along_axis(dense, order, -1), values,
                            atol=1e-5)
        self.assertEqual(int(np.sum(dense == -1e9)), 40 * 7)

    def test_path_never_replaces_a_user_folder(self):
        folder = os.path.join(self.get_temp_dir(), "labels")
        os.makedirs(folder)
        with open(os.path.join(folder, "mine.csv"), "w") as f:
            f.write("keep")
        with self.assertRaisesRegex(
                ValueError, "names an existing folder that keras_kd did not "
                f"write.*Received: path={folder!r}"):
            teacher_labels(self.teacher, self.x, kind="hard", path=folder,
                           verbose=0)
        self.assertEqual(os.listdir(folder), ["mine.csv"])
        # A folder keras_kd wrote is replaced.
        cache = os.path.join(os.path.dirname(folder), "cache")
        first = teacher_labels(self.teacher, self.x, path=cache, verbose=0)
        again = teacher_labels(self.teacher, self.x, kind="hard", path=cache,
                               verbose=0)
        self.assertAllClose(first, self.logits, atol=1e-5)
        self.assertAllEqual(again, self.logits.argmax(-1))

    def test_bad_arguments(self):
        with self.assertRaisesRegex(ValueError, "Received: kind='soft'"):
            teacher_labels(self.teacher, self.x, kind="soft", verbose=0)
        with self.assertRaisesRegex(ValueError, "Received: top_k=0"):
            teacher_labels(self.teacher, self.x, kind="top_k", top_k=0)
        with self.assertRaisesRegex(ValueError, "top_k=11"):
            teacher_labels(self.teacher, self.x, kind="top_k", top_k=11,
                           verbose=0)
        with self.assertRaisesRegex(ValueError, "threshold=1.5"):
            teacher_labels(self.teacher, self.x, kind="hard", threshold=1.5)
