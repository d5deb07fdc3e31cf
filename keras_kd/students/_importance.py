"""Importance scores of `shrink`: which channels and blocks to keep.

Channels are ranked by their mean absolute activation on `importance_data`
(Minitron), or by the L1 norm of the filters producing them when no data is
given; residual blocks by how much they change their input.
"""

import keras
import numpy as np
from keras import layers as L

from keras_kd.utils import keras_compat


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
    probe = keras.Model(keras_compat.input_structure(analysis.graph),
                        [t for _, t in tensors])
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


def block_scores(analysis, blocks, data):
    """1 - mean cosine similarity between each block's input and output
    (a block that barely changes its input scores low)."""
    tensors = []
    for b in blocks:
        tensors += [b.shortcut, b.add.output_tensors[0]]
    probe = keras.Model(keras_compat.input_structure(analysis.graph),
                        tensors)
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
