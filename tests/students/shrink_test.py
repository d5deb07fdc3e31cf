"""Tests of keras_kd/students (`shrink`): per layer kind, a hand-built teacher
whose important channels are known; residual groups; depth; identity;
errors."""

import os

import keras
import numpy as np
import pytest

from keras_kd.students import shrink
from tests.test_case import TestCase

L = keras.layers


def _w(layer):
    return [np.asarray(keras.ops.convert_to_numpy(v)) for v in layer.weights]


def _set(layer, *values):
    layer.set_weights([np.asarray(v, "float32") for v in values])


def _dominant(shape, channels, rng, scale=10.0):
    """Random weights whose output channels `channels` are `scale` larger."""
    w = rng.normal(size=shape).astype("float32") * 0.1
    w[..., channels] *= scale
    return w


class DenseTest(TestCase):
    def _teacher(self):
        model = keras.Sequential([
            keras.Input((5,)), L.Dense(6, activation="relu", name="hidden"),
            L.Dropout(0.1), L.Dense(3, name="logits")], name="mlp")
        rng = np.random.default_rng(0)
        kernel = np.abs(_dominant((5, 6), [1, 3], rng))
        bias = np.zeros(6)
        # Channel 0 has the largest weights but never fires (large negative
        # bias): activation importance and weight magnitude disagree on it.
        kernel[:, 0] = 5.0
        bias[0] = -100.0
        _set(model.get_layer("hidden"), kernel, bias)
        return model

    def test_activation_importance_keeps_the_active_channels(self):
        teacher = self._teacher()
        x = np.random.default_rng(1).random((32, 5)).astype("float32")
        student = shrink(teacher, width=2 / 6, importance_data=x)
        self.assertIsInstance(student, keras.Sequential)
        k, b = _w(teacher.get_layer("hidden"))
        k2, b2 = _w(teacher.get_layer("logits"))
        sk, sb = _w(student.get_layer("hidden"))
        self.assertAllEqual(sk, k[:, [1, 3]])
        self.assertAllEqual(sb, b[[1, 3]])
        self.assertAllEqual(_w(student.get_layer("logits"))[0], k2[[1, 3]])
        self.assertAllEqual(_w(student.get_layer("logits"))[1], b2)
        # The student computes the teacher's sub-network, in NumPy.
        hidden = np.maximum(x @ k[:, [1, 3]] + b[[1, 3]], 0)
        self.assertAllClose(student.predict(x, verbose=0),
                            hidden @ k2[[1, 3]] + b2, atol=1e-5)

    def test_weight_magnitude_without_data(self):
        teacher = self._teacher()
        student = shrink(teacher, width={"hidden": 3})
        k = _w(teacher.get_layer("hidden"))[0]
        reference = np.sort(np.argsort(-np.abs(k).sum(0))[:3])
        self.assertAllEqual(reference, [0, 1, 3])
        self.assertAllEqual(_w(student.get_layer("hidden"))[0], k[:, [0, 1,
                                                                      3]])

    def test_nothing_removed_is_the_teacher(self):
        teacher = self._teacher()
        student = shrink(teacher)
        self.assertIsNot(student, teacher)
        x = np.random.default_rng(2).random((8, 5)).astype("float32")
        self.assertAllClose(student.predict(x, verbose=0),
                            teacher.predict(x, verbose=0), atol=0)

    def test_student_of_a_frozen_teacher_is_trainable(self):
        teacher = self._teacher()
        teacher.trainable = False  # as a Distiller leaves it
        student = shrink(teacher, width=0.5)
        self.assertEqual(len(student.trainable_weights), 4)
        self.assertFalse(teacher.trainable)

    def test_saves_and_loads(self):
        student = shrink(self._teacher(), width=0.5)
        path = os.path.join(self.get_temp_dir(), "s.keras")
        student.save(path)
        loaded = keras.saving.load_model(path)
        x = np.ones((2, 5), "float32")
        self.assertAllClose(loaded.predict(x, verbose=0),
                            student.predict(x, verbose=0))


def conv_bn_teacher():
    i = keras.Input((6, 6, 2))
    x = L.Conv2D(4, 3, padding="same", name="conv1")(i)
    x = L.BatchNormalization(name="bn")(x)
    x = L.ReLU()(x)
    x = L.DepthwiseConv2D(3, padding="same", name="dw")(x)
    x = L.Conv2D(5, 1, name="conv2")(x)
    x = L.Flatten()(x)
    o = L.Dense(3, name="logits")(x)
    model = keras.Model(i, o, name="conv_bn")
    rng = np.random.default_rng(0)
    conv1 = model.get_layer("conv1")
    _set(conv1, np.abs(_dominant((3, 3, 2, 4), [1, 3], rng)), np.zeros(4))
    bn = model.get_layer("bn")
    _set(bn, rng.random(4) + 0.5, rng.random(4) * 0.1, rng.random(4) * 0.1,
         rng.random(4) + 0.5)
    conv2 = model.get_layer("conv2")
    _set(conv2, _dominant((1, 1, 4, 5), [0, 2, 4], rng, 20.0),
         rng.normal(size=5))
    return model


class ConvTest(TestCase):
    def test_conv_bn_depthwise_flatten(self):
        teacher = conv_bn_teacher()
        x = np.random.default_rng(1).random((16, 6, 6, 2)).astype("float32")
        student = shrink(teacher, width={"conv1": 2, "conv2": 3},
                         importance_data=x)
        c1 = [1, 3]
        ck, cb = _w(teacher.get_layer("conv1"))
        self.assertAllEqual(_w(student.get_layer("conv1"))[0], ck[..., c1])
        self.assertAllEqual(_w(student.get_layer("conv1"))[1], cb[c1])
        for a, b in zip(_w(student.get_layer("bn")),
                        _w(teacher.get_layer("bn"))):
            self.assertAllEqual(a, b[c1])
        dk, db = _w(teacher.get_layer("dw"))
        self.assertAllEqual(_w(student.get_layer("dw"))[0], dk[:, :, c1])
        self.assertAllEqual(_w(student.get_layer("dw"))[1], db[c1])
        c2 = [0, 2, 4]
        k2 = _w(teacher.get_layer("conv2"))[0]
        self.assertAllEqual(_w(student.get_layer("conv2"))[0],
                            k2[:, :, c1][..., c2])
        # Flatten of (6, 6, 5): position p * 5 + c for each pixel p.
        rows = [p * 5 + c for p in range(36) for c in c2]
        lk = _w(teacher.get_layer("logits"))[0]
        self.assertAllEqual(_w(student.get_layer("logits"))[0], lk[rows])

    def test_nothing_removed_is_the_teacher(self):
        teacher = conv_bn_teacher()
        x = np.random.default_rng(1).random((4, 6, 6, 2)).astype("float32")
        self.assertAllClose(shrink(teacher).predict(x, verbose=0),
                            teacher.predict(x, verbose=0), atol=0)

    def test_concatenate(self):
        i = keras.Input((4, 4, 2))
        a = L.Conv2D(4, 1, name="a")(i)
        b = L.Conv2D(3, 1, name="b")(i)
        x = L.Concatenate(name="cat")([a, b])
        x = L.GlobalAveragePooling2D()(x)
        o = L.Dense(2, name="logits")(x)
        teacher = keras.Model(i, o)
        rng = np.random.default_rng(0)
        _set(teacher.get_layer("a"), _dominant((1, 1, 2, 4), [0, 3], rng),
             np.zeros(4))
        student = shrink(teacher, width={"a": 2})
        self.assertEqual(student.get_layer("b").filters, 3)
        lk = _w(teacher.get_layer("logits"))[0]
        self.assertAllEqual(_w(student.get_layer("logits"))[0],
                            lk[[0, 3, 4, 5, 6]])

    def test_embedding(self):
        teacher = keras.Sequential([
            keras.Input((5,), dtype="int32"), L.Embedding(10, 6, name="emb"),
            L.GlobalAveragePooling1D(), L.Dense(2, name="logits")])
        rng = np.random.default_rng(0)
        _set(teacher.get_layer("emb"), _dominant((10, 6), [2, 5], rng))
        student = shrink(teacher, width=2 / 6)
        e = _w(teacher.get_layer("emb"))[0]
        self.assertAllEqual(_w(student.get_layer("emb"))[0], e[:, [2, 5]])
        self.assertAllEqual(_w(student.get_layer("logits"))[0],
                            _w(teacher.get_layer("logits"))[0][[2, 5]])


def resnet(blocks=3, zero=()):
    """Stem conv, `blocks` residual blocks (conv, conv, BN, Add), head.
    Blocks in `zero` have an all-zero branch (BN gamma = beta = 0)."""
    i = keras.Input((6, 6, 3))
    x = L.Conv2D(4, 3, padding="same", name="stem")(i)
    x = L.ReLU(name="stem_relu")(x)
    for b in range(blocks):
        y = L.Conv2D(4, 3, padding="same", activation="relu",
                     name=f"b{b}_conv1")(x)
        y = L.Conv2D(4, 3, padding="same", name=f"b{b}_conv2")(y)
        y = L.BatchNormalization(name=f"b{b}_bn")(y)
        x = L.Add(name=f"b{b}_add")([x, y])
        x = L.ReLU(name=f"b{b}_relu")(x)
    x = L.GlobalAveragePooling2D(name="gap")(x)
    o = L.Dense(5, name="logits")(x)
    model = keras.Model(i, o, name="resnet")
    rng = np.random.default_rng(0)
    for layer in model.layers:
        if isinstance(layer, L.BatchNormalization):
            n = layer.gamma.shape[0]
            gamma, beta = rng.random(n) + 0.5, rng.normal(size=n) * 0.1
            if int(layer.name[1]) in zero:
                gamma, beta = np.zeros(n), np.zeros(n)
            _set(layer, gamma, beta, rng.normal(size=n) * 0.1,
                 rng.random(n) + 0.5)
    return model


class ResidualTest(TestCase):
    def test_residual_group_keeps_one_channel_set(self):
        teacher = resnet(2)
        rng = np.random.default_rng(0)
        _set(teacher.get_layer("stem"),
             np.abs(_dominant((3, 3, 3, 4), [1, 3], rng, 100.0)),
             np.zeros(4))
        x = rng.random((8, 6, 6, 3)).astype("float32")
        student = shrink(teacher, width=0.5, importance_data=x)
        kept = [1, 3]
        for b in range(2):
            t1 = _w(teacher.get_layer(f"b{b}_conv1"))[0]
            s1 = _w(student.get_layer(f"b{b}_conv1"))[0]
            # The branch reads the residual channels {1, 3} ...
            self.assertAllEqual(s1.shape, (3, 3, 2, 2))
            self.assertTrue(any(np.array_equal(s1, t1[:, :, kept][..., c])
                                for c in ([0, 1], [0, 2], [0, 3], [1, 2],
                                          [1, 3], [2, 3])))
            # ... and writes them back into the same channels.
            t2 = _w(teacher.get_layer(f"b{b}_conv2"))
            s2 = _w(student.get_layer(f"b{b}_conv2"))
            self.assertAllEqual(s2[1], t2[1][kept])
            for a, c in zip(_w(student.get_layer(f"b{b}_bn")),
                            _w(teacher.get_layer(f"b{b}_bn"))):
                self.assertAllEqual(a, c[kept])
        self.assertAllEqual(_w(student.get_layer("stem"))[0],
                            _w(teacher.get_layer("stem"))[0][..., kept])
        self.assertAllEqual(_w(student.get_layer("logits"))[0],
                            _w(teacher.get_layer("logits"))[0][kept])

    def test_nothing_removed_is_the_teacher(self):
        teacher = resnet(3)
        x = np.random.default_rng(1).random((4, 6, 6, 3)).astype("float32")
        student = shrink(teacher)
        self.assertEqual(type(student).__name__, "Functional")
        self.assertAllClose(student.predict(x, verbose=0),
                            teacher.predict(x, verbose=0), atol=0)

    def test_depth_drops_blocks(self):
        x = np.random.default_rng(1).random((4, 6, 6, 3)).astype("float32")
        # A block whose branch is zero is the identity: dropping it must
        # leave the outputs unchanged.
        teacher = resnet(3, zero=(1,))
        student = shrink(teacher, depth=2)  # evenly spaced: blocks 0 and 2
        names = {layer.name for layer in student.layers}
        self.assertNotIn("b1_conv1", names)
        self.assertNotIn("b1_add", names)
        self.assertIn("b0_add", names)
        self.assertIn("b2_add", names)
        self.assertIn("b1_relu", names)  # outside the block
        self.assertAllClose(student.predict(x, verbose=0),
                            teacher.predict(x, verbose=0), atol=1e-5)

    def test_depth_by_importance_and_keep(self):
        x = np.random.default_rng(1).random((8, 6, 6, 3)).astype("float32")
        teacher = resnet(3, zero=(0,))
        student = shrink(teacher, depth=2, importance_data=x)
        names = {layer.name for layer in student.layers}
        self.assertTrue({"b1_add", "b2_add"} <= names)
        self.assertNotIn("b0_add", names)
        student = shrink(teacher, keep=[2])
        names = {layer.name for layer in student.layers}
        self.assertEqual({n for n in names if n.endswith("_add")},
                         {"b2_add"})

    def test_depth_and_width(self):
        teacher = resnet(3)
        x = np.random.default_rng(1).random((8, 6, 6, 3)).astype("float32")
        student = shrink(teacher, depth=1, width=0.5, importance_data=x)
        self.assertEqual(student.get_layer("stem").filters, 2)
        self.assertEqual(student.predict(x, verbose=0).shape, (8, 5))
        self.assertLess(student.count_params(), teacher.count_params() / 3)


class ErrorTest(TestCase):
    def test_unsupported_layer_is_named(self):
        i = keras.Input((4, 4, 2))
        x = L.Conv2D(4, 1, name="conv")(i)
        x = L.Reshape((8, 8), name="reshape")(x)
        o = L.Dense(2, name="logits")(L.Flatten()(x))
        teacher = keras.Model(i, o)
        with self.assertRaisesRegex(
                ValueError, r"'reshape' \(Reshape\).*leave out 'conv'"):
            shrink(teacher, width=0.5)

    def test_model_output_is_not_pruned(self):
        teacher, _ = make_pair()
        with self.assertRaisesRegex(ValueError, "a model output"):
            shrink(teacher, width={"logits": 2})

    def test_unknown_layer_name(self):
        teacher, _ = make_pair()
        with self.assertRaisesRegex(ValueError, "Did you mean 'hidden'"):
            shrink(teacher, width={"hiden": 2})

    def test_bad_arguments(self):
        teacher, _ = make_pair()
        with self.assertRaisesRegex(ValueError, r"Received: width=1.5"):
            shrink(teacher, width=1.5)
        with self.assertRaisesRegex(ValueError, r"Received: depth=-1"):
            shrink(teacher, depth=-1)
        with self.assertRaisesRegex(ValueError, "has none"):
            shrink(teacher, depth=1)
        with self.assertRaisesRegex(ValueError, r"\[0, 3\)"):
            shrink(resnet(3), keep=[0, 3])

    def test_nothing_prunable_is_refused(self):
        only_output = keras.Sequential([keras.Input((4,)),
                                        L.Dense(3, name="logits")],
                                       name="only_output")
        with self.assertRaisesRegex(
                ValueError, r"teacher 'only_output' has no layer whose "
                r"channels.*\['logits'\]"):
            shrink(only_output, width=0.5)
        i = keras.Input((6, 6, 3))
        x = L.SeparableConv2D(8, 3, name="sep")(i)
        separable = keras.Model(i, L.Dense(2)(L.Flatten()(x)))
        with self.assertRaisesRegex(ValueError,
                                    "SeparableConv.*are not pruned"):
            shrink(separable, width=0.5)
        # Nothing removed stays allowed: the exact copy of the teacher.
        same = shrink(separable)
        x = np.random.default_rng(0).random((2, 6, 6, 3), "float32")
        self.assertAllClose(same(x), separable(x))

    def test_subclassed_model(self):
        class Net(keras.Model):
            def __init__(self):
                super().__init__()
                self.dense = L.Dense(2)

            def call(self, x):
                return self.dense(x)

        net = Net()
        net(np.ones((1, 3), "float32"))
        with self.assertRaisesRegex(TypeError, "Functional API"):
            shrink(net, width=0.5)


def make_pair():
    model = keras.Sequential([keras.Input((4,)),
                              L.Dense(4, activation="relu", name="hidden"),
                              L.Dense(3, name="logits")])
    return model, None


keras_hub = pytest.importorskip("keras_hub")


def causal_lm(layers=4, seed=0):
    keras.utils.set_random_seed(seed)
    backbone = keras_hub.models.GPT2Backbone(
        vocabulary_size=30, num_layers=layers, num_heads=2, hidden_dim=8,
        intermediate_dim=16, max_sequence_length=12, dropout=0.0)
    return keras_hub.models.GPT2CausalLM(backbone, preprocessor=None)


def tokens(n=4, length=8):
    rng = np.random.default_rng(0)
    mask = np.ones((n, length), "int32")
    mask[0, 5:] = 0
    return {"token_ids": rng.integers(1, 30, (n, length)).astype("int32")
            * mask, "padding_mask": mask}


class HubTest(TestCase):
    def test_nothing_removed_is_the_teacher(self):
        teacher = causal_lm()
        student = shrink(teacher)
        self.assertIsInstance(student, keras_hub.models.GPT2CausalLM)
        x = tokens()
        self.assertAllClose(student.predict(x, verbose=0),
                            teacher.predict(x, verbose=0), atol=0)

    def test_depth_copies_the_kept_layers(self):
        teacher = causal_lm()
        student = shrink(teacher, keep=[0, 2])
        self.assertEqual(student.backbone.num_layers, 2)
        for j, i in enumerate([0, 2]):
            for a, b in zip(
                    _w(student.backbone.get_layer(f"transformer_layer_{j}")),
                    _w(teacher.backbone.get_layer(f"transformer_layer_{i}"))):
                self.assertAllEqual(a, b)
        for name in ("token_embedding", "position_embedding", "layer_norm"):
            for a, b in zip(_w(student.backbone.get_layer(name)),
                            _w(teacher.backbone.get_layer(name))):
                self.assertAllEqual(a, b)
        # Default: evenly spaced, first and last kept.
        default = shrink(teacher, depth=2)
        self.assertAllEqual(
            _w(default.backbone.get_layer("transformer_layer_1"))[0],
            _w(teacher.backbone.get_layer("transformer_layer_3"))[0])

    def test_ffn_width_slices_consistently(self):
        teacher = causal_lm(2)
        student = shrink(teacher, width=0.5, importance_data=tokens())
        self.assertEqual(student.backbone.intermediate_dim, 8)
        for i in range(2):
            t = teacher.backbone.get_layer(f"transformer_layer_{i}")
            s = student.backbone.get_layer(f"transformer_layer_{i}")
            t_in = _w(t._feedforward_intermediate_dense)
            s_in = _w(s._feedforward_intermediate_dense)
            kept = [int(np.argmax([np.array_equal(col, tc) for tc in
                                   t_in[0].T])) for col in s_in[0].T]
            self.assertEqual(kept, sorted(set(kept)))
            self.assertAllEqual(s_in[0], t_in[0][:, kept])
            self.assertAllEqual(s_in[1], t_in[1][kept])
            t_out = _w(t._feedforward_output_dense)
            self.assertAllEqual(_w(s._feedforward_output_dense)[0],
                                t_out[0][kept])

    def test_pruned_causal_lm_generates_and_saves(self):
        teacher = causal_lm()
        student = shrink(teacher, depth=2, width=0.5)
        prompt = {"token_ids": np.array([[5, 6, 7, 0, 0, 0]], "int32"),
                  "padding_mask": np.array([[1, 1, 1, 0, 0, 0]], "int32")}
        out = student.generate(prompt, max_length=6, stop_token_ids=None)
        self.assertEqual(np.asarray(out["token_ids"]).shape, (1, 6))
        self.assertAllEqual(np.asarray(out["token_ids"])[0, :3], [5, 6, 7])
        path = os.path.join(self.get_temp_dir(), "lm.keras")
        student.save(path)
        loaded = keras.saving.load_model(path, compile=False)
        self.assertIsInstance(loaded, keras_hub.models.GPT2CausalLM)
        x = tokens()
        self.assertAllClose(loaded.predict(x, verbose=0),
                            student.predict(x, verbose=0), atol=1e-6)

    def test_other_width_keys_are_refused(self):
        # Heads and `hidden_dim` are pruned (tests/students/hub_heads_test.py)
        # but Llama-style grouped heads are not.
        with self.assertRaisesRegex(ValueError, "may only hold"):
            shrink(causal_lm(2), width={"num_query_heads": 1})
