"""Tests of keras_kd/tuning/hypermodel.py (DistillerHyperModel)."""

import gc
import importlib
import importlib.util
import os
import re
import subprocess
import sys
from unittest import mock

import keras
import keras_tuner
import numpy as np
import pytest
from absl.testing import parameterized

import keras_kd
from keras_kd.tuning import DistillerHyperModel
from keras_kd.tuning import trial_table
from tests.conftest import make_data
from tests.conftest import make_dense_pair
from tests.test_case import TestCase


def build_student():
    return keras.Sequential(
        [
            keras.Input((20,)),
            keras.layers.Dense(16, activation="relu", name="s_hidden"),
            keras.layers.Dense(10, name="s_logits"),
        ],
        name="student",
    )


def statuses(tuner):
    return [t.status for t in tuner.oracle.trials.values()]


def weights_of(model):
    return [np.array(keras.ops.convert_to_numpy(w)) for w in model.weights]


@pytest.fixture(scope="module", autouse=True)
def _freeze_gc():
    # KerasTuner and `clear_session` call `gc.collect()` for every trial and
    # test; freezing the objects alive now (the libraries) makes each
    # collection scan only what the tests create.
    gc.collect()
    gc.freeze()
    yield
    gc.unfreeze()


class _Interrupt(BaseException):
    """Stands for Ctrl-C or a killed job: not an `Exception`, so KerasTuner
    does not record it as a failed trial."""


class InterruptSecondTrial(keras.callbacks.Callback):
    fits = 0  # Class-level: KerasTuner deep-copies callbacks per trial.

    def on_train_begin(self, logs=None):
        InterruptSecondTrial.fits += 1
        if InterruptSecondTrial.fits == 2:
            raise _Interrupt()


class DistillerHyperModelTest(TestCase):
    @pytest.fixture(autouse=True)
    def _directory(self, tmp_path):
        self.directory = str(tmp_path)

    def setUp(self):
        super().setUp()
        self.teacher, _ = make_dense_pair()
        self.x, self.y = make_data(64)
        self.x_val, self.y_val = make_data(32, seed=1)

    def search(self, tuner, epochs=1, **kwargs):
        tuner.search(self.x, self.y, validation_data=(self.x_val, self.y_val),
                     epochs=epochs, batch_size=16, verbose=0, **kwargs)
        return tuner

    # ------------------------------------------------------------------
    # End to end with the stock tuners.

    def test_random_search_trains_students_on_cached_teacher_outputs(self):
        calls = []
        in_fit = []

        class Count(keras.layers.Layer):
            def call(self, x):
                if in_fit:
                    calls.append(1)
                return x

        def fit(*args, **kwargs):
            in_fit.append(1)
            try:
                return original_fit(*args, **kwargs)
            finally:
                in_fit.pop()

        teacher = keras.Sequential([keras.Input((20,)), Count(),
                                    self.teacher])
        before = weights_of(self.teacher)
        original_fit = keras_kd.Distiller.fit
        hypermodel = DistillerHyperModel(teacher, build_student)
        tuner = keras_tuner.RandomSearch(
            hypermodel, objective="val_accuracy", max_trials=3, seed=1,
            directory=self.directory, project_name="random")
        with mock.patch.object(
            keras_kd.data, "cache_teacher_outputs",
            side_effect=keras_kd.data.cache_teacher_outputs,
        ) as cache, mock.patch.object(keras_kd.Distiller, "fit",
                                      autospec=True, side_effect=fit):
            self.search(tuner)
        self.assertEqual(statuses(tuner), ["COMPLETED"] * 3)
        # Once for the training data, once for the validation data.
        self.assertEqual(cache.call_count, 2)
        # Training and validation never ran the teacher.
        self.assertEqual(calls, [])
        for a, b in zip(before, weights_of(self.teacher)):
            np.testing.assert_array_equal(a, b)
        for row in trial_table(tuner):
            self.assertTrue(1.0 <= row["temperature"] <= 20.0)
            self.assertTrue(0.0 <= row["alpha"] <= 1.0)
            self.assertIsNotNone(row["val_accuracy"])
        self.assertEqual(
            len({(r["temperature"], r["alpha"]) for r in trial_table(tuner)}),
            3)

    def test_hyperband_reuses_the_cache_across_brackets(self):
        hypermodel = DistillerHyperModel(self.teacher, build_student)
        tuner = keras_tuner.Hyperband(
            hypermodel, objective="val_accuracy", max_epochs=2, factor=2,
            hyperband_iterations=1, seed=1, directory=self.directory,
            project_name="hyperband")
        with mock.patch.object(
            keras_kd.data, "cache_teacher_outputs",
            side_effect=keras_kd.data.cache_teacher_outputs,
        ) as cache:
            self.search(tuner)
        self.assertEqual(set(statuses(tuner)), {"COMPLETED"})
        values = [t.hyperparameters.values for t in
                  tuner.oracle.trials.values()]
        self.assertTrue(any("tuner/trial_id" in v for v in values))
        self.assertEqual(cache.call_count, 2)

    def test_search_resumes_after_interruption(self):
        def make_tuner(max_trials):
            return keras_tuner.RandomSearch(
                DistillerHyperModel(self.teacher, build_student),
                objective="val_accuracy", max_trials=max_trials, seed=1,
                directory=self.directory, project_name="resume")

        InterruptSecondTrial.fits = 0
        with self.assertRaises(_Interrupt):
            self.search(make_tuner(2), callbacks=[InterruptSecondTrial()])
        with mock.patch.object(DistillerHyperModel, "fit", autospec=True,
                               side_effect=DistillerHyperModel.fit) as fit:
            tuner = self.search(make_tuner(2))
        self.assertEqual(fit.call_count, 1)  # The interrupted trial, again.
        self.assertEqual(statuses(tuner), ["COMPLETED"] * 2)
        with mock.patch.object(DistillerHyperModel, "fit", autospec=True,
                               side_effect=DistillerHyperModel.fit) as fit:
            tuner = self.search(make_tuner(3))
        self.assertEqual(fit.call_count, 1)  # Only the third trial.
        self.assertEqual(statuses(tuner), ["COMPLETED"] * 3)

    def test_diverging_trial_fails_and_the_search_goes_on(self):
        # GridSearch starts from the first choice: a learning rate that
        # sends the weights to 1e30, so the logits overflow to NaN.
        hypermodel = DistillerHyperModel(
            self.teacher, build_student, temperature=4.0, alpha=0.5,
            learning_rate=[1e30, 1e-3])
        tuner = keras_tuner.GridSearch(
            hypermodel, objective="val_accuracy", max_trials=2,
            directory=self.directory, project_name="nan")
        self.search(tuner)
        trials = list(tuner.oracle.trials.values())
        self.assertEqual([t.status for t in trials], ["FAILED", "COMPLETED"])
        self.assertIn("diverged", trials[0].message)
        self.assertIn("FailedTrialError", trials[0].message)
        table = trial_table(tuner)
        self.assertEqual([r["status"] for r in table],
                         ["COMPLETED", "FAILED"])
        self.assertIsNone(table[1]["val_accuracy"])

    # ------------------------------------------------------------------
    # What is searched and how each trial is built.

    def test_feature_weights_and_learning_rate_are_searched(self):
        match = keras_kd.FeatureMatch("t_hidden2", "s_hidden")
        hypermodel = DistillerHyperModel(
            self.teacher, build_student, learning_rate=(1e-3, 1e-2),
            features=[match], feature_weights=(0.1, 10.0))
        tuner = keras_tuner.RandomSearch(
            hypermodel, objective="val_accuracy", max_trials=1, seed=1,
            directory=self.directory, project_name="features")
        self.search(tuner)
        self.assertEqual(statuses(tuner), ["COMPLETED"])
        for trial in tuner.oracle.trials.values():
            values = trial.hyperparameters.values
            self.assertTrue(0.1 <= values["feature_loss/t_hidden2_weight"]
                            <= 10.0)
            self.assertTrue(1e-3 <= values["learning_rate"] <= 1e-2)
            self.assertIn("val_feature_loss/t_hidden2", trial.metrics.metrics)
        self.assertEqual(match.weight, 1.0)  # The template is not changed.

    def test_build_sets_the_values_of_hp(self):
        hypermodel = DistillerHyperModel(
            self.teacher, build_student, temperature=2.5, alpha=[0.2, 0.9],
            learning_rate=0.01)
        hp = keras_tuner.HyperParameters()
        hp.values["alpha"] = 0.9
        distiller = hypermodel.build(hp)
        self.assertIsInstance(distiller, keras_kd.Distiller)
        self.assertAllClose(distiller.temperature, 2.5)
        self.assertAllClose(distiller.alpha, 0.9)
        self.assertAllClose(distiller.optimizer.learning_rate, 0.01)
        self.assertIs(distiller.teacher, self.teacher)
        self.assertEqual(hp.values,
                         {"temperature": 2.5, "alpha": 0.9,
                          "learning_rate": 0.01})

    def test_alpha_one_is_a_legitimate_point(self):
        hypermodel = DistillerHyperModel(self.teacher, build_student,
                                         alpha=1.0)
        distiller = hypermodel.build(keras_tuner.HyperParameters())
        self.assertAllClose(distiller.alpha, 1.0)

    def test_builder_may_declare_its_own_hyperparameters(self):
        def build(hp):
            return keras.Sequential([
                keras.Input((20,)),
                keras.layers.Dense(hp.Int("units", 4, 32, step=4),
                                   activation="relu"),
                keras.layers.Dense(10),
            ])

        hypermodel = DistillerHyperModel(self.teacher, build)
        hp = keras_tuner.HyperParameters()
        hp.values["units"] = 8
        distiller = hypermodel.build(hp)
        self.assertEqual(distiller.student.layers[0].units, 8)
        self.assertIn("units", hp.values)

    def test_student_model_is_cloned_with_fresh_weights(self):
        template = build_student()
        before = weights_of(template)
        hypermodel = DistillerHyperModel(self.teacher, template)
        first = hypermodel.build(keras_tuner.HyperParameters()).student
        second = hypermodel.build(keras_tuner.HyperParameters()).student
        self.assertIsNot(first, template)
        self.assertIsNot(first, second)
        self.assertFalse(np.array_equal(weights_of(first)[0],
                                        weights_of(second)[0]))
        for a, b in zip(before, weights_of(template)):
            np.testing.assert_array_equal(a, b)

    def test_tf_data_without_reshuffling_is_cached(self):
        tf = pytest.importorskip("tensorflow")
        train = tf.data.Dataset.from_tensor_slices((self.x, self.y)).batch(24)
        val = tf.data.Dataset.from_tensor_slices(
            (self.x_val, self.y_val)).batch(16)
        hypermodel = DistillerHyperModel(self.teacher, build_student)
        tuner = keras_tuner.RandomSearch(
            hypermodel, objective="val_accuracy", max_trials=1,
            directory=self.directory, project_name="dataset")
        tuner.search(train, validation_data=val, epochs=1, verbose=0)
        self.assertEqual(statuses(tuner), ["COMPLETED"])
        self.assertEqual(hypermodel.teacher_cache.computed, 2)
        # The cached dataset pairs every sample with its own teacher logits.
        cached = hypermodel.teacher_cache.training_targets(
            hypermodel.build(keras_tuner.HyperParameters()), train, None)[0]
        x, targets = next(iter(cached.skip(2)))
        self.assertAllClose(targets["teacher_logits"],
                            self.teacher.predict(x, verbose=0), atol=1e-5)
        self.assertAllEqual(targets["labels"], self.y[48:])

    def test_reshuffling_dataset_falls_back_to_the_live_teacher(self):
        tf = pytest.importorskip("tensorflow")
        train = tf.data.Dataset.from_tensor_slices((self.x, self.y)).shuffle(
            64, seed=0, reshuffle_each_iteration=True).batch(16)
        hypermodel = DistillerHyperModel(self.teacher, build_student)
        tuner = keras_tuner.RandomSearch(
            hypermodel, objective="accuracy", max_trials=1,
            directory=self.directory, project_name="shuffled")
        with pytest.warns(UserWarning, match="not cached for this search"):
            tuner.search(train, epochs=1, verbose=0)
        self.assertEqual(statuses(tuner), ["COMPLETED"])
        self.assertEqual(hypermodel.teacher_cache.computed, 0)

    def test_logged_names(self):
        hypermodel = DistillerHyperModel(
            self.teacher, build_student,
            metrics=["accuracy", keras.metrics.SparseTopKCategoricalAccuracy(
                k=3, name="top3")])
        names = hypermodel.logged_names(
            hypermodel.build(keras_tuner.HyperParameters()))
        for name in ("loss", "hard_loss", "soft_loss", "teacher_agreement",
                     "accuracy", "top3", "val_accuracy", "val_top3",
                     "val_teacher_agreement"):
            self.assertIn(name, names)

    # ------------------------------------------------------------------
    # Objectives.

    def test_objective_not_logged_fails_before_training(self):
        hypermodel = DistillerHyperModel(self.teacher, build_student)
        tuner = keras_tuner.RandomSearch(
            hypermodel, objective=keras_tuner.Objective("val_acuracy", "max"),
            max_trials=2, directory=self.directory, project_name="typo")
        with mock.patch.object(keras_kd.Distiller, "fit") as fit:
            with self.assertRaisesRegex(
                ValueError, r"'val_acuracy' is not logged.*Close matches: "
                            r"\['val_accuracy'"):
                self.search(tuner)
        fit.assert_not_called()

    def test_validation_objective_needs_validation_data(self):
        hypermodel = DistillerHyperModel(self.teacher, build_student)
        tuner = keras_tuner.RandomSearch(
            hypermodel, objective="val_accuracy", max_trials=1,
            directory=self.directory, project_name="noval")
        with self.assertRaisesRegex(ValueError, "no `validation_data`"):
            tuner.search(self.x, self.y, epochs=1, verbose=0)

    def test_missing_objective(self):
        hypermodel = DistillerHyperModel(self.teacher, build_student)
        tuner = keras_tuner.RandomSearch(
            hypermodel, max_trials=1, directory=self.directory,
            project_name="noobjective")
        with self.assertRaisesRegex(ValueError, "has no `objective`"):
            self.search(tuner)

    def test_loss_objective_warns(self):
        hypermodel = DistillerHyperModel(self.teacher, build_student)
        tuner = keras_tuner.RandomSearch(
            hypermodel, objective="val_loss", max_trials=1,
            directory=self.directory, project_name="loss")
        with pytest.warns(UserWarning, match="not comparable"):
            self.search(tuner)
        self.assertEqual(statuses(tuner), ["COMPLETED"])

    # ------------------------------------------------------------------
    # Bad input, refused when the hypermodel is created.

    @parameterized.named_parameters(
        ("min_above_max", {"temperature": (20.0, 1.0)}, ValueError,
         r"min is larger than its max. Received: temperature=\(20.0, 1.0\)"
         r". Pass `temperature=\(1.0, 20.0\)`"),
        ("zero_temperature", {"temperature": (0.0, 20.0)}, ValueError,
         r"`temperature` must hold positive finite numbers. Received: "
         r"temperature=\(0.0, 20.0\)"),
        ("negative_temperature", {"temperature": -1.0}, ValueError,
         "Received: temperature=-1.0"),
        ("alpha_above_one", {"alpha": (0.0, 1.5)}, ValueError,
         r"`alpha` must hold numbers in \[0, 1\]"),
        ("alpha_choice_below_zero", {"alpha": [-0.1, 0.5]}, ValueError,
         r"Received: alpha=\[-0.1, 0.5\]"),
        ("three_numbers", {"temperature": (1.0, 2.0, 3.0)}, ValueError,
         r"exactly `\(min, max\)`"),
        ("empty_choices", {"alpha": []}, ValueError,
         "list of choices is empty"),
        ("string", {"alpha": "high"}, TypeError,
         "Received: alpha='high' of type str"),
        ("nan_learning_rate", {"learning_rate": (float("nan"), 1.0)},
         ValueError, "`learning_rate` must hold positive"),
        ("weights_without_features", {"feature_weights": (0.1, 1.0)},
         ValueError, "no `features` were given"),
    )
    def test_bad_search_space(self, kwargs, error, message):
        with self.assertRaisesRegex(error, message):
            DistillerHyperModel(self.teacher, build_student, **kwargs)

    def test_unknown_feature_weight_name(self):
        match = keras_kd.FeatureMatch("t_hidden2", "s_hidden")
        with self.assertRaisesRegex(
            ValueError, r"Unknown term 'feature_loss/t_hiden2'.*"
                        r"Close matches: \['feature_loss/t_hidden2'\]"):
            DistillerHyperModel(
                self.teacher, build_student, features=[match],
                feature_weights={"feature_loss/t_hiden2": (0.1, 1.0)})

    def test_student_must_be_a_builder_or_a_model(self):
        with self.assertRaisesRegex(TypeError, "Received: student='mlp'"):
            DistillerHyperModel(self.teacher, "mlp")

    def test_builder_must_return_a_model(self):
        with self.assertRaisesRegex(
            TypeError, "must return a new `keras.Model`.*Received: the "
                       "builder returned 'student' of type str"):
            DistillerHyperModel(self.teacher, lambda: "student")

    def test_builder_must_return_a_fresh_model(self):
        student = build_student()
        # The first call is fine; the second hands out the same model.
        hypermodel = DistillerHyperModel(self.teacher, lambda: student)
        with self.assertRaisesRegex(ValueError, "returned the model "
                                                "'student' again"):
            hypermodel.build(keras_tuner.HyperParameters())

    def test_student_with_other_classes(self):
        def build():
            return keras.Sequential([keras.Input((20,)),
                                     keras.layers.Dense(7)])

        with self.assertRaisesRegex(
            ValueError, "cannot be distilled from the teacher: The teacher "
                        "and the student must predict the same classes"):
            DistillerHyperModel(self.teacher, build)

    def test_student_that_is_not_built(self):
        with self.assertRaisesRegex(ValueError, "is not built"):
            DistillerHyperModel(
                self.teacher, lambda: keras.Sequential(
                    [keras.layers.Dense(10)]))

    def test_student_with_softmax(self):
        def build():
            return keras.Sequential([
                keras.Input((20,)),
                keras.layers.Dense(10, activation="softmax")])

        with self.assertRaisesRegex(ValueError, "outputs probabilities"):
            DistillerHyperModel(self.teacher, build)

    def test_errors_inside_a_trial_are_fatal(self):
        # A builder that breaks only for some hp values fails inside a
        # trial: the error is fatal (KerasTuner would otherwise swallow it).
        def build(hp):
            units = hp.Choice("units", [10, 7])
            return keras.Sequential([keras.Input((20,)),
                                     keras.layers.Dense(units)])

        hypermodel = DistillerHyperModel(self.teacher, build)
        hp = keras_tuner.HyperParameters()
        hp.values["units"] = 7
        with self.assertRaises(keras_tuner.errors.FatalValueError):
            hypermodel.build(hp)

    # ------------------------------------------------------------------
    # Optional dependency.

    def test_import_error_names_the_extra(self):
        blocked = {name: None for name in list(sys.modules)
                   if name == "keras_tuner" or name.startswith("keras_tuner.")}
        blocked.update({name: None for name in list(sys.modules)
                        if name.startswith("keras_kd.tuning")})
        blocked["keras_tuner"] = None
        with mock.patch.dict(sys.modules, blocked):
            del sys.modules["keras_kd.tuning"]
            with self.assertRaisesRegex(ImportError, re.escape(
                    "keras_kd.tuning requires KerasTuner. Install it with: "
                    "pip install 'keras-kd[tuning]'")):
                importlib.import_module("keras_kd.tuning")

    def test_import_keras_kd_does_not_import_keras_tuner(self):
        code = ("import sys, keras_kd; "
                "assert 'keras_tuner' not in sys.modules, 'imported'; "
                "assert 'keras_kd.tuning' not in sys.modules, 'tuning'")
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
        if importlib.util.find_spec("jax") is not None:
            env["KERAS_BACKEND"] = "jax"  # Imports faster; same check.
        result = subprocess.run([sys.executable, "-c", code], env=env,
                                capture_output=True, text=True, timeout=300)
        self.assertEqual(result.returncode, 0, result.stderr[-2000:])


class TermsSearchTest(TestCase):
    def test_user_terms_are_copied_per_trial_and_their_weight_searched(self):
        import keras_tuner

        from tests.terms.base_test import LogitMSE

        teacher, student = make_dense_pair()
        x, y = make_data(64)
        hypermodel = keras_kd.tuning.DistillerHyperModel(
            teacher, lambda: make_dense_pair()[1], temperature=2.0,
            terms=[keras_kd.HardLoss(), LogitMSE(name="logit_mse")],
            feature_weights={"logit_mse": (0.1, 1.0)})
        hp = keras_tuner.HyperParameters()
        first = hypermodel.build(hp)
        second = hypermodel.build(hp)
        self.assertIsInstance(first.terms[1], LogitMSE)
        self.assertIsNot(first.terms[1], second.terms[1])
        self.assertIn("logit_mse_weight", hp.values)
        self.assertNotIn("alpha", hp.values)
        self.assertEqual(first.terms[1].weight, hp.values["logit_mse_weight"])
        tuner = keras_tuner.RandomSearch(
            hypermodel, objective=keras_tuner.Objective("val_logit_mse", "min"),
            max_trials=2,
            directory=self.get_temp_dir(), project_name="terms", seed=0)
        tuner.search(x, y, validation_data=(x, y), epochs=1, verbose=0)
        trials = tuner.oracle.trials.values()
        self.assertEqual({t.status for t in trials}, {"COMPLETED"})
