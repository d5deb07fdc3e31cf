"""Tests of keras_kd/export/parity.py, on random data and real digits."""

import functools
import json
import os

import keras
import numpy as np
import pytest
from absl.testing import parameterized

import keras_kd
from keras_kd import export
from tests.conftest import make_data
from tests.export.litert_test import make_student
from tests.export.litert_test import requires_litert
from tests.test_case import TestCase

# LiteRT export converts with TensorFlow; on PyTorch `export_student`
# raises a clear error instead (tested in tests/torch_backend_test.py).
pytestmark = pytest.mark.backends("tensorflow", "jax")


@functools.lru_cache(maxsize=None)
def distilled_digits_student():
    """A student distilled from a teacher on scikit-learn's digits.

    Returns `(student, (x_train, y_train), (x_test, y_test))`. The 8x8
    images ship with scikit-learn (no download); training takes seconds.
    """
    datasets = pytest.importorskip("sklearn.datasets")
    digits = datasets.load_digits()
    x = (digits.data / 16.0).astype("float32")
    y = digits.target.astype("int32")
    order = np.random.default_rng(0).permutation(len(x))
    x, y = x[order], y[order]
    train, test = (x[:1437], y[:1437]), (x[1437:], y[1437:])

    keras.utils.set_random_seed(0)
    teacher = keras.Sequential(
        [
            keras.Input((64,)),
            keras.layers.Dense(128, activation="relu"),
            keras.layers.Dense(10),
        ],
        name="teacher",
    )
    teacher.compile(
        optimizer="adam",
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    teacher.fit(*train, epochs=15, batch_size=64, verbose=0)
    student = keras.Sequential(
        [
            keras.Input((64,)),
            keras.layers.Dense(32, activation="relu"),
            keras.layers.Dense(10),
        ],
        name="student",
    )
    student.compile(
        optimizer="adam", loss=keras_kd.losses.SoftTargetKL(temperature=4.0)
    )
    teacher_logits = teacher.predict(train[0], verbose=0)
    student.fit(train[0], teacher_logits, epochs=30, batch_size=64, verbose=0)
    return student, train, test


@pytest.mark.slow
@requires_litert
class DigitsParityTest(TestCase):
    """The acceptance checks of the export issue, on real data."""

    def setUp(self):
        super().setUp()
        self.student, self.train, self.test = distilled_digits_student()
        self.dir = self.get_temp_dir()

    def report(self, quantization, **kwargs):
        path = export.export_student(
            self.student,
            os.path.join(self.dir, f"{quantization}.tflite"),
            quantization=quantization,
            **kwargs,
        )
        return export.parity_report(self.student, path, self.test)

    def test_float32_agreement(self):
        report = self.report("none")
        self.assertGreater(report.keras_accuracy, 0.9)
        self.assertGreaterEqual(report.top1_agreement, 0.999)
        self.assertLess(report.max_abs_diff, 1e-4)
        self.assertEqual(report.tflite_accuracy, report.keras_accuracy)

    @parameterized.named_parameters(("float_io", False), ("int8_io", True))
    def test_int8_within_one_point(self, int8_io):
        report = self.report(
            "int8", representative_data=self.train, int8_io=int8_io
        )
        self.assertEqual(report.quantization, "int8")
        self.assertEqual(report.input_dtype, "int8" if int8_io else "float32")
        self.assertLessEqual(abs(report.accuracy_delta), 0.01, str(report))
        self.assertGreaterEqual(report.top1_agreement, 0.98, str(report))

    @parameterized.named_parameters(
        ("float16", "float16", 1e-2), ("dynamic", "dynamic", 0.1)
    )
    def test_float_modes(self, quantization, max_diff):
        report = self.report(quantization)
        self.assertEqual(report.quantization, quantization)
        self.assertLess(report.max_abs_diff, max_diff, str(report))
        self.assertGreaterEqual(report.top1_agreement, 0.99, str(report))
        self.assertLessEqual(abs(report.accuracy_delta), 0.01)


@requires_litert
class ParityReportTest(TestCase):
    def setUp(self):
        super().setUp()
        self.student = make_student()
        self.x, self.y = make_data(64)
        self.path = export.export_student(
            self.student, os.path.join(self.get_temp_dir(), "s.tflite")
        )

    def test_fields_dict_and_table(self):
        report = export.parity_report(
            self.student, self.path, (self.x, self.y), latency_runs=10
        )
        self.assertEqual(report.num_examples, 64)
        self.assertEqual(report.quantization, "none")
        # The table names the unquantized file by its precision.
        self.assertRegex(str(report), r"quantization +float32")
        self.assertEqual(report.file_size, os.path.getsize(self.path))
        self.assertEqual(report.keras_size, (20 * 64 + 64 + 64 * 10 + 10) * 4)
        self.assertEqual(report.input_shape, (None, 20))
        self.assertEqual(report.latency_runs, 10)
        self.assertGreater(report.latency_ms, 0.0)
        self.assertEqual(report.top1_agreement, 1.0)
        self.assertAlmostEqual(report.accuracy_delta, 0.0)
        data = report.to_dict()
        self.assertEqual(json.loads(json.dumps(data)), data)
        self.assertIn("accuracy_delta", data)
        text = str(report)
        self.assertTrue(text.startswith("LiteRT parity report: s.tflite"))
        for row in ("file size", "accuracy, Keras", "accuracy, LiteRT",
                    "top-1 agreement", "max |logit diff|", "latency"):
            self.assertIn(row, text)

    def test_accuracy_matches_numpy(self):
        report = export.parity_report(self.student, self.path,
                                      (self.x, self.y), latency_runs=1)
        logits = keras.ops.convert_to_numpy(self.student(self.x))
        self.assertAlmostEqual(report.keras_accuracy,
                               np.mean(logits.argmax(-1) == self.y))

    def test_one_hot_labels_equal_sparse(self):
        one_hot = np.eye(10, dtype="float32")[self.y]
        sparse = export.parity_report(self.student, self.path,
                                      (self.x, self.y), latency_runs=1)
        dense = export.parity_report(self.student, self.path,
                                     (self.x, one_hot), latency_runs=1)
        self.assertEqual(sparse.keras_accuracy, dense.keras_accuracy)

    def test_without_labels(self):
        report = export.parity_report(self.student, self.path, self.x,
                                      latency_runs=1)
        self.assertIsNone(report.keras_accuracy)
        self.assertIsNone(report.accuracy_delta)
        self.assertIn("n/a (no labels)", str(report))

    def test_max_examples_and_batches(self):
        batches = [(self.x[:20], self.y[:20]), (self.x[20:], self.y[20:])]
        report = export.parity_report(self.student, self.path, batches,
                                      max_examples=30, batch_size=7,
                                      latency_runs=1)
        self.assertEqual(report.num_examples, 30)

    def test_tf_data(self):
        tf = pytest.importorskip("tensorflow")
        dataset = tf.data.Dataset.from_tensor_slices((self.x, self.y))
        report = export.parity_report(self.student, self.path,
                                      dataset.batch(16), latency_runs=1)
        self.assertEqual(report.num_examples, 64)

    def test_distiller_uses_its_student(self):
        teacher = keras.Sequential(
            [keras.Input((20,)), keras.layers.Dense(10)], name="teacher"
        )
        distiller = keras_kd.Distiller(teacher, self.student)
        report = export.parity_report(distiller, self.path, self.x,
                                      latency_runs=1)
        self.assertEqual(report.top1_agreement, 1.0)

    def test_too_few_labels(self):
        with self.assertRaisesRegex(
            ValueError, r"Argument `data` must hold one label per input, but "
            r"a batch holds 64 inputs and 10 labels. Received: data with "
            r"x.shape=\(64, 20\) and y.shape=\(10,\)"
        ):
            export.parity_report(self.student, self.path,
                                 (self.x, self.y[:10]), latency_runs=1)

    def test_one_hot_labels_of_another_width(self):
        with self.assertRaisesRegex(
            ValueError, "one-hot labels of width 5, but the student has 10 "
            r"classes. Received: labels of shape \(64, 5\)"
        ):
            export.parity_report(self.student, self.path,
                                 (self.x, np.eye(5)[self.y % 5]),
                                 latency_runs=1)

    def test_bad_arguments(self):
        with self.assertRaisesRegex(ValueError, "Received: latency_runs=0"):
            export.parity_report(self.student, self.path, self.x,
                                 latency_runs=0)
        with self.assertRaisesRegex(ValueError, "inputs of shape"):
            export.parity_report(self.student, self.path,
                                 np.zeros((3, 5), "float32"))
