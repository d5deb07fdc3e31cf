"""The README's "Write your own term" code runs, and matches the example."""

import os
import re

import keras
import numpy as np

import keras_kd
from tests.conftest import make_data
from tests.conftest import make_dense_pair
from tests.test_case import TestCase

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


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
