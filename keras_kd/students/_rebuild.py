"""Rebuilding a pruned graph: `shrink`'s new Sequential or Functional
model, with the kept channels of each group (`keep`) and without the
dropped residual blocks (`drop`), every weight a slice of the teacher's.
"""

import collections

import keras
import numpy as np
from keras import layers as L

from keras_kd.utils import keras_compat


def _slice_weights(layer, kind, in_map, group, keep):
    """The layer's weights (in `layer.weights` order), sliced."""
    weights = [np.asarray(keras.ops.convert_to_numpy(v)) for v in
               layer.weights]
    names = [v.name for v in layer.weights]
    if kind is None or kind in ("pass",):
        return weights
    out = None
    if group is not None:
        mask = keep.get(group.root())
        out = np.arange(group.size) if mask is None else np.nonzero(mask)[0]
    pos = in_map.kept_positions(keep) if in_map is not None else None
    sliced = []
    for name, w in zip(names, weights):
        if kind in ("dense", "conv") and name == "kernel":
            w = np.take(np.take(w, pos, axis=-2), out, axis=-1)
        elif kind in ("dense", "conv") and name == "bias":
            w = w[out]
        elif kind == "embedding" and name == "embeddings":
            w = w[:, out]
        elif kind == "depthwise" and name == "kernel":
            w = np.take(w, pos, axis=-2)
        elif kind == "depthwise" and name == "bias":
            mult = layer.depth_multiplier
            w = w.reshape(-1, mult)[pos].reshape(-1)
        elif kind == "norm":
            w = w[pos]
        else:
            raise ValueError(
                f"Layer '{layer.name}' ({type(layer).__name__}) holds a "
                f"weight {name!r} that shrink does not know how to slice. "
                "Leave this layer's channels out of `width`.")
        sliced.append(w)
    return sliced


def _new_config(layer, kind, group, keep):
    config = layer.get_config()
    mask = keep.get(group.root()) if group is not None else None
    if mask is not None:
        key = {"dense": "units", "conv": "filters",
               "embedding": "output_dim"}[kind]
        config[key] = int(mask.sum())
    return config


def rebuild(model, analysis, keep=None, drop=()):
    """A new model of `model`'s graph with the kept channels and without
    the dropped residual blocks (`drop`: `Block`s)."""
    keep = keep or {}
    skipped, alias = set(), {}
    for block in drop:
        skipped.update(id(n) for n in block.body)
        skipped.add(id(block.add))
        alias[id(block.add.output_tensors[0])] = id(block.shortcut)
    tensors, new_layers, weights = {}, {}, []
    for node in analysis.nodes:
        if id(node) in skipped:
            continue
        layer = node.operation
        if isinstance(layer, L.InputLayer):
            new = L.InputLayer.from_config(layer.get_config())
            tensors[id(node.output_tensors[0])] = new.output
            continue
        kind, in_map, group = analysis.info.get(layer.name, (None, None, None))
        new = new_layers.get(layer.name)
        if new is None:
            new = type(layer).from_config(_new_config(layer, kind, group,
                                                      keep))
            new_layers[layer.name] = new
            weights.append((new, _slice_weights(layer, kind, in_map, group,
                                                keep)))
        args, kwargs = keras_compat.replay_arguments(node, tensors)
        outputs = new(*args, **kwargs)
        for t, o in zip(node.output_tensors, keras.tree.flatten(outputs)):
            tensors[id(t)] = o
        for t_id, s_id in alias.items():
            if s_id in tensors and t_id not in tensors:
                tensors[t_id] = tensors[s_id]
    for t_id, s_id in alias.items():
        tensors.setdefault(t_id, tensors.get(s_id))
    # Resolve chains of aliases (a dropped block feeding a dropped block).
    for _ in range(len(alias)):
        for t_id, s_id in alias.items():
            if tensors.get(t_id) is None and tensors.get(s_id) is not None:
                tensors[t_id] = tensors[s_id]
    for new, values in weights:
        if len(new.weights) != len(values):
            raise ValueError(
                f"Layer '{new.name}' ({type(new).__name__}) of the new model "
                f"has {len(new.weights)} weights where the teacher's has "
                f"{len(values)}; shrink cannot copy it.")
        for variable, value in zip(new.weights, values):
            if tuple(variable.shape) != value.shape:
                raise ValueError(
                    f"Layer '{new.name}' ({type(new).__name__}): weight "
                    f"{variable.name!r} has shape {tuple(variable.shape)} in "
                    f"the new model and {value.shape} sliced from the "
                    "teacher; shrink cannot copy it consistently.")
            variable.assign(value)
    graph = analysis.graph

    def new_tensor(t):
        return tensors[id(t)]

    if isinstance(model, keras.Sequential):
        order = [new_layers[n.operation.name] for n in analysis.nodes
                 if id(n) not in skipped
                 and not isinstance(n.operation, L.InputLayer)]
        source = graph.inputs[0]
        return keras.Sequential(
            [keras.Input(batch_shape=source.shape, dtype=source.dtype)]
            + order, name=model.name)
    inputs = keras.tree.map_structure(new_tensor,
                                     keras_compat.input_structure(graph))
    outputs = keras.tree.map_structure(new_tensor,
                                      keras_compat.output_structure(graph))
    return keras.Model(inputs, outputs, name=model.name)


class Block:
    """A residual block: `add = Add([shortcut, branch(shortcut)])`.

    `body` holds the nodes of the branch: every node on a path from
    `shortcut` to the Add's other input. The branch reads nothing but
    `shortcut` and nothing outside reads the branch, and the Add's output has
    the shortcut's shape, so the block can be replaced by its shortcut.
    """

    def __init__(self, add, shortcut, body):
        self.add = add
        self.shortcut = shortcut
        self.body = body
        self.name = add.operation.name


def residual_blocks(analysis):
    nodes = analysis.nodes
    producer = {id(t): n for n in nodes for t in n.output_tensors}
    consumers = collections.defaultdict(list)
    for n in nodes:
        for t in n.input_tensors:
            consumers[id(t)].append(n)
    outputs = {id(t) for t in analysis.graph.outputs}
    blocks = []
    for node in nodes:
        if not isinstance(node.operation, L.Add) or len(
                node.input_tensors) != 2:
            continue
        out = node.output_tensors[0]
        a, b = node.input_tensors
        for s, r in ((a, b), (b, a)):
            if tuple(s.shape) != tuple(out.shape) or id(s) == id(r):
                continue
            body = _branch(s, r, producer)
            if not body:
                continue
            ids = {id(n) for n in body}
            closed = all(
                id(t) not in outputs and all(
                    id(c) in ids or c is node for c in consumers[id(t)])
                for n in body for t in n.output_tensors)
            if closed:
                blocks.append(Block(node, s, body))
                break
    inner = set()
    for block in blocks:
        ids = {id(n) for n in block.body}
        inner.update(id(other.add) for other in blocks if id(other.add) in ids)
    return [b for b in blocks if id(b.add) not in inner]


def _branch(s, r, producer):
    body, stack, seen = [], [r], set()
    while stack:
        t = stack.pop()
        if id(t) == id(s) or id(t) in seen:
            continue
        seen.add(id(t))
        n = producer.get(id(t))
        if n is None or isinstance(n.operation, L.InputLayer):
            return None
        if n not in body:
            body.append(n)
        stack.extend(n.input_tensors)
    return body
