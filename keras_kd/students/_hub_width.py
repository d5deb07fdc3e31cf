"""Width keys of KerasHub `shrink`: FFN channels, attention heads and the
hidden (residual-stream) width of `TransformerDecoder` backbones.

`intermediate_dim` is sliced per layer by `_hub.py`. `num_heads` and
`hidden_dim` are pruned here, for backbones whose transformer layers are
`keras_hub.layers.TransformerDecoder` without cross-attention and whose
other weights are embeddings and LayerNorms (GPT2Backbone, OPTBackbone and
their CausalLM tasks):

- each kept layer keeps its `num_heads'` most important whole heads (mean
  absolute per-head attention output, the input of the output projection,
  on `importance_data`; else the L1 norm of the head's q/k/v/output
  weights);
- the residual stream keeps the `hidden_dim'` channels of largest mean
  absolute activation (every layer's input and the last layer's output,
  each normalised by its mean: Minitron's embedding-channel importance;
  else the L1 norm of every weight column that writes the stream), and
  every weight reading or writing the stream is sliced to them: token and
  position embeddings (and so the tied LM head), every LayerNorm, the q/k/v
  input rows, the attention and FFN output columns and the FFN input rows;
- the head width becomes `hidden_dim' / num_heads'`. When it shrinks, each
  kept head keeps its most important query/key dims (the same for q and k:
  mean |q_d| * mean |k_d|, else the product of their kernels' L1 norms) and
  value dims (mean |context_d|, else |W_v| * |W_o|), and the query kernel
  and bias are scaled by `sqrt(new_head_dim / head_dim)`, so that
  `q . k / sqrt(new_head_dim)` keeps the kept dims' original scale.

What cannot be kept: a LayerNorm over fewer channels computes its mean and
variance over those channels only, so the student is exact only when
nothing is removed; distillation repairs the rest.
"""

import contextlib
import numbers
import sys

import keras
import numpy as np

WIDTH_KEYS = ("intermediate_dim", "num_heads", "hidden_dim")


def _count(value, size, key, width):
    """A fraction of `size` or a count in [1, size]."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(
            "Argument `width` must be a fraction in (0, 1] or a number of "
            f"channels. Received: width={width!r}")
    if isinstance(value, numbers.Integral):
        if not 1 <= value <= size:
            raise ValueError(
                f"Argument `width` must keep between 1 and {size} `{key}` "
                f"of this backbone. Received: width={width!r}")
        return int(value)
    if not 0 < value <= 1:
        raise ValueError(
            "Argument `width` must be a fraction in (0, 1]. Received: "
            f"width={width!r}")
    return max(1, int(round(value * size)))


def unsupported(name, why):
    return ValueError(
        "Argument `width` prunes `num_heads` and `hidden_dim` only for "
        "KerasHub backbones built from decoder-only "
        "`keras_hub.layers.TransformerDecoder` layers (GPT2Backbone, "
        f"OPTBackbone); {name} {why}. Prune `intermediate_dim` and depth "
        "instead: width={'intermediate_dim': ...}.")


def resolve(width, config, name):
    """`{key: count or None}` for `WIDTH_KEYS` (None: unchanged, and
    `num_heads`/`hidden_dim` None when neither is asked for)."""
    counts = dict.fromkeys(WIDTH_KEYS)
    if width is None:
        return counts
    if not isinstance(width, dict):
        width = {"intermediate_dim": width}
    unknown = sorted(set(width) - set(WIDTH_KEYS))
    if unknown:
        raise ValueError(
            f"Argument `width` of a KerasHub backbone may only hold "
            f"{list(WIDTH_KEYS)}; {unknown} are not pruned (a Llama-style "
            "`num_query_heads` is not supported: prune `intermediate_dim` "
            f"and depth). Received: width={width!r}")
    for key in WIDTH_KEYS:
        if width.get(key) is not None and config.get(key) is None:
            raise ValueError(
                f"Argument `width` prunes `{key}`, which this KerasHub "
                "backbone's config does not have. Pass `width=None` or "
                f"leave `{key}` out. Received: width={width!r}")
    if width.get("intermediate_dim") is not None:
        counts["intermediate_dim"] = _count(
            width["intermediate_dim"], config["intermediate_dim"],
            "intermediate_dim", width)
    if width.get("num_heads") is None and width.get("hidden_dim") is None:
        return counts
    if "num_heads" not in config or "hidden_dim" not in config:
        raise unsupported(name, "has no `num_heads` and `hidden_dim` config")
    heads, hidden = config["num_heads"], config["hidden_dim"]
    head_dim = hidden // heads
    n = heads
    if width.get("num_heads") is not None:
        n = _count(width["num_heads"], heads, "num_heads", width)
    value = width.get("hidden_dim")
    if value is None:
        size = n * head_dim
    elif isinstance(value, numbers.Integral) and not isinstance(value, bool):
        size = _count(value, hidden, "hidden_dim", width)
        if size % n or size > n * head_dim:
            raise ValueError(
                f"Argument `width` must keep a `hidden_dim` that is a "
                f"multiple of the {n} kept heads and at most {n} * "
                f"{head_dim} (heads keep at most their width {head_dim}). "
                f"Received: width={width!r}")
    else:
        target = _count(value, hidden, "hidden_dim", width)
        dim = max(1, int(round(target / n)))
        if dim > head_dim:
            raise ValueError(
                f"Argument `width` asks for {target} hidden channels over "
                f"{n} heads, wider than the teacher's head width "
                f"{head_dim}; keep more heads or fewer channels (at most "
                f"{n * head_dim}). Received: width={width!r}")
        size = n * dim
    counts["num_heads"], counts["hidden_dim"] = n, size
    return counts


def check(teacher, backbone, layers):
    """Raises unless heads and hidden channels can be pruned."""
    keras_hub = sys.modules["keras_hub"]
    decoder = keras_hub.layers.TransformerDecoder
    name = type(backbone).__name__
    for layer in layers:
        if type(layer) is not decoder:
            raise unsupported(name, f"has layer '{layer.name}' of type "
                              f"{type(layer).__name__}")
        if getattr(layer, "_cross_attention_layer", None) is not None:
            raise unsupported(name, f"has cross-attention in layer "
                              f"'{layer.name}'")
    inside = {id(v) for layer in layers for v in layer.weights}
    for model in (teacher, backbone):
        outer = [v for v in model.weights if id(v) not in inside]
        _outer_axes(model, outer, name)


def _own(layer, names):
    out = []
    for n in names:
        v = getattr(layer, "_" + n, None)
        if v is None:
            v = getattr(layer, n, None)
        if isinstance(v, keras.Variable):
            out.append(v)
    return out


def _outer_axes(model, variables, name):
    """`{id(variable): hidden axis}` of the weights outside the transformer
    layers (embeddings and LayerNorms)."""
    keras_hub = sys.modules["keras_hub"]
    axes = {}
    for sub in model._flatten_layers(include_self=True):
        if isinstance(sub, keras.layers.LayerNormalization):
            found = [(v, 0) for v in _own(sub, ("gamma", "beta"))]
        elif isinstance(sub, keras.layers.Embedding):
            found = [(v, 1) for v in _own(sub, ("embeddings",))]
            found += [(v, 0) for v in _own(sub, ("reverse_embeddings",))]
        elif isinstance(sub, keras_hub.layers.PositionEmbedding):
            found = [(v, 1) for v in _own(sub, ("position_embeddings",))]
        else:
            continue
        axes.update((id(v), axis) for v, axis in found)
    for v in variables:
        if id(v) not in axes:
            raise ValueError(
                f"Weight {v.path!r} of {name} is neither an embedding nor a "
                "LayerNorm, so shrink cannot slice it to the kept hidden "
                "channels. Prune `intermediate_dim` and depth instead: "
                "width={'intermediate_dim': ...}.")
    return axes


def _numpy(x):
    return np.asarray(keras.ops.convert_to_numpy(x), "float64")


def _norm(s):
    s = np.asarray(s, "float64")
    return s / (s.mean() + 1e-12)


def _attention(layer):
    attn = layer._self_attention_layer
    return (attn._query_dense, attn._key_dense, attn._value_dense,
            attn._output_dense)


def _activation_scores(backbone, layers, data, batches):
    """Per layer `(head, qk, v)` and the hidden-channel score."""
    n = len(layers)
    stream = [0.0] * (n + 1)
    q, k, ctx = [0.0] * n, [0.0] * n, [0.0] * n
    mask = [None]

    def total(x, axes_kept):
        a = np.abs(_numpy(x)) * mask[0].reshape(
            mask[0].shape + (1,) * (len(x.shape) - 2))
        return a.sum((0, 1)) if axes_kept else a

    def recorder(store, i, use_output=False, last=None):
        def record(args, output):
            store[i] = store[i] + total(output if use_output else args[0],
                                        True)
            if last is not None:
                stream[n] = stream[n] + total(output, True)
        return record

    with contextlib.ExitStack() as stack:
        enter = stack.enter_context
        for i, layer in enumerate(layers):
            query, key, _, out = _attention(layer)
            enter(_recording(layer, recorder(
                stream, i, last=True if i == n - 1 else None)))
            enter(_recording(query, recorder(q, i, use_output=True)))
            enter(_recording(key, recorder(k, i, use_output=True)))
            enter(_recording(out, recorder(ctx, i)))
        for batch in batches(data):
            ids = next(iter(batch.values()))
            mask[0] = np.asarray(batch.get(
                "padding_mask", np.ones(ids.shape[:2])), "float64")
            backbone(batch, training=False)
    hidden = sum(_norm(s) for s in stream)
    per_layer = [(c.mean(-1), a * b, c) for a, b, c in zip(q, k, ctx)]
    return per_layer, hidden


def _magnitude_scores(model, layers, name):
    """Weight-magnitude scores, as `_activation_scores`."""
    per_layer, writers = [], []
    for layer in layers:
        q, k, v, o = (np.abs(_numpy(d._kernel)) for d in _attention(layer))
        q, k, v = (w.sum(0) for w in (q, k, v))
        writers.append(o.sum((0, 1)))
        o = o.sum(2)
        head = sum(_norm(w.sum(-1)) for w in (q, k, v, o))
        per_layer.append((head, q * k, v * o))
        ffn = np.abs(_numpy(layer._feedforward_output_dense._kernel))
        writers.append(ffn.sum(0))
    inside = {id(v) for layer in layers for v in layer.weights}
    outer = [v for v in model.weights if id(v) not in inside]
    axes = _outer_axes(model, outer, name)
    for v in outer:
        if len(v.shape) == 2 and axes[id(v)] == 1:  # embedding tables
            writers.append(np.abs(_numpy(v)).sum(0))
    return per_layer, sum(_norm(w) for w in writers)


def _top(score, count):
    return np.sort(np.argsort(-np.asarray(score), kind="stable")[:count])


def plan(backbone, layers, kept, counts, data, batches):
    """The kept hidden channels and, per kept layer, heads and head dims."""
    config = backbone.get_config()
    heads, hidden = config["num_heads"], config["hidden_dim"]
    n, size = counts["num_heads"], counts["hidden_dim"]
    dim, new_dim = hidden // heads, size // n
    if data is not None:
        per_layer, score = _activation_scores(backbone, layers, data,
                                              batches)
    else:
        per_layer, score = _magnitude_scores(backbone, layers,
                                             type(backbone).__name__)
    result = {"hidden": _top(score, size), "size": hidden,
              "scale": float(np.sqrt(new_dim / dim)), "layers": {}}
    for i in kept:
        head, qk, v = per_layer[i]
        h = _top(head, n)
        result["layers"][i] = {
            "heads": h,
            "qk": np.stack([_top(qk[j], new_dim) for j in h]),
            "v": np.stack([_top(v[j], new_dim) for j in h]),
        }
    return result


def _heads(w, heads, dims, axis):
    """`w[..., heads[j], dims[j, e], ...]` with the head axis `axis`."""
    w = np.take(w, heads, axis=axis)
    index = dims.reshape(dims.shape + (1,) * (w.ndim - axis - 2))
    index = index.reshape((1,) * axis + index.shape)
    return np.take_along_axis(w, index, axis=axis + 1)


def _scaled(w, scale):
    return (w.astype("float64") * scale).astype(w.dtype)


def _layer_slicers(layer, p, ffn):
    hc, s = p["hidden"], p["scale"]
    lp = p["layers"]
    query, key, value, out = _attention(layer)
    every = slice(None) if ffn is None else ffn
    cut = {}

    def add(layer_, kernel=None, bias=None):
        if kernel is not None:
            cut[id(layer_._kernel)] = kernel
        if bias is not None and layer_.bias is not None:
            cut[id(layer_.bias)] = bias

    def qkv(dims, scale=1.0):
        return (lambda w: _scaled(_heads(w[hc], lp["heads"], lp[dims], 1),
                                  scale),
                lambda b: _scaled(_heads(b, lp["heads"], lp[dims], 0),
                                  scale))
    add(query, *qkv("qk", s))
    add(key, *qkv("qk"))
    add(value, *qkv("v"))
    add(out, lambda w: _heads(w, lp["heads"], lp["v"], 0)[..., hc],
        lambda b: b[hc])
    add(layer._feedforward_intermediate_dense, lambda w: w[hc][:, every],
        lambda b: b[every])
    add(layer._feedforward_output_dense, lambda w: w[every][:, hc],
        lambda b: b[hc])
    for norm in (layer._self_attention_layer_norm,
                 layer._feedforward_layer_norm):
        for v in _own(norm, ("gamma", "beta")):
            cut[id(v)] = lambda x: x[hc]
    return cut


def copy_layer(old, new, p, i, ffn):
    """Copies kept transformer layer `old` (teacher index `i`) into `new`,
    slicing heads, head dims, hidden channels and FFN channels `ffn`."""
    layer_plan = dict(p, layers=p["layers"][i])
    _assign(old, new, _layer_slicers(old, layer_plan, ffn))


def copy_outer(old, new, p, name):
    """Copies an embedding or LayerNorm layer `old` (or one holding only
    those) into `new`, slicing its hidden axis to the kept channels."""
    hc = p["hidden"]
    axes = _outer_axes(old, old.weights, name)
    _assign(old, new, {key: (lambda w, a=a: np.take(w, hc, axis=a))
                       for key, a in axes.items()})


def weight_pairs(old, new):
    """`zip(old.weights, new.weights)`, refusing layers whose weight lists
    differ (shrink could not tell which weight goes where)."""
    if len(old.weights) != len(new.weights):
        raise ValueError(
            f"Layer '{old.name}' ({type(old).__name__}) has "
            f"{len(old.weights)} weights in the teacher and "
            f"{len(new.weights)} in the new model; shrink cannot copy it.")
    return zip(old.weights, new.weights)


def assign(source, value, target):
    """Assigns the sliced teacher weight `value` to `target`, refusing a
    shape mismatch instead of broadcasting or failing deep in the backend."""
    if value.shape != tuple(target.shape):
        raise ValueError(
            f"Weight {source.path!r} has shape {value.shape} after "
            f"slicing and {tuple(target.shape)} in the new model; "
            "shrink cannot copy it consistently.")
    target.assign(value)


def _assign(old, new, cut):
    for source, target in weight_pairs(old, new):
        if id(source) not in cut:
            raise ValueError(
                f"Weight {source.path!r} of layer '{old.name}' is not one "
                "shrink knows how to slice to fewer heads or hidden "
                "channels. Prune `intermediate_dim` and depth instead.")
        value = cut[id(source)](np.asarray(
            keras.ops.convert_to_numpy(source)))
        assign(source, value, target)


@contextlib.contextmanager
def _recording(layer, record):
    """Calls `record(args, output)` on each call of `layer` (eager)."""
    original = layer.call

    def call(*args, **kwargs):
        output = original(*args, **kwargs)
        record(args, output)
        return output

    layer.call = call
    try:
        yield
    finally:
        del layer.call
