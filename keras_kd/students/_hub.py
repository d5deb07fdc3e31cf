"""Depth and FFN-width pruning of KerasHub transformer backbones and tasks.

A KerasHub backbone is rebuilt from its own config with a smaller
`num_layers` (and `intermediate_dim`), then every weight is copied from the
teacher: embeddings, final norm and task head by layer name, kept
transformer layer `j` from the teacher's layer `keep[j]`, with the FFN's
intermediate axis sliced to the kept channels of that layer.

With `num_heads` or `hidden_dim` in `width`, heads, head dims and the
hidden (residual-stream) channels are pruned too, by `_hub_width` (decoder
`TransformerDecoder` backbones: GPT-2, OPT); KerasHub derives the head
width as `hidden_dim // num_heads`, so the new config carries both.
"""

import contextlib
import sys

import keras
import numpy as np

from keras_kd.students import _hub_width

WIDTH_KEYS = _hub_width.WIDTH_KEYS
_recording = _hub_width._recording


def is_hub_model(model):
    keras_hub = sys.modules.get("keras_hub")
    if keras_hub is None:
        return False
    return isinstance(model, (keras_hub.models.Backbone,
                              keras_hub.models.Task))


def _split(teacher):
    import keras_hub

    if isinstance(teacher, keras_hub.models.Task):
        return teacher, teacher.backbone
    return None, teacher


def _batches(data, batch_size=16):
    if isinstance(data, tuple):
        data = data[0]
    if not isinstance(data, dict):
        raise TypeError(
            "Argument `importance_data` of a KerasHub model must be the "
            "backbone's inputs, a dict such as {'token_ids': ..., "
            "'padding_mask': ...} (or an `(x, y)` tuple of one). Received: "
            f"importance_data of type {type(data).__name__}")
    n = len(next(iter(data.values())))
    if n == 0:
        raise ValueError("Argument `importance_data` holds no samples.")
    for i in range(0, n, batch_size):
        yield {k: np.asarray(v[i:i + batch_size]) for k, v in data.items()}


def _numpy(x):
    return np.asarray(keras.ops.convert_to_numpy(x), "float64")


def _ffn_dense(layer, name):
    dense = getattr(layer, name, None)
    if dense is None:
        raise ValueError(
            f"Layer '{layer.name}' ({type(layer).__name__}) has no `{name}`, "
            "so shrink cannot find its feed-forward channels. shrink prunes "
            "`intermediate_dim` of KerasHub TransformerDecoder-style layers "
            "(GPT-2, Llama); pass `width=None` for this model.")
    return dense


def _layer_scores(backbone, layers, data):
    """Per layer: 1 - mean cosine(input, output) over real tokens, and the
    mean absolute activation of each FFN channel (the input of
    `_feedforward_output_dense`)."""
    n = len(layers)
    block = np.zeros(n)
    ffn = [0.0] * n
    tokens = [0.0]
    mask = [None]

    def block_recorder(i):
        def record(args, output):
            x = _numpy(args[0])
            y = _numpy(output[0] if isinstance(output, (tuple, list))
                       else output)
            cos = (x * y).sum(-1) / (np.linalg.norm(x, axis=-1)
                                     * np.linalg.norm(y, axis=-1) + 1e-12)
            block[i] += ((1.0 - cos) * mask[0]).sum()
        return record

    def ffn_recorder(i):
        def record(args, output):
            a = np.abs(_numpy(args[0]))
            ffn[i] = ffn[i] + (a * mask[0][..., None]).reshape(
                -1, a.shape[-1]).sum(0)
        return record

    with contextlib.ExitStack() as stack:
        for i, layer in enumerate(layers):
            stack.enter_context(_recording(layer, block_recorder(i)))
            dense = getattr(layer, "_feedforward_output_dense", None)
            if dense is not None:
                stack.enter_context(_recording(dense, ffn_recorder(i)))
        for batch in _batches(data):
            ids = next(iter(batch.values()))
            m = batch.get("padding_mask", np.ones(ids.shape[:2]))
            mask[0] = np.asarray(m, "float64")
            tokens[0] += mask[0].sum()
            backbone(batch, training=False)
    total = max(tokens[0], 1.0)
    return block / total, [f / total if np.ndim(f) else None for f in ffn]


def _magnitude(layer):
    """L1 norm of the kernel column producing each FFN channel (of every
    dense that writes the intermediate axis), normalised and summed."""
    score = 0.0
    for name in ("_feedforward_intermediate_dense", "_feedforward_gate_dense"):
        dense = getattr(layer, name, None)
        if dense is None:
            continue
        w = np.abs(_numpy(dense.kernel))
        s = w.reshape(-1, w.shape[-1]).sum(0)
        score = score + s / (s.mean() + 1e-12)
    if np.ndim(score) == 0:
        _ffn_dense(layer, "_feedforward_intermediate_dense")
    return score


def shrink(teacher, depth, width, importance_data, keep, select):
    task, backbone = _split(teacher)
    layers = list(getattr(backbone, "transformer_layers", None) or [])
    config = backbone.get_config()
    if not layers or "num_layers" not in config:
        raise TypeError(
            f"shrink supports KerasHub backbones with `transformer_layers` "
            f"and a `num_layers` config. Received: teacher={teacher.name!r} "
            f"of type {type(teacher).__name__}")
    n = len(layers)
    scores = ffn_scores = None
    if importance_data is not None:
        scores, ffn_scores = _layer_scores(backbone, layers, importance_data)
    kept = select(n, depth, keep, scores, minimum=1)
    counts = _hub_width.resolve(width, config, type(backbone).__name__)
    inter = counts["intermediate_dim"]
    masks = {}
    if inter is not None:
        for i in kept:
            score = ffn_scores[i] if ffn_scores is not None and \
                ffn_scores[i] is not None else _magnitude(layers[i])
            order = np.argsort(-np.asarray(score), kind="stable")[:inter]
            mask = np.zeros(config["intermediate_dim"], bool)
            mask[order] = True
            masks[i] = np.nonzero(mask)[0]
    new_config = dict(config, num_layers=len(kept))
    if inter is not None:
        new_config["intermediate_dim"] = inter
    plan = None
    if counts["hidden_dim"] is not None:
        _hub_width.check(teacher, backbone, layers)
        plan = _hub_width.plan(backbone, layers, kept, counts,
                               importance_data, _batches)
        new_config["num_heads"] = counts["num_heads"]
        new_config["hidden_dim"] = counts["hidden_dim"]
    name = type(backbone).__name__

    def copy(old, new):
        if plan is None:
            _copy(old, new)
        else:
            _hub_width.copy_outer(old, new, plan, name)

    new_backbone = type(backbone).from_config(new_config)
    new_layers = list(new_backbone.transformer_layers)
    inside = {id(layer) for layer in layers}
    for layer in backbone.layers:
        if id(layer) in inside or not layer.weights:
            continue
        copy(layer, new_backbone.get_layer(layer.name))
    for j, i in enumerate(kept):
        if plan is None:
            _copy(layers[i], new_layers[j], masks.get(i),
                  config.get("intermediate_dim"))
        else:
            _hub_width.copy_layer(layers[i], new_layers[j], plan, i,
                                  masks.get(i))
    if task is None:
        return new_backbone
    task_config = task.get_config()
    task_config["backbone"] = new_backbone
    task_config["preprocessor"] = task.preprocessor
    new_task = type(task).from_config(task_config)
    skip = {id(backbone), id(task.preprocessor)}
    for layer in task.layers:
        if id(layer) in skip or not layer.weights:
            continue
        copy(layer, new_task.get_layer(layer.name))
    return new_task


def _copy(old, new, kept=None, size=None):
    """Copies `old`'s weights into `new`, slicing the axes that shrank to
    the intermediate channels `kept` (of `size` in the teacher)."""
    for source, target in _hub_width.weight_pairs(old, new):
        value = np.asarray(keras.ops.convert_to_numpy(source))
        for axis, (a, b) in enumerate(zip(value.shape, target.shape)):
            if a == b:
                continue
            if kept is None or a != size or b != len(kept):
                raise ValueError(
                    f"Weight {source.path!r} has shape {value.shape} in the "
                    f"teacher and {tuple(target.shape)} in the new model; "
                    "shrink cannot copy it consistently.")
            value = np.take(value, kept, axis=axis)
        _hub_width.assign(source, value, target)
