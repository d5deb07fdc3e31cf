"""Quantization-aware distillation (QAD) vs post-training int8 on MNIST.

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

Each row records the parity of its file: argmax agreement with the Keras
model it came from (the fake-quant model for QAT/QAD) and the largest logit
difference in int8 steps of the output, the file size and the interpreter's
median latency for one image (one thread).

Run (about 5 minutes on 2 CPU cores):

    flock /tmp/kd_bench.lock env KERAS_BACKEND=tensorflow \
        python benchmarks/qad_benchmark.py --seeds 0 1 2

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


def distil(teacher, student, x, y, epochs, alpha, learning_rate):
    distiller = keras_kd.Distiller(teacher, student, alpha=alpha,
                                   temperature=4.0)
    distiller.compile(optimizer=keras.optimizers.Adam(learning_rate))
    distiller.fit(x, y, epochs=epochs, batch_size=64, verbose=0)
    return student


def accuracy(model, x, y):
    return float(np.mean(
        model.predict(x, batch_size=1024, verbose=0).argmax(-1) == y))


def report_row(name, keras_model, path, x_test, y_test, **extra):
    report = keras_kd.export.parity_report(
        keras_model, path, (x_test, y_test), batch_size=256,
        latency_runs=200, num_threads=1)
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


def run_seed(seed, teacher, x, y, x_test, y_test, args, folder):
    rows = []
    keras.utils.set_random_seed(seed)
    student = mobile_student()
    start = time.perf_counter()
    distil(teacher, student, x, y, args.epochs, 0.1, 1e-3)
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
    more = distil(teacher, fresh(), x, y, args.qad_epochs, 0.1, 1e-4)
    path = keras_kd.export.export_student(
        more, os.path.join(folder, f"more_{seed}.tflite"),
        quantization="int8", representative_data=x[:200])
    rows.append(report_row("float_more_ptq_int8", more, path, x_test,
                           y_test, epochs=args.epochs + args.qad_epochs,
                           float_keras_accuracy=accuracy(more, x_test,
                                                         y_test)))

    # QAT on labels only.
    keras.utils.set_random_seed(seed + 100)
    qat = keras_kd.quantization.quantize_aware(fresh(), x[:512])
    qat.compile(optimizer=keras.optimizers.Adam(1e-4), loss=bu.sparse_ce())
    qat.fit(x, y, epochs=args.qad_epochs, batch_size=64, verbose=0)
    path = keras_kd.export.export_student(
        qat, os.path.join(folder, f"qat_{seed}.tflite"), quantization="int8")
    rows.append(report_row("qat_labels", qat, path, x_test, y_test,
                           epochs=args.epochs + args.qad_epochs))

    # QAD: soft loss only, from the float teacher.
    keras.utils.set_random_seed(seed + 100)
    qad = keras_kd.quantization.quantize_aware(fresh(), x[:512])
    start = time.perf_counter()
    distil(teacher, qad, x, y, args.qad_epochs, 0.0, 1e-4)
    qad_time = time.perf_counter() - start
    path = keras_kd.export.export_student(
        qad, os.path.join(folder, f"qad_{seed}.tflite"), quantization="int8")
    rows.append(report_row("qad", qad, path, x_test, y_test,
                           epochs=args.epochs + args.qad_epochs,
                           train_s=qad_time))
    for row in rows:
        row.update(seed=seed, train_examples=len(x), student_params=int(
            student.count_params()))
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--qad-epochs", type=int, default=1)
    parser.add_argument("--train-examples", type=int, default=20000)
    parser.add_argument("--output", default=os.path.join(
        bu.HERE, "results", "qad.jsonl"))
    args = parser.parse_args()
    (x, y), (x_test, y_test) = bu.load("mnist")
    x = np.asarray(x, "float32").reshape(-1, 28, 28, 1)
    x_test = np.asarray(x_test, "float32").reshape(-1, 28, 28, 1)
    x, y = x[:args.train_examples], np.asarray(y[:args.train_examples])
    y_test = np.asarray(y_test)
    teacher, teacher_path = bu.cached_teacher("mnist", x[:10000], y[:10000],
                                              3)
    teacher_accuracy = accuracy(teacher, x_test, y_test)
    print(f"teacher {os.path.basename(teacher_path)}: {teacher_accuracy:.4f}")
    load = os.getloadavg()
    with tempfile.TemporaryDirectory() as folder:
        for seed in args.seeds:
            rows = run_seed(seed, teacher, x, y, x_test, y_test, args,
                            folder)
            for row in rows:
                row.update(teacher=os.path.basename(teacher_path),
                           teacher_accuracy=teacher_accuracy,
                           load_average_start=load,
                           load_average_end=os.getloadavg())
                print({k: row[k] for k in ("row", "seed", "keras_accuracy",
                                           "tflite_accuracy",
                                           "top1_agreement",
                                           "max_diff_steps")})
            bu.write_rows(args.output, rows)


if __name__ == "__main__":
    main()
