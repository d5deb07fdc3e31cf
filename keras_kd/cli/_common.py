"""Shared parts of the `keras-kd` subcommands: errors, checks, data, tables.

Nothing here imports Keras, TensorFlow or JAX at module level: `main` parses
and checks the arguments first (so `--help` and argument errors are quick),
then imports the backend with its C++ start-up logs silenced
(`import_backend`). Heavier modules (TensorFlow Datasets, KerasTuner,
Matplotlib, LiteRT) are imported by the functions that need them.
"""

import argparse
import contextlib
import math
import os
import sys
import time

from keras_kd.utils import io

PROG = "keras-kd"
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif")
# `keras_kd.export.QUANTIZATION_MODES`, repeated here so that building the
# parser does not import Keras (a test keeps the two equal).
QUANTIZATION_MODES = ("none", "float16", "dynamic", "int8")
# `time.perf_counter()` when `main` started (the demo reports its time).
STARTED = [time.perf_counter()]


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
# Numbers, checked while the arguments are parsed.

_NUMBERS = {
    # kind: (type, expected, accepted)
    "positive_int": (int, "at least 1", lambda v: v >= 1),
    "non_negative_int": (int, "an integer >= 0", lambda v: v >= 0),
    "positive": (float, "a positive finite number",
                 lambda v: math.isfinite(v) and v > 0),
    "non_negative": (float, "a finite number >= 0",
                     lambda v: math.isfinite(v) and v >= 0),
    "unit": (float, "a number in [0, 1]", lambda v: 0.0 <= v <= 1.0),
    "fraction": (float, "a number in [0, 1)", lambda v: 0.0 <= v < 1.0),
}


class Number(argparse.Action):
    """Stores a number (or a `MIN MAX` pair) after checking its range.

    A value out of range is a `UsageError` raised while parsing, before
    anything is imported or read.
    """

    def __init__(self, option_strings, dest, kind="positive", **kwargs):
        self.kind = kind
        kwargs.setdefault("type", _NUMBERS[kind][0])
        super().__init__(option_strings, dest, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None):
        _, expected, accepted = _NUMBERS[self.kind]
        flag = option_string or self.dest
        items = values if isinstance(values, list) else [values]
        shown = " ".join(map(str, items))
        if not all(accepted(v) for v in items):
            raise UsageError(
                f"Argument `{flag}` must be {expected}"
                + (" (each value)" if len(items) > 1 else "")
                + f". Received: {flag}={shown}", parser.prog)
        if len(items) == 2 and self.metavar == ("MIN", "MAX") and \
                items[0] > items[1]:
            raise UsageError(
                f"Argument `{flag}` is a range MIN MAX whose MIN is larger "
                f"than its MAX. Received: {flag}={shown}. Pass {flag} "
                f"{items[1]} {items[0]}.", parser.prog)
        setattr(namespace, self.dest, values)


def add_number(parser, flag, kind, **kwargs):
    """`parser.add_argument(flag, ...)` for a number of a given `kind`."""
    return parser.add_argument(flag, action=Number, kind=kind, **kwargs)


# ----------------------------------------------------------------------
# Arguments shared by several subcommands.


def export_label(quantization):
    """How tables, plots and messages name an export: `"none"` is the
    float32 file; the other modes keep their names ("float16", "dynamic",
    "int8")."""
    return "float32" if quantization in (None, "none") else quantization


def add_common_arguments(parser):
    add_number(parser, "--seed", "non_negative_int", default=0,
               help="random seed of weights and shuffling")
    parser.add_argument("--debug", action="store_true",
                        help="show Python tracebacks and the TensorFlow, "
                        "XLA and LiteRT logs")


def add_model_arguments(parser):
    """The positional `TEACHER.keras STUDENT.keras` pair."""
    parser.add_argument("teacher", metavar="TEACHER.keras",
                        help="the trained teacher (logits or probabilities)")
    parser.add_argument("student", metavar="STUDENT.keras",
                        help="the student architecture (returns logits)")


def add_image_size_argument(parser):
    add_number(parser, "--image-size", "positive_int", nargs=2,
               metavar=("HEIGHT", "WIDTH"),
               help="size of images read from a folder (default: the "
               "student's input size)")


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
    add_image_size_argument(group)
    group.add_argument(
        "--unlabeled", metavar="DATA",
        help="extra unlabeled inputs mixed into training with the label -1 "
        "(soft loss only): a .npz with x_train (or x), or an image folder")
    add_number(group, "--validation-split", "fraction", default=0.0,
               metavar="FRACTION",
               help="fraction of the training data held out for validation; "
               "0 validates on the test split")
    add_number(group, "--batch-size", "positive_int", default=32,
               help="training batch size")


# ----------------------------------------------------------------------
# The start-up of the backend, quietly.


@contextlib.contextmanager
def native_output_silenced(enabled=True):
    """Silences what C++ code writes to the standard error (file descriptor
    2): TensorFlow, XLA and absl start-up lines, converter and LiteRT logs.

    Python's own `sys.stderr` keeps writing to the terminal, so keras_kd's
    warnings and errors still show. Does nothing if `enabled` is `False`
    (`--debug`).
    """
    if not enabled:
        yield
        return
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError, AttributeError):  # no real stderr
        yield
        return
    python_stderr = sys.stderr
    try:
        uses_fd2 = python_stderr.fileno() == 2
    except (AttributeError, OSError, ValueError):
        uses_fd2 = False
    replacement = None
    if uses_fd2:
        replacement = open(os.dup(saved), "w", buffering=1,
                           encoding=getattr(python_stderr, "encoding", None),
                           errors="backslashreplace")
        sys.stderr = replacement
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    os.close(devnull)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        if replacement is not None:
            if sys.stderr is replacement:
                sys.stderr = python_stderr
            replacement.close()


def quiet_environment():
    """Environment variables that quiet TensorFlow's C++ logs; effective
    only before TensorFlow is imported."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("GRPC_VERBOSITY", "ERROR")


def import_backend(quiet=True):
    """Imports Keras, its backend and keras_kd, silencing their start-up
    logs unless `quiet` is `False`."""
    if quiet:
        quiet_environment()
    with native_output_silenced(quiet):
        import importlib.util

        if importlib.util.find_spec("tensorflow") is not None:
            import tensorflow as tf

            # Device discovery logs too (a failed cuInit on a machine
            # without a GPU): do it now, silenced.
            tf.config.list_physical_devices()
        import keras

        # The modules that register keras_kd's serializable classes (a
        # saved Distiller, heads, losses), whether or not the package's
        # __init__ imported them already.
        import keras_kd.distiller  # noqa: F401
        import keras_kd.feature_match  # noqa: F401
        import keras_kd.losses  # noqa: F401

        if keras.backend.backend() == "jax":
            import jax

            jax.devices()


# ----------------------------------------------------------------------
# Files: inputs that exist, outputs that can be written.


def check_exists(flag, path, kind="file"):
    if path is None or not os.path.exists(path):
        raise UsageError(
            f"Argument `{flag}` names a {kind} that does not exist. Check the "
            f"path (relative paths start from {os.getcwd()!r}). Received: "
            f"{flag}={path!r}"
        )
    return path


def check_suffix(flag, path, *suffixes):
    if path is not None and not path.lower().endswith(suffixes):
        expected = " or ".join(f"`{s}`" for s in suffixes)
        raise UsageError(
            f"Argument `{flag}` must be a path ending in {expected}. "
            f"Received: {flag}={path!r}"
        )
    return path


def requires_error(flag, needs, received):
    return UsageError(f"Argument `{flag}` needs {needs}. Received: "
                      f"{received}")


def same_path(a, b):
    """Whether two paths name the same file (links and `..` resolved)."""
    if os.path.realpath(a) == os.path.realpath(b):
        return True
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def input_files(args, flags):
    """`{flag: path}` for the input arguments of `args` that name files or
    folders on this machine (not 'digits' or a TFDS name)."""
    found = {}
    for flag, attribute in flags.items():
        value = getattr(args, attribute, None)
        if value and os.path.exists(value):
            found[flag] = value
    return found


def check_outputs(outputs, inputs):
    """Refuses output paths that cannot be written or would overwrite an
    input (or another output), before anything is read or trained.

    Args:
        outputs: `{flag: path}` of the files the command writes.
        inputs: `{flag: path}` of the files and folders it reads.
    """
    seen = {}
    for flag, path in outputs.items():
        if path is None:
            continue
        try:
            io.check_file_target(flag, path)
        except (ValueError, OSError) as error:
            raise UsageError(str(error)) from error
        for other, other_path in {**inputs, **seen}.items():
            if same_path(path, other_path):
                role = "one of this command's inputs, which keras-kd never " \
                    "overwrites" if other in inputs else "another output"
                raise UsageError(
                    f"Argument `{flag}` names the same file as `{other}`, "
                    f"{role}. Received: {flag}={path!r}, "
                    f"{other}={other_path!r}. Write it to another path."
                )
        seen[flag] = path


def load_model(flag, path):
    """Loads a `.keras` model without its compile state."""
    check_exists(flag, path)
    try:
        io.check_keras_file(flag, path)
    except ValueError as error:
        raise UsageError(str(error)) from error
    import keras

    import keras_kd  # noqa: F401 (registers keras_kd's serializable classes)

    try:
        return keras.saving.load_model(path, compile=False)
    except Exception as error:
        raise UsageError(
            f"Argument `{flag}` must be a Keras model saved with "
            f"`model.save('model.keras')`, but loading it failed "
            f"({type(error).__name__}: {one_line(error)}). Received: "
            f"{flag}={path!r}"
        ) from error


def save_model(model, path):
    """Saves a Keras model atomically, creating its folder."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    io.atomic_keras_save(model, path)
    return path


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
            raise UsageError(
                "Argument `--validation-split` must be a number in [0, 1) "
                "that leaves at least one sample on each side. Received: "
                f"--validation-split={fraction!r} for {len(x)} samples"
            )
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
        raise UsageError(
            f"Argument `{flag}` must be 'digits', a `.npz` file in the "
            "keras.datasets layout, a folder of images (one sub-folder per "
            "class) or a TensorFlow Datasets name (with `--data-dir`). "
            f"Received: {flag}={spec!r}"
        )
    elif spec not in BUILTIN and not data_dir:
        data_dir = default_data_dir()
        if data_dir is None:
            raise UsageError(
                f"Argument `{flag}` names the TensorFlow Datasets dataset "
                f"{spec!r}, which keras-kd reads only from a folder where it "
                "is already prepared (it never downloads). Pass `--data-dir "
                "DIR` (or set TFDS_DATA_DIR), or pass 'digits' or a `.npz` "
                f"file. Received: {flag}={spec!r} without --data-dir"
            )
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
            raise UsageError(
                f"Argument `{flag}` must be a `.npz` holding the inputs as "
                f"`x_train` (or `x`). Received: {flag}={spec!r} with arrays "
                f"{sorted(data.files)}"
            )
        x = data[key]
    if len(x) == 0:
        raise UsageError(
            f"Argument `{flag}` must hold at least one input. Received: "
            f"{flag}={spec!r} with `{key}` of shape {x.shape}"
        )
    scale = 255.0 if x.dtype == np.uint8 else 1.0
    x = x.astype("float32") / scale
    check_finite(flag, x)
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
        raise UsageError(
            f"Argument `{flag}` names a folder without images. Expected "
            "image files (.png, .jpg, .jpeg, .bmp, .gif), in one sub-folder "
            f"per class for labeled data. Received: {flag}={path!r}"
        )
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
        raise UsageError(
            f"The {role} takes inputs of shape {(None,) + expected}, but the "
            f"data of `{flag}` has samples of shape {received}. Pass data of "
            f"the {role}'s input shape, or a model built for this data."
        )


def check_finite(flag, x):
    """Refuses inputs holding NaN or Inf (the loss would become NaN)."""
    import numpy as np

    if np.issubdtype(x.dtype, np.floating) and not np.isfinite(x).all():
        bad = ~np.isfinite(x.reshape(len(x), -1)).all(axis=1)
        raise UsageError(
            f"Argument `{flag}` must hold finite inputs, but "
            f"{int(bad.sum())} sample(s) hold NaN or Inf (the first at index "
            f"{int(np.argmax(bad))}). Received: {flag} of shape "
            f"{tuple(x.shape)}. Remove or repair those samples."
        )


def load_training_data(args, role, model):
    """`--data` (split) and `--unlabeled` for `model`, checked.

    Args:
        args: the parsed arguments (`data`, `data_dir`, `image_size`,
            `validation_split`, `seed`, `unlabeled`).
        role: `"student"` or `"teacher"`, the model the data must fit.
        model: that model; its input shape sizes the images.

    Returns:
        `(data, x, y)`: the loaded data with its validation split, and the
        training inputs and labels, `--unlabeled` samples appended with
        label `-1`.
    """
    import numpy as np

    image_shape = image_shape_of(model, args.image_size)
    data = load_data("--data", args.data, args.data_dir, image_shape)
    data.split_validation(args.validation_split, args.seed)
    x, y = data.train
    check_inputs(role, "--data", model, x)
    check_finite("--data", x)
    if args.unlabeled:
        extra = load_inputs("--unlabeled", args.unlabeled, image_shape)
        check_inputs(role, "--unlabeled", model, extra)
        x = np.concatenate([x, extra])
        y = np.concatenate([y, np.full((len(extra),), -1, y.dtype)])
    return data, x, y


def check_labels(flag, y, num_classes, unlabeled=True):
    """Labels must be class ids in `[0, num_classes)` (or `-1`, unlabeled,
    when `unlabeled` is `True`)."""
    low = -1 if unlabeled else 0
    if y is not None and len(y) and (y.min() < low or y.max() >= num_classes):
        extra = " (or -1 for an unlabeled sample)" if unlabeled else ""
        raise UsageError(
            f"The labels of `{flag}` must lie in [0, {num_classes}){extra}, "
            f"the classes of the student's {num_classes} logits. Received "
            f"labels from {int(y.min())} to {int(y.max())}"
        )


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
