"""Tests of keras_kd/cli/demo.py (`keras-kd demo`)."""

import json
import os
from unittest import mock

import pytest

from keras_kd.cli import _common
from tests import cli
from tests.test_case import TestCase


class DemoCommandTest(TestCase):
    @pytest.mark.slow
    def test_quick_demo_writes_every_output(self):
        out = self.get_temp_dir()
        result = cli.run_cli(["demo", "--quick", "--seeds", "2",
                              "--output-dir", "demo"], cwd=out)
        self.assertEqual(result.returncode, 0, str(result))
        self.assertNotIn("Traceback", result.stderr)
        folder = os.path.join(out, "demo")
        self.assertTrue(cli.is_png(os.path.join(folder, "demo.png")))
        for name in ("teacher.keras", "student_scratch.keras",
                     "student_distilled.keras", "student_distilled.tflite"):
            self.assertTrue(os.path.exists(os.path.join(folder, name)), name)
        with open(os.path.join(folder, "results.json")) as f:
            results = json.load(f)
        self.assertEqual(results["seeds"], [1, 2])
        for method in ("scratch", "distilled"):
            runs = results[method]
            self.assertEqual([r["seed"] for r in runs], [1, 2])
            mean = sum(r["accuracy"] for r in runs) / 2
            self.assertAlmostEqual(results["mean_accuracy"][method], mean)
            self.assertEqual(len(runs[0]["curve"]),
                             results["recipe"]["epochs"])
        self.assertEqual(results["dataset"]["test"], 2000)
        self.assertEqual(results["recipe"]["epochs"], 2)  # --quick
        self.assertEqual(results["tflite"]["num_examples"], 2000)
        # Every seed is printed, then the mean and the summary table.
        self.assertIn("seed 1: scratch", result.stdout)
        self.assertIn("seed 2: scratch", result.stdout)
        self.assertIn("mean over 2 seed(s)", result.stdout)
        for row in ("teacher", "student, scratch", "student, distilled",
                    ".tflite"):
            self.assertIn(row, result.stdout)
        self.assertIn("test accuracy", result.stdout)

    def test_missing_dataset_file(self):
        code, _, err = cli.call_main(["demo", "--dataset", "nothere.npz"])
        self.assertEqual(code, 2)
        self.assertEqual(len(err.splitlines()), 1)
        self.assertIn("Argument `--dataset` names a file that does not "
                      "exist", err)

    def test_dataset_not_on_this_machine(self):
        code, _, err = cli.call_main([
            "demo", "--dataset", "mnist", "--data-dir",
            self.get_temp_dir()])
        self.assertEqual(code, 2)
        self.assertEqual(len(err.splitlines()), 1)
        self.assertIn("'mnist' is not prepared", err)

    def test_image_folder_is_refused(self):
        code, _, err = cli.call_main(["demo", "--dataset",
                                      self.get_temp_dir()])
        self.assertEqual(code, 2)
        self.assertIn("Distil your own models on an image folder", err)

    def test_recipe_follows_the_training_set_size(self):
        from keras_kd.cli import demo
        from keras_kd.cli import build_parser

        args = build_parser().parse_args(["demo"])
        self.assertEqual(demo.recipe(args, 1348), dict(demo.RECIPES[0][1]))
        self.assertEqual(demo.recipe(args, 5000)["temperature"], 4.0)
        args = build_parser().parse_args(["demo", "--quick", "--alpha",
                                          "0.2"])
        plan = demo.recipe(args, 60000)
        self.assertEqual((plan["epochs"], plan["alpha"]), (2, 0.2))

    def test_tfds_name_without_data_dir(self):
        with mock.patch.object(_common, "default_data_dir",
                               return_value=None):
            code, _, err = cli.call_main(["demo", "--dataset", "mnist"])
        self.assertEqual(code, 2)
        self.assertIn("Pass `--data-dir DIR`", err)
