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
            r"outputs 10 logits and the student 5", "distill")

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

    def test_method_dkd_and_unknown_feature_loss(self):
        out = self.get_temp_dir()
        code, stdout, err = cli.call_main([
            "distill", self.models["teacher"], self.models["student"],
            "--data", self.npz, "--epochs", "1", "--method", "dkd",
            "--verbose", "0", "--output", os.path.join(out, "s.keras")])
        self.assertEqual(code, 0, err)
        self.assertTrue(os.path.exists(os.path.join(out, "s.keras")))
        code, _, err = cli.call_main([
            "distill", self.models["teacher"], self.models["student"],
            "--data", self.npz, "--feature", "embedding:hidden",
            "--feature-loss", "cosin", "--output",
            os.path.join(out, "t.keras")])
        self.assertEqual(code, 2)
        self.assertIn("Close matches: ['cosine']", err)
        self.assertEqual(len(err.strip().splitlines()), 1)

    def test_token_divergences_are_methods_balanced_by_alpha(self):
        from keras_kd.cli import distill

        for method, cls in (("reverse_kl", "ReverseKL"),
                            ("jsd", "GeneralizedJSD"),
                            ("skew_kl", "SkewKL"),
                            ("skew_reverse_kl", "SkewReverseKL")):
            args = mock.Mock(method=method, standardize=False, alpha=0.3)
            kwargs = distill.method_arguments(args)
            self.assertEqual(kwargs["alpha"], 0.3)
            self.assertEqual(type(kwargs["terms"][1]).__name__, cls)

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
        folder = self.get_temp_dir()

        def full_disk(model, path):
            raise OSError(28, "No space left on device")

        with mock.patch.object(_common, "save_model", full_disk):
            code, out, err = cli.call_main([
                "distill", self.models["teacher"], self.models["student"],
                "--data", self.npz, "--epochs", "1", "--verbose", "0",
                "--output", os.path.join(folder, "student.keras")])
        self.assertEqual(code, 1, out + err)
        lines = err.strip().splitlines()
        self.assertEqual(len(lines), 1, err)
        self.assertRegex(lines[0], r"^keras-kd distill: error: .*No space "
                         r"left on device.*--debug")


class DistillValidationTest(cli.CommandTestCase):
    def test_validation_uses_cached_teacher_outputs(self):
        seen = {}

        def fit(distiller, x, y, **kwargs):
            seen.update(kwargs, y=y)

        with mock.patch("keras_kd.Distiller.fit", fit):
            code, _, err = cli.call_main([
                "distill", self.models["teacher"], self.models["student"],
                "--data", self.npz, "--verbose", "0", "--output",
                os.path.join(self.get_temp_dir(), "s.keras")])
        self.assertEqual(code, 0, err)
        x_val, targets = seen["validation_data"]
        self.assertEqual(len(x_val), 32)  # the test split of tiny.npz
        self.assertEqual(targets["teacher_logits"].shape, (32, 10))
        self.assertEqual(seen["y"]["teacher_logits"].shape, (64, 10))


class DistillRefusesEarlyTest(cli.CommandTestCase):
    """Mistakes found before the first training step: exit 2, one line,
    and the inputs untouched."""

    def distill(self, *extra, data=None, teacher=None):
        boom = AssertionError("training started")
        with mock.patch("keras_kd.Distiller.fit", side_effect=boom):
            return cli.call_main([
                "distill", teacher or self.models["teacher"],
                self.models["student"], "--data", data or self.npz,
                "--epochs", "1", "--verbose", "0", *extra])

    def assertRefused(self, result, pattern):
        code, out, err = result
        self.assertEqual(code, 2, out + err)
        self.assertEqual(len(err.strip().splitlines()), 1, err)
        self.assertRegex(err, r"^keras-kd distill: error: .*" + pattern)
        self.assertNotIn("Distilling", out)

    def copy_of_teacher(self):
        path = os.path.join(self.get_temp_dir(), "t.keras")
        with open(self.models["teacher"], "rb") as f:
            content = f.read()
        with open(path, "wb") as f:
            f.write(content)
        return path, content

    def test_output_over_the_teacher_is_refused(self):
        teacher, content = self.copy_of_teacher()
        folder = os.path.dirname(teacher)
        for output in (teacher, os.path.join(folder, "sub", "..", "t.keras")):
            self.assertRefused(
                self.distill("--output", output, teacher=teacher),
                r"Argument `--output` names the same file as "
                r"`TEACHER.keras`, one of this command's inputs, which "
                "keras-kd never overwrites")
        link = os.path.join(folder, "link.keras")
        os.symlink(teacher, link)
        self.assertRefused(self.distill("--output", link, teacher=teacher),
                           "names the same file as `TEACHER.keras`")
        with open(teacher, "rb") as f:
            self.assertEqual(f.read(), content)

    def test_output_over_the_student_is_refused(self):
        self.assertRefused(
            self.distill("--output", self.models["student"]),
            "`--output` names the same file as `STUDENT.keras`")

    def test_unwritable_output_is_refused_before_training(self):
        folder = self.get_temp_dir()
        blocker = os.path.join(folder, "file")
        open(blocker, "w").close()
        self.assertRefused(
            self.distill("--output", os.path.join(blocker, "s.keras")),
            r"Argument `--output` cannot be written: '.*file' is a file")
        self.assertRefused(
            self.distill("--output", folder + os.sep + "x.keras",
                         "--tflite", folder),
            r"Argument `--tflite` must be a path ending in `.tflite`")
        os.makedirs(os.path.join(folder, "dir.keras"))
        self.assertRefused(
            self.distill("--output", os.path.join(folder, "dir.keras")),
            r"Argument `--output` must name a file, but .* is a folder")

    def test_read_only_folder_is_refused(self):
        folder = self.get_temp_dir()
        real_access = os.access

        def access(path, mode):
            return False if path == folder else real_access(path, mode)

        with mock.patch("os.access", access):
            self.assertRefused(
                self.distill("--output", os.path.join(folder, "s.keras")),
                r"Argument `--output` cannot be written: the folder .* is "
                "not writable")

    def make_npz(self, **arrays):
        rng = np.random.default_rng(0)
        base = dict(
            x_train=rng.integers(0, 256, (64, 8, 8), dtype=np.uint8),
            y_train=rng.integers(0, 10, (64,)),
            x_test=rng.integers(0, 256, (32, 8, 8), dtype=np.uint8),
            y_test=rng.integers(0, 10, (32,)))
        base.update(arrays)
        path = os.path.join(self.get_temp_dir(), "data.npz")
        np.savez(path, **base)
        return path

    def test_length_mismatch(self):
        path = self.make_npz(y_train=np.zeros(60, "int64"))
        self.assertRefused(
            self.distill(data=path),
            r"The file '.*data.npz' holds 64 train inputs but 60 labels")

    def test_empty_npz(self):
        path = self.make_npz(x_train=np.zeros((0, 8, 8), "uint8"),
                             y_train=np.zeros(0, "int64"))
        self.assertRefused(self.distill(data=path),
                           "holds no train samples")

    def test_float_labels(self):
        y = np.zeros(64, "float32")
        y[5] = 3.7
        self.assertRefused(
            self.distill(data=self.make_npz(y_train=y)),
            r"values that are not whole numbers.*y_train\[5\]="
            r"(np.float32\()?3.7")

    def test_soft_labels_are_not_one_hot(self):
        y = np.full((64, 10), 0.1, "float32")
        self.assertRefused(
            self.distill(data=self.make_npz(y_train=y)),
            r"holds `y_train` of shape \(64, 10\), which are neither class "
            "ids nor one-hot rows")

    def test_nan_inputs(self):
        x = np.random.default_rng(0).random((64, 8, 8)).astype("float32")
        x[7, 1, 1] = np.nan
        self.assertRefused(
            self.distill(data=self.make_npz(x_train=x)),
            r"holds NaN or Inf in `x_train` \(1 sample\(s\), the first "
            r"at index 7\)")

    def test_damaged_teacher_file(self):
        teacher, content = self.copy_of_teacher()
        with open(teacher, "wb") as f:
            f.write(content[: len(content) // 2])
        self.assertRefused(
            self.distill(teacher=teacher),
            r"Argument `TEACHER.keras` names a damaged file: it is not a "
            r"valid `.keras` zip archive \(\d+ bytes; a truncated")

    def test_one_hot_labels_are_read_as_class_ids(self):
        rng = np.random.default_rng(0)
        y = rng.integers(0, 10, (64,))
        path = self.make_npz(y_train=np.eye(10, dtype="float32")[y],
                             y_test=np.eye(10, dtype="uint8")[y[:32]])
        from keras_kd.data import load_dataset

        (_, y_train), (_, y_test) = load_dataset(path)
        self.assertEqual(y_train.tolist(), y.tolist())
        self.assertEqual(y_test.tolist(), y[:32].tolist())
        code, out, err = cli.call_main([
            "distill", self.models["teacher"], self.models["student"],
            "--data", path, "--epochs", "1", "--verbose", "0", "--output",
            os.path.join(self.get_temp_dir(), "s.keras")])
        self.assertEqual(code, 0, err)
        self.assertIn("64 training samples", out)
