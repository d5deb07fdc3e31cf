"""KerasHub causal LMs (built from configs, nothing downloaded) as teacher
and student: token ids, raw strings through the preprocessor, hidden states
of transformer blocks, and the vocabulary check."""

import keras
import numpy as np
import pytest

import keras_kd
from tests.test_case import TestCase

keras_hub = pytest.importorskip("keras_hub")

VOCAB = ["[PAD]", "[UNK]", "<|endoftext|>", "the", "a", "cat", "dog", "sat",
         "on", "mat", "ran", "far", "Ġ", "Ġthe", "Ġcat"]


def causal_lm(layers, width, vocabulary=40, seed=0, preprocessor=None):
    keras.utils.set_random_seed(seed)
    backbone = keras_hub.models.GPT2Backbone(
        vocabulary_size=vocabulary, num_layers=layers, num_heads=2,
        hidden_dim=width, intermediate_dim=2 * width, max_sequence_length=16,
        dropout=0.0)
    return keras_hub.models.GPT2CausalLM(backbone, preprocessor=preprocessor)


def token_batch(n=6, length=10, vocabulary=40, seed=0):
    rng = np.random.default_rng(seed)
    lengths = rng.integers(3, length + 1, size=(n,))
    mask = (np.arange(length)[None] < lengths[:, None]).astype("int32")
    ids = rng.integers(3, vocabulary, size=(n, length)).astype("int32") * mask
    x = {"token_ids": ids, "padding_mask": mask}
    y = np.concatenate([ids[:, 1:], np.zeros((n, 1), "int32")], axis=1)
    weight = np.concatenate([mask[:, 1:], np.zeros((n, 1), "int32")], axis=1)
    return x, y, weight.astype("float32")


def _pad(x, y, w, length):
    def pad(a):
        return np.pad(a, ((0, 0), (0, length - a.shape[1])))
    return {k: pad(v) for k, v in x.items()}, pad(y), pad(w)


def _weights(model):
    return [np.asarray(keras.ops.convert_to_numpy(w))
            for w in model.trainable_weights]


class CausalLMTest(TestCase):
    def test_padding_changes_neither_loss_nor_step(self):
        x, y, w = token_batch()
        results = []
        for length in (10, 14):
            teacher = causal_lm(2, 16, seed=1)
            student = causal_lm(1, 8, seed=2)
            d = keras_kd.Distiller(teacher, student, alpha=0.5,
                                   temperature=2.0)
            d.compile(optimizer=keras.optimizers.SGD(1.0))
            xp, yp, wp = _pad(x, y, w, length)
            logs = d.evaluate(xp, yp, sample_weight=wp, batch_size=6,
                              verbose=0, return_dict=True)
            d.fit(xp, yp, sample_weight=wp, batch_size=6, epochs=1,
                  shuffle=False, verbose=0)
            results.append((logs, _weights(student)))
        (logs_a, w_a), (logs_b, w_b) = results
        for key in ("loss", "hard_loss", "soft_loss"):
            self.assertAllClose(logs_a[key], logs_b[key], rtol=1e-4, msg=key)
        for a, b in zip(w_a, w_b):
            self.assertAllClose(a, b, atol=1e-5, rtol=1e-4)

    def test_llama_and_gemma_from_configs(self):
        def llama(layers, width):
            return keras_hub.models.LlamaCausalLM(
                keras_hub.models.LlamaBackbone(
                    vocabulary_size=40, num_layers=layers, num_query_heads=2,
                    num_key_value_heads=1, hidden_dim=width,
                    intermediate_dim=2 * width),
                preprocessor=None)

        def gemma(layers, width):
            return keras_hub.models.GemmaCausalLM(
                keras_hub.models.GemmaBackbone(
                    vocabulary_size=40, num_layers=layers, num_query_heads=2,
                    num_key_value_heads=1, hidden_dim=width,
                    intermediate_dim=2 * width, head_dim=width // 2),
                preprocessor=None)

        x, y, w = token_batch(n=4)
        for make in (llama, gemma):
            losses = []
            for length in (10, 13):
                keras.utils.set_random_seed(1)
                teacher, student = make(2, 16), make(1, 8)
                d = keras_kd.Distiller(teacher, student, alpha=0.5,
                                       temperature=2.0)
                d.compile(optimizer="adam")
                xp, yp, wp = _pad(x, y, w, length)
                logs = d.evaluate(xp, yp, sample_weight=wp, batch_size=4,
                                  verbose=0, return_dict=True)
                losses.append(logs)
            for key in ("loss", "soft_loss"):
                self.assertGreater(losses[0][key], 0.0)
                self.assertAllClose(losses[0][key], losses[1][key],
                                    rtol=1e-4, msg=f"{make.__name__} {key}")

    def test_hidden_states_of_transformer_blocks(self):
        teacher = causal_lm(2, 16, seed=1)
        student = causal_lm(1, 8, seed=2)
        match = keras_kd.FeatureMatch("transformer_layer_1",
                                      "transformer_layer_0", batch_norm=False)
        d = keras_kd.Distiller(teacher, student, alpha=0.5, features=[match])
        d.compile(optimizer="adam")
        x, y, w = token_batch()
        history = d.fit(x, y, sample_weight=w, batch_size=6, epochs=2,
                        verbose=0).history
        self.assertTrue(np.all(np.isfinite(history["feature_loss/transformer_layer_1"])))
        self.assertGreater(history["feature_loss/transformer_layer_1"][0], 0.0)
        # A Dense head maps the student's 8-wide states to the teacher's 16.
        self.assertEqual(
            tuple(match.head.compute_output_shape((None, None, 8))),
            (None, None, 16))

    def test_different_vocabularies_are_refused(self):
        teacher = causal_lm(1, 8, vocabulary=40)
        student = causal_lm(1, 8, vocabulary=32)
        with self.assertRaisesRegex(ValueError, "40 tokens and the student "
                                    "32"):
            keras_kd.Distiller(teacher, student)


class PreprocessorTest(TestCase):
    def _preprocessor(self):
        merges = ["Ġ t", "h e", "Ġt he", "Ġ c", "a t", "Ġc at"]
        vocab = {token: i for i, token in enumerate(
            ["<|endoftext|>", "Ġ", "t", "h", "e", "c", "a", "s", "o", "n",
             "m", "d", "g", "r", "f", "he", "Ġt", "Ġthe", "Ġc", "at",
             "Ġcat"])}
        tokenizer = keras_hub.models.GPT2Tokenizer(vocabulary=vocab,
                                                   merges=merges)
        return keras_hub.models.GPT2CausalLMPreprocessor(
            tokenizer, sequence_length=12)

    def test_strings_through_the_students_preprocessor(self):
        preprocessor = self._preprocessor()
        vocabulary = preprocessor.tokenizer.vocabulary_size()
        teacher = causal_lm(2, 16, vocabulary=vocabulary, seed=1)
        student = causal_lm(1, 8, vocabulary=vocabulary, seed=2,
                            preprocessor=preprocessor)
        d = keras_kd.Distiller(teacher, student, alpha=0.5)
        d.compile(optimizer="adam")
        texts = ["the cat sat", "the cat", "a cat at the mat", "the"]
        logs = d.evaluate(texts, batch_size=4, verbose=0, return_dict=True)
        # The same loss from the token ids and padding mask the
        # preprocessor gives, fed by hand to a Distiller without one.
        x, y, w = preprocessor(texts)
        plain = keras_kd.Distiller(teacher, student, alpha=0.5,
                                   preprocessor=None)
        plain.compile(optimizer="adam")
        by_hand = plain.evaluate(x, y, sample_weight=w, batch_size=4,
                                 verbose=0, return_dict=True)
        self.assertAllClose(logs["loss"], by_hand["loss"], rtol=1e-5)
        history = d.fit(texts, batch_size=2, epochs=2, verbose=0).history
        self.assertTrue(np.all(np.isfinite(history["loss"])))
