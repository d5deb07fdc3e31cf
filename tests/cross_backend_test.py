"""The same batches and weights give the same losses on every backend.

Each backend runs this file as a script in its own process (a backend is
fixed when Keras starts): it builds the models, sets every weight from one
NumPy generator, takes three SGD steps with `train_on_batch` and one
`test_on_batch`, and prints the logs as JSON. The test compares TensorFlow,
JAX and PyTorch to `rtol=1e-5`: the forward losses, and through the later
steps the gradients and the optimizer update.

    KERAS_BACKEND=torch python tests/cross_backend_test.py
"""

import importlib.util
import json
import os
import subprocess
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BACKENDS = ("tensorflow", "jax", "torch")
CASES = ("response", "features", "conv")
TIMEOUT = 300


def _models(case):
    from tests.conftest import make_conv_pair
    from tests.conftest import make_dense_pair

    if case == "conv":
        return make_conv_pair()
    return make_dense_pair()


def _features(case):
    import keras_kd

    if case == "features":
        return [
            keras_kd.FeatureMatch("t_hidden2", "s_hidden", loss="mse"),
            keras_kd.FeatureMatch("t_hidden1", "s_hidden", loss="cosine"),
            keras_kd.RelationMatch("rkd_distance", "t_hidden2", "s_hidden"),
            keras_kd.RelationMatch("rkd_angle", "t_hidden2", "s_hidden"),
            keras_kd.RelationMatch("sp", "t_hidden1", "s_hidden"),
            keras_kd.RelationMatch("pkt", "t_logits", "s_logits"),
        ]
    if case == "conv":
        return [
            keras_kd.FeatureMatch("t_conv2", "s_conv1"),
            keras_kd.FeatureMatch("t_conv1", "s_conv1", loss="attention",
                                  weight=100.0),
        ]
    return []


def _set_weights(variables, rng):
    for v in variables:
        shape = tuple(v.shape)
        if "variance" in v.path:
            value = rng.uniform(0.5, 1.5, size=shape)
        else:
            value = rng.normal(scale=0.3, size=shape)
        v.assign(value.astype(v.dtype))


def _batch(case):
    rng = np.random.default_rng(1)
    shape = (16, 16, 16, 3) if case == "conv" else (16, 20)
    x = rng.normal(size=shape).astype("float32")
    y = rng.integers(0, 10, size=(16,)).astype("int32")
    y[::4] = -1  # unlabeled samples inside a labeled batch
    w = rng.uniform(0.2, 2.0, size=(16,)).astype("float32")
    return x, y, w


def run_case(case):
    """Three training steps and one evaluation: the logs of each."""
    import keras

    import keras_kd

    teacher, student = _models(case)
    distiller = keras_kd.Distiller(teacher, student, alpha=0.3,
                                   temperature=3.0, features=_features(case))
    rng = np.random.default_rng(0)
    _set_weights(teacher.weights, rng)
    _set_weights(student.weights, rng)
    for match in distiller.features:
        _set_weights(match.weights, rng)
    distiller.compile(optimizer=keras.optimizers.SGD(0.01),
                      metrics=["accuracy"])
    x, y, w = _batch(case)
    logs = []
    for _ in range(3):
        logs.append(distiller.train_on_batch(x, y, sample_weight=w,
                                             return_dict=True))
    logs.append(distiller.test_on_batch(x, y, sample_weight=w,
                                        return_dict=True))
    return [{k: float(v) for k, v in step.items()} for step in logs]


def main():
    sys.path.insert(0, ROOT)
    results = {case: run_case(case) for case in CASES}
    print("RESULT " + json.dumps(results))


_RESULTS = {}


def results(backend):
    """The logs of every case on `backend`, computed once per session."""
    if importlib.util.find_spec(backend) is None:
        pytest.skip(f"`{backend}` is not installed.")
    if backend not in _RESULTS:
        env = dict(os.environ, KERAS_BACKEND=backend,
                   TF_CPP_MIN_LOG_LEVEL="3", PYTHONWARNINGS="ignore")
        env["PYTHONPATH"] = os.pathsep.join(
            [ROOT] + [p for p in [env.get("PYTHONPATH")] if p]
        )
        out = subprocess.run([sys.executable, os.path.abspath(__file__)],
                             capture_output=True, text=True, cwd=ROOT,
                             env=env, timeout=TIMEOUT)
        lines = [line for line in out.stdout.splitlines()
                 if line.startswith("RESULT ")]
        # A failed run is kept too, so its error shows once per case
        # without running the backend again.
        _RESULTS[backend] = (
            json.loads(lines[-1][len("RESULT "):]) if lines
            else f"{backend} failed:\n{out.stderr[-4000:]}"
        )
    if isinstance(_RESULTS[backend], str):
        pytest.fail(_RESULTS[backend])
    return _RESULTS[backend]


# It starts every backend itself, so one run of the suite is enough.
@pytest.mark.slow
@pytest.mark.backends("tensorflow")
@pytest.mark.parametrize("backend", ["jax", "torch"])
@pytest.mark.parametrize("case", CASES)
def test_same_losses_as_tensorflow(case, backend):
    expected = results("tensorflow")[case]
    actual = results(backend)[case]
    assert len(actual) == len(expected)
    for step, (want, got) in enumerate(zip(expected, actual)):
        assert set(got) == set(want), step
        for key, value in want.items():
            np.testing.assert_allclose(
                got[key], value, rtol=1e-5, atol=1e-6,
                err_msg=f"{backend}, {case}, step {step}: {key}",
            )
    # The steps trained: the last training loss is below the first.
    assert expected[2]["loss"] < expected[0]["loss"]


if __name__ == "__main__":
    main()
