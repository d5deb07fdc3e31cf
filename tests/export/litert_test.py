"""Tests of keras_kd/export/litert.py and keras_kd/export/litert_model.py."""

import os
import pathlib
import re
import subprocess
import sys
import types
from unittest import mock

import keras
import numpy as np
import pytest
from absl.testing import parameterized

import keras_kd
from keras_kd import export
from keras_kd.export import _data
from keras_kd.export.litert_model import LITERT_IMPORT_MESSAGE
from keras_kd.utils import io
from tests.conftest import make_conv_pair
from tests.conftest import make_data
from tests.conftest import make_dense_pair
from tests.test_case import TestCase

# LiteRT export converts with TensorFlow; on PyTorch `export_student`
# raises a clear error instead (tested in tests/torch_backend_test.py).
pytestmark = pytest.mark.backends("tensorflow", "jax")

try:
    from ai_edge_litert.interpreter import Interpreter  # noqa: F401

    LITERT_AVAILABLE = True
except ImportError:
    LITERT_AVAILABLE = False

requires_litert = pytest.mark.skipif(
    not LITERT_AVAILABLE, reason="`ai_edge_litert` is not available."
)


def make_student(hidden=64, features=20, num_classes=10, batch_size=None):
    """Dense student; `hidden=64` gives a 1280-weight kernel, large enough
    for dynamic-range quantization (the converter skips < 1024 weights)."""
    keras.utils.set_random_seed(0)
    return keras.Sequential(
        [
            keras.Input((features,), batch_size=batch_size),
            keras.layers.Dense(hidden, activation="relu", name="s_hidden"),
            keras.layers.Dense(num_classes, name="s_logits"),
        ],
        name="student",
    )


def predict(model, x):
    return keras.ops.convert_to_numpy(model(x, training=False))


def agreement(a, b):
    return float(np.mean(a.argmax(-1) == b.argmax(-1)))


class QrLayer(keras.layers.Layer):
    """Uses a QR decomposition, which LiteRT's built-in ops cannot run."""

    def call(self, x):
        r = keras.ops.linalg.qr(keras.ops.reshape(x, (-1, 4, 5)))[1]
        return keras.ops.reshape(r, (-1, 20))

    def compute_output_shape(self, input_shape):
        return input_shape


@requires_litert
class ExportStudentTest(TestCase):
    def setUp(self):
        super().setUp()
        self.dir = self.get_temp_dir()
        self.x, self.y = make_data(64)

    def export(self, model, name="student.tflite", **kwargs):
        return export.export_student(
            model, os.path.join(self.dir, name), **kwargs
        )

    def test_float32_matches_keras(self):
        student = make_student()
        path = self.export(student)
        self.assertEqual(path, os.path.join(self.dir, "student.tflite"))
        runner = export.LiteRTModel(path)
        self.assertEqual(runner.input_shape, (None, 20))
        self.assertEqual(runner.input_dtype, np.float32)
        actual = runner(self.x)
        expected = predict(student, self.x)
        self.assertGreaterEqual(agreement(actual, expected), 0.999)
        self.assertAllClose(actual, expected, atol=1e-4, rtol=1e-4)

    def test_conv_student_float32(self):
        _, student = make_conv_pair()
        x = np.random.default_rng(1).normal(size=(8, 16, 16, 3))
        runner = export.LiteRTModel(self.export(student))
        self.assertEqual(runner.input_shape, (None, 16, 16, 3))
        self.assertAllClose(runner(x), predict(student, x), atol=1e-4)

    def test_float16_is_close_and_smaller(self):
        student = make_student()
        float_path = self.export(student, "float.tflite")
        path = self.export(student, quantization="float16")
        actual = export.LiteRTModel(path)(self.x)
        expected = predict(student, self.x)
        self.assertAllClose(actual, expected, atol=2e-2, rtol=0)
        self.assertGreaterEqual(agreement(actual, expected), 0.98)
        self.assertLess(os.path.getsize(path), os.path.getsize(float_path))

    def test_dynamic_range_is_close_and_smaller(self):
        student = make_student()
        float_path = self.export(student, "float.tflite")
        path = self.export(student, quantization="dynamic")
        actual = export.LiteRTModel(path)(self.x)
        expected = predict(student, self.x)
        self.assertAllClose(actual, expected, atol=0.1, rtol=0)
        self.assertGreaterEqual(agreement(actual, expected), 0.95)
        self.assertLess(os.path.getsize(path), os.path.getsize(float_path))

    def test_int8_with_float_io(self):
        student = make_student()
        path = self.export(
            student, quantization="int8", representative_data=self.x
        )
        runner = export.LiteRTModel(path)
        self.assertEqual(runner.input_dtype, np.float32)
        self.assertIsNone(runner.input_quantization)
        actual = runner(self.x)
        expected = predict(student, self.x)
        self.assertEqual(actual.dtype, np.float32)
        self.assertAllClose(actual, expected, atol=0.3, rtol=0)
        self.assertGreaterEqual(agreement(actual, expected), 0.9)

    def test_int8_io(self):
        student = make_student()
        path = self.export(
            student,
            quantization="int8",
            representative_data=(self.x, self.y),
            int8_io=True,
        )
        runner = export.LiteRTModel(path)
        self.assertEqual(runner.input_dtype, np.int8)
        self.assertEqual(runner.output_dtype, np.int8)
        scale, zero_point = runner.input_quantization
        self.assertGreater(scale, 0)
        expected = predict(student, self.x)
        actual = runner(self.x)  # float in: quantized by the runner
        self.assertEqual(actual.dtype, np.float32)
        self.assertGreaterEqual(agreement(actual, expected), 0.9)
        # Raw int8 in and out, as an integer-only device sees it.
        q = np.clip(np.round(self.x / scale + zero_point), -128, 127)
        raw = runner(q.astype("int8"), dequantize=False)
        self.assertEqual(raw.dtype, np.int8)
        out_scale, out_zero_point = runner.output_quantization
        self.assertAllClose((raw.astype("float32") - out_zero_point)
                            * out_scale, actual, atol=1e-6)

    def test_dynamic_batch(self):
        student = make_student()
        runner = export.LiteRTModel(self.export(student))
        self.assertIsNone(runner.fixed_batch_size)
        for n in (1, 7, 64, 3):
            out = runner(self.x[:n])
            self.assertEqual(out.shape, (n, 10))
            self.assertAllClose(out, predict(student, self.x[:n]), atol=1e-4)
        self.assertAllClose(runner.predict(self.x, batch_size=5),
                            predict(student, self.x), atol=1e-4)

    def test_fixed_batch(self):
        student = make_student(batch_size=4)
        path = self.export(
            student, quantization="int8", representative_data=self.x
        )
        runner = export.LiteRTModel(path)
        self.assertEqual(runner.input_shape, (4, 20))
        self.assertEqual(runner(self.x[:4]).shape, (4, 10))
        with self.assertRaisesRegex(ValueError, "fixed batch size of 4"):
            runner(self.x[:3])
        out = runner.predict(self.x[:10])
        self.assertEqual(out.shape, (10, 10))
        self.assertGreaterEqual(
            agreement(out, predict(student, self.x[:10])), 0.9
        )

    @parameterized.named_parameters(
        ("array", lambda x, y: x),
        ("tuple", lambda x, y: (x, y)),
        ("batches", lambda x, y: [(x[:32], y[:32]), (x[32:], y[32:])]),
        ("generator", lambda x, y: (x[i : i + 8] for i in range(0, 64, 8))),
    )
    def test_representative_data_forms(self, make):
        path = self.export(
            make_student(),
            quantization="int8",
            representative_data=make(self.x, self.y),
            representative_steps=16,
        )
        self.assertTrue(os.path.exists(path))

    def test_representative_tf_data(self):
        tf = pytest.importorskip("tensorflow")
        dataset = tf.data.Dataset.from_tensor_slices((self.x, self.y))
        path = self.export(
            make_student(),
            quantization="int8",
            representative_data=dataset.batch(16),
        )
        self.assertTrue(os.path.exists(path))

    def test_calibration_takes_single_examples_up_to_steps(self):
        batches = [self.x[:10], self.x[10:40], self.x[40:]]
        samples = _data.calibration_samples(batches, 25, (None, 20), "float32")
        self.assertLen(samples, 25)
        self.assertEqual(samples[0].shape, (1, 20))
        self.assertAllEqual(np.concatenate(samples), self.x[:25])
        fixed = _data.calibration_samples(self.x, 100, (4, 20), "float32")
        self.assertLen(fixed, 16)
        self.assertEqual(fixed[0].shape, (4, 20))

    def test_distiller_exports_the_student_only(self):
        teacher, student = make_dense_pair()
        distiller = keras_kd.Distiller(
            teacher,
            student,
            features=[keras_kd.FeatureMatch("t_hidden2", "s_hidden")],
        )
        runner = export.LiteRTModel(self.export(distiller))
        self.assertAllClose(runner(self.x), predict(student, self.x),
                            atol=1e-4)
        # Only the teacher (32 units) and the head (16 -> 32) have a 32.
        shapes = [tuple(t["shape"])
                  for t in runner.interpreter.get_tensor_details()]
        self.assertFalse([s for s in shapes if 32 in s], shapes)

    def test_warns_about_student_preprocessing(self):
        holder = types.SimpleNamespace(
            student=make_student(), student_preprocessing=lambda x: x
        )
        with self.assertWarnsRegex(UserWarning, "student_preprocessing"):
            self.export(holder)

    def test_warns_that_representative_data_is_ignored(self):
        with self.assertWarnsRegex(UserWarning, "only used with"):
            self.export(make_student(), representative_data=self.x)

    def test_replaces_existing_file_and_accepts_pathlib(self):
        path = pathlib.Path(self.dir) / "student.tflite"
        path.write_bytes(b"old")
        self.assertEqual(
            export.export_student(make_student(), path), str(path)
        )
        self.assertNotEqual(path.read_bytes(), b"old")
        self.assertEqual(os.listdir(self.dir), ["student.tflite"])
        # Not the private mode of the temporary file.
        reference = pathlib.Path(self.dir) / "reference"
        reference.write_bytes(b"")
        self.assertEqual(path.stat().st_mode, reference.stat().st_mode)
        reference.unlink()

    def test_unsupported_ops_leave_no_file(self):
        inputs = keras.Input((20,))
        outputs = keras.layers.Dense(3)(QrLayer()(inputs))
        model = keras.Model(inputs, outputs, name="qr_student")
        path = os.path.join(self.dir, "student.tflite")
        with open(path, "wb") as f:
            f.write(b"old")
        with self.assertRaisesRegex(
            ValueError,
            "The student 'qr_student' uses operations that the LiteRT "
            "built-in op set cannot run",
        ) as context:
            export.export_student(model, path)
        if keras.backend.backend() == "tensorflow":
            self.assertIn("Qr", str(context.exception))
        self.assertIn("No file was written", str(context.exception))
        self.assertEqual(os.listdir(self.dir), ["student.tflite"])
        with open(path, "rb") as f:
            self.assertEqual(f.read(), b"old")

    def test_other_errors_leave_no_temp_file(self):
        x = np.zeros((4, 21), "float32")
        with self.assertRaisesRegex(ValueError, "inputs of shape"):
            self.export(make_student(), quantization="int8",
                        representative_data=x)
        self.assertEqual(os.listdir(self.dir), [])


class ExportArgumentTest(TestCase):
    """Bad input fails before anything is written (no interpreter needed)."""

    def setUp(self):
        super().setUp()
        self.dir = self.get_temp_dir()
        self.path = os.path.join(self.dir, "student.tflite")

    def tearDown(self):
        self.assertEqual(os.listdir(self.dir), [])
        super().tearDown()

    def test_path_must_end_in_tflite(self):
        path = os.path.join(self.dir, "x.onnx")
        with self.assertRaisesRegex(
            ValueError,
            re.escape(f"Argument `path` must end in `.tflite`. Received: "
                      f"path='{path}'"),
        ):
            export.export_student(make_student(), path)

    def test_path_type(self):
        with self.assertRaisesRegex(TypeError, "Received: path=3"):
            export.export_student(make_student(), 3)

    def test_missing_directory(self):
        path = os.path.join(self.dir, "missing", "student.tflite")
        with self.assertRaisesRegex(ValueError, "does not exist"):
            export.export_student(make_student(), path)

    def test_unknown_quantization(self):
        with self.assertRaisesRegex(
            ValueError, "Received: quantization='in8'. Did you mean 'int8'"
        ):
            export.export_student(make_student(), self.path,
                                  quantization="in8")

    def test_int8_needs_representative_data(self):
        with self.assertRaisesRegex(
            ValueError, "Received: representative_data=None"
        ):
            export.export_student(make_student(), self.path,
                                  quantization="int8")

    def test_int8_io_needs_int8(self):
        with self.assertRaisesRegex(
            ValueError, "Received: quantization='dynamic'"
        ):
            export.export_student(make_student(), self.path,
                                  quantization="dynamic", int8_io=True)

    @parameterized.named_parameters(
        ("zero", 0, ValueError, "Received: representative_steps=0"),
        ("string", "10", TypeError, "of type str"),
    )
    def test_representative_steps(self, steps, error, message):
        with self.assertRaisesRegex(error, message):
            export.export_student(
                make_student(), self.path, quantization="int8",
                representative_data=np.zeros((2, 20), "float32"),
                representative_steps=steps,
            )

    @parameterized.named_parameters(
        ("dict", {"x": np.zeros((2, 20))}, TypeError, "must be a NumPy"),
        ("string", "data.npy", TypeError, "must be a NumPy"),
        ("empty", [], ValueError, "yielded no examples"),
    )
    def test_bad_representative_data(self, data, error, message):
        with self.assertRaisesRegex(error, message):
            export.export_student(make_student(), self.path,
                                  quantization="int8",
                                  representative_data=data)

    @parameterized.named_parameters(("nan", np.nan), ("inf", np.inf))
    def test_non_finite_representative_data(self, value):
        x = np.zeros((6, 20), "float32")
        x[4, 3] = value
        with self.assertRaisesRegex(
            ValueError, r"Argument `representative_data` must hold finite "
            r"numbers.*Received: representative_data with 1 NaN or Inf "
            r"values in 1 example\(s\), the first at index 4"
        ):
            export.export_student(make_student(), self.path,
                                  quantization="int8", representative_data=x)

    def test_unwritable_folder_names_the_users_path(self):
        real_access = os.access

        def access(path, mode):
            return False if path == self.dir else real_access(path, mode)

        with mock.patch("os.access", access):
            with self.assertRaisesRegex(PermissionError, "") as context:
                export.export_student(make_student(), self.path)
        message = str(context.exception)
        self.assertIn(f"the folder {self.dir!r} is not writable", message)
        self.assertIn(f"Received: path={self.path!r}", message)
        self.assertNotIn(".tmp", message)

    def test_failed_temporary_file_names_the_users_path(self):
        def refuse(path, suffix):
            temp = os.path.join(os.path.dirname(path), ".s.1234.tmp.tflite")
            raise PermissionError(13, "Permission denied", temp)

        with mock.patch.object(io, "_new_temp_file", refuse):
            with self.assertRaises(PermissionError) as context:
                export.export_student(make_student(), self.path)
        message = str(context.exception)
        self.assertIn("Argument `path` could not be written (Permission "
                      "denied)", message)
        self.assertIn(f"Received: path={self.path!r}", message)
        self.assertNotIn(".tmp", message)

    def test_a_folder_is_not_a_path(self):
        folder = os.path.join(self.dir, "out.tflite")
        os.makedirs(folder)
        with self.assertRaisesRegex(ValueError, "is a folder"):
            export.export_student(make_student(), folder)
        os.rmdir(folder)

    def test_model_type(self):
        with self.assertRaisesRegex(TypeError, "keras_kd.Distiller"):
            export.export_student("student.keras", self.path)

    def test_unbuilt_model(self):
        model = keras.Sequential([keras.layers.Dense(2)])
        with self.assertRaisesRegex(ValueError, "is not built"):
            export.export_student(model, self.path)

    def test_backend_without_litert_export(self):
        with mock.patch("keras.backend.backend", return_value="numpy"):
            with self.assertRaisesRegex(
                NotImplementedError, "KERAS_BACKEND=tensorflow.*"
                "Received: backend='numpy'"
            ):
                export.export_student(make_student(), self.path)

    def test_jax_without_tensorflow(self):
        student = make_student()
        with mock.patch("keras.backend.backend", return_value="jax"), \
                mock.patch.dict(sys.modules, {"tensorflow": None}):
            with self.assertRaisesRegex(
                ImportError,
                r"pip install tensorflow.*student\.save\('student\.keras'\)"
                r".*KERAS_BACKEND=tensorflow",
            ):
                export.export_student(student, self.path)


class LiteRTModelTest(TestCase):
    def test_import_error_names_the_extra(self):
        blocked = {"ai_edge_litert": None, "ai_edge_litert.interpreter": None,
                   "tensorflow": None}
        with mock.patch.dict(sys.modules, blocked):
            with self.assertRaisesRegex(
                ImportError, re.escape(LITERT_IMPORT_MESSAGE)
            ):
                export.LiteRTModel("student.tflite")
        self.assertEqual(
            LITERT_IMPORT_MESSAGE,
            "keras_kd.export requires ai-edge-litert. Install it with: "
            "pip install 'keras-kd[litert]'",
        )

    def test_falls_back_to_tf_lite_interpreter(self):
        tf = pytest.importorskip("tensorflow")
        blocked = {"ai_edge_litert": None, "ai_edge_litert.interpreter": None}
        with mock.patch.dict(sys.modules, blocked):
            from keras_kd.export.litert_model import interpreter_class

            self.assertIs(interpreter_class(), tf.lite.Interpreter)

    @requires_litert
    def test_bad_inputs(self):
        path = os.path.join(self.get_temp_dir(), "student.tflite")
        runner = export.LiteRTModel(
            export.export_student(make_student(), path)
        )
        with self.assertRaisesRegex(ValueError, r"shape \(None, 20\)"):
            runner(np.zeros((2, 21), "float32"))
        with self.assertRaisesRegex(TypeError, "Received: inputs of dtype"):
            runner(np.full((2, 20), "a"))
        with self.assertRaisesRegex(ValueError, "yielded no examples"):
            runner.predict(np.zeros((0, 20), "float32"))
        self.assertIn("input_shape=(None, 20)", repr(runner))

    @requires_litert
    def test_multiple_inputs_not_implemented(self):
        a, b = keras.Input((3,)), keras.Input((4,))
        out = keras.layers.Dense(2)(keras.layers.Concatenate()([a, b]))
        path = os.path.join(self.get_temp_dir(), "two.tflite")
        export.export_student(keras.Model([a, b], out), path)
        with self.assertRaisesRegex(NotImplementedError, "2 inputs"):
            export.LiteRTModel(path)


class LazyImportTest(TestCase):
    def test_import_does_not_load_litert_or_tensorflow(self):
        code = (
            "import sys, keras_kd; "
            "before = 'tensorflow' in sys.modules; "
            "import keras_kd.export; "
            "print('ai_edge_litert' in sys.modules, "
            "before == ('tensorflow' in sys.modules))"
        )
        root = os.path.dirname(os.path.dirname(os.path.dirname(
            os.path.abspath(__file__))))
        result = subprocess.run([sys.executable, "-c", code], cwd=root,
                                capture_output=True, text=True, check=True)
        self.assertEqual(result.stdout.split(), ["False", "True"])
