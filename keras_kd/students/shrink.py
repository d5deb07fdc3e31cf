"""`shrink`: a student cut from the teacher, with the teacher's weights."""

import numbers

import keras
import numpy as np

from keras_kd.students import _graph
from keras_kd.students import _importance
from keras_kd.students import _rebuild
from keras_kd.students import _hub


def shrink(teacher, depth=None, width=None, importance_data=None, keep=None):
    """Returns a smaller copy of `teacher` that keeps its surviving weights.

    The student starts from what the teacher knows instead of a random
    initialisation: DistilBERT's every-other-layer student and Minitron's
    depth and width pruning by activation importance, followed by
    distillation (`keras_kd.Distiller(teacher, shrink(teacher, ...))`).

    **Depth** drops whole blocks:
    - a KerasHub backbone (or task, e.g. `GPT2CausalLM`) keeps `depth` of
      its transformer layers, copying the embeddings, the kept layers, the
      final norm and the head;
    - a Functional model keeps `depth` of its *residual blocks*. A residual
      block is an `Add` of two tensors `s` and `f(s)` where `s` (the
      identity shortcut) has the Add's output shape, the branch `f` (every
      node on a path from `s` to the Add's other input) reads nothing but
      `s`, and nothing outside the block reads the branch. A dropped block
      is replaced by its shortcut. Blocks inside other blocks are not
      counted; projection shortcuts (a 1x1 conv on the shortcut) are not
      blocks.

    The kept blocks are `keep` when given; else, with `importance_data`, the
    `depth` blocks that change their input most (largest mean
    `1 - cosine(input, output)`, the block-importance score of ShortGPT and
    Minitron's depth pruning); else `depth` evenly spaced blocks, first and
    last included (12 -> 6 keeps 0, 2, 4, 7, 9, 11, as DistilBERT).

    **Width** keeps a fraction of the channels of every prunable channel
    group, or `{layer_name: count or fraction}` for the named Dense, Conv
    or Embedding layers only. A channel group is what must be pruned
    together: a layer's output channels, carried through
    BatchNormalization, LayerNormalization, DepthwiseConv, element-wise
    activations, pooling, padding and dropout, joined by Add (and the other
    merges: every branch of a residual sum keeps the same channel set),
    concatenated by Concatenate and tiled by Flatten. The consumers (the
    next Dense/Conv input axis, the BatchNormalization vectors) are sliced
    with the same channels. Model inputs and outputs are never pruned.
    Channels are ranked by their mean absolute activation on
    `importance_data` (Minitron), summed over the tensors that carry the
    group (each normalised by its mean); without `importance_data`, by
    the L1 norm of the filter that produces each channel (the kernel slice
    of each producer, Li et al., 2017).

    For a KerasHub backbone, `width` is a fraction of the FFN channels or
    a dict of `"intermediate_dim"`, `"num_heads"` and `"hidden_dim"`, each
    a fraction or a count:
    - `intermediate_dim`: the FFN channels of each kept layer, by their
      mean absolute activation (else the L1 norm of their kernels);
    - `num_heads`: each layer keeps its most important whole heads (mean
      absolute per-head attention output, else the L1 norm of the head's
      q/k/v/output weights); the head width is kept, so `hidden_dim`
      becomes `num_heads * head_dim` unless given;
    - `hidden_dim`: the residual-stream channels of largest mean absolute
      activation (every layer's input, Minitron; else the L1 norm of the
      weights writing them) are kept in the embeddings (and the tied LM
      head), every LayerNorm and every dense reading or writing the
      stream. It must be a multiple of the kept heads (a fraction is
      rounded to one); when the head width `hidden_dim / num_heads`
      shrinks, each head keeps its most important query/key dims (the same
      for both) and value dims, and the query kernel and bias are scaled by
      `sqrt(new_head_dim / head_dim)` so the kept dims' attention scores
      keep their scale.
    Heads and `hidden_dim` are pruned for backbones of decoder-only
    `keras_hub.layers.TransformerDecoder` layers (GPT-2, OPT); others
    raise a `ValueError`. With fewer hidden channels each LayerNorm
    normalises over fewer channels, so the student is no longer exact:
    distil it.

    A layer or topology that cannot be pruned consistently (an unknown
    layer reading a pruned group, a layer called twice, a Reshape, grouped
    convolutions, ...) raises a `ValueError` naming the layer, not a wrong
    model. Depth is applied first, then width.

    Args:
        teacher: A built Sequential or Functional `keras.Model`, or a
            KerasHub backbone or task (a `GPT2CausalLM` ...).
        depth: Integer, the number of residual blocks (Functional) or
            transformer layers (KerasHub) to keep, or `None` to keep all.
            Defaults to `None`.
        width: A fraction in `(0, 1]` of the channels of every prunable
            group to keep, a dict `{layer_name: fraction or count}`
            (for KerasHub: `{"intermediate_dim": ..., "num_heads": ...,
            "hidden_dim": ...}`, any of the three), or `None` to keep every
            channel. The channels of the model's outputs and of
            SeparableConv, ConvTranspose, quantized and LoRA layers are kept
            whole (a teacher with nothing else to prune is refused).
            Defaults to `None`.
        importance_data: Inputs the importance scores are computed on (a
            NumPy array, a dict of arrays for KerasHub models, or an
            `(x, y)` tuple); a few hundred samples are enough. `None` picks
            blocks evenly and channels by weight magnitude. Defaults to
            `None`.
        keep: List of block (or transformer layer) indices to keep, instead
            of choosing them; `depth` may then be omitted. Defaults to
            `None`.

    Returns:
        A new model (Sequential for a Sequential teacher, Functional for a
        Functional one, the teacher's KerasHub class with a smaller config),
        serialisable as any Keras model, with every layer trainable (even
        if the teacher was frozen, as a `Distiller` freezes it).
        `shrink(teacher)` computes exactly the teacher's outputs.

    Raises:
        ValueError: For an argument out of range, or a layer or topology
            that cannot be pruned consistently.
        TypeError: For a subclassed model (no graph to follow).

    Example:

    ```python
    import keras
    import numpy as np
    from keras_kd.students import shrink

    teacher = keras.Sequential([
        keras.Input((8,)),
        keras.layers.Dense(32, activation="relu"),
        keras.layers.Dense(3),
    ])
    x = np.random.rand(64, 8).astype("float32")
    student = shrink(teacher, width=0.5, importance_data=x)
    print(student.layers[0].units)  # 16
    ```

    Reference:
    - [Sanh et al., 2019](https://arxiv.org/abs/1910.01108) (DistilBERT)
    - [Muralidharan et al., 2024](https://arxiv.org/abs/2407.14679)
      (Minitron)
    - [Li et al., 2017](https://arxiv.org/abs/1608.08710) (L1 filter
      pruning)
    """
    if not isinstance(teacher, keras.Model):
        raise TypeError(
            "Argument `teacher` must be a `keras.Model`. Received: "
            f"teacher of type {type(teacher).__name__}")
    _check_depth(depth, keep)
    if width is not None and not isinstance(width, dict):
        if isinstance(width, bool) or not isinstance(width, numbers.Real) \
                or not 0 < float(width) <= 1:
            raise ValueError(
                "Argument `width` must be a fraction in (0, 1], a dict "
                "`{layer_name: fraction or count}`, or None. Received: "
                f"width={width!r}")
        width = float(width)
    student = _shrink(teacher, depth, width, importance_data, keep)
    # Trainable whatever the teacher's flags (a Distiller freezes its
    # teacher, and those flags are part of each layer's config).
    _make_trainable(student)
    return student


def _make_trainable(model):
    model.trainable = True
    for layer in getattr(model, "layers", ()):
        _make_trainable(layer)


def _shrink(teacher, depth, width, importance_data, keep):
    if _hub.is_hub_model(teacher):
        return _hub.shrink(teacher, depth, width, importance_data, keep,
                           _select)
    analysis = _graph.Analysis(teacher)
    model = teacher
    if depth is not None or keep is not None:
        blocks = _rebuild.residual_blocks(analysis)
        if not blocks:
            raise ValueError(
                f"Argument `depth` drops residual blocks, but teacher "
                f"{teacher.name!r} has none (an Add of a tensor and a branch "
                "computed from it alone, with the same shape). Pass "
                f"`depth=None` and prune `width`. Received: depth={depth!r}"
                f", keep={keep!r}")
        scores = None
        if importance_data is not None and keep is None:
            scores = _importance.block_scores(analysis, blocks,
                                              importance_data)
        kept = _select(len(blocks), depth, keep, scores)
        drop = [b for i, b in enumerate(blocks) if i not in kept]
        model = _rebuild.rebuild(teacher, analysis, drop=drop)
        if width is None:
            return model
        analysis = _graph.Analysis(model)
    keep_masks = {}
    if width is not None:
        counts = _graph.resolve_width(analysis, width)
        groups = list(counts)
        if importance_data is not None:
            scores = _importance.activation_scores(analysis, groups,
                                                   importance_data)
            missing = [g for g in groups if g not in scores]
            scores.update(_importance.magnitude_scores(missing))
        else:
            scores = _importance.magnitude_scores(groups)
        keep_masks = _importance.choose(scores, counts)
    return _rebuild.rebuild(model, analysis, keep=keep_masks)


def _check_depth(depth, keep):
    if depth is not None and (isinstance(depth, bool) or not isinstance(
            depth, numbers.Integral) or depth < 0):
        raise ValueError(
            "Argument `depth` must be a non-negative integer (the number of "
            f"blocks to keep) or None. Received: depth={depth!r}")
    if keep is not None:
        if isinstance(keep, (str, bytes)) or not all(
                isinstance(i, numbers.Integral) and not isinstance(i, bool)
                for i in keep):
            raise TypeError(
                "Argument `keep` must be a list of block indices. Received: "
                f"keep={keep!r}")
        if depth is not None and depth != len(keep):
            raise ValueError(
                "Arguments `depth` and `keep` disagree: `depth` must be "
                f"`len(keep)` or None. Received: depth={depth!r}, "
                f"keep={keep!r}")


def _select(n, depth, keep, scores=None, minimum=0):
    """Sorted indices of the blocks kept out of `n`."""
    if keep is not None:
        kept = sorted(int(i) for i in keep)
        if len(set(kept)) != len(kept) or any(i < 0 or i >= n for i in kept):
            raise ValueError(
                f"Argument `keep` must hold distinct indices in [0, {n}) "
                f"(the teacher has {n} blocks). Received: keep={keep!r}")
        if len(kept) < minimum:
            raise ValueError(
                f"Argument `keep` must keep at least {minimum} block(s). "
                f"Received: keep={keep!r}")
        return kept
    if depth is None:
        return list(range(n))
    if not minimum <= depth <= n:
        raise ValueError(
            f"Argument `depth` must lie in [{minimum}, {n}], the teacher "
            f"has {n} blocks. Received: depth={depth!r}")
    if scores is not None:
        order = np.argsort(-np.asarray(scores), kind="stable")[:depth]
        return sorted(int(i) for i in order)
    if depth == 0:
        return []
    return sorted({int(i) for i in np.round(np.linspace(0, n - 1, depth))})
