"""Iterating over inputs batch by batch, in a fixed order."""

import numpy as np


def _x_of(element):
    if isinstance(element, (tuple, list)):
        return element[0]
    return element


def _numpy(value):
    if isinstance(value, dict):
        # KerasHub-style inputs: {"token_ids": ..., "padding_mask": ...}.
        return {k: _numpy(v) for k, v in value.items()}
    if hasattr(value, "numpy"):
        return value.numpy()
    return np.asarray(value)


def leaves(batch):
    """The arrays of a batch, in a fixed order (dict keys sorted)."""
    if isinstance(batch, dict):
        return [a for k in sorted(batch) for a in leaves(batch[k])]
    return [batch]


def length(batch):
    """The number of samples of a batch (an array or a dict of arrays)."""
    return len(leaves(batch)[0])


def check_same_shape(first, value, what):
    """Refuses per-sample shapes that change between batches (sequences
    padded to each batch's own length), which one cache cannot store."""
    if first is not None and tuple(first[1:]) != tuple(value.shape[1:]):
        raise ValueError(
            f"The teacher's {what} have shape (batch,) + {tuple(first[1:])} "
            f"in one batch and (batch,) + {tuple(value.shape[1:])} in "
            "another: a cache stores one shape per sample. Pad every batch "
            "to one length before caching (e.g. `padded_batch(b, "
            "padded_shapes=...)`, or arrays padded to one length), and cut "
            "the batches back when training if you wish."
        )


def _is_dataset(x):
    try:
        import tensorflow as tf
    except ImportError:  # pragma: no cover - TensorFlow is a dependency
        return False
    return isinstance(x, tf.data.Dataset)


def check_deterministic(dataset):
    """Refuses a dataset whose first batch differs between two passes."""
    first = [_numpy(_x_of(e)) for e, _ in zip(dataset, range(1))]
    second = [_numpy(_x_of(e)) for e, _ in zip(dataset, range(1))]
    if not first:
        raise ValueError("Argument `x` holds no samples.")
    a, b = leaves(first[0]), leaves(second[0])
    if len(a) != len(b) or any(
            u.shape != v.shape or not np.array_equal(u, v)
            for u, v in zip(a, b)):
        raise ValueError(
            "The dataset yields different batches on two passes (it "
            "reshuffles or randomly augments), so outputs computed once "
            "would be paired with other inputs later. Cache a dataset in a "
            "fixed order without random augmentation, and shuffle the cached "
            "pairs instead (`cache.dataset(x, y, shuffle=True)`); or train "
            "with the live teacher (function matching: `Distiller("
            "augmentation=...)`)."
        )


def iterate(x, batch_size, check=True):
    """Returns `(batches, total, array)` for an array or a dataset.

    `total` is the number of samples when known; `array` is `x` when it is
    an array. With `check=True`, a dataset is first checked to yield the
    same first batch on two passes.
    """
    if _is_dataset(x):
        if check:
            check_deterministic(x)
        # The sample count of a batched dataset is unknown until the end.
        return ((_numpy(_x_of(e)) for e in x), None, None)
    if isinstance(x, dict) or isinstance(x, np.ndarray) or \
            hasattr(x, "__array__"):
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) \
                or batch_size < 1:
            raise ValueError(
                "Argument `batch_size` must be a positive integer. Received: "
                f"batch_size={batch_size!r}"
            )
        n = length(x)
        batches = (_slice(x, i, i + batch_size)
                   for i in range(0, n, batch_size))
        return batches, n, x
    if hasattr(x, "__iter__"):
        return ((_numpy(_x_of(e)) for e in x), None, None)
    raise TypeError(
        "Argument `x` must be an array, a tf.data.Dataset or an iterable of "
        f"batches. Received: x of type {type(x).__name__}"
    )


def _slice(x, start, stop):
    if isinstance(x, dict):
        return {k: _slice(v, start, stop) for k, v in x.items()}
    return np.asarray(x[start:stop])


def count(x):
    """The number of samples of a dataset or iterable of batches."""
    return int(sum(length(_numpy(_x_of(e))) for e in x))
