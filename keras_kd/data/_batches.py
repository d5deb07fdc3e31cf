"""Iterating over inputs batch by batch, in a fixed order."""

import numpy as np


def _x_of(element):
    if isinstance(element, (tuple, list)):
        return element[0]
    return element


def _numpy(value):
    if hasattr(value, "numpy"):
        return value.numpy()
    return np.asarray(value)


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
    if first[0].shape != second[0].shape or not np.array_equal(
        first[0], second[0]
    ):
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
    if isinstance(x, np.ndarray) or hasattr(x, "__array__"):
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) \
                or batch_size < 1:
            raise ValueError(
                "Argument `batch_size` must be a positive integer. Received: "
                f"batch_size={batch_size!r}"
            )
        n = len(x)
        batches = (np.asarray(x[i:i + batch_size]) for i in range(0, n,
                                                                  batch_size))
        return batches, n, x
    if hasattr(x, "__iter__"):
        return ((_numpy(_x_of(e)) for e in x), None, None)
    raise TypeError(
        "Argument `x` must be an array, a tf.data.Dataset or an iterable of "
        f"batches. Received: x of type {type(x).__name__}"
    )


def count(x):
    """The number of samples of a dataset or iterable of batches."""
    return int(sum(len(_numpy(_x_of(e))) for e in x))
