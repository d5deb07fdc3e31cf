"""Depth and FFN-width pruning of KerasHub transformer backbones and tasks.

A KerasHub backbone is rebuilt from its own config with a smaller
`num_layers` (and `intermediate_dim`), then every weight is copied from the
teacher: embeddings, final norm and task head by layer name, kept
transformer layer `j` from the teacher's layer `keep[j]`, with the FFN's
intermediate axis sliced to the kept channels of that layer.

Heads are not pruned: KerasHub's transformer layers derive the head width as
`hidden_dim // num_heads`, so fewer heads at the same `hidden_dim` would make
every head wider and no teacher weight would fit. `hidden_dim` is not pruned
either (it would change every LayerNorm's statistics and each head's width).
"""

import contextlib
import sys

import keras
import numpy as np

WIDTH_KEYS = ("intermediate_dim",)


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


def _intermediate(width, config):
    if width is None:
        return None
    size = config.get("intermediate_dim")
    if size is None:
        raise ValueError(
            "Argument `width` prunes `intermediate_dim`, which this KerasHub "
            "backbone's config does not have. Pass `width=None`.")
    value = width
    if isinstance(width, dict):
        unknown = sorted(set(width) - set(WIDTH_KEYS))
        if "num_heads" in unknown or "num_query_heads" in unknown:
            raise ValueError(
                "Argument `width` cannot prune attention heads of a KerasHub "
                "backbone: its transformer layers compute the head width as "
                "`hidden_dim // num_heads`, so fewer heads at the same "
                "`hidden_dim` make every head wider and no teacher weight "
                "fits. Prune `intermediate_dim` (and depth) instead. "
                f"Received: width={width!r}")
        if unknown:
            raise ValueError(
                "Argument `width` of a KerasHub backbone may only hold "
                f"{list(WIDTH_KEYS)}; `hidden_dim` is not pruned (every "
                "LayerNorm and head would change). Received: "
                f"width={width!r}")
        value = width.get("intermediate_dim")
        if value is None:
            return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(
            "Argument `width` must be a fraction in (0, 1] or a number of "
            f"channels. Received: width={width!r}")
    if isinstance(value, float):
        if not 0 < value <= 1:
            raise ValueError(
                "Argument `width` must be a fraction in (0, 1]. Received: "
                f"width={width!r}")
        return max(1, int(round(value * size)))
    if not 1 <= value <= size:
        raise ValueError(
            f"Argument `width` must keep between 1 and {size} FFN channels "
            f"(`intermediate_dim`). Received: width={width!r}")
    return value


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
    inter = _intermediate(width, config)
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
    new_backbone = type(backbone).from_config(new_config)
    new_layers = list(new_backbone.transformer_layers)
    inside = {id(layer) for layer in layers}
    for layer in backbone.layers:
        if id(layer) in inside or not layer.weights:
            continue
        _copy(layer, new_backbone.get_layer(layer.name))
    for j, i in enumerate(kept):
        _copy(layers[i], new_layers[j], masks.get(i),
              config.get("intermediate_dim"))
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
        _copy(layer, new_task.get_layer(layer.name))
    return new_task


def _copy(old, new, kept=None, size=None):
    """Copies `old`'s weights into `new`, slicing the axes that shrank to
    the intermediate channels `kept` (of `size` in the teacher)."""
    if len(old.weights) != len(new.weights):
        raise ValueError(
            f"Layer '{old.name}' ({type(old).__name__}) has "
            f"{len(old.weights)} weights in the teacher and "
            f"{len(new.weights)} in the new model; shrink cannot copy it.")
    for source, target in zip(old.weights, new.weights):
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
        if value.shape != tuple(target.shape):
            raise ValueError(
                f"Weight {source.path!r} has shape {value.shape} in the "
                f"teacher and {tuple(target.shape)} in the new model; "
                "shrink cannot copy it consistently.")
        target.assign(value)
