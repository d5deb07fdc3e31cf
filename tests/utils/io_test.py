"""Tests of keras_kd/utils/io.py: atomic writes and folders keras_kd owns."""

import json
import os
from unittest import mock

import keras
import numpy as np

from keras_kd.utils import io
from tests.test_case import TestCase


def small_model(units=3):
    keras.utils.set_random_seed(0)
    return keras.Sequential([keras.Input((4,)), keras.layers.Dense(units)])


class AtomicPathTest(TestCase):
    def setUp(self):
        super().setUp()
        self.dir = self.get_temp_dir()
        self.path = os.path.join(self.dir, "table.csv")

    def test_writes_and_leaves_no_temporary_file(self):
        with io.atomic_path(self.path) as temp:
            self.assertEqual(os.path.dirname(temp), self.dir)
            self.assertTrue(temp.endswith(".csv"))
            with open(temp, "w") as f:
                f.write("new")
        with open(self.path) as f:
            self.assertEqual(f.read(), "new")
        self.assertEqual(os.listdir(self.dir), ["table.csv"])

    def test_failure_keeps_the_previous_file(self):
        with open(self.path, "w") as f:
            f.write("old")
        with self.assertRaisesRegex(RuntimeError, "half way"):
            with io.atomic_write(self.path) as f:
                f.write("partial")
                raise RuntimeError("half way")
        with open(self.path) as f:
            self.assertEqual(f.read(), "old")
        self.assertEqual(os.listdir(self.dir), ["table.csv"])

    def test_new_file_gets_the_usual_mode(self):
        io.write_json(self.path, {"a": 1})
        reference = os.path.join(self.dir, "reference")
        open(reference, "w").close()
        self.assertEqual(os.stat(self.path).st_mode,
                         os.stat(reference).st_mode)
        with open(self.path) as f:
            self.assertEqual(json.load(f), {"a": 1})

    def test_a_folder_is_not_a_file(self):
        with self.assertRaisesRegex(
                ValueError, r"Argument `path` must name a file, but .* is a "
                "folder"):
            with io.atomic_path(self.dir):
                pass

    def test_make_parents(self):
        path = os.path.join(self.dir, "a", "b", "c.json")
        with io.atomic_write(path, make_parents=True) as f:
            f.write("[1]")
        with open(path) as f:
            self.assertEqual(f.read(), "[1]")

    def test_unwritable_folder_names_the_users_path(self):
        def refuse(path, suffix):
            temp = os.path.join(self.dir, ".table.csv.1234.tmp.csv")
            raise PermissionError(13, "Permission denied", temp)

        with mock.patch.object(io, "_new_temp_file", refuse):
            with self.assertRaises(PermissionError) as context:
                with io.atomic_path(self.path):
                    pass
        message = str(context.exception)
        self.assertIn(f"Received: path={self.path!r}", message)
        self.assertNotIn(".tmp", message)

    def test_error_about_the_temporary_file_names_the_users_path(self):
        with self.assertRaises(OSError) as context:
            with io.atomic_path(self.path, name="--table") as temp:
                raise OSError(28, "No space left on device", temp)
        message = str(context.exception)
        self.assertIn("Argument `--table` could not be written (No space "
                      "left on device)", message)
        self.assertNotIn(".tmp", message)
        self.assertEqual(os.listdir(self.dir), [])


class AtomicKerasSaveTest(TestCase):
    def setUp(self):
        super().setUp()
        self.dir = self.get_temp_dir()
        self.path = os.path.join(self.dir, "model.keras")

    def test_saves_a_loadable_model(self):
        model = small_model()
        io.atomic_keras_save(model, self.path)
        again = keras.saving.load_model(self.path)
        x = np.ones((2, 4), "float32")
        self.assertAllClose(again(x), model(x))
        self.assertEqual(os.listdir(self.dir), ["model.keras"])

    def test_failed_save_keeps_the_previous_file(self):
        io.atomic_keras_save(small_model(3), self.path)
        with open(self.path, "rb") as f:
            before = f.read()

        def broken_save(model, filepath, **kwargs):
            with open(filepath, "wb") as f:
                f.write(b"PK\x03\x04 half a zip")
            raise RuntimeError("the layer cannot be serialized")

        with mock.patch.object(keras.Model, "save", broken_save):
            with self.assertRaisesRegex(RuntimeError, "cannot be serialized"):
                io.atomic_keras_save(small_model(5), self.path)
        with open(self.path, "rb") as f:
            self.assertEqual(f.read(), before)
        self.assertEqual(os.listdir(self.dir), ["model.keras"])
        self.assertEqual(keras.saving.load_model(self.path).output_shape,
                         (None, 3))

    def test_calls_keras_model_save_not_an_override(self):
        calls = []

        class Custom(keras.Sequential):
            def save(self, filepath, **kwargs):
                calls.append(filepath)
                return io.atomic_keras_save(self, filepath, **kwargs)

        model = Custom([keras.Input((4,)), keras.layers.Dense(2)])
        model.save(self.path)
        self.assertEqual(calls, [self.path])
        self.assertTrue(os.path.exists(self.path))


class CheckKerasFileTest(TestCase):
    def test_truncated_file_is_named_damaged(self):
        path = os.path.join(self.get_temp_dir(), "t.keras")
        small_model().save(path)
        with open(path, "rb") as f:
            content = f.read()
        self.assertEqual(io.check_keras_file("teacher", path), path)
        with open(path, "wb") as f:
            f.write(content[:len(content) // 2])
        with self.assertRaisesRegex(
                ValueError, r"Argument `teacher` names a damaged file: it is "
                r"not a valid `.keras` zip archive \(\d+ bytes; a truncated"):
            io.check_keras_file("teacher", path)

    def test_zip_without_a_model(self):
        import zipfile

        path = os.path.join(self.get_temp_dir(), "t.keras")
        with zipfile.ZipFile(path, "w") as archive:
            archive.writestr("notes.txt", "hello")
        with self.assertRaisesRegex(ValueError, "holds no `config.json`"):
            io.check_keras_file("teacher", path)


class ReplaceableFolderTest(TestCase):
    MARKER = "keras_kd_thing.json"

    def setUp(self):
        super().setUp()
        self.dir = self.get_temp_dir()

    def own_folder(self, name="ours"):
        path = os.path.join(self.dir, name)
        os.makedirs(path)
        with open(os.path.join(path, self.MARKER), "w") as f:
            json.dump({io.FORMAT_KEY: "thing"}, f)
        return path

    def test_missing_empty_and_own_folders_are_accepted(self):
        for path in (os.path.join(self.dir, "new"), self.own_folder()):
            self.assertEqual(
                io.check_replaceable_folder("path", path, self.MARKER), path)
        empty = os.path.join(self.dir, "empty")
        os.makedirs(empty)
        io.check_replaceable_folder("path", empty, self.MARKER)
        self.assertTrue(io.is_keras_kd_folder(self.own_folder("b"),
                                              self.MARKER, "thing"))
        self.assertFalse(io.is_keras_kd_folder(empty, self.MARKER))

    def test_a_marker_that_is_not_ours_does_not_count(self):
        path = os.path.join(self.dir, "theirs")
        os.makedirs(path)
        with open(os.path.join(path, self.MARKER), "w") as f:
            f.write("[1, 2]")
        with self.assertRaisesRegex(ValueError, "keras_kd did not write"):
            io.check_replaceable_folder("path", path, self.MARKER)

    def test_replace_folder_swaps_and_cleans_up(self):
        path = self.own_folder()
        temp = io.new_temp_folder(path)
        with open(os.path.join(temp, self.MARKER), "w") as f:
            json.dump({io.FORMAT_KEY: "thing", "n": 2}, f)
        io.replace_folder(temp, path, self.MARKER)
        with open(os.path.join(path, self.MARKER)) as f:
            self.assertEqual(json.load(f)["n"], 2)
        self.assertEqual(os.listdir(self.dir), ["ours"])

    def test_a_symbolic_link_is_refused(self):
        link = os.path.join(self.dir, "link")
        os.symlink(self.own_folder(), link)
        with self.assertRaisesRegex(ValueError, "symbolic link"):
            io.check_replaceable_folder("path", link, self.MARKER)
