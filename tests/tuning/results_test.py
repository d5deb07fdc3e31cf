"""Tests of keras_kd/tuning/results.py: best_student, the table, the plot."""

import gc
import os
import sys
from unittest import mock

import keras
import keras_tuner
import numpy as np
import pytest

import keras_kd
from keras_kd.tuning import DistillerHyperModel
from keras_kd.tuning import best_student
from keras_kd.tuning import format_trial_table
from keras_kd.tuning import plot_trials
from keras_kd.tuning import trial_table
from tests.conftest import make_data
from tests.conftest import make_dense_pair
from tests.test_case import TestCase

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def build_student():
    return keras.Sequential(
        [
            keras.Input((20,)),
            keras.layers.Dense(16, activation="relu"),
            keras.layers.Dense(10),
        ],
        name="student",
    )


@pytest.fixture(scope="module", autouse=True)
def _freeze_gc():
    # KerasTuner and `clear_session` call `gc.collect()` for every trial and
    # test; freezing the objects alive now makes each collection cheap.
    gc.collect()
    gc.freeze()
    yield
    gc.unfreeze()


@pytest.fixture(scope="module")
def searched(tmp_path_factory):
    """One finished RandomSearch of 3 trials, shared by the tests below."""
    keras.backend.clear_session()
    keras.utils.set_random_seed(0)
    teacher, _ = make_dense_pair()
    x, y = make_data(64)
    x_val, y_val = make_data(32, seed=1)
    tuner = keras_tuner.RandomSearch(
        DistillerHyperModel(teacher, build_student),
        objective="val_accuracy", max_trials=3, seed=1,
        directory=str(tmp_path_factory.mktemp("search")),
        project_name="results")
    tuner.search(x, y, validation_data=(x_val, y_val), epochs=2,
                 batch_size=16, verbose=0)
    return tuner, (x_val, y_val)


class _SearchedTestCase(TestCase):
    @pytest.fixture(autouse=True)
    def _searched(self, searched, tmp_path):
        self.tuner, (self.x_val, self.y_val) = searched
        self.directory = str(tmp_path)

    def empty_tuner(self, hypermodel=None):
        teacher, _ = make_dense_pair()
        return keras_tuner.RandomSearch(
            hypermodel or DistillerHyperModel(teacher, build_student),
            objective="val_accuracy", max_trials=1,
            directory=self.directory, project_name="empty")


class BestStudentTest(_SearchedTestCase):
    def test_every_trial_completed(self):
        statuses = [t.status for t in self.tuner.oracle.trials.values()]
        self.assertEqual(statuses, ["COMPLETED"] * 3)

    def test_returns_the_student_of_the_best_trial(self):
        student = best_student(self.tuner)
        self.assertIsInstance(student, keras.Model)
        self.assertNotIsInstance(student, keras_kd.Distiller)
        self.assertEqual(student.name, "student")
        # Its validation accuracy is the best trial's score (at its best
        # epoch, whose weights KerasTuner saved).
        best = self.tuner.oracle.get_best_trials(1)[0]
        logits = student.predict(self.x_val, verbose=0)
        accuracy = np.mean(np.argmax(logits, -1) == self.y_val)
        self.assertAllClose(accuracy, best.score)

    def test_needs_a_completed_trial(self):
        with self.assertRaisesRegex(ValueError, "no completed trial"):
            best_student(self.empty_tuner())

    def test_needs_a_distiller_hypermodel(self):
        def build(hp):
            return build_student()

        with self.assertRaisesRegex(TypeError, "DistillerHyperModel"):
            best_student(self.empty_tuner(build))
        with self.assertRaisesRegex(TypeError, "Received: tuner='tuner'"):
            best_student("tuner")


class TrialTableTest(_SearchedTestCase):
    def test_rows_best_first(self):
        table = trial_table(self.tuner)
        self.assertEqual(len(table), 3)
        scores = [row["val_accuracy"] for row in table]
        self.assertEqual(scores, sorted(scores, reverse=True))
        self.assertEqual(table[0]["trial_id"],
                         self.tuner.oracle.get_best_trials(1)[0].trial_id)
        for row in table:
            self.assertEqual(
                sorted(row),
                ["alpha", "status", "temperature", "trial_id",
                 "val_accuracy"])
            trial = self.tuner.oracle.trials[row["trial_id"]]
            self.assertEqual(row["temperature"],
                             trial.hyperparameters.values["temperature"])

    def test_format(self):
        text = format_trial_table(trial_table(self.tuner))
        lines = text.splitlines()
        self.assertEqual(len(lines), 4)
        self.assertEqual(lines[0].split(),
                         ["trial_id", "status", "temperature", "alpha",
                          "val_accuracy"])
        self.assertIn("COMPLETED", lines[1])
        self.assertEqual(format_trial_table([]), "(no trials)")

    def test_missing_values_print_as_dash(self):
        text = format_trial_table([
            {"trial_id": "0", "status": "FAILED", "temperature": 2.0,
             "val_accuracy": None}])
        self.assertTrue(text.splitlines()[1].endswith("-"))


class PlotTrialsTest(_SearchedTestCase):
    def test_writes_a_png(self):
        path = os.path.join(self.directory, "plots", "trials.png")
        self.assertEqual(plot_trials(self.tuner, path), path)
        with open(path, "rb") as f:
            self.assertEqual(f.read(8), PNG_SIGNATURE)
        # Written atomically: no temporary file is left next to it.
        self.assertEqual(os.listdir(os.path.dirname(path)), ["trials.png"])

    def test_overwrites(self):
        path = os.path.join(self.directory, "trials.png")
        with open(path, "wb") as f:
            f.write(b"old")
        plot_trials(self.tuner, path)
        with open(path, "rb") as f:
            self.assertEqual(f.read(8), PNG_SIGNATURE)

    def test_failed_plot_keeps_the_previous_file(self):
        from matplotlib.figure import Figure

        path = os.path.join(self.directory, "trials.png")
        with open(path, "wb") as f:
            f.write(b"old")

        def broken(figure, fname, **kwargs):
            with open(fname, "wb") as f:
                f.write(PNG_SIGNATURE)
            raise RuntimeError("renderer failed")

        with mock.patch.object(Figure, "savefig", broken):
            with self.assertRaisesRegex(RuntimeError, "renderer failed"):
                plot_trials(self.tuner, path)
        with open(path, "rb") as f:
            self.assertEqual(f.read(), b"old")
        self.assertEqual(os.listdir(self.directory), ["trials.png"])

    def test_a_folder_is_refused(self):
        folder = os.path.join(self.directory, "plot.png")
        os.makedirs(folder)
        with self.assertRaisesRegex(ValueError, "must name a file, but .* "
                                    "is a folder"):
            plot_trials(self.tuner, folder)

    def test_rejects_other_formats(self):
        message = r"must end in `.png`. Received: path='trials.pdf'"
        with self.assertRaisesRegex(ValueError, message):
            plot_trials(self.tuner, "trials.pdf")
        with self.assertRaisesRegex(TypeError, "Received: path=3"):
            plot_trials(self.tuner, 3)

    def test_import_error_names_the_extra(self):
        path = os.path.join(self.directory, "trials.png")
        blocked = {"matplotlib": None, "matplotlib.figure": None,
                   "matplotlib.backends.backend_agg": None}
        with mock.patch.dict(sys.modules, blocked):
            with self.assertRaisesRegex(ImportError,
                                        r"pip install 'keras-kd\[tuning\]'"):
                plot_trials(self.tuner, path)
        self.assertFalse(os.path.exists(path))
