"""Shared fixtures: a seed per test, tiny teacher/student pairs, markers."""

import keras
import numpy as np
import pytest


BACKEND = keras.backend.backend()


def pytest_collection_modifyitems(config, items):
    """Skips tests marked for other backends (markers in setup.cfg)."""
    for item in items:
        backends = set()
        if item.get_closest_marker("tensorflow_only"):
            backends.add("tensorflow")
        marker = item.get_closest_marker("backends")
        if marker:
            backends.update(marker.args)
        if backends and BACKEND not in backends:
            item.add_marker(pytest.mark.skip(
                reason=f"Runs on {', '.join(sorted(backends))}; "
                f"KERAS_BACKEND={BACKEND}."
            ))


@pytest.fixture(autouse=True)
def _seed_and_clear():
    keras.backend.clear_session()
    keras.utils.set_random_seed(0)
    yield


def make_dense_pair(num_classes=10, features=20, seed=0):
    """Teacher Dense 32->32->10 and student Dense 16->10 on `(None, 20)`."""
    keras.utils.set_random_seed(seed)
    teacher = keras.Sequential(
        [
            keras.Input((features,)),
            keras.layers.Dense(32, activation="relu", name="t_hidden1"),
            keras.layers.Dense(32, activation="relu", name="t_hidden2"),
            keras.layers.Dense(num_classes, name="t_logits"),
        ],
        name="teacher",
    )
    student = keras.Sequential(
        [
            keras.Input((features,)),
            keras.layers.Dense(16, activation="relu", name="s_hidden"),
            keras.layers.Dense(num_classes, name="s_logits"),
        ],
        name="student",
    )
    return teacher, student


def make_conv_pair(num_classes=10, seed=0):
    """Conv teacher with 8x8x16 maps, conv student with 16x16x8 maps."""
    keras.utils.set_random_seed(seed)
    t_in = keras.Input((16, 16, 3))
    x = keras.layers.Conv2D(8, 3, padding="same", activation="relu",
                            name="t_conv1")(t_in)
    x = keras.layers.MaxPooling2D(2, name="t_pool")(x)
    x = keras.layers.Conv2D(16, 3, padding="same", activation="relu",
                            name="t_conv2")(x)
    x = keras.layers.GlobalAveragePooling2D(name="t_gap")(x)
    x = keras.layers.Dense(num_classes, name="t_logits")(x)
    teacher = keras.Model(t_in, x, name="conv_teacher")
    s_in = keras.Input((16, 16, 3))
    y = keras.layers.Conv2D(8, 3, padding="same", activation="relu",
                            name="s_conv1")(s_in)
    y = keras.layers.GlobalAveragePooling2D(name="s_gap")(y)
    y = keras.layers.Dense(num_classes, name="s_logits")(y)
    student = keras.Model(s_in, y, name="conv_student")
    return teacher, student


def make_token_pair(vocabulary=12, student_vocabulary=None, seed=0):
    """Token models `(batch, sequence)` ids -> `(batch, sequence, vocab)`
    logits: a teacher with two hidden layers (`t_hidden2` is 16 wide) and a
    student with one (`s_hidden`, 8 wide). Tokens do not interact, so the
    logits of real tokens do not depend on the padding: any change with
    the padding comes from the loss."""
    keras.utils.set_random_seed(seed)

    def lm(name, widths, vocab):
        ids = keras.Input((None,), dtype="int32", name=f"{name}_ids")
        h = keras.layers.Embedding(vocab, widths[0], name=f"{name}_embed")(ids)
        for i, width in enumerate(widths):
            suffix = "" if len(widths) == 1 else str(i + 1)
            h = keras.layers.Dense(width, activation="tanh",
                                   name=f"{name}_hidden{suffix}")(h)
        out = keras.layers.Dense(vocab, name=f"{name}_logits")(h)
        return keras.Model(ids, out, name=f"{name}_lm")

    teacher = lm("t", (16, 16), vocabulary)
    student = lm("s", (8,), student_vocabulary or vocabulary)
    return teacher, student


def make_token_data(n=8, length=6, vocabulary=12, seed=0):
    """Ids, next-token labels and a padding mask of variable lengths.

    Returns `(ids, labels, mask)`: padded positions hold id 0, label 0 and
    weight 0 (as KerasHub's `CausalLMPreprocessor` gives them); one row has
    a single real token.
    """
    rng = np.random.default_rng(seed)
    lengths = rng.integers(1, length + 1, size=(n,))
    lengths[0] = length
    lengths[-1] = 1
    mask = (np.arange(length)[None] < lengths[:, None]).astype("float32")
    ids = (rng.integers(1, vocabulary, size=(n, length)) * mask).astype(
        "int32")
    labels = (rng.integers(1, vocabulary, size=(n, length)) * mask).astype(
        "int32")
    return ids, labels, mask


def make_data(n=64, features=20, num_classes=10, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, features)).astype("float32")
    y = rng.integers(0, num_classes, size=(n,)).astype("int32")
    return x, y


@pytest.fixture
def dense_pair():
    return make_dense_pair()


@pytest.fixture
def conv_pair():
    return make_conv_pair()
