"""Tests of keras_kd/terms: the public Term base and the default terms."""

import os

import keras
import numpy as np
from keras import ops

import keras_kd
from tests.conftest import make_data
from tests.conftest import make_dense_pair
from tests.losses.logits_test import reference_cross_entropy
from tests.losses.logits_test import reference_soft_target_kl
from tests.test_case import TestCase


@keras.saving.register_keras_serializable(package="keras_kd_tests")
class LogitMSE(keras_kd.Term):
    """A user-written term: mean squared logit difference."""

    response = True

    def __init__(self, scale=1.0, **kwargs):
        super().__init__(**kwargs)
        self.scale = scale

    def call(self, teacher, student, labels=None):
        return self.scale * ops.mean(ops.square(teacher - student), axis=-1)

    def get_config(self):
        return {**super().get_config(), "scale": self.scale}


@keras.saving.register_keras_serializable(package="keras_kd_tests")
class BatchCentredMSE(keras_kd.Term):
    """A user-written relational term: logits centred on the batch mean."""

    relational = True

    def call(self, teacher, student, labels=None):
        t = teacher - ops.mean(teacher, axis=0, keepdims=True)
        s = student - ops.mean(student, axis=0, keepdims=True)
        return ops.mean(ops.square(t - s), axis=-1)


def predict(model, x):
    return keras.ops.convert_to_numpy(model(x, training=False))


def evaluate(distiller, x, y=None, sample_weight=None):
    return distiller.evaluate(x, y, sample_weight=sample_weight,
                              batch_size=len(x), verbose=0, return_dict=True)


class TermTest(TestCase):
    def setUp(self):
        self.teacher, self.student = make_dense_pair()
        self.x, self.y = make_data(32)

    def test_config(self):
        term = LogitMSE(scale=2.0, weight=0.5, name="logit/mse")
        revived = self.run_serialization_test(term)
        self.assertEqual(revived.log_name, "logit/mse")
        self.assertEqual(revived.weight, 0.5)
        self.run_serialization_test(keras_kd.SoftTargets(temperature=2.0))
        self.run_serialization_test(keras_kd.HardLoss(loss="mse"))

    def test_default_terms_equal_explicit_terms(self):
        default = keras_kd.Distiller(self.teacher, self.student, alpha=0.3,
                                     temperature=2.0)
        default.compile()
        explicit = keras_kd.Distiller(
            self.teacher, self.student, alpha=0.3, temperature=2.0,
            terms=[keras_kd.HardLoss(), keras_kd.SoftTargets()])
        explicit.compile()
        a, b = evaluate(default, self.x, self.y), evaluate(
            explicit, self.x, self.y)
        for key in ("loss", "hard_loss", "soft_loss"):
            self.assertAllClose(a[key], b[key], rtol=1e-6)

    def test_user_term_without_alpha_is_added_at_its_weight(self):
        d = keras_kd.Distiller(
            self.teacher, self.student,
            terms=[keras_kd.HardLoss(), LogitMSE(weight=0.25)])
        d.compile()
        logs = evaluate(d, self.x, self.y)
        t, s = predict(self.teacher, self.x), predict(self.student, self.x)
        mse = np.mean((t - s) ** 2)
        hard = reference_cross_entropy(self.y, s).mean()
        self.assertAllClose(logs["logit_mse"], mse, rtol=1e-5)
        self.assertAllClose(logs["hard_loss"], hard, rtol=1e-5)
        self.assertAllClose(logs["loss"], hard + 0.25 * mse, rtol=1e-5)

    def test_alpha_balances_label_and_response_terms(self):
        d = keras_kd.Distiller(
            self.teacher, self.student, alpha=0.2,
            terms=[keras_kd.HardLoss(), LogitMSE(), keras_kd.SoftTargets(
                weight=0.0)])
        d.compile()
        logs = evaluate(d, self.x, self.y)
        self.assertAllClose(
            logs["loss"], 0.2 * logs["hard_loss"] + 0.8 * logs["logit_mse"],
            rtol=1e-5)

    def test_sample_weights_and_unlabeled_samples_reach_a_user_term(self):
        d = keras_kd.Distiller(self.teacher, self.student,
                               terms=[keras_kd.HardLoss(), LogitMSE()])
        d.compile()
        y = self.y.copy()
        y[::4] = -1
        w = np.linspace(0.0, 2.0, len(self.x)).astype("float32")
        logs = evaluate(d, self.x, y, sample_weight=w)
        t, s = predict(self.teacher, self.x), predict(self.student, self.x)
        mse = (w * np.mean((t - s) ** 2, -1)).sum() / len(w)
        mask = y >= 0
        hard = (w * mask * reference_cross_entropy(
            np.where(mask, y, 0), s)).sum() / mask.sum()
        self.assertAllClose(logs["logit_mse"], mse, rtol=1e-5)
        self.assertAllClose(logs["hard_loss"], hard, rtol=1e-5)

    def test_user_term_trains_saves_and_reloads(self):
        d = keras_kd.Distiller(self.teacher, self.student,
                               terms=[keras_kd.HardLoss(), LogitMSE(2.0)])
        d.compile(optimizer="adam")
        before = [np.array(v) for v in self.student.trainable_weights]
        history = d.fit(self.x, self.y, epochs=1, batch_size=8, verbose=0)
        self.assertIn("logit_mse", history.history)
        changed = [not np.allclose(a, np.array(b)) for a, b in
                   zip(before, self.student.trainable_weights)]
        self.assertTrue(all(changed))
        path = os.path.join(self.get_temp_dir(), "run.keras")
        d.save(path)
        loaded = keras_kd.load_distiller(path, teacher=self.teacher)
        self.assertIsInstance(loaded.terms[1], LogitMSE)
        self.assertEqual(loaded.terms[1].scale, 2.0)
        self.assertAllClose(evaluate(loaded, self.x, self.y)["loss"],
                            evaluate(d, self.x, self.y)["loss"], rtol=1e-5)

    def test_relational_declaration_drives_the_batch_check(self):
        d = keras_kd.Distiller(self.teacher, self.student,
                               terms=[keras_kd.HardLoss(), BatchCentredMSE()])
        d.compile()
        with self.assertRaisesRegex(ValueError, "batch_size=1"):
            d.fit(self.x, self.y, batch_size=1, verbose=0)
        logs = evaluate(d, self.x, self.y)
        t, s = predict(self.teacher, self.x), predict(self.student, self.x)
        t, s = t - t.mean(0), s - s.mean(0)
        self.assertAllClose(logs["batch_centred_mse"],
                            np.mean((t - s) ** 2), rtol=1e-5)

    def test_bad_terms_are_refused(self):
        with self.assertRaisesRegex(TypeError, "keras_kd.Term"):
            keras_kd.Distiller(self.teacher, self.student,
                               terms=[keras.losses.MeanSquaredError()])
        with self.assertRaisesRegex(ValueError, "same name"):
            keras_kd.Distiller(self.teacher, self.student,
                               terms=[LogitMSE(), LogitMSE()])
        with self.assertRaisesRegex(ValueError, "None of the distillation"):
            keras_kd.Distiller(self.teacher, self.student,
                               terms=[keras_kd.HardLoss()])
        with self.assertRaisesRegex(ValueError, "Received: weight=-1"):
            LogitMSE(weight=-1)

    def test_term_without_call_says_what_to_implement(self):
        with self.assertRaisesRegex(NotImplementedError, "returning one"):
            keras_kd.Term()(np.zeros((2, 3)), np.zeros((2, 3)))


class SigmoidOutputsTest(TestCase):
    def make_pair(self, outputs):
        keras.utils.set_random_seed(1)
        teacher = keras.Sequential([
            keras.Input((20,)), keras.layers.Dense(32, activation="relu"),
            keras.layers.Dense(outputs)], name="teacher")
        student = keras.Sequential([
            keras.Input((20,)), keras.layers.Dense(outputs)], name="student")
        return teacher, student

    def reference(self, t, s, labels, temperature, alpha):
        def log_sig(z):
            return -np.logaddexp(0.0, -z)

        t, s = t.astype("float64") / temperature, s.astype("float64") / \
            temperature
        kl = (np.exp(log_sig(t)) * (log_sig(t) - log_sig(s))
              + np.exp(log_sig(-t)) * (log_sig(-t) - log_sig(-s)))
        soft = kl.mean(-1).mean() * temperature**2
        z = s * temperature
        y = labels.reshape(z.shape).astype("float64")
        hard = (np.logaddexp(0.0, z) - z * y).mean(-1).mean()
        return alpha * hard + (1 - alpha) * soft, hard, soft

    def test_one_logit_is_detected_and_trained(self):
        teacher, student = self.make_pair(1)
        x, _ = make_data(32)
        y = (x[:, 0] > 0).astype("float32")
        d = keras_kd.Distiller(teacher, student, alpha=0.4, temperature=3.0)
        self.assertEqual(d.outputs, "sigmoid")
        d.compile(metrics=["binary_accuracy"])
        logs = evaluate(d, x, y)
        total, hard, soft = self.reference(
            predict(teacher, x), predict(student, x), y, 3.0, 0.4)
        self.assertGreater(soft, 1e-3)
        self.assertAllClose(logs["soft_loss"], soft, rtol=1e-5)
        self.assertAllClose(logs["hard_loss"], hard, rtol=1e-5)
        self.assertAllClose(logs["loss"], total, rtol=1e-5)
        agree = np.mean((predict(teacher, x) > 0) == (predict(student, x) > 0))
        self.assertAllClose(logs["teacher_agreement"], agree)
        acc = np.mean((predict(student, x)[:, 0] > 0) == (y > 0.5))
        self.assertAllClose(logs["binary_accuracy"], acc)
        before = np.array(student.trainable_weights[0])
        d.fit(x, y, epochs=2, batch_size=8, verbose=0)
        self.assertFalse(np.allclose(before,
                                     np.array(student.trainable_weights[0])))

    def test_multi_label_needs_explicit_outputs(self):
        teacher, student = self.make_pair(5)
        x, _ = make_data(32)
        y = (np.random.default_rng(0).random((32, 5)) > 0.5).astype("float32")
        y[:4] = -1  # unlabeled samples
        d = keras_kd.Distiller(teacher, student, outputs="sigmoid", alpha=0.5)
        d.compile()
        logs = evaluate(d, x, y)
        _, hard, soft = self.reference(
            predict(teacher, x)[4:], predict(student, x)[4:], y[4:], 4.0, 0.5)
        full_soft = self.reference(predict(teacher, x), predict(student, x),
                                   np.zeros_like(y), 4.0, 0.5)[2]
        self.assertAllClose(logs["hard_loss"], hard, rtol=1e-5)
        self.assertAllClose(logs["soft_loss"], full_soft, rtol=1e-5)

    def test_sigmoid_teacher_is_converted(self):
        teacher, student = self.make_pair(3)
        probs = keras.Sequential([teacher, keras.layers.Activation(
            "sigmoid")])
        x, _ = make_data(16)
        with self.assertWarnsRegex(UserWarning, "log\\(p / \\(1 - p\\)\\)"):
            d = keras_kd.Distiller(probs, student)
        self.assertEqual(d.outputs, "sigmoid")
        d.compile()
        via_probs = evaluate(d, x)["soft_loss"]
        d2 = keras_kd.Distiller(teacher, student, outputs="sigmoid")
        d2.compile()
        self.assertAllClose(via_probs, evaluate(d2, x)["soft_loss"],
                            rtol=1e-3)

    def test_what_cannot_be_distilled_is_refused(self):
        teacher, student = self.make_pair(1)
        with self.assertRaisesRegex(ValueError, "outputs='sigmoid'"):
            keras_kd.Distiller(teacher, student, outputs="softmax")
        sig_student = keras.Sequential([
            keras.Input((20,)), keras.layers.Dense(1, activation="sigmoid")])
        with self.assertRaisesRegex(ValueError, "activation=None"):
            keras_kd.Distiller(teacher, sig_student)

    def test_labels_are_checked(self):
        teacher, student = self.make_pair(1)
        x, _ = make_data(8)
        d = keras_kd.Distiller(teacher, student)
        d.compile()
        with self.assertRaisesRegex(ValueError, "in \\[0, 1\\]"):
            d.fit(x, np.full((8,), 2.0), verbose=0)


class SeveralTeachersTest(TestCase):
    def setUp(self):
        self.t1, self.student = make_dense_pair(seed=0)
        self.t2, _ = make_dense_pair(seed=1)
        self.t1.name, self.t2.name = "t1", "t2"
        self.x, self.y = make_data(32)

    def test_ensemble_averages_softened_probabilities(self):
        d = keras_kd.Distiller(teachers=[self.t1, self.t2],
                               student=self.student, alpha=0.5,
                               temperature=3.0)
        d.compile()
        logs = evaluate(d, self.x, self.y)

        def softmax(z):
            z = z - z.max(-1, keepdims=True)
            return np.exp(z) / np.exp(z).sum(-1, keepdims=True)

        t1, t2 = predict(self.t1, self.x), predict(self.t2, self.x)
        p = 0.5 * (softmax(t1 / 3.0) + softmax(t2 / 3.0))
        log_q = np.log(softmax(predict(self.student, self.x) / 3.0))
        soft = 9.0 * (p * (np.log(p) - log_q)).sum(-1).mean()
        self.assertAllClose(logs["soft_loss"], soft, rtol=1e-5)
        # Not the KL to averaged logits.
        wrong = reference_soft_target_kl(0.5 * (t1 + t2),
                                         predict(self.student, self.x), 3.0)
        self.assertGreater(abs(np.mean(wrong) - soft), 1e-4)

    def test_one_term_per_teacher_with_weights(self):
        d = keras_kd.Distiller(
            teachers={"a": self.t1, "b": self.t2}, student=self.student,
            terms=[keras_kd.HardLoss(),
                   keras_kd.SoftTargets(teacher="a", weight=0.7, name="kd_a"),
                   keras_kd.SoftTargets(teacher="b", weight=0.3,
                                        name="kd_b")])
        d.compile()
        logs = evaluate(d, self.x, self.y)
        s = predict(self.student, self.x)
        kd_a = reference_soft_target_kl(predict(self.t1, self.x), s, 4.0)
        kd_b = reference_soft_target_kl(predict(self.t2, self.x), s, 4.0)
        self.assertAllClose(logs["kd_a"], np.mean(kd_a), rtol=1e-5)
        self.assertAllClose(logs["kd_b"], np.mean(kd_b), rtol=1e-5)
        self.assertAllClose(
            logs["loss"],
            logs["hard_loss"] + 0.7 * logs["kd_a"] + 0.3 * logs["kd_b"],
            rtol=1e-5)

    def test_teachers_are_frozen_and_not_saved(self):
        d = keras_kd.Distiller(teachers=[self.t1, self.t2],
                               student=self.student)
        d.compile()
        before = [[np.array(v) for v in t.weights] for t in (self.t1, self.t2)]
        d.fit(self.x, self.y, epochs=1, batch_size=8, verbose=0)
        for weights, t in zip(before, (self.t1, self.t2)):
            for a, b in zip(weights, t.weights):
                np.testing.assert_array_equal(a, np.array(b))
        with self.assertRaisesRegex(AttributeError, "distiller.teachers"):
            d.teacher
        self.assertEqual(list(d.teachers), ["t1", "t2"])
        path = os.path.join(self.get_temp_dir(), "run.keras")
        d.save(path)
        from tests.distiller_test import saved_arrays

        stored = saved_arrays(path)
        for t in (self.t1, self.t2):
            for weight in t.get_weights():
                self.assertFalse(
                    [n for n, a in stored.items()
                     if a.shape == weight.shape and np.array_equal(a, weight)])
        loaded = keras_kd.load_distiller(path, teacher=[self.t1, self.t2])
        self.assertAllClose(evaluate(loaded, self.x, self.y)["loss"],
                            evaluate(d, self.x, self.y)["loss"], rtol=1e-5)

    def test_feature_term_must_name_its_teacher(self):
        with self.assertRaisesRegex(ValueError, "teacher='t1'"):
            keras_kd.Distiller(teachers=[self.t1, self.t2],
                               student=self.student,
                               features=[keras_kd.FeatureMatch("t_hidden1",
                                                               "s_hidden")])
        d = keras_kd.Distiller(
            teachers=[self.t1, self.t2], student=self.student,
            features=[keras_kd.FeatureMatch("t_hidden1", "s_hidden",
                                            teacher="t2")])
        d.compile()
        self.assertIn("feature_loss/t_hidden1", evaluate(d, self.x, self.y))

    def test_cached_outputs_equal_the_live_teachers(self):
        def make():
            return keras_kd.Distiller(
                teachers={"a": self.t1, "b": self.t2}, student=self.student,
                alpha=0.5, features=[
                    keras_kd.RelationMatch("similarity_preserving",
                                           "t_hidden1", "s_hidden",
                                           teacher="b")],
                terms=[keras_kd.HardLoss(), keras_kd.SoftTargets(),
                       LogitMSE(teacher="a")])

        live = make()
        live.compile()
        cache = keras_kd.data.cache_teacher_outputs(live, self.x, verbose=0)
        self.assertEqual(sorted(cache.features),
                         ["b/logits", "b/t_hidden1"])
        cached = make()
        cached.compile()
        a = evaluate(live, self.x, self.y)
        b = evaluate(cached, self.x, cache.targets(self.y, x=self.x,
                                                   distiller=cached))
        for key in ("loss", "soft_loss", "logit_mse",
                    "similarity_preserving"):
            self.assertAllClose(a[key], b[key], rtol=1e-5)
        history = cached.fit(self.x, cache.targets(self.y), epochs=1,
                             batch_size=8, verbose=0)
        self.assertTrue(np.isfinite(history.history["loss"][0]))
        with self.assertRaisesRegex(ValueError, "terms read are missing"):
            cache.check(distiller=keras_kd.Distiller(
                teachers={"a": self.t1, "c": self.t2}, student=self.student))

    def test_teachers_with_different_classes_name_each_count(self):
        t7, _ = make_dense_pair(num_classes=7, seed=2)
        t7.name = "t7"
        # The student agrees with the first teacher: the message must not
        # tell it to take the other's 7 units.
        for teachers in ([self.t1, t7], {"a": self.t1, "b": t7}):
            with self.assertRaisesRegex(ValueError, "teachers disagree") as e:
                keras_kd.Distiller(teachers=teachers, student=self.student)
            message = str(e.exception)
            first, second = (("t1", "t7") if isinstance(teachers, list)
                             else ("a", "b"))
            self.assertIn(f"teacher {first!r} outputs 10", message)
            self.assertIn(f"teacher {second!r} outputs 7", message)
            self.assertNotIn("with 7 units", message)

    def test_teacher_and_teachers_together_are_refused(self):
        with self.assertRaisesRegex(ValueError, "not both"):
            keras_kd.Distiller(self.t1, self.student, teachers=[self.t2])


class LabelChecksTest(TestCase):
    def setUp(self):
        self.teacher, self.student = make_dense_pair()
        self.x, self.y = make_data(16)
        self.d = keras_kd.Distiller(self.teacher, self.student)
        self.d.compile()

    def fit(self, y, **kwargs):
        self.d.fit(self.x, y, epochs=1, batch_size=8, verbose=0, **kwargs)

    def test_out_of_range_and_negative_labels(self):
        for value, pattern in ((10, "label 10"), (-2, "label -2")):
            y = self.y.copy()
            y[3] = value
            with self.assertRaisesRegex(ValueError, pattern):
                self.fit(y)

    def test_non_integer_string_and_wrong_width_labels(self):
        with self.assertRaisesRegex(ValueError, "non-integer"):
            self.fit(self.y + 0.7)
        with self.assertRaisesRegex(TypeError, "StringLookup"):
            self.fit(np.array(["cat"] * 16))
        with self.assertRaisesRegex(ValueError, "width 7"):
            self.fit(np.zeros((16, 7), "float32"))

    def test_first_batch_of_a_dataset_is_checked(self):
        import tensorflow as tf

        y = self.y.copy()
        y[0] = 12
        ds = tf.data.Dataset.from_tensor_slices((self.x, y)).batch(8)
        with self.assertRaisesRegex(ValueError, "first batch"):
            self.d.fit(ds, epochs=1, verbose=0)

    def test_a_bad_label_in_a_traced_step_gives_nan(self):
        y = self.y.copy()
        y[0] = 12
        logs = self.d.evaluate(self.x, y, batch_size=16, verbose=0,
                               return_dict=True)
        self.assertTrue(np.isnan(logs["hard_loss"]))
        self.assertTrue(np.isnan(logs["loss"]))

    def test_bad_sample_weight_shape(self):
        with self.assertRaisesRegex(ValueError, "one weight per sample"):
            self.fit(self.y, sample_weight=np.ones((16, 3)))

    def test_variables_assigned_around_the_setters(self):
        self.d.temperature.assign(-3.0)
        with self.assertRaisesRegex(ValueError, "Received: temperature=-3"):
            self.fit(self.y)
        self.d.temperature.assign(4.0)
        self.d.alpha.assign(5.0)
        with self.assertRaisesRegex(ValueError, "Received: alpha=5"):
            self.fit(self.y)
        # Inside a step (e.g. a callback assigning mid-epoch): NaN, not a
        # silently wrong loss.
        logs = self.d.evaluate(self.x, self.y, verbose=0, return_dict=True)
        self.assertTrue(np.isnan(logs["loss"]))

    def test_plain_function_augmentation(self):
        d = keras_kd.Distiller(self.teacher, self.student,
                               augmentation=lambda x: x * 1.5)
        d.compile()
        history = d.fit(self.x, self.y, epochs=1, batch_size=8, verbose=0)
        self.assertTrue(np.isfinite(history.history["loss"][0]))


class TermsGetTest(TestCase):
    def test_string_ids_and_errors(self):
        self.assertIsInstance(keras_kd.terms.get("dkd"), keras_kd.DKD)
        self.assertEqual(keras_kd.terms.get("kd", temperature=2.0).temperature,
                         2.0)
        term = keras_kd.SoftTargets()
        self.assertIs(keras_kd.terms.get(term), term)
        config = keras.saving.serialize_keras_object(keras_kd.DIST(beta=2.0))
        self.assertEqual(keras_kd.terms.get(config).beta, 2.0)
        with self.assertRaisesRegex(ValueError, "Close matches: \[.dkd."):
            keras_kd.terms.get("dkdd")
