"""Tests of keras_kd/losses/__init__.py (get, register, ids) and
keras_kd/losses/_wrapper.py (LossFunctionWrapper)."""

import json

import keras
import numpy as np
from absl.testing import parameterized

from keras_kd import losses
from tests.test_case import TestCase


def random(*shape, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=shape).astype("float32")


def scaled_l1(teacher, student, scale=1.0):
    """A user loss: one value per sample."""
    return scale * keras.ops.mean(keras.ops.abs(teacher - student), axis=-1)


@keras.saving.register_keras_serializable(package="keras_kd_tests")
def keras_registered_l1(teacher, student):
    return keras.ops.mean(keras.ops.abs(teacher - student), axis=-1)


class ScaledL1(losses.LossFunctionWrapper):
    """A user loss class written on the wrapper, as the built-ins are."""

    def __init__(self, scale=1.0, reduction="sum_over_batch_size",
                 name="scaled_l1", dtype=None):
        super().__init__(scaled_l1, reduction=reduction, name=name,
                         dtype=dtype, scale=scale)


def register_for_test(test, name, loss):
    """`losses.register`, undone when the test ends."""
    test.addCleanup(losses._USER_LOSSES.pop, name, None)
    return losses.register(name, loss)


# (class, its function, constructor arguments, teacher shape, student shape)
CLASSES = (
    (losses.SoftTargetKL, losses.soft_target_kl,
     {"temperature": 2.5, "scale_by_temperature_squared": False},
     (5, 10), (5, 10)),
    (losses.FeatureMSE, losses.feature_mse, {}, (5, 3, 4), (5, 3, 4)),
    (losses.FeatureL1, losses.feature_l1, {}, (5, 3, 4), (5, 3, 4)),
    (losses.FeatureSmoothL1, losses.feature_smooth_l1, {"delta": 0.5},
     (5, 3, 4), (5, 3, 4)),
    (losses.FeatureCosine, losses.feature_cosine, {}, (5, 3, 4), (5, 3, 4)),
    (losses.AttentionTransfer, losses.attention_transfer, {"p": 3.0},
     (5, 4, 4, 6), (5, 2, 2, 3)),
    (losses.RKDDistance, losses.rkd_distance, {}, (5, 8), (5, 3)),
    (losses.RKDAngle, losses.rkd_angle, {}, (5, 8), (5, 3)),
    (losses.SimilarityPreserving, losses.similarity_preserving, {},
     (5, 2, 2, 4), (5, 6)),
    (losses.PKT, losses.pkt, {"epsilon": 1e-5}, (5, 8), (5, 3)),
)

# Configs written by the classes before they became wrappers (commit
# d52cfb0), as `keras.saving.serialize_keras_object` stored them.
OLD_CONFIGS = (
    '{"module": "keras_kd.losses.logits", "class_name": "SoftTargetKL", '
    '"config": {"name": "kd_old", "reduction": "sum", "temperature": 2.0, '
    '"scale_by_temperature_squared": false}, '
    '"registered_name": "keras_kd>SoftTargetKL"}',
    '{"module": "keras_kd.losses.feature", "class_name": "FeatureMSE", '
    '"config": {"name": "feature_mse", "reduction": null}, '
    '"registered_name": "keras_kd>FeatureMSE"}',
    '{"module": "keras_kd.losses.feature", "class_name": "FeatureL1", '
    '"config": {"name": "l1_old", "reduction": "sum_over_batch_size"}, '
    '"registered_name": "keras_kd>FeatureL1"}',
    '{"module": "keras_kd.losses.feature", "class_name": "FeatureSmoothL1", '
    '"config": {"name": "feature_smooth_l1", "reduction": '
    '"sum_over_batch_size", "delta": 0.5}, '
    '"registered_name": "keras_kd>FeatureSmoothL1"}',
    '{"module": "keras_kd.losses.feature", "class_name": "FeatureCosine", '
    '"config": {"name": "feature_cosine", "reduction": "mean"}, '
    '"registered_name": "keras_kd>FeatureCosine"}',
    '{"module": "keras_kd.losses.feature", "class_name": "AttentionTransfer", '
    '"config": {"name": "attention_transfer", "reduction": '
    '"sum_over_batch_size", "p": 4.0}, '
    '"registered_name": "keras_kd>AttentionTransfer"}',
    '{"module": "keras_kd.losses.relation", "class_name": "RKDDistance", '
    '"config": {"name": "rkd_distance", "reduction": "sum_over_batch_size"}, '
    '"registered_name": "keras_kd>RKDDistance"}',
    '{"module": "keras_kd.losses.relation", "class_name": "RKDAngle", '
    '"config": {"name": "angle_old", "reduction": "sum_over_batch_size"}, '
    '"registered_name": "keras_kd>RKDAngle"}',
    '{"module": "keras_kd.losses.relation", "class_name": '
    '"SimilarityPreserving", "config": {"name": "similarity_preserving", '
    '"reduction": "sum_over_batch_size"}, '
    '"registered_name": "keras_kd>SimilarityPreserving"}',
    '{"module": "keras_kd.losses.relation", "class_name": "PKT", '
    '"config": {"name": "pkt", "reduction": "sum_over_batch_size", '
    '"epsilon": 1e-05}, "registered_name": "keras_kd>PKT"}',
)


class LossClassesTest(TestCase):
    """Every built-in class is its function behind the wrapper."""

    @parameterized.named_parameters(
        (cls.__name__, cls, fn, kwargs, t_shape, s_shape)
        for cls, fn, kwargs, t_shape, s_shape in CLASSES
    )
    def test_values_equal_the_function_exactly(
        self, cls, fn, kwargs, t_shape, s_shape
    ):
        teacher, student = random(*t_shape, seed=1), random(*s_shape, seed=2)
        expected = fn(teacher, student, **kwargs)
        self.assertAllEqual(
            cls(reduction=None, **kwargs)(teacher, student), expected
        )
        weights = np.linspace(0.0, 2.0, t_shape[0]).astype("float32")
        self.assertAllClose(
            cls(**kwargs)(teacher, student, sample_weight=weights),
            np.mean(keras.ops.convert_to_numpy(expected) * weights),
            rtol=1e-6,
        )

    @parameterized.named_parameters(
        (cls.__name__, cls, kwargs) for cls, _, kwargs, _, _ in CLASSES
    )
    def test_config_holds_constructor_arguments_only(self, cls, kwargs):
        loss = cls(reduction="sum", name="x", **kwargs)
        config = loss.get_config()
        self.assertEqual(config, {"name": "x", "reduction": "sum", **kwargs})
        for key, value in kwargs.items():
            self.assertEqual(getattr(loss, key), value)
        revived = self.run_serialization_test(loss)
        self.assertEqual(revived.fn, loss.fn)

    @parameterized.named_parameters(
        (json.loads(text)["class_name"], text) for text in OLD_CONFIGS
    )
    def test_loads_a_config_written_before_the_wrapper(self, text):
        old = json.loads(text)
        loss = keras.saving.deserialize_keras_object(json.loads(text))
        self.assertEqual(type(loss).__name__, old["class_name"])
        self.assertIsInstance(loss, losses.LossFunctionWrapper)
        self.assertEqual(loss.get_config(), old["config"])
        self.assertEqual(keras.saving.serialize_keras_object(loss), old)

    def test_loads_an_old_config_with_dtype(self):
        loss = losses.SoftTargetKL.from_config(
            {"name": "kd", "reduction": "sum_over_batch_size",
             "dtype": "float32", "temperature": 2.0,
             "scale_by_temperature_squared": True}
        )
        self.assertEqual(loss.temperature, 2.0)
        self.assertEqual(loss.dtype, "float32")

    def test_declarations_read_by_the_distiller_are_kept(self):
        relational = {losses.RKDDistance, losses.RKDAngle,
                      losses.SimilarityPreserving, losses.PKT}
        for cls, *_ in CLASSES:
            self.assertEqual(
                getattr(cls(), "relational", False), cls in relational,
                msg=cls.__name__,
            )
        shape_free = relational | {losses.AttentionTransfer}
        for cls, *_ in CLASSES:
            self.assertEqual(
                getattr(cls(), "shape_free", False), cls in shape_free,
                msg=cls.__name__,
            )


class LossFunctionWrapperTest(TestCase):
    def test_passes_shapes_unchanged(self):
        seen = []

        def fn(teacher, student):
            seen.append((tuple(teacher.shape), tuple(student.shape)))
            return keras.ops.mean(teacher, axis=-1) - student

        # Keras' own wrapper would expand the student to (3, 1).
        losses.LossFunctionWrapper(fn)(np.ones((3, 1)), np.zeros((3,)))
        self.assertEqual(seen, [((3, 1), (3,))])

    def test_teacher_is_y_true_and_student_is_y_pred(self):
        def fn(teacher, student):
            return keras.ops.mean(teacher - 2.0 * student, axis=-1)

        loss = losses.LossFunctionWrapper(fn, reduction=None)
        self.assertAllClose(loss(np.ones((2, 3)), np.zeros((2, 3))), [1, 1])

    def test_keyword_arguments_are_attributes_read_at_each_call(self):
        loss = losses.LossFunctionWrapper(scaled_l1, reduction=None, scale=2.0)
        teacher, student = np.ones((2, 3)), np.zeros((2, 3))
        self.assertAllClose(loss(teacher, student), [2.0, 2.0])
        loss.scale = 5.0
        self.assertAllClose(loss(teacher, student), [5.0, 5.0])
        self.assertEqual(loss.get_config()["scale"], 5.0)
        self.assertEqual(loss.fn_kwargs, {"scale": 5.0})

    def test_user_subclass_round_trips(self):
        loss = ScaledL1(scale=3.0, reduction="sum")
        self.assertEqual(
            loss.get_config(), {"name": "scaled_l1", "reduction": "sum",
                                "scale": 3.0}
        )
        revived = ScaledL1.from_config(loss.get_config())
        self.assertEqual(revived.scale, 3.0)
        self.assertAllClose(
            revived(np.ones((2, 3)), np.zeros((2, 3))), 6.0
        )

    def test_direct_wrapper_saves_a_keras_registered_function(self):
        loss = losses.LossFunctionWrapper(keras_registered_l1, name="l1x")
        revived = self.run_serialization_test(loss)
        self.assertIs(revived.fn, keras_registered_l1)

    def test_rejects_a_non_callable(self):
        with self.assertRaisesRegex(TypeError, "Received: fn=3"):
            losses.LossFunctionWrapper(3)

    @parameterized.named_parameters(
        ("method", "call"), ("property", "fn_kwargs"), ("private", "_x")
    )
    def test_rejects_a_keyword_that_replaces_an_attribute(self, key):
        with self.assertRaisesRegex(ValueError, f"Received: {key}=1"):
            losses.LossFunctionWrapper(scaled_l1, **{key: 1})


class GetTest(TestCase):
    def test_string_id_equals_instance(self):
        rng = np.random.default_rng(7)
        teacher, student = rng.normal(size=(2, 4, 6)).astype("float32")
        by_id = losses.get("kd", temperature=3.0)
        self.assertIsInstance(by_id, losses.SoftTargetKL)
        self.assertAllClose(
            by_id(teacher, student),
            losses.SoftTargetKL(temperature=3.0)(teacher, student),
        )

    def test_unknown_id_lists_close_matches(self):
        with self.assertRaisesRegex(ValueError, "Close matches: \\['kd'\\]"):
            losses.get("kdd")

    def test_instance_is_returned_as_is(self):
        loss = losses.FeatureMSE()
        self.assertIs(losses.get(loss), loss)

    def test_class_is_built_with_kwargs(self):
        loss = losses.get(losses.PKT, epsilon=1e-4, name="p")
        self.assertIsInstance(loss, losses.PKT)
        self.assertEqual((loss.epsilon, loss.name), (1e-4, "p"))

    def test_config_dict(self):
        loss = losses.get(losses.serialize(losses.FeatureSmoothL1(delta=2.0)))
        self.assertIsInstance(loss, losses.FeatureSmoothL1)
        self.assertEqual(loss.delta, 2.0)

    def test_callable_becomes_a_loss_instance(self):
        teacher, student = random(4, 5, seed=3), random(4, 5, seed=4)
        loss = losses.get(scaled_l1, scale=2.0, reduction="sum")
        self.assertIsInstance(loss, losses.LossFunctionWrapper)
        self.assertIs(loss.fn, scaled_l1)
        self.assertEqual((loss.name, loss.reduction), ("scaled_l1", "sum"))
        self.assertAllClose(
            loss(teacher, student),
            2.0 * np.abs(teacher - student).mean(axis=-1).sum(),
            rtol=1e-6,
        )

    def test_lambda_gets_a_valid_name(self):
        loss = losses.get(lambda t, s: keras.ops.mean(t - s, axis=-1))
        self.assertEqual(loss.name, "loss_function_wrapper")
        self.assertAllClose(loss(np.ones((2, 3)), np.zeros((2, 3))), 1.0)

    @parameterized.named_parameters(
        ("number", 3), ("none", None), ("layer_class", keras.layers.Dense)
    )
    def test_rejects_other_identifiers(self, identifier):
        with self.assertRaisesRegex(TypeError, "Received: identifier="):
            losses.get(identifier)

    def test_rejects_kwargs_with_an_instance(self):
        with self.assertRaisesRegex(ValueError, "already built"):
            losses.get(losses.FeatureMSE(), name="x")


class RegisterTest(TestCase):
    def test_function_id(self):
        register_for_test(self, "my_scaled_l1", scaled_l1)
        self.assertIn("my_scaled_l1", losses.ids())
        self.assertNotIn("my_scaled_l1", losses.ALL_IDS)
        loss = losses.get("my_scaled_l1", scale=4.0)
        self.assertIsInstance(loss, losses.LossFunctionWrapper)
        self.assertEqual((loss.name, loss.scale), ("my_scaled_l1", 4.0))
        self.assertAllClose(loss(np.ones((2, 3)), np.zeros((2, 3))), 4.0)

    def test_class_id(self):
        register_for_test(self, "my_scaled_l1_class", ScaledL1)
        loss = losses.get("my_scaled_l1_class", scale=2.0)
        self.assertIsInstance(loss, ScaledL1)
        self.assertEqual(loss.scale, 2.0)

    def test_ids_are_the_built_ins_plus_registrations(self):
        self.assertEqual(losses.ids(), losses.ALL_IDS)
        register_for_test(self, "zz_loss", scaled_l1)
        self.assertEqual(losses.ids(), losses.ALL_IDS + ("zz_loss",))

    def test_wrapper_of_a_registered_function_saves_its_id(self):
        register_for_test(self, "my_scaled_l1", scaled_l1)
        loss = losses.get("my_scaled_l1", scale=2.0)
        self.assertEqual(loss.get_config()["fn"], "my_scaled_l1")
        revived = self.run_serialization_test(loss)
        self.assertIs(revived.fn, scaled_l1)
        config = losses.serialize(loss)
        losses._USER_LOSSES.pop("my_scaled_l1")
        with self.assertRaisesRegex(
            ValueError, "Unknown registered loss function 'my_scaled_l1'"
        ):
            losses.deserialize(config)

    @parameterized.named_parameters(("built_in", "mse"), ("user", "mine"))
    def test_refuses_an_existing_name(self, name):
        register_for_test(self, "mine", scaled_l1)
        with self.assertRaisesRegex(
            ValueError,
            f"The loss id '{name}' already exists.*Close matches: "
            f"\\['{name}'",
        ):
            losses.register(name, ScaledL1)
        self.assertIs(losses._USER_LOSSES["mine"], scaled_l1)
        self.assertNotIsInstance(losses.get("mse"), ScaledL1)

    @parameterized.named_parameters(
        ("instance", losses.FeatureMSE()),
        ("other_class", keras.layers.Dense),
        ("number", 3),
    )
    def test_rejects_what_is_not_a_class_or_function(self, loss):
        with self.assertRaisesRegex(TypeError, "Received: loss="):
            losses.register("bad_loss", loss)
        self.assertNotIn("bad_loss", losses.ids())

    def test_rejects_a_non_string_name(self):
        with self.assertRaisesRegex(TypeError, "Received: name=3"):
            losses.register(3, scaled_l1)
