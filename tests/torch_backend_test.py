"""Checks specific to the PyTorch steps (`keras_kd/_steps/torch.py`).

The behaviour shared by every backend (losses, the frozen teacher, one
student pass per step, saving) is tested by the rest of the suite, which
also runs with `KERAS_BACKEND=torch`.
"""

import os

import keras
import numpy as np
import pytest

import keras_kd
from tests.conftest import make_data
from tests.conftest import make_dense_pair
from tests.test_case import TestCase

pytestmark = pytest.mark.skipif(
    keras.backend.backend() != "torch", reason="PyTorch steps."
)


def _recording(name, calls):
    """An identity layer that records whether autograd is on when called."""
    import torch

    class Record(keras.layers.Layer):
        def call(self, x):
            if x.device.type != "meta":  # skip symbolic shape inference
                calls.append(torch.is_grad_enabled())
            return x

    return Record(name=name)


def _wrapped_pair():
    teacher, student = make_dense_pair()
    teacher_calls, student_calls = [], []
    teacher = keras.Sequential(
        [keras.Input((20,)), _recording("t_record", teacher_calls), teacher]
    )
    student = keras.Sequential(
        [keras.Input((20,)), _recording("s_record", student_calls), student]
    )
    return teacher, student, teacher_calls, student_calls


class TorchStepsTest(TestCase):
    def test_teacher_runs_without_autograd_and_student_with_it(self):
        teacher, student, t_calls, s_calls = _wrapped_pair()
        d = keras_kd.Distiller(teacher, student)
        d.compile(optimizer="sgd")
        x, y = make_data(32)
        t_calls.clear()
        s_calls.clear()
        d.fit(x, y, batch_size=8, epochs=1, verbose=0)
        self.assertEqual(t_calls, [False] * 4)
        self.assertEqual(s_calls, [True] * 4)

    def test_evaluate_records_no_graph(self):
        teacher, student, t_calls, s_calls = _wrapped_pair()
        d = keras_kd.Distiller(teacher, student)
        d.compile(optimizer="sgd")
        x, y = make_data(32)
        t_calls.clear()
        s_calls.clear()
        d.evaluate(x, y, batch_size=8, verbose=0)
        self.assertEqual(t_calls, [False] * 4)
        self.assertEqual(s_calls, [False] * 4)

    def test_only_the_student_and_heads_get_gradients(self):
        teacher, student = make_dense_pair()
        d = keras_kd.Distiller(
            teacher, student,
            features=[keras_kd.FeatureMatch("t_hidden2", "s_hidden")],
        )
        d.compile(optimizer="sgd")
        x, y = make_data(32)
        d.fit(x, y, batch_size=8, epochs=1, verbose=0)
        for v in teacher.weights:
            self.assertIsNone(v.value.grad, v.path)
        heads = [v for m in d.features for v in m.trainable_weights]
        self.assertTrue(heads)
        for v in student.trainable_weights + heads:
            self.assertIsNotNone(v.value.grad, v.path)

    def test_gradients_do_not_accumulate_across_steps(self):
        # Two SGD steps on one batch: the second step's update is the
        # gradient at the new weights, not the sum of both gradients.
        teacher, student = make_dense_pair()
        d = keras_kd.Distiller(teacher, student)
        d.compile(optimizer=keras.optimizers.SGD(0.1))
        x, y = make_data(16)
        d.train_on_batch(x, y)
        first = [np.array(v.value.grad) for v in student.trainable_weights]
        d.train_on_batch(x, y)
        second = [np.array(v.value.grad) for v in student.trainable_weights]
        before = [keras.ops.convert_to_numpy(v) for v in student.weights]
        d.train_on_batch(x, y)
        third = [np.array(v.value.grad) for v in student.trainable_weights]
        after = [keras.ops.convert_to_numpy(v) for v in student.weights]
        for b, a, g in zip(before, after, third):
            self.assertAllClose(a, b - 0.1 * g, rtol=1e-5, atol=1e-7)
        for g1, g2, g3 in zip(first, second, third):
            self.assertFalse(np.allclose(g3, g1 + g2))

    def test_replica_helpers_are_the_identity(self):
        teacher, student = make_dense_pair()
        d = keras_kd.Distiller(teacher, student)
        value = keras.ops.ones((4, 3))
        self.assertIs(d._global_sum(value), value)
        self.assertIs(d._gather_batch(value), value)
        self.assertIs(d._local_rows(value, 4), value)


@pytest.mark.backends("torch")
def test_export_on_torch_says_what_to_do(tmp_path):
    teacher, student = make_dense_pair()
    path = str(tmp_path / "student.tflite")
    with pytest.raises(NotImplementedError, match="KERAS_BACKEND=tensorflow"):
        keras_kd.export.export_student(student, path)
    assert not os.path.exists(path)
