"""Helpers of the `keras-kd` command-line tests: tiny models and data, and
`run_cli`, which drives `python -m keras_kd` through `subprocess`."""

import dataclasses
import os
import re
import shutil
import subprocess
import sys
import tempfile

import keras
import numpy as np

from tests.test_case import TestCase

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))

# Lines TensorFlow's C++ runtime writes while it loads, before any keras_kd
# code runs (absl logs them ahead of `InitializeLog`, whatever
# TF_CPP_MIN_LOG_LEVEL says). The CLI's own error is the one other line.
_RUNTIME_NOISE = re.compile(
    r"^(WARNING: All log messages before absl::InitializeLog|"
    r"[IWE]\d{4} |To enable the following instructions|"
    r"INFO: Created TensorFlow Lite)"
)


@dataclasses.dataclass
class Result:
    returncode: int
    stdout: str
    stderr: str

    @property
    def messages(self):
        """stderr without the runtime's load-time lines."""
        return [line for line in self.stderr.splitlines()
                if line.strip() and not _RUNTIME_NOISE.match(line)]

    def __str__(self):
        return (f"exit {self.returncode}\n--- stdout\n{self.stdout[-3000:]}"
                f"\n--- stderr\n{self.stderr[-3000:]}")


def start_cli(args, cwd):
    """Starts `python -m keras_kd ARGS` in `cwd`; returns the `Popen`."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONUNBUFFERED="1",
               PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH",
                                                             ""))
    return subprocess.Popen(
        [sys.executable, "-m", "keras_kd", *map(str, args)], cwd=cwd,
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(process, timeout=600):
    stdout, stderr = process.communicate(timeout=timeout)
    return Result(process.returncode, stdout, stderr)


def run_cli(args, cwd, timeout=600):
    """Runs `python -m keras_kd ARGS` in `cwd` and returns a `Result`."""
    return finish(start_cli(args, cwd), timeout)


def assert_one_line_error(result, code, pattern, command):
    """The exit code, then exactly one line of error text, no traceback."""
    assert result.returncode == code, str(result)
    assert "Traceback" not in result.stderr, str(result)
    errors = [line for line in result.messages if ": error: " in line]
    assert len(errors) == 1, str(result)
    assert errors[0].startswith(f"keras-kd {command}: error: "), str(result)
    assert re.search(pattern, errors[0]), str(result)
    return errors[0]


def write_models(folder):
    """Tiny digits teacher, students and a mismatched student (`.keras`)."""
    keras.utils.set_random_seed(0)
    layers = keras.layers
    teacher = keras.Sequential([
        keras.Input((8, 8, 1)), layers.Flatten(),
        layers.Dense(16, activation="relu", name="embedding"),
        layers.Dense(10, name="logits")], name="teacher")
    student = keras.Sequential([
        keras.Input((8, 8, 1)), layers.Flatten(),
        layers.Dense(8, activation="relu", name="hidden"),
        layers.Dense(10, name="logits")], name="student")
    five = keras.Sequential([
        keras.Input((8, 8, 1)), layers.Flatten(),
        layers.Dense(5, name="logits")], name="five_classes")
    paths = {}
    for name, model in (("teacher", teacher), ("student", student),
                        ("five", five)):
        paths[name] = os.path.join(folder, f"{name}.keras")
        model.save(paths[name])
    return paths


def write_npz(path, train=64, test=32, seed=0):
    """A tiny dataset in the keras.datasets layout (uint8 8x8 images)."""
    rng = np.random.default_rng(seed)
    np.savez(path,
             x_train=rng.integers(0, 256, (train, 8, 8), dtype=np.uint8),
             y_train=rng.integers(0, 10, (train,)),
             x_test=rng.integers(0, 256, (test, 8, 8), dtype=np.uint8),
             y_test=rng.integers(0, 10, (test,)))
    return path


def is_png(path):
    with open(path, "rb") as f:
        return f.read(8) == b"\x89PNG\r\n\x1a\n"


def call_main(args):
    """Runs `keras_kd.cli.main(ARGS)` in this process.

    Returns:
        `(exit_code, stdout, stderr)`.
    """
    import contextlib
    import io

    from keras_kd.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main([str(a) for a in args])
    return code, out.getvalue(), err.getvalue()


class CommandTestCase(TestCase):
    """Writes the tiny models and `tiny.npz` once per test class, in
    `cls.folder` (`cls.models`, `cls.npz`), and removes them after."""

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.folder = tempfile.mkdtemp()
        cls.models = write_models(cls.folder)
        cls.npz = write_npz(os.path.join(cls.folder, "tiny.npz"))

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.folder, ignore_errors=True)
        super().tearDownClass()
