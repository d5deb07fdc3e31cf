"""Few labels plus unlabeled data, and the cost of an epoch with a cached
teacher.

Part 1 (accuracy, mean ± std over seeds): a student gets only `--labels`
labeled MNIST images; the teacher is the benchmark CNN trained on all of
MNIST (a trained teacher is the premise of distillation). The student is
(a) trained from scratch on the labels, (b) distilled on the labeled images
only, (c) distilled on the labeled images plus the remaining training images
as unlabeled data (label -1, so they get the teacher's soft loss only).

Part 2 (cost, measured in one run, interleaved over rounds, same batches):
one epoch of distillation with the live teacher, one with cached teacher
outputs, and one of student-only training. Target: cached <= 1.1 x
student-only.

Run:

```
python benchmarks/data_benchmark.py --seeds 3
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


def student(x, seed, hidden):
    keras.utils.set_random_seed(seed)
    return bu.mlp_student(x.shape[1:], 10, hidden)


def run_accuracy(teacher, x, y, xt, yt, cache, args):
    rng = np.random.default_rng(0)
    labeled = np.sort(rng.choice(len(x), args.labels, replace=False))
    y_semi = np.full_like(y, -1)
    y_semi[labeled] = y[labeled]
    xl, yl = x[labeled], y[labeled]
    cache_l = keras_kd.data.cache_teacher_outputs(teacher, xl, verbose=0)
    steps = args.labeled_epochs * int(np.ceil(len(xl) / args.batch_size))
    semi_epochs = max(1, round(steps * args.batch_size / len(x)))
    print(f"labeled={len(xl)} unlabeled={len(x) - len(xl)}; "
          f"labeled-only runs: {args.labeled_epochs} epochs ({steps} steps); "
          f"labeled+unlabeled: {semi_epochs} epochs", flush=True)
    methods = ("(a) scratch, labels", "(b) distilled, labeled only",
               "(c) distilled, labeled + unlabeled")
    errors = {m: [] for m in methods}
    rows = []
    for seed in range(args.seeds):
        for method in methods:
            s = student(x, seed + 1, args.hidden)
            fit = dict(batch_size=args.batch_size, verbose=0)
            if method.startswith("(a)"):
                s.compile(optimizer="adam", loss=bu.sparse_ce())
                s.fit(xl, yl, epochs=args.labeled_epochs, **fit)
            else:
                d = keras_kd.Distiller(teacher, s, alpha=args.alpha,
                                       temperature=args.temperature)
                d.compile(optimizer="adam")
                if method.startswith("(b)"):
                    d.fit(xl, cache_l.targets(yl), epochs=args.labeled_epochs,
                          **fit)
                else:
                    d.fit(x, cache.targets(y_semi), epochs=semi_epochs, **fit)
            e = bu.test_errors(s, xt, yt)
            errors[method].append(e)
            print(f"seed {seed} {method:<38} {e:5d} errors", flush=True)
            rows.append({"benchmark": "data", "part": "accuracy",
                         "method": method, "seed": seed, "test_errors": e,
                         "test_accuracy": 1 - e / len(xt),
                         "labels": args.labels})
    print(f"\n{'method':<40}{'accuracy %':>16}{'errors':>16}")
    for method in methods:
        acc = [100 * (1 - e / len(xt)) for e in errors[method]]
        amean, astd = bu.mean_std(acc)
        emean, estd = bu.mean_std(errors[method])
        print(f"{method:<40}{amean:>9.2f} ± {astd:.2f}{emean:>9.1f} ± "
              f"{estd:.1f}")
    return rows


def run_cost(teacher, x, y, cache, args):
    n = min(len(x), args.cost_samples)
    targets = {k: v[:n] for k, v in cache.targets(y).items()}
    x, y = x[:n], y[:n]
    alone = student(x, 1, args.hidden)
    alone.compile(optimizer="adam", loss=bu.sparse_ce(), metrics=["accuracy"])
    live = keras_kd.Distiller(teacher, student(x, 1, args.hidden))
    live.compile(optimizer="adam", metrics=["accuracy"])
    cached = keras_kd.Distiller(teacher, student(x, 1, args.hidden))
    cached.compile(optimizer="adam", metrics=["accuracy"])
    runs = {
        "student-only": lambda: alone.fit(x, y, **fit),
        "distillation, live teacher": lambda: live.fit(x, y, **fit),
        "distillation, cached teacher": lambda: cached.fit(x, targets, **fit),
    }
    fit = dict(batch_size=args.batch_size, epochs=1, shuffle=False, verbose=0)
    times = {name: [] for name in runs}
    order = np.random.default_rng(0)
    for round_index in range(args.cost_rounds + 1):
        # A new order each round, so no run always follows the slow one.
        for name in order.permutation(list(runs)):
            run = runs[name]
            start = time.perf_counter()
            run()
            if round_index:  # Round 0 is the warm-up.
                times[name].append(time.perf_counter() - start)
    base = float(np.median(times["student-only"]))
    fastest = float(np.min(times["student-only"]))
    print(f"\nepoch of {n} samples, {args.cost_rounds} rounds in random "
          "order (median; min)")
    rows = []
    for name, t in times.items():
        median = float(np.median(t))
        print(f"{name:<32}{median:8.2f} s   x{median / base:.2f}   "
              f"min {min(t):.2f} s   x{min(t) / fastest:.2f} student-only")
        rows.append({"benchmark": "data", "part": "cost", "run": name,
                     "seconds_per_epoch": median, "all_seconds": t,
                     "ratio_to_student_only": median / base, "samples": n})
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--labels", type=int, default=1000)
    parser.add_argument("--labeled-epochs", type=int, default=100)
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--alpha", type=float, default=0.5)
    parser.add_argument("--temperature", type=float, default=4.0)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--teacher-epochs", type=int, default=6)
    parser.add_argument("--cost-samples", type=int, default=60000)
    parser.add_argument("--cost-rounds", type=int, default=7)
    parser.add_argument("--skip-accuracy", action="store_true",
                        help="run the cost part only")
    parser.add_argument("--output", default=os.path.join(
        bu.HERE, "results", "data.jsonl"))
    args = parser.parse_args(argv)
    (x, y), (xt, yt) = bu.load("mnist")
    teacher, _ = bu.cached_teacher("mnist", x, y, args.teacher_epochs)
    print(f"teacher: {bu.test_errors(teacher, xt, yt)} test errors",
          flush=True)
    cache = keras_kd.data.cache_teacher_outputs(teacher, x, verbose=0)
    rows = []
    if not args.skip_accuracy:
        rows += run_accuracy(teacher, x, y, xt, yt, cache, args)
    rows += run_cost(teacher, x, y, cache, args)
    bu.write_rows(args.output, rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
