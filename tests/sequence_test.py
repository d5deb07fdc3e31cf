"""Token-level distillation: `(batch, sequence, vocabulary)` logits.

The Distiller weighs every term per token and averages over the real tokens
of the global batch: a `(batch, sequence)` sample weight (KerasHub's padding
mask) or a label of -1 marks a position that does not count.
"""

import keras
import numpy as np

import keras_kd
from tests.conftest import make_dense_pair
from tests.conftest import make_token_data
from tests.conftest import make_token_pair
from tests.test_case import TestCase

T = 2.0
ALPHA = 0.3


def _log_softmax(z):
    z = z - z.max(-1, keepdims=True)
    return z - np.log(np.exp(z).sum(-1, keepdims=True))


def reference_loss(t_logits, s_logits, labels, weights, alpha=ALPHA, temp=T):
    """NumPy float64: alpha * CE + (1 - alpha) * T^2 KL per token, weighted,
    averaged over the real tokens (weight > 0 and label != -1)."""
    t = t_logits.astype("float64")
    s = s_logits.astype("float64")
    real = (weights > 0) & (labels != -1)
    safe = np.where(labels < 0, 0, labels)
    ce = -np.take_along_axis(_log_softmax(s), safe[..., None], -1)[..., 0]
    log_p, log_q = _log_softmax(t / temp), _log_softmax(s / temp)
    kl = temp ** 2 * (np.exp(log_p) * (log_p - log_q)).sum(-1)
    w = weights * real
    n = real.sum()
    return (alpha * (w * ce).sum() / n + (1 - alpha) * (w * kl).sum() / n,
            (w * ce).sum() / n, (w * kl).sum() / n)


def _pad(array, length, value=0):
    width = [(0, 0)] * array.ndim
    width[1] = (0, length - array.shape[1])
    return np.pad(array, width, constant_values=value)


def _numpy(model, x):
    return np.asarray(keras.ops.convert_to_numpy(model(x)))


def _distiller(teacher, student, **kwargs):
    kwargs.setdefault("alpha", ALPHA)
    kwargs.setdefault("temperature", T)
    d = keras_kd.Distiller(teacher, student, **kwargs)
    d.compile(optimizer=keras.optimizers.SGD(0.5))
    return d


def _one_step(distiller, x, y, sample_weight):
    """The student's weights after one SGD step on one batch."""
    distiller.fit(x, y, sample_weight=sample_weight, batch_size=len(y),
                  epochs=1, shuffle=False, verbose=0)
    return [np.asarray(keras.ops.convert_to_numpy(w))
            for w in distiller.student.trainable_weights]


class TokenLossTest(TestCase):
    def test_loss_matches_numpy_reference(self):
        teacher, student = make_token_pair()
        ids, labels, mask = make_token_data()
        weights = mask * np.linspace(0.5, 2.0, mask.shape[1])[None]
        labels = labels.copy()
        labels[2, 0] = -1  # A real position without a label.
        d = _distiller(teacher, student)
        logs = d.evaluate(ids, labels, sample_weight=weights, batch_size=8,
                          verbose=0, return_dict=True)
        total, ce, kl = reference_loss(_numpy(teacher, ids),
                                       _numpy(student, ids), labels, weights)
        self.assertAllClose(logs["hard_loss"], ce, rtol=1e-5)
        self.assertAllClose(logs["soft_loss"], kl, rtol=1e-5)
        self.assertAllClose(logs["loss"], total, rtol=1e-5)

    def test_padding_to_another_length_changes_nothing(self):
        ids, labels, mask = make_token_data()
        results = []
        for length in (6, 11):
            teacher, student = make_token_pair()
            d = _distiller(teacher, student)
            x, y, w = (_pad(ids, length), _pad(labels, length),
                       _pad(mask, length))
            logs = d.evaluate(x, y, sample_weight=w, batch_size=8, verbose=0,
                              return_dict=True)
            results.append((logs, _one_step(d, x, y, w)))
        (logs_a, weights_a), (logs_b, weights_b) = results
        for key in ("loss", "hard_loss", "soft_loss", "teacher_agreement"):
            self.assertAllClose(logs_a[key], logs_b[key], rtol=1e-5,
                                msg=key)
        for a, b in zip(weights_a, weights_b):
            self.assertAllClose(a, b, atol=1e-6, rtol=1e-5)

    def test_padding_counted_would_change_the_loss(self):
        # The test above can fail: the loss with the padding weighted in
        # (what a loss that ignores the mask computes) is another number,
        # by more than 10 times the tolerance used here.
        teacher, student = make_token_pair()
        ids, labels, mask = make_token_data()
        d = _distiller(teacher, student)
        masked = d.evaluate(ids, labels, sample_weight=mask, batch_size=8,
                            verbose=0, return_dict=True)["loss"]
        t, s = _numpy(teacher, ids), _numpy(student, ids)
        expected, _, _ = reference_loss(t, s, labels, mask)
        padded_in, _, _ = reference_loss(t, s, labels, np.ones_like(mask))
        self.assertAllClose(masked, expected, rtol=1e-5)
        self.assertGreater(abs(padded_in - expected), 10 * 1e-5 * expected)

    def test_label_minus_one_masks_like_a_zero_weight(self):
        teacher, student = make_token_pair()
        ids, labels, mask = make_token_data()
        d = _distiller(teacher, student)
        by_weight = d.evaluate(ids, labels, sample_weight=mask, batch_size=8,
                               verbose=0, return_dict=True)
        by_label = d.evaluate(ids, np.where(mask > 0, labels, -1),
                              batch_size=8, verbose=0, return_dict=True)
        for key in ("loss", "hard_loss", "soft_loss"):
            self.assertAllClose(by_weight[key], by_label[key], rtol=1e-6)

    def test_keras_mask_of_the_logits_masks_padding(self):
        # `Embedding(mask_zero=True)`: id 0 is padding, and the mask reaches
        # the logits through the Dense layers.
        keras.utils.set_random_seed(0)

        def lm(width):
            ids = keras.Input((None,), dtype="int32")
            h = keras.layers.Embedding(12, width, mask_zero=True)(ids)
            return keras.Model(ids, keras.layers.Dense(12)(
                keras.layers.Dense(width, activation="tanh")(h)))

        teacher, student = lm(16), lm(8)
        ids, labels, mask = make_token_data()
        d = _distiller(teacher, student)
        by_mask = d.evaluate(ids, labels, batch_size=8, verbose=0,
                             return_dict=True)
        by_weight = d.evaluate(ids, labels, sample_weight=mask, batch_size=8,
                               verbose=0, return_dict=True)
        for key in ("loss", "hard_loss", "soft_loss", "teacher_agreement"):
            self.assertAllClose(by_mask[key], by_weight[key], rtol=1e-6,
                                msg=key)

    def test_row_without_tokens_adds_nothing(self):
        teacher, student = make_token_pair()
        ids, labels, mask = make_token_data()
        d = _distiller(teacher, student)
        kept = d.evaluate(ids[1:], labels[1:], sample_weight=mask[1:],
                          batch_size=8, verbose=0, return_dict=True)
        empty = mask.copy()
        empty[0] = 0
        with_empty = d.evaluate(
            ids, labels, sample_weight=np.concatenate([empty[:1], mask[1:]]),
            batch_size=8, verbose=0, return_dict=True)
        self.assertAllClose(kept["loss"], with_empty["loss"], rtol=1e-6)

    def test_batch_without_tokens_is_zero_and_changes_nothing(self):
        teacher, student = make_token_pair()
        ids, labels, mask = make_token_data()
        d = _distiller(teacher, student)
        before = [np.asarray(keras.ops.convert_to_numpy(w))
                  for w in student.trainable_weights]
        zero = np.zeros_like(mask)
        logs = d.evaluate(ids, labels, sample_weight=zero, batch_size=8,
                          verbose=0, return_dict=True)
        self.assertEqual(logs["loss"], 0.0)
        after = _one_step(d, ids, labels, zero)
        for a, b in zip(before, after):
            self.assertAllEqual(a, b)

    def test_per_sample_weights_apply_to_every_token(self):
        teacher, student = make_token_pair()
        ids, labels, mask = make_token_data()
        d = _distiller(teacher, student)
        per_sample = np.linspace(0.5, 1.5, len(ids)).astype("float32")
        a = d.evaluate(np.where(mask > 0, ids, 0),
                       np.where(mask > 0, labels, -1),
                       sample_weight=per_sample, batch_size=8, verbose=0,
                       return_dict=True)["loss"]
        b = d.evaluate(ids, labels, sample_weight=mask * per_sample[:, None],
                       batch_size=8, verbose=0, return_dict=True)["loss"]
        self.assertAllClose(a, b, rtol=1e-6)

    def test_feature_match_is_per_token(self):
        ids, labels, mask = make_token_data()
        losses = []
        for length in (6, 9):
            teacher, student = make_token_pair()
            d = _distiller(teacher, student, features=[
                keras_kd.FeatureMatch("t_hidden2", "s_hidden",
                                      batch_norm=False)])
            logs = d.evaluate(_pad(ids, length), _pad(labels, length),
                              sample_weight=_pad(mask, length), batch_size=8,
                              verbose=0, return_dict=True)
            losses.append(logs["feature_loss/t_hidden2"])
        self.assertGreater(losses[0], 0.0)
        self.assertAllClose(losses[0], losses[1], rtol=1e-5)


class TokenInputErrorsTest(TestCase):
    def test_different_vocabularies_are_refused_with_both_sizes(self):
        teacher, student = make_token_pair(vocabulary=12,
                                           student_vocabulary=10)
        with self.assertRaisesRegex(
                ValueError, r"vocabulary of 12 tokens and the student 10"):
            keras_kd.Distiller(teacher, student)

    def test_classifier_and_sequence_model_are_refused(self):
        _, token_student = make_token_pair(vocabulary=10)
        teacher, _ = make_dense_pair(num_classes=10)
        with self.assertRaisesRegex(ValueError, "rank 2 and the student of "
                                    "rank 3"):
            keras_kd.Distiller(teacher, token_student)

    def test_one_label_per_sample_is_refused(self):
        teacher, student = make_token_pair()
        ids, labels, mask = make_token_data()
        d = _distiller(teacher, student)
        with self.assertRaisesRegex(ValueError, "one token id per position"):
            d.fit(ids, labels[:, 0], epochs=1, verbose=0)

    def test_token_out_of_vocabulary_is_refused(self):
        teacher, student = make_token_pair()
        ids, labels, mask = make_token_data()
        labels = labels.copy()
        labels[1, 1] = 12
        d = _distiller(teacher, student)
        with self.assertRaisesRegex(ValueError, "label 12"):
            d.fit(ids, labels, epochs=1, verbose=0)

    def test_sample_weight_of_another_shape_is_refused(self):
        teacher, student = make_token_pair()
        ids, labels, mask = make_token_data()
        d = _distiller(teacher, student)
        with self.assertRaisesRegex(ValueError, "one per token"):
            d.fit(ids, labels, sample_weight=mask[..., None, None], epochs=1,
                  verbose=0)
