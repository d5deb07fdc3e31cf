"""Tests of keras_kd/projection.py."""

import keras
import numpy as np
from absl.testing import parameterized

from keras_kd.projection import build_projection
from tests.test_case import TestCase


class BuildProjectionTest(TestCase):
    @parameterized.named_parameters(
        ("vector", (None, 16), (None, 32), ["Dense"]),
        ("tokens", (None, 5, 16), (None, 5, 8), ["Dense"]),
        ("pool", (None, 16, 16, 8), (None, 8, 8, 32),
         ["AveragePooling2D", "Conv2D", "BatchNormalization"]),
        ("resize", (None, 8, 8, 8), (None, 16, 16, 4),
         ["Resizing", "Conv2D", "BatchNormalization"]),
        ("odd", (None, 7, 7, 8), (None, 3, 3, 4),
         ["Resizing", "Conv2D", "BatchNormalization"]),
        ("channels", (None, 8, 8, 8), (None, 8, 8, 16),
         ["Conv2D", "BatchNormalization"]),
    )
    def test_head_maps_student_to_teacher_shape(self, student, teacher, kinds):
        head = build_projection(student, teacher)
        self.assertEqual([type(layer).__name__ for layer in head.layers],
                         kinds)
        x = np.random.default_rng(0).normal(size=(2,) + student[1:])
        self.assertEqual(tuple(head(x.astype("float32")).shape),
                         (2,) + teacher[1:])

    def test_without_batch_norm(self):
        head = build_projection((None, 4, 4, 8), (None, 4, 4, 16),
                                batch_norm=False)
        self.assertEqual([type(layer).__name__ for layer in head.layers],
                         ["Conv2D"])
        self.assertTrue(head.layers[0].use_bias)

    def test_errors(self):
        with self.assertRaisesRegex(ValueError, "different ranks"):
            build_projection((None, 16), (None, 4, 4, 8))
        with self.assertRaisesRegex(ValueError, "same number of tokens"):
            build_projection((None, 5, 16), (None, 6, 16))
        with self.assertRaisesRegex(ValueError, "static feature shapes"):
            build_projection((None, 5, None), (None, 5, 16))
        with self.assertRaisesRegex(ValueError, "static feature shapes"):
            build_projection((None, None, 4, 16), (None, 6, 4, 16))
        with self.assertRaisesRegex(ValueError, "rank 2, 3 or 4"):
            build_projection((None, 2, 2, 2, 2), (None, 2, 2, 2, 4))

    def test_token_sequences_of_any_length_get_a_dense_head(self):
        head = build_projection((None, None, 8), (None, None, 16))
        self.assertEqual(tuple(head.compute_output_shape((None, 7, 8))),
                         (None, 7, 16))
        self.assertIsInstance(head.layers[0], keras.layers.Dense)

    def test_head_follows_dtype_policy(self):
        keras.config.set_dtype_policy("mixed_float16")
        try:
            head = build_projection((None, 16), (None, 8))
            self.assertEqual(head.layers[0].compute_dtype, "float16")
        finally:
            keras.config.set_dtype_policy("float32")
