"""Cached teacher views: teacher outputs for fixed random augmentations.

A dense cache (`keras_kd.data.cache_teacher_outputs`) is refused when the
student trains on augmented images, because the teacher must see the image
the student sees. A view cache keeps that promise: it draws K random
augmentations ("views") of every image once, stores their parameters, runs
the teacher on each view, and at training time shows the student exactly one
of those views, re-created pixel for pixel from the stored parameters, next
to the teacher's logits for that very view. Every epoch shows each image
through another view.

- `ViewAugmentation`: the base of an augmentation whose random parameters
  can be drawn, stored and re-applied exactly.
- `RandomCropFlip`: the standard CIFAR augmentation (pad, random crop,
  random horizontal flip).
- `cache_teacher_views` / `TeacherViewCache`: the cache, in memory or in a
  checksummed folder, with its `dataset(x, y)` for `fit`.
"""

import os

import keras
import numpy as np

from keras_kd.data import _forward
from keras_kd.data import _store
from keras_kd.distiller import LABELS_KEY
from keras_kd.distiller import TEACHER_LOGITS_KEY
from keras_kd.utils import io
from keras_kd.utils import validation

# The metadata file that marks a view-cache folder written by keras_kd.
METADATA = "keras_kd_views.json"
FORMAT = "teacher_view_cache"
VERSION = 1
_LOGITS = "teacher_logits.npy"
_PARAMS = "view_params.npy"
_REBUILD = ("Rebuild it with `keras_kd.data.views.cache_teacher_views(..., "
            "path=...)`.")


class ViewAugmentation:
    """Base of an augmentation with stored, exactly re-applicable randomness.

    A subclass draws `num_params` integers per image (`sample`) and maps an
    image batch and those integers to the augmented batch, identically in
    NumPy (`apply_numpy`, used when the teacher's outputs are cached) and in
    TensorFlow (`apply`, used in `tf.data` pipelines). Calling the object
    draws fresh parameters and applies them (live augmentation).

    Subclasses implement `sample`, `apply_numpy`, `apply` and `get_config`.
    """

    num_params = 0

    def sample(self, num_images, image_shape, rng):
        """Returns int32 parameters of shape `(num_images, num_params)`."""
        raise NotImplementedError

    def apply_numpy(self, images, params):
        """Augments a NumPy batch `(batch, height, width, channels)`."""
        raise NotImplementedError

    def apply(self, images, params):
        """Augments a TensorFlow batch, equal pixel for pixel to NumPy."""
        raise NotImplementedError

    def __call__(self, images, seed=None):
        """Live augmentation: new random parameters for a TensorFlow batch."""
        raise NotImplementedError

    def check_image_shape(self, image_shape):
        """Raises if the augmentation cannot work on images of this shape
        `(height, width, channels)`; called before the teacher runs."""

    def get_config(self):
        return {}

    @classmethod
    def from_config(cls, config):
        return cls(**config)


@keras.saving.register_keras_serializable(package="keras_kd")
class RandomCropFlip(ViewAugmentation):
    """Pads by `padding`, crops back to the input size, flips at random.

    The standard CIFAR augmentation (He et al., 2016). Parameters per image:
    `(dy, dx, flip)`, the crop's top-left corner in the padded image
    (`0 <= dy, dx <= 2 * padding`) and whether to mirror left-right.

    Args:
        padding: Non-negative integer, pixels added on every side.
            Defaults to `4`.
        mode: `"constant"` (zeros) or `"reflect"`. Defaults to
            `"constant"`.
        flip: Boolean, draw random horizontal flips. Defaults to `True`.

    Example:

    ```python
    augmentation = RandomCropFlip(padding=4)
    params = augmentation.sample(len(x), x.shape[1:], np.random.default_rng(0))
    views = augmentation.apply_numpy(x, params)
    ```
    """

    num_params = 3

    def __init__(self, padding=4, mode="constant", flip=True):
        if isinstance(padding, bool) or not isinstance(
                padding, (int, np.integer)) or padding < 0:
            raise ValueError(
                "Argument `padding` must be a non-negative integer. "
                f"Received: padding={padding!r}"
            )
        if mode not in ("constant", "reflect"):
            raise ValueError(
                "Argument `mode` must be one of {'constant', 'reflect'}. "
                f"Received: mode={mode!r}"
            )
        self.padding = int(padding)
        self.mode = mode
        self.flip = validation.check_bool("flip", flip)

    def check_image_shape(self, image_shape):
        """Refuses a `padding` that leaves views made mostly of padding.

        A crop of an image padded by `padding` on every side may start
        anywhere in the first `2 * padding + 1` rows and columns; from
        `padding >= min(height, width)` on, some views hold no pixel of the
        image at all.
        """
        shape = tuple(image_shape)
        if len(shape) != 3:
            raise ValueError(
                "RandomCropFlip expects images of shape (height, width, "
                f"channels). Received: image shape={shape}"
            )
        height, width = shape[0], shape[1]
        if height is None or width is None:
            return
        side = min(int(height), int(width))
        if self.padding >= side:
            raise ValueError(
                "Argument `padding` must be smaller than the images' height "
                f"and width ({height}x{width}): with padding={self.padding} "
                "some crops hold no pixel of the image, only padding. "
                f"Received: padding={self.padding}, image size "
                f"{height}x{width}. Use a padding of about a tenth of the "
                f"image size (e.g. padding={max(1, side // 8)})."
            )

    def sample(self, num_images, image_shape, rng):
        span = 2 * self.padding + 1
        params = np.zeros((num_images, 3), "int32")
        params[:, 0] = rng.integers(0, span, num_images)
        params[:, 1] = rng.integers(0, span, num_images)
        if self.flip:
            params[:, 2] = rng.integers(0, 2, num_images)
        return params

    def _check(self, shape):
        if len(shape) != 4:
            raise ValueError(
                "RandomCropFlip expects image batches of shape (batch, "
                f"height, width, channels). Received: shape={tuple(shape)}"
            )
        self.check_image_shape(tuple(shape)[1:])
        if self.mode == "reflect" and min(shape[1], shape[2]) <= \
                self.padding:
            raise ValueError(
                "`mode='reflect'` needs images larger than `padding`. "
                f"Received: padding={self.padding}, shape={tuple(shape)}"
            )

    def apply_numpy(self, images, params):
        images = np.asarray(images)
        self._check(images.shape)
        params = np.asarray(params)
        p = self.padding
        h, w = images.shape[1:3]
        padded = np.pad(images, ((0, 0), (p, p), (p, p), (0, 0)),
                        mode=self.mode)
        rows = params[:, :1] + np.arange(h)
        cols = params[:, 1:2] + np.arange(w)
        cols = np.where(params[:, 2:3] > 0, cols[:, ::-1], cols)
        batch = np.arange(len(images))[:, None, None]
        return padded[batch, rows[:, :, None], cols[:, None, :]]

    def apply(self, images, params):
        import tensorflow as tf

        self._check(images.shape)
        p = self.padding
        h, w = images.shape[1], images.shape[2]
        params = tf.cast(params, "int32")
        padded = tf.pad(images, [[0, 0], [p, p], [p, p], [0, 0]],
                        mode=self.mode.upper())
        rows = params[:, :1] + tf.range(h)
        cols = params[:, 1:2] + tf.range(w)
        cols = tf.where(params[:, 2:3] > 0, tf.reverse(cols, [1]), cols)
        out = tf.gather(padded, rows, axis=1, batch_dims=1)
        return tf.gather(out, cols, axis=2, batch_dims=1)

    def __call__(self, images, seed=None):
        import tensorflow as tf

        n = tf.shape(images)[0]
        span = 2 * self.padding + 1
        shifts = tf.random.uniform((n, 2), 0, span, "int32", seed=seed)
        flips = tf.random.uniform((n, 1), 0, 2 if self.flip else 1, "int32",
                                  seed=seed)
        return self.apply(images, tf.concat([shifts, flips], 1))

    def get_config(self):
        return {"padding": self.padding, "mode": self.mode,
                "flip": self.flip}

    def __repr__(self):
        return (f"RandomCropFlip(padding={self.padding}, mode={self.mode!r}, "
                f"flip={self.flip})")


def _view_offsets(seed, num_samples, num_views):
    """Each image's first view; epoch `e` shows view `(offset + e) % K`."""
    rng = np.random.default_rng([int(seed), 1])
    return rng.integers(0, num_views, num_samples).astype("int32")


class TeacherViewCache(_store.CacheBase):
    """The teacher's logits on K stored augmentations of every image.

    Build it with `cache_teacher_views`; load a folder with
    `TeacherViewCache.load(path)`.

    Attributes:
        logits: Float32 array `(num_samples, num_views, num_classes)`.
        params: Int32 array `(num_samples, num_views, num_params)`, the
            augmentation parameters of every view.
        augmentation: The `ViewAugmentation` that makes a view from them.
        fingerprint: String, the SHA-256 of all the inputs' bytes.
        seed: Integer, the seed of the parameters and of the view order.
        path: The cache folder, or `None` in memory.
    """

    _NAME = "TeacherViewCache"

    def __init__(self, logits, params, augmentation, fingerprint=None,
                 seed=0, path=None):
        if logits.ndim != 3 or params.ndim != 3 or \
                logits.shape[:2] != params.shape[:2]:
            raise validation.cache_mismatch_error(
                "the logits and the view parameters disagree in shape "
                "(expected (num_samples, num_views, ...) for both)",
                tuple(logits.shape), tuple(params.shape))
        self.logits = logits
        self.params = params
        self.augmentation = augmentation
        self.fingerprint = fingerprint
        self.seed = int(seed)
        self.path = path
        self.num_samples, self.num_views, self.num_classes = (
            int(s) for s in logits.shape)

    def _repr_fields(self):
        return [f"num_samples={self.num_samples}",
                f"num_views={self.num_views}",
                f"num_classes={self.num_classes}",
                f"augmentation={self.augmentation!r}"]

    def view_index(self, epoch):
        """The view each image shows in `epoch`: int array `(num_samples,)`.

        Over any `num_views` consecutive epochs every view of every image
        is shown exactly once.
        """
        offsets = _view_offsets(self.seed, self.num_samples, self.num_views)
        return (offsets + int(epoch)) % self.num_views

    def views(self, x, indices, view_ids):
        """Re-creates the views `view_ids` of the images `x[indices]`."""
        indices = np.asarray(indices)
        return self.augmentation.apply_numpy(
            np.asarray(x)[indices], self.params[indices, view_ids])

    def take(self, num_views):
        """The same cache restricted to its first `num_views` views.

        The parameters of view `j` do not depend on how many views were
        drawn, so `cache_teacher_views(..., views=16).take(4)` equals
        `cache_teacher_views(..., views=4)` with the same seed.
        """
        if not 1 <= num_views <= self.num_views:
            raise ValueError(
                f"Argument `num_views` must be between 1 and "
                f"{self.num_views}. Received: num_views={num_views!r}")
        return TeacherViewCache(
            np.asarray(self.logits[:, :num_views]),
            np.asarray(self.params[:, :num_views]), self.augmentation,
            self.fingerprint, self.seed)

    def check(self, x=None, distiller=None):
        """Checks this cache against the inputs `x` and the `distiller`.

        Raises:
            ValueError: on other inputs (another fingerprint or length),
                another number of classes, a Distiller that matches
                features or has its own `augmentation`.
        """
        if x is not None:
            if len(x) != self.num_samples:
                raise validation.cache_mismatch_error(
                    "the number of samples", self.num_samples, len(x))
            _store.check_fingerprint(self, x, "view cache")
        if distiller is not None:
            if distiller.num_classes != self.num_classes:
                raise validation.cache_mismatch_error(
                    "the number of classes", distiller.num_classes,
                    self.num_classes)
            if list(distiller._cache_keys()) != ["logits"]:
                raise validation.cache_mismatch_error(
                    "a view cache holds one teacher's logits only, and this "
                    "Distiller also reads matched layers or other teachers",
                    ["logits"], list(distiller._cache_keys()))
            if distiller.augmentation is not None:
                raise ValueError(
                    "A view cache already augments the images (each batch "
                    "is the view the teacher saw), but the Distiller has its "
                    "own `augmentation`, which would change them again. "
                    "Build the Distiller without `augmentation=`.")
        return self

    def dataset(self, x, y=None, batch_size=32, shuffle=True, seed=None,
                distiller=None):
        """A batched `tf.data.Dataset` of `(view, targets)` for `fit`.

        Each pass over the dataset (each epoch of `fit`) shows every image
        once, through view `(offset_i + epoch) % num_views`, made from the
        stored parameters, with the teacher's logits for that view. Epochs
        are counted per dataset object, from 0.

        Args:
            x: The inputs the cache was computed on (an array), checked
                against the fingerprint.
            y: Optional labels.
            batch_size: Integer. Defaults to `32`.
            shuffle: Boolean, a new order every epoch. Defaults to `True`.
            seed: Optional shuffle seed (the order of epoch `e` depends on
                `(seed, e)` only).
            distiller: Optional Distiller to check the cache against.

        Returns:
            A `tf.data.Dataset` of `(x_view, {"teacher_logits", "labels"})`.

        Example:

        ```python
        cache = cache_teacher_views(teacher, x, views=4, seed=0)
        distiller = keras_kd.Distiller(teacher, student)
        distiller.compile(optimizer="adam")
        distiller.fit(cache.dataset(x, y, batch_size=128), epochs=8)
        ```
        """
        import tensorflow as tf

        self.check(x, distiller)
        x = np.asarray(x)
        if y is not None:
            y = np.asarray(y)
            if len(y) != self.num_samples:
                raise validation.cache_mismatch_error(
                    "the number of labels", self.num_samples, len(y))
        n = self.num_samples
        shuffle_seed = 0 if seed is None else int(seed)
        epoch = [0]

        def plan():
            e = epoch[0]
            epoch[0] += 1
            order = np.arange(n)
            if shuffle:
                rng = np.random.default_rng([shuffle_seed, e, 2])
                order = rng.permutation(n)
            yield order.astype("int64"), self.view_index(e)[order].astype(
                "int64")

        spec = tf.TensorSpec((n,), tf.int64)
        ds = tf.data.Dataset.from_generator(plan, output_signature=(spec,
                                                                    spec))
        ds = ds.flat_map(lambda i, v: tf.data.Dataset.from_tensor_slices(
            (i, v))).batch(batch_size)
        # The generator hides the length, which `fit` needs for its epochs.
        ds = ds.apply(tf.data.experimental.assert_cardinality(
            -(-n // batch_size)))
        images = tf.constant(x)
        logits = tf.constant(np.asarray(self.logits, "float32"))
        params = tf.constant(np.asarray(self.params, "int32"))
        labels = None if y is None else tf.constant(y)
        augmentation = self.augmentation

        def make(i, v):
            where = tf.stack([i, v], axis=1)
            view = augmentation.apply(tf.gather(images, i),
                                      tf.gather_nd(params, where))
            targets = {TEACHER_LOGITS_KEY: tf.gather_nd(logits, where)}
            if labels is not None:
                targets[LABELS_KEY] = tf.gather(labels, i)
            return view, targets

        return ds.map(make, num_parallel_calls=tf.data.AUTOTUNE,
                      deterministic=True).prefetch(tf.data.AUTOTUNE)

    def save(self, path):
        """Writes the cache to the folder `path`, atomically.

        An existing `path` is replaced only if it is empty or a view-cache
        folder keras_kd wrote (it holds `keras_kd_views.json`).

        Returns:
            The cache loaded from `path` (memory-mapped).
        """
        arrays = {_LOGITS: np.asarray(self.logits),
                  _PARAMS: np.asarray(self.params)}

        def write(folder, records):
            _store.write_metadata(
                folder, METADATA, FORMAT, VERSION,
                {"num_samples": self.num_samples,
                 "num_views": self.num_views,
                 "num_classes": self.num_classes, "seed": self.seed,
                 "fingerprint": self.fingerprint,
                 "augmentation": keras.saving.serialize_keras_object(
                     self.augmentation)}, records)

        return _store.save_folder(self, path, arrays, write,
                                  TeacherViewCache.load, METADATA,
                                  "view-cache folder")

    @classmethod
    def load(cls, path, verify=True):
        """Opens a view-cache folder written by `save`.

        Args:
            path: The folder.
            verify: Boolean, compare each array with its recorded checksum.
                Defaults to `True`.

        Raises:
            FileNotFoundError: If `path` holds no keras_kd view cache.
            ValueError: If a file is damaged, truncated or was modified.
        """
        path = os.fspath(path)

        def missing():
            return FileNotFoundError(
                f"No teacher view cache at {path!r}: {METADATA} is missing. "
                f"{_REBUILD}")

        meta = _store.read_metadata(path, METADATA, FORMAT, (), _damaged,
                                    missing)
        files = meta.get("files") or {}
        for name in (_LOGITS, _PARAMS):
            if name not in files:
                raise _damaged(path, METADATA, f"it lists no {name}")
        logits = _store.open_array(path, _LOGITS, files[_LOGITS], verify)
        params = _store.open_array(path, _PARAMS, files[_PARAMS], verify)
        if logits.shape[0] != meta.get("num_samples"):
            raise _damaged(path, _LOGITS,
                           f"it holds {logits.shape[0]} rows, the metadata "
                           f"{meta.get('num_samples')}")
        augmentation = keras.saving.deserialize_keras_object(
            meta["augmentation"])
        return cls(logits, params, augmentation, meta.get("fingerprint"),
                   meta.get("seed", 0), path=path)


def _damaged(folder, file, what):
    return ValueError(
        f"The teacher view-cache file {os.path.join(folder, file)!r} is "
        f"damaged: {what}. {_REBUILD}")


def cache_teacher_views(teacher, x, views=4, augmentation=None, seed=0,
                        batch_size=256, path=None, verbose=0):
    """Runs the teacher on `views` stored random augmentations of `x`.

    View `j` of image `i` has parameters drawn from a generator seeded with
    `(seed, j)`, so the first views do not depend on `views`. The inputs are
    fingerprinted (SHA-256 of all bytes) so that `dataset(x)` refuses other
    inputs.

    Args:
        teacher: A teacher `keras.Model` returning logits, or a
            `keras_kd.Distiller` with one teacher and no matched layers (its
            teacher preprocessing is applied).
        x: Array of images `(num_samples, height, width, channels)`, in a
            fixed order (a memory map works).
        views: Positive integer K, views per image. Defaults to `4`.
        augmentation: A `ViewAugmentation`. Defaults to `RandomCropFlip()`.
        seed: Integer seed of the parameters and the view order.
            Defaults to `0`.
        batch_size: Integer, images per teacher batch. Defaults to `256`.
        path: Optional folder to write the cache to (atomically; an existing
            folder is replaced only if it is empty or a view cache).
        verbose: 0 or 1 (a progress bar). Defaults to `0`.

    Returns:
        A `TeacherViewCache`: logits `(N, K, classes)` float32, parameters
        `(N, K, num_params)` int32.
    """
    if isinstance(views, bool) or not isinstance(views, (int, np.integer)) \
            or views < 1:
        raise ValueError("Argument `views` must be a positive integer. "
                         f"Received: views={views!r}")
    seed = validation.check_non_negative_integer("seed", seed)
    batch_size = validation.check_positive_integer("batch_size", batch_size)
    augmentation = RandomCropFlip() if augmentation is None else augmentation
    if not isinstance(augmentation, ViewAugmentation):
        raise TypeError(
            "Argument `augmentation` must be a "
            "keras_kd.data.views.ViewAugmentation (e.g. RandomCropFlip()), "
            "whose random parameters can be stored and re-applied. Received: "
            f"augmentation={augmentation!r}")
    if not (hasattr(x, "shape") and hasattr(x, "__len__")):
        raise TypeError(
            "Argument `x` must be an array of images (the views are re-made "
            "from it every epoch). Received: x of type "
            f"{type(x).__name__}")
    if len(x) == 0:
        raise ValueError("Argument `x` holds no samples to cache. "
                         "Received: x with 0 samples")
    if path is not None:
        path = io.check_replaceable_folder("path", path, METADATA,
                                           "view-cache folder")
    forward, names = _forward.teacher_forward(teacher)
    if list(names) != ["logits"]:
        raise ValueError(
            "A view cache holds one teacher's logits only. Received: a "
            f"Distiller whose cache would need {list(names)}. Pass the "
            "teacher model, or a Distiller without `features=` and with one "
            "teacher.")
    augmentation.check_image_shape(x.shape[1:])
    n = len(x)
    params = np.stack([
        augmentation.sample(n, x.shape[1:], np.random.default_rng(
            [int(seed), 0, j])) for j in range(views)], axis=1)
    logits = None
    inputs = _store.Fingerprint()
    progbar = keras.utils.Progbar(n * views, verbose=verbose,
                                  unit_name="view")
    for start in range(0, n, batch_size):
        batch = np.asarray(x[start:start + batch_size])
        inputs.update(batch)
        for j in range(views):
            out = forward(augmentation.apply_numpy(
                batch, params[start:start + len(batch), j]))[0]
            if logits is None:
                logits = np.zeros((n, views, out.shape[-1]), "float32")
            logits[start:start + len(batch), j] = out
        progbar.update(min(start + batch_size, n) * views)
    cache = TeacherViewCache(logits, params, augmentation,
                             inputs.hexdigest(), seed)
    return cache.save(path) if path is not None else cache
