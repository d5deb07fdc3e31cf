"""Teacher-output caching: run the teacher once, reuse its outputs every epoch.

When the inputs are not randomly augmented, the teacher's logits (and the
features of every `FeatureMatch`) are the same each epoch. Computing them once
makes an epoch of distillation cost about what an epoch of student-only
training costs.

A cache knows its data: it records a SHA-256 fingerprint of every byte of
the inputs (hashed as they stream past while the cache fills, for arrays and
datasets alike) and a checksum of every array it stores. The fingerprint is
checked when the cache is paired with inputs (`targets(y, x=x)`,
`dataset(x, ...)`, `check(x)`), and the checksums when a cache folder is
loaded, so reordered, replaced or edited data is an error, not a silent
mismatch.
"""

import hashlib
import os

import keras
import numpy as np

from keras_kd.data import _batches
from keras_kd.data import _store
from keras_kd.utils import io
from keras_kd.utils import validation

# The metadata file that marks a cache folder written by keras_kd.
METADATA = "keras_kd_cache.json"
FORMAT = "teacher_output_cache"
VERSION = 2
_LOGITS = "teacher_logits.npy"
_HASH = _store.HASH
_REBUILD = ("Rebuild it with `keras_kd.data.cache_teacher_outputs(..., "
            "path=...)`.")


class Fingerprint:
    """A SHA-256 hash of every input byte, fed batch by batch.

    The digest depends on the bytes in order, the number of samples, their
    dtype and their shape, not on how they are batched: an array and a
    dataset of the same samples give the same fingerprint.
    """

    def __init__(self):
        self._hash = hashlib.new(_HASH)
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
            digest = hashlib.new(_HASH)
            for leaf in self._leaves:
                digest.update(leaf.hexdigest().encode())
            return f"{_HASH}:{digest.hexdigest()}"
        digest = self._hash.copy()
        digest.update(f"|{self.count}|{self.dtype}|{self.shape}".encode())
        return f"{_HASH}:{digest.hexdigest()}"


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


class TeacherOutputCache(_store.CacheBase):
    """The teacher's outputs on a fixed, ordered set of inputs.

    Build it with `keras_kd.data.cache_teacher_outputs`; load a cache written
    to disk with `TeacherOutputCache.load(path)`.

    The cache records a fingerprint of all of its inputs. It is checked
    whenever the cache is paired with inputs: `targets(y, x=x)`,
    `dataset(x, ...)` and `check(x)`. To re-check a cache built from a
    `tf.data.Dataset` (or any iterable of batches), call
    `cache.check(dataset)`: it reads the dataset once and raises if any
    byte, the order or the number of samples differs.

    Attributes:
        logits: Array `(num_samples, num_classes)` (a read-only memory map
            for a cache on disk).
        features: Dict `{teacher_layer: array}` for the matched layers.
        num_samples: Integer.
        num_classes: Integer.
        fingerprint: String, the SHA-256 hash of all the inputs the cache
            was computed on (see `keras_kd.data.cache.fingerprint`), or
            `None` when unknown.
        path: The cache folder, or `None` for a cache in memory.
    """

    _NAME = "TeacherOutputCache"

    def __init__(self, logits, features=None, fingerprint=None, path=None):
        self.logits = logits
        self.features = dict(features or {})
        self.fingerprint = fingerprint
        self.path = path
        self.num_samples = int(logits.shape[0])
        self.num_classes = int(logits.shape[-1])
        for name, value in self.features.items():
            if value.shape[0] != self.num_samples:
                raise validation.cache_mismatch_error(
                    f"the feature {name!r} has another length than the logits",
                    self.num_samples,
                    value.shape[0],
                )

    def _repr_fields(self):
        return [f"num_samples={self.num_samples}",
                f"num_classes={self.num_classes}",
                f"features={sorted(self.features)}"]

    def check(self, x=None, distiller=None):
        """Checks that this cache fits the inputs `x` and the `distiller`.

        Args:
            x: Optional inputs: an array, or a `tf.data.Dataset` / iterable
                of batches (read once). All of their bytes are hashed and
                compared with the cache's fingerprint.
            distiller: Optional Distiller, checked for classes, matched
                teacher layers and augmentation.

        Returns:
            The cache.

        Raises:
            ValueError: on another number of samples, other inputs (other
                values, another order or dtype), another number of classes,
                or a missing feature.
        """
        if x is not None:
            check_inputs(self, x)
        if distiller is not None:
            if distiller.num_classes != self.num_classes:
                raise validation.cache_mismatch_error(
                    "the number of classes", distiller.num_classes,
                    self.num_classes
                )
            keys = distiller._cache_keys()[1:]
            missing = set(keys) - set(self.features)
            if missing:
                raise validation.cache_mismatch_error(
                    "teacher outputs the terms read are missing (matched "
                    "layers, or the other teachers' logits)",
                    sorted(keys), sorted(self.features),
                )
            if distiller.augmentation is not None:
                raise validation.augmented_cache_error()
        return self

    def targets(self, y=None, x=None, distiller=None):
        """The `y` to pass to `fit` next to `x`: labels plus cached outputs.

        Args:
            y: Optional labels (`-1` marks unlabeled samples); `None` trains
                on the soft loss alone.
            x: Optional inputs, checked against the cache's length and
                fingerprint (all of their bytes are hashed: about 0.1 s for
                the 188 MB of MNIST in float32).
            distiller: Optional Distiller, checked for classes and features.

        Returns:
            A dict `{"labels", "teacher_logits", "teacher_features"}` of
            arrays that Keras slices and shuffles together with `x`.

        Example:

        ```python
        cache = keras_kd.data.cache_teacher_outputs(distiller, x)
        distiller.fit(x, cache.targets(y, x=x), epochs=50, shuffle=True)
        ```
        """
        self.check(x, distiller)
        out = {"teacher_logits": self.logits}
        if self.features:
            out["teacher_features"] = dict(self.features)
        if y is not None:
            y = np.asarray(y)
            if len(y) != self.num_samples:
                raise validation.cache_mismatch_error(
                    "the number of labels", self.num_samples, len(y)
                )
            out["labels"] = y
        return out

    def dataset(self, x, y=None, batch_size=32, shuffle=True, seed=None,
                distiller=None, sample_weight=None):
        """A batched `tf.data.Dataset` of `(x, targets)` for `fit`.

        Args:
            x: The inputs the cache was computed on (an array), checked
                against the fingerprint.
            y: Optional labels.
            batch_size: Integer. Defaults to `32`.
            shuffle: Boolean, reshuffle every epoch. Defaults to `True`.
            seed: Optional shuffle seed.
            distiller: Optional Distiller to check the cache against.
            sample_weight: Optional array of one weight per sample.

        Returns:
            A `tf.data.Dataset` of `(x, targets)`, or
            `(x, targets, sample_weight)`.
        """
        import tensorflow as tf

        targets = self.targets(y, x=x, distiller=distiller)
        columns = (x, targets)
        if sample_weight is not None:
            sample_weight = np.asarray(sample_weight)
            if len(sample_weight) != self.num_samples:
                raise validation.cache_mismatch_error(
                    "the number of sample weights", self.num_samples,
                    len(sample_weight))
            columns += (sample_weight,)
        ds = tf.data.Dataset.from_tensor_slices(columns)
        if shuffle:
            ds = ds.shuffle(min(self.num_samples, 100_000), seed=seed,
                            reshuffle_each_iteration=True)
        return ds.batch(batch_size).prefetch(tf.data.AUTOTUNE)

    def save(self, path):
        """Writes the cache to the folder `path`, atomically.

        The folder appears only once complete. An existing `path` is
        replaced only if it is empty or a cache folder keras_kd wrote (it
        holds `keras_kd_cache.json`); a file, the working directory or any
        other folder is refused before anything is written.

        Returns:
            The cache loaded from `path` (memory-mapped).
        """
        arrays = {_LOGITS: self.logits}
        files = {}
        for i, (name, value) in enumerate(sorted(self.features.items())):
            files[name] = f"feature_{i}.npy"
            arrays[files[name]] = value

        def write(folder, records):
            _write_metadata(folder, self.num_samples, self.num_classes, files,
                            self.fingerprint, records)

        return _store.save_folder(self, path, arrays, write,
                                  TeacherOutputCache.load, METADATA,
                                  "cache folder")

    @classmethod
    def load(cls, path, verify=True):
        """Opens a cache folder written by `save` or `cache_teacher_outputs`.

        The arrays are memory-mapped, read-only. With `verify=True` each
        file is read once to compare it with the checksum recorded when it
        was written, so logits or features edited, truncated or replaced on
        disk are an error.

        Args:
            path: The cache folder.
            verify: Boolean, check the stored arrays' checksums. Defaults to
                `True`.

        Returns:
            A `TeacherOutputCache`, or a `keras_kd.data.topk.TopKTeacherCache`
            for a folder written with `top_k=`.

        Raises:
            FileNotFoundError: If `path` holds no keras_kd cache.
            ValueError: If a file is damaged, truncated or was modified.
        """
        path = os.fspath(path)
        from keras_kd.data import topk

        if io.read_folder_format(path, METADATA) == topk.FORMAT:
            return topk.TopKTeacherCache.load(path, verify=verify)
        meta = _read_metadata(path)
        files = meta.get("files") or {}
        if _LOGITS not in files:
            raise _damaged(path, METADATA, "it lists no logits file")
        arrays = {file: _open_array(path, file, info, verify)
                  for file, info in files.items()}
        logits = arrays[_LOGITS]
        features = {name: arrays[file]
                    for name, file in meta.get("features", {}).items()}
        if logits.shape[0] != meta["num_samples"]:
            raise _damaged(path, _LOGITS,
                           f"it holds {logits.shape[0]} rows, the metadata "
                           f"{meta['num_samples']}")
        return cls(logits, features, meta.get("fingerprint"), path=path)


def _damaged(folder, file, what):
    return ValueError(
        f"The teacher-output cache file {os.path.join(folder, file)!r} is "
        f"damaged: {what}. {_REBUILD}"
    )


def _read_metadata(path, format_name=FORMAT, keys=("num_samples",
                                                   "num_classes", "files")):
    def missing():
        old = os.path.isfile(os.path.join(path, "meta.json"))
        return FileNotFoundError(
            f"No teacher-output cache at {path!r}: {METADATA} is missing"
            + (" (the folder holds a cache written by an older keras_kd, "
               "without checksums)" if old else "")
            + f". {_REBUILD}"
        )

    return _store.read_metadata(path, METADATA, format_name, keys, _damaged,
                                missing)


def _open_array(folder, file, info, verify):
    """Memory-maps one stored array after checking its header and size."""
    full = os.path.join(folder, file)
    if not os.path.isfile(full):
        raise _damaged(folder, file, "the file is missing")
    try:
        with open(full, "rb") as f:
            version = np.lib.format.read_magic(f)
            shape, _, dtype = _read_header(f, version)
            offset = f.tell()
    except Exception as error:  # A damaged header fails in many ways.
        raise _damaged(folder, file, f"its .npy header cannot be read "
                       f"({type(error).__name__}: {error})") from None
    expected_shape = tuple(info.get("shape", shape))
    if tuple(shape) != expected_shape or dtype.str != info.get(
            "dtype", dtype.str):
        raise _damaged(folder, file, f"it holds an array of shape "
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
            _store.checksum(array) != info["checksum"]:
        raise ValueError(
            f"The teacher-output cache file {full!r} was modified after it "
            "was written: its checksum differs from the one recorded in "
            f"{METADATA}. Received: {_store.checksum(array)}, expected "
            f"{info['checksum']}. {_REBUILD}"
        )
    return array


def _read_header(f, version):
    if version == (1, 0):
        return np.lib.format.read_array_header_1_0(f)
    return np.lib.format.read_array_header_2_0(f)


def _write_metadata(folder, num_samples, num_classes, features, fp, files):
    _store.write_metadata(
        folder, METADATA, FORMAT, VERSION,
        {"num_samples": int(num_samples), "num_classes": int(num_classes),
         "features": features, "fingerprint": fp}, files)


def cache_teacher_outputs(model, x, batch_size=256, path=None, verbose=1,
                          top_k=None):
    """Runs the teacher once over `x` and keeps its outputs.

    Every input byte is hashed as it streams past (SHA-256; about 0.1 s
    for the 188 MB of MNIST in float32), so the cache can later refuse
    other inputs: see `TeacherOutputCache.check`.

    Args:
        model: A `keras_kd.Distiller` (its teacher, teacher preprocessing and
            matched teacher layers are used) or a teacher `keras.Model`
            (logits only).
        x: Inputs in a fixed order: an array (a memory map works), or a
            `tf.data.Dataset` / iterable of batches of `x` or `(x, ...)` that
            yields the same batches on every pass. A dataset that reshuffles
            or randomly augments is refused.
        batch_size: Integer, used when `x` is an array. Defaults to `256`.
        path: Optional folder. If given, the outputs stream to `.npy` files
            there (memory-mapped, so data larger than RAM works), with a
            checksum of each file, and the folder appears only once
            complete. An existing `path` is replaced only if it is empty or
            a cache folder keras_kd wrote (it holds `keras_kd_cache.json`);
            a file, the working directory or any other folder is refused
            before the teacher runs.
        verbose: 0 or 1 (a Keras progress bar). Defaults to `1`.
        top_k: Optional positive integer, at most the vocabulary size. If
            given, only the `top_k` largest log-probabilities of each
            position (float16), their indices and the log of the remaining
            probability mass (float32) are kept, for sequence logits
            `(num_samples, sequence, vocabulary)` that would not fit densely;
            see `keras_kd.data.topk`. Defaults to `None` (dense logits).

    Returns:
        A `TeacherOutputCache`, or a `keras_kd.data.topk.TopKTeacherCache`
        with `top_k=`.

    Example:

    ```python
    distiller = keras_kd.Distiller(teacher, student)
    cache = keras_kd.data.cache_teacher_outputs(distiller, x_train)
    distiller.compile(optimizer="adam", metrics=["accuracy"])
    distiller.fit(x_train, cache.targets(y_train, x=x_train), epochs=50)
    ```
    """
    if top_k is not None:
        from keras_kd.data import topk

        return topk.cache_top_k(model, x, top_k, batch_size=batch_size,
                                path=path, verbose=verbose)
    if path is not None:
        path = io.check_replaceable_folder("path", path, METADATA,
                                           "cache folder")
    forward, names = _teacher_forward(model)
    batches, total, _ = _batches.iterate(x, batch_size)
    if path is not None and total is None:
        # Streaming to disk needs the length: one cheap pass over the data.
        total = _batches.count(x)
        batches, _, _ = _batches.iterate(x, batch_size, check=False)
    progbar = keras.utils.Progbar(total, verbose=verbose, unit_name="sample")
    files = [_LOGITS] + [f"feature_{i}.npy" for i in range(len(names) - 1)]
    features = dict(zip(names[1:], files[1:]))
    writer = _store.Writer(path, files, METADATA, "cache folder")
    inputs = Fingerprint()
    try:
        for batch in batches:
            inputs.update(batch)
            outputs = forward(batch)
            writer.append(outputs, total)
            progbar.update(inputs.count)
        fp = inputs.hexdigest()

        def write(folder, num_samples, records):
            _write_metadata(folder, num_samples, records[_LOGITS]["shape"][-1],
                            features, fp, records)

        values = writer.finish(write)
    finally:
        writer.cleanup()
    if values is None:
        return TeacherOutputCache.load(path, verify=False)
    cache = TeacherOutputCache(values[0], dict(zip(names[1:], values[1:])), fp)
    return cache.save(path) if path else cache


def _teacher_forward(model):
    from keras_kd.distiller import Distiller

    if isinstance(model, Distiller):
        wrapper = _TeacherOutputs(model)
        names = model._cache_keys()
    elif isinstance(model, keras.Model):
        wrapper = model
        names = ["logits"]
    else:
        raise TypeError(
            "Argument `model` must be a keras_kd.Distiller or a teacher "
            f"keras.Model. Received: model={model!r}"
        )

    def forward(batch):
        outputs = wrapper.predict_on_batch(batch)
        if not isinstance(outputs, (list, tuple)):
            outputs = [outputs]
        return [np.asarray(o) for o in outputs]

    return forward, names


class _TeacherOutputs(keras.Model):
    """Runs a Distiller's teacher path: preprocessing, teacher, taps."""

    def __init__(self, distiller):
        super().__init__(name="teacher_outputs")
        self.distiller = distiller

    def call(self, x):
        # Every teacher's logits and taps, named by `_cache_keys`.
        return self.distiller._flat_teacher_outputs(x)
