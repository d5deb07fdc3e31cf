"""Step time of keras_kd.Distiller against its parts and keras.distillation.

Measured in one run, on the same batches, interleaved over several rounds:

1. `student`: a student-only training step (`student.fit`).
2. `teacher`: the teacher's inference on a batch (`teacher.predict`).
3. `keras_kd`: a `keras_kd.Distiller` training step.
4. `keras.distillation`: a `keras.distillation.Distiller` step with
   `LogitsDistillation(loss=keras.losses.KLDivergence())`.

With `--feature`, both Distillers also match the teacher's 128-wide
embedding with the student's (a student with 128 hidden units, MSE, no
head): keras.distillation then runs the student a second time per step to
read its layer; keras_kd reads it from its one student pass.

The ratios are what to read: absolute times depend on the machine.

Run:

```
python benchmarks/step_time_benchmark.py --rounds 9 --steps 50
python benchmarks/step_time_benchmark.py --rounds 9 --steps 279 \
    --student cnn --teacher-width 8
KERAS_BACKEND=jax python benchmarks/step_time_benchmark.py
KERAS_BACKEND=torch python benchmarks/step_time_benchmark.py
```

On PyTorch both Distillers train eagerly (Keras' torch trainer compiles with
`torch.compile` only under `jit_compile=True`, which is not the default).
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


def fit_time(model, x, y, batch_size):
    start = time.perf_counter()
    model.fit(x, y, batch_size=batch_size, epochs=1, shuffle=False, verbose=0)
    return time.perf_counter() - start


def predict_time(model, x, batch_size):
    start = time.perf_counter()
    model.predict(x, batch_size=batch_size, verbose=0)
    return time.perf_counter() - start


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default="mnist", choices=["mnist", "digits"])
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--teacher-width", type=int, default=32)
    parser.add_argument("--student", default="mlp", choices=["mlp", "cnn"],
                        help="the student: an MLP, or a small CNN (one "
                             "8-filter convolution before the MLP)")
    parser.add_argument("--feature", action="store_true",
                        help="add a feature term to both Distillers")
    parser.add_argument("--output", default=os.path.join(
        bu.HERE, "results", "step_time.jsonl"))
    args = parser.parse_args(argv)

    (x, y), _ = bu.load(args.data)
    n = args.batch_size * args.steps
    x, y = x[:n], y[:n]
    num_classes = int(y.max()) + 1
    keras.utils.set_random_seed(0)
    teacher = bu.cnn_teacher(x.shape[1:], num_classes, args.teacher_width)

    def student():
        keras.utils.set_random_seed(1)
        hidden = 128 if args.feature else 32
        if args.student == "cnn":
            return bu.cnn_student(x.shape[1:], num_classes, hidden=hidden)
        return bu.mlp_student(x.shape[1:], num_classes, hidden=hidden)

    alone = student()
    alone.compile(optimizer="adam", loss=bu.sparse_ce(), metrics=["accuracy"])
    features, rival_losses = [], [keras.distillation.LogitsDistillation(
        temperature=4.0, loss=keras.losses.KLDivergence())]
    if args.feature:
        features = [keras_kd.FeatureMatch("t_embedding", "s_embedding",
                                          loss="mse", projection=None)]
        rival_losses.append(keras.distillation.FeatureDistillation(
            loss="mse", teacher_layer_name="t_embedding",
            student_layer_name="s_embedding"))
    ours = keras_kd.Distiller(teacher, student(), alpha=0.5, temperature=4.0,
                              features=features)
    ours.compile(optimizer="adam", metrics=["accuracy"])
    rival = keras.distillation.Distiller(
        teacher=teacher,
        student=student(),
        distillation_losses=rival_losses,
        distillation_loss_weights=[1.0] * len(rival_losses),
        student_loss_weight=0.5,
    )
    rival.compile(optimizer="adam", loss=bu.sparse_ce(), metrics=["accuracy"])

    runs = {
        "student": lambda: fit_time(alone, x, y, args.batch_size),
        "teacher": lambda: predict_time(teacher, x, args.batch_size),
        "keras_kd": lambda: fit_time(ours, x, y, args.batch_size),
        "keras.distillation": lambda: fit_time(rival, x, y, args.batch_size),
    }
    for run in runs.values():  # Warm-up: tracing and compilation.
        run()
    times = {name: [] for name in runs}
    order = np.random.default_rng(0)
    for _ in range(args.rounds):
        # A new order each round, so no run always follows the same one.
        for name in order.permutation(list(runs)):
            times[name].append(runs[name]() / args.steps * 1000.0)
    median = {name: float(np.median(t)) for name, t in times.items()}
    best = {name: float(np.min(t)) for name, t in times.items()}
    parts = median["student"] + median["teacher"]
    rows = []
    print(f"backend={keras.backend.backend()} batch={args.batch_size} "
          f"steps={args.steps} rounds={args.rounds} feature={args.feature} "
          f"student={args.student} teacher_width={args.teacher_width}")
    print(f"{'step':<22}{'ms/step (median)':>18}{'min':>9}{'max':>9}")
    for name, t in times.items():
        print(f"{name:<22}{median[name]:>18.2f}{min(t):>9.2f}{max(t):>9.2f}")
        rows.append({"benchmark": "step_time", "step": name,
                     "ms_per_step": median[name], "all_ms": t,
                     "batch_size": args.batch_size, "data": args.data,
                     "feature": args.feature, "student": args.student,
                     "teacher_width": args.teacher_width})
    ratio_parts = median["keras_kd"] / parts
    ratio_rival = median["keras_kd"] / median["keras.distillation"]
    best_parts = best["keras_kd"] / (best["student"] + best["teacher"])
    best_rival = best["keras_kd"] / best["keras.distillation"]
    # Per round, keras_kd over keras.distillation: the two ran moments apart,
    # so a slow phase of the shared machine cancels out of the ratio.
    paired = float(np.median(np.array(times["keras_kd"])
                             / np.array(times["keras.distillation"])))
    print("ratios            median   min   target")
    print(f"keras_kd / (student + teacher)  {ratio_parts:6.3f} "
          f"{best_parts:6.3f}   <= 1.1")
    print(f"keras_kd / keras.distillation   {ratio_rival:6.3f} "
          f"{best_rival:6.3f}   <= 1.0")
    print(f"keras_kd / keras.distillation, median of per-round ratios "
          f"{paired:6.3f}")
    rows.append({"benchmark": "step_time", "step": "ratios",
                 "keras_kd_over_parts": ratio_parts,
                 "keras_kd_over_keras_distillation": ratio_rival,
                 "keras_kd_over_parts_min": best_parts,
                 "keras_kd_over_keras_distillation_min": best_rival,
                 "keras_kd_over_keras_distillation_paired": paired,
                 "feature": args.feature, "student": args.student,
                 "teacher_width": args.teacher_width})
    if keras.backend.backend() == "torch":
        # Not (yet) recorded by `bu.environment()`.
        import torch

        device = "GPU" if torch.cuda.is_available() else "CPU"
        rows = [{**row, "torch": torch.__version__, "device": device}
                for row in rows]
    bu.write_rows(args.output, rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
