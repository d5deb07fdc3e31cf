"""`keras-kd distill --quantize-aware` and `keras-kd export --quantization
int8` of a quantize-aware student (keras_kd/cli/distill.py, export.py)."""

import os

import keras
import pytest

from keras_kd import quantization
from tests import cli

try:
    import ai_edge_litert  # noqa: F401

    LITERT_AVAILABLE = True
except ImportError:
    LITERT_AVAILABLE = False


@pytest.mark.skipif(not LITERT_AVAILABLE,
                    reason="`ai_edge_litert` is not available.")
@pytest.mark.backends("tensorflow")
class QuantizeAwareCommandTest(cli.CommandTestCase):
    def test_distill_quantize_aware_then_export(self):
        out = self.get_temp_dir()
        student = os.path.join(out, "qat.keras")
        tflite = os.path.join(out, "qat.tflite")
        code, stdout, err = cli.call_main([
            "distill", self.models["teacher"], self.models["student"],
            "--data", self.npz, "--epochs", "1", "--alpha", "0",
            "--quantize-aware", "--output", student, "--tflite", tflite,
            "--quantize", "int8", "--verbose", "0",
        ])
        self.assertEqual(code, 0, err)
        self.assertIn("Quantize-aware student", stdout)
        self.assertRegex(stdout, r"quantization +int8")
        revived = keras.saving.load_model(student)
        self.assertTrue(quantization.is_quantize_aware(revived))
        self.assertTrue(os.path.exists(tflite))

        # `export` needs no representative data for it.
        again = os.path.join(out, "again.tflite")
        code, stdout, err = cli.call_main([
            "export", student, "--quantization", "int8", "--eval-data",
            self.npz, "--output", again,
        ])
        self.assertEqual(code, 0, err)
        self.assertRegex(stdout, r"quantization +int8")
        self.assertRegex(stdout, r"top-1 agreement +100\.00%")
        self.assertIn("int8 steps", stdout)

    def test_float_student_still_needs_representative_data(self):
        code, _, err = cli.call_main([
            "export", self.models["student"], "--quantization", "int8"])
        self.assertEqual(code, 2)
        self.assertIn("`--quantize int8` needs `--representative-data "
                      "DATA`", err)
        self.assertIn("--quantize-aware", err)
