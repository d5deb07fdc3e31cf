"""Quantization-aware distillation (QAD) vs post-training int8 on MNIST and
CIFAR-10.

A small MobileNet-like CNN student (convolution + batch norm + ReLU6, a
depthwise separable block, 3.4k parameters) is distilled in float from the
shared MNIST CNN teacher, then brought to a full-integer int8 `.tflite` four
ways; every int8 accuracy is measured in the LiteRT interpreter on the
10,000 MNIST test images:

- `float`: the distilled float student (Keras, and its float `.tflite`);
- `float_more`: the same student distilled for the QAD phase's extra epochs
  too (does the extra training alone explain a gain?);
- `ptq_int8`: today's export of `float`, post-training int8 calibrated on
  200 training images;
- `qat_labels`: `quantize_aware(float student)` trained on the labels alone
  (no teacher) for the QAD phase's epochs;
- `qad`: `quantize_aware(float student)` distilled from the teacher with the
  soft loss only (`alpha=0`, ModelOpt's recipe) for the same epochs.

- `float_more_labels_ptq_int8`: the float student
  trained on the labels alone for the same extra epochs, then post-training
  int8 (the float control of `qat_labels`);
- `qad_two_teachers` (`--data cifar10`): QAD from the two CIFAR teachers'
  averaged soft targets.

`--data cifar10` uses the CIFAR-10 ResNet teachers of `cifar10_benchmark.py`
(trained and cached by it: run it first), a MobileNet-like student of
depthwise separable blocks (batch norm, ReLU6) on raw 0-255 pixels, the
first `--train-examples` balanced training images (no augmentation, so the
teachers' outputs are cached once per seed-independent teacher set) and
all 10,000 test images.

Each row records the parity of its file: argmax agreement with the Keras
model it came from (the fake-quant model for QAT/QAD), the largest logit
difference in int8 steps of the output, how many disagreeing images are
near ties (two top Keras logits within twice the largest difference), the
file size and the interpreter's median latency for one image (one thread).

Run (about 5 minutes on 2 CPU cores):

    flock /tmp/kd_bench.lock env KERAS_BACKEND=tensorflow \
        python benchmarks/qad_benchmark.py --seeds 0 1 2
    flock /tmp/kd_bench.lock env KERAS_BACKEND=tensorflow \
        python benchmarks/qad_benchmark.py --data cifar10 --epochs 10 \
        --qad-epochs 2 --train-examples 10000 --seeds 0 1 2

Rows go to benchmarks/results/qad.jsonl.
"""

import argparse
import os
import tempfile
import time

import benchmark_utils as bu
import keras
import numpy as np

import keras_kd
import keras_kd.export
import keras_kd.quantization


def mobile_student(num_classes=10):
    inputs = keras.Input((28, 28, 1))
    x = keras.layers.Conv2D(16, 3, strides=2, use_bias=False)(inputs)
    x = keras.layers.BatchNormalization()(x)
    x = keras.layers.ReLU(6.0)(x)
    x = keras.layers.DepthwiseConv2D(
        3, strides=2, padding="same", use_bias=False
    )(x)
    x = keras.layers.BatchNormalization()(x)
    x = keras.layers.ReLU(6.0)(x)
    x = keras.layers.Conv2D(16, 1, use_bias=False)(x)
    x = keras.layers.BatchNormalization()(x)
    x = keras.layers.ReLU(6.0)(x)
    x = keras.layers.Flatten()(x)
    outputs = keras.layers.Dense(num_classes)(x)
    return keras.Model(inputs, outputs, name="student")


def cifar_student(num_classes=10, width=24):
    """MobileNet-like: conv stem, four depthwise separable blocks, GAP."""
    L = keras.layers
    inputs = keras.Input((32, 32, 3))
    x = L.Conv2D(width, 3, padding="same", use_bias=False)(inputs)
    x = L.BatchNormalization()(x)
    x = L.ReLU(6.0)(x)
    for filters, stride in ((2 * width, 2), (2 * width, 1), (4 * width, 2),
                            (4 * width, 1)):
        x = L.DepthwiseConv2D(3, strides=stride, padding="same",
                              use_bias=False)(x)
        x = L.BatchNormalization()(x)
        x = L.ReLU(6.0)(x)
        x = L.Conv2D(filters, 1, use_bias=False)(x)
        x = L.BatchNormalization()(x)
        x = L.ReLU(6.0)(x)
    x = L.GlobalAveragePooling2D()(x)
    outputs = L.Dense(num_classes)(x)
    return keras.Model(inputs, outputs, name="student")


# Cached teacher targets per teacher set: the data has no augmentation, so
# one teacher pass serves every row and seed.
_TARGETS = {}


def distil(teacher, student, x, y, epochs, alpha, learning_rate,
           batch_size=64):
    if isinstance(teacher, (list, tuple)) and len(teacher) > 1:
        # The CIFAR teachers share a name: a dict names them.
        distiller = keras_kd.Distiller(
            teachers={f"teacher{i}": t for i, t in enumerate(teacher)},
            student=student, alpha=alpha, temperature=4.0)
    else:
        distiller = keras_kd.Distiller(
            teacher[0] if isinstance(teacher, (list, tuple)) else teacher,
            student, alpha=alpha, temperature=4.0)
    distiller.compile(optimizer=keras.optimizers.Adam(learning_rate))
    if isinstance(teacher, (list, tuple)):
        key = tuple(id(t) for t in teacher)
        if key not in _TARGETS:
            cache = keras_kd.data.cache_teacher_outputs(distiller, x,
                                                        verbose=0)
            _TARGETS[key] = cache.targets(y, x=x)
        distiller.fit(x, _TARGETS[key], epochs=epochs,
                      batch_size=batch_size, shuffle=True, verbose=0)
    else:
        distiller.fit(x, y, epochs=epochs, batch_size=batch_size, verbose=0)
    return student


def accuracy(model, x, y):
    return float(np.mean(
        model.predict(x, batch_size=1024, verbose=0).argmax(-1) == y))


def near_ties(keras_model, path, x_test, max_abs_diff):
    """How the argmax disagreements of a file arise.

    Returns the number of test images whose Keras and `.tflite` argmaxes
    differ, how many of those have their two largest Keras logits within
    `2 * max_abs_diff` of each other (a difference of at most
    `max_abs_diff` per logit can swap them), and the share of all test
    images whose two largest Keras logits are that close.
    """
    expected = keras_model.predict(x_test, batch_size=256, verbose=0)
    actual = keras_kd.export.LiteRTModel(path).predict(x_test, batch_size=256)
    top2 = np.sort(expected, axis=-1)[:, -2:]
    close = (top2[:, 1] - top2[:, 0]) <= 2 * max_abs_diff
    differ = expected.argmax(-1) != actual.argmax(-1)
    return {"disagreements": int(differ.sum()),
            "disagreements_near_tie": int((differ & close).sum()),
            "near_tie_share": float(close.mean())}


def report_row(name, keras_model, path, x_test, y_test, **extra):
    report = keras_kd.export.parity_report(
        keras_model, path, (x_test, y_test), batch_size=256,
        latency_runs=200, num_threads=1)
    extra.update(near_ties(keras_model, path, x_test, report.max_abs_diff))
    return {
        "row": name,
        "keras_accuracy": report.keras_accuracy,
        "tflite_accuracy": report.tflite_accuracy,
        "top1_agreement": report.top1_agreement,
        "max_diff_steps": report.max_diff_steps,
        "max_abs_diff": report.max_abs_diff,
        "file_size": report.file_size,
        "latency_ms": report.latency_ms,
        "quantization": report.quantization,
        **extra,
    }


def run_seed(seed, teachers, x, y, x_test, y_test, args, folder):
    rows = []
    teacher = teachers[:1] if args.data == "cifar10" else teachers[0]
    batch = args.batch_size
    keras.utils.set_random_seed(seed)
    student = cifar_student() if args.data == "cifar10" else mobile_student()
    start = time.perf_counter()
    distil(teacher, student, x, y, args.epochs, 0.1, 1e-3, batch)
    float_time = time.perf_counter() - start
    path = keras_kd.export.export_student(
        student, os.path.join(folder, f"float_{seed}.tflite"))
    rows.append(report_row("float", student, path, x_test, y_test,
                           epochs=args.epochs, train_s=float_time))
    path = keras_kd.export.export_student(
        student, os.path.join(folder, f"ptq_{seed}.tflite"),
        quantization="int8", representative_data=x[:200])
    rows.append(report_row("ptq_int8", student, path, x_test, y_test,
                           epochs=args.epochs))
    saved = os.path.join(folder, f"float_{seed}.keras")
    student.save(saved)

    def fresh():
        return keras.saving.load_model(saved)

    # Control: the same extra epochs in float.
    keras.utils.set_random_seed(seed + 100)
    more = distil(teacher, fresh(), x, y, args.qad_epochs, 0.1, 1e-4, batch)
    path = keras_kd.export.export_student(
        more, os.path.join(folder, f"more_{seed}.tflite"),
        quantization="int8", representative_data=x[:200])
    rows.append(report_row("float_more_ptq_int8", more, path, x_test,
                           y_test, epochs=args.epochs + args.qad_epochs,
                           float_keras_accuracy=accuracy(more, x_test,
                                                         y_test)))

    # Control of QAT: the same extra epochs on the labels, in float.
    keras.utils.set_random_seed(seed + 100)
    labels = fresh()
    labels.compile(optimizer=keras.optimizers.Adam(1e-4),
                   loss=bu.sparse_ce())
    labels.fit(x, y, epochs=args.qad_epochs, batch_size=batch, verbose=0)
    path = keras_kd.export.export_student(
        labels, os.path.join(folder, f"labels_{seed}.tflite"),
        quantization="int8", representative_data=x[:200])
    rows.append(report_row("float_more_labels_ptq_int8", labels, path,
                           x_test, y_test,
                           epochs=args.epochs + args.qad_epochs,
                           float_keras_accuracy=accuracy(
                               labels, x_test, y_test)))

    # QAT on labels only.
    keras.utils.set_random_seed(seed + 100)
    qat = keras_kd.quantization.quantize_aware(fresh(), x[:512])
    qat.compile(optimizer=keras.optimizers.Adam(1e-4), loss=bu.sparse_ce())
    qat.fit(x, y, epochs=args.qad_epochs, batch_size=batch, verbose=0)
    path = keras_kd.export.export_student(
        qat, os.path.join(folder, f"qat_{seed}.tflite"), quantization="int8")
    rows.append(report_row("qat_labels", qat, path, x_test, y_test,
                           epochs=args.epochs + args.qad_epochs))

    # QAD: soft loss only, from the float teacher(s).
    qad_rows = [("qad", teacher)]
    if len(teachers) > 1:
        qad_rows.append(("qad_two_teachers", list(teachers)))
    for name, source in qad_rows:
        keras.utils.set_random_seed(seed + 100)
        qad = keras_kd.quantization.quantize_aware(fresh(), x[:512])
        start = time.perf_counter()
        distil(source, qad, x, y, args.qad_epochs, 0.0, 1e-4, batch)
        qad_time = time.perf_counter() - start
        path = keras_kd.export.export_student(
            qad, os.path.join(folder, f"{name}_{seed}.tflite"),
            quantization="int8")
        rows.append(report_row(name, qad, path, x_test, y_test,
                               epochs=args.epochs + args.qad_epochs,
                               train_s=qad_time))
    for row in rows:
        row.update(seed=seed, data=args.data, train_examples=len(x),
                   student_params=int(student.count_params()))
    return rows


def load_data(args):
    """`(x, y), (x_test, y_test), teachers, names` for `args.data`."""
    if args.data == "mnist":
        (x, y), (x_test, y_test) = bu.load("mnist")
        x = np.asarray(x, "float32").reshape(-1, 28, 28, 1)
        x_test = np.asarray(x_test, "float32").reshape(-1, 28, 28, 1)
        x, y = x[:args.train_examples], np.asarray(y[:args.train_examples])
        teacher, path = bu.cached_teacher("mnist", x[:10000], y[:10000], 3)
        return (x, y), (x_test, np.asarray(y_test)), [teacher], [path]
    import cifar10_benchmark as cb

    (x_all, y_all), (x_test, y_test) = cb.load_cifar10()
    x, y = cb.balanced_subset(x_all, y_all, args.train_examples)
    teachers, names = [], []
    for width in (16, 8):
        path = os.path.join(bu.HERE, "results", "teachers",
                            f"cifar10_resnet14_w{width}_e10_n25000.keras")
        if not os.path.exists(path):
            raise SystemExit(f"{path} not found: run cifar10_benchmark.py "
                             "--rows teacher first")
        teachers.append(keras.saving.load_model(path))
        names.append(path)
    # Raw 0-255 pixels as float32: the teachers rescale them inside, and
    # the student's int8 input quantization is exact on integer pixels.
    return ((x.astype("float32"), y), (x_test.astype("float32"), y_test),
            teachers, names)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", choices=("mnist", "cifar10"),
                        default="mnist")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--qad-epochs", type=int, default=1)
    parser.add_argument("--train-examples", type=int, default=20000)
    parser.add_argument("--batch-size", type=int, default=None,
                        help="64 for MNIST, 128 for CIFAR-10 by default")
    parser.add_argument("--output", default=os.path.join(
        bu.HERE, "results", "qad.jsonl"))
    args = parser.parse_args()
    if args.batch_size is None:
        args.batch_size = 128 if args.data == "cifar10" else 64
    (x, y), (x_test, y_test), teachers, paths = load_data(args)
    teacher_accuracy = [accuracy(t, x_test, y_test) for t in teachers]
    print(f"teachers {[os.path.basename(p) for p in paths]}: "
          f"{teacher_accuracy}", flush=True)
    load = os.getloadavg()
    with tempfile.TemporaryDirectory() as folder:
        for seed in args.seeds:
            rows = run_seed(seed, teachers, x, y, x_test, y_test, args,
                            folder)
            for row in rows:
                row.update(teacher=os.path.basename(paths[0]),
                           teacher_accuracy=teacher_accuracy[0],
                           teachers=[os.path.basename(p) for p in paths],
                           teachers_accuracy=teacher_accuracy,
                           load_average_start=load,
                           load_average_end=os.getloadavg())
                print({k: row[k] for k in ("row", "seed", "keras_accuracy",
                                           "tflite_accuracy",
                                           "top1_agreement",
                                           "max_diff_steps")}, flush=True)
            bu.write_rows(args.output, rows)


if __name__ == "__main__":
    main()
