"""Tests of `shrink` pruning attention heads and `hidden_dim` of KerasHub
TransformerDecoder backbones (keras_kd/students/_hub_width.py): a GPT-2
teacher whose unimportant heads, head dims and hidden channels are zero,
so the kept ones are known and every weight is a NumPy slice of the
teacher's."""

import os

import keras
import numpy as np
import pytest

from keras_kd.students import shrink
from tests.test_case import TestCase

keras_hub = pytest.importorskip("keras_hub")

HEADS, HIDDEN, DIM = 4, 16, 4
DEAD = [1, 4, 6, 7, 9, 10, 13, 15]  # hidden channels zero in the stream
LIVE = [c for c in range(HIDDEN) if c not in DEAD]
DEAD_HEADS = {0: [1, 3], 1: [0, 2]}
LIVE_HEADS = {0: [0, 2], 1: [1, 3]}


def _np(v):
    return np.array(keras.ops.convert_to_numpy(v))


def causal_lm(layers=2, seed=0, cls="GPT2"):
    keras.utils.set_random_seed(seed)
    backbone = getattr(keras_hub.models, f"{cls}Backbone")(
        vocabulary_size=30, num_layers=layers, num_heads=HEADS,
        hidden_dim=HIDDEN, intermediate_dim=12, max_sequence_length=12,
        dropout=0.0)
    return getattr(keras_hub.models, f"{cls}CausalLM")(
        backbone, preprocessor=None)


def tokens(n=4, length=8):
    rng = np.random.default_rng(0)
    mask = np.ones((n, length), "int32")
    mask[0, 5:] = 0
    return {"token_ids": rng.integers(1, 30, (n, length)).astype("int32")
            * mask, "padding_mask": mask}


def _zero(variable, index):
    value = _np(variable)
    value[index] = 0.0
    variable.assign(value)


def _dense(layer):
    attn = layer._self_attention_layer
    return {"q": attn._query_dense, "k": attn._key_dense,
            "v": attn._value_dense, "o": attn._output_dense,
            "ffn_out": layer._feedforward_output_dense}


def dead_stream(model):
    """Zeroes every writer of the residual stream on the `DEAD` channels."""
    backbone = model.backbone
    _zero(backbone.token_embedding.embeddings, (slice(None), DEAD))
    _zero(backbone.position_embedding.position_embeddings,
          (slice(None), DEAD))
    for layer in backbone.transformer_layers:
        d = _dense(layer)
        _zero(d["o"].kernel, (Ellipsis, DEAD))
        _zero(d["ffn_out"].kernel, (Ellipsis, DEAD))
        _zero(d["o"].bias, DEAD)
        _zero(d["ffn_out"].bias, DEAD)
    return model


def dead_heads(model):
    for i, layer in enumerate(model.backbone.transformer_layers):
        d = _dense(layer)
        for name in "qkv":
            _zero(d[name].kernel, (slice(None), DEAD_HEADS[i]))
            _zero(d[name].bias, DEAD_HEADS[i])
        _zero(d["o"].kernel, DEAD_HEADS[i])
    return model


def qk_dims(h):
    return sorted([h % DIM, (h + 1) % DIM])


def v_dims(h):
    return sorted([(h + 2) % DIM, (h + 3) % DIM])


def dead_dims(model):
    """Head `h` keeps q/k dims `qk_dims(h)` and v dims `v_dims(h)`."""
    for layer in model.backbone.transformer_layers:
        d = _dense(layer)
        for h in range(HEADS):
            for names, keep in (("qk", qk_dims(h)), ("v", v_dims(h))):
                drop = [e for e in range(DIM) if e not in keep]
                for name in names:
                    _zero(d[name].kernel, (slice(None), h, drop))
                    _zero(d[name].bias, (h, drop))
    return model


class HubHeadsTest(TestCase):
    def test_nothing_removed_is_the_teacher(self):
        teacher = causal_lm()
        x = tokens()
        expected = _np(teacher(x))
        for width in ({"num_heads": 1.0}, {"hidden_dim": 1.0},
                      {"num_heads": 4, "hidden_dim": 16}):
            for data in (None, x):
                student = shrink(teacher, width=width, importance_data=data)
                self.assertAllClose(_np(student(x)), expected,
                                    atol=0, rtol=0)

    def _check_outer(self, student, teacher):
        s, t = student.backbone, teacher.backbone
        self.assertAllEqual(_np(s.token_embedding.embeddings),
                            _np(t.token_embedding.embeddings)[:, LIVE])
        self.assertAllEqual(
            _np(s.position_embedding.position_embeddings),
            _np(t.position_embedding.position_embeddings)[:, LIVE])
        for a, b in zip(s.get_layer("layer_norm").weights,
                        t.get_layer("layer_norm").weights):
            self.assertAllEqual(_np(a), _np(b)[LIVE])

    def test_heads_keep_the_live_heads_and_channels(self):
        teacher = dead_heads(dead_stream(causal_lm()))
        for data in (None, tokens()):
            student = shrink(teacher, width={"num_heads": 0.5},
                             importance_data=data)
            config = student.backbone.get_config()
            self.assertEqual((config["num_heads"], config["hidden_dim"]),
                             (2, 8))
            self._check_outer(student, teacher)
            for i in range(2):
                t = teacher.backbone.transformer_layers[i]
                s = student.backbone.transformer_layers[i]
                ht, hs = _dense(t), _dense(s)
                keep = LIVE_HEADS[i]
                for name in "qkv":
                    self.assertAllEqual(
                        _np(hs[name].kernel),
                        _np(ht[name].kernel)[LIVE][:, keep])
                    self.assertAllEqual(_np(hs[name].bias),
                                        _np(ht[name].bias)[keep])
                self.assertAllEqual(_np(hs["o"].kernel),
                                    _np(ht["o"].kernel)[keep][..., LIVE])
                self.assertAllEqual(_np(hs["o"].bias),
                                    _np(ht["o"].bias)[LIVE])
                ffn_in = t._feedforward_intermediate_dense
                self.assertAllEqual(
                    _np(s._feedforward_intermediate_dense.kernel),
                    _np(ffn_in.kernel)[LIVE])
                self.assertAllEqual(_np(hs["ffn_out"].kernel),
                                    _np(ht["ffn_out"].kernel)[:, LIVE])
                for norm in ("_self_attention_layer_norm",
                             "_feedforward_layer_norm"):
                    for a, b in zip(getattr(s, norm).weights,
                                    getattr(t, norm).weights):
                        self.assertAllEqual(_np(a), _np(b)[LIVE])

    def test_hidden_dim_keeps_dims_and_scales_the_query(self):
        teacher = dead_dims(dead_stream(causal_lm()))
        scale = np.sqrt(2 / 4)
        for data in (None, tokens()):
            student = shrink(teacher, width={"hidden_dim": 8},
                             importance_data=data)
            config = student.backbone.get_config()
            self.assertEqual((config["num_heads"], config["hidden_dim"]),
                             (4, 8))
            self._check_outer(student, teacher)
            for i in range(2):
                ht = _dense(teacher.backbone.transformer_layers[i])
                hs = _dense(student.backbone.transformer_layers[i])
                for h in range(HEADS):
                    for name, dims, f in (("q", qk_dims(h), scale),
                                          ("k", qk_dims(h), 1.0),
                                          ("v", v_dims(h), 1.0)):
                        kernel = _np(ht[name].kernel)[LIVE][:, h][:, dims]
                        self.assertAllClose(_np(hs[name].kernel)[:, h],
                                            kernel * f, atol=1e-7)
                        self.assertAllClose(_np(hs[name].bias)[h],
                                            _np(ht[name].bias)[h][dims] * f,
                                            atol=1e-7)
                    self.assertAllEqual(
                        _np(hs["o"].kernel)[h],
                        _np(ht["o"].kernel)[h][v_dims(h)][:, LIVE])

    def test_scaled_query_reproduces_the_teachers_attention(self):
        teacher = dead_dims(dead_stream(causal_lm()))
        student = shrink(teacher, width={"hidden_dim": 0.5})
        rng = np.random.default_rng(1)
        x = rng.normal(size=(2, 6, HIDDEN)).astype("float32")
        x[..., DEAD] = 0.0
        for i in range(2):
            t = teacher.backbone.transformer_layers[i]._self_attention_layer
            s = student.backbone.transformer_layers[i]._self_attention_layer
            expected = _np(t(x, x))[..., LIVE]
            got = _np(s(x[..., LIVE], x[..., LIVE]))
            self.assertAllClose(got, expected, atol=1e-5, rtol=1e-5)
            # Without the query scaling the scores would be sqrt(2) larger.
            self.assertGreater(np.abs(got).max(), 1e-3)

    @pytest.mark.slow
    def test_pruned_causal_lm_generates_and_saves(self):
        teacher = causal_lm()
        student = shrink(teacher, depth=1, importance_data=tokens(),
                         width={"num_heads": 2, "hidden_dim": 4,
                                "intermediate_dim": 0.5})
        self.assertIsInstance(student, keras_hub.models.GPT2CausalLM)
        config = student.backbone.get_config()
        self.assertEqual(
            [config[k] for k in ("num_layers", "num_heads", "hidden_dim",
                                 "intermediate_dim")], [1, 2, 4, 6])
        self.assertEqual(student.backbone.transformer_layers[0]
                         ._self_attention_layer._key_dim, 2)
        prompt = {"token_ids": np.array([[5, 6, 7, 0, 0, 0]], "int32"),
                  "padding_mask": np.array([[1, 1, 1, 0, 0, 0]], "int32")}
        out = student.generate(prompt, max_length=6, stop_token_ids=None)
        self.assertAllEqual(np.asarray(out["token_ids"])[0, :3], [5, 6, 7])
        path = os.path.join(self.get_temp_dir(), "lm.keras")
        student.save(path)
        loaded = keras.saving.load_model(path, compile=False)
        self.assertEqual(loaded.backbone.get_config(), config)
        x = tokens()
        self.assertAllClose(_np(loaded(x)),
                            _np(student(x)), atol=0, rtol=0)

    @pytest.mark.slow
    def test_opt_backbone(self):
        teacher = causal_lm(cls="OPT")
        x = tokens()
        same = shrink(teacher, width={"num_heads": 1.0}, importance_data=x)
        self.assertAllClose(_np(same(x)),
                            _np(teacher(x)), atol=0, rtol=0)
        student = shrink(teacher, width={"num_heads": 1}, importance_data=x)
        self.assertEqual(student.backbone.hidden_dim, 4)
        self.assertEqual(_np(student(x)).shape, (4, 8, 30))

    def test_bad_widths(self):
        teacher = causal_lm(1)
        for width, error, message in (
                ({"num_heads": 0}, ValueError, "between 1 and 4 `num_heads`"),
                ({"num_heads": 5}, ValueError, "between 1 and 4 `num_heads`"),
                ({"num_heads": 1.5}, ValueError, r"fraction in \(0, 1\]"),
                ({"hidden_dim": 0.0}, ValueError, r"fraction in \(0, 1\]"),
                ({"num_heads": "2"}, TypeError, "fraction in"),
                ({"hidden_dim": 6}, ValueError, "multiple of the 4 kept"),
                ({"hidden_dim": 32}, ValueError, "between 1 and 16"),
                ({"num_heads": 2, "hidden_dim": 12}, ValueError,
                 r"at most 2 \* 4"),
                ({"num_heads": 0.5, "hidden_dim": 1.0}, ValueError,
                 "wider than the teacher's head width 4"),
                ({"num_query_heads": 1}, ValueError, "may only hold")):
            with self.assertRaisesRegex(error, message):
                shrink(teacher, width=width)

    def test_unsupported_backbones_are_named(self):
        llama = keras_hub.models.LlamaBackbone(
            vocabulary_size=20, num_layers=1, num_query_heads=2,
            num_key_value_heads=1, hidden_dim=8, intermediate_dim=8)
        with self.assertRaisesRegex(
                ValueError, "LlamaBackbone has no `num_heads`.*"
                "Prune `intermediate_dim` and depth"):
            shrink(llama, width={"hidden_dim": 0.5})
        neox = keras_hub.models.GPTNeoXBackbone(
            vocabulary_size=20, num_layers=1, num_heads=2, hidden_dim=8,
            intermediate_dim=8, max_sequence_length=8)
        with self.assertRaisesRegex(ValueError, "GPTNeoXBackbone has layer "
                                    "'transformer_layer_0' of type"):
            shrink(neox, width={"num_heads": 1})


class CopyGuardsTest(TestCase):
    """The weight copy refuses what it cannot map one to one."""

    def test_weight_lists_of_different_length(self):
        from keras_kd.students import _hub_width

        old = keras.layers.Dense(3)
        old.build((None, 2))
        new = keras.layers.Dense(3, use_bias=False)
        new.build((None, 2))
        with self.assertRaisesRegex(ValueError, "2 weights in the teacher "
                                    "and 1 in the new model"):
            list(_hub_width.weight_pairs(old, new))

    def test_sliced_shape_mismatch(self):
        from keras_kd.students import _hub_width

        old = keras.layers.Dense(3)
        old.build((None, 2))
        new = keras.layers.Dense(2)
        new.build((None, 2))
        before = _np(new.kernel)
        with self.assertRaisesRegex(ValueError, r"shape \(2, 3\) after "
                                    r"slicing and \(2, 2\)"):
            _hub_width.assign(old.kernel, _np(old.kernel), new.kernel)
        np.testing.assert_array_equal(_np(new.kernel), before)
