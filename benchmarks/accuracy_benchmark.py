"""Test accuracy of a student trained alone, distilled with keras_kd, and
distilled with keras.distillation, over several seeds.

One CNN teacher is trained first; then, for each seed, the same MLP student
(same initial weights) is trained by every method on the same data, with the
same optimizer, batch size and number of epochs.

Methods:
- `scratch`: the student alone, cross-entropy with the labels.
- `keras_kd`: `keras_kd.Distiller(alpha, temperature)` (teacher outputs are
  computed once and cached, which gives the same loss as the live teacher
  since nothing is augmented).
- `keras.distillation (default)`: `LogitsDistillation(temperature)` with its
  documented default loss, `student_loss_weight=alpha`.
- `keras.distillation (KL)`: the same with `loss=keras.losses.KLDivergence()`.
- `scratch (long)` and `keras_kd (long)`: the same with `--long-epochs`; with
  cached teacher outputs a keras_kd epoch costs about a student-only epoch,
  so long distillation fits in the time keras.distillation needs for
  `--epochs` (the wall times are printed).

Run:

```
python benchmarks/accuracy_benchmark.py --data mnist --seeds 3
python benchmarks/accuracy_benchmark.py --data digits --seeds 3
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

METHODS = ("scratch", "keras_kd", "keras.distillation (default)",
           "keras.distillation (KL)", "scratch (long)", "keras_kd (long)")


def train_student(method, teacher, x, y, cache, args, seed):
    keras.utils.set_random_seed(seed)
    student = bu.mlp_student(x.shape[1:], int(y.max()) + 1, args.hidden)
    optimizer = keras.optimizers.Adam(args.learning_rate)
    epochs = args.long_epochs if method.endswith(" (long)") else args.epochs
    fit = dict(epochs=epochs, batch_size=args.batch_size, verbose=0)
    method = method.replace(" (long)", "")
    if method == "scratch":
        student.compile(optimizer=optimizer, loss=bu.sparse_ce())
        student.fit(x, y, **fit)
    elif method == "keras_kd":
        d = keras_kd.Distiller(teacher, student, alpha=args.alpha,
                               temperature=args.temperature)
        d.compile(optimizer=optimizer)
        d.fit(x, cache.targets(y), **fit)
    else:
        loss_kwargs = {}
        if method == "keras.distillation (KL)":
            loss_kwargs["loss"] = keras.losses.KLDivergence()
        d = keras.distillation.Distiller(
            teacher=teacher,
            student=student,
            distillation_losses=keras.distillation.LogitsDistillation(
                temperature=args.temperature, **loss_kwargs),
            student_loss_weight=args.alpha,
        )
        d.compile(optimizer=optimizer, loss=bu.sparse_ce())
        d.fit(x, y, **fit)
    return student


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default="mnist", choices=["mnist", "digits"])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--long-epochs", type=int, default=60)
    parser.add_argument("--teacher-epochs", type=int, default=6)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--alpha", type=float, default=0.5)
    parser.add_argument("--temperature", type=float, default=4.0)
    parser.add_argument("--learning-rate", type=float, default=1e-3)
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--limit", type=int, default=None,
                        help="use only the first N training samples")
    parser.add_argument("--output", default=os.path.join(
        bu.HERE, "results", "accuracy.jsonl"))
    args = parser.parse_args(argv)
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = sorted(set(methods) - set(METHODS))
    if unknown:
        parser.error(f"unknown methods {unknown}; expected some of "
                     f"{list(METHODS)}")

    (x, y), (xt, yt) = bu.load(args.data, args.limit)
    start = time.time()
    teacher, _ = bu.cached_teacher(args.data, x, y, args.teacher_epochs,
                                   batch_size=args.batch_size)
    teacher_errors = bu.test_errors(teacher, xt, yt)
    print(f"data={args.data} train={len(x)} test={len(xt)} "
          f"teacher: {teacher_errors} test errors "
          f"({1 - teacher_errors / len(xt):.4f}), {teacher.count_params()} "
          f"params, {time.time() - start:.0f}s", flush=True)
    t0 = time.time()
    cache = keras_kd.data.cache_teacher_outputs(teacher, x, verbose=0)
    print(f"teacher outputs cached once in {time.time() - t0:.0f}s (not "
          "counted in the keras_kd rows below)", flush=True)

    errors = {m: [] for m in methods}
    seconds = {m: [] for m in methods}
    rows = []
    for seed in range(args.seeds):
        for method in methods:
            t0 = time.time()
            student = train_student(method, teacher, x, y, cache, args,
                                    seed + 1)
            e = bu.test_errors(student, xt, yt)
            errors[method].append(e)
            seconds[method].append(time.time() - t0)
            print(f"seed {seed} {method:<30} {e:5d} errors "
                  f"({time.time() - t0:.0f}s)", flush=True)
            rows.append({"benchmark": "accuracy", "data": args.data,
                         "method": method, "seed": seed, "test_errors": e,
                         "test_accuracy": 1 - e / len(xt),
                         "seconds": seconds[method][-1],
                         "student_params": student.count_params(),
                         "teacher_errors": teacher_errors,
                         **{k: v for k, v in vars(args).items()
                            if k not in ("output", "methods")}})
    print(f"\n{'method':<32}{'test errors':>16}{'accuracy %':>18}"
          f"{'seconds':>10}")
    for method in methods:
        mean, std = bu.mean_std(errors[method])
        acc = [100 * (1 - e / len(xt)) for e in errors[method]]
        amean, astd = bu.mean_std(acc)
        print(f"{method:<32}{mean:>9.1f} ± {std:<5.1f}{amean:>11.2f} ± "
              f"{astd:.2f}{np.mean(seconds[method]):>10.0f}")
    bu.write_rows(args.output, rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
