"""Teacher caches of language models: dict inputs (KerasHub's
`{"token_ids", "padding_mask"}`), datasets of dicts, and batches padded to
different lengths."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_kd
from tests.test_case import TestCase

keras_hub = pytest.importorskip("keras_hub")


def causal_lm(name, seed):
    keras.utils.set_random_seed(seed)
    backbone = keras_hub.models.GPT2Backbone(
        vocabulary_size=50, num_layers=1, num_heads=2, hidden_dim=16,
        intermediate_dim=32, max_sequence_length=32)
    return keras_hub.models.GPT2CausalLM(backbone, preprocessor=None,
                                         name=name)


def token_data():
    rng = np.random.default_rng(0)
    mask = np.ones((8, 12), "int32")
    mask[3, 6:] = 0
    mask[5, 2:] = 0
    ids = rng.integers(4, 50, (8, 12)).astype("int32") * mask
    x = {"token_ids": ids, "padding_mask": mask}
    return x, np.roll(ids, -1, axis=1), mask.astype("float32")


class DictInputCacheTest(TestCase):
    def setUp(self):
        super().setUp()
        self.distiller = keras_kd.Distiller(
            causal_lm("teacher", 1), causal_lm("student", 2), alpha=0.5,
            temperature=1.0)
        self.distiller.compile(optimizer="adam")
        self.x, self.y, self.w = token_data()

    def _loss(self, data, **kwargs):
        return self.distiller.evaluate(data, verbose=0, return_dict=True,
                                       **kwargs)["loss"]

    def test_dense_and_full_top_k_caches_give_the_live_loss(self):
        live = self._loss(self.x, y=self.y, sample_weight=self.w,
                          batch_size=8)
        dense = keras_kd.data.cache_teacher_outputs(
            self.distiller, self.x, batch_size=3, verbose=0)
        self.assertAllClose(self._loss(dense.dataset(
            self.x, self.y, sample_weight=self.w, batch_size=8,
            shuffle=False)), live, rtol=1e-6)
        top = keras_kd.data.cache_teacher_outputs(
            self.distiller, self.x, top_k=50, batch_size=3, verbose=0)
        self.assertAllClose(self._loss(top.dataset(
            self.x, self.y, sample_weight=self.w, batch_size=8,
            shuffle=False)), live, rtol=1e-4)

    def test_a_dataset_of_dicts_has_the_arrays_fingerprint(self):
        from_arrays = keras_kd.data.cache_teacher_outputs(
            self.distiller, self.x, top_k=8, batch_size=4, verbose=0)
        dataset = tf.data.Dataset.from_tensor_slices(self.x).batch(3)
        from_dataset = keras_kd.data.cache_teacher_outputs(
            self.distiller, dataset, top_k=8, verbose=0)
        self.assertEqual(from_arrays.fingerprint, from_dataset.fingerprint)
        np.testing.assert_array_equal(from_arrays.indices,
                                      from_dataset.indices)

    def test_other_token_ids_are_refused(self):
        cache = keras_kd.data.cache_teacher_outputs(
            self.distiller, self.x, top_k=8, verbose=0)
        other = dict(self.x, token_ids=self.x["token_ids"][::-1].copy())
        with self.assertRaisesRegex(ValueError, "inputs are not the"):
            cache.check(other)

    def test_batches_of_different_lengths_are_refused(self):
        ids = self.x["token_ids"]

        def batches():
            yield ids[:4, :12]
            yield ids[4:, :7]

        tokens = keras.Input((None,), dtype="int32")
        teacher = keras.Model(tokens, causal_lm("t", 1)(
            {"token_ids": tokens, "padding_mask": keras.ops.cast(
                keras.ops.not_equal(tokens, 0), "int32")}))
        dataset = tf.data.Dataset.from_generator(
            batches, output_signature=tf.TensorSpec((None, None), tf.int32))
        for top_k in (None, 8):
            with self.assertRaisesRegex(ValueError, "Pad every batch"):
                keras_kd.data.cache_teacher_outputs(teacher, dataset,
                                                    top_k=top_k, verbose=0)
