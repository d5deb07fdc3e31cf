"""What the teacher caches share: checksummed `.npy` folders, written whole.

The dense cache (`keras_kd.data.cache`), the top-k cache
(`keras_kd.data.topk`) and the view cache (`keras_kd.data.views`) each
store a few arrays and one JSON metadata file in a folder. This module holds
the parts that do not depend on what the arrays mean:

- `checksum`, `save_array`: a SHA-256 of an array's bytes, and an array
  written in chunks to a new `.npy` file with its record (shape, dtype,
  checksum).
- `write_metadata`, `read_metadata`: the metadata file, marked with
  `keras_kd_format` and a version.
- `save_folder`: a cache's arrays and metadata written to a temporary folder
  and renamed onto the target, which is replaced only if it is empty or a
  folder keras_kd wrote.
- `Writer`: output batches kept in memory, or streamed to memory-mapped
  `.npy` files in a temporary folder with running checksums, renamed into
  place once complete.
- `CacheBase`: `__len__` and `__repr__` of the three cache classes.
"""

import hashlib
import json
import os
import shutil

import numpy as np

from keras_kd.data import _batches
from keras_kd.utils import io

HASH = "sha256"
# Rows read or written at a time.
CHUNK = 4096


def checksum(array):
    """`"sha256:<hex>"` of the bytes of `array`, read `CHUNK` rows at a time."""
    digest = hashlib.new(HASH)
    for start in range(0, array.shape[0], CHUNK):
        block = np.ascontiguousarray(array[start:start + CHUNK])
        if block.size:
            digest.update(memoryview(block).cast("B"))
    return f"{HASH}:{digest.hexdigest()}"


def record(array):
    """The metadata entry of a stored array: shape, dtype and checksum."""
    return {"shape": list(array.shape), "dtype": array.dtype.str,
            "checksum": checksum(array)}


def save_array(file, array):
    """Writes `array` to a new `.npy` file in chunks; returns its record."""
    out = np.lib.format.open_memmap(file, mode="w+", dtype=array.dtype,
                                    shape=array.shape)
    for start in range(0, array.shape[0], CHUNK):
        out[start:start + CHUNK] = array[start:start + CHUNK]
    out.flush()
    result = record(out)
    del out
    return result


def write_metadata(folder, marker, format_name, version, fields, files):
    """Writes the metadata file `marker` of a cache folder.

    Args:
        folder: The (temporary) cache folder.
        marker: The metadata file name, which marks the folder as keras_kd's.
        format_name: String, stored under `keras_kd_format`.
        version: Integer, stored under `"version"`.
        fields: Dict of the other entries, in the order they are written.
        files: Dict `{file: record}` of the stored arrays, written last.
    """
    meta = {io.FORMAT_KEY: format_name, "version": version, **fields,
            "files": files}
    io.write_json(os.path.join(folder, marker), meta, indent=1)


def read_metadata(path, marker, format_name, keys, damaged, missing):
    """Reads and checks the metadata file `marker` of the folder `path`.

    Args:
        path: The cache folder.
        marker: The metadata file name.
        format_name: The `keras_kd_format` it must hold.
        keys: The keys it must hold.
        damaged: `damaged(folder, file, what)`, the error of a damaged file.
        missing: `missing()`, the error of a folder without `marker`.

    Returns:
        The metadata, a dict.
    """
    file = os.path.join(path, marker)
    if not os.path.isfile(file):
        raise missing()
    try:
        with open(file, encoding="utf-8") as f:
            meta = json.load(f)
    except (ValueError, UnicodeDecodeError) as error:
        raise damaged(path, marker, f"it is not valid JSON ({error})") \
            from None
    if not isinstance(meta, dict) or meta.get(io.FORMAT_KEY) != format_name:
        raise damaged(path, marker, f"it does not describe a {format_name}")
    for key in keys:
        if key not in meta:
            raise damaged(path, marker, f"the key {key!r} is missing")
    return meta


def save_folder(cache, path, arrays, write, load, marker, what):
    """Writes `arrays` and their metadata to the folder `path`, atomically.

    An existing `path` is replaced only if it is empty or holds `marker`
    (checked before anything is written); saving a cache onto its own folder
    returns it unchanged.

    Args:
        cache: The cache being saved (its `path` is compared with `path`).
        path: The target folder.
        arrays: Dict `{file: array}`, written in that order.
        write: `write(folder, records)`, writes the metadata file.
        load: `load(path)`, opens the folder once written.
        marker: The metadata file name.
        what: The folder's name in errors (`"cache folder"`).

    Returns:
        `load(path)`, or `cache` when `path` is its own folder.
    """
    io.check_replaceable_folder("path", path, marker, what)
    if cache.path is not None and os.path.exists(path) and \
            os.path.samefile(cache.path, path):
        return cache
    temp = io.new_temp_folder(path)
    try:
        records = {file: save_array(os.path.join(temp, file), value)
                   for file, value in arrays.items()}
        write(temp, records)
        io.replace_folder(temp, path, marker, "path", what)
    finally:
        if os.path.exists(temp):
            shutil.rmtree(temp, ignore_errors=True)
    return load(path)


class Writer:
    """Keeps output batches in memory or streams them to `.npy` files.

    With a `path` and a known `total`, output `i` of every batch is written
    to a memory-mapped `files[i]` of `total` rows in a temporary folder
    beside `path`, and hashed as written; `finish` writes the metadata there
    and renames the folder onto `path`. Otherwise the batches stay in memory
    and `finish` returns them concatenated. Call `cleanup` in a `finally`:
    it removes an unfinished temporary folder.

    Args:
        path: The target folder, or `None` to keep the outputs in memory.
        files: The file name of each output.
        marker: The metadata file name, which marks the folder as keras_kd's.
        what: The folder's name in errors (`"cache folder"`).
    """

    def __init__(self, path, files, marker, what):
        self.path = path
        self.files = list(files)
        self.marker = marker
        self.what = what
        self.parts = []
        self.tmp = None
        self.arrays = None
        self.hashes = None
        self.offset = 0
        self.shape = None

    def append(self, outputs, total):
        """Adds a batch: one array per file, with the same number of rows."""
        _batches.check_same_shape(self.shape, outputs[0], "outputs")
        self.shape = outputs[0].shape
        if self.path is None or total is None:
            self.parts.append(outputs)
            return
        if self.arrays is None:
            self.tmp = io.new_temp_folder(self.path)
            self.arrays = [
                np.lib.format.open_memmap(
                    os.path.join(self.tmp, file), mode="w+",
                    dtype=value.dtype, shape=(total,) + value.shape[1:])
                for file, value in zip(self.files, outputs)
            ]
            self.hashes = [hashlib.new(HASH) for _ in outputs]
        n = len(outputs[0])
        if self.offset + n > total:
            raise ValueError(
                "The dataset yielded more samples on the second pass than on "
                f"the first ({self.offset + n} > {total}), so it is not in a "
                "fixed order. Cache a dataset that yields the same batches on "
                "every pass."
            )
        for array, digest, value in zip(self.arrays, self.hashes, outputs):
            array[self.offset:self.offset + n] = value
            # The bytes as stored (in the file's dtype), as `checksum` reads.
            block = np.ascontiguousarray(array[self.offset:self.offset + n])
            if block.size:
                digest.update(memoryview(block).cast("B"))
        self.offset += n

    def finish(self, write):
        """Completes the cache.

        Args:
            write: `write(folder, num_samples, records)`, writes the metadata
                file of a streamed folder (`records`: `{file: record}`).

        Returns:
            The outputs concatenated, a list of arrays, when they were kept
            in memory; `None` once a streamed folder is in place at `path`.
        """
        if self.arrays is None:
            if not self.parts:
                raise ValueError(
                    "Argument `x` holds no samples to cache. Received: x "
                    "with 0 samples"
                )
            return [np.concatenate(part) for part in zip(*self.parts)]
        if self.offset != self.arrays[0].shape[0]:
            raise ValueError(
                "The dataset yielded fewer samples on the second pass than "
                f"on the first ({self.offset} < {self.arrays[0].shape[0]}), "
                "so it is not in a fixed order. Cache a dataset that yields "
                "the same batches on every pass."
            )
        records = {}
        for file, array, digest in zip(self.files, self.arrays, self.hashes):
            array.flush()
            records[file] = {
                "shape": list(array.shape), "dtype": array.dtype.str,
                "checksum": f"{HASH}:{digest.hexdigest()}"}
        self.arrays = None
        write(self.tmp, self.offset, records)
        io.replace_folder(self.tmp, self.path, self.marker, "path", self.what)
        self.tmp = None
        return None

    def cleanup(self):
        """Removes the temporary folder of an unfinished cache."""
        if self.tmp is not None:
            self.arrays = None
            shutil.rmtree(self.tmp, ignore_errors=True)


class CacheBase:
    """`__len__` and `__repr__` of a teacher cache with `num_samples`.

    Subclasses set `_NAME` and `_repr_fields()`, the `name=value` texts
    shown before the cache's `path`.
    """

    _NAME = None

    def __len__(self):
        return self.num_samples

    def _repr_fields(self):
        raise NotImplementedError

    def __repr__(self):
        where = f", path={self.path!r}" if self.path else ""
        return f"{self._NAME}({', '.join(self._repr_fields())}{where})"
