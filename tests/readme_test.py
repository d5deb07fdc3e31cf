"""The README's Python blocks run as written, in order; its custom term is the
example's."""

import os
import re
import subprocess
import sys

import keras
import numpy as np
import pytest

import keras_kd
from tests.conftest import make_data
from tests.conftest import make_dense_pair
from tests.test_case import TestCase

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def readme_blocks():
    """Every ```python block of the README, in order."""
    with open(os.path.join(ROOT, "README.md")) as f:
        return re.findall(r"```python\n(.*?)```", f.read(), re.S)


def readme_block(heading):
    with open(os.path.join(ROOT, "README.md")) as f:
        text = f.read()
    section = text.split(heading, 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


class ReadmeTermTest(TestCase):
    def test_write_your_own_term_runs(self):
        code = readme_block("### Write your own term")
        teacher, student = make_dense_pair()
        x, y = make_data(32)
        namespace = {"keras": keras, "keras_kd": keras_kd, "teacher": teacher,
                     "student": student, "x": x, "y": y}
        exec(compile(code, "README.md", "exec"), namespace)
        history = namespace["distiller"].history.history
        self.assertEqual(sorted(history), ["hard_loss", "logit_mse", "loss",
                                           "teacher_agreement"])
        self.assertTrue(np.all(np.isfinite(history["logit_mse"])))

    def test_the_example_defines_the_same_term(self):
        code = readme_block("### Write your own term")
        term = code.split("\n\n\ndistiller")[0].replace("keras.ops.", "ops.")
        with open(os.path.join(ROOT, "examples", "custom_term.py")) as f:
            self.assertIn(term.strip(), f.read())


@pytest.mark.slow
@pytest.mark.backends("tensorflow")
def test_every_python_block_runs_in_order(tmp_path):
    """All blocks as one script, in a fresh process (the mixed-precision
    and distribution blocks change global state), in an empty folder."""
    blocks = readme_blocks()
    assert len(blocks) >= 10, len(blocks)
    script = "\n\n".join(
        f"# --- README block {i} ---\n{block}"
        for i, block in enumerate(blocks, start=1))
    script += "\nprint('README blocks: all ran')\n"
    (tmp_path / "readme_blocks.py").write_text(script)
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3",
               KERAS_BACKEND="tensorflow")
    result = subprocess.run(
        [sys.executable, "readme_blocks.py"], cwd=tmp_path, env=env,
        capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, (result.stdout[-3000:]
                                    + result.stderr[-5000:])
    assert "README blocks: all ran" in result.stdout
    for name in ("student.keras", "student_int8.tflite", "trials.png"):
        assert (tmp_path / name).exists(), name
