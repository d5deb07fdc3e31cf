"""Shared parts of the `keras-kd` subcommands: errors, data, models, tables.

Heavier modules (TensorFlow Datasets, KerasTuner, Matplotlib, LiteRT) are
imported by the functions that need them, so `--help` stays quick.
"""

import argparse
import contextlib
import os
import time

from keras_kd.utils import validation

PROG = "keras-kd"
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif")


class UsageError(Exception):
    """A mistake in the command line, found before any training (exit 2)."""

    def __init__(self, message, prog=None):
        super().__init__(message)
        self.prog = prog


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Shows the defaults and keeps the examples in the epilog as written."""

    def _get_help_string(self, action):
        text = action.help or ""
        default = action.default
        hidden = default is None or default is False or \
            default == [] or default is argparse.SUPPRESS
        if "(default:" in text or "%(default)" in text or hidden or \
                not action.option_strings:
            return text
        return text + " (default: %(default)s)"


class ArgumentParser(argparse.ArgumentParser):
    """An `ArgumentParser` whose errors are one line (and exit code 2)."""

    def error(self, message):
        raise UsageError(f"{message} (see '{self.prog} --help')", self.prog)


@contextlib.contextmanager
def checking_inputs():
    """Turns input errors raised by keras_kd while setting up into usage
    errors: a missing file, a bad value, a class mismatch, an unknown layer,
    a dataset that is not prepared."""
    try:
        yield
    except (ValueError, TypeError, FileNotFoundError, KeyError) as error:
        raise UsageError(_message(error)) from error


def _message(error):
    if isinstance(error, KeyError) and error.args:
        return str(error.args[0])
    return str(error)


def one_line(text):
    """Collapses a (possibly multi-line) message onto one line."""
    return " ".join(str(text).split())


# ----------------------------------------------------------------------
# Arguments shared by several subcommands.


def add_common_arguments(parser):
    parser.add_argument("--seed", type=int, default=0,
                        help="random seed of weights and shuffling")
    parser.add_argument("--debug", action="store_true",
                        help="show Python tracebacks on errors")


def add_model_arguments(parser):
    """The positional `TEACHER.keras STUDENT.keras` pair."""
    parser.add_argument("teacher", metavar="TEACHER.keras",
                        help="the trained teacher (logits or probabilities)")
    parser.add_argument("student", metavar="STUDENT.keras",
                        help="the student architecture (returns logits)")


def add_data_arguments(parser, required=True):
    group = parser.add_argument_group("data")
    group.add_argument(
        "--data", required=required, metavar="DATA",
        help="'digits' (bundled with scikit-learn), 'mnist_subset' (7,000 "
        "MNIST images shipped with keras_kd), a .npz in the "
        "keras.datasets layout (x_train, y_train, x_test, y_test), a folder "
        "of images with one sub-folder per class (optionally train/ and "
        "test/ inside), or a TensorFlow Datasets name")
    group.add_argument(
        "--data-dir", metavar="DIR",
        help="folder of prepared TensorFlow Datasets (nothing is downloaded; "
        "defaults to $TFDS_DATA_DIR or ~/tensorflow_datasets when present)")
    group.add_argument(
        "--image-size", type=int, nargs=2, metavar=("HEIGHT", "WIDTH"),
        help="size of images read from a folder (default: the student's "
        "input size)")
    group.add_argument(
        "--unlabeled", metavar="DATA",
        help="extra unlabeled inputs mixed into training with the label -1 "
        "(soft loss only): a .npz with x_train (or x), or an image folder")
    group.add_argument(
        "--validation-split", type=float, default=0.0, metavar="FRACTION",
        help="fraction of the training data held out for validation; 0 "
        "validates on the test split")
    group.add_argument("--batch-size", type=int, default=32,
                       help="training batch size")


# ----------------------------------------------------------------------
# Files and models.


def check_exists(flag, path, kind="file"):
    if path is None or not os.path.exists(path):
        raise UsageError(str(validation.cli_missing_path_error(
            flag, path, kind)))
    return path


def check_suffix(flag, path, *suffixes):
    if path is not None and not path.lower().endswith(suffixes):
        raise UsageError(str(validation.cli_suffix_error(
            flag, path, suffixes)))
    return path


def check_at_least(flag, value, minimum=1):
    if value < minimum:
        raise UsageError(str(validation.cli_at_least_error(
            flag, minimum, value)))
    return value


def load_model(flag, path):
    """Loads a `.keras` model without its compile state."""
    check_exists(flag, path)
    import keras

    import keras_kd  # noqa: F401 (registers keras_kd's serializable classes)

    try:
        return keras.saving.load_model(path, compile=False)
    except Exception as error:
        raise UsageError(str(validation.cli_model_load_error(
            flag, path, error))) from error


def make_parent(path):
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    return path


# ----------------------------------------------------------------------
# Data.


class Data:
    """Training, validation and test arrays read from a `--data` value."""

    def __init__(self, train, test=None, name=""):
        self.train, self.test, self.name = train, test, name
        self.validation = None

    def split_validation(self, fraction, seed):
        """Holds `fraction` of the training data out for validation."""
        import numpy as np

        if fraction == 0:
            self.validation = self.test
            return self
        x, y = self.train
        n_val = int(round(len(x) * fraction))
        if not 0 < fraction < 1 or not 0 < n_val < len(x):
            raise UsageError(str(validation.cli_validation_split_error(
                fraction)))
        order = np.random.default_rng(seed).permutation(len(x))
        val, train = order[:n_val], order[n_val:]
        self.train = (x[train], y[train])
        self.validation = (x[val], y[val])
        return self

    @property
    def evaluation(self):
        """The split the summary reports: test, else validation."""
        return self.test if self.test is not None else self.validation

    @property
    def evaluation_name(self):
        return "test" if self.test is not None else "validation"


def default_data_dir():
    candidates = [os.environ.get("TFDS_DATA_DIR"),
                  os.path.expanduser("~/tensorflow_datasets")]
    for folder in candidates:
        if folder and os.path.isdir(folder):
            return folder
    return None


def load_data(flag, spec, data_dir=None, image_shape=None):
    """Reads `digits`, a `.npz`, an image folder or a prepared TFDS dataset.

    Args:
        flag: The option name, for messages (`"--data"`).
        spec: The option value.
        data_dir: TFDS folder.
        image_shape: `(height, width, channels)` for image folders.

    Returns:
        A `Data`.
    """
    from keras_kd.data import load_dataset
    from keras_kd.data.sources import BUILTIN

    if spec.lower().endswith(".npz"):
        check_exists(flag, spec)
    elif os.path.isdir(spec):
        return _image_folder(flag, spec, image_shape)
    elif spec not in BUILTIN and (os.sep in spec or "/" in spec):
        check_exists(flag, spec, "file or folder")
        raise UsageError(str(validation.cli_data_spec_error(flag, spec)))
    elif spec not in BUILTIN and not data_dir:
        data_dir = default_data_dir()
        if data_dir is None:
            raise UsageError(str(validation.cli_tfds_data_dir_error(
                flag, spec)))
    with checking_inputs():
        # The default split of `digits`, so every command (and the teacher
        # trained on it) shares one test split.
        train, test = load_dataset(spec, data_dir=data_dir)
    return Data(train, test, name=spec)


def load_inputs(flag, spec, image_shape=None):
    """Inputs without labels: a `.npz` (`x_train` or `x`) or image folder."""
    import numpy as np

    if os.path.isdir(spec):
        return _read_images(flag, spec, image_shape, labels=None)[0]
    check_exists(flag, spec)
    check_suffix(flag, spec, ".npz")
    with np.load(spec) as data:
        key = next((k for k in ("x_train", "x") if k in data.files), None)
        if key is None:
            raise UsageError(str(validation.cli_npz_inputs_error(
                flag, spec, data.files)))
        x = data[key]
    scale = 255.0 if x.dtype == np.uint8 else 1.0
    x = x.astype("float32") / scale
    return x[..., None] if x.ndim == 3 else x


def _image_folder(flag, path, image_shape):
    subfolders = {d for d in os.listdir(path)
                  if os.path.isdir(os.path.join(path, d))}
    if {"train", "test"} <= subfolders:
        train = _read_images(flag, os.path.join(path, "train"), image_shape)
        test = _read_images(flag, os.path.join(path, "test"), image_shape)
        return Data(train, test, name=path)
    return Data(_read_images(flag, path, image_shape), None, name=path)


def _read_images(flag, path, image_shape, labels="inferred"):
    """All images of a folder as float32 arrays in [0, 1]."""
    import numpy as np

    if not any(name.lower().endswith(IMAGE_SUFFIXES)
               for _, _, files in os.walk(path) for name in files):
        raise UsageError(str(validation.cli_empty_folder_error(flag, path)))
    import keras

    height, width, channels = image_shape
    color_mode = {1: "grayscale", 3: "rgb", 4: "rgba"}.get(channels, "rgb")
    with checking_inputs():
        ds = keras.utils.image_dataset_from_directory(
            path, labels=labels, label_mode="int" if labels else None,
            color_mode=color_mode, image_size=(height, width),
            batch_size=256, shuffle=False, verbose=False)
    xs, ys = [], []
    for batch in ds:
        x, y = batch if labels else (batch, None)
        xs.append(np.asarray(x, "float32") / 255.0)
        if y is not None:
            ys.append(np.asarray(y, "int32"))
    x = np.concatenate(xs)
    return x, (np.concatenate(ys) if ys else None)


def image_shape_of(model, image_size=None):
    """`(height, width, channels)` for images read for `model`."""
    shape = tuple(model.inputs[0].shape[1:]) if getattr(
        model, "inputs", None) else (None, None, 3)
    if len(shape) != 3:
        shape = (None, None, 3)
    height, width, channels = shape
    if image_size is not None:
        height, width = image_size
    return (height or 224, width or 224, channels or 3)


def check_inputs(role, flag, model, x):
    """Refuses data whose sample shape the model cannot take."""
    inputs = getattr(model, "inputs", None)
    if not inputs or len(inputs) != 1:
        return
    expected = tuple(inputs[0].shape[1:])
    received = tuple(x.shape[1:])
    fits = len(expected) == len(received) and all(
        e is None or e == r for e, r in zip(expected, received))
    if not fits:
        raise UsageError(str(validation.cli_input_shape_error(
            role, flag, (None,) + expected, received)))


def check_labels(flag, y, num_classes):
    if y is not None and len(y) and (y.min() < -1 or y.max() >= num_classes):
        raise UsageError(str(validation.cli_label_range_error(
            flag, num_classes, int(y.min()), int(y.max()))))


# ----------------------------------------------------------------------
# Results.


def accuracy(model, data, batch_size=256):
    """Top-1 accuracy of a logits model on `(x, y)`."""
    import numpy as np

    x, y = data
    logits = model.predict(x, batch_size=batch_size, verbose=0)
    return float(np.mean(np.argmax(logits, -1) == np.asarray(y)))


def file_size(path):
    return os.path.getsize(path) if path and os.path.exists(path) else None


def format_size(size):
    if size is None:
        return "-"
    if size < 1024 * 1024:
        return f"{size / 1024:.1f} KiB"
    return f"{size / (1024 * 1024):.2f} MiB"


def format_table(header, rows):
    """Aligned text table: left-aligned first column, right-aligned rest."""
    cells = [[str(c) for c in row] for row in [header] + list(rows)]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]

    def line(row):
        first = row[0].ljust(widths[0])
        rest = [c.rjust(w) for c, w in zip(row[1:], widths[1:])]
        return "  ".join([first] + rest)

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([line(cells[0]), rule] + [line(r) for r in cells[1:]])


class Timer:
    """`with Timer() as t: ...`, then `t.seconds`."""

    def __enter__(self):
        self.start = time.perf_counter()
        self.seconds = 0.0
        return self

    def __exit__(self, *exc):
        self.seconds = time.perf_counter() - self.start
        return False
