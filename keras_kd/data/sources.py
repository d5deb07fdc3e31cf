"""Loading image classification data that is already on this machine.

Nothing here downloads: the default dataset ships inside scikit-learn, `.npz`
files are read from disk, and TensorFlow Datasets is read from a `data_dir`
that already holds the prepared dataset.
"""

import os

import numpy as np

BUILTIN = ("digits", "mnist_subset")
_PACKAGED = os.path.join(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))), "datasets")


def _digits(test_fraction, seed):
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = (bunch.images.astype("float32") / 16.0)[..., None]
    y = bunch.target.astype("int32")
    order = np.random.default_rng(seed).permutation(len(x))
    n_test = int(round(len(x) * test_fraction))
    test, train = order[:n_test], order[n_test:]
    return (x[train], y[train]), (x[test], y[test])


def _npz(path):
    # The file is opened here (not by `np.load`), so it is closed even when
    # it is not a zip archive.
    with open(path, "rb") as f:
        try:
            data = np.load(f)
        except Exception as error:  # a damaged or non-NumPy file
            raise ValueError(
                f"The file {path!r} is not a readable `.npz` archive "
                f"({type(error).__name__}: {error}). Received: {path!r}. "
                "Save the arrays again with `np.savez(path, x_train=..., "
                "y_train=..., x_test=..., y_test=...)`."
            ) from None
        if not hasattr(data, "files"):
            raise ValueError(
                f"The file {path!r} holds a single array, not the "
                "keras.datasets layout. Expected arrays ['x_test', "
                "'x_train', 'y_test', 'y_train']. Save them with "
                "`np.savez(path, x_train=..., y_train=..., x_test=..., "
                "y_test=...)`."
            )
        keys = set(data.files)
        needed = {"x_train", "y_train", "x_test", "y_test"}
        if not needed <= keys:
            raise ValueError(
                f"The file {path!r} is not in the keras.datasets layout. "
                f"Expected arrays {sorted(needed)}. Received: {sorted(keys)}"
            )
        arrays = [data[k] for k in ("x_train", "y_train", "x_test", "y_test")]
    x_train, y_train, x_test, y_test = arrays
    splits = []
    for split, x, y in (("train", x_train, y_train),
                        ("test", x_test, y_test)):
        if x.ndim == 0 or len(x) == 0:
            raise ValueError(
                f"The file {path!r} holds no {split} samples. Received: "
                f"`x_{split}` of shape {x.shape}. Save at least one sample "
                "per split."
            )
        y = _labels(path, f"y_{split}", y)
        if len(y) != len(x):
            raise ValueError(
                f"The file {path!r} holds {len(x)} {split} inputs but "
                f"{len(y)} labels: each input needs one label. Received: "
                f"`x_{split}` of shape {x.shape}, `y_{split}` of shape "
                f"{np.shape(y)}. Save as many labels as inputs."
            )
        x = _images(x)
        if not np.isfinite(x).all():
            bad = ~np.isfinite(x.reshape(len(x), -1)).all(axis=1)
            raise ValueError(
                f"The file {path!r} holds NaN or Inf in `x_{split}` "
                f"({int(bad.sum())} sample(s), the first at index "
                f"{int(np.argmax(bad))}). Received: `x_{split}` of shape "
                f"{x.shape}. Remove or repair those samples."
            )
        splits.append((x, y))
    return tuple(splits)


def _labels(path, name, y):
    """Class ids as int32 `(n,)`; one-hot rows become class ids."""
    y = np.asarray(y)
    if y.dtype.kind not in "biuf":
        raise ValueError(
            f"The file {path!r} holds `{name}` of dtype {y.dtype}, but labels "
            "must be integer class ids (or one-hot rows). Received: "
            f"{name}[:3]={y.reshape(-1)[:3].tolist()}. Map the classes to "
            "0, 1, 2, ... first."
        )
    if y.ndim == 2 and y.shape[1] > 1:
        rows_ok = np.isin(y, (0, 1)).all() and (y.sum(axis=1) == 1).all()
        if not rows_ok:
            raise ValueError(
                f"The file {path!r} holds `{name}` of shape {y.shape}, which "
                "are neither class ids nor one-hot rows (a single 1 per row, "
                "0 elsewhere). Save class ids of shape (n,), or one-hot rows."
            )
        return y.argmax(axis=1).astype("int32")
    if y.ndim > 1 and y.size == len(y):
        y = y.reshape(-1)
    if y.ndim != 1:
        raise ValueError(
            f"The file {path!r} holds `{name}` of shape {y.shape}; labels "
            "must be class ids of shape (n,) or one-hot rows of shape "
            "(n, num_classes)."
        )
    if y.dtype.kind == "f":
        bad = ~np.isfinite(y) | (y != np.round(y))
        if bad.any():
            first = int(np.argmax(bad))
            raise ValueError(
                f"The file {path!r} holds `{name}` with values that are not "
                "whole numbers, so they are not class ids. Received: "
                f"{name}[{first}]={y[first]!r}. Save integer class ids."
            )
    if len(y) and y.min() < -1:
        first = int(np.argmax(y < -1))
        raise ValueError(
            f"The file {path!r} holds `{name}` with a negative class id. "
            "Labels must be class ids >= 0 (-1 marks an unlabeled sample). "
            f"Received: {name}[{first}]={y[first]!r}."
        )
    return y.astype("int32")


def _images(x):
    """uint8 images -> float32 in [0, 1], with a channel axis."""
    x = np.asarray(x)
    scale = 255.0 if x.dtype == np.uint8 else 1.0
    x = x.astype("float32") / scale
    if x.ndim == 3:
        x = x[..., None]
    return x


def _tfds(name, data_dir):
    if data_dir is None:
        raise ValueError(
            f"Loading the TensorFlow Datasets dataset {name!r} needs "
            "`data_dir=` pointing to a folder where it is already prepared "
            "(keras_kd never downloads). Prepare it with `tfds.load(name, "
            "data_dir=...)` on a machine with network access, then copy the "
            f"folder. Received: data_dir=None"
        )
    import tensorflow_datasets as tfds

    try:
        builder = tfds.builder(name, data_dir=data_dir)
        if not builder.is_prepared():
            raise FileNotFoundError(builder.data_dir)
        splits = builder.as_dataset(as_supervised=True, batch_size=-1)
    except Exception as error:  # tfds raises many kinds of errors.
        raise ValueError(
            f"The TensorFlow Datasets dataset {name!r} is not prepared in "
            f"data_dir={data_dir!r} ({type(error).__name__}: {error}). "
            "keras_kd reads prepared datasets only and never downloads."
        ) from None
    if "test" not in splits or "train" not in splits:
        raise ValueError(
            f"The dataset {name!r} needs 'train' and 'test' splits. "
            f"Received: {sorted(splits)}"
        )
    out = []
    for split in ("train", "test"):
        x, y = tfds.as_numpy(splits[split])
        out.append((_images(x), np.asarray(y).astype("int32")))
    return tuple(out)


def load_dataset(name="digits", data_dir=None, test_fraction=0.25, seed=0):
    """Loads an image classification dataset that is already available.

    Args:
        name: `"digits"` (scikit-learn's 1,797 handwritten 8x8 digits, bundled
            with scikit-learn), `"mnist_subset"` (5,000 training and 2,000
            test MNIST images shipped with keras_kd, CC BY-SA 3.0; see
            `keras_kd/datasets/README.md`), the path of a `.npz` file in the
            `keras.datasets` layout (`x_train`, `y_train`, `x_test`,
            `y_test`), or a TensorFlow Datasets name such as `"mnist"` (then
            `data_dir` is required). Defaults to `"digits"`.
        data_dir: Folder holding prepared TensorFlow Datasets data.
        test_fraction: Float, the test share of `"digits"`. Defaults to
            `0.25`.
        seed: Integer, the split seed of `"digits"`. Defaults to `0`.

    Returns:
        `((x_train, y_train), (x_test, y_test))`: float32 images in [0, 1]
        with a channel axis, and int32 labels.

    Example:

    >>> (x, y), (x_test, y_test) = load_dataset("digits")
    >>> x.shape
    (1348, 8, 8, 1)
    """
    if not isinstance(name, str):
        raise TypeError(
            f"Argument `name` must be a string. Received: name={name!r}"
        )
    if name == "digits":
        return _digits(test_fraction, seed)
    if name == "mnist_subset":
        return _npz(os.path.join(_PACKAGED, "mnist_subset.npz"))
    if name.endswith(".npz"):
        if not os.path.exists(name):
            raise FileNotFoundError(
                f"No dataset file at {name!r}. Pass the path of an existing "
                "`.npz` in the keras.datasets layout."
            )
        return _npz(name)
    if os.path.sep in name or os.path.exists(name):
        raise ValueError(
            f"The dataset {name!r} is neither {list(BUILTIN)}, a `.npz` file "
            "nor a TensorFlow Datasets name."
        )
    return _tfds(name, data_dir)


def check_labels(y, num_classes, what="labels"):
    """Checks that `y` holds integer classes in `[-1, num_classes)`."""
    y = np.asarray(y)
    if y.size and (y.min() < -1 or y.max() >= num_classes):
        raise ValueError(
            f"The {what} must lie in [0, {num_classes}) (or be -1 for an "
            f"unlabeled sample). Received values from {y.min()} to {y.max()}"
        )
    return y


__all__ = ["BUILTIN", "check_labels", "load_dataset"]
