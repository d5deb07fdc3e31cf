"""Size, accuracy, parity and latency of exported MNIST students.

The student is the MLP of `accuracy_benchmark.py`, distilled from the same
cached benchmark teacher (T=4, alpha=0.5, cached teacher outputs). It is
exported in every quantization mode (full int8 calibrated on 200 training
images, with float and with int8 input/output) and compared with the Keras
student on the 10,000 MNIST test images.

Run:

```
python benchmarks/export_benchmark.py
```
"""

import argparse
import os
import sys
import tempfile

import keras

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import benchmark_utils as bu  # noqa: E402

import keras_kd  # noqa: E402
from keras_kd import export  # noqa: E402


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--teacher-epochs", type=int, default=6)
    parser.add_argument("--representative-steps", type=int, default=200)
    parser.add_argument("--output", default=os.path.join(
        bu.HERE, "results", "export.jsonl"))
    args = parser.parse_args(argv)
    (x, y), (xt, yt) = bu.load("mnist")
    teacher, _ = bu.cached_teacher("mnist", x, y, args.teacher_epochs)
    keras.utils.set_random_seed(1)
    student = bu.mlp_student(x.shape[1:], 10, args.hidden)
    distiller = keras_kd.Distiller(teacher, student, alpha=0.5,
                                   temperature=4.0)
    cache = keras_kd.data.cache_teacher_outputs(distiller, x, verbose=0)
    distiller.compile(optimizer="adam", metrics=["accuracy"])
    distiller.fit(x, cache.targets(y), epochs=args.epochs, batch_size=128,
                  verbose=0)

    folder = tempfile.mkdtemp(prefix="keras_kd_export_")
    modes = [("float32", "none", False), ("float16", "float16", False),
             ("dynamic int8", "dynamic", False), ("full int8", "int8", False),
             ("full int8, int8 I/O", "int8", True)]
    rows = []
    print(f"{'mode':<22}{'size KiB':>10}{'Keras acc':>11}{'TFLite acc':>12}"
          f"{'agree':>8}{'max |dlogit|':>14}{'latency us':>12}")
    for label, mode, int8_io in modes:
        path = os.path.join(folder, f"{mode}{'_io' if int8_io else ''}"
                            ".tflite")
        distiller.export_student(
            path, quantization=mode,
            representative_data=x if mode == "int8" else None,
            representative_steps=args.representative_steps, int8_io=int8_io)
        report = export.parity_report(distiller, path, (xt, yt),
                                      batch_size=256, latency_runs=200)
        print(f"{label:<22}{report.file_size / 1024:>10.1f}"
              f"{100 * report.keras_accuracy:>10.2f}%"
              f"{100 * report.tflite_accuracy:>11.2f}%"
              f"{100 * report.top1_agreement:>7.2f}%"
              f"{report.max_abs_diff:>14.4f}{1000 * report.latency_ms:>12.1f}")
        rows.append({"benchmark": "export", "mode": label,
                     **report.to_dict()})
    keras_kib = rows[0]["keras_size"] / 1024
    print(f"Keras student weights: {keras_kib:.1f} KiB, "
          f"{student.count_params()} parameters")
    bu.write_rows(args.output, rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
