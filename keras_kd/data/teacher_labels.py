"""Labels made by the teacher: soft labels, top-k logits, pseudo-labels."""

import numpy as np

from keras_kd.data import cache as cache_lib
from keras_kd.utils import validation


def teacher_labels(teacher, x, kind="logits", top_k=None, threshold=None,
                   batch_size=256, path=None, verbose=1):
    """Runs the teacher once over `x` and returns the labels it gives.

    Args:
        teacher: A teacher `keras.Model` (or a `keras_kd.Distiller`).
        x: An array, or a dataset / iterable of batches in a fixed order.
        kind: `"logits"` (soft labels as logits), `"top_k"` (the `top_k`
            largest logits and their class ids, to save memory) or `"hard"`
            (pseudo-labels). Defaults to `"logits"`.
        top_k: Positive integer, the logits kept with `kind="top_k"`.
        threshold: Optional float in [0, 1] with `kind="hard"`: samples whose
            teacher confidence (top softmax probability) is below it get the
            label `-1`, which the Distiller treats as unlabeled.
        batch_size: Integer, for arrays. Defaults to `256`.
        path: Optional folder; with it the teacher's logits stream to disk
            (memory-mapped), so `x` may be larger than RAM.
        verbose: 0 or 1 (a progress bar). Defaults to `1`.

    Returns:
        `kind="logits"`: array `(n, num_classes)`.
        `kind="top_k"`: tuple `(values (n, k), class_ids (n, k))`, sorted by
        decreasing logit; rebuild dense logits with `densify_top_k`.
        `kind="hard"`: int32 array `(n,)` of class ids, `-1` below the
        threshold.

    Example:

    ```python
    y_pseudo = keras_kd.data.teacher_labels(teacher, x_unlabeled, kind="hard",
                                            threshold=0.9)
    distiller.fit(x_unlabeled, y_pseudo)  # -1 samples get the soft loss only
    ```
    """
    validation.check_one_of("kind", kind, ("logits", "top_k", "hard"))
    if kind == "top_k":
        if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
            raise ValueError(
                "Argument `top_k` must be a positive integer with "
                f"kind='top_k'. Received: top_k={top_k!r}"
            )
    if threshold is not None:
        threshold = validation.check_unit_interval("threshold", threshold)
    cache = cache_lib.cache_teacher_outputs(
        teacher, x, batch_size=batch_size, path=path, verbose=verbose
    )
    logits = cache.logits
    if kind == "logits":
        return logits
    if kind == "top_k":
        if top_k > cache.num_classes:
            raise ValueError(
                f"Argument `top_k` must be at most the number of classes "
                f"({cache.num_classes}). Received: top_k={top_k}"
            )
        return _top_k(logits, top_k)
    return _hard(logits, threshold)


def _chunks(n, size=8192):
    return ((i, min(n, i + size)) for i in range(0, n, size))


def _top_k(logits, k):
    n = len(logits)
    values = np.empty((n, k), dtype="float32")
    ids = np.empty((n, k), dtype="int32")
    for start, stop in _chunks(n):
        block = np.asarray(logits[start:stop], dtype="float32")
        idx = np.argsort(-block, axis=-1, kind="stable")[:, :k]
        ids[start:stop] = idx
        values[start:stop] = np.take_along_axis(block, idx, axis=-1)
    return values, ids


def _hard(logits, threshold):
    n = len(logits)
    labels = np.empty((n,), dtype="int32")
    for start, stop in _chunks(n):
        block = np.asarray(logits[start:stop], dtype="float64")
        labels[start:stop] = block.argmax(-1)
        if threshold is not None:
            z = block - block.max(-1, keepdims=True)
            confidence = 1.0 / np.exp(z).sum(-1)
            labels[start:stop][confidence < threshold] = -1
    return labels


def densify_top_k(values, class_ids, num_classes, fill=-1e9):
    """Dense logits from top-k values: the other classes get `fill`.

    With the default `fill`, the missing classes have zero probability at
    any temperature, so the soft loss compares the top-k distribution.

    Args:
        values: Array `(n, k)` of logits.
        class_ids: Integer array `(n, k)` of their classes.
        num_classes: Integer.
        fill: Float, the logit of the classes not kept. Defaults to `-1e9`.

    Returns:
        Float32 array `(n, num_classes)`.
    """
    values = np.asarray(values, dtype="float32")
    dense = np.full((values.shape[0], num_classes), fill, dtype="float32")
    np.put_along_axis(dense, np.asarray(class_ids), values, axis=-1)
    return dense
