"""Tests of keras_kd/cli/__init__.py: `main`, the parser and exit codes."""

import glob
import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
from unittest import mock

import pytest
from absl.testing import parameterized

import keras_kd
from keras_kd.cli import export as cli_export
from keras_kd.cli import _common
from tests import cli
from tests.test_case import TestCase

COMMANDS = ("demo", "distill", "tune", "export", "compress")
MODELS = ["t.keras", "s.keras", "--data", "digits"]

# Numbers out of range: `(command arguments, message)`. Each is refused
# while the arguments are parsed, before any file is read or anything is
# imported.
BAD_NUMBERS = (
    ("learning_rate", ["distill", *MODELS, "--learning-rate", "-1"],
     "`--learning-rate` must be a positive finite number. Received: "
     "--learning-rate=-1.0"),
    ("temperature_zero", ["distill", *MODELS, "--temperature", "0"],
     "`--temperature` must be a positive finite number"),
    ("temperature_nan", ["distill", *MODELS, "--temperature", "nan"],
     "`--temperature` must be a positive finite number. Received: "
     "--temperature=nan"),
    ("alpha", ["distill", *MODELS, "--alpha", "1.5"],
     r"`--alpha` must be a number in \[0, 1\]. Received: --alpha=1.5"),
    ("epochs", ["distill", *MODELS, "--epochs", "0"],
     "`--epochs` must be at least 1. Received: --epochs=0"),
    ("batch_size", ["distill", *MODELS, "--batch-size", "-4"],
     "`--batch-size` must be at least 1"),
    ("feature_weight", ["distill", *MODELS, "--feature-weight", "-1"],
     "`--feature-weight` must be a finite number >= 0"),
    ("validation_split", ["distill", *MODELS, "--validation-split", "1"],
     r"`--validation-split` must be a number in \[0, 1\)"),
    ("seed", ["distill", *MODELS, "--seed", "-1"],
     "`--seed` must be an integer >= 0"),
    ("image_size", ["distill", *MODELS, "--image-size", "0", "8"],
     "`--image-size` must be at least 1 \\(each value\\). Received: "
     "--image-size=0 8"),
    ("tune_learning_rate", ["tune", *MODELS, "--learning-rate", "0"],
     "`--learning-rate` must be a positive finite number"),
    ("tune_max_trials", ["tune", *MODELS, "--max-trials", "0"],
     "`--max-trials` must be at least 1"),
    ("tune_grid_size", ["tune", *MODELS, "--grid-size", "0"],
     "`--grid-size` must be at least 1"),
    ("tune_temperature_range", ["tune", *MODELS, "--temperature-range",
                                "0", "4"],
     "`--temperature-range` must be a positive finite number"),
    ("tune_reversed_range", ["tune", *MODELS, "--temperature-range", "8",
                             "2"],
     "`--temperature-range` is a range MIN MAX whose MIN is larger than "
     "its MAX. Received: --temperature-range=8.0 2.0. Pass "
     "--temperature-range 2.0 8.0"),
    ("export_steps", ["export", "s.keras", "--representative-steps", "0"],
     "`--representative-steps` must be at least 1"),
    ("export_max_examples", ["export", "s.keras", "--max-examples", "-2"],
     "`--max-examples` must be at least 1"),
    ("demo_temperature", ["demo", "--temperature", "-3"],
     "`--temperature` must be a positive finite number. Received: "
     "--temperature=-3.0"),
    ("demo_alpha", ["demo", "--alpha", "5"],
     r"`--alpha` must be a number in \[0, 1\]. Received: --alpha=5.0"),
    ("demo_feature_weight", ["demo", "--feature-weight", "inf"],
     "`--feature-weight` must be a finite number >= 0"),
    ("demo_epochs", ["demo", "--teacher-epochs", "0"],
     "`--teacher-epochs` must be at least 1"),
)


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
        self.assertIn("keras-kd export: error: argument "
                      "--quantize/--quantization: invalid choice: 'int4'", err)

    def test_bad_number_is_one_line(self):
        code, _, err = cli.call_main(["demo", "--seeds", "0"])
        self.assertEqual(code, 2)
        self.assertEqual(
            err, "keras-kd demo: error: Argument `--seeds` must be at least "
            "1. Received: --seeds=0\n")

    @parameterized.named_parameters(*BAD_NUMBERS)
    def test_numbers_are_checked_while_parsing(self, args, message):
        boom = AssertionError("the backend was imported")
        with mock.patch.object(_common, "import_backend", side_effect=boom):
            code, out, err = cli.call_main(args)
        self.assertEqual(code, 2, err)
        self.assertEqual(out, "")
        self.assertEqual(len(err.splitlines()), 1, err)
        self.assertRegex(err, rf"^keras-kd {args[0]}: error: Argument "
                         rf"{message}")

    def test_quantization_modes_match_the_export(self):
        from keras_kd import export

        self.assertEqual(_common.QUANTIZATION_MODES,
                         export.QUANTIZATION_MODES)

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

        with mock.patch.object(cli_export, "run", fail), \
                mock.patch.object(cli_export, "check", lambda args: None):
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


# Runs `main` on a `keras_kd` package object that does not execute
# keras_kd/__init__.py (which imports Keras for the library), so the test
# sees what the command line itself imports.
_WITHOUT_PACKAGE_INIT = textwrap.dedent("""
    import json, os, sys, time, types
    package = types.ModuleType("keras_kd")
    package.__path__ = [os.path.join(sys.argv[1], "keras_kd")]
    sys.modules["keras_kd"] = package
    from keras_kd.cli import main
    start = time.perf_counter()
    codes = [main(args.split()) for args in sys.argv[2:]]
    seconds = time.perf_counter() - start
    heavy = [m for m in ("keras", "tensorflow", "jax") if m in sys.modules]
    print("RESULT " + json.dumps([codes, heavy, seconds]),
          file=sys.__stderr__)
""")


def run_without_package_init(*commands, cwd=None):
    result = subprocess.run(
        [sys.executable, "-c", _WITHOUT_PACKAGE_INIT, cli.ROOT, *commands],
        capture_output=True, text=True, timeout=600, cwd=cwd)
    line = [x for x in result.stderr.splitlines() if x.startswith("RESULT")]
    assert line, result.stderr[-3000:]
    return result, json.loads(line[0][len("RESULT "):])


class FirstMinutesTest(TestCase):
    def test_help_and_argument_errors_do_not_import_keras(self):
        folder = self.get_temp_dir()
        result, (codes, heavy, seconds) = run_without_package_init(
            "--help", "distill --help", "demo --alpha 5",
            "distill t.keras s.keras --data d.npz --learning-rate -1",
            "export missing.keras", cwd=folder)
        self.assertEqual(codes, [0, 0, 2, 2, 2])
        self.assertEqual(heavy, [], "imported before parsing")
        self.assertLess(seconds, 2.0)
        self.assertIn("usage: keras-kd", result.stdout)

    @pytest.mark.slow
    def test_export_prints_only_keras_kd_output(self):
        folder = self.get_temp_dir()
        paths = cli.write_models(folder)
        npz = cli.write_npz(os.path.join(folder, "tiny.npz"))
        env_level = os.environ.pop("TF_CPP_MIN_LOG_LEVEL", None)
        try:
            result, (codes, _, _) = run_without_package_init(
                f"export {paths['student']} --quantize float16 --output "
                f"s.tflite --eval-data {npz}", cwd=folder)
        finally:
            if env_level is not None:
                os.environ["TF_CPP_MIN_LOG_LEVEL"] = env_level
        self.assertEqual(codes, [0])
        others = [x for x in result.stderr.splitlines()
                  if not x.startswith("RESULT")]
        self.assertEqual(others, [], "C++ logs leaked:\n" + result.stderr)
        self.assertIn("LiteRT parity report: s.tflite", result.stdout)


def test_native_output_is_silenced_but_python_stderr_is_not(capfd):
    with _common.native_output_silenced():
        os.write(2, b"I0000 native start-up line\n")
        print("keras-kd: warning: from Python", file=sys.stderr)
    os.write(2, b"after\n")
    with _common.native_output_silenced(enabled=False):  # --debug
        os.write(2, b"debug line\n")
    _, err = capfd.readouterr()
    assert "native start-up line" not in err
    assert "keras-kd: warning: from Python" in err
    assert "after" in err and "debug line" in err


def test_the_command_line_parses_before_importing_keras():
    """Started as `keras-kd`, the package defers Keras until after parsing,
    so `--help` and argument errors do not wait for TensorFlow."""
    import subprocess
    import sys

    code = ("import sys; sys.argv = ['keras-kd', '--help']\n"
            "import keras_kd.cli\n"
            "loaded = 'keras' in sys.modules\n"
            "try:\n    keras_kd.cli.main(['--help'])\n"
            "except SystemExit:\n    pass\n"
            "print('KERAS_LOADED', loaded, 'keras' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True,
                         text=True, timeout=120)
    assert "KERAS_LOADED False False" in out.stdout, out.stdout + out.stderr
    # A library import still registers every class at once.
    out = subprocess.run(
        [sys.executable, "-c", "import sys, keras_kd; "
         "print('DISTILLER' if 'keras_kd.distiller' in sys.modules else '')"],
        capture_output=True, text=True, timeout=300)
    assert "DISTILLER" in out.stdout, out.stderr[-2000:]
