"""Tests of keras_kd/cli/compress.py (`keras-kd compress`)."""

import os

import keras
import numpy as np
import pytest

import keras_kd.quantization
from tests import cli
from tests.test_case import TestCase

HAS_QUANTIZE_AWARE = hasattr(keras_kd.quantization, "quantize_aware")


class CompressCommandTest(cli.CommandTestCase):
    @pytest.mark.slow
    def test_compresses_digits_end_to_end(self):
        out = self.get_temp_dir()
        result = cli.run_cli([
            "compress", self.models["teacher"], "--data", "digits",
            "--width", "0.5", "--epochs", "2", "--output",
            "s/student.tflite"], cwd=out)
        self.assertEqual(result.returncode, 0, str(result))
        self.assertNotIn("Traceback", result.stderr)
        student = keras.saving.load_model(
            os.path.join(out, "s", "student.keras"), compile=False)
        self.assertEqual(student.get_layer("embedding").units, 8)
        self.assertEqual(student.get_layer("logits").units, 10)
        self.assertTrue(os.path.exists(os.path.join(out, "s",
                                                    "student.tflite")))
        for line in ("[1/5] shrink: 1,210 -> 610 parameters",
                     "[3/5] distill: 2 epoch(s)", "[4/5] export: int8",
                     "Epoch 2/2", "LiteRT parity report",
                     "student (shrunk, before training)",
                     "student (.tflite, int8)"):
            self.assertIn(line, result.stdout)
        # The teacher is an input: untouched.
        self.assertTrue(os.path.exists(self.models["teacher"]))

    @pytest.mark.slow
    def test_quiet_prints_results_only(self):
        out = self.get_temp_dir()
        result = cli.run_cli([
            "compress", self.models["teacher"], "--data", self.npz,
            "--width", "0.25", "--epochs", "1", "--quantize", "none",
            "--quiet", "--output", "student.tflite"], cwd=out)
        self.assertEqual(result.returncode, 0, str(result))
        self.assertNotIn("[1/", result.stdout)
        self.assertNotIn("Epoch", result.stdout)
        self.assertIn("student (distilled)", result.stdout)

    @pytest.mark.slow
    @pytest.mark.skipif(not HAS_QUANTIZE_AWARE,
                        reason="keras_kd.quantization.quantize_aware is not "
                        "available yet")
    def test_quantize_aware_end_to_end(self):
        out = self.get_temp_dir()
        result = cli.run_cli([
            "compress", self.models["teacher"], "--data", "digits",
            "--width", "0.5", "--epochs", "1", "--qat-epochs", "1",
            "--quantize-aware", "--output", "q.tflite"], cwd=out)
        self.assertEqual(result.returncode, 0, str(result))
        for line in ("[4/6] quantize-aware: 1 epoch(s), alpha=0",
                     "[5/6] export: int8", "LiteRT parity report",
                     "student (distilled, quantize-aware)"):
            self.assertIn(line, result.stdout)
        self.assertTrue(os.path.exists(os.path.join(out, "q.tflite")))

    def test_needs_depth_or_width(self):
        code, _, err = cli.call_main([
            "compress", self.models["teacher"], "--data", "digits",
            "--output", "s.tflite"])
        self.assertEqual(code, 2)
        self.assertIn("needs `--depth N`", err)

    def test_argument_errors(self):
        teacher = self.models["teacher"]
        for args, message in (
            (["--width", "0.5", "--output", "s.keras"],
             "`--output` must be a path ending in `.tflite`"),
            (["--width", "1.5", "--output", "s.tflite"],
             "Received: --width=1.5"),
            (["--width", "0", "--output", "s.tflite"],
             "`--width` must be a positive finite number"),
            (["--width", "0.5", "--quantize-aware", "--quantize", "none",
              "--output", "s.tflite"], "`--quantize-aware` needs"),
            (["--width", "0.5", "--output", "s.tflite", "--keras-output",
              teacher], "--keras-output"),
        ):
            code, _, err = cli.call_main(
                ["compress", teacher, "--data", "digits", *args])
            self.assertEqual(code, 2, err)
            self.assertIn(message, err)
            self.assertEqual(len(err.strip().splitlines()), 1, err)

    def test_depth_of_a_model_without_residual_blocks(self):
        code, _, err = cli.call_main([
            "compress", self.models["teacher"], "--data", self.npz,
            "--depth", "1", "--output",
            os.path.join(self.get_temp_dir(), "s.tflite")])
        self.assertEqual(code, 2)
        self.assertIn("has none", err)

    @pytest.mark.slow
    def test_importance_samples_zero_uses_magnitude(self):
        out = self.get_temp_dir()
        code, stdout, err = cli.call_main([
            "compress", self.models["teacher"], "--data", self.npz,
            "--width", "0.5", "--importance-samples", "0", "--epochs", "0",
            "--quantize", "none", "--quiet", "--output",
            os.path.join(out, "s.tflite")])
        self.assertEqual(code, 0, err)
        teacher = keras.saving.load_model(self.models["teacher"],
                                          compile=False)
        student = keras.saving.load_model(os.path.join(out, "s.keras"),
                                          compile=False)
        kernel = np.asarray(teacher.get_layer("embedding").kernel)
        kept = np.sort(np.argsort(-np.abs(kernel).sum(0))[:8])
        self.assertAllClose(np.asarray(student.get_layer("embedding").kernel),
                            kernel[:, kept])


class CompressHelpTest(TestCase):
    def test_help_shows_defaults_and_an_example(self):
        code, out, err = cli.call_main(["compress", "--help"])
        self.assertEqual(code, 0, err)
        self.assertIn("usage: keras-kd compress", out)
        self.assertIn("(default: ", out)
        self.assertRegex(out, r"example:\n  keras-kd compress\b")
