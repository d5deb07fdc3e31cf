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
    with np.load(path) as data:
        keys = set(data.files)
        needed = {"x_train", "y_train", "x_test", "y_test"}
        if not needed <= keys:
            raise ValueError(
                f"The file {path!r} is not in the keras.datasets layout. "
                f"Expected arrays {sorted(needed)}. Received: {sorted(keys)}"
            )
        arrays = [data[k] for k in ("x_train", "y_train", "x_test", "y_test")]
    x_train, y_train, x_test, y_test = arrays
    return (_images(x_train), y_train.astype("int32").reshape(-1)), (
        _images(x_test),
        y_test.astype("int32").reshape(-1),
    )


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
