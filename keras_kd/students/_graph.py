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

`_importance.py` scores the channels and residual blocks, `_rebuild.py`
builds the pruned model. The private Keras attributes these read (the
Functional graph, its nodes and how it replays them) go through
`keras_kd.utils.keras_compat`.
"""

import collections
import difflib

import keras
import numpy as np
from keras import layers as L

from keras_kd.utils import keras_compat

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
        graph = keras_compat.sequential_graph(model)
        if graph is None:
            raise ValueError(
                "Argument `teacher` is a Sequential model that is not built, "
                "so it has no graph to prune. Build it first: start it with "
                "`keras.Input(shape)` or call it once on data. Received: "
                f"teacher={model.name!r}")
        return graph
    if keras_compat.nodes_by_depth(model) is None:
        raise TypeError(
            "Argument `teacher` must be a Sequential or Functional Keras model "
            "(or a KerasHub backbone or task), whose layer graph shrink can "
            "follow; a subclassed model has none. Received: teacher="
            f"{model.name!r} of type {type(model).__name__}. Rebuild it with "
            "the Functional API.")
    return model


def nodes_of(graph):
    """Nodes in topological order (inputs first)."""
    by_depth = keras_compat.nodes_by_depth(graph)
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
    if not counts:
        fixed = sorted(producers)
        raise ValueError(
            f"Argument `width` asks to prune channels, but the teacher "
            f"{analysis.model.name!r} has no layer whose channels shrink can "
            "prune, so the student would be the teacher unchanged: the "
            "channels of a model output are kept whole"
            + (f" (layers {fixed})" if fixed else "")
            + ", and SeparableConv, ConvTranspose, quantized and LoRA layers "
            "are not pruned. Pass `width=None` and prune `depth`, or start "
            f"from a teacher built of {SUPPORTED}. Received: width={width!r}")
    return counts


def _same_map(a, b):
    return len(a) == len(b) and np.array_equal(a.index, b.index) and all(
        g.root() is h.root() for g, h in zip(a.groups, b.groups))
