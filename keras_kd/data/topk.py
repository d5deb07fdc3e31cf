"""Top-k teacher caches: a few log-probabilities per token, not the vocabulary.

A dense cache of language-model logits `(num_samples, sequence, vocabulary)`
in float32 costs `4 * vocabulary` bytes per token (128 kB for 32,000
tokens). `cache_teacher_outputs(model, x, top_k=k, path=...)` keeps, for each
position, the `k` largest teacher log-probabilities (`log_softmax` at
temperature 1) in float16, their indices (uint16 when the vocabulary has at
most 65,535 entries, else int32) and the log of the remaining probability
mass in float32: `4 * k + 4` bytes per token with uint16 indices.

The reduction runs in `keras.ops` inside the teacher's compiled forward
pass (`top_k_log_probs`), batch by batch, so only `k` entries per position
leave the device and memory stays bounded by one batch. The remaining mass
is a log-sum-exp over the float32 log-probabilities not kept, not
`log(1 - sum(exp(top_k)))` of the float16 values: when the kept entries hold
nearly all the mass, that difference is mostly float16 rounding.

`densify_top_k` rebuilds dense log-probabilities per batch: the stored
values at their indices and the remaining mass spread uniformly over the
other `vocabulary - k` entries. `TopKTeacherCache.dataset` does it inside
the `tf.data` pipeline, so the disk holds `k` entries per token and the
dense tensor exists one batch at a time; the Distiller consumes it like a
dense cache.
"""

import math
import os

import keras
import numpy as np
from keras import ops

from keras_kd.data import _batches
from keras_kd.data import _store
from keras_kd.data import _forward
from keras_kd.utils import io
from keras_kd.utils import validation

FORMAT = "teacher_top_k_cache"
VERSION = 1
VALUES = "top_k_values.npy"
INDICES = "top_k_indices.npy"
TAIL = "tail_log_mass.npy"
# Log-probabilities below this (probability 0 in float32) are stored as it,
# so every stored value and every densified logit is finite.
LOG_PROB_FLOOR = -1e4
# Logits converted to log-probabilities at a time (float64): 32 MB.
_BLOCK = 1 << 22


def densify_top_k(values, indices, tail_log_mass, vocabulary_size):
    """Dense log-probabilities from a top-k cache entry.

    The `k` stored log-probabilities go to their indices; every other entry
    gets `tail_log_mass - log(vocabulary_size - k)`, the remaining mass
    spread uniformly. The softmax of the result is therefore the stored
    top-k probabilities (up to the float16 rounding of the stored values)
    and the other entries sum to `exp(tail_log_mass)`. Values are clipped
    at `LOG_PROB_FLOOR` (-1e4) so the result is finite.

    Args:
        values: Tensor `(..., k)` of log-probabilities (any float dtype).
        indices: Integer tensor `(..., k)` of their vocabulary indices,
            distinct along the last axis.
        tail_log_mass: Tensor `(...)`, the log of the probability mass not
            in the top k.
        vocabulary_size: Integer, at least `k`.

    Returns:
        Float32 tensor `(..., vocabulary_size)`.

    Example:

    >>> densify_top_k([[-0.1, -2.5]], [[3, 0]], [-3.2], 5)  # doctest: +SKIP
    """
    values = ops.maximum(ops.cast(values, "float32"), LOG_PROB_FLOOR)
    indices = ops.cast(indices, "int32")
    tail = ops.cast(tail_log_mass, "float32")
    k = values.shape[-1]
    lead = ops.shape(values)[:-1]
    fill = ops.maximum(tail - math.log(max(vocabulary_size - k, 1)),
                       LOG_PROB_FLOOR)
    fill = ops.reshape(fill, (-1, 1))
    rows = ops.shape(fill)[0]
    dense = ops.broadcast_to(fill, (rows, vocabulary_size))
    row_ids = ops.repeat(ops.arange(rows, dtype="int32"), k)
    where = ops.stack([row_ids, ops.reshape(indices, (-1,))], axis=1)
    dense = ops.scatter_update(dense, where, ops.reshape(values, (-1,)))
    return ops.reshape(dense, (*lead, vocabulary_size))


def _densify_tf(values, indices, tail_log_mass, vocabulary_size):
    """`densify_top_k` in TensorFlow ops, for `tf.data` under any backend.

    `keras.ops` follows the Keras backend (JAX arrays cannot live in a
    `tf.data` graph); this is the same computation, tested equal.
    """
    import tensorflow as tf

    values = tf.maximum(tf.cast(values, tf.float32), LOG_PROB_FLOOR)
    indices = tf.cast(indices, tf.int32)
    k = values.shape[-1]
    lead = tf.shape(values)[:-1]
    fill = tf.maximum(tf.cast(tail_log_mass, tf.float32)
                      - math.log(max(vocabulary_size - k, 1)),
                      LOG_PROB_FLOOR)
    fill = tf.reshape(fill, (-1, 1))
    rows = tf.shape(fill)[0]
    dense = tf.broadcast_to(fill, (rows, vocabulary_size))
    row_ids = tf.repeat(tf.range(rows, dtype=tf.int32), k)
    where = tf.stack([row_ids, tf.reshape(indices, (-1,))], axis=1)
    dense = tf.tensor_scatter_nd_update(dense, where,
                                        tf.reshape(values, (-1,)))
    return tf.reshape(dense, tf.concat([lead, [vocabulary_size]], 0))


def top_k_log_probs(logits, k):
    """The top-k log-probabilities of logits, in `keras.ops`.

    Runs inside the teacher's compiled forward pass while a cache fills, so
    only `k` entries per position leave the device.

    Args:
        logits: Tensor `(..., vocabulary)`.
        k: Integer in `[1, vocabulary]`.

    Returns:
        `(values, indices, tail_log_mass)`: float16 `(..., k)` sorted by
        decreasing value (ties by index), int32 `(..., k)`, and float32
        `(...)`, the log of the mass outside the top k as a log-sum-exp of
        the float32 log-probabilities not kept (`LOG_PROB_FLOOR` when none
        is left). Values are clipped at `LOG_PROB_FLOOR`.
    """
    log_probs = ops.log_softmax(ops.cast(logits, "float32"), axis=-1)
    values, indices = ops.top_k(log_probs, k, sorted=True)
    indices = ops.cast(indices, "int32")
    vocab = log_probs.shape[-1]
    if k < vocab:
        flat = ops.reshape(log_probs, (-1, vocab))
        rows = ops.shape(flat)[0]
        row_ids = ops.repeat(ops.arange(rows, dtype="int32"), k)
        where = ops.stack([row_ids, ops.reshape(indices, (-1,))], axis=1)
        rest = ops.scatter_update(
            flat, where, ops.full_like(ops.reshape(values, (-1,)), -np.inf))
        peak = ops.max(rest, axis=-1, keepdims=True)
        peak = ops.where(ops.isfinite(peak), peak, 0.0)
        tail = ops.squeeze(peak, -1) + ops.log(
            ops.sum(ops.exp(rest - peak), axis=-1))
        tail = ops.reshape(tail, ops.shape(values)[:-1])
    else:
        tail = ops.full_like(values[..., 0], -np.inf)
    return (ops.cast(ops.maximum(values, LOG_PROB_FLOOR), "float16"),
            indices, ops.maximum(tail, LOG_PROB_FLOOR))


def index_dtype(vocabulary_size):
    """uint16 for vocabularies of at most 65,535 entries, else int32."""
    return np.dtype("uint16" if vocabulary_size <= 65535 else "int32")


class TopKTeacherCache(_store.CacheBase):
    """A teacher's top-k log-probabilities on a fixed, ordered set of inputs.

    Build it with `keras_kd.data.cache_teacher_outputs(model, x, top_k=k)`;
    open a folder with `TopKTeacherCache.load(path)` (or
    `TeacherOutputCache.load(path)`, which recognises it). Train with
    `distiller.fit(cache.dataset(x, y, batch_size=...))`: each batch carries
    dense teacher log-probabilities rebuilt by `densify_top_k`.

    Attributes:
        values: Float16 array `(num_samples, ..., top_k)`, sorted by
            decreasing log-probability (a read-only memory map on disk).
        indices: uint16 or int32 array `(num_samples, ..., top_k)`.
        tail_log_mass: Float32 array `(num_samples, ...)`.
        top_k: Integer.
        num_samples: Integer.
        num_classes: Integer, the vocabulary size.
        fingerprint: String, the SHA-256 hash of all the inputs, or `None`.
        path: The cache folder, or `None` for a cache in memory.
    """

    _NAME = "TopKTeacherCache"

    def __init__(self, values, indices, tail_log_mass, num_classes,
                 fingerprint=None, path=None):
        self.values = values
        self.indices = indices
        self.tail_log_mass = tail_log_mass
        self.num_classes = int(num_classes)
        self.top_k = int(values.shape[-1])
        self.num_samples = int(values.shape[0])
        self.fingerprint = fingerprint
        self.path = path

    def _repr_fields(self):
        return [f"num_samples={self.num_samples}",
                f"shape={tuple(self.values.shape[1:-1])}",
                f"num_classes={self.num_classes}", f"top_k={self.top_k}"]

    def check(self, x=None, distiller=None):
        """Checks that this cache fits the inputs `x` and the `distiller`.

        As `TeacherOutputCache.check`: the length and the fingerprint of
        `x`; the classes, the teacher outputs read and the augmentation of
        the `distiller`.

        Returns:
            The cache.
        """
        if x is not None:
            _store.check_inputs(self, x)
        if distiller is not None:
            if distiller.num_classes != self.num_classes:
                raise validation.cache_mismatch_error(
                    "the vocabulary size", distiller.num_classes,
                    self.num_classes)
            if distiller._cache_keys() != ["logits"]:
                raise validation.cache_mismatch_error(
                    "a top-k cache holds one teacher's logits only, and the "
                    "terms read other teacher outputs",
                    distiller._cache_keys(), ["logits"])
            if distiller.augmentation is not None:
                raise validation.augmented_cache_error()
        return self

    def targets(self, y=None, x=None, distiller=None):
        """Not available: dense targets for all samples defeat the cache."""
        raise NotImplementedError(
            "A top-k cache rebuilds dense teacher logits one batch at a time; "
            "`targets()` would hold all of them in memory. Received: a "
            f"TopKTeacherCache of {self.num_samples} samples. Use "
            "`distiller.fit(cache.dataset(x, y, batch_size=...))`."
        )

    def dataset(self, x, y=None, batch_size=32, shuffle=True, seed=None,
                distiller=None, sample_weight=None):
        """A batched `tf.data.Dataset` of `(x, targets[, sample_weight])`.

        Batches are read from the (memory-mapped) arrays by index, and the
        dense teacher log-probabilities are rebuilt per batch in the
        pipeline (`densify_top_k`), so only one batch is ever dense.

        Args:
            x: The inputs the cache was computed on (an array), checked
                against the fingerprint.
            y: Optional labels, `(num_samples, ...)` (e.g. `(n, sequence)`
                token ids; `-1` marks unlabeled positions).
            batch_size: Integer. Defaults to `32`.
            shuffle: Boolean, reshuffle every epoch. Defaults to `True`.
            seed: Optional shuffle seed.
            distiller: Optional Distiller to check the cache against.
            sample_weight: Optional array `(num_samples,)` or
                `(num_samples, sequence)`.

        Returns:
            A `tf.data.Dataset` of `(x, {"teacher_logits", "labels"})` (no
            `"labels"` without `y`), plus `sample_weight` when given.
            `teacher_logits` is float32 `(batch, ..., num_classes)`.
        """
        import tensorflow as tf

        batch_size = validation.check_positive_integer("batch_size",
                                                       batch_size)
        self.check(x, distiller)
        structure = x
        if isinstance(x, dict):  # KerasHub-style inputs.
            x_columns = [np.asarray(x[k]) for k in sorted(x)]
        else:
            x_columns = [x if hasattr(x, "shape") else np.asarray(x)]
        columns = x_columns + [self.values, self.indices, self.tail_log_mass]
        for name, value in (("labels", y), ("sample weights", sample_weight)):
            if value is not None:
                value = np.asarray(value)
                if len(value) != self.num_samples:
                    raise validation.cache_mismatch_error(
                        f"the number of {name}", self.num_samples, len(value))
                columns.append(value)
        dtypes = [tf.as_dtype(np.asarray(c[:0]).dtype) for c in columns]

        def read(ids):
            ids = np.sort(ids)
            return [np.asarray(c[ids]) for c in columns]

        def load(ids):
            out = tf.numpy_function(read, [ids], dtypes)
            for tensor, column in zip(out, columns):
                tensor.set_shape((None,) + tuple(column.shape[1:]))
            return tuple(out)

        def to_batch(*parts):
            parts = list(parts)
            x_parts = parts[:len(x_columns)]
            values, indices, tail, *rest = parts[len(x_columns):]
            x_batch = x_parts[0]
            if isinstance(structure, dict):
                x_batch = dict(zip(sorted(structure), x_parts))
            targets = {"teacher_logits": _densify_tf(
                values, indices, tail, self.num_classes)}
            rest = list(rest)
            if y is not None:
                targets["labels"] = rest.pop(0)
            if sample_weight is not None:
                return x_batch, targets, rest.pop(0)
            return x_batch, targets

        ds = tf.data.Dataset.range(self.num_samples)
        if shuffle:
            ds = ds.shuffle(self.num_samples, seed=seed,
                            reshuffle_each_iteration=True)
        ds = ds.batch(batch_size).map(load, num_parallel_calls=tf.data.AUTOTUNE)
        return ds.map(to_batch).prefetch(tf.data.AUTOTUNE)

    def save(self, path):
        """Writes the cache to the folder `path`, atomically.

        The same rules as `TeacherOutputCache.save`: the folder appears only
        once complete and replaces only an empty folder or one keras_kd
        wrote.

        Returns:
            The cache loaded from `path` (memory-mapped).
        """
        arrays = {VALUES: self.values, INDICES: self.indices,
                  TAIL: self.tail_log_mass}

        def write(folder, records):
            _write_metadata(folder, self.num_samples, self.num_classes,
                            self.top_k, self.fingerprint, records)

        return _store.save_folder(self, path, arrays, write,
                                  TopKTeacherCache.load, _store.CACHE_METADATA,
                                  "cache folder")

    @classmethod
    def load(cls, path, verify=True):
        """Opens a top-k cache folder, memory-mapped and read-only.

        With `verify=True` each file is read once and compared with the
        checksum recorded when it was written.

        Raises:
            FileNotFoundError: If `path` holds no keras_kd cache.
            ValueError: If a file is damaged, truncated, modified, or the
                files disagree with each other.
        """
        path = os.fspath(path)
        meta = _store.read_cache_metadata(
            path, FORMAT, ("num_samples", "num_classes", "top_k", "files"))
        files = meta["files"]
        for file in (VALUES, INDICES, TAIL):
            if file not in files:
                raise _store.damaged(path, _store.CACHE_METADATA,
                                     f"it lists no {file}")
        values, indices, tail = (
            _store.open_array(path, file, files[file], verify)
            for file in (VALUES, INDICES, TAIL))
        expected = (meta["num_samples"],) + tuple(tail.shape[1:])
        for file, array, shape in (
                (VALUES, values, expected + (meta["top_k"],)),
                (INDICES, indices, expected + (meta["top_k"],)),
                (TAIL, tail, expected)):
            if tuple(array.shape) != shape:
                raise _store.damaged(
                    path, file, f"it holds shape {tuple(array.shape)}, the "
                    f"metadata and the other files say {shape}")
        return cls(values, indices, tail, meta["num_classes"],
                   meta.get("fingerprint"), path=path)


def _write_metadata(folder, num_samples, num_classes, top_k, fp, files):
    _store.write_metadata(
        folder, _store.CACHE_METADATA, FORMAT, VERSION,
        {"num_samples": int(num_samples), "num_classes": int(num_classes),
         "top_k": int(top_k),
         "values": "log_softmax of the teacher logits at temperature 1",
         "fingerprint": fp}, files)


def _vocabulary_size(model):
    """The teacher's vocabulary size when known before it runs, else None."""
    from keras_kd.distiller import Distiller

    if isinstance(model, Distiller):
        return model.num_classes
    try:
        return model.outputs[0].shape[-1]
    except (AttributeError, IndexError, TypeError, ValueError):
        return None


def _check_k(top_k, vocabulary_size):
    if vocabulary_size is not None and top_k > vocabulary_size:
        raise ValueError(
            "Argument `top_k` must be at most the vocabulary size (the last "
            f"axis of the teacher's logits, {vocabulary_size}). Received: "
            f"top_k={top_k}"
        )


class _TopKOutputs(keras.Model):
    """The teacher's logits reduced to their top k in the same forward."""

    def __init__(self, teacher, top_k):
        super().__init__(name="teacher_top_k")
        self.teacher = teacher
        self.top_k = top_k
        self.vocabulary_size = None

    def call(self, x):
        logits = self.teacher(x)
        if isinstance(logits, (list, tuple)):
            logits = logits[0]
        # Read at trace time; the vocabulary is static.
        self.vocabulary_size = int(logits.shape[-1])
        _check_k(self.top_k, self.vocabulary_size)
        return top_k_log_probs(logits, self.top_k)


def cache_top_k(model, x, top_k, batch_size=256, path=None, verbose=1):
    """`cache_teacher_outputs(model, x, top_k=top_k, ...)`; see there."""
    top_k = validation.check_positive_integer("top_k", top_k)
    if path is not None:
        path = io.check_replaceable_folder("path", path, _store.CACHE_METADATA,
                                           "cache folder")
    from keras_kd.distiller import Distiller

    names = model._cache_keys() if isinstance(model, Distiller) else [
        "logits"]
    _forward.teacher_forward(model)  # Checks the type of `model`.
    if names != ["logits"]:
        raise NotImplementedError(
            "A top-k cache holds one teacher's logits, but this Distiller's "
            f"terms also read {names[1:]}. Received: top_k={top_k}. Cache "
            "them densely (`top_k=None`), or distill with the live teacher."
        )
    _check_k(top_k, _vocabulary_size(model))
    batches, total, _ = _batches.iterate(x, batch_size)
    if path is not None and total is None:
        total = _batches.count(x)
        batches, _, _ = _batches.iterate(x, batch_size, check=False)
    teacher = _forward.TeacherOutputs(model) if isinstance(
        model, Distiller) else model
    reduce = _TopKOutputs(teacher, top_k)
    progbar = keras.utils.Progbar(total, verbose=verbose, unit_name="sample")
    writer = _store.Writer(path, (VALUES, INDICES, TAIL), _store.CACHE_METADATA,
                           "cache folder")
    inputs = _store.Fingerprint()
    try:
        for batch in batches:
            inputs.update(batch)
            values, indices, tail = (np.asarray(o) for o in
                                     reduce.predict_on_batch(batch))
            num_classes = reduce.vocabulary_size
            writer.append([values.astype("float16"),
                           indices.astype(index_dtype(num_classes)),
                           tail.astype("float32")], total)
            progbar.update(inputs.count)
        fp = inputs.hexdigest()

        def write(folder, num_samples, records):
            _write_metadata(folder, num_samples, num_classes, top_k, fp,
                            records)

        arrays = writer.finish(write)
    finally:
        writer.cleanup()
    if arrays is None:
        return TopKTeacherCache.load(path, verify=False)
    return TopKTeacherCache(*arrays, num_classes, fp)
