"""keras_kd's TestCase: value assertions on tensors and serialization trips."""

import json
import os
import tempfile

import keras
import numpy as np
from absl.testing import parameterized


class TestCase(parameterized.TestCase):
    """Base class of keras_kd tests (Keras' own TestCase is private)."""

    # Seeding and `clear_session` happen in the autouse fixture of
    # conftest.py, once per test.

    def get_temp_dir(self):
        temp_dir = tempfile.mkdtemp()
        self.addCleanup(lambda: _rmtree(temp_dir))
        return temp_dir

    def assertAllClose(self, actual, expected, atol=1e-6, rtol=1e-6, msg=""):
        np.testing.assert_allclose(
            np.asarray(keras.ops.convert_to_numpy(actual), dtype="float64"),
            np.asarray(keras.ops.convert_to_numpy(expected), dtype="float64"),
            atol=atol,
            rtol=rtol,
            err_msg=msg,
        )

    def assertAllEqual(self, actual, expected, msg=""):
        np.testing.assert_array_equal(
            keras.ops.convert_to_numpy(actual),
            keras.ops.convert_to_numpy(expected),
            err_msg=msg,
        )

    def run_serialization_test(self, instance, custom_objects=None):
        """Config and JSON round trips give an equal config."""
        config = instance.get_config()
        revived = instance.__class__.from_config(config)
        self.assertEqual(_comparable(revived.get_config()), _comparable(config))
        serialized = keras.saving.serialize_keras_object(instance)
        text = json.dumps(serialized)
        revived = keras.saving.deserialize_keras_object(
            json.loads(text), custom_objects=custom_objects
        )
        self.assertIsInstance(revived, instance.__class__)
        self.assertEqual(_comparable(revived.get_config()), _comparable(config))
        return revived


def gradient(fn, x, compiled=False):
    """d sum(fn(x)) / dx with the backend's autodiff (XLA if `compiled`)."""
    x = np.asarray(x, "float32")
    if keras.backend.backend() == "jax":
        import jax

        grad = jax.grad(lambda v: keras.ops.sum(fn(v)))
        grad = jax.jit(grad) if compiled else grad
        return np.asarray(grad(jax.numpy.asarray(x)))
    if keras.backend.backend() == "torch":
        import torch

        # Keras runs torch eagerly in `fit` (no `jit_compile`), so the eager
        # gradient is the one that matters there.
        v = torch.tensor(x, requires_grad=True)
        keras.ops.sum(fn(v)).backward()
        return v.grad.detach().cpu().numpy()
    import tensorflow as tf

    def grad(v):
        with tf.GradientTape() as tape:
            tape.watch(v)
            value = keras.ops.sum(fn(v))
        return tape.gradient(value, v)

    if compiled:
        grad = tf.function(grad, jit_compile=True)
    return grad(tf.constant(x)).numpy()


def _comparable(config):
    return json.loads(json.dumps(config, default=str))


def _rmtree(path):
    import shutil

    if os.path.exists(path):
        shutil.rmtree(path, ignore_errors=True)
