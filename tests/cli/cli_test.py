"""Tests of keras_kd/cli/__init__.py: `main`, the parser and exit codes."""

import glob
import os
import re
import shutil
import subprocess
from unittest import mock

import pytest
from absl.testing import parameterized

import keras_kd
from keras_kd.cli import export as cli_export
from keras_kd.cli import _common
from tests import cli
from tests.test_case import TestCase

COMMANDS = ("demo", "distill", "tune", "export")


class MainTest(TestCase):
    @parameterized.named_parameters(*[(c, c) for c in COMMANDS])
    def test_help_shows_defaults_and_an_example(self, command):
        code, out, err = cli.call_main([command, "--help"])
        self.assertEqual(code, 0, err)
        self.assertIn(f"usage: keras-kd {command}", out)
        self.assertIn("(default: ", out)
        self.assertRegex(out, rf"examples?:\n  keras-kd {command}\b")

    def test_top_level_help_lists_the_commands(self):
        code, out, _ = cli.call_main(["--help"])
        self.assertEqual(code, 0)
        for command in COMMANDS:
            self.assertRegex(out, rf"\n    {command} +\w")
        self.assertIn("keras-kd demo", out)

    def test_version(self):
        code, out, _ = cli.call_main(["--version"])
        self.assertEqual(code, 0)
        self.assertEqual(out.strip(), f"keras-kd {keras_kd.__version__}")

    def test_missing_command_is_a_usage_error(self):
        code, out, err = cli.call_main([])
        self.assertEqual(code, 2)
        self.assertEqual(out, "")
        self.assertEqual(
            err, "keras-kd: error: the following arguments are required: "
            "COMMAND (see 'keras-kd --help')\n")

    def test_unknown_command(self):
        code, _, err = cli.call_main(["distil"])
        self.assertEqual(code, 2)
        self.assertRegex(err, r"^keras-kd: error: argument COMMAND: invalid "
                         r"choice: 'distil'")

    def test_bad_choice_is_one_line(self):
        code, _, err = cli.call_main(["export", "student.keras",
                                      "--quantize", "int4"])
        self.assertEqual(code, 2)
        self.assertEqual(len(err.splitlines()), 1)
        self.assertIn("keras-kd export: error: argument --quantize: invalid "
                      "choice: 'int4'", err)

    def test_bad_number_is_one_line(self):
        code, _, err = cli.call_main(["demo", "--seeds", "0"])
        self.assertEqual(code, 2)
        self.assertEqual(
            err, "keras-kd demo: error: Argument `--seeds` must be at least "
            "1. Received: --seeds=0\n")

    def test_missing_file(self):
        code, _, err = cli.call_main(["export", "nothere.keras"])
        self.assertEqual(code, 2)
        self.assertRegex(err, r"^keras-kd export: error: Argument "
                         r"`STUDENT.keras` names a file that does not exist")

    def test_debug_shows_the_exception(self):
        with self.assertRaisesRegex(_common.UsageError, "does not exist"):
            cli.call_main(["export", "nothere.keras", "--debug"])

    def test_unexpected_error_is_one_line_with_its_type(self):
        class Boom(Exception):
            pass

        def fail(args):
            raise Boom("first line\nsecond line")

        with mock.patch.object(cli_export, "run", fail):
            code, _, err = cli.call_main(["export", "x.keras"])
        self.assertEqual(code, 1)
        self.assertEqual(
            err, "keras-kd export: error: Boom: first line second line (run "
            "with --debug for the traceback)\n")

    def test_nothing_outside_cli_imports_cli(self):
        package = os.path.dirname(keras_kd.__file__)
        pattern = re.compile(r"^\s*(from keras_kd import cli|from keras_kd"
                             r"\.cli|import keras_kd\.cli)", re.MULTILINE)
        for path in glob.glob(os.path.join(package, "**", "*.py"),
                              recursive=True):
            relative = os.path.relpath(path, package)
            if relative.startswith("cli" + os.sep) or \
                    relative == "__main__.py":
                continue
            with open(path) as f:
                self.assertIsNone(pattern.search(f.read()), relative)

    @pytest.mark.slow
    def test_console_script(self):
        script = shutil.which("keras-kd")
        if script is None:
            self.skipTest("the `keras-kd` script is not installed")
        result = subprocess.run([script, "--version"], capture_output=True,
                                text=True, timeout=300)
        self.assertEqual(result.returncode, 0, result.stderr[-2000:])
        self.assertIn(keras_kd.__version__, result.stdout)
