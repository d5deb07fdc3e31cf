"""Tests of keras_kd/distiller.py: loss values, training, saving, errors."""

import os
import zipfile

import keras
import numpy as np
import pytest
from absl.testing import parameterized

import keras_kd
from tests.conftest import make_data
from tests.conftest import make_dense_pair
from tests.losses.logits_test import reference_cross_entropy
from tests.losses.logits_test import reference_soft_target_kl
from tests.test_case import TestCase


def reference_loss(teacher, student, labels, alpha, temperature, weights=None,
                   squared=True):
    """NumPy reference of the Distiller loss on one batch."""
    n = len(teacher)
    w = np.ones(n) if weights is None else np.asarray(weights, "float64")
    soft = (w * reference_soft_target_kl(teacher, student, temperature,
                                         squared)).sum() / n
    if labels is None:
        return soft, None, soft
    labels = np.asarray(labels)
    mask = (labels >= 0).astype("float64")
    if mask.sum() == 0:
        return soft, 0.0, soft
    hard = (w * mask * reference_cross_entropy(labels, student)).sum()
    hard /= mask.sum()
    return alpha * hard + (1 - alpha) * soft, hard, soft


def predict(model, x):
    return keras.ops.convert_to_numpy(model(x, training=False))


class CountCalls(keras.layers.Layer):
    """Identity layer counting its calls in a variable (graph-safe)."""

    def build(self, input_shape):
        self.calls = self.add_weight(shape=(), initializer="zeros",
                                     trainable=False, name="calls")

    def call(self, x):
        self.calls.assign_add(1.0)
        return x


class DistillerLossTest(TestCase):
    def setUp(self):
        keras.utils.set_random_seed(0)
        self.teacher, self.student = make_dense_pair()
        self.x, self.y = make_data(32)

    def evaluate(self, distiller, x, y=None, sample_weight=None):
        return distiller.evaluate(x, y, sample_weight=sample_weight,
                                  batch_size=len(x), verbose=0,
                                  return_dict=True)

    @parameterized.named_parameters(
        ("a05_t4", 0.5, 4.0), ("a0_t1", 0.0, 1.0), ("a09_t20", 0.9, 20.0)
    )
    def test_loss_matches_reference(self, alpha, temperature):
        d = keras_kd.Distiller(self.teacher, self.student, alpha=alpha,
                               temperature=temperature)
        d.compile(optimizer="sgd", metrics=["accuracy"])
        logs = self.evaluate(d, self.x, self.y)
        total, hard, soft = reference_loss(
            predict(self.teacher, self.x), predict(self.student, self.x),
            self.y, alpha, temperature)
        np.testing.assert_allclose(logs["loss"], total, rtol=1e-4)
        np.testing.assert_allclose(logs["hard_loss"], hard, rtol=1e-4)
        np.testing.assert_allclose(logs["soft_loss"], soft, rtol=1e-4)
        agree = np.mean(predict(self.teacher, self.x).argmax(-1)
                        == predict(self.student, self.x).argmax(-1))
        np.testing.assert_allclose(logs["teacher_agreement"], agree)
        acc = np.mean(predict(self.student, self.x).argmax(-1) == self.y)
        np.testing.assert_allclose(logs["accuracy"], acc, rtol=1e-6)

    def test_one_hot_labels_equal_sparse_labels(self):
        d = keras_kd.Distiller(self.teacher, self.student)
        d.compile(metrics=["accuracy"])
        sparse = self.evaluate(d, self.x, self.y)
        d = keras_kd.Distiller(self.teacher, self.student)
        d.compile(metrics=["accuracy"])
        one_hot = self.evaluate(d, self.x, np.eye(10)[self.y])
        for key in ("loss", "hard_loss", "soft_loss", "accuracy"):
            np.testing.assert_allclose(one_hot[key], sparse[key], rtol=1e-5)

    def test_without_temperature_squared(self):
        d = keras_kd.Distiller(self.teacher, self.student, alpha=0.0,
                               temperature=5.0,
                               scale_by_temperature_squared=False)
        d.compile()
        logs = self.evaluate(d, self.x, self.y)
        _, _, soft = reference_loss(
            predict(self.teacher, self.x), predict(self.student, self.x),
            self.y, 0.0, 5.0, squared=False)
        np.testing.assert_allclose(logs["soft_loss"], soft, rtol=1e-4)

    def test_sample_weight_weights_both_terms(self):
        d = keras_kd.Distiller(self.teacher, self.student, alpha=0.3)
        d.compile()
        weights = np.linspace(0.0, 2.0, len(self.x)).astype("float32")
        logs = self.evaluate(d, self.x, self.y, sample_weight=weights)
        total, hard, soft = reference_loss(
            predict(self.teacher, self.x), predict(self.student, self.x),
            self.y, 0.3, 4.0, weights)
        np.testing.assert_allclose(logs["hard_loss"], hard, rtol=1e-4)
        np.testing.assert_allclose(logs["soft_loss"], soft, rtol=1e-4)
        np.testing.assert_allclose(logs["loss"], total, rtol=1e-4)

    def test_unlabeled_samples_in_a_labeled_batch(self):
        d = keras_kd.Distiller(self.teacher, self.student, alpha=0.5)
        d.compile(metrics=["accuracy"])
        y = self.y.copy()
        y[::3] = -1
        logs = self.evaluate(d, self.x, y)
        total, hard, soft = reference_loss(
            predict(self.teacher, self.x), predict(self.student, self.x),
            y, 0.5, 4.0)
        np.testing.assert_allclose(logs["hard_loss"], hard, rtol=1e-4)
        np.testing.assert_allclose(logs["loss"], total, rtol=1e-4)
        labeled = y >= 0
        acc = np.mean(predict(self.student, self.x)[labeled].argmax(-1)
                      == y[labeled])
        np.testing.assert_allclose(logs["accuracy"], acc, rtol=1e-6)

    def test_metrics_and_agreement_with_weights_and_unlabeled(self):
        # `metrics` ignore the sample weights, `weighted_metrics` use them;
        # both leave unlabeled samples out. `teacher_agreement` counts
        # every sample at its weight.
        d = keras_kd.Distiller(self.teacher, self.student, alpha=0.5)
        d.compile(metrics=["accuracy"], weighted_metrics=["accuracy"])
        y = self.y.copy()
        y[::3] = -1
        weights = np.linspace(0.0, 2.0, len(self.x)).astype("float32")
        logs = self.evaluate(d, self.x, y, sample_weight=weights)
        s = predict(self.student, self.x).argmax(-1)
        t = predict(self.teacher, self.x).argmax(-1)
        labeled = y >= 0
        hit = (s == y).astype("float64")
        np.testing.assert_allclose(logs["accuracy"], hit[labeled].mean(),
                                   rtol=1e-6)
        np.testing.assert_allclose(
            logs["weighted_accuracy"],
            (weights * hit)[labeled].sum() / weights[labeled].sum(),
            rtol=1e-6)
        np.testing.assert_allclose(
            logs["teacher_agreement"],
            (weights * (s == t)).sum() / weights.sum(), rtol=1e-6)

    def test_a_subclass_compute_metrics_is_called(self):
        calls = []

        class Logged(keras_kd.Distiller):
            def compute_metrics(self, x, y, y_pred, sample_weight=None):
                calls.append(y_pred.shape)
                return super().compute_metrics(x, y, y_pred, sample_weight)

        d = Logged(self.teacher, self.student, alpha=0.5)
        d.compile(metrics=["accuracy"])
        y = self.y.copy()
        y[::3] = -1
        logs = self.evaluate(d, self.x, y)
        self.assertTrue(calls)
        labeled = y >= 0
        acc = np.mean(predict(self.student, self.x)[labeled].argmax(-1)
                      == y[labeled])
        np.testing.assert_allclose(logs["accuracy"], acc, rtol=1e-6)

    def test_all_unlabeled_batch_equals_no_labels(self):
        d = keras_kd.Distiller(self.teacher, self.student, alpha=0.7)
        d.compile()
        masked = self.evaluate(d, self.x, -np.ones_like(self.y))
        unlabeled = self.evaluate(d, self.x)
        np.testing.assert_allclose(masked["loss"], unlabeled["loss"],
                                   rtol=1e-6)
        np.testing.assert_allclose(unlabeled["loss"], unlabeled["soft_loss"])
        self.assertNotIn("hard_loss", unlabeled)

    def test_custom_hard_loss_from_compile(self):
        d = keras_kd.Distiller(self.teacher, self.student, alpha=1.0 - 1e-9)
        smoothing = keras.losses.CategoricalCrossentropy(
            from_logits=True, label_smoothing=0.1)
        d.compile(loss=smoothing)
        logs = self.evaluate(d, self.x, np.eye(10)[self.y])
        expected = smoothing(np.eye(10)[self.y], predict(self.student, self.x))
        np.testing.assert_allclose(logs["hard_loss"],
                                   keras.ops.convert_to_numpy(expected),
                                   rtol=1e-5)

    def test_keras_cross_entropy_ids_mean_from_logits(self):
        d = keras_kd.Distiller(self.teacher, self.student)
        d.compile(loss="sparse_categorical_crossentropy")
        logs = self.evaluate(d, self.x, self.y)
        _, hard, _ = reference_loss(
            predict(self.teacher, self.x), predict(self.student, self.x),
            self.y, 0.5, 4.0)
        np.testing.assert_allclose(logs["hard_loss"], hard, rtol=1e-4)

    def test_probability_loss_objects_are_refused(self):
        d = keras_kd.Distiller(self.teacher, self.student)
        with self.assertRaisesRegex(ValueError, "from_logits=True"):
            d.compile(loss=keras.losses.SparseCategoricalCrossentropy())

    def test_student_regularization_is_added(self):
        student = keras.Sequential([
            keras.Input((20,)),
            keras.layers.Dense(10, kernel_regularizer=keras.regularizers.L2(
                0.1))])
        d = keras_kd.Distiller(self.teacher, student, alpha=0.5)
        d.compile()
        logs = self.evaluate(d, self.x, self.y)
        total, _, _ = reference_loss(
            predict(self.teacher, self.x), predict(student, self.x), self.y,
            0.5, 4.0)
        kernel = keras.ops.convert_to_numpy(student.layers[0].kernel)
        np.testing.assert_allclose(
            logs["loss"], total + 0.1 * np.sum(kernel**2), rtol=1e-4)


class DistillerTrainingTest(TestCase):
    def setUp(self):
        keras.utils.set_random_seed(0)
        self.x, self.y = make_data(64)

    def test_history_keys(self):
        teacher, student = make_dense_pair()
        d = keras_kd.Distiller(teacher, student)
        d.compile(metrics=["accuracy"])
        history = d.fit(self.x, self.y, epochs=1, batch_size=16, verbose=0,
                        validation_data=(self.x, self.y))
        self.assertEqual(
            set(history.history),
            {"loss", "hard_loss", "soft_loss", "accuracy", "teacher_agreement",
             "val_loss", "val_hard_loss", "val_soft_loss", "val_accuracy",
             "val_teacher_agreement"},
        )

    def test_teacher_is_bit_identical_after_fit(self):
        inputs = keras.Input((20,))
        h = keras.layers.Dense(32)(inputs)
        h = keras.layers.BatchNormalization()(h)
        h = keras.layers.Dropout(0.5)(h)
        teacher = keras.Model(inputs, keras.layers.Dense(10)(h))
        _, student = make_dense_pair()
        before = [np.array(w) for w in teacher.get_weights()]
        d = keras_kd.Distiller(teacher, student)
        self.assertIs(d.teacher, teacher)
        self.assertIs(d.student, student)
        d.compile(optimizer="adam")
        d.fit(self.x, self.y, epochs=2, batch_size=16, verbose=0)
        for a, b in zip(before, teacher.get_weights()):
            np.testing.assert_array_equal(a, b)
        self.assertFalse(teacher.trainable)

    def test_student_runs_once_per_compiled_step(self):
        teacher, student = make_dense_pair()
        s_count = CountCalls()
        student = keras.Sequential([keras.Input((20,)), s_count, student])
        d = keras_kd.Distiller(teacher, student)
        d.compile(optimizer="adam")
        before = float(keras.ops.convert_to_numpy(s_count.calls))
        d.fit(self.x, self.y, epochs=2, batch_size=16, verbose=0)
        after = float(keras.ops.convert_to_numpy(s_count.calls))
        self.assertEqual(after - before, 2 * 4)

    def test_teacher_and_student_run_once_per_eager_step(self):
        teacher, student = make_dense_pair()
        calls = {"teacher": 0, "student": 0}

        class Count(keras.layers.Layer):
            def __init__(self, role, **kwargs):
                super().__init__(**kwargs)
                self.role = role

            def call(self, x):
                calls[self.role] += 1
                return x

        teacher = keras.Sequential([keras.Input((20,)), Count("teacher"),
                                    teacher])
        student = keras.Sequential([keras.Input((20,)), Count("student"),
                                    student])
        d = keras_kd.Distiller(teacher, student)
        d.compile(optimizer="adam", run_eagerly=True)
        d.fit(self.x[:16], self.y[:16], epochs=1, batch_size=16, verbose=0)
        calls.update(teacher=0, student=0)
        d.fit(self.x, self.y, epochs=1, batch_size=16, verbose=0)
        self.assertEqual(calls, {"teacher": 4, "student": 4})

    def test_alpha_one_equals_student_only_training(self):
        teacher, student = make_dense_pair()
        twin = keras.models.clone_model(student)
        twin.set_weights(student.get_weights())
        with pytest.warns(UserWarning, match="alpha=1.0"):
            d = keras_kd.Distiller(teacher, student, alpha=1.0)
        d.compile(optimizer=keras.optimizers.SGD(0.1))
        twin.compile(optimizer=keras.optimizers.SGD(0.1),
                     loss=keras.losses.SparseCategoricalCrossentropy(
                         from_logits=True))
        h1 = d.fit(self.x, self.y, epochs=2, batch_size=16, shuffle=False,
                   verbose=0)
        h2 = twin.fit(self.x, self.y, epochs=2, batch_size=16, shuffle=False,
                      verbose=0)
        np.testing.assert_allclose(h1.history["loss"], h2.history["loss"],
                                   rtol=1e-5)
        for a, b in zip(student.get_weights(), twin.get_weights()):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)

    def test_distillation_reduces_soft_loss_and_learns(self):
        teacher, student = make_dense_pair()
        d = keras_kd.Distiller(teacher, student, alpha=0.0, temperature=1.0)
        d.compile(optimizer=keras.optimizers.Adam(0.01))
        history = d.fit(self.x, epochs=30, batch_size=16, verbose=0)
        soft = history.history["soft_loss"]
        agreement = history.history["teacher_agreement"]
        self.assertLess(soft[-1], 0.2 * soft[0])
        self.assertGreater(agreement[-1], agreement[0] + 0.3)

    def test_temperature_callback_changes_the_next_step(self):
        teacher, student = make_dense_pair()
        d = keras_kd.Distiller(teacher, student, alpha=0.0, temperature=4.0)
        d.compile(optimizer=keras.optimizers.SGD(0.0))
        values = [4.0, 2.0, 1.0]
        callback = keras_kd.callbacks.TemperatureScheduler(
            lambda step, _: values[step], update_freq="batch")
        x = self.x[:16]
        history = d.fit(x, epochs=3, batch_size=16, verbose=0,
                        callbacks=[callback])
        t, s = predict(teacher, x), predict(student, x)
        expected = [reference_loss(t, s, None, 0.0, v)[0] for v in values]
        np.testing.assert_allclose(history.history["soft_loss"], expected,
                                   rtol=1e-4)
        np.testing.assert_allclose(history.history["temperature"], values)
        if keras.backend.backend() == "tensorflow":
            tracing = getattr(d.train_function,
                              "experimental_get_tracing_count", None)
            if tracing is not None:
                self.assertEqual(tracing(), 1)

    def test_alpha_callback(self):
        teacher, student = make_dense_pair()
        d = keras_kd.Distiller(teacher, student, alpha=0.5)
        d.compile(optimizer=keras.optimizers.SGD(0.0))
        schedule = keras_kd.callbacks.linear(0.0, 1.0, steps=2)
        history = d.fit(self.x, self.y, epochs=2, batch_size=64, verbose=0,
                        callbacks=[keras_kd.callbacks.AlphaScheduler(schedule)])
        np.testing.assert_allclose(history.history["alpha"], [0.0, 1.0])
        h = history.history
        np.testing.assert_allclose(h["loss"][0], h["soft_loss"][0], rtol=1e-5)
        np.testing.assert_allclose(h["loss"][1], h["hard_loss"][1], rtol=1e-5)

    def test_setting_temperature_and_alpha(self):
        teacher, student = make_dense_pair()
        d = keras_kd.Distiller(teacher, student)
        d.temperature = 2.5
        d.alpha = 0.25
        self.assertAlmostEqual(float(d.temperature.numpy()
                                     if hasattr(d.temperature, "numpy")
                                     else d.temperature.value), 2.5)
        with self.assertRaisesRegex(ValueError, "Received: alpha=2"):
            d.alpha = 2

    def test_teacher_with_softmax_is_converted_with_a_warning(self):
        teacher, student = make_dense_pair()
        probs = keras.Sequential([teacher, keras.layers.Softmax()])
        logits_d = keras_kd.Distiller(teacher, student)
        with pytest.warns(UserWarning, match="outputs probabilities"):
            probs_d = keras_kd.Distiller(probs, student)
        logits_d.compile()
        probs_d.compile()
        a = logits_d.evaluate(self.x, self.y, verbose=0, return_dict=True)
        b = probs_d.evaluate(self.x, self.y, verbose=0, return_dict=True)
        np.testing.assert_allclose(b["soft_loss"], a["soft_loss"], rtol=1e-4)

    def test_teacher_softmax_activation_is_detected(self):
        _, student = make_dense_pair()
        teacher = keras.Sequential([keras.Input((20,)),
                                    keras.layers.Dense(10,
                                                       activation="softmax")])
        with pytest.warns(UserWarning, match="applies a softmax"):
            keras_kd.Distiller(teacher, student)

    def test_different_input_sizes_with_preprocessing(self):
        teacher = keras.Sequential([keras.Input((8, 8, 1)),
                                    keras.layers.Flatten(),
                                    keras.layers.Dense(10)])
        student = keras.Sequential([keras.Input((4, 4, 1)),
                                    keras.layers.Flatten(),
                                    keras.layers.Dense(10)])
        with self.assertRaisesRegex(ValueError, "teacher_preprocessing"):
            keras_kd.Distiller(teacher, student)
        d = keras_kd.Distiller(
            teacher, student,
            student_preprocessing=keras.layers.Resizing(4, 4))
        d.compile(metrics=["accuracy"])
        x = np.random.default_rng(0).normal(size=(8, 8, 8, 1))
        history = d.fit(x.astype("float32"), self.y[:8], epochs=1, verbose=0)
        self.assertTrue(np.isfinite(history.history["loss"][0]))


def saved_arrays(path):
    """Every array stored in the weights of a `.keras` file, by path."""
    import h5py

    arrays = {}
    with zipfile.ZipFile(path) as archive:
        with archive.open("model.weights.h5") as f:
            def visit(name, obj):
                if isinstance(obj, h5py.Dataset):
                    arrays[name] = np.asarray(obj)

            h5py.File(f, "r").visititems(visit)
    return arrays


class DistillerSavingTest(TestCase):
    def setUp(self):
        keras.utils.set_random_seed(0)
        self.x, self.y = make_data(64)

    def test_config_round_trip(self):
        teacher, student = make_dense_pair()
        d = keras_kd.Distiller(teacher, student, alpha=0.3, temperature=2.0,
                               save_teacher=True)
        config = d.get_config()
        self.assertEqual(config["alpha"], 0.3)
        revived = keras_kd.Distiller.from_config(config)
        self.assertEqual(revived.get_config()["temperature"], 2.0)
        self.assertIsInstance(revived.student, keras.Model)

    def test_save_reload_resumes_fit(self):
        teacher, student = make_dense_pair()
        d = keras_kd.Distiller(teacher, student, alpha=0.4, temperature=3.0)
        d.compile(optimizer=keras.optimizers.Adam(0.01), metrics=["accuracy"])
        d.fit(self.x, self.y, epochs=1, batch_size=16, verbose=0)
        d.temperature = 2.0
        path = os.path.join(self.get_temp_dir(), "run.keras")
        d.save(path)
        stored = saved_arrays(path)
        self.assertEqual(
            sum(a.size for a in stored.values()),
            sum(w.size for w in d.student.get_weights())
            + sum(int(np.prod(v.shape)) for v in d.optimizer.variables)
            + 2,  # alpha and temperature
            sorted(stored),
        )
        for weight in teacher.get_weights():
            self.assertFalse(
                [n for n, a in stored.items()
                 if a.shape == weight.shape and np.array_equal(a, weight)])

        with self.assertRaisesRegex(Exception, "load_distiller"):
            keras.saving.load_model(path)
        restored = keras_kd.load_distiller(path, teacher=teacher)
        self.assertEqual(int(keras.ops.convert_to_numpy(
            restored.optimizer.iterations)), 4)
        np.testing.assert_allclose(
            keras.ops.convert_to_numpy(restored.temperature.value), 2.0)
        for a, b in zip(restored.student.get_weights(),
                        student.get_weights()):
            np.testing.assert_array_equal(a, b)
        d.fit(self.x, self.y, epochs=1, batch_size=16, shuffle=False,
              verbose=0)
        restored.fit(self.x, self.y, epochs=1, batch_size=16, shuffle=False,
                     verbose=0)
        for a, b in zip(restored.student.get_weights(),
                        student.get_weights()):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)

    def test_save_teacher_embeds_it(self):
        teacher, student = make_dense_pair()
        d = keras_kd.Distiller(teacher, student, save_teacher=True)
        d.compile()
        path = os.path.join(self.get_temp_dir(), "run.keras")
        d.save(path)
        self.assertGreater(
            sum(a.size for a in saved_arrays(path).values()),
            sum(w.size for w in teacher.get_weights()))
        restored = keras.saving.load_model(path)
        for a, b in zip(restored.teacher.get_weights(),
                        teacher.get_weights()):
            np.testing.assert_array_equal(a, b)

    def test_teacher_given_as_path(self):
        teacher, student = make_dense_pair()
        tmp = self.get_temp_dir()
        teacher_path = os.path.join(tmp, "teacher.keras")
        teacher.save(teacher_path)
        d = keras_kd.Distiller(teacher_path, student)
        d.compile()
        path = os.path.join(tmp, "run.keras")
        d.save(path)
        restored = keras.saving.load_model(path)
        self.assertEqual(len(restored.teacher.weights), len(teacher.weights))

    def test_saved_student_has_no_teacher(self):
        teacher, student = make_dense_pair()
        d = keras_kd.Distiller(teacher, student)
        d.compile()
        d.fit(self.x, self.y, epochs=1, verbose=0)
        path = os.path.join(self.get_temp_dir(), "student.keras")
        d.student.save(path)
        restored = keras.saving.load_model(path)
        self.assertEqual(restored.count_params(), student.count_params())
        np.testing.assert_allclose(predict(restored, self.x),
                                   predict(student, self.x), rtol=1e-6)


class DistillerErrorsTest(TestCase):
    def setUp(self):
        keras.utils.set_random_seed(0)
        self.teacher, self.student = make_dense_pair()

    @parameterized.named_parameters(
        ("alpha_high", {"alpha": 1.5}, ValueError, "Received: alpha=1.5"),
        ("alpha_low", {"alpha": -0.1}, ValueError, "Received: alpha=-0.1"),
        ("temp_zero", {"temperature": 0}, ValueError,
         "Received: temperature=0"),
        ("temp_nan", {"temperature": float("nan")}, ValueError,
         "temperature=nan"),
        ("temp_inf", {"temperature": float("inf")}, ValueError,
         "temperature=inf"),
        ("temp_str", {"temperature": "4"}, TypeError, "temperature='4'"),
        ("outputs", {"teacher_outputs": "logit"}, ValueError,
         "Did you mean 'logits'"),
    )
    def test_bad_arguments(self, kwargs, error, message):
        with self.assertRaisesRegex(error, message):
            keras_kd.Distiller(self.teacher, self.student, **kwargs)

    def test_class_count_mismatch(self):
        student = keras.Sequential([keras.Input((20,)),
                                    keras.layers.Dense(5)])
        with self.assertRaisesRegex(ValueError, "outputs 10 logits and the "
                                    "student 5"):
            keras_kd.Distiller(self.teacher, student)

    def test_unbuilt_models(self):
        unbuilt = keras.Sequential([keras.layers.Dense(10)])
        with self.assertRaisesRegex(ValueError, "teacher model .* not built"):
            keras_kd.Distiller(unbuilt, self.student)
        with self.assertRaisesRegex(ValueError, "student model .* not built"):
            keras_kd.Distiller(self.teacher, unbuilt)

    def test_frozen_student(self):
        self.student.trainable = False
        with self.assertRaisesRegex(ValueError, "no trainable weights"):
            keras_kd.Distiller(self.teacher, self.student)

    def test_student_with_softmax(self):
        student = keras.Sequential([keras.Input((20,)),
                                    keras.layers.Dense(10,
                                                       activation="softmax")])
        with self.assertRaisesRegex(ValueError, "activation=None"):
            keras_kd.Distiller(self.teacher, student)

    def test_not_a_model(self):
        with self.assertRaisesRegex(TypeError, "must be a `keras.Model`"):
            keras_kd.Distiller("nope.keras" and object(), self.student)

    def test_same_model(self):
        with self.assertRaisesRegex(ValueError, "same model"):
            keras_kd.Distiller(self.student, self.student)


class DistillerNaNTest(TestCase):
    def test_nan_batch_is_visible_and_terminate_on_nan_stops(self):
        teacher, student = make_dense_pair()
        d = keras_kd.Distiller(teacher, student)
        d.compile(optimizer="sgd")
        x, y = make_data(64)
        weights = np.ones(64, "float32")
        weights[20] = np.nan  # As a corrupt sample would make the loss.
        history = d.fit(x, y, sample_weight=weights, batch_size=16, epochs=3,
                        shuffle=False, verbose=0,
                        callbacks=[keras.callbacks.TerminateOnNaN()])
        self.assertEqual(len(history.history["loss"]), 1)
        self.assertTrue(np.isnan(history.history["loss"][0]))


class AtomicSaveTest(TestCase):
    def test_a_failed_save_leaves_the_previous_file(self):
        teacher, student = make_dense_pair()
        d = keras_kd.Distiller(teacher, student)
        d.compile()
        path = os.path.join(self.get_temp_dir(), "run.keras")
        d.save(path)
        with open(path, "rb") as f:
            before = f.read()
        from unittest import mock

        with mock.patch.object(keras.Model, "get_config",
                               side_effect=RuntimeError("disk full")):
            with self.assertRaises(Exception):
                d.save(path)
        with open(path, "rb") as f:
            self.assertEqual(f.read(), before)
        self.assertEqual(os.listdir(os.path.dirname(path)), ["run.keras"])

    def test_a_truncated_file_is_named_as_damaged(self):
        teacher, student = make_dense_pair()
        d = keras_kd.Distiller(teacher, student)
        path = os.path.join(self.get_temp_dir(), "run.keras")
        d.save(path)
        with open(path, "r+b") as f:
            f.truncate(100)
        with self.assertRaisesRegex(ValueError, "damaged|not a valid"):
            keras_kd.load_distiller(path, teacher=teacher)


class DatasetShuffleWarningTest(TestCase):
    def test_a_dataset_trains_in_its_own_order_without_a_warning(self):
        import warnings

        import tensorflow as tf

        teacher, student = make_dense_pair()
        x, y = make_data(32)
        d = keras_kd.Distiller(teacher, student)
        d.compile(optimizer="adam")
        ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(8)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            d.fit(ds, epochs=1, verbose=0)
        shuffle = [w for w in caught if "shuffle" in str(w.message)]
        self.assertEqual(shuffle, [])
