"""Tests of keras_kd/terms/dkd.py against NumPy references."""

import os

import keras
import numpy as np
from absl.testing import parameterized

import keras_kd
from keras_kd.terms.dkd import DKD
from keras_kd.terms.dkd import dkd
from tests.conftest import make_data
from tests.conftest import make_dense_pair
from tests.test_case import TestCase


def reference_softmax(x):
    x = x - x.max(-1, keepdims=True)
    e = np.exp(x)
    return e / e.sum(-1, keepdims=True)


def reference_dkd(
    teacher, student, targets, temperature, tckd_weight=1.0, nckd_weight=8.0
):
    """The paper's formula (Zhao et al., 2022, eq. 1-4) in float64, loops.

    b = [p_target, p_rest] with p_rest the sum of the non-target
    probabilities; p_hat the softmax over the non-target classes.
    """
    teacher = np.asarray(teacher, "float64") / temperature
    student = np.asarray(student, "float64") / temperature
    out = np.zeros(len(teacher))
    for i, target in enumerate(targets):
        p_t, p_s = reference_softmax(teacher[i]), reference_softmax(student[i])
        rest = np.arange(len(p_t)) != target
        b_t = np.array([p_t[target], p_t[rest].sum()])
        b_s = np.array([p_s[target], p_s[rest].sum()])
        tckd = np.sum(b_t * (np.log(b_t) - np.log(b_s)))
        hat_t = reference_softmax(teacher[i][rest])
        hat_s = reference_softmax(student[i][rest])
        nckd = np.sum(hat_t * (np.log(hat_t) - np.log(hat_s)))
        out[i] = temperature**2 * (tckd_weight * tckd + nckd_weight * nckd)
    return out


def mdistiller_dkd(
    teacher,
    student,
    targets,
    temperature,
    tckd_weight=1.0,
    nckd_weight=8.0,
    dtype="float64",
):
    """mdistiller's `dkd_loss` (distillers/DKD.py) in NumPy, one value per
    sample (its `F.kl_div(..., size_average=False) / batch` is their mean).
    """
    teacher = np.asarray(teacher, dtype)
    student = np.asarray(student, dtype)
    gt_mask = np.eye(teacher.shape[1], dtype=dtype)[np.asarray(targets)]
    other_mask = 1 - gt_mask

    def cat_mask(p):
        return np.stack([(p * gt_mask).sum(1), (p * other_mask).sum(1)], 1)

    def kl_div(log_input, target):  # torch's kl_div: xlogy(t, t) - t * in
        with np.errstate(divide="ignore", invalid="ignore"):
            safe = np.where(target > 0, target, 1)
            return np.where(
                target > 0, target * (np.log(safe) - log_input), 0
            ).sum(1)

    def softmax(x):
        x = x - x.max(1, keepdims=True)
        e = np.exp(x)
        return e / e.sum(1, keepdims=True)

    def log_softmax(x):
        x = x - x.max(1, keepdims=True)
        return x - np.log(np.exp(x).sum(1, keepdims=True))

    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        pred_s = cat_mask(softmax(student / temperature))
        pred_t = cat_mask(softmax(teacher / temperature))
        tckd = kl_div(np.log(pred_s), pred_t) * temperature**2
        pred_t2 = softmax(teacher / temperature - 1000.0 * gt_mask)
        log_pred_s2 = log_softmax(student / temperature - 1000.0 * gt_mask)
        nckd = kl_div(log_pred_s2, pred_t2) * temperature**2
    return tckd_weight * tckd + nckd_weight * nckd


def reference_kl(teacher, student, temperature):
    p_t = reference_softmax(np.asarray(teacher, "float64") / temperature)
    p_s = reference_softmax(np.asarray(student, "float64") / temperature)
    return (p_t * (np.log(p_t) - np.log(p_s))).sum(-1)


def random(*shape, scale=1.0, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(scale=scale, size=shape).astype("float32")


def backend_gradient(fn, x):
    """d sum(fn(x)) / dx on the current backend."""
    x = np.asarray(x, "float32")
    backend = keras.backend.backend()
    if backend == "torch":
        import torch

        v = torch.tensor(x, requires_grad=True)
        keras.ops.sum(fn(v)).backward()
        return v.grad.numpy()
    if backend == "jax":
        import jax

        grad = jax.jit(jax.grad(lambda v: keras.ops.sum(fn(v))))
        return np.asarray(grad(x))
    import tensorflow as tf

    v = tf.constant(x)
    with tf.GradientTape() as tape:
        tape.watch(v)
        value = keras.ops.sum(fn(v))
    return tape.gradient(value, v).numpy()


def compiled(fn, example):
    """`fn` under XLA (TF, with an unknown batch size) or jit (JAX)."""
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        spec = tf.TensorSpec((None,) + example.shape[1:], "float32")
        return tf.function(fn, input_signature=[spec, spec], jit_compile=True)
    if backend == "jax":
        import jax

        return jax.jit(fn)
    return None


class DKDFunctionTest(TestCase):
    @parameterized.named_parameters(
        # Softer distributions lie closer together: the float32 cancellation
        # in their KL grows with the temperature (measured: 3e-5 at T=10).
        ("t1", 1.0, 1e-5),
        ("t2", 2.0, 1e-5),
        ("t4", 4.0, 1e-5),
        ("t10", 10.0, 1e-4),
    )
    def test_matches_the_paper_formula(self, temperature, rtol):
        teacher, student = random(2, 8, 10, scale=3.0, seed=1)
        labels = np.random.default_rng(2).integers(0, 10, size=8)
        values = dkd(teacher, student, labels, temperature, 1.0, 8.0)
        self.assertEqual(tuple(values.shape), (8,))
        self.assertEqual(
            keras.backend.standardize_dtype(values.dtype), "float32"
        )
        expected = reference_dkd(teacher, student, labels, temperature)
        self.assertGreater(expected.min(), 1e-3)  # a test that can fail
        self.assertAllClose(values, expected, rtol=rtol, atol=1e-6)

    @parameterized.named_parameters(
        ("t1", 1.0, 1.0, 8.0),
        ("t4", 4.0, 1.0, 8.0),
        ("t1_imagenet", 1.0, 1.0, 0.5),
        ("t2_tckd_only", 2.0, 2.0, 0.0),
    )
    def test_agrees_with_mdistiller_on_moderate_logits(
        self, temperature, tckd_weight, nckd_weight
    ):
        teacher, student = random(2, 16, 7, scale=2.0, seed=3)
        labels = np.random.default_rng(4).integers(0, 7, size=16)
        values = dkd(
            teacher, student, labels, temperature, tckd_weight, nckd_weight
        )
        expected = mdistiller_dkd(
            teacher, student, labels, temperature, tckd_weight, nckd_weight
        )
        self.assertAllClose(values, expected, rtol=1e-5, atol=1e-5)
        # mdistiller reports the batch mean.
        self.assertAllClose(
            np.mean(keras.ops.convert_to_numpy(values)),
            expected.mean(),
            rtol=1e-5,
        )

    @parameterized.named_parameters(
        ("m30", 30.0), ("m50", 50.0), ("m80", 80.0)
    )
    def test_confident_logits_at_t1_are_finite_and_exact(self, magnitude):
        teacher, student = random(2, 16, 10, scale=magnitude, seed=5)
        labels = np.random.default_rng(6).integers(0, 10, size=16)
        # mdistiller's own code in float32 overflows on such logits.
        reference_f32 = mdistiller_dkd(
            teacher, student, labels, 1.0, dtype="float32"
        )
        self.assertFalse(np.all(np.isfinite(reference_f32)))
        values = keras.ops.convert_to_numpy(dkd(teacher, student, labels, 1.0))
        self.assertTrue(np.all(np.isfinite(values)), msg=str(values))
        self.assertAllClose(
            values,
            reference_dkd(teacher, student, labels, 1.0),
            rtol=1e-5,
            atol=1e-4,
        )

    def test_saturated_logits_give_finite_gradients(self):
        teacher = np.array(
            [[80.0, -80.0, 0.0, 1.0], [-80.0, 80.0, 79.0, 0.0]], "float32"
        )
        student = np.array(
            [[-80.0, 80.0, 0.0, 1.0], [80.0, -80.0, 0.0, -80.0]], "float32"
        )
        labels = np.array([0, 2])
        grad = backend_gradient(
            lambda s: dkd(teacher, s, labels, 1.0), student
        )
        self.assertTrue(np.all(np.isfinite(grad)), msg=str(grad))

    @parameterized.named_parameters(("t1", 1.0), ("t4", 4.0))
    def test_gradient_matches_finite_differences(self, temperature):
        teacher, student = random(2, 3, 5, scale=2.0, seed=7)
        labels = np.array([0, 3, 4])
        grad = backend_gradient(
            lambda s: dkd(teacher, s, labels, temperature), student
        )
        numeric = np.zeros(student.shape)
        h = 1e-5
        for index in np.ndindex(*student.shape):
            up = student.astype("float64")
            down = student.astype("float64")
            up[index] += h
            down[index] -= h
            numeric[index] = (
                reference_dkd(teacher, up, labels, temperature).sum()
                - reference_dkd(teacher, down, labels, temperature).sum()
            ) / (2 * h)
        self.assertGreater(np.abs(numeric).max(), 1e-2)
        self.assertAllClose(grad, numeric, rtol=1e-3, atol=1e-4)

    def test_identical_and_shifted_logits_give_zero(self):
        logits = random(6, 10, scale=10.0, seed=8)
        labels = np.arange(6)
        self.assertAllClose(
            dkd(logits, logits, labels), np.zeros(6), atol=1e-6
        )
        self.assertAllClose(
            dkd(logits, logits + 7.0, labels, 1.0), np.zeros(6), atol=1e-4
        )

    def test_decomposes_the_kd_loss(self):
        # KD = TCKD + (1 - b_t) * NCKD (the paper's eq. 3).
        teacher, student = random(2, 8, 6, scale=3.0, seed=9)
        labels = np.random.default_rng(10).integers(0, 6, size=8)
        tckd = dkd(
            teacher, student, labels, 2.0, tckd_weight=1.0, nckd_weight=0.0
        )
        nckd = dkd(
            teacher, student, labels, 2.0, tckd_weight=0.0, nckd_weight=1.0
        )
        p_t = reference_softmax(teacher.astype("float64") / 2.0)
        rest = 1.0 - p_t[np.arange(8), labels]
        kd = reference_kl(teacher, student, 2.0) * 4.0
        self.assertAllClose(
            keras.ops.convert_to_numpy(tckd)
            + rest * keras.ops.convert_to_numpy(nckd),
            kd,
            rtol=1e-4,
        )

    def test_label_formats_agree(self):
        teacher, student = random(2, 5, 4, scale=2.0, seed=11)
        labels = np.array([0, 1, 2, 3, 1])
        expected = reference_dkd(teacher, student, labels, 4.0)
        one_hot = np.eye(4, dtype="float32")[labels]
        for given in (
            labels,
            labels[:, None],
            labels.astype("float32"),
            one_hot,
        ):
            self.assertAllClose(
                dkd(teacher, student, given), expected, rtol=1e-5, atol=1e-6
            )

    def test_unlabeled_samples_use_the_teacher_argmax(self):
        teacher, student = random(2, 4, 5, scale=2.0, seed=12)
        argmax = teacher.argmax(-1)
        labels = np.array([2, -1, 4, -1])
        targets = np.where(labels == -1, argmax, labels)
        expected = reference_dkd(teacher, student, targets, 4.0)
        self.assertNotEqual(int(argmax[1]), 2)
        self.assertAllClose(
            dkd(teacher, student, labels), expected, rtol=1e-5, atol=1e-6
        )
        one_hot = np.eye(5, dtype="float32")[np.maximum(labels, 0)]
        one_hot[labels == -1] = 0.0
        self.assertAllClose(
            dkd(teacher, student, one_hot), expected, rtol=1e-5, atol=1e-6
        )
        self.assertAllClose(
            dkd(teacher, student, None),
            reference_dkd(teacher, student, argmax, 4.0),
            rtol=1e-5,
            atol=1e-6,
        )

    def test_invalid_class_ids_give_nan(self):
        teacher, student = random(2, 3, 4, seed=13)
        values = keras.ops.convert_to_numpy(
            dkd(teacher, student, np.array([1, 4, -2]))
        )
        self.assertTrue(np.isfinite(values[0]))
        self.assertTrue(np.all(np.isnan(values[1:])))

    def test_half_precision_inputs_compute_in_float32(self):
        teacher, student = random(2, 4, 6, scale=8.0, seed=14)
        labels = np.array([0, 1, 2, 3])
        values = dkd(
            teacher.astype("float16"), student.astype("float16"), labels, 1.0
        )
        self.assertEqual(
            keras.backend.standardize_dtype(values.dtype), "float32"
        )
        self.assertAllClose(
            values,
            reference_dkd(
                teacher.astype("float16"),
                student.astype("float16"),
                labels,
                1.0,
            ),
            rtol=1e-4,
        )

    def test_compiled_matches_eager(self):
        teacher, student = random(2, 6, 5, scale=40.0, seed=15)
        labels = np.array([0, 1, 2, 3, 4, -1])

        def fn(t, s):
            return dkd(t, s, labels, 1.0)

        jitted = compiled(fn, teacher)
        if jitted is None:
            self.skipTest("Compilation is checked on TensorFlow and JAX.")
        self.assertAllClose(
            jitted(teacher, student),
            fn(teacher, student),
            rtol=1e-5,
            atol=1e-4,
        )

    def test_rejects_bad_shapes(self):
        with self.assertRaisesRegex(
            ValueError, r"Received: teacher_logits.shape=\(2, 3, 4\)"
        ):
            dkd(np.ones((2, 3, 4)), np.ones((2, 3, 4)), np.zeros(2))
        with self.assertRaisesRegex(
            ValueError,
            r"teacher_logits.shape=\(2, 4\), "
            r"student_logits.shape=\(2, 5\)",
        ):
            dkd(np.ones((2, 4)), np.ones((2, 5)), np.zeros(2))
        with self.assertRaisesRegex(ValueError, "Received: num_classes=1"):
            dkd(np.ones((2, 1)), np.ones((2, 1)), np.zeros(2))


class DKDTest(TestCase):
    def test_config(self):
        term = DKD(
            tckd_weight=2.0,
            nckd_weight=4.0,
            temperature=2.0,
            warmup_epochs=5,
            standardize=True,
            weight=0.5,
            name="dkd/strong",
        )
        revived = self.run_serialization_test(term)
        config = revived.get_config()
        self.assertEqual(
            {
                k: config[k]
                for k in (
                    "tckd_weight",
                    "nckd_weight",
                    "temperature",
                    "warmup_epochs",
                    "standardize",
                    "weight",
                    "name",
                )
            },
            {
                "tckd_weight": 2.0,
                "nckd_weight": 4.0,
                "temperature": 2.0,
                "warmup_epochs": 5,
                "standardize": True,
                "weight": 0.5,
                "name": "dkd/strong",
            },
        )
        teacher, student = random(2, 4, 6, seed=16)
        labels = np.array([0, 1, 2, 3])
        self.assertAllClose(
            revived(teacher, student, labels), term(teacher, student, labels)
        )

    def test_defaults_and_declarations(self):
        term = DKD()
        config = term.get_config()
        self.assertEqual(
            (
                config["tckd_weight"],
                config["nckd_weight"],
                config["temperature"],
                config["warmup_epochs"],
                config["standardize"],
                config["weight"],
                config["name"],
            ),
            (1.0, 8.0, None, 20, False, 1.0, "dkd"),
        )
        # Added on top of the hard loss at weight 1, as in the paper.
        self.assertFalse(DKD.response)
        self.assertFalse(DKD.relational)
        self.assertFalse(DKD.needs_labels)
        self.assertEqual(tuple(DKD.supported_outputs), ("softmax",))
        with self.assertRaisesRegex(ValueError, "Received: outputs='sigmoid'"):
            term._attach("sigmoid", None)

    @parameterized.named_parameters(
        # (Keras' 0-based epoch, expected factor): mdistiller's
        # min(epoch / 20, 1) with its epochs counted from 1.
        ("first", 0, 1 / 20),
        ("second", 1, 2 / 20),
        ("tenth", 9, 10 / 20),
        ("twentieth", 19, 1.0),
        ("later", 57, 1.0),
    )
    def test_warmup_follows_mdistiller(self, epoch, factor):
        teacher, student = random(2, 4, 6, scale=2.0, seed=17)
        labels = np.array([5, 0, 3, 1])
        term = DKD(temperature=4.0)
        term.on_epoch_begin(epoch)
        self.assertAllClose(term.epoch, float(epoch))
        self.assertAllClose(term.warmup_factor(), factor, rtol=1e-6)
        self.assertAllClose(
            term(teacher, student, labels),
            factor * reference_dkd(teacher, student, labels, 4.0),
            rtol=1e-5,
            atol=1e-6,
        )

    def test_warmup_zero_disables_it(self):
        teacher, student = random(2, 4, 6, scale=2.0, seed=18)
        labels = np.array([5, 0, 3, 1])
        term = DKD(
            tckd_weight=0.5, nckd_weight=2.0, temperature=1.0, warmup_epochs=0
        )
        self.assertAllClose(
            term(teacher, student, labels),
            reference_dkd(teacher, student, labels, 1.0, 0.5, 2.0),
            rtol=1e-5,
            atol=1e-6,
        )

    def test_epoch_is_a_non_trainable_variable(self):
        term = DKD()
        self.assertEqual(term.trainable_weights, [])
        self.assertEqual(len(term.non_trainable_weights), 1)
        self.assertEqual(
            term.non_trainable_weights[0].path.split("/")[-1], "epoch"
        )

    def test_shared_temperature_variable(self):
        teacher, student = random(2, 4, 6, scale=2.0, seed=19)
        labels = np.array([0, 1, 2, 3])
        term = DKD(warmup_epochs=0)
        variable = keras.Variable(2.0, trainable=False, dtype="float32")
        term._attach("softmax", variable)
        self.assertAllClose(
            term(teacher, student, labels),
            reference_dkd(teacher, student, labels, 2.0),
            rtol=1e-5,
            atol=1e-6,
        )
        variable.assign(3.0)
        self.assertAllClose(
            term(teacher, student, labels),
            reference_dkd(teacher, student, labels, 3.0),
            rtol=1e-5,
            atol=1e-6,
        )
        own = DKD(temperature=5.0, warmup_epochs=0)
        own._attach("softmax", variable)
        self.assertAllClose(
            own(teacher, student, labels),
            reference_dkd(teacher, student, labels, 5.0),
            rtol=1e-5,
            atol=1e-6,
        )

    def test_standardize(self):
        teacher, student = random(2, 4, 6, scale=5.0, seed=20)
        labels = np.array([0, 1, 2, 3])

        def zscore(x):
            x = x.astype("float64")
            return (x - x.mean(-1, keepdims=True)) / (
                x.std(-1, keepdims=True) + 1e-7
            )

        term = DKD(temperature=2.0, warmup_epochs=0, standardize=True)
        self.assertAllClose(
            term(teacher, student, labels),
            reference_dkd(zscore(teacher), zscore(student), labels, 2.0),
            rtol=1e-4,
            atol=1e-6,
        )

    def test_two_identical_teachers_equal_one(self):
        teacher, student = random(2, 4, 6, scale=2.0, seed=21)
        labels = np.array([0, -1, 2, 3])
        term = DKD(temperature=4.0, warmup_epochs=0)
        self.assertAllClose(
            term([teacher, teacher], student, labels),
            term(teacher, student, labels),
            rtol=1e-5,
            atol=1e-6,
        )

    def test_rejects_bad_arguments(self):
        with self.assertRaisesRegex(ValueError, "Received: nckd_weight=-1"):
            DKD(nckd_weight=-1)
        with self.assertRaisesRegex(ValueError, "Received: tckd_weight=-0.5"):
            DKD(tckd_weight=-0.5)
        with self.assertRaisesRegex(TypeError, "Received: tckd_weight='1'"):
            DKD(tckd_weight="1")
        with self.assertRaisesRegex(ValueError, "Received: warmup_epochs=-1"):
            DKD(warmup_epochs=-1)
        with self.assertRaisesRegex(TypeError, "Received: warmup_epochs=2.5"):
            DKD(warmup_epochs=2.5)
        with self.assertRaisesRegex(ValueError, "Received: temperature=0"):
            DKD(temperature=0)
        with self.assertRaisesRegex(ValueError, "Received: weight=-2"):
            DKD(weight=-2)


class DKDDistillerTest(TestCase):
    def test_fit_warms_up_saves_and_reloads(self):
        teacher, student = make_dense_pair()
        x, y = make_data(32)
        y[::4] = -1  # unlabeled samples: the teacher's argmax is the target
        term = DKD(temperature=4.0, warmup_epochs=4)
        d = keras_kd.Distiller(
            teacher, student, terms=[keras_kd.HardLoss(), term]
        )
        d.compile(optimizer="adam")
        history = d.fit(x, y, epochs=2, batch_size=8, verbose=0)
        self.assertEqual(len(history.history["dkd"]), 2)
        self.assertTrue(np.all(np.isfinite(history.history["dkd"])))
        # Keras' index of the last epoch: the factor is (1 + 1) / 4.
        self.assertAllClose(term.epoch, 1.0)
        logs = d.evaluate(x, y, batch_size=32, verbose=0, return_dict=True)
        t = keras.ops.convert_to_numpy(teacher(x))
        s = keras.ops.convert_to_numpy(student(x))
        targets = np.where(y == -1, t.argmax(-1), y)
        self.assertAllClose(
            logs["dkd"],
            0.5 * reference_dkd(t, s, targets, 4.0).mean(),
            rtol=1e-4,
        )
        path = os.path.join(self.get_temp_dir(), "dkd.keras")
        d.save(path)
        loaded = keras_kd.load_distiller(path, teacher=teacher)
        revived = loaded.terms[1]
        self.assertIsInstance(revived, DKD)
        self.assertEqual(revived.warmup_epochs, 4)
        self.assertAllClose(revived.epoch, 1.0)
        reloaded = loaded.evaluate(
            x, y, batch_size=32, verbose=0, return_dict=True
        )
        self.assertAllClose(reloaded["dkd"], logs["dkd"], rtol=1e-5)
