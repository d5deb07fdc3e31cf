"""Checks of the labels and sample weights given to `Distiller.fit`.

Arrays are checked before `fit` starts, a `tf.data.Dataset` or a
`keras.utils.PyDataset` on its first batch. Inside a traced step, where
raising is impossible, a bad label makes the loss NaN (see
`keras_kd.losses.hard_cross_entropy`), never a silent zero.
"""

import numpy as np


def _to_numpy(value):
    if value is None or isinstance(value, np.ndarray):
        return value
    try:
        import keras

        return np.asarray(keras.ops.convert_to_numpy(value))
    except Exception:  # Not a tensor: let numpy decide.
        return np.asarray(value)


def check_labels(labels, num_classes, outputs, where="y", logits_rank=None):
    """Raises a clear error for labels the Distiller cannot train on.

    `logits_rank` is the rank of the models' logits when known: 3 for
    `(batch, sequence, vocabulary)` logits, whose labels are one token id per
    position, `(num_samples, sequence_length)`, or one-hot rows of the
    logits' rank.
    """
    if labels is None or num_classes is None:
        return
    y = _to_numpy(labels)
    if y.dtype.kind in "USO":
        raise TypeError(
            f"The labels `{where}` must be numbers (class ids or one-hot "
            f"rows), not {y.dtype.kind == 'O' and 'objects' or 'strings'}. "
            f"Received: {where}.dtype={y.dtype}. Map the class names to "
            "integer ids first (e.g. with `keras.layers.StringLookup`)."
        )
    if y.size == 0:
        return
    if outputs == "sigmoid":
        _check_sigmoid_labels(y, num_classes, where)
        return
    if logits_rank is not None and logits_rank > 2:
        if y.ndim == logits_rank and y.shape[-1] == 1:
            y = y[..., 0]
        if y.ndim == logits_rank - 1:
            _check_ids(y, num_classes, where)
            return
        if y.ndim != logits_rank:
            raise ValueError(
                f"The labels `{where}` must hold one token id per position of "
                f"the models' {logits_rank - 1}-d outputs, shape (num_samples, "
                "sequence_length), or one-hot rows of width "
                f"{num_classes}. Received: {where}.shape={y.shape}"
            )
    if y.ndim >= 2 and y.shape[-1] not in (1, num_classes):
        raise ValueError(
            f"The labels `{where}` have rows of width {y.shape[-1]}, but the "
            f"models have {num_classes} classes. Pass class ids of shape "
            f"(num_samples,) or one-hot rows of width {num_classes}. "
            f"Received: {where}.shape={y.shape}"
        )
    if y.ndim >= 2 and y.shape[-1] == num_classes and num_classes != 1:
        if np.any(y < 0) or not np.all(np.isfinite(y)):
            raise ValueError(
                f"The one-hot labels `{where}` hold negative or non-finite "
                "values. Use rows of non-negative class weights (an all-zero "
                f"row marks an unlabeled sample). Received: min={y.min()}"
            )
        return
    _check_ids(y, num_classes, where)


def _check_ids(y, num_classes, where):
    flat = y.reshape(-1).astype("float64")
    bad = ~np.isfinite(flat) | (flat != np.floor(flat))
    if np.any(bad):
        value = flat[np.argmax(bad)]
        raise ValueError(
            f"The labels `{where}` must be integer class ids, but one is "
            f"{value!r}. Pass integer ids in [0, {num_classes}) (or -1 for an "
            f"unlabeled sample). Received: {where} with a non-integer value"
        )
    bad = (flat != -1) & ((flat < 0) | (flat >= num_classes))
    if np.any(bad):
        value = int(flat[np.argmax(bad)])
        raise ValueError(
            f"The label {value} in `{where}` is outside the {num_classes} "
            f"classes of the models. Labels must be in [0, {num_classes}), "
            f"or -1 for an unlabeled sample. Received: label={value}"
        )


def _check_sigmoid_labels(y, num_classes, where):
    if y.ndim == 1:
        y = y[:, None]
    if y.shape[-1] != num_classes:
        raise ValueError(
            f"The labels `{where}` of these sigmoid outputs must have one "
            f"0/1 value per output: rows of width {num_classes}. "
            f"Received: {where}.shape={y.shape}"
        )
    flat = y.astype("float64")
    unlabeled = np.all(flat == -1, axis=-1)
    labeled = flat[~unlabeled]
    if labeled.size and (
        not np.all(np.isfinite(labeled))
        or np.any((labeled < 0) | (labeled > 1))
    ):
        value = labeled[~((labeled >= 0) & (labeled <= 1))][0]
        raise ValueError(
            f"The labels `{where}` of sigmoid outputs must be in [0, 1] (or a "
            "row of -1 for an unlabeled sample). Received: a label of "
            f"{value!r}"
        )


def check_sample_weight(sample_weight, num_samples, logits_rank=None):
    """Sample weights: one per sample, or one per token of a sequence
    model (`logits_rank=3`: shape `(num_samples, sequence_length)`, as
    KerasHub's `CausalLMPreprocessor` returns)."""
    if sample_weight is None:
        return
    w = _to_numpy(sample_weight)
    if w.ndim >= 2 and w.shape[-1] == 1:
        w = w[..., 0]
    per_token = logits_rank is not None and logits_rank > 2
    allowed = (1, logits_rank - 1) if per_token else (1,)
    if w.ndim not in allowed or (
            num_samples is not None and len(w) != num_samples):
        expected = (f"({num_samples},) or one per token, shape "
                    f"({num_samples}, sequence_length)") if per_token \
            else f"({num_samples},)"
        raise ValueError(
            "Argument `sample_weight` must hold one weight per sample, shape "
            f"{expected}. Received: sample_weight.shape={w.shape}"
        )
    # NaN or Inf is left to the step, which makes the loss NaN (documented;
    # `keras.callbacks.TerminateOnNaN` stops there).
    if np.any(w < 0):
        raise ValueError(
            "Argument `sample_weight` must hold non-negative weights. "
            f"Received: a weight of {w[w < 0][0]!r}"
        )


def first_batch(data):
    """The first batch of a `tf.data.Dataset` or `PyDataset`, else None."""
    try:
        import tensorflow as tf

        if isinstance(data, tf.data.Dataset):
            for batch in data.take(1):
                return batch
            return None
    except ImportError:  # pragma: no cover - TensorFlow is a dependency.
        pass
    import keras

    if isinstance(data, keras.utils.PyDataset):
        try:
            return data[0]
        except Exception:  # A PyDataset that cannot index: the step checks.
            return None
    return None
