"""The teacher's outputs, computed once per search and reused by every trial.

A search trains many students on the same data with the same frozen teacher,
so the teacher's logits (and matched features) are the same in every trial.
`TeacherCacheStore` computes them with `keras_kd.data.cache_teacher_outputs`
the first time a trial sees a dataset and attaches them to the targets of
every later trial, so a trial costs about one student training.
"""

import sys
import warnings

import keras
import numpy as np

from keras_kd import data as kd_data
from keras_kd.data import cache as cache_module

# A search sees the training and the validation data; a few more entries
# cover a user who searches twice with the same hypermodel.
_MAX_ENTRIES = 4


def _tf_dataset_type():
    # Only look for TensorFlow if it is already imported: under JAX a
    # tf.data input means the user imported it.
    tf = sys.modules.get("tensorflow")
    return getattr(getattr(tf, "data", None), "Dataset", None)


def is_dataset(x):
    dataset_type = _tf_dataset_type()
    return dataset_type is not None and isinstance(x, dataset_type)


def is_array(x):
    return isinstance(x, np.ndarray) or (
        hasattr(x, "__array__") and hasattr(x, "shape")
        and not is_dataset(x)
    )


class TeacherCacheStore:
    """Teacher outputs keyed by the data they were computed on.

    Arrays are keyed by identity and the fingerprint of all their bytes;
    datasets by identity. The store holds a reference to each keyed object,
    so an id is never reused by another object while its entry lives.
    """

    def __init__(self, batch_size=256):
        self.batch_size = batch_size
        self._entries = {}
        self.computed = 0

    def clear(self):
        self._entries.clear()

    def _key(self, distiller, x):
        taps = tuple(distiller._cache_keys())
        if is_array(x):
            # The fingerprint hashes every byte of `x` (about 0.1 s for the
            # 188 MB of MNIST in float32), so an array changed in place
            # between trials gets new outputs.
            return ("array", id(x), cache_module.fingerprint(x), taps)
        return ("dataset", id(x), taps)

    def _get(self, distiller, x, compute):
        key = self._key(distiller, x)
        entry = self._entries.get(key)
        if entry is None:
            if len(self._entries) >= _MAX_ENTRIES:
                self._entries.pop(next(iter(self._entries)))
            entry = (x, compute())
            self._entries[key] = entry
            self.computed += 1
        return entry[1]

    def training_targets(self, distiller, x, y):
        """Returns `(x, y)` for `fit`, with cached outputs when possible.

        Falls back to the live teacher, with a warning, when the data cannot
        be cached (a reshuffling dataset, a generator).
        """
        if isinstance(y, dict):
            return x, y  # Already carries targets; leave them alone.
        if is_array(x) and (y is None or is_array(y)):
            cache = self._get(distiller, x, lambda: kd_data.
                              cache_teacher_outputs(
                                  distiller, x, batch_size=self.batch_size,
                                  verbose=0))
            # The key holds the fingerprint of `x`: no second hashing.
            return x, cache.targets(y)
        if is_dataset(x) and y is None:
            try:
                return self._dataset(distiller, x), None
            except _Uncachable as reason:
                self._warn(str(reason))
                return x, y
        self._warn(f"the training data is a {type(x).__name__}, not an "
                   "array or a tf.data.Dataset")
        return x, y

    def validation_data(self, distiller, validation_data):
        """`validation_data` with cached outputs when possible, silently."""
        if is_dataset(validation_data):
            try:
                return self._dataset(distiller, validation_data)
            except _Uncachable:
                return validation_data
        if not isinstance(validation_data, (tuple, list)):
            return validation_data
        x_val, y_val, weights = keras.utils.unpack_x_y_sample_weight(
            tuple(validation_data))
        if not is_array(x_val) or not (y_val is None or is_array(y_val)):
            return validation_data
        cache = self._get(distiller, x_val, lambda: kd_data.
                          cache_teacher_outputs(
                              distiller, x_val, batch_size=self.batch_size,
                              verbose=0))
        return keras.utils.pack_x_y_sample_weight(
            x_val, cache.targets(y_val), weights)

    def _dataset(self, distiller, dataset):
        import tensorflow as tf

        def compute():
            try:
                cache = kd_data.cache_teacher_outputs(distiller, dataset,
                                                      verbose=0)
            except ValueError as error:
                raise _Uncachable(
                    "the dataset yields different batches on two passes"
                ) from error
            sizes = [int(_first_tensor(element).shape[0])
                     for element in dataset]
            if len(set(sizes[:-1])) > 1 or sizes[-1] > sizes[0]:
                raise _Uncachable("the dataset's batches vary in size")
            return cache, sizes[0]

        cache, batch_size = self._get(distiller, dataset, compute)
        outputs = {"teacher_logits": cache.logits}
        if cache.features:
            outputs["teacher_features"] = dict(cache.features)
        cached = tf.data.Dataset.from_tensor_slices(outputs).batch(batch_size)
        return tf.data.Dataset.zip((dataset, cached)).map(
            _merge_targets, num_parallel_calls=tf.data.AUTOTUNE
        ).prefetch(tf.data.AUTOTUNE)

    def _warn(self, reason):
        warnings.warn(uncached_teacher_message(reason),
                      UserWarning, stacklevel=4)


class _Uncachable(Exception):
    pass


def _first_tensor(element):
    while isinstance(element, (tuple, list)):
        element = element[0]
    if isinstance(element, dict):
        return _first_tensor(next(iter(element.values())))
    return element


def _merge_targets(element, outputs):
    if not isinstance(element, tuple):
        element = (element,)
    x, y, weights = keras.utils.unpack_x_y_sample_weight(element)
    targets = dict(outputs)
    if y is not None:
        targets["labels"] = y
    return keras.utils.pack_x_y_sample_weight(x, targets, weights)


# Error messages.


def uncached_teacher_message(reason):
    return (
        f"The teacher's outputs are not cached for this search ({reason}), "
        "so every trial runs the teacher on every training batch. For "
        "searches that cost about one student training per trial, pass "
        "arrays, or a `tf.data.Dataset` that yields the same batches on "
        "every pass (no reshuffling, no random augmentation)."
    )
