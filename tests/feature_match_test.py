"""Tests of keras_kd/feature_match.py inside the Distiller."""

import os

import keras
import numpy as np
import pytest

import keras_kd
from tests.conftest import make_conv_pair
from tests.conftest import make_dense_pair
from tests.distiller_test import CountCalls
from tests.test_case import TestCase


def conv_data(n=16, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 16, 16, 3)).astype("float32")
    y = rng.integers(0, 10, size=(n,)).astype("int32")
    return x, y


def layer_outputs(model, name, x):
    view = keras.Model(model.inputs[0], model.get_layer(name).output)
    return keras.ops.convert_to_numpy(view(x, training=False))


class FeatureMatchTest(TestCase):
    def test_config(self):
        self.run_serialization_test(
            keras_kd.FeatureMatch("t_conv2", "s_conv1", loss="cosine",
                                  weight=0.5, batch_norm=False))
        self.run_serialization_test(
            keras_kd.FeatureMatch("a", "b",
                                  projection=keras.layers.Dense(4)))

    def test_loss_matches_reference_with_identity(self):
        teacher, student = make_dense_pair()
        match = keras_kd.FeatureMatch("t_logits", "s_logits", loss="mse",
                                      projection=None, weight=2.0)
        d = keras_kd.Distiller(teacher, student, alpha=0.0, features=[match])
        d.compile()
        x = np.random.default_rng(1).normal(size=(8, 20)).astype("float32")
        logs = d.evaluate(x, batch_size=8, verbose=0, return_dict=True)
        t = layer_outputs(teacher, "t_logits", x)
        s = layer_outputs(student, "s_logits", x)
        expected = np.mean((t - s) ** 2)
        self.assertAllClose(logs["feature_loss/t_logits"], expected,
                            rtol=1e-5)
        self.assertAllClose(logs["loss"], logs["soft_loss"] + 2.0 * expected,
                            rtol=1e-5)

    def test_heads_train_but_stay_out_of_the_student(self):
        teacher, student = make_conv_pair()
        match = keras_kd.FeatureMatch("t_conv2", "s_conv1")
        d = keras_kd.Distiller(teacher, student, features=[match])
        head_weights = match.head.trainable_weights
        self.assertTrue(head_weights)
        ids = {id(v) for v in d.trainable_weights}
        self.assertTrue(all(id(v) in ids for v in head_weights))
        student_ids = {id(v) for v in student.weights}
        self.assertFalse(any(id(v) in student_ids for v in match.head.weights))
        self.assertEqual([type(layer).__name__ for layer in match.head.layers],
                         ["AveragePooling2D", "Conv2D", "BatchNormalization"])
        before = [np.array(keras.ops.convert_to_numpy(v))
                  for v in head_weights]
        x, y = conv_data()
        d.compile(optimizer="adam", metrics=["accuracy"])
        history = d.fit(x, y, epochs=2, batch_size=8, verbose=0)
        self.assertIn("feature_loss/t_conv2", history.history)
        after = [keras.ops.convert_to_numpy(v) for v in head_weights]
        self.assertTrue(any(not np.allclose(a, b)
                            for a, b in zip(before, after)))
        path = os.path.join(self.get_temp_dir(), "student.keras")
        student.save(path)
        self.assertEqual(keras.saving.load_model(path).count_params(),
                         student.count_params())

    def test_student_runs_once_with_features(self):
        teacher, student = make_conv_pair()
        count = CountCalls()
        inputs = keras.Input((16, 16, 3))
        h = count(inputs)
        h = keras.layers.Conv2D(8, 3, padding="same", name="s_conv1")(h)
        h = keras.layers.GlobalAveragePooling2D()(h)
        student = keras.Model(inputs, keras.layers.Dense(10)(h))
        d = keras_kd.Distiller(teacher, student, features=[
            keras_kd.FeatureMatch("t_conv2", "s_conv1"),
            keras_kd.FeatureMatch("t_conv1", "s_conv1", loss="attention"),
        ])
        d.compile(optimizer="adam")
        before = float(keras.ops.convert_to_numpy(count.calls))
        x, y = conv_data()
        d.fit(x, y, epochs=1, batch_size=8, verbose=0)
        after = float(keras.ops.convert_to_numpy(count.calls))
        self.assertEqual(after - before, 2)

    def test_layer_object_is_accepted(self):
        teacher, student = make_conv_pair()
        match = keras_kd.FeatureMatch(teacher.get_layer("t_conv2"),
                                      student.get_layer("s_conv1"))
        self.assertEqual(match.teacher_layer, "t_conv2")
        keras_kd.Distiller(teacher, student, features=[match])

    def test_unknown_layer_lists_close_matches(self):
        teacher, student = make_conv_pair()
        with self.assertRaisesRegex(ValueError, "Close matches: "
                                    "\\['t_conv2'"):
            keras_kd.Distiller(teacher, student, features=[
                keras_kd.FeatureMatch("t_conv3", "s_conv1")])

    def test_shape_mismatch_without_projection(self):
        teacher, student = make_conv_pair()
        message = ("Received: teacher \\(None, 8, 8, 16\\), student "
                   "\\(None, 16, 16, 8\\)")
        with self.assertRaisesRegex(ValueError, message):
            keras_kd.Distiller(teacher, student, features=[
                keras_kd.FeatureMatch("t_conv2", "s_conv1", projection=None)])

    def test_bad_arguments(self):
        with self.assertRaisesRegex(ValueError, "Received: weight=-1"):
            keras_kd.FeatureMatch("a", "b", weight=-1)
        with self.assertRaisesRegex(ValueError, "projection='linear'"):
            keras_kd.FeatureMatch("a", "b", projection="linear")
        with self.assertRaisesRegex(ValueError, "Unknown loss"):
            keras_kd.FeatureMatch("a", "b", loss="msee")
        teacher, student = make_dense_pair()
        with self.assertRaisesRegex(TypeError, "FeatureMatch"):
            keras_kd.Distiller(teacher, student, features=["t_hidden1"])

    def test_subclassed_model_is_refused_with_a_fix(self):
        class Sub(keras.Model):
            def __init__(self):
                super().__init__()
                self.hidden = keras.layers.Dense(8, name="hidden")
                self.out = keras.layers.Dense(10)

            def call(self, x):
                return self.out(self.hidden(x))

        teacher, _ = make_dense_pair()
        student = Sub()
        student(np.zeros((1, 20), "float32"))
        with self.assertRaisesRegex(ValueError, "functional API"):
            keras_kd.Distiller(teacher, student, features=[
                keras_kd.FeatureMatch("t_hidden1", "hidden")])

    def test_save_and_reload_with_heads(self):
        teacher, student = make_conv_pair()
        d = keras_kd.Distiller(teacher, student, features=[
            keras_kd.FeatureMatch("t_conv2", "s_conv1")])
        d.compile(optimizer="adam")
        x, y = conv_data()
        d.fit(x, y, epochs=1, batch_size=8, verbose=0)
        path = os.path.join(self.get_temp_dir(), "d.keras")
        d.save(path)
        restored = keras_kd.load_distiller(path, teacher=teacher)
        for a, b in zip(restored.features[0].head.weights,
                        d.features[0].head.weights):
            self.assertAllClose(a, b)
        a = d.evaluate(x, y, verbose=0, return_dict=True)
        b = restored.evaluate(x, y, verbose=0, return_dict=True)
        self.assertAllClose(a["loss"], b["loss"], rtol=1e-5)


class RelationMatchTest(TestCase):
    def test_config(self):
        self.run_serialization_test(
            keras_kd.RelationMatch("rkd_distance", "t_gap", "s_gap"))

    def test_published_default_weights(self):
        from keras_kd.losses.relation import DEFAULT_WEIGHTS

        for loss, weight in (("rkd_distance", 25.0), ("rkd_angle", 50.0),
                             ("similarity_preserving", 3000.0),
                             ("sp", 3000.0)):
            self.assertEqual(keras_kd.RelationMatch(loss).weight, weight)
        self.assertEqual(keras_kd.RelationMatch("pkt").weight,
                         DEFAULT_WEIGHTS["pkt"])

    def test_relation_terms_are_logged(self):
        teacher, student = make_conv_pair()
        d = keras_kd.Distiller(teacher, student, features=[
            keras_kd.RelationMatch("rkd_distance", "t_gap", "s_gap"),
            keras_kd.RelationMatch("rkd_angle", "t_gap", "s_gap"),
            keras_kd.RelationMatch("sp", "t_conv2", "s_conv1"),
            keras_kd.RelationMatch("pkt"),
        ])
        d.compile(optimizer="adam")
        x, y = conv_data()
        history = d.fit(x, y, epochs=1, batch_size=8, verbose=0)
        for key in ("rkd_distance", "rkd_angle", "sp", "pkt"):
            self.assertIn(key, history.history)
            self.assertTrue(np.isfinite(history.history[key][0]))

    def test_relation_value_matches_the_loss_function(self):
        teacher, student = make_conv_pair()
        match = keras_kd.RelationMatch("similarity_preserving", "t_gap",
                                       "s_gap", weight=1.0)
        d = keras_kd.Distiller(teacher, student, alpha=0.0, features=[match])
        d.compile()
        x, _ = conv_data(8)
        logs = d.evaluate(x, batch_size=8, verbose=0, return_dict=True)
        expected = keras_kd.losses.similarity_preserving(
            layer_outputs(teacher, "t_gap", x),
            layer_outputs(student, "s_gap", x))
        self.assertAllClose(logs["similarity_preserving"],
                            np.mean(keras.ops.convert_to_numpy(expected)),
                            rtol=1e-4)

    def test_batch_of_one_is_refused(self):
        teacher, student = make_conv_pair()
        d = keras_kd.Distiller(teacher, student, features=[
            keras_kd.RelationMatch("rkd_distance", "t_gap", "s_gap")])
        d.compile(optimizer="adam")
        x, y = conv_data(1)
        with pytest.raises(ValueError, match="at least 2 samples"):
            d.fit(x, y, batch_size=1, epochs=1, verbose=0)


class RelationRemainderTest(TestCase):
    def test_last_batch_of_one_adds_nothing(self):
        teacher, student = make_conv_pair()
        d = keras_kd.Distiller(teacher, student, alpha=0.0, features=[
            keras_kd.RelationMatch("rkd_distance", "t_gap", "s_gap")])
        d.compile(optimizer="adam")
        x, y = conv_data(9)
        history = d.fit(x, y, batch_size=4, epochs=1, verbose=0)
        self.assertTrue(np.isfinite(history.history["rkd_distance"][0]))
        logs = d.evaluate(x[:1], y[:1], batch_size=1, verbose=0,
                          return_dict=True)
        self.assertEqual(logs["rkd_distance"], 0.0)
