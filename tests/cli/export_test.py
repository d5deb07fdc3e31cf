"""Tests of keras_kd/cli/export.py (`keras-kd export`)."""

import os

import pytest

from keras_kd.cli import export as cli_export
from tests import cli


class ExportCommandTest(cli.CommandTestCase):
    @pytest.mark.slow
    def test_int8_export_with_parity_report(self):
        out = self.get_temp_dir()
        result = cli.run_cli([
            "export", self.models["student"], "--quantize", "int8",
            "--representative-data", self.npz, "--representative-steps",
            "16", "--eval-data", "digits", "--output", "int8/s.tflite",
        ], cwd=out)
        self.assertEqual(result.returncode, 0, str(result))
        self.assertNotIn("Traceback", result.stderr)
        path = os.path.join(out, "int8", "s.tflite")
        with open(path, "rb") as f:
            self.assertEqual(f.read(8)[4:8], b"TFL3")
        self.assertIn("LiteRT parity report: s.tflite", result.stdout)
        self.assertRegex(result.stdout, r"quantization +int8")
        self.assertRegex(result.stdout, r"examples +449")  # digits test
        self.assertRegex(result.stdout, r"accuracy, LiteRT +\d+\.\d+%")

    @pytest.mark.slow
    def test_bad_quantize_through_the_console(self):
        result = cli.run_cli(["export", self.models["student"],
                              "--quantize", "int4"], cwd=self.folder)
        cli.assert_one_line_error(
            result, 2, r"argument --quantize/--quantization: invalid "
            r"choice: 'int4' \(choose from 'none', 'float16', 'dynamic', "
            r"'int8'\)",
            "export")

    @pytest.mark.backends("tensorflow", "jax")
    def test_float16_without_eval_data(self):
        output = os.path.join(self.get_temp_dir(), "s.tflite")
        code, out, err = cli.call_main([
            "export", self.models["student"], "--quantize", "float16",
            "--output", output])
        self.assertEqual(code, 0, err)
        self.assertTrue(os.path.exists(output))
        self.assertIn("float16", out)
        self.assertIn("Pass --eval-data DATA for a parity report", out)

    def test_int8_needs_representative_data(self):
        code, _, err = cli.call_main([
            "export", self.models["student"], "--quantize", "int8"])
        self.assertEqual(code, 2)
        self.assertEqual(len(err.splitlines()), 1)
        self.assertIn("`--quantize int8` needs `--representative-data "
                      "DATA`", err)

    def test_int8_io_needs_int8(self):
        code, _, err = cli.call_main([
            "export", self.models["student"], "--quantize", "dynamic",
            "--int8-io"])
        self.assertEqual(code, 2)
        self.assertIn("`--int8-io` needs `--quantize int8`. Received: "
                      "--quantize=dynamic", err)

    def test_output_must_be_tflite(self):
        code, _, err = cli.call_main([
            "export", self.models["student"], "--output", "s.keras"])
        self.assertEqual(code, 2)
        self.assertIn("`--output` must be a path ending in `.tflite`", err)

    def test_labels_outside_the_classes(self):
        code, _, err = cli.call_main([
            "export", self.models["five"], "--eval-data", self.npz,
            "--output", os.path.join(self.get_temp_dir(), "s.tflite")])
        self.assertEqual(code, 2)
        self.assertIn("must lie in [0, 5)", err)

    def test_default_output(self):
        self.assertEqual(cli_export.default_output("a/s.keras", "none"),
                         "a/s.tflite")
        self.assertEqual(cli_export.default_output("s.keras", "int8"),
                         "s_int8.tflite")
