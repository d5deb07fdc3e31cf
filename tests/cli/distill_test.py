"""Tests of keras_kd/cli/distill.py (`keras-kd distill`)."""

import os
from unittest import mock

import keras
import numpy as np
import pytest

from keras_kd.cli import _common
from tests import cli


class DistillCommandTest(cli.CommandTestCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        os.makedirs(os.path.join(cls.folder, "empty_tfds"))
        # The bad-input runs start together: each one mostly waits for
        # TensorFlow to load.
        teacher, student = cls.models["teacher"], cls.models["student"]
        commands = {
            "missing_file": ["distill", "missing.keras", student,
                             "--data", cls.npz],
            "class_mismatch": ["distill", teacher, cls.models["five"],
                               "--data", cls.npz],
            "unknown_layer": ["distill", teacher, student, "--data",
                              cls.npz, "--feature", "embeding:hidden"],
            "dataset_offline": ["distill", teacher, student, "--data",
                                "mnist", "--data-dir", "empty_tfds"],
        }
        processes = {name: cli.start_cli(args, cls.folder)
                     for name, args in commands.items()}
        cls.errors = {name: cli.finish(p) for name, p in processes.items()}

    @pytest.mark.slow
    def test_distills_and_exports(self):
        out = self.get_temp_dir()
        unlabeled = os.path.join(out, "unlabeled.npz")
        np.savez(unlabeled, x=np.random.default_rng(1).random(
            (20, 8, 8, 1)).astype("float32"))
        result = cli.run_cli([
            "distill", self.models["teacher"], self.models["student"],
            "--data", self.npz, "--epochs", "2", "--temperature", "2",
            "--alpha", "0.3", "--feature", "embedding:hidden",
            "--unlabeled", unlabeled, "--output", "s/student.keras",
            "--tflite", "s/student.tflite", "--quantize", "float16",
        ], cwd=out)
        self.assertEqual(result.returncode, 0, str(result))
        self.assertNotIn("Traceback", result.stderr)
        student = keras.saving.load_model(
            os.path.join(out, "s", "student.keras"), compile=False)
        self.assertEqual(student.name, "student")  # no heads, no teacher
        self.assertTrue(os.path.exists(os.path.join(out, "s",
                                                    "student.tflite")))
        self.assertIn("84 training samples", result.stdout)  # 64 + 20
        self.assertIn("Epoch 2/2", result.stdout)  # Keras progress output
        self.assertIn("LiteRT parity report", result.stdout)
        for row in ("teacher", "student (distilled)",
                    "student (.tflite, float16)"):
            self.assertIn(row, result.stdout)

    def test_missing_file_is_a_usage_error(self):
        cli.assert_one_line_error(
            self.errors["missing_file"], 2,
            r"`TEACHER.keras` names a file that does not exist.*"
            r"missing\.keras", "distill")

    def test_class_mismatch_is_a_usage_error(self):
        cli.assert_one_line_error(
            self.errors["class_mismatch"], 2,
            r"the teacher outputs 10 logits and the student 5", "distill")

    def test_unknown_layer_is_a_usage_error(self):
        line = cli.assert_one_line_error(
            self.errors["unknown_layer"], 2,
            r"Unknown teacher layer 'embeding'", "distill")
        self.assertIn("Close matches: ['embedding']", line)

    def test_dataset_not_on_this_machine_is_a_usage_error(self):
        cli.assert_one_line_error(
            self.errors["dataset_offline"], 2,
            r"'mnist' is not prepared in data_dir=.*never downloads",
            "distill")

    def test_bad_feature_spec(self):
        code, _, err = cli.call_main([
            "distill", self.models["teacher"], self.models["student"],
            "--data", "digits", "--feature", "embedding"])
        self.assertEqual(code, 2)
        self.assertRegex(err.strip(), r"^keras-kd distill: error: argument "
                         r"--feature: .*TEACHER_LAYER:STUDENT_LAYER")
        self.assertEqual(len(err.strip().splitlines()), 1)

    def test_tfds_name_without_data_dir(self):
        with mock.patch.object(_common, "default_data_dir",
                               return_value=None):
            code, _, err = cli.call_main([
                "distill", self.models["teacher"], self.models["student"],
                "--data", "mnist"])
        self.assertEqual(code, 2)
        self.assertIn("names the TensorFlow Datasets dataset 'mnist'", err)
        self.assertIn("Pass `--data-dir DIR`", err)

    def test_data_of_another_shape(self):
        path = os.path.join(self.get_temp_dir(), "big.npz")
        rng = np.random.default_rng(0)
        np.savez(path, x_train=rng.random((8, 10, 10)), y_train=np.zeros(8),
                 x_test=rng.random((4, 10, 10)), y_test=np.zeros(4))
        code, _, err = cli.call_main([
            "distill", self.models["teacher"], self.models["student"],
            "--data", path])
        self.assertEqual(code, 2)
        self.assertIn("The student takes inputs of shape (None, 8, 8, 1), "
                      "but the data of `--data` has samples of shape "
                      "(10, 10, 1)", err)

    def test_image_folder_with_validation_split(self):
        from PIL import Image

        folder = self.get_temp_dir()
        rng = np.random.default_rng(0)
        for label in range(10):
            os.makedirs(os.path.join(folder, "images", str(label)))
            for i in range(2):
                Image.fromarray(rng.integers(0, 256, (8, 8), np.uint8)).save(
                    os.path.join(folder, "images", str(label), f"{i}.png"))
        code, out, err = cli.call_main([
            "distill", self.models["teacher"], self.models["student"],
            "--data", os.path.join(folder, "images"), "--validation-split",
            "0.25", "--epochs", "1", "--verbose", "0", "--output",
            os.path.join(folder, "student.keras")])
        self.assertEqual(code, 0, err)
        self.assertIn("15 training samples", out)  # 20 images, 5 held out
        self.assertIn("accuracy (validation)", out)

    def test_bad_output_suffix(self):
        code, _, err = cli.call_main([
            "distill", self.models["teacher"], self.models["student"],
            "--data", self.npz, "--output", "student.h5"])
        self.assertEqual(code, 2)
        self.assertIn("Argument `--output` must be a path ending in "
                      "`.keras`", err)

    def test_failure_during_the_run_exits_1(self):
        # The output folder cannot be created: a file is in the way.
        folder = self.get_temp_dir()
        blocker = os.path.join(folder, "file")
        open(blocker, "w").close()
        code, out, err = cli.call_main([
            "distill", self.models["teacher"], self.models["student"],
            "--data", self.npz, "--epochs", "1", "--verbose", "0",
            "--output", os.path.join(blocker, "student.keras")])
        self.assertEqual(code, 1, out + err)
        lines = err.strip().splitlines()
        self.assertEqual(len(lines), 1, err)
        self.assertRegex(lines[0], r"^keras-kd distill: error: .*--debug")
