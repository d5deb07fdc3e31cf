"""`Distiller(teacher_dtype=...)`: the frozen teacher in reduced precision."""

import keras
import numpy as np

import keras_kd
from tests.conftest import make_conv_pair
from tests.test_case import TestCase


def _data(n=16, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 16, 16, 3)).astype("float32")
    y = rng.integers(0, 10, size=(n,)).astype("int32")
    return x, y


class TeacherDtypeTest(TestCase):
    def _teacher_logits(self, distiller, x):
        outputs = distiller._teacher_outputs(x, None)
        return np.asarray(keras.ops.convert_to_numpy(outputs[0][0]))

    def test_outputs_stay_close_and_are_float32(self):
        teacher, student = make_conv_pair()
        x, _ = _data()
        full = self._teacher_logits(keras_kd.Distiller(teacher, student), x)
        for dtype, rtol in (("bfloat16", 3e-2), ("float16", 3e-3)):
            d = keras_kd.Distiller(teacher, student, teacher_dtype=dtype)
            outputs = d._teacher_outputs(x, None)
            self.assertEqual(keras.backend.standardize_dtype(
                outputs[0][0].dtype), "float32")
            reduced = self._teacher_logits(d, x)
            scale = np.abs(full).max()
            error = np.abs(reduced - full).max() / scale
            self.assertLess(error, rtol, dtype)
            # It really ran in reduced precision: not bit-identical.
            self.assertGreater(error, 0.0, dtype)

    def test_users_teacher_keeps_its_policy(self):
        teacher, student = make_conv_pair()
        x, y = _data()
        before = {layer.name: layer.dtype_policy.name
                  for layer in teacher.layers}
        d = keras_kd.Distiller(teacher, student, teacher_dtype="bfloat16",
                               features=[keras_kd.FeatureMatch(
                                   "t_conv2", "s_conv1", batch_norm=False)])
        d.compile(optimizer="adam")
        history = d.fit(x, y, batch_size=8, epochs=1, verbose=0).history
        self.assertTrue(np.isfinite(history["loss"][0]))
        after = {layer.name: layer.dtype_policy.name
                 for layer in teacher.layers}
        self.assertEqual(before, after)
        out = teacher(x[:2])
        self.assertEqual(keras.backend.standardize_dtype(out.dtype),
                         "float32")

    def test_bad_dtype_is_refused_and_config_round_trips(self):
        teacher, student = make_conv_pair()
        with self.assertRaisesRegex(ValueError, "teacher_dtype='int8'"):
            keras_kd.Distiller(teacher, student, teacher_dtype="int8")
        d = keras_kd.Distiller(teacher, student, teacher_dtype="bfloat16")
        self.assertEqual(d.get_config()["teacher_dtype"], "bfloat16")
