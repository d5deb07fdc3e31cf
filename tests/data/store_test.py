"""Tests of keras_kd/data/_store.py, the storage the teacher caches share."""

import hashlib
import json
import os

import numpy as np

from keras_kd.data import _store
from keras_kd.data import cache as cache_lib
from keras_kd.data import topk
from keras_kd.data import views
from keras_kd.utils import io
from tests.test_case import TestCase

MARKER = "marker.json"


def _sha256(array):
    digest = hashlib.sha256(np.ascontiguousarray(array).tobytes())
    return f"sha256:{digest.hexdigest()}"


def _damaged(folder, file, what):
    return ValueError(f"damaged {file}: {what}")


def _missing():
    return FileNotFoundError("no marker")


class _Cache(_store.CacheBase):
    _NAME = "Toy"

    def __init__(self, num_samples, path=None):
        self.num_samples = num_samples
        self.path = path

    def _repr_fields(self):
        return [f"num_samples={self.num_samples}", "kind='toy'"]


class ChecksumTest(TestCase):
    def test_checksum_is_the_sha256_of_all_bytes(self):
        # More rows than one chunk, so the chunked digest is exercised.
        array = np.random.default_rng(0).normal(
            size=(_store.CHUNK * 2 + 7, 3)).astype("float32")
        self.assertEqual(_store.checksum(array), _sha256(array))
        self.assertEqual(_store.checksum(array[:0]), _sha256(array[:0]))

    def test_save_array_writes_the_array_and_its_record(self):
        array = np.arange(5000 * 2, dtype="int16").reshape(5000, 2)
        file = os.path.join(self.get_temp_dir(), "a.npy")
        record = _store.save_array(file, array)
        np.testing.assert_array_equal(np.load(file), array)
        self.assertEqual(record, {"shape": [5000, 2], "dtype": "<i2",
                                  "checksum": _sha256(array)})


class MetadataTest(TestCase):
    def test_write_then_read(self):
        folder = self.get_temp_dir()
        _store.write_metadata(folder, MARKER, "toy_format", 3,
                              {"num_samples": 4, "b": 1, "a": 2},
                              {"x.npy": {"shape": [4]}})
        with open(os.path.join(folder, MARKER), encoding="utf-8") as f:
            text = f.read()
        # The format and version first, the files last, the rest in order.
        self.assertEqual(list(json.loads(text)), [
            io.FORMAT_KEY, "version", "num_samples", "b", "a", "files"])
        meta = _store.read_metadata(folder, MARKER, "toy_format",
                                    ("num_samples", "files"), _damaged,
                                    _missing)
        self.assertEqual(meta["version"], 3)
        self.assertEqual(meta["files"], {"x.npy": {"shape": [4]}})

    def test_read_errors(self):
        folder = self.get_temp_dir()
        with self.assertRaisesRegex(FileNotFoundError, "no marker"):
            _store.read_metadata(folder, MARKER, "f", (), _damaged, _missing)
        with open(os.path.join(folder, MARKER), "w") as f:
            f.write("{")
        with self.assertRaisesRegex(ValueError, "not valid JSON"):
            _store.read_metadata(folder, MARKER, "f", (), _damaged, _missing)
        _store.write_metadata(folder, MARKER, "other", 1, {}, {})
        with self.assertRaisesRegex(ValueError, "does not describe a f$"):
            _store.read_metadata(folder, MARKER, "f", (), _damaged, _missing)
        with self.assertRaisesRegex(ValueError, "the key 'top_k' is missing"):
            _store.read_metadata(folder, MARKER, "other", ("top_k",),
                                 _damaged, _missing)


class WriterTest(TestCase):
    def _write(self, writer, batches, total):
        try:
            for batch in batches:
                writer.append(batch, total)
            seen = {}

            def write(folder, num_samples, records):
                seen.update(folder=folder, num_samples=num_samples,
                            records=records)
                _store.write_metadata(folder, MARKER, "toy", 1, {}, records)

            return writer.finish(write), seen
        finally:
            writer.cleanup()

    def test_streams_files_with_their_checksums(self):
        rng = np.random.default_rng(1)
        a = rng.normal(size=(10, 3)).astype("float32")
        b = rng.integers(0, 9, size=(10,)).astype("uint16")
        path = os.path.join(self.get_temp_dir(), "out")
        writer = _store.Writer(path, ["a.npy", "b.npy"], MARKER,
                               "cache folder")
        result, seen = self._write(
            writer, [[a[:4], b[:4]], [a[4:8], b[4:8]], [a[8:], b[8:]]], 10)
        self.assertIsNone(result)
        self.assertEqual(seen["num_samples"], 10)
        np.testing.assert_array_equal(np.load(os.path.join(path, "a.npy")), a)
        np.testing.assert_array_equal(np.load(os.path.join(path, "b.npy")), b)
        self.assertEqual(seen["records"], {
            "a.npy": {"shape": [10, 3], "dtype": "<f4",
                      "checksum": _sha256(a)},
            "b.npy": {"shape": [10], "dtype": "<u2", "checksum": _sha256(b)},
        })
        # The running checksums equal those read back from the files.
        for file, record in seen["records"].items():
            stored = np.load(os.path.join(path, file), mmap_mode="r")
            self.assertEqual(record, _store.record(stored))
        # Written in a temporary folder, then renamed; none is left over.
        self.assertNotEqual(seen["folder"], path)
        self.assertFalse(os.path.exists(seen["folder"]))
        self.assertEqual(sorted(os.listdir(os.path.dirname(path))), ["out"])

    def test_checksum_is_of_the_stored_dtype(self):
        # A later batch in another dtype is stored in the file's dtype.
        first = np.array([[0.5], [1.5]], "float32")
        second = np.array([[2.25]], "float64")
        path = os.path.join(self.get_temp_dir(), "out")
        writer = _store.Writer(path, ["a.npy"], MARKER, "cache folder")
        _, seen = self._write(writer, [[first], [second]], 3)
        expected = np.concatenate([first, second]).astype("float32")
        self.assertEqual(seen["records"]["a.npy"]["checksum"],
                         _sha256(expected))

    def test_in_memory(self):
        a = np.arange(6).reshape(3, 2)
        writer = _store.Writer(None, ["a.npy", "b.npy"], MARKER, "x")
        result, seen = self._write(writer, [[a[:2], a[:2, 0]],
                                            [a[2:], a[2:, 0]]], None)
        self.assertEqual(seen, {})
        np.testing.assert_array_equal(result[0], a)
        np.testing.assert_array_equal(result[1], a[:, 0])

    def test_count_mismatches_leave_nothing(self):
        root = self.get_temp_dir()
        path = os.path.join(root, "out")
        a = np.zeros((4, 2), "float32")
        with self.assertRaisesRegex(ValueError, r"more samples .* \(4 > 3\)"):
            self._write(_store.Writer(path, ["a.npy"], MARKER, "c"), [[a]],
                        3)
        with self.assertRaisesRegex(ValueError, r"fewer samples .* \(4 < 5\)"):
            self._write(_store.Writer(path, ["a.npy"], MARKER, "c"), [[a]],
                        5)
        with self.assertRaisesRegex(ValueError, "holds no samples"):
            self._write(_store.Writer(path, ["a.npy"], MARKER, "c"), [], 5)
        self.assertEqual(os.listdir(root), [])

    def test_a_foreign_folder_is_not_replaced(self):
        path = self.get_temp_dir()
        with open(os.path.join(path, "mine.txt"), "w") as f:
            f.write("user data")
        writer = _store.Writer(path, ["a.npy"], MARKER, "cache folder")
        with self.assertRaisesRegex(ValueError, "cache folder"):
            self._write(writer, [[np.zeros((2,))]], 2)
        self.assertEqual(os.listdir(path), ["mine.txt"])
        self.assertEqual(
            [n for n in os.listdir(os.path.dirname(path))
             if n.startswith(f".{os.path.basename(path)}.")], [])


class SaveFolderTest(TestCase):
    def _save(self, cache, path, arrays):
        def write(folder, records):
            _store.write_metadata(folder, MARKER, "toy", 1,
                                  {"num_samples": 3}, records)

        def load(folder):
            return _store.read_metadata(folder, MARKER, "toy", (), _damaged,
                                        _missing)

        return _store.save_folder(cache, path, arrays, write, load, MARKER,
                                  "toy folder")

    def test_writes_and_replaces_its_own_folder(self):
        path = os.path.join(self.get_temp_dir(), "c")
        a = np.arange(3, dtype="float32")
        meta = self._save(_Cache(3), path, {"a.npy": a})
        self.assertEqual(meta["files"]["a.npy"]["checksum"], _sha256(a))
        np.testing.assert_array_equal(np.load(os.path.join(path, "a.npy")), a)
        meta = self._save(_Cache(3), path, {"b.npy": a * 2})
        self.assertEqual(sorted(os.listdir(path)), ["b.npy", MARKER])
        self.assertEqual(meta["files"]["b.npy"]["checksum"], _sha256(a * 2))

    def test_own_path_returns_the_cache(self):
        path = os.path.join(self.get_temp_dir(), "c")
        self._save(_Cache(3), path, {"a.npy": np.zeros(3)})
        cache = _Cache(3, path=path)
        self.assertIs(self._save(cache, path, {"a.npy": np.ones(3)}), cache)
        np.testing.assert_array_equal(np.load(os.path.join(path, "a.npy")),
                                      np.zeros(3))

    def test_refuses_a_foreign_folder_before_writing(self):
        path = self.get_temp_dir()
        with open(os.path.join(path, "mine.txt"), "w") as f:
            f.write("user data")
        with self.assertRaisesRegex(ValueError, "toy folder"):
            self._save(_Cache(3), path, {"a.npy": np.zeros(3)})
        self.assertEqual(os.listdir(path), ["mine.txt"])
        self.assertEqual(
            [n for n in os.listdir(os.path.dirname(path))
             if n.startswith(f".{os.path.basename(path)}.")], [])


class CacheBaseTest(TestCase):
    def test_len_and_repr(self):
        self.assertEqual(len(_Cache(7)), 7)
        self.assertEqual(repr(_Cache(7)), "Toy(num_samples=7, kind='toy')")
        self.assertEqual(repr(_Cache(2, path="/p")),
                         "Toy(num_samples=2, kind='toy', path='/p')")

    def test_the_three_caches_keep_their_repr(self):
        rng = np.random.default_rng(0)
        dense = cache_lib.TeacherOutputCache(
            np.zeros((4, 3), "float32"), {"b": np.zeros((4, 2)),
                                          "a": np.zeros((4, 1))})
        self.assertEqual(len(dense), 4)
        self.assertEqual(repr(dense), "TeacherOutputCache(num_samples=4, "
                         "num_classes=3, features=['a', 'b'])")
        top = topk.TopKTeacherCache(
            np.zeros((5, 6, 2), "float16"), np.zeros((5, 6, 2), "uint16"),
            np.zeros((5, 6), "float32"), 100, path="/c")
        self.assertEqual(repr(top), "TopKTeacherCache(num_samples=5, "
                         "shape=(6,), num_classes=100, top_k=2, path='/c')")
        view = views.TeacherViewCache(
            np.zeros((3, 2, 10), "float32"),
            rng.integers(0, 9, (3, 2, 3)).astype("int32"),
            views.RandomCropFlip(padding=2))
        self.assertEqual(len(view), 3)
        self.assertEqual(repr(view), "TeacherViewCache(num_samples=3, "
                         "num_views=2, num_classes=10, augmentation="
                         "RandomCropFlip(padding=2, mode='constant', "
                         "flip=True))")
