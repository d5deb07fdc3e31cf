"""Tests of keras_kd/data/views.py."""

import json
import os

import keras
import numpy as np
import tensorflow as tf

import keras_kd
from keras_kd.data.views import RandomCropFlip
from keras_kd.data.views import TeacherViewCache
from keras_kd.data.views import cache_teacher_views
from tests.test_case import TestCase


def make_images(n=24, size=6, channels=3, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 256, (n, size, size, channels)).astype("uint8")
    return x, rng.integers(0, 5, n).astype("int32")


def pixel_teacher(size=6, channels=3):
    """A "teacher" whose logits are exactly the pixels it was shown."""
    inputs = keras.Input((size, size, channels))
    return keras.Model(inputs, keras.layers.Flatten()(inputs))


def conv_model(classes=5, size=6, width=4, seed=0):
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((size, size, 3))
    x = keras.layers.Rescaling(1 / 255.0)(inputs)
    x = keras.layers.Conv2D(width, 3, activation="relu")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(classes)(x))


def epoch_batches(ds):
    xs, logits = [], []
    for x, targets in ds:
        xs.append(x.numpy())
        logits.append(targets["teacher_logits"].numpy())
    return np.concatenate(xs), np.concatenate(logits)


class RandomCropFlipTest(TestCase):
    def test_config(self):
        aug = RandomCropFlip(padding=2, mode="reflect", flip=False)
        config = keras.saving.serialize_keras_object(aug)
        restored = keras.saving.deserialize_keras_object(
            json.loads(json.dumps(config)))
        self.assertIsInstance(restored, RandomCropFlip)
        self.assertEqual(restored.get_config(), aug.get_config())

    def test_hand_computed_views(self):
        x, _ = make_images(2, size=4)
        aug = RandomCropFlip(padding=1)
        # Centre crop, no flip: the image itself.
        self.assertAllEqual(aug.apply_numpy(x, [[1, 1, 0]] * 2), x)
        # Centre crop, flipped: mirrored columns.
        self.assertAllEqual(aug.apply_numpy(x, [[1, 1, 1]] * 2),
                            x[:, :, ::-1])
        # Top-left corner: a zero row and column, then the image shifted.
        view = aug.apply_numpy(x, [[0, 0, 0]] * 2)
        self.assertAllEqual(view[:, 0], 0)
        self.assertAllEqual(view[:, :, 0], 0)
        self.assertAllEqual(view[:, 1:, 1:], x[:, :3, :3])
        reflect = RandomCropFlip(padding=1, mode="reflect")
        view = reflect.apply_numpy(x, [[0, 1, 0]] * 2)
        self.assertAllEqual(view[:, 0], x[:, 1])

    def test_numpy_and_tensorflow_are_pixel_exact(self):
        x, _ = make_images(64, size=8)
        for mode in ("constant", "reflect"):
            aug = RandomCropFlip(padding=3, mode=mode)
            params = aug.sample(64, x.shape[1:], np.random.default_rng(1))
            self.assertAllEqual(aug.apply(tf.constant(x), params).numpy(),
                                aug.apply_numpy(x, params))

    def test_live_call_keeps_shape_and_pixels(self):
        x, _ = make_images(8, size=8)
        out = RandomCropFlip(padding=2)(tf.constant(x)).numpy()
        self.assertEqual(out.shape, x.shape)
        self.assertTrue(set(np.unique(out)) <= set(np.unique(x)) | {0})

    def test_rejects_bad_arguments(self):
        with self.assertRaisesRegex(ValueError, "Received: padding=-1"):
            RandomCropFlip(padding=-1)
        with self.assertRaisesRegex(ValueError, "Received: mode='wrap'"):
            RandomCropFlip(mode="wrap")
        with self.assertRaisesRegex(TypeError, "Received: flip='no'"):
            RandomCropFlip(flip="no")

    def test_refuses_padding_as_large_as_the_image(self):
        x, _ = make_images(4, size=6)
        wide = np.zeros((4, 8, 5, 3), "uint8")
        for padding, images in ((6, x), (9, x), (5, wide)):
            aug = RandomCropFlip(padding=padding)
            size = f"{images.shape[1]}x{images.shape[2]}"
            message = f"Received: padding={padding}, image size {size}"
            with self.assertRaisesRegex(ValueError, message):
                aug.apply_numpy(images, aug.sample(
                    4, images.shape[1:], np.random.default_rng(0)))
            with self.assertRaisesRegex(ValueError, message):
                aug(tf.constant(images))  # The live, TensorFlow path.
            with self.assertRaisesRegex(ValueError, message):
                # Before the teacher runs (the pixel teacher would fail on
                # the wide images anyway).
                cache_teacher_views(pixel_teacher(), images, views=1,
                                    augmentation=aug)
        # One pixel less than the smaller side is still a legal view.
        aug = RandomCropFlip(padding=4)
        self.assertEqual(aug.apply_numpy(wide, [[0, 0, 1]] * 4).shape,
                         wide.shape)


class TeacherViewCacheTest(TestCase):
    def setUp(self):
        super().setUp()
        self.x, self.y = make_images()

    def test_shapes_and_types(self):
        cache = cache_teacher_views(conv_model(), self.x, views=3, seed=0,
                                    batch_size=10)
        self.assertEqual(cache.logits.shape, (24, 3, 5))
        self.assertEqual(cache.logits.dtype, np.float32)
        self.assertEqual(cache.params.shape, (24, 3, 3))
        self.assertEqual(cache.params.dtype.kind, "i")

    def test_dataset_shows_the_view_the_teacher_saw(self):
        # The pixel teacher's logits are the pixels it saw: each batch's
        # image must equal, pixel for pixel, the logits it is paired with.
        cache = cache_teacher_views(pixel_teacher(), self.x, views=4,
                                    augmentation=RandomCropFlip(padding=2),
                                    seed=3, batch_size=7)
        ds = cache.dataset(self.x, self.y, batch_size=5, seed=1)
        for _ in range(2):
            x, logits = epoch_batches(ds)
            self.assertAllEqual(x.reshape(len(x), -1).astype("float32"),
                                logits)
        # And the views differ from the plain images.
        self.assertFalse(np.array_equal(
            cache.logits[:, 0], self.x.reshape(24, -1).astype("float32")))

    def test_cached_logits_equal_the_teacher_on_each_view(self):
        teacher = conv_model()
        cache = cache_teacher_views(teacher, self.x, views=3, seed=0,
                                    batch_size=10)
        for j in range(3):
            view = cache.views(self.x, np.arange(24), j)
            self.assertAllClose(cache.logits[:, j],
                                teacher.predict(view, verbose=0), atol=1e-5)

    def test_each_epoch_another_view_and_all_views_in_k_epochs(self):
        k = 4
        cache = cache_teacher_views(pixel_teacher(), self.x, views=k,
                                    seed=0)
        ds = cache.dataset(self.x, batch_size=8, shuffle=False)
        seen = []
        for epoch in range(k):
            _, logits = epoch_batches(ds)
            ids = cache.view_index(epoch)
            self.assertAllEqual(logits, cache.logits[np.arange(24), ids])
            seen.append(ids)
        seen = np.stack(seen, axis=1)
        # Consecutive epochs differ for every image, and K epochs show all.
        self.assertTrue(np.all(seen[:, 1:] != seen[:, :-1]))
        self.assertAllEqual(np.sort(seen, axis=1),
                            np.tile(np.arange(k), (24, 1)))

    def test_shuffle_changes_order_per_epoch(self):
        cache = cache_teacher_views(pixel_teacher(), self.x, views=2,
                                    seed=0)
        ds = cache.dataset(self.x, batch_size=24, seed=0)
        first, _ = epoch_batches(ds)
        second, _ = epoch_batches(ds)
        self.assertFalse(np.array_equal(first, second))

    def test_take_equals_fewer_views(self):
        teacher = conv_model()
        big = cache_teacher_views(teacher, self.x, views=4, seed=5)
        small = cache_teacher_views(teacher, self.x, views=2, seed=5)
        self.assertAllEqual(big.take(2).params, small.params)
        self.assertAllClose(big.take(2).logits, small.logits, atol=1e-6)

    def test_fingerprint_mismatch(self):
        cache = cache_teacher_views(pixel_teacher(), self.x, views=2)
        other = self.x.copy()
        other[3, 0, 0, 0] ^= 1
        with self.assertRaisesRegex(ValueError, "fingerprint"):
            cache.dataset(other, self.y)
        with self.assertRaisesRegex(ValueError, "number of samples"):
            cache.dataset(self.x[:10])

    def test_save_load_round_trip(self):
        path = os.path.join(self.get_temp_dir(), "views")
        teacher = conv_model()
        cache = cache_teacher_views(teacher, self.x, views=3, seed=2,
                                    augmentation=RandomCropFlip(
                                        padding=1, mode="reflect"),
                                    path=path)
        self.assertTrue(os.path.isfile(os.path.join(path,
                                                    "keras_kd_views.json")))
        loaded = TeacherViewCache.load(path)
        self.assertAllEqual(loaded.logits, cache.logits)
        self.assertAllEqual(loaded.params, cache.params)
        self.assertEqual(loaded.augmentation.get_config(),
                         {"padding": 1, "mode": "reflect", "flip": True})
        self.assertEqual(loaded.fingerprint, cache.fingerprint)
        a, la = epoch_batches(loaded.dataset(self.x, batch_size=8, seed=0))
        fresh = cache_teacher_views(teacher, self.x, views=3, seed=2,
                                    augmentation=RandomCropFlip(
                                        padding=1, mode="reflect"))
        b, lb = epoch_batches(fresh.dataset(self.x, batch_size=8, seed=0))
        self.assertAllEqual(a, b)
        self.assertAllClose(la, lb, atol=1e-6)
        # Its own folder is replaced; a folder of other files is refused.
        cache_teacher_views(teacher, self.x, views=1, path=path)
        self.assertEqual(TeacherViewCache.load(path).num_views, 1)
        foreign = os.path.join(self.get_temp_dir(), "mine")
        os.makedirs(foreign)
        open(os.path.join(foreign, "notes.txt"), "w").close()
        with self.assertRaisesRegex(ValueError, "keras_kd did not write"):
            cache_teacher_views(teacher, self.x, views=1, path=foreign)
        self.assertEqual(os.listdir(foreign), ["notes.txt"])

    def test_modified_file_is_an_error(self):
        path = os.path.join(self.get_temp_dir(), "views")
        cache_teacher_views(conv_model(), self.x, views=2, path=path)
        logits = np.load(os.path.join(path, "teacher_logits.npy"),
                         mmap_mode="r+")
        logits[0, 0, 0] += 1.0
        logits.flush()
        del logits
        with self.assertRaisesRegex(ValueError, "modified"):
            TeacherViewCache.load(path)
        with self.assertRaisesRegex(FileNotFoundError, "keras_kd_views"):
            TeacherViewCache.load(self.get_temp_dir())

    def test_distiller_fits_on_views(self):
        teacher, student = conv_model(seed=0), conv_model(seed=1)
        cache = cache_teacher_views(teacher, self.x, views=2)
        d = keras_kd.Distiller(teacher, student, alpha=0.5)
        d.compile(optimizer="adam")
        before = [w.numpy().copy() for w in student.trainable_weights]
        history = d.fit(cache.dataset(self.x, self.y, batch_size=8,
                                      distiller=d), epochs=2, verbose=0)
        self.assertIn("soft_loss", history.history)
        self.assertTrue(np.all(np.isfinite(history.history["loss"])))
        self.assertFalse(all(np.array_equal(a, w.numpy()) for a, w in
                             zip(before, student.trainable_weights)))

    def test_distiller_with_augmentation_is_refused(self):
        teacher, student = conv_model(seed=0), conv_model(seed=1)
        cache = cache_teacher_views(teacher, self.x, views=2)
        d = keras_kd.Distiller(teacher, student,
                               augmentation=keras.layers.RandomFlip())
        with self.assertRaisesRegex(ValueError, "without `augmentation=`"):
            cache.dataset(self.x, self.y, distiller=d)

    def test_rejects_bad_arguments(self):
        with self.assertRaisesRegex(ValueError, "Received: views=0"):
            cache_teacher_views(pixel_teacher(), self.x, views=0)
        with self.assertRaisesRegex(TypeError, "Received: seed=1.5"):
            cache_teacher_views(pixel_teacher(), self.x, seed=1.5)
        with self.assertRaisesRegex(ValueError, "Received: batch_size=0"):
            cache_teacher_views(pixel_teacher(), self.x, batch_size=0)
        with self.assertRaisesRegex(TypeError, "ViewAugmentation"):
            cache_teacher_views(pixel_teacher(), self.x,
                                augmentation=keras.layers.RandomFlip())
