"""Width and depth pruning of Sequential and Functional Keras models.

The graph is read from the model's nodes; every tensor's last axis is
described by a *channel map*: for each position, the channel group it belongs
to and the channel's index inside that group. A group is a set of channels
that must be pruned together: the outputs of a Dense, Conv or Embedding layer
(its *producer*), carried unchanged through BatchNormalization,
LayerNormalization, DepthwiseConv, activations, pooling and dropout, merged
with other groups by Add/Subtract/Average/Maximum/Minimum/Multiply (a
residual group: every branch keeps the same channel set), concatenated by
Concatenate and tiled by Flatten. The kept channels of each group are chosen
once, then each layer slices its weights by the kept positions of its input
map and of its own group.

Private Keras attributes read here: `Functional._nodes_by_depth`,
`Functional._inputs_struct`/`_outputs_struct`, `Sequential._functional` and
`Node.arguments.fill_in` (how Functional itself replays its graph).
"""

import collections
import difflib

import keras
import numpy as np
from keras import layers as L

_PASS_THROUGH = tuple(getattr(L, name) for name in (
    "ReLU", "LeakyReLU", "ELU", "Dropout", "SpatialDropout1D",
    "SpatialDropout2D", "SpatialDropout3D", "GaussianNoise", "GaussianDropout",
    "AlphaDropout", "MaxPooling1D", "MaxPooling2D", "MaxPooling3D",
    "AveragePooling1D", "AveragePooling2D", "AveragePooling3D",
    "GlobalAveragePooling1D", "GlobalAveragePooling2D",
    "GlobalAveragePooling3D", "GlobalMaxPooling1D", "GlobalMaxPooling2D",
    "GlobalMaxPooling3D", "ZeroPadding1D", "ZeroPadding2D", "ZeroPadding3D",
    "Cropping1D", "Cropping2D", "Cropping3D", "UpSampling1D", "UpSampling2D",
    "UpSampling3D", "Identity", "ActivityRegularization") if hasattr(L, name))
_MERGE = (L.Add, L.Subtract, L.Average, L.Maximum, L.Minimum, L.Multiply)
# Activations that mix channels (not element-wise).
_CHANNEL_MIXING = ("softmax", "log_softmax")
SUPPORTED = ("Dense, Conv1D/2D/3D (groups=1), Embedding, DepthwiseConv1D/2D, "
             "BatchNormalization, LayerNormalization, Add/Subtract/Average/"
             "Maximum/Minimum/Multiply, Concatenate, Flatten, element-wise "
             "activations, pooling, padding and dropout")


class Group:
    """Channels pruned together (union-find over residual merges)."""

    def __init__(self, size):
        self.size = size
        self.parent = self
        self.producers = []  # layers whose output channels these are
        self.fixed = None  # why the group is kept whole (input, output)
        self.blocked = None  # (layer, why) the group cannot be pruned
        self.tensors = []  # symbolic tensors holding exactly this group

    def root(self):
        group = self
        while group.parent is not group:
            group = group.parent
        return group


def _union(groups, layer):
    roots = []
    for g in groups:
        r = g.root()
        if r not in roots:
            roots.append(r)
    first = roots[0]
    for r in roots[1:]:
        if r.size != first.size:
            raise ValueError(
                f"Layer '{layer.name}' ({type(layer).__name__}) merges "
                f"channel groups of sizes {first.size} and {r.size}.")
        r.parent = first
        first.producers += r.producers
        first.tensors += r.tensors
        first.fixed = first.fixed or r.fixed
        first.blocked = first.blocked or r.blocked
    return first


class ChannelMap:
    """For each position of a tensor's last axis: its group and index."""

    def __init__(self, groups, index):
        self.groups = list(groups)
        self.index = np.asarray(index, "int64")

    @classmethod
    def new(cls, group):
        return cls([group] * group.size, np.arange(group.size))

    def __len__(self):
        return len(self.index)

    def pure(self):
        """The group if the map is exactly one whole group, in order."""
        if not self.groups:
            return None
        root = self.groups[0].root()
        if all(g.root() is root for g in self.groups) and \
                len(self) == root.size and \
                np.array_equal(self.index, np.arange(root.size)):
            return root
        return None

    def roots(self):
        seen = []
        for g in self.groups:
            r = g.root()
            if r not in seen:
                seen.append(r)
        return seen

    def kept_positions(self, keep):
        """Positions kept when each root group keeps `keep[root]` (a bool
        mask; groups missing from `keep` keep everything)."""
        mask = np.ones(len(self), bool)
        for p, (g, i) in enumerate(zip(self.groups, self.index)):
            m = keep.get(g.root())
            if m is not None:
                mask[p] = m[i]
        return np.nonzero(mask)[0]

    def repeat(self, times):
        return ChannelMap([g for g in self.groups for _ in range(times)],
                          np.repeat(self.index, times))

    def tile(self, times):
        return ChannelMap(self.groups * times, np.tile(self.index, times))

    @staticmethod
    def concat(maps):
        return ChannelMap([g for m in maps for g in m.groups],
                          np.concatenate([m.index for m in maps]))


def graph_of(model):
    """The Functional graph of a Sequential or Functional model."""
    if isinstance(model, keras.Sequential):
        graph = getattr(model, "_functional", None)
        if graph is None:
            raise ValueError(
                "Argument `teacher` is a Sequential model that is not built, "
                "so it has no graph to prune. Build it first: start it with "
                "`keras.Input(shape)` or call it once on data. Received: "
                f"teacher={model.name!r}")
        return graph
    if getattr(model, "_nodes_by_depth", None) is None:
        raise TypeError(
            "Argument `teacher` must be a Sequential or Functional Keras model "
            "(or a KerasHub backbone or task), whose layer graph shrink can "
            "follow; a subclassed model has none. Received: teacher="
            f"{model.name!r} of type {type(model).__name__}. Rebuild it with "
            "the Functional API.")
    return model


def nodes_of(graph):
    """Nodes in topological order (inputs first)."""
    by_depth = graph._nodes_by_depth
    return [n for d in sorted(by_depth, reverse=True) for n in by_depth[d]]


def _is_channels_last(layer):
    return getattr(layer, "data_format", "channels_last") == "channels_last"


def _last_axis(axis, rank):
    axes = axis if isinstance(axis, (list, tuple)) else [axis]
    return len(axes) == 1 and axes[0] in (-1, rank - 1)


def _kind(layer, node):
    """How `layer` carries channels: a string naming its handler."""
    if isinstance(layer, L.InputLayer):
        return "input"
    if isinstance(layer, (L.Conv1DTranspose, L.Conv2DTranspose,
                          L.Conv3DTranspose, L.SeparableConv1D,
                          L.SeparableConv2D)):
        return None
    if getattr(layer, "quantization_mode", None) or getattr(
            layer, "lora_enabled", False):
        return None
    if isinstance(layer, (L.DepthwiseConv1D, L.DepthwiseConv2D)):
        return "depthwise" if _is_channels_last(layer) else None
    if isinstance(layer, (L.Conv1D, L.Conv2D, L.Conv3D)):
        ok = _is_channels_last(layer) and getattr(layer, "groups", 1) == 1
        return "conv" if ok else None
    if type(layer) is L.Dense:
        return "dense"
    if type(layer) is L.Embedding:
        return "embedding"
    rank = len(node.input_tensors[0].shape) if node.input_tensors else 0
    if isinstance(layer, L.BatchNormalization):
        return "norm" if _last_axis(layer.axis, rank) else None
    if isinstance(layer, L.LayerNormalization):
        return "norm" if _last_axis(layer.axis, rank) else None
    if isinstance(layer, L.Activation):
        name = getattr(layer.activation, "__name__", "")
        return None if name in _CHANNEL_MIXING else "pass"
    if isinstance(layer, _PASS_THROUGH):
        return "pass" if _is_channels_last(layer) else None
    if isinstance(layer, _MERGE):
        return "merge"
    if isinstance(layer, L.Concatenate):
        return "concat" if _last_axis(layer.axis, rank) else None
    if isinstance(layer, L.Flatten):
        shape = node.input_tensors[0].shape[1:-1]
        ok = _is_channels_last(layer) and all(d is not None for d in shape)
        return "flatten" if ok else None
    return None


class Analysis:
    """Channel maps and groups of a model's graph."""

    def __init__(self, model):
        self.model = model
        self.graph = graph_of(model)
        self.nodes = nodes_of(self.graph)
        self.maps = {}  # id(tensor) -> ChannelMap
        self.info = {}  # layer name -> (kind, in_map, group)
        calls = collections.Counter(id(n.operation) for n in self.nodes)
        for node in self.nodes:
            self._visit(node, calls[id(node.operation)] > 1)
        for t in self.graph.outputs:
            for g in self._map(t).roots():
                g.fixed = g.fixed or "a model output"

    def _map(self, tensor):
        cmap = self.maps.get(id(tensor))
        if cmap is None:  # a tensor without channels (a scalar)
            cmap = ChannelMap.new(self._fixed_group(1, "no channels"))
        return cmap

    def _fixed_group(self, size, why):
        group = Group(size)
        group.fixed = why
        return group

    def _new_map(self, tensor, group):
        cmap = ChannelMap.new(group)
        group.tensors.append(tensor)
        return cmap

    def _visit(self, node, shared):
        layer = node.operation
        ins, outs = list(node.input_tensors), list(node.output_tensors)
        kind = _kind(layer, node)
        if shared and kind not in ("input", "pass", "merge", "concat",
                                   "flatten"):
            kind = None
        in_maps = [self._map(t) for t in ins]

        def width(t):
            return int(t.shape[-1]) if t.shape and t.shape[-1] else 1

        if kind == "input":
            for t in outs:
                self.maps[id(t)] = ChannelMap.new(
                    self._fixed_group(width(t), "a model input"))
            return
        if kind in ("dense", "conv", "embedding"):
            group = Group(width(outs[0]))
            group.producers.append(layer)
            self.maps[id(outs[0])] = self._new_map(outs[0], group)
            self.info[layer.name] = (kind, in_maps[0] if in_maps else None,
                                     group)
            return
        if kind == "depthwise":
            self.maps[id(outs[0])] = in_maps[0].repeat(layer.depth_multiplier)
            self.info[layer.name] = (kind, in_maps[0], None)
            self._note_pure(outs[0])
            return
        if kind in ("norm", "pass"):
            if width(outs[0]) == len(in_maps[0]):
                self.maps[id(outs[0])] = in_maps[0]
                self.info[layer.name] = (kind, in_maps[0], None)
                self._note_pure(outs[0])
                return
            kind = None
        if kind == "merge":
            pure = [m.pure() for m in in_maps]
            if all(p is not None for p in pure) and len(
                    {p.size for p in pure}) == 1:
                group = _union(pure, layer)
                self.maps[id(outs[0])] = self._new_map(outs[0], group)
                return
            if all(_same_map(m, in_maps[0]) for m in in_maps):
                self.maps[id(outs[0])] = in_maps[0]
                return
            kind = None
        if kind == "concat":
            self.maps[id(outs[0])] = ChannelMap.concat(in_maps)
            return
        if kind == "flatten":
            cells = int(np.prod(ins[0].shape[1:-1]))
            self.maps[id(outs[0])] = in_maps[0].tile(cells)
            return
        # Anything else: its inputs are kept whole, its outputs are new.
        why = (f"layer '{layer.name}' ({type(layer).__name__}) takes these "
               "channels and shrink cannot slice it consistently"
               + (" (it is called more than once)" if shared else ""))
        for m in in_maps:
            for g in m.roots():
                g.blocked = g.blocked or (layer, why)
        for t in outs:
            if getattr(t, "shape", None) is not None:
                self.maps[id(t)] = ChannelMap.new(
                    self._fixed_group(width(t), "the output of "
                                      f"'{layer.name}'"))

    def _note_pure(self, tensor):
        group = self.maps[id(tensor)].pure()
        if group is not None:
            group.tensors.append(tensor)

    # ------------------------------------------------------------------

    def prunable(self):
        """`{producer layer name: root group}` of groups with producers."""
        out = {}
        for name, (kind, _, group) in self.info.items():
            if group is not None:
                out[name] = group.root()
        return out


def _group_label(group):
    return "/".join(f"'{p.name}'" for p in group.producers)


def resolve_width(analysis, width):
    """`{root group: number of channels to keep}` for `width`."""
    producers = analysis.prunable()
    counts = {}

    def check(group, name):
        if group.fixed:
            raise ValueError(
                f"Argument `width` asks to prune layer '{name}', whose "
                f"channels are {group.fixed}, which shrink keeps whole. "
                f"Remove '{name}' from `width`. Received: width={width!r}")
        if group.blocked:
            layer, why = group.blocked
            raise ValueError(
                f"Argument `width` asks to prune the channels of "
                f"{_group_label(group)}, but {why}. shrink prunes through "
                f"{SUPPORTED}. Pass `width` as a dict of the layers to prune "
                f"and leave out {_group_label(group)}, or replace "
                f"'{layer.name}'. Received: width={width!r}")

    def count(value, group, name):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise TypeError(
                "Each value of `width` must be a fraction in (0, 1] or a "
                f"number of channels. Received: width[{name!r}]={value!r}")
        if isinstance(value, float):
            if not 0 < value <= 1:
                raise ValueError(
                    "A fraction in `width` must lie in (0, 1]. Received: "
                    f"width[{name!r}]={value!r}")
            return max(1, int(round(value * group.size)))
        if not 1 <= value <= group.size:
            raise ValueError(
                f"A number of channels in `width` must lie in [1, "
                f"{group.size}] for layer '{name}' ({group.size} channels). "
                f"Received: width[{name!r}]={value!r}")
        return value

    if isinstance(width, dict):
        for name, value in width.items():
            if name not in producers:
                close = difflib.get_close_matches(str(name), producers)
                hint = f" Did you mean {close[0]!r}?" if close else ""
                raise ValueError(
                    f"Argument `width` names layer {name!r}, which is not a "
                    "Dense, Conv or Embedding layer of the teacher whose "
                    f"channels shrink can prune.{hint} Expected one of "
                    f"{sorted(producers)}. Received: width={width!r}")
            group = producers[name]
            check(group, name)
            n = count(value, group, name)
            if counts.get(group, n) != n:
                raise ValueError(
                    f"Argument `width` gives different sizes to "
                    f"{_group_label(group)}, which share one residual channel "
                    f"group. Give them one value. Received: width={width!r}")
            counts[group] = n
        return counts
    seen = []
    for name, group in producers.items():
        if group in seen or group.fixed:
            continue
        seen.append(group)
        check(group, name)
        counts[group] = count(width, group, name)
    return counts


def _iterate(data, batch_size=64):
    """Batches of `data` (an array, a dict of arrays, or `(x, y)`)."""
    if isinstance(data, tuple):
        data = data[0]
    if isinstance(data, dict):
        n = len(next(iter(data.values())))
        for i in range(0, n, batch_size):
            yield {k: np.asarray(v[i:i + batch_size]) for k, v in data.items()}
        return
    if hasattr(data, "as_numpy_iterator") or not hasattr(data, "__len__"):
        for batch in data:
            if isinstance(batch, tuple):
                batch = batch[0]
            yield batch
        return
    data = np.asarray(data)
    for i in range(0, len(data), batch_size):
        yield data[i:i + batch_size]


def _same_map(a, b):
    return len(a) == len(b) and np.array_equal(a.index, b.index) and all(
        g.root() is h.root() for g, h in zip(a.groups, b.groups))


def _mean_abs(values):
    a = np.abs(np.asarray(keras.ops.convert_to_numpy(values), "float64"))
    a = a.reshape(-1, a.shape[-1])
    return a.sum(0), a.shape[0]


def activation_scores(analysis, groups, data):
    """Mean absolute activation per channel of each group (Minitron),
    summed over the tensors holding the group, each normalised by its mean
    so that tensors of different scales count alike."""
    tensors = [(g, t) for g in groups for t in g.tensors]
    if not tensors:
        return {}
    probe = keras.Model(analysis.graph._inputs_struct, [t for _, t in tensors])
    sums = [0.0] * len(tensors)
    count = [0] * len(tensors)
    for batch in _iterate(data):
        outs = probe(batch, training=False)
        if len(tensors) == 1 and not isinstance(outs, (list, tuple)):
            outs = [outs]
        for i, out in enumerate(outs):
            s, n = _mean_abs(out)
            sums[i] = sums[i] + s
            count[i] += n
    if not any(count):
        raise ValueError("Argument `importance_data` holds no samples.")
    scores = {}
    for (g, _), s, n in zip(tensors, sums, count):
        mean = s / n
        scores[g] = scores.get(g, 0.0) + mean / (mean.mean() + 1e-12)
    return scores


def magnitude_scores(groups):
    """L1 norm of each channel's filter (the kernel slice producing it),
    normalised per producer and summed over the group's producers."""
    scores = {}
    for g in groups:
        for layer in g.producers:
            w = np.asarray(keras.ops.convert_to_numpy(
                layer.embeddings if isinstance(layer, L.Embedding)
                else layer.kernel), "float64")
            s = np.abs(w).reshape(-1, w.shape[-1]).sum(0)
            scores[g] = scores.get(g, 0.0) + s / (s.mean() + 1e-12)
    return scores


def choose(scores, counts):
    """`{group: bool mask}` keeping the `counts[group]` best channels."""
    keep = {}
    for group, n in counts.items():
        score = np.asarray(scores.get(group, np.zeros(group.size)))
        order = np.argsort(-score, kind="stable")[:n]
        mask = np.zeros(group.size, bool)
        mask[order] = True
        keep[group] = mask
    return keep


# ----------------------------------------------------------------------
# Rebuilding.


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
        args, kwargs = node.arguments.fill_in(tensors)
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
    inputs = keras.tree.map_structure(new_tensor, graph._inputs_struct)
    outputs = keras.tree.map_structure(new_tensor, graph._outputs_struct)
    return keras.Model(inputs, outputs, name=model.name)


# ----------------------------------------------------------------------
# Residual blocks (depth).


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


def block_scores(analysis, blocks, data):
    """1 - mean cosine similarity between each block's input and output
    (a block that barely changes its input scores low)."""
    tensors = []
    for b in blocks:
        tensors += [b.shortcut, b.add.output_tensors[0]]
    probe = keras.Model(analysis.graph._inputs_struct, tensors)
    total, count = np.zeros(len(blocks)), 0
    for batch in _iterate(data):
        outs = probe(batch, training=False)
        outs = [np.asarray(keras.ops.convert_to_numpy(o), "float64")
                for o in outs]
        for i in range(len(blocks)):
            x = outs[2 * i].reshape(len(outs[0]), -1)
            y = outs[2 * i + 1].reshape(len(x), -1)
            cos = (x * y).sum(1) / (np.linalg.norm(x, axis=1)
                                    * np.linalg.norm(y, axis=1) + 1e-12)
            total[i] += (1.0 - cos).sum()
        count += len(outs[0])
    return total / max(count, 1)
