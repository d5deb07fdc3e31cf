"""`TruncatedVocabulary` and `dropped_mass` against NumPy."""

import keras
import numpy as np
import pytest

import keras_kd
from keras_kd import vocabulary
from tests.test_case import TestCase

keras_hub = pytest.importorskip("keras_hub")

from tests.hub_test import causal_lm  # noqa: E402
from tests.hub_test import token_batch  # noqa: E402


def reference_dropped_mass(logits, kept, temperature=1.0):
    z = logits.astype("float64") / temperature
    p = np.exp(z - z.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    return p[..., kept:].sum(-1)


def reference_kl(teacher, student):
    def log_softmax(x):
        x = x.astype("float64") - x.max(-1, keepdims=True)
        return x - np.log(np.exp(x).sum(-1, keepdims=True))
    t, s = log_softmax(teacher), log_softmax(student)
    return (np.exp(t) * (t - s)).sum(-1)


def _tokenizer(tokens):
    vocab = {token: i for i, token in enumerate(tokens)}
    return keras_hub.models.GPT2Tokenizer(vocabulary=vocab, merges=["a b"])


TOKENS = ["<|endoftext|>", "a", "b", "ab", "c", "d"]


class DroppedMassTest(TestCase):
    @pytest.mark.filterwarnings("ignore::RuntimeWarning")
    def test_matches_reference(self):
        rng = np.random.default_rng(0)
        logits = rng.normal(scale=4.0, size=(3, 5, 12)).astype("float32")
        logits[0, 0] += 80.0  # large logits stay finite
        for temperature in (1.0, 3.0):
            self.assertAllClose(
                vocabulary.dropped_mass(logits, 9, temperature),
                reference_dropped_mass(logits, 9, temperature), atol=1e-6,
                rtol=1e-5)
        self.assertAllClose(vocabulary.dropped_mass(logits, 12),
                            np.zeros((3, 5)))

    def test_rejects_more_than_the_logits(self):
        with self.assertRaisesRegex(ValueError,
                                    "Received: vocabulary_size=13"):
            vocabulary.dropped_mass(np.zeros((2, 12), "float32"), 13)


class TruncatedVocabularyTest(TestCase):
    def test_keeps_the_first_logits_and_distils(self):
        teacher = causal_lm(2, 16, vocabulary=48, seed=1)
        student = causal_lm(1, 8, vocabulary=40, seed=2)
        wrapped = vocabulary.TruncatedVocabulary(teacher, 40)
        x, y, w = token_batch(vocabulary=40)
        full = keras.ops.convert_to_numpy(teacher(x))
        self.assertAllClose(wrapped(x), full[..., :40])
        self.assertEqual(wrapped.teacher_vocabulary_size, 48)
        d = keras_kd.Distiller(wrapped, student, alpha=0.0, temperature=1.0)
        d.compile(optimizer="sgd")
        logs = d.evaluate(x, y, sample_weight=w, verbose=0,
                          return_dict=True)
        s = keras.ops.convert_to_numpy(student(x))
        kl = reference_kl(full[..., :40], s)
        self.assertAllClose(logs["soft_loss"], (kl * w).sum() / w.sum(),
                            rtol=1e-5)
        # The mass the 8 extra rows held, over the real tokens.
        mass = reference_dropped_mass(full, 40)
        self.assertAllClose(wrapped.dropped_mass(x, sample_weight=w),
                            (mass * w).sum() / w.sum(), rtol=1e-5)
        self.assertGreater(wrapped.dropped_mass(x), 0.0)

    def test_config_round_trip(self):
        teacher = causal_lm(1, 8, vocabulary=44, seed=1)
        wrapped = vocabulary.TruncatedVocabulary(teacher, 40)
        revived = keras.saving.deserialize_keras_object(
            keras.saving.serialize_keras_object(wrapped))
        self.assertIsInstance(revived, vocabulary.TruncatedVocabulary)
        self.assertEqual(revived.vocabulary_size, 40)
        self.assertEqual(revived.output_shape[-1], 40)

    def test_without_the_wrapper_different_sizes_are_refused(self):
        teacher = causal_lm(1, 8, vocabulary=48)
        student = causal_lm(1, 8, vocabulary=40)
        with self.assertRaisesRegex(ValueError, "48 tokens and the student"):
            keras_kd.Distiller(teacher, student)

    def test_a_smaller_teacher_is_refused(self):
        teacher = causal_lm(1, 8, vocabulary=32)
        with self.assertRaisesRegex(ValueError, "another tokenizer"):
            vocabulary.TruncatedVocabulary(teacher, 40)

    def test_different_tokenizers_are_refused(self):
        preprocessor = keras_hub.models.GPT2CausalLMPreprocessor(
            _tokenizer(TOKENS), sequence_length=8)
        teacher = causal_lm(1, 8, vocabulary=8, preprocessor=preprocessor)
        # The same tokenizer is accepted.
        vocabulary.TruncatedVocabulary(teacher, 6,
                                       tokenizer=_tokenizer(TOKENS))
        other = _tokenizer(["<|endoftext|>", "a", "b", "ab", "x", "d"])
        with self.assertRaisesRegex(ValueError, "first difference at id 4"):
            vocabulary.TruncatedVocabulary(teacher, 6, tokenizer=other)
        # Keeping fewer entries than the teacher's tokenizer has tokens.
        with self.assertRaisesRegex(ValueError, "would drop real tokens"):
            vocabulary.TruncatedVocabulary(teacher, 5)
