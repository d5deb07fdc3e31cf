"""Runs every example with `--quick`, so none of them rots.

On TensorFlow only: the examples are backend-agnostic scripts whose pieces
have their own tests on every backend, and running all of them again on JAX
would cost CI about ten minutes.
"""

import glob
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXAMPLES = sorted(glob.glob(os.path.join(ROOT, "examples", "*.py")))


@pytest.mark.slow
@pytest.mark.backends("tensorflow")
@pytest.mark.parametrize("path", EXAMPLES, ids=os.path.basename)
def test_example_runs(path, tmp_path):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    result = subprocess.run(
        [sys.executable, path, "--quick"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]


def test_there_are_examples():
    assert len(EXAMPLES) >= 1
