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

import os

import keras
import numpy as np

from keras_kd.data import _batches
from keras_kd.data import _forward
from keras_kd.data import _store
from keras_kd.utils import io
from keras_kd.utils import validation

# The metadata file that marks a cache folder written by keras_kd.
METADATA = _store.CACHE_METADATA
FORMAT = _store.CACHE_FORMAT
VERSION = 2
_LOGITS = "teacher_logits.npy"
_damaged = _store.damaged
_read_metadata = _store.read_cache_metadata
_open_array = _store.open_array
# Kept under their old names: `keras_kd.data.cache.fingerprint(x)` etc.
Fingerprint = _store.Fingerprint
fingerprint = _store.fingerprint
check_inputs = _store.check_inputs
check_fingerprint = _store.check_fingerprint


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
    forward, names = _forward.teacher_forward(model)
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
