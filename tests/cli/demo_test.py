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
        # The unquantized file is named by its precision, not "none".
        self.assertRegex(result.stdout, r"\.tflite float32 ")
        self.assertNotIn(".tflite none", result.stdout)
        # A progress line closes every phase.
        for phase in ("teacher", "seed 1, scratch", "seed 2, distilled"):
            self.assertRegex(result.stdout,
                             rf"{phase}: epoch 2/2 done in \d+ s")
        self.assertRegex(result.stdout, r"Finished in \d+ s")
        self.assertGreater(results["elapsed"], 0)
        # Only keras_kd's own lines on stderr (TF's are silenced).
        self.assertEqual(result.messages, [], result.stderr)

    def test_quiet_and_verbose_turn_the_progress_lines_off(self):
        import types

        from keras_kd.cli import demo

        def args(**kwargs):
            return types.SimpleNamespace(**{"quiet": False, "verbose": 0,
                                            **kwargs})

        self.assertEqual(len(demo.progress("teacher", args())), 1)
        self.assertEqual(demo.progress("teacher", args(quiet=True)), [])
        # Keras' own progress bar replaces them.
        self.assertEqual(demo.progress("teacher", args(verbose=1)), [])
        from keras_kd.cli import build_parser

        self.assertTrue(build_parser().parse_args(["demo", "--quiet"]).quiet)
        self.assertFalse(build_parser().parse_args(["demo"]).quiet)

    def test_export_labels(self):
        from keras_kd.cli import demo

        self.assertEqual(demo.export_label("none"), "float32")
        for mode in ("float16", "dynamic", "int8"):
            self.assertEqual(demo.export_label(mode), mode)

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

    def test_output_dir_that_is_a_file(self):
        path = os.path.join(self.get_temp_dir(), "notes")
        with open(path, "w") as f:
            f.write("keep")
        code, out, err = cli.call_main(["demo", "--output-dir", path])
        self.assertEqual(code, 2, err)
        self.assertIn("Argument `--output-dir` must be a folder, but it "
                      "names a file", err)
        with open(path) as f:
            self.assertEqual(f.read(), "keep")

    def test_output_dir_with_the_users_files(self):
        folder = self.get_temp_dir()
        with open(os.path.join(folder, "results.json"), "w") as f:
            f.write('{"experiment": 7}')
        code, _, err = cli.call_main(["demo", "--output-dir", folder])
        self.assertEqual(code, 2, err)
        self.assertEqual(len(err.splitlines()), 1)
        self.assertIn("holds results.json, which the demo would overwrite",
                      err)
        with open(os.path.join(folder, "results.json")) as f:
            self.assertEqual(f.read(), '{"experiment": 7}')

    def test_output_dir_of_an_earlier_demo_is_reused(self):
        from keras_kd.cli import demo

        folder = self.get_temp_dir()
        for name in demo.FILES.values():
            open(os.path.join(folder, name), "w").close()
        with open(os.path.join(folder, "results.json"), "w") as f:
            json.dump({"command": "keras-kd demo"}, f)
        demo.check_output_dir(folder)  # no error

    def test_validation_runs_the_student_alone(self):
        # The teacher's outputs on the test images are cached once too, so
        # the validation of every epoch does not run the teacher.
        import types

        import numpy as np

        from keras_kd.cli import demo

        x = np.random.default_rng(0).random((40, 8, 8, 1)).astype("float32")
        y = np.arange(40) % 10
        test = (x[:12], y[:12])
        teacher = demo.build_teacher(x.shape[1:], 10)
        plan = dict(epochs=1, alpha=0.5, temperature=2.0, feature_weight=0.1)
        train, val, seconds = demo.cache_teacher(teacher, x, test, 10, plan)
        self.assertEqual(len(val), 12)
        self.assertEqual(sorted(val.features), ["embedding"])
        seen = {}

        def fit(distiller, x, y, **kwargs):
            seen.update(kwargs, y=y)
            return types.SimpleNamespace(history={"val_accuracy": [0.5]})

        args = types.SimpleNamespace(batch_size=8, verbose=0)
        with mock.patch("keras_kd.Distiller.fit", fit):
            demo.train_student("distilled", teacher, x, y, test, 10, plan,
                               1, args, caches=(train, val))
        x_val, targets = seen["validation_data"]
        self.assertIs(x_val, test[0])
        self.assertEqual(targets["teacher_logits"].shape, (12, 10))
        self.assertEqual(targets["labels"].tolist(), test[1].tolist())
        self.assertEqual(seen["y"]["teacher_logits"].shape, (40, 10))
