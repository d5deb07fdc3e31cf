"""Mixing labeled and unlabeled data in the same batches."""

from keras_kd.utils import validation

UNLABELED = -1


def mix_labeled_unlabeled(labeled, unlabeled, labeled_fraction=0.5,
                          batch_size=32):
    """Combines a labeled and an unlabeled dataset into mixed batches.

    Every batch holds `round(labeled_fraction * batch_size)` labeled samples
    followed by unlabeled ones, which get the label `-1`: the Distiller
    averages the hard loss over the labeled samples of a batch and the soft
    loss over all of them. The labeled dataset repeats, so the unlabeled one
    sets the length of an epoch (known in advance when its own length is).
    Shuffle the two inputs yourself (`.shuffle(...)`) if you want shuffling.

    Args:
        labeled: Unbatched `tf.data.Dataset` of `(x, y)` with integer class
            ids.
        unlabeled: Unbatched `tf.data.Dataset` of `x` (or `(x, ...)`; the rest
            is dropped).
        labeled_fraction: Float in (0, 1), the share of labeled samples in
            each batch. Defaults to `0.5`.
        batch_size: Integer >= 2. Defaults to `32`.

    Returns:
        A batched `tf.data.Dataset` of `(x, y)`.

    Example:

    ```python
    ds = keras_kd.data.mix_labeled_unlabeled(
        tf.data.Dataset.from_tensor_slices((x_small, y_small)).shuffle(1000),
        tf.data.Dataset.from_tensor_slices(x_large).shuffle(10000),
        labeled_fraction=0.25, batch_size=128)
    distiller.fit(ds, epochs=10)
    ```
    """
    import tensorflow as tf

    fraction = validation.check_unit_interval("labeled_fraction",
                                              labeled_fraction)
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or \
            batch_size < 2:
        raise ValueError(
            "Argument `batch_size` must be an integer >= 2 to hold both kinds "
            f"of samples. Received: batch_size={batch_size!r}"
        )
    n_labeled = int(round(fraction * batch_size))
    if n_labeled < 1 or n_labeled >= batch_size:
        raise ValueError(
            "Argument `labeled_fraction` must leave at least one labeled and "
            f"one unlabeled sample in a batch of {batch_size}. Received: "
            f"labeled_fraction={labeled_fraction}"
        )
    for name, ds in (("labeled", labeled), ("unlabeled", unlabeled)):
        if not isinstance(ds, tf.data.Dataset):
            raise TypeError(
                f"Argument `{name}` must be a tf.data.Dataset. Received: "
                f"{name} of type {type(ds).__name__}"
            )
    spec = labeled.element_spec
    if not isinstance(spec, tuple) or len(spec) < 2:
        raise ValueError(
            "Argument `labeled` must yield `(x, y)` pairs. Received "
            f"elements of spec {spec}"
        )
    label_dtype = spec[1].dtype
    if not label_dtype.is_integer:
        raise ValueError(
            "The labels of `labeled` must be integer class ids (one-hot "
            "labels cannot carry the -1 mark). Received: dtype "
            f"{label_dtype.name}"
        )

    def mark(*element):
        return element[0], tf.constant(UNLABELED, dtype=label_dtype)

    labeled = (labeled.map(lambda x, y, *rest: (x, y)).repeat()
               .batch(n_labeled, drop_remainder=True))
    unlabeled = unlabeled.map(mark).batch(batch_size - n_labeled)

    def join(a, b):
        return (tf.concat([a[0], b[0]], axis=0),
                tf.concat([a[1], b[1]], axis=0))

    mixed = tf.data.Dataset.zip((labeled, unlabeled)).map(join)
    return mixed.prefetch(tf.data.AUTOTUNE)
