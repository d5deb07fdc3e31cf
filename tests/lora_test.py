"""LoRA students (KerasHub `enable_lora`, float and int8/int4-quantized):
only the adapters train, the Distiller saves and reloads them, and
`merge_lora` gives a plain model."""

import os
import warnings

import keras
import numpy as np
import pytest

import keras_kd
from keras_kd import lora
from tests.test_case import TestCase

keras_hub = pytest.importorskip("keras_hub")

from tests.hub_test import causal_lm  # noqa: E402
from tests.hub_test import token_batch  # noqa: E402


def _numpy(variables):
    return {v.path: np.array(keras.ops.convert_to_numpy(v))
            for v in variables}


def _changed(before, variables):
    after = _numpy(variables)
    return sorted(k for k in before if not np.array_equal(before[k], after[k]))


def _lora_student(quantize=None, rank=4, freeze_biases=False):
    student = causal_lm(1, 16, seed=2)
    if quantize:
        with warnings.catch_warnings():
            # Keras warns once per layer it cannot quantize (InputLayer...).
            warnings.simplefilter("ignore")
            student.quantize(quantize)
    student.backbone.enable_lora(rank)
    if freeze_biases:
        for layer in lora.lora_layers(student):
            layer.bias.trainable = False
    return student


def _distiller(student, lr=1e-2):
    teacher = causal_lm(2, 16, seed=1)
    d = keras_kd.Distiller(teacher, student, alpha=0.0, temperature=1.0)
    d.compile(optimizer=keras.optimizers.Adam(lr))
    return d


def _is_lora(path):
    return "lora_kernel" in path


class LoraStudentTest(TestCase):
    def test_only_the_adapters_train(self):
        student = _lora_student(freeze_biases=True)
        d = _distiller(student)
        x, y, w = token_batch()
        before, teacher_before = _numpy(student.weights), _numpy(
            d.teacher.weights)
        self.assertTrue(all(_is_lora(v.path)
                            for v in d.trainable_weights))
        d.fit(x, y, sample_weight=w, batch_size=6, epochs=2, verbose=0)
        lora_paths = sorted(k for k in before if _is_lora(k))
        self.assertLen(lora_paths, 4)  # query and value, a and b
        self.assertEqual(_changed(before, student.weights), lora_paths)
        self.assertEqual(_changed(teacher_before, d.teacher.weights), [])

    def test_kerashub_enable_lora_leaves_biases_trainable(self):
        # Keras' `enable_lora` freezes the kernel only: the biases of the
        # adapted layers still train unless frozen (see the test above).
        student = _lora_student()
        d = _distiller(student)
        names = sorted(v.path for v in d.trainable_weights)
        self.assertEqual(
            [n for n in names if not _is_lora(n)],
            ["transformer_layer_0/self_attention/query/bias",
             "transformer_layer_0/self_attention/value/bias"])

    @pytest.mark.slow
    def test_save_and_reload(self):
        student = _lora_student(freeze_biases=True)
        d = _distiller(student)
        x, y, w = token_batch()
        d.fit(x, y, sample_weight=w, batch_size=6, epochs=2, verbose=0)
        path = os.path.join(self.get_temp_dir(), "lora.keras")
        logs = d.evaluate(x, y, sample_weight=w, verbose=0,
                          return_dict=True)
        d.save(path)
        revived = keras_kd.load_distiller(path, teacher=d.teacher)
        # The same weights, unmerged (Keras alone would merge the adapters
        # into the kernels and zero them), LoRA still on, the same
        # trainable weights and optimizer state.
        self.assertEqual(len(revived.student.weights), len(student.weights))
        for a, b in zip(student.weights, revived.student.weights):
            self.assertEqual(a.path, b.path)
            self.assertAllEqual(a, b, msg=a.path)
        self.assertEqual([v.path for v in revived.trainable_weights],
                         [v.path for v in d.trainable_weights])
        self.assertLen(lora.lora_layers(revived.student), 2)
        self.assertEqual(revived.student.backbone._lora_rank, 4)
        for a, b in zip(d.optimizer.variables, revived.optimizer.variables):
            self.assertAllEqual(a, b)
        again = revived.evaluate(x, y, sample_weight=w, verbose=0,
                                 return_dict=True)
        self.assertAllClose(again["loss"], logs["loss"], rtol=1e-6)
        # Resuming trains the adapters as the original run would.
        for model in (d, revived):
            model.fit(x, y, sample_weight=w, batch_size=6, epochs=1,
                      shuffle=False, verbose=0)
        for a, b in zip(student.weights, revived.student.weights):
            self.assertAllClose(a, b, atol=1e-6, msg=a.path)

    @pytest.mark.slow
    def test_merge_lora_gives_a_plain_kerashub_model(self):
        student = _lora_student()
        d = _distiller(student, lr=5e-2)
        x, y, w = token_batch()
        d.fit(x, y, sample_weight=w, batch_size=6, epochs=2, verbose=0)
        merged = lora.merge_lora(student)
        self.assertIsInstance(merged, keras_hub.models.GPT2CausalLM)
        self.assertEqual(lora.lora_layers(merged), [])
        self.assertEqual(len(merged.trainable_weights),
                         len(causal_lm(1, 16).trainable_weights))
        self.assertAllClose(merged(x), student(x), atol=1e-5, rtol=1e-5)
        # The adapters mattered: a kernel is W + (alpha / r) * A @ B.
        layer = lora.lora_layers(student)[0]
        kernel = next(v for v in merged.weights
                      if v.path == layer.path + "/kernel")
        a, b = (keras.ops.convert_to_numpy(v) for v in (
            layer.lora_kernel_a, layer.lora_kernel_b))
        base = keras.ops.convert_to_numpy(layer._kernel)
        expected = base + (layer.lora_alpha / layer.lora_rank) * np.einsum(
            "ijr,rk->ijk", a, b)
        self.assertAllClose(kernel, expected, atol=1e-6)
        self.assertGreater(np.abs(expected - base).max(), 1e-4)
        # `student` is unchanged and a plain save/load of the merge works.
        self.assertLen(lora.lora_layers(student), 2)
        path = os.path.join(self.get_temp_dir(), "merged.keras")
        merged.save(path)
        with warnings.catch_warnings():
            # KerasHub tasks compile themselves; Keras warns on reload.
            warnings.filterwarnings("ignore", "`compile\\(\\)` was not")
            reloaded = keras.saving.load_model(path)
        self.assertAllClose(reloaded(x), merged(x), atol=1e-6)

    def test_merge_lora_of_a_keras_dense(self):
        inputs = keras.Input((6,))
        outputs = keras.layers.Dense(3, lora_rank=2, name="head")(inputs)
        model = keras.Model(inputs, outputs)
        layer = model.get_layer("head")
        layer.lora_kernel_b.assign(np.ones((2, 3), "float32"))
        merged = lora.merge_lora(model)
        self.assertFalse(merged.get_layer("head").lora_enabled)
        x = np.random.default_rng(0).normal(size=(4, 6)).astype("float32")
        kernel = keras.ops.convert_to_numpy(layer._kernel) + np.matmul(
            keras.ops.convert_to_numpy(layer.lora_kernel_a), np.ones((2, 3)))
        expected = x @ kernel + keras.ops.convert_to_numpy(layer.bias)
        self.assertAllClose(merged(x), expected, atol=1e-5)

    def test_merge_lora_refuses_a_non_model(self):
        with self.assertRaisesRegex(TypeError, "must be a built"):
            lora.merge_lora(keras.layers.Dense(3))


# PyTorch deprecates the `x.T` of KerasHub's int8 reversed embedding.
@pytest.mark.filterwarnings(
    "ignore:The use of `x.T` on tensors:UserWarning")
class QuantizedLoraStudentTest(TestCase):
    """QAD for language models: an int8 (or int4) KerasHub student with
    LoRA adapters learns from the float teacher. It runs in Keras (its
    int8 matmuls do not convert to LiteRT)."""

    def _fit(self, mode):
        student = _lora_student(quantize=mode, freeze_biases=True)
        d = _distiller(student, lr=5e-2)
        x, y, w = token_batch()
        before = _numpy(student.weights)
        first = d.evaluate(x, y, sample_weight=w, verbose=0,
                           return_dict=True)
        d.fit(x, y, sample_weight=w, batch_size=6, epochs=3, verbose=0,
              shuffle=False)
        last = d.evaluate(x, y, sample_weight=w, verbose=0,
                          return_dict=True)
        return student, d, before, first, last, (x, y, w)

    @pytest.mark.slow
    def test_int8_student_trains_its_adapters_only(self):
        student, d, before, first, last, _ = self._fit("int8")
        kernels = [v for v in student.weights if v.dtype == "int8"]
        self.assertNotEmpty(kernels)
        self.assertLess(last["soft_loss"], first["soft_loss"])
        changed = _changed(before, student.weights)
        self.assertEqual(changed, sorted(k for k in before if _is_lora(k)))

    @pytest.mark.slow
    def test_int8_student_save_and_reload(self):
        student, d, _, _, last, (x, y, w) = self._fit("int8")
        path = os.path.join(self.get_temp_dir(), "qad.keras")
        d.save(path)
        revived = keras_kd.load_distiller(path, teacher=d.teacher)
        for a, b in zip(student.weights, revived.student.weights):
            self.assertEqual(a.dtype, b.dtype)
            self.assertAllEqual(a, b, msg=a.path)
        again = revived.evaluate(x, y, sample_weight=w, verbose=0,
                                 return_dict=True)
        self.assertAllClose(again["loss"], last["loss"], rtol=1e-6)
        # The merge re-quantizes the kernels: int8, close to the student.
        merged = lora.merge_lora(student)
        self.assertEqual(lora.lora_layers(merged), [])
        self.assertTrue(any(v.dtype == "int8" for v in merged.weights))
        self.assertAllClose(merged(x), student(x), atol=0.05)

    @pytest.mark.slow
    def test_int4_student_trains_its_adapters_only(self):
        student, d, before, first, last, _ = self._fit("int4")
        self.assertLess(last["soft_loss"], first["soft_loss"])
        changed = _changed(before, student.weights)
        self.assertEqual(changed, sorted(k for k in before if _is_lora(k)))
