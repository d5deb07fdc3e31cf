"""Tests of keras_kd/terms/divergences.py and of `SoftTargets` per token."""

import keras
import numpy as np
from absl.testing import parameterized

import keras_kd
from keras_kd import losses
from keras_kd import terms
from keras_kd.terms.divergences import GeneralizedJSD
from keras_kd.terms.divergences import ReverseKL
from keras_kd.terms.divergences import SkewKL
from keras_kd.terms.divergences import SkewReverseKL
from tests.conftest import make_data
from tests.conftest import make_dense_pair
from tests.losses.tokens_test import random
from tests.losses.tokens_test import reference
from tests.test_case import TestCase

TERMS = (
    ("reverse_kl", ReverseKL, {}, "reverse", None),
    ("jsd", GeneralizedJSD, {"beta": 0.3}, "jsd", 0.3),
    ("skew_kl", SkewKL, {"skew": 0.2}, "skew", 0.2),
    ("skew_reverse_kl", SkewReverseKL, {"skew": 0.2}, "skew_reverse", 0.2),
)


class DivergenceTermTest(TestCase):
    @parameterized.named_parameters(*TERMS)
    def test_config(self, cls, kwargs, kind, coefficient):
        term = cls(temperature=2.0, scale_by_temperature_squared=False,
                   chunk_size=16, standardize=True, weight=0.5,
                   name="tokens/kd", **kwargs)
        revived = self.run_serialization_test(term)
        config = revived.get_config()
        expected = {"temperature": 2.0, "scale_by_temperature_squared": False,
                    "chunk_size": 16, "standardize": True, "weight": 0.5,
                    "name": "tokens/kd", **kwargs}
        self.assertEqual({k: config[k] for k in expected}, expected)
        self.assertEqual(revived.log_name, "tokens/kd")
        teacher, student = random(2, 3, 7, seed=1), random(2, 3, 7, seed=2)
        self.assertAllClose(revived(teacher, student),
                            term(teacher, student))

    @parameterized.named_parameters(*TERMS)
    def test_defaults_and_declarations(self, cls, kwargs, kind, coefficient):
        config = cls().get_config()
        self.assertEqual(
            (config["temperature"], config["scale_by_temperature_squared"],
             config["chunk_size"], config["standardize"], config["weight"]),
            (None, True, None, False, 1.0))
        self.assertTrue(cls.response)
        self.assertFalse(cls.relational)
        self.assertFalse(cls.needs_labels)
        self.assertEqual(tuple(cls.supported_outputs), ("softmax",))
        with self.assertRaisesRegex(ValueError,
                                    "Received: outputs='sigmoid'"):
            cls()._attach("sigmoid", None)

    def test_default_names_and_ids(self):
        for name, cls, _, _, _ in TERMS:
            self.assertIsInstance(terms.get(name), cls)
        self.assertEqual(terms.get("jsd").log_name, "generalized_jsd")
        self.assertEqual(ReverseKL().log_name, "reverse_kl")
        self.assertEqual(SkewReverseKL().log_name, "skew_reverse_kl")
        self.assertEqual(terms.get("jsd", beta=0.9).beta, 0.9)
        self.assertEqual(GeneralizedJSD().beta, 0.5)
        self.assertEqual(SkewKL().skew, 0.1)
        self.assertIsInstance(terms.get("forward_kl"), keras_kd.SoftTargets)

    @parameterized.named_parameters(*TERMS)
    def test_values_per_position(self, cls, kwargs, kind, coefficient):
        for shape in ((5, 9), (2, 4, 9)):
            teacher, student = random(*shape, seed=3), random(*shape, seed=4)
            values = cls(temperature=1.5, **kwargs)(teacher, student)
            self.assertEqual(tuple(values.shape), shape[:-1])
            self.assertAllClose(
                values,
                reference(kind, teacher, student, 1.5, True, coefficient),
                rtol=1e-5, atol=1e-6)
            chunked = cls(temperature=1.5, chunk_size=3, **kwargs)
            self.assertAllClose(chunked(teacher, student), values, atol=1e-5,
                                rtol=0)

    def test_shared_temperature_variable(self):
        teacher, student = random(4, 6, seed=5), random(4, 6, seed=6)
        variable = keras.Variable(3.0, trainable=False)
        term = SkewReverseKL()
        term._attach("softmax", variable)
        self.assertAllClose(
            term(teacher, student),
            reference("skew_reverse", teacher, student, 3.0, True, 0.1),
            rtol=1e-5)
        variable.assign(1.0)
        self.assertAllClose(
            term(teacher, student),
            reference("skew_reverse", teacher, student, 1.0, True, 0.1),
            rtol=1e-5)

    def test_two_identical_teachers_equal_one(self):
        teacher, student = random(3, 2, 8, seed=7), random(3, 2, 8, seed=8)
        term = GeneralizedJSD(temperature=2.0)
        self.assertAllClose(term([teacher, teacher], student),
                            term(teacher, student), rtol=1e-5, atol=1e-6)

    def test_rejects_bad_arguments(self):
        with self.assertRaisesRegex(ValueError, r"Received: beta=2"):
            GeneralizedJSD(beta=2)
        with self.assertRaisesRegex(TypeError, "beta='0.5'"):
            GeneralizedJSD(beta="0.5")
        with self.assertRaisesRegex(ValueError, r"\[0, 1\).*skew=1\.0"):
            SkewKL(skew=1.0)
        with self.assertRaisesRegex(ValueError, r"Received: skew=-0\.1"):
            SkewReverseKL(skew=-0.1)
        with self.assertRaisesRegex(ValueError, "Received: chunk_size=0"):
            ReverseKL(chunk_size=0)
        with self.assertRaisesRegex(ValueError, "Received: temperature=0"):
            ReverseKL(temperature=0)
        with self.assertRaisesRegex(TypeError,
                                    "scale_by_temperature_squared=1"):
            ReverseKL(scale_by_temperature_squared=1)

    def test_sigmoid_outputs_are_refused(self):
        teacher, student = make_dense_pair(num_classes=1)
        with self.assertRaisesRegex(ValueError, "outputs='sigmoid'"):
            keras_kd.Distiller(teacher, student,
                               terms=[keras_kd.HardLoss(), ReverseKL()])


class SoftTargetsPerTokenTest(TestCase):
    def test_default_numbers_are_soft_target_kl(self):
        teacher, student = random(8, 10, seed=9), random(8, 10, seed=10)
        self.assertAllEqual(
            keras_kd.SoftTargets(temperature=4.0)(teacher, student),
            losses.soft_target_kl(teacher, student, 4.0))

    def test_rank_3_logits_give_one_value_per_token(self):
        teacher, student = random(2, 5, 9, seed=11), random(2, 5, 9, seed=12)
        values = keras_kd.SoftTargets(temperature=2.0)(teacher, student)
        self.assertEqual(tuple(values.shape), (2, 5))
        self.assertAllClose(values,
                            reference("forward", teacher, student, 2.0),
                            rtol=1e-5, atol=1e-6)
        chunked = keras_kd.SoftTargets(temperature=2.0, chunk_size=4)
        self.assertAllClose(chunked(teacher, student), values, atol=1e-5,
                            rtol=0)

    def test_config_keeps_chunk_size(self):
        term = keras_kd.SoftTargets(chunk_size=32)
        revived = self.run_serialization_test(term)
        self.assertEqual(revived.chunk_size, 32)
        self.assertIsNone(keras_kd.SoftTargets().get_config()["chunk_size"])
        with self.assertRaisesRegex(ValueError, "Received: chunk_size=-1"):
            keras_kd.SoftTargets(chunk_size=-1)


class DivergenceDistillerTest(TestCase):
    def test_reverse_kl_trains_a_classifier(self):
        teacher, student = make_dense_pair()
        x, y = make_data(32)
        d = keras_kd.Distiller(
            teacher, student,
            terms=[keras_kd.HardLoss(), ReverseKL(temperature=2.0)])
        d.compile(optimizer="adam")
        before = np.array(keras.ops.convert_to_numpy(student.weights[-1]))
        history = d.fit(x, y, epochs=2, batch_size=8, verbose=0)
        for key in ("loss", "reverse_kl"):
            self.assertEqual(len(history.history[key]), 2)
            self.assertTrue(np.all(np.isfinite(history.history[key])), key)
        self.assertGreater(history.history["reverse_kl"][0], 0.0)
        after = keras.ops.convert_to_numpy(student.weights[-1])
        self.assertGreater(np.abs(after - before).max(), 0.0)
        logs = d.evaluate(x, y, batch_size=32, verbose=0, return_dict=True)
        t = keras.ops.convert_to_numpy(teacher(x))
        s = keras.ops.convert_to_numpy(student(x))
        self.assertAllClose(logs["reverse_kl"],
                            reference("reverse", t, s, 2.0).mean(),
                            rtol=1e-4)

    def test_chunked_term_trains_like_unchunked(self):
        x, y = make_data(32)
        results = []
        for chunk_size in (None, 5):
            teacher, student = make_dense_pair()
            term = GeneralizedJSD(beta=0.5, temperature=2.0,
                                  chunk_size=chunk_size)
            d = keras_kd.Distiller(teacher, student,
                                   terms=[keras_kd.HardLoss(), term])
            d.compile(optimizer="sgd")
            history = d.fit(x, y, epochs=1, batch_size=16, shuffle=False,
                            verbose=0)
            results.append((history.history["generalized_jsd"][0],
                            keras.ops.convert_to_numpy(student.weights[-1])))
        self.assertTrue(np.isfinite(results[0][0]))
        self.assertAllClose(results[1][0], results[0][0], rtol=1e-4)
        self.assertAllClose(results[1][1], results[0][1], atol=1e-5)
