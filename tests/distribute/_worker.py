"""Runs one small distillation and prints its final weights and logs as JSON.

Used by replicas_test.py in fresh processes, since device counts must be set
before TensorFlow or JAX starts. Usage:

    python _worker.py CONFIG_JSON

CONFIG keys: backend ("tensorflow"|"jax"), mode ("single", "mirrored",
"multi_worker", "data_parallel", "model_parallel" (JAX, the "tokens" case),
"jax_multi_process"), case ("response",
"feature", "relation", "dkd", "dist", "ls", "teachers", "sigmoid",
"user", "tokens"),
sample_weight (bool), unlabeled (bool), and for the
multi-process modes: process_id, num_processes, coordinator.
"""

import json
import os
import sys

config = json.loads(sys.argv[1])
os.environ["KERAS_BACKEND"] = config["backend"]
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
if config["backend"] == "jax" and config["mode"] in ("data_parallel",
                                                     "model_parallel"):
    os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=2"
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__)))))

if config["backend"] == "tensorflow":
    import tensorflow as tf

    if config["mode"] in ("single", "mirrored"):
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
else:
    import jax

if config["mode"] == "jax_multi_process":
    jax.config.update("jax_cpu_collectives_implementation", "gloo")

    jax.distributed.initialize(
        coordinator_address=config["coordinator"],
        num_processes=config["num_processes"],
        process_id=config["process_id"],
    )

import keras  # noqa: E402
import numpy as np  # noqa: E402

import keras_kd  # noqa: E402
from tests.conftest import make_conv_pair  # noqa: E402
from tests.conftest import make_token_data  # noqa: E402
from tests.conftest import make_token_pair  # noqa: E402


def data():
    if config["case"] == "tokens":
        # Variable-length sequences: a per-token padding mask (times a
        # per-sample weight), and labels of -1 where unlabeled. Replica
        # shards hold different numbers of real tokens.
        ids, y, mask = make_token_data(n=32, length=7, seed=3)
        if config.get("unlabeled"):
            y = np.where(np.arange(7)[None] % 3 == 1, -1, y)
        w = mask
        if config.get("sample_weight"):
            w = mask * np.linspace(0.1, 2.0, 32)[:, None]
        return ids, y, w.astype("float32")
    rng = np.random.default_rng(0)
    x = rng.normal(size=(32, 16, 16, 3)).astype("float32")
    y = rng.integers(0, 10, size=(32,)).astype("int32")
    if config["case"] == "sigmoid":
        y = (rng.random((32, 3)) > 0.5).astype("float32")
    if config.get("unlabeled"):
        y[::3] = -1
    w = None
    if config.get("sample_weight"):
        w = np.linspace(0.1, 2.0, 32).astype("float32")
    return x, y, w


def features():
    case = config["case"]
    if case == "feature":
        return [keras_kd.FeatureMatch("t_conv2", "s_conv1", batch_norm=False)]
    if case == "relation":
        return [keras_kd.RelationMatch("rkd_distance", "t_gap", "s_gap"),
                keras_kd.RelationMatch("similarity_preserving", "t_conv2",
                                       "s_conv1")]
    return []


class BatchCentredLogits(keras_kd.Term):
    """A user-written relational term: logits centred on the batch mean."""

    relational = True

    def call(self, teacher, student, labels=None):
        t = teacher - keras.ops.mean(teacher, axis=0, keepdims=True)
        s = student - keras.ops.mean(student, axis=0, keepdims=True)
        return keras.ops.mean(keras.ops.square(t - s), axis=-1)


def distiller_kwargs(teacher):
    """The terms (and teachers) of each case, beside the default KD."""
    from keras_kd.terms.dist import DIST
    from keras_kd.terms.dkd import DKD

    case = config["case"]
    hard = keras_kd.HardLoss()
    if case == "dkd":
        return dict(terms=[hard, DKD(warmup_epochs=0)])
    if case == "dist":
        return dict(terms=[hard, DIST()])
    if case == "ls":
        return dict(alpha=0.5, terms=[
            hard, keras_kd.SoftTargets(standardize=True)])
    if case == "teachers":
        second, _ = make_conv_pair(seed=2)
        return dict(alpha=0.5, teachers={"a": teacher, "b": second})
    if case == "sigmoid":
        return dict(alpha=0.5, outputs="sigmoid")
    if case == "user":
        return dict(alpha=0.5, terms=[hard, keras_kd.SoftTargets(),
                                      BatchCentredLogits(weight=0.5)])
    if case == "tokens":
        return dict(alpha=0.5, features=[keras_kd.FeatureMatch(
            "t_hidden2", "s_hidden", batch_norm=False)])
    return dict(alpha=0.5, features=features())


def build():
    classes = 3 if config["case"] == "sigmoid" else 10
    if config["case"] == "tokens":
        teacher, student = make_token_pair(seed=0)
    else:
        teacher, student = make_conv_pair(num_classes=classes, seed=0)
    kwargs = distiller_kwargs(teacher)
    if "teachers" in kwargs:
        teacher = None
    keras.utils.set_random_seed(1)
    d = keras_kd.Distiller(teacher, student, temperature=2.0, **kwargs)
    d.compile(optimizer=keras.optimizers.SGD(0.05), metrics=["accuracy"])
    return d, student


def _numpy(variable):
    value = variable.value
    if config["mode"] == "jax_multi_process":
        # Replicated weights: every process holds the whole value locally.
        value = value.addressable_data(0)
    return np.asarray(keras.ops.convert_to_numpy(value)).tolist()


def main():
    mode = config["mode"]
    x, y, w = data()
    if config["backend"] == "tensorflow":
        if mode == "single":
            strategy = tf.distribute.OneDeviceStrategy("/cpu:0")
        elif mode == "mirrored":
            strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
        else:
            strategy = tf.distribute.MultiWorkerMirroredStrategy()
        with strategy.scope():
            d, student = build()
        parts = (x, y) if w is None else (x, y, w)
        ds = tf.data.Dataset.from_tensor_slices(parts).batch(8)
        history = d.fit(ds, epochs=2, verbose=0, shuffle=False)
    else:
        batch_size = 8
        if mode in ("data_parallel", "jax_multi_process"):
            distribution = keras.distribution.DataParallel(
                devices=jax.devices())
            # Each process already feeds its own shard (see below).
            distribution.auto_shard_dataset = False
            keras.distribution.set_distribution(distribution)
        if mode == "model_parallel":
            # Teacher, student and head weights sharded over 2 devices.
            mesh = keras.distribution.DeviceMesh(
                (1, 2), ["batch", "model"], devices=jax.devices())
            layout_map = keras.distribution.LayoutMap(mesh)
            layout_map[".*embed.*embeddings"] = (None, "model")
            layout_map[".*hidden.*kernel"] = (None, "model")
            layout_map[".*logits.*kernel"] = ("model", None)
            keras.distribution.set_distribution(
                keras.distribution.ModelParallel(
                    layout_map=layout_map, batch_dim_name="batch"))
        if mode == "jax_multi_process":
            # Each process feeds its half of every global batch of 8.
            n, p = config["num_processes"], config["process_id"]
            batch_size = 8 // n
            rows = np.arange(len(x)).reshape(-1, n, batch_size)[:, p]
            rows = rows.reshape(-1)
            x, y = x[rows], y[rows]
            w = None if w is None else w[rows]
        d, student = build()
        history = d.fit(x, y, sample_weight=w, batch_size=batch_size,
                        epochs=2, shuffle=False, verbose=0)
    weights = [_numpy(v) for v in student.trainable_weights]
    if mode == "model_parallel":
        sharded = [v.name for v in student.trainable_weights
                   if len(v.value.sharding.device_set) > 1
                   and "model" in str(v.value.sharding.spec)]
        assert sharded, "no student weight is sharded"
    heads = [_numpy(v) for m in d.features for v in m.trainable_weights]
    logs = {k: float(np.asarray(v[-1]).reshape(-1)[0])
            for k, v in history.history.items()}
    print("RESULT " + json.dumps({"weights": weights, "heads": heads,
                                  "logs": logs}))


if __name__ == "__main__":
    main()
