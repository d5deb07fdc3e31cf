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
- `Fingerprint`, `fingerprint`, `check_inputs`, `check_fingerprint`: the
  SHA-256 of every input byte that ties a cache to its data.
- `read_cache_metadata`, `open_array`, `damaged`: a cache folder's metadata
  and its memory-mapped arrays, checked, with errors naming the file.

`keras_kd.data.cache` dispatches to `keras_kd.data.topk`, and both (with
`keras_kd.data.views`) take what they share from here and from
`keras_kd.data._forward` (the teacher's compiled forward), so the cache
modules do not import each other.
"""

import hashlib
import json
import os
import shutil

import numpy as np

from keras_kd.data import _batches
from keras_kd.utils import io
from keras_kd.utils import validation

HASH = "sha256"
# The metadata file that marks a cache folder written by keras_kd, and the
# format of the dense cache.
CACHE_METADATA = "keras_kd_cache.json"
CACHE_FORMAT = "teacher_output_cache"
_REBUILD = ("Rebuild it with `keras_kd.data.cache_teacher_outputs(..., "
            "path=...)`.")
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


class Fingerprint:
    """A SHA-256 hash of every input byte, fed batch by batch.

    The digest depends on the bytes in order, the number of samples, their
    dtype and their shape, not on how they are batched: an array and a
    dataset of the same samples give the same fingerprint.
    """

    def __init__(self):
        self._hash = hashlib.new(HASH)
        self.count = 0
        self.dtype = None
        self.shape = None

    def update(self, batch):
        if isinstance(batch, dict):
            self._update_leaves(_batches.leaves(batch))
            return
        batch = np.ascontiguousarray(batch)
        if self.dtype is None:
            self.dtype, self.shape = batch.dtype.str, batch.shape[1:]
        elif (batch.dtype.str, batch.shape[1:]) != (self.dtype, self.shape):
            self.dtype, self.shape = "mixed", ()
        if batch.size:
            self._hash.update(memoryview(batch).cast("B"))
        self.count += len(batch)

    def _update_leaves(self, arrays):
        # A dict of inputs: one fingerprint per array (sorted keys), so the
        # digest does not depend on the batching either.
        if not hasattr(self, "_leaves"):
            self._leaves = [Fingerprint() for _ in arrays]
        for leaf, array in zip(self._leaves, arrays):
            leaf.update(array)
        self.count = self._leaves[0].count

    def hexdigest(self):
        if hasattr(self, "_leaves"):
            digest = hashlib.new(HASH)
            for leaf in self._leaves:
                digest.update(leaf.hexdigest().encode())
            return f"{HASH}:{digest.hexdigest()}"
        digest = self._hash.copy()
        digest.update(f"|{self.count}|{self.dtype}|{self.shape}".encode())
        return f"{HASH}:{digest.hexdigest()}"


def fingerprint(x, batch_size=4096):
    """The fingerprint of all of `x`: an array, a dataset or batches.

    Args:
        x: An array (a memory map works), or a `tf.data.Dataset` /
            iterable of batches of `x` or `(x, ...)`, read once.
        batch_size: Integer, rows hashed at a time for arrays.

    Returns:
        A string `"sha256:<hex>"`, as stored in `TeacherOutputCache`.
    """
    result = Fingerprint()
    batches, _, _ = _batches.iterate(x, batch_size, check=False)
    for batch in batches:
        result.update(batch)
    return result.hexdigest()


def check_inputs(cache, x):
    """Raises unless `x` has the cache's length and fingerprint."""
    if hasattr(x, "__len__") and hasattr(x, "shape"):
        n = len(x)
        if n != cache.num_samples:
            raise validation.cache_mismatch_error(
                "the number of samples", cache.num_samples, n
            )
    check_fingerprint(cache, x)


def check_fingerprint(cache, x, what="cache"):
    """Raises unless `x` has the cache's fingerprint (if it has one)."""
    if cache.fingerprint is not None:
        received = fingerprint(x)
        if received != cache.fingerprint:
            raise validation.cache_mismatch_error(
                f"the inputs are not the ones the {what} was computed "
                "on (the fingerprint of all their bytes differs: "
                "other values, another order, another dtype or "
                "another number of samples)",
                cache.fingerprint,
                received,
            )


def damaged(folder, file, what):
    """The error of a damaged file `file` of the cache folder `folder`."""
    return ValueError(
        f"The teacher-output cache file {os.path.join(folder, file)!r} is "
        f"damaged: {what}. {_REBUILD}"
    )


def read_cache_metadata(path, format_name=CACHE_FORMAT,
                        keys=("num_samples", "num_classes", "files")):
    """Reads a cache folder's metadata; errors say to rebuild the cache."""
    def missing():
        old = os.path.isfile(os.path.join(path, "meta.json"))
        return FileNotFoundError(
            f"No teacher-output cache at {path!r}: {CACHE_METADATA} is missing"
            + (" (the folder holds a cache written by an older keras_kd, "
               "without checksums)" if old else "")
            + f". {_REBUILD}"
        )

    return read_metadata(path, CACHE_METADATA, format_name, keys, damaged,
                         missing)


def open_array(folder, file, info, verify):
    """Memory-maps one stored array after checking its header and size."""
    full = os.path.join(folder, file)
    if not os.path.isfile(full):
        raise damaged(folder, file, "the file is missing")
    try:
        with open(full, "rb") as f:
            version = np.lib.format.read_magic(f)
            shape, _, dtype = read_header(f, version)
            offset = f.tell()
    except Exception as error:  # A damaged header fails in many ways.
        raise damaged(folder, file, f"its .npy header cannot be read "
                      f"({type(error).__name__}: {error})") from None
    expected_shape = tuple(info.get("shape", shape))
    if tuple(shape) != expected_shape or dtype.str != info.get(
            "dtype", dtype.str):
        raise damaged(folder, file, f"it holds an array of shape "
                      f"{tuple(shape)} and dtype {dtype.str}, the metadata "
                      f"says {expected_shape} and {info.get('dtype')}")
    needed = offset + int(np.prod(shape, dtype="int64")) * dtype.itemsize
    size = os.path.getsize(full)
    if size < needed:
        raise ValueError(
            f"The teacher-output cache file {full!r} is truncated: it has "
            f"{size} bytes, its header announces {needed}. The cache was "
            f"not completely copied or was cut short. {_REBUILD}"
        )
    array = np.load(full, mmap_mode="r")
    if verify and info.get("checksum") and \
            checksum(array) != info["checksum"]:
        raise ValueError(
            f"The teacher-output cache file {full!r} was modified after it "
            "was written: its checksum differs from the one recorded in "
            f"{CACHE_METADATA}. Received: {checksum(array)}, expected "
            f"{info['checksum']}. {_REBUILD}"
        )
    return array


def read_header(f, version):
    if version == (1, 0):
        return np.lib.format.read_array_header_1_0(f)
    return np.lib.format.read_array_header_2_0(f)
