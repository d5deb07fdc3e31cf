"""Teacher-output caching: run the teacher once, reuse its outputs every epoch.

When the inputs are not randomly augmented, the teacher's logits (and the
features of every `FeatureMatch`) are the same each epoch. Computing them once
makes an epoch of distillation cost about what an epoch of student-only
training costs.
"""

import json
import os
import shutil
import tempfile

import keras
import numpy as np

from keras_kd.data import _batches
from keras_kd.utils import validation

_META = "meta.json"
_LOGITS = "teacher_logits.npy"


class TeacherOutputCache:
    """The teacher's outputs on a fixed, ordered set of inputs.

    Build it with `keras_kd.data.cache_teacher_outputs`; load a cache written
    to disk with `TeacherOutputCache.load(path)`.

    Attributes:
        logits: Array `(num_samples, num_classes)` (a read-only memory map
            for a cache on disk).
        features: Dict `{teacher_layer: array}` for the matched layers.
        num_samples: Integer.
        num_classes: Integer.
        fingerprint: Checksum of a few input rows, to catch a cache paired
            with other inputs.
    """

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

    def __len__(self):
        return self.num_samples

    def __repr__(self):
        where = f", path={self.path!r}" if self.path else ""
        return (f"TeacherOutputCache(num_samples={self.num_samples}, "
                f"num_classes={self.num_classes}, "
                f"features={sorted(self.features)}{where})")

    def check(self, x=None, distiller=None):
        """Checks that this cache fits the inputs `x` and the `distiller`.

        Raises:
            ValueError: on a different number of samples, another input
                checksum, another number of classes, or a missing feature.
        """
        if x is not None:
            n = len(x)
            if n != self.num_samples:
                raise validation.cache_mismatch_error(
                    "the number of samples", self.num_samples, n
                )
            if self.fingerprint is not None:
                received = fingerprint(x)
                if received != self.fingerprint:
                    raise validation.cache_mismatch_error(
                        "the inputs are not the ones the cache was computed "
                        "on (checksum of sampled rows differs)",
                        self.fingerprint,
                        received,
                    )
        if distiller is not None:
            if distiller.num_classes != self.num_classes:
                raise validation.cache_mismatch_error(
                    "the number of classes", distiller.num_classes,
                    self.num_classes
                )
            missing = set(distiller._teacher_tap_names) - set(self.features)
            if missing:
                raise validation.cache_mismatch_error(
                    "matched teacher layers are missing",
                    sorted(distiller._teacher_tap_names),
                    sorted(self.features),
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
                checksum.
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
                distiller=None):
        """A batched `tf.data.Dataset` of `(x, targets)` for `fit`.

        Args:
            x: The inputs the cache was computed on (an array).
            y: Optional labels.
            batch_size: Integer. Defaults to `32`.
            shuffle: Boolean, reshuffle every epoch. Defaults to `True`.
            seed: Optional shuffle seed.
            distiller: Optional Distiller to check the cache against.

        Returns:
            A `tf.data.Dataset`.
        """
        import tensorflow as tf

        targets = self.targets(y, x=x, distiller=distiller)
        ds = tf.data.Dataset.from_tensor_slices((x, targets))
        if shuffle:
            ds = ds.shuffle(min(self.num_samples, 100_000), seed=seed,
                            reshuffle_each_iteration=True)
        return ds.batch(batch_size).prefetch(tf.data.AUTOTUNE)

    def save(self, path):
        """Writes the cache to the folder `path` (atomically)."""
        _write(path, self.logits, self.features, self.fingerprint)
        return TeacherOutputCache.load(path)

    @classmethod
    def load(cls, path):
        """Opens a cache folder written by `save` or `cache_teacher_outputs`.

        The arrays are memory-mapped, read-only: nothing is read until used.
        """
        meta_path = os.path.join(path, _META)
        if not os.path.exists(meta_path):
            raise FileNotFoundError(
                f"No teacher-output cache at {path!r}: {_META} is missing. "
                "Write one with `keras_kd.data.cache_teacher_outputs(..., "
                "path=...)`."
            )
        with open(meta_path) as f:
            meta = json.load(f)
        logits = np.load(os.path.join(path, _LOGITS), mmap_mode="r")
        features = {
            name: np.load(os.path.join(path, file), mmap_mode="r")
            for name, file in meta.get("features", {}).items()
        }
        if logits.shape[0] != meta["num_samples"]:
            raise validation.cache_mismatch_error(
                "the logits file is truncated", meta["num_samples"],
                logits.shape[0]
            )
        return cls(logits, features, meta.get("fingerprint"), path=path)


def fingerprint(x, rows=16):
    """A checksum of up to `rows` evenly spaced rows of `x`."""
    n = len(x)
    if n == 0:
        return "empty"
    index = np.unique(np.linspace(0, n - 1, num=min(rows, n)).astype(int))
    sample = np.ascontiguousarray(np.asarray(x[index], dtype="float32"))
    return f"{n}:{float(np.round(sample.astype('float64').sum(), 3))}:" \
           f"{float(np.round(np.abs(sample).astype('float64').sum(), 3))}"


def _write(path, logits, features, fp, chunk=4096):
    parent = os.path.dirname(os.path.abspath(path)) or "."
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=".keras_kd_cache_", dir=parent)
    try:
        _save_array(os.path.join(tmp, _LOGITS), logits, chunk)
        files = {}
        for i, (name, value) in enumerate(sorted(features.items())):
            files[name] = f"feature_{i}.npy"
            _save_array(os.path.join(tmp, files[name]), value, chunk)
        meta = {"num_samples": int(logits.shape[0]),
                "num_classes": int(logits.shape[-1]),
                "features": files, "fingerprint": fp}
        with open(os.path.join(tmp, _META), "w") as f:
            json.dump(meta, f)
        if os.path.exists(path):
            shutil.rmtree(path)
        os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _save_array(file, array, chunk):
    out = np.lib.format.open_memmap(file, mode="w+", dtype=array.dtype,
                                    shape=array.shape)
    for start in range(0, array.shape[0], chunk):
        out[start:start + chunk] = array[start:start + chunk]
    out.flush()
    del out


def cache_teacher_outputs(model, x, batch_size=256, path=None, verbose=1):
    """Runs the teacher once over `x` and keeps its outputs.

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
            there (memory-mapped, so data larger than RAM works) and the
            folder appears only once complete.
        verbose: 0 or 1 (a Keras progress bar). Defaults to `1`.

    Returns:
        A `TeacherOutputCache`.

    Example:

    ```python
    distiller = keras_kd.Distiller(teacher, student)
    cache = keras_kd.data.cache_teacher_outputs(distiller, x_train)
    distiller.compile(optimizer="adam", metrics=["accuracy"])
    distiller.fit(x_train, cache.targets(y_train, x=x_train), epochs=50)
    ```
    """
    forward, names = _teacher_forward(model)
    batches, total, array = _batches.iterate(x, batch_size)
    if path is not None and total is None:
        # Streaming to disk needs the length: one cheap pass over the data.
        total = _batches.count(x)
        batches, _, _ = _batches.iterate(x, batch_size)
    progbar = keras.utils.Progbar(total, verbose=verbose, unit_name="sample")
    writer = _Writer(path, names)
    seen = 0
    try:
        for batch in batches:
            outputs = forward(batch)
            writer.append(outputs, total)
            seen += len(outputs[0])
            progbar.update(seen)
        fp = fingerprint(array) if array is not None else None
        return writer.finish(fp)
    finally:
        writer.cleanup()


def _teacher_forward(model):
    from keras_kd.distiller import Distiller

    if isinstance(model, Distiller):
        wrapper = _TeacherOutputs(model)
        names = ["logits"] + list(model._teacher_tap_names)
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
        return self.distiller._teacher_outputs(x, None)


class _Writer:
    """Collects output batches in memory or streams them to `.npy` files."""

    def __init__(self, path, names):
        self.path = path
        self.names = names
        self.parts = [[] for _ in names]
        self.tmp = None
        self.arrays = None
        self.offset = 0

    def append(self, outputs, total):
        if self.path is None or total is None:
            for part, value in zip(self.parts, outputs):
                part.append(value)
            return
        if self.arrays is None:
            parent = os.path.dirname(os.path.abspath(self.path)) or "."
            os.makedirs(parent, exist_ok=True)
            self.tmp = tempfile.mkdtemp(prefix=".keras_kd_cache_", dir=parent)
            self.arrays = [
                np.lib.format.open_memmap(
                    os.path.join(self.tmp, self._file(i)), mode="w+",
                    dtype=value.dtype, shape=(total,) + value.shape[1:])
                for i, value in enumerate(outputs)
            ]
        n = len(outputs[0])
        for array, value in zip(self.arrays, outputs):
            array[self.offset:self.offset + n] = value
        self.offset += n

    def _file(self, i):
        return _LOGITS if i == 0 else f"feature_{i - 1}.npy"

    def finish(self, fp):
        if self.arrays is None:
            if not self.parts[0]:
                raise ValueError("Argument `x` holds no samples to cache.")
            values = [np.concatenate(part) for part in self.parts]
            cache = TeacherOutputCache(
                values[0], dict(zip(self.names[1:], values[1:])), fp)
            return cache.save(self.path) if self.path else cache
        for array in self.arrays:
            array.flush()
        meta = {"num_samples": int(self.offset),
                "num_classes": int(self.arrays[0].shape[-1]),
                "features": {name: self._file(i + 1)
                             for i, name in enumerate(self.names[1:])},
                "fingerprint": fp}
        with open(os.path.join(self.tmp, _META), "w") as f:
            json.dump(meta, f)
        self.arrays = None
        if os.path.exists(self.path):
            shutil.rmtree(self.path)
        os.replace(self.tmp, self.path)
        self.tmp = None
        return TeacherOutputCache.load(self.path)

    def cleanup(self):
        if self.tmp is not None:
            self.arrays = None
            shutil.rmtree(self.tmp, ignore_errors=True)
