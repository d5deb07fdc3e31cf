"""Mixed precision: every teacher/student dtype combination trains."""

import keras
import numpy as np
from absl.testing import parameterized

import keras_kd
from tests.conftest import make_conv_pair
from tests.conftest import make_data
from tests.conftest import make_dense_pair
from tests.test_case import TestCase


def build_pair(teacher_policy, student_policy, maker=make_dense_pair):
    keras.config.set_dtype_policy(teacher_policy)
    teacher, _ = maker()
    keras.config.set_dtype_policy(student_policy)
    _, student = maker()
    keras.config.set_dtype_policy("float32")
    return teacher, student


class MixedPrecisionTest(TestCase):
    def tearDown(self):
        keras.config.set_dtype_policy("float32")
        super().tearDown()

    @parameterized.named_parameters(
        ("f16_f16", "mixed_float16", "mixed_float16"),
        ("f16_f32", "mixed_float16", "float32"),
        ("f32_f16", "float32", "mixed_float16"),
        ("bf16_bf16", "mixed_bfloat16", "mixed_bfloat16"),
        ("bf16_f32", "mixed_bfloat16", "float32"),
        ("f32_bf16", "float32", "mixed_bfloat16"),
    )
    def test_combination_trains_with_finite_float32_losses(self, t_policy,
                                                           s_policy):
        teacher, student = build_pair(t_policy, s_policy)
        d = keras_kd.Distiller(teacher, student, alpha=0.3, temperature=20.0)
        d.compile(optimizer=keras.optimizers.Adam(0.01),
                  metrics=["accuracy"])
        if "float16" in s_policy and "bfloat16" not in s_policy:
            self.assertIsInstance(d.optimizer,
                                  keras.optimizers.LossScaleOptimizer)
        x, y = make_data(128)
        history = d.fit(x, y, epochs=8, batch_size=32, verbose=0)
        losses = history.history["soft_loss"]
        self.assertTrue(np.all(np.isfinite(history.history["loss"])))
        self.assertLess(losses[-1], losses[0])
        # The soft loss is computed in float32 from half-precision logits.
        t = keras.ops.convert_to_numpy(teacher(x[:16])).astype("float32")
        s = keras.ops.convert_to_numpy(student(x[:16])).astype("float32")
        logs = d.evaluate(x[:16], batch_size=16, verbose=0, return_dict=True)
        from tests.losses.logits_test import reference_soft_target_kl

        self.assertAllClose(logs["soft_loss"],
                            reference_soft_target_kl(t, s, 20.0).mean(),
                            rtol=5e-3)

    def test_global_mixed_float16_policy_wraps_the_optimizer(self):
        keras.config.set_dtype_policy("mixed_float16")
        teacher, student = make_dense_pair()
        d = keras_kd.Distiller(teacher, student)
        d.compile(optimizer="adam")
        self.assertIsInstance(d.optimizer, keras.optimizers.LossScaleOptimizer)
        x, y = make_data(32)
        history = d.fit(x, y, epochs=1, verbose=0)
        self.assertTrue(np.isfinite(history.history["loss"][0]))

    def test_feature_heads_follow_the_policy(self):
        teacher, student = build_pair("mixed_float16", "mixed_float16",
                                      make_conv_pair)
        keras.config.set_dtype_policy("mixed_float16")
        match = keras_kd.FeatureMatch("t_conv2", "s_conv1")
        d = keras_kd.Distiller(teacher, student, features=[
            match, keras_kd.RelationMatch("sp", "t_gap", "s_gap")])
        keras.config.set_dtype_policy("float32")
        conv = match.head.layers[1]
        self.assertEqual(conv.compute_dtype, "float16")
        self.assertEqual(conv.kernel.dtype, "float32")
        d.compile(optimizer="adam")
        rng = np.random.default_rng(0)
        x = rng.normal(size=(16, 16, 16, 3)).astype("float32")
        y = rng.integers(0, 10, 16)
        history = d.fit(x, y, epochs=2, batch_size=8, verbose=0)
        for key in ("loss", "feature_loss/t_conv2", "sp"):
            self.assertTrue(np.all(np.isfinite(history.history[key])), key)
