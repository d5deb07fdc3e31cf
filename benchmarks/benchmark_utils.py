"""Shared helpers of the benchmarks: data, models, timing and result rows."""

import json
import os
import platform
import subprocess
import sys
import time

import keras
import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
# Measure this checkout's keras_kd, not another copy installed in the
# environment (the scripts import this module before keras_kd).
sys.path.insert(0, ROOT)
MNIST = os.path.join(HERE, "..", "..", "shared", "data", "mnist.npz")


def load(name, limit=None):
    """`"mnist"` (the shared copy) or `"digits"` (ships with scikit-learn)."""
    import keras_kd

    if name == "mnist":
        if not os.path.exists(MNIST):
            raise SystemExit(f"MNIST not found at {MNIST}; use --data digits")
        data = keras_kd.data.load_dataset(MNIST)
    else:
        data = keras_kd.data.load_dataset(name)
    (x, y), (xt, yt) = data
    if limit:
        x, y = x[:limit], y[:limit]
    return (x, y), (xt, yt)


def cnn_teacher(input_shape, num_classes, width=32):
    return keras.Sequential(
        [
            keras.Input(input_shape),
            keras.layers.Conv2D(width, 3, padding="same", activation="relu",
                                name="t_conv1"),
            keras.layers.Conv2D(2 * width, 3, padding="same",
                                activation="relu", name="t_conv2"),
            keras.layers.MaxPooling2D(name="t_pool1"),
            keras.layers.Dropout(0.25),
            keras.layers.Flatten(),
            keras.layers.Dense(128, activation="relu", name="t_embedding"),
            keras.layers.Dropout(0.5),
            keras.layers.Dense(num_classes, name="t_logits"),
        ],
        name="teacher",
    )


def mlp_student(input_shape, num_classes, hidden=32):
    return keras.Sequential(
        [
            keras.Input(input_shape),
            keras.layers.Flatten(),
            keras.layers.Dense(hidden, activation="relu", name="s_embedding"),
            keras.layers.Dense(num_classes, name="s_logits"),
        ],
        name="student",
    )


def cnn_student(input_shape, num_classes, hidden=32, width=8):
    """A small CNN student: one convolution and pooling before the MLP."""
    return keras.Sequential(
        [
            keras.Input(input_shape),
            keras.layers.Conv2D(width, 3, padding="same", activation="relu",
                                name="s_conv1"),
            keras.layers.MaxPooling2D(name="s_pool1"),
            keras.layers.Flatten(),
            keras.layers.Dense(hidden, activation="relu", name="s_embedding"),
            keras.layers.Dense(num_classes, name="s_logits"),
        ],
        name="student",
    )


def sparse_ce():
    return keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def train_teacher(x, y, epochs, seed=0, batch_size=128, width=32):
    keras.utils.set_random_seed(seed)
    teacher = cnn_teacher(x.shape[1:], int(y.max()) + 1, width)
    teacher.compile(optimizer="adam", loss=sparse_ce(), metrics=["accuracy"])
    teacher.fit(x, y, epochs=epochs, batch_size=batch_size, verbose=0)
    return teacher


def cached_teacher(data, x, y, epochs, width=32, batch_size=128):
    """Trains the benchmark teacher once and keeps it in results/teachers.

    Later runs (and other benchmarks) load the same teacher, so their
    numbers compare students against one fixed teacher.
    """
    path = os.path.join(HERE, "results", "teachers",
                        f"{data}_w{width}_e{epochs}_n{len(x)}.keras")
    if os.path.exists(path):
        return keras.saving.load_model(path), path
    teacher = train_teacher(x, y, epochs, seed=0, batch_size=batch_size,
                            width=width)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    teacher.save(path)
    return teacher, path


def test_errors(model, x, y):
    logits = model.predict(x, batch_size=1024, verbose=0)
    return int(np.sum(np.argmax(logits, -1) != y))


def _git(*args):
    try:
        return subprocess.run(["git", *args], cwd=HERE, capture_output=True,
                              text=True, check=False).stdout.strip()
    except OSError:
        return ""


# Read when the benchmark starts: the code it imports is this commit's (plus
# the uncommitted changes to keras_kd/, if any, flagged in each row).
_COMMIT = _git("rev-parse", "--short", "HEAD")
_DIRTY = bool(_git("status", "--porcelain", "--", os.path.join(ROOT,
                                                                "keras_kd")))


def environment():
    """Versions, device and commit recorded with every result row."""
    commit = _COMMIT + ("+uncommitted" if _DIRTY else "")
    record = {
        "keras": keras.__version__,
        "backend": keras.backend.backend(),
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "commit": commit,
    }
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        record["tensorflow"] = tf.__version__
        record["device"] = "GPU" if tf.config.list_physical_devices(
            "GPU") else "CPU"
    elif keras.backend.backend() == "jax":
        import jax

        record["jax"] = jax.__version__
        record["device"] = jax.devices()[0].platform.upper()
    elif keras.backend.backend() == "torch":
        import torch

        record["torch"] = torch.__version__
        record["device"] = "GPU" if torch.cuda.is_available() else "CPU"
    return record


def write_rows(path, rows):
    """Appends result rows (dicts) to a JSON-lines file."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    env = environment()
    with open(path, "a") as f:
        for row in rows:
            f.write(json.dumps({**row, **env}) + "\n")


def mean_std(values):
    values = np.asarray(values, dtype="float64")
    return float(values.mean()), float(values.std(ddof=1) if len(values) > 1
                                       else 0.0)


class Clock:
    """Wall time of a callable, after warm-up calls that are not counted."""

    @staticmethod
    def time(fn, repeats=1):
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
        return times
