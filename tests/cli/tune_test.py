"""Tests of keras_kd/cli/tune.py (`keras-kd tune`)."""

import argparse
import csv
import json
import os

import pytest

from keras_kd.cli import tune as cli_tune
from tests import cli


class TuneCommandTest(cli.CommandTestCase):
    @pytest.mark.slow
    def test_random_search_writes_table_plot_and_student(self):
        out = self.get_temp_dir()
        result = cli.run_cli([
            "tune", self.models["teacher"], self.models["student"],
            "--data", self.npz, "--tuner", "random", "--max-trials", "2",
            "--epochs", "1", "--temperature-range", "1", "8",
            "--feature", "embedding:hidden", "--directory", "search",
            "--table", "trials.json", "--verbose", "0",
        ], cwd=out)
        self.assertEqual(result.returncode, 0, str(result))
        self.assertNotIn("Traceback", result.stderr)
        with open(os.path.join(out, "trials.json")) as f:
            rows = json.load(f)
        self.assertEqual([r["status"] for r in rows], ["COMPLETED"] * 2)
        for row in rows:
            self.assertTrue(1.0 <= row["temperature"] <= 8.0)
            self.assertTrue(0.0 <= row["alpha"] <= 1.0)
            self.assertIsInstance(row["val_accuracy"], float)
        self.assertTrue(cli.is_png(os.path.join(out, "search",
                                                "trials.png")))
        self.assertTrue(os.path.exists(os.path.join(
            out, "search", "best_student.keras")))
        self.assertIn("2 of 2 trials completed", result.stdout)
        self.assertIn("accuracy on the test split", result.stdout)
        self.assertIn("val_accuracy", result.stdout)  # the printed table

    def test_range_outside_its_domain(self):
        code, _, err = cli.call_main([
            "tune", self.models["teacher"], self.models["student"],
            "--data", self.npz, "--alpha-range", "0", "2",
            "--directory", self.get_temp_dir()])
        self.assertEqual(code, 2)
        self.assertEqual(len(err.splitlines()), 1)
        self.assertIn("Argument `--alpha-range` must be a number in [0, 1] "
                      "(each value). Received: --alpha-range=0.0 2.0", err)

    def test_output_over_the_teacher_is_refused(self):
        folder = self.get_temp_dir()
        teacher = os.path.join(folder, "teacher.keras")
        with open(self.models["teacher"], "rb") as f:
            original = f.read()
        with open(teacher, "wb") as f:
            f.write(original)
        code, out, err = cli.call_main([
            "tune", teacher, self.models["student"], "--data", self.npz,
            "--directory", folder, "--output", teacher])
        self.assertEqual(code, 2, err)
        self.assertIn("Argument `--output` names the same file as "
                      "`TEACHER.keras`", err)
        with open(teacher, "rb") as f:
            self.assertEqual(f.read(), original)

    def test_overwrite_deletes_only_a_keras_tuner_project(self):
        folder = self.get_temp_dir()
        project = os.path.join(folder, "thesis")
        os.makedirs(project)
        with open(os.path.join(project, "chapter1.tex"), "w") as f:
            f.write("keep")
        code, _, err = cli.call_main([
            "tune", self.models["teacher"], self.models["student"],
            "--data", self.npz, "--directory", folder, "--project-name",
            "thesis", "--overwrite"])
        self.assertEqual(code, 2, err)
        self.assertIn("it is not a KerasTuner project (no oracle.json)", err)
        self.assertEqual(os.listdir(project), ["chapter1.tex"])

    def test_directory_must_be_a_folder(self):
        path = os.path.join(self.get_temp_dir(), "file")
        open(path, "w").close()
        code, _, err = cli.call_main([
            "tune", self.models["teacher"], self.models["student"],
            "--data", self.npz, "--directory", path])
        self.assertEqual(code, 2, err)
        self.assertIn("`--table` cannot be written", err)

    def test_class_mismatch(self):
        code, _, err = cli.call_main([
            "tune", self.models["teacher"], self.models["five"],
            "--data", self.npz, "--directory", self.get_temp_dir()])
        self.assertEqual(code, 2)
        self.assertRegex(err, "outputs 10 logits and the student 5")

    def test_table_suffix(self):
        code, _, err = cli.call_main([
            "tune", self.models["teacher"], self.models["student"],
            "--data", self.npz, "--table", "trials.txt"])
        self.assertEqual(code, 2)
        self.assertIn("`--table` must be a path ending in `.csv` or "
                      "`.json`", err)

    def test_unknown_tuner(self):
        code, _, err = cli.call_main([
            "tune", "t.keras", "s.keras", "--data", "digits", "--tuner",
            "annealing"])
        self.assertEqual(code, 2)
        self.assertIn("argument --tuner: invalid choice: 'annealing'", err)

    def test_grid_space(self):
        args = argparse.Namespace(tuner="grid", grid_size=3,
                                  temperature_range=(1.0, 4.0),
                                  alpha_range=(0.0, 1.0))
        self.assertEqual(cli_tune.search_space(args),
                         ([1.0, 2.0, 4.0], [0.0, 0.5, 1.0]))
        args.tuner = "bayesian"
        self.assertEqual(cli_tune.search_space(args),
                         ((1.0, 4.0), (0.0, 1.0)))

    def test_csv_table(self):
        path = os.path.join(self.get_temp_dir(), "t", "trials.csv")
        cli_tune.write_table(path, [
            {"trial_id": "0", "status": "COMPLETED", "temperature": 2.0,
             "val_accuracy": 0.5},
            {"trial_id": "1", "status": "FAILED", "temperature": 4.0,
             "val_accuracy": None}])
        with open(path) as f:
            rows = list(csv.DictReader(f))
        self.assertEqual(rows[0], {"trial_id": "0", "status": "COMPLETED",
                                   "temperature": "2.0",
                                   "val_accuracy": "0.5"})
        self.assertEqual(rows[1]["val_accuracy"], "")
