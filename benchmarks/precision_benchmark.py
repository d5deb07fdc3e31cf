"""Distiller step time in float32 vs mixed precision, for a CNN pair.

The teacher is a CNN, the student a smaller CNN, with a FeatureMatch between
their feature maps. For each dtype policy (`float32`, `mixed_float16`,
`mixed_bfloat16`) the same batches are timed, interleaved over rounds, and the
ratios to float32 are printed. On a CPU, half precision is emulated and often
slower: read the ratios as what this machine does, not as a GPU forecast.

With `--teacher-dtype`, the student trains in float32 in every run and
only the frozen teacher's precision changes: `Distiller(teacher_dtype=None,
"bfloat16", "float16")`.

Run:

```
python benchmarks/precision_benchmark.py --rounds 9 --steps 20
KERAS_BACKEND=jax python benchmarks/precision_benchmark.py
python benchmarks/precision_benchmark.py --teacher-dtype --rounds 9
```
"""

import argparse
import os
import sys
import time

import keras
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import benchmark_utils as bu  # noqa: E402

import keras_kd  # noqa: E402

POLICIES = ("float32", "mixed_float16", "mixed_bfloat16")
TEACHER_DTYPES = ("float32", "float16", "bfloat16")


def conv_student(input_shape, num_classes):
    return keras.Sequential([
        keras.Input(input_shape),
        keras.layers.Conv2D(16, 3, padding="same", activation="relu",
                            name="s_conv1"),
        keras.layers.MaxPooling2D(),
        keras.layers.Conv2D(32, 3, padding="same", activation="relu",
                            name="s_conv2"),
        keras.layers.GlobalAveragePooling2D(),
        keras.layers.Dense(num_classes, name="s_logits"),
    ], name="student")


def build(policy, x, num_classes):
    keras.config.set_dtype_policy(policy)
    keras.utils.set_random_seed(0)
    teacher = bu.cnn_teacher(x.shape[1:], num_classes)
    student = conv_student(x.shape[1:], num_classes)
    d = keras_kd.Distiller(teacher, student, alpha=0.5, temperature=4.0,
                           features=[keras_kd.FeatureMatch("t_pool1",
                                                           "s_conv2")])
    d.compile(optimizer="adam", metrics=["accuracy"])
    keras.config.set_dtype_policy("float32")
    return d


def build_teacher_dtype(teacher_dtype, x, num_classes, width):
    """A float32 Distiller whose teacher runs in `teacher_dtype`."""
    keras.utils.set_random_seed(0)
    teacher = bu.cnn_teacher(x.shape[1:], num_classes, width)
    student = conv_student(x.shape[1:], num_classes)
    d = keras_kd.Distiller(
        teacher, student, alpha=0.5, temperature=4.0,
        teacher_dtype=None if teacher_dtype == "float32" else teacher_dtype)
    d.compile(optimizer="adam", metrics=["accuracy"])
    return d


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default="mnist", choices=["mnist", "digits"])
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--teacher-dtype", action="store_true",
                        help="vary the teacher's precision only")
    parser.add_argument("--teacher-width", type=int, default=32)
    parser.add_argument("--output", default=os.path.join(
        bu.HERE, "results", "precision.jsonl"))
    args = parser.parse_args(argv)
    (x, y), _ = bu.load(args.data)
    n = args.batch_size * args.steps
    x, y = x[:n], y[:n]
    if args.teacher_dtype:
        policies = TEACHER_DTYPES
        models = {p: build_teacher_dtype(p, x, int(y.max()) + 1,
                                         args.teacher_width)
                  for p in policies}
    else:
        policies = POLICIES
        models = {p: build(p, x, int(y.max()) + 1) for p in POLICIES}

    def run(model):
        start = time.perf_counter()
        model.fit(x, y, batch_size=args.batch_size, epochs=1, shuffle=False,
                  verbose=0)
        return (time.perf_counter() - start) / args.steps * 1000.0

    for model in models.values():
        run(model)  # Warm-up: tracing and compilation.
    times = {p: [] for p in policies}
    for _ in range(args.rounds):
        for p, model in models.items():
            times[p].append(run(model))
    # TensorFlow `fit` calls on a 2-core machine run in a fast or a slow
    # mode at random; the median and the best round are both reported.
    base = float(np.median(times["float32"]))
    base_min = float(np.min(times["float32"]))
    rows = []
    print(f"backend={keras.backend.backend()} batch={args.batch_size} "
          f"steps={args.steps} rounds={args.rounds} "
          f"teacher_dtype={args.teacher_dtype}")
    print(f"{'policy':<16}{'median ms':>10}{'ratio':>7}{'min ms':>9}"
          f"{'ratio':>7}")
    for p in policies:
        median, best = float(np.median(times[p])), float(np.min(times[p]))
        print(f"{p:<16}{median:10.2f}{median / base:7.2f}{best:9.2f}"
              f"{best / base_min:7.2f}")
        rows.append({"benchmark": "precision", "policy": p,
                     "ms_per_step": median, "ratio_to_float32": median / base,
                     "min_ms_per_step": best,
                     "ratio_to_float32_min": best / base_min,
                     "all_ms": times[p], "batch_size": args.batch_size,
                     "varied": "teacher" if args.teacher_dtype else "both",
                     "teacher_width": args.teacher_width})
    bu.write_rows(args.output, rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
