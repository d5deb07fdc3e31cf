"""A search of temperature and alpha on MNIST with keras_kd.tuning.

In one run:

1. Load the benchmark CNN teacher (`benchmark_utils.cached_teacher`, trained
   once and shared with the other benchmarks).
2. Search `temperature` (1-20, log) and `alpha` (0-1) for an MLP student
   (`benchmark_utils.mlp_student`) with `keras_tuner.BayesianOptimization`,
   ranked by the student's accuracy on a validation split (the last 5,000
   training images). The search trains on the other 55,000 (no subset).
3. Time, on the same data and epochs: the teacher pass that fills the
   cache, student-only training and distillation on the cached outputs
   (what each trial trains; median of `--baseline-rounds` alternating runs
   of each) and one distillation with the live teacher. The search should
   cost about one teacher pass plus N x the cached distillation (close to
   N x student-only), not N x the live distillation.
4. Retrain the best (T, alpha), the seed default (T=4, alpha=0.7) and the
   student alone with 3 seeds each, and report the test accuracy as
   mean +- std.

Run (about 12 minutes on 2 CPU cores):

```
python benchmarks/tuning_benchmark.py
python benchmarks/tuning_benchmark.py --trials 12 --epochs 10 --seeds 3
KERAS_BACKEND=jax python benchmarks/tuning_benchmark.py
```

Rows are appended to `benchmarks/results/tuning.jsonl`.
"""

import argparse
import os
import sys
import tempfile
import time
import warnings

import keras
import keras_tuner
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import benchmark_utils as bu  # noqa: E402

import keras_kd  # noqa: E402
import keras_kd.tuning  # noqa: E402

DEFAULT = {"temperature": 4.0, "alpha": 0.7}
HIDDEN = 128  # Set from --hidden in main().


def accuracy(model, x, y):
    return 1.0 - bu.test_errors(model, x, y) / len(y)


def student_only(x, y, val, epochs, batch_size, seed):
    keras.utils.set_random_seed(seed)
    student = bu.mlp_student(x.shape[1:], int(y.max()) + 1, HIDDEN)
    student.compile(optimizer="adam", loss=bu.sparse_ce(),
                    metrics=["accuracy"])
    student.fit(x, y, validation_data=val, epochs=epochs,
                batch_size=batch_size, verbose=0)
    return student


def distilled(teacher, x, targets, val, epochs, batch_size, seed,
              temperature, alpha):
    keras.utils.set_random_seed(seed)
    student = bu.mlp_student(x.shape[1:], teacher.output_shape[-1], HIDDEN)
    distiller = keras_kd.Distiller(teacher, student, alpha=alpha,
                                   temperature=temperature)
    distiller.compile(optimizer="adam", metrics=["accuracy"])
    distiller.fit(x, targets, validation_data=val, epochs=epochs,
                  batch_size=batch_size, verbose=0)
    return student


def timed(fn):
    start = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - start


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default="mnist", choices=["mnist", "digits"])
    parser.add_argument("--trials", type=int, default=12)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--teacher-epochs", type=int, default=6)
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--validation", type=int, default=5000)
    parser.add_argument("--baseline-rounds", type=int, default=3)
    parser.add_argument("--directory", default=None,
                        help="KerasTuner folder (default: a temp dir)")
    parser.add_argument("--output", default=os.path.join(
        bu.HERE, "results", "tuning.jsonl"))
    args = parser.parse_args(argv)
    global HIDDEN
    HIDDEN = args.hidden
    # The Gaussian process of BayesianOptimization warns when a length
    # scale reaches its bound; harmless here and noisy.
    warnings.filterwarnings("ignore", module="sklearn.gaussian_process")

    (x_all, y_all), (x_test, y_test) = bu.load(args.data)
    x, y = x_all[:-args.validation], y_all[:-args.validation]
    val = (x_all[-args.validation:], y_all[-args.validation:])
    epochs, batch = args.epochs, args.batch_size
    print(f"{args.data}: train {len(x)}, validation {len(val[0])}, test "
          f"{len(x_test)}; backend {keras.backend.backend()}")

    (teacher, _), teacher_time = timed(lambda: bu.cached_teacher(
        args.data, x_all, y_all, args.teacher_epochs, batch_size=batch))
    teacher_acc = accuracy(teacher, x_test, y_test)
    print(f"teacher: {args.teacher_epochs} epochs (loaded or trained in "
          f"{teacher_time:.0f} s), "
          f"test accuracy {teacher_acc:.4f}")

    # With the same data, epochs and validation as a trial: one student-only
    # training, the teacher pass that fills a cache, one distillation on the
    # cached outputs (what a trial trains) and one with the live teacher.
    # Single trainings on this machine vary by up to 1.5x from run to run,
    # so the student-only and cached baselines are timed `--baseline-rounds`
    # times, alternating, and their median is used.
    (cache, val_cache), cache_time = timed(lambda: (
        keras_kd.data.cache_teacher_outputs(teacher, x, verbose=0),
        keras_kd.data.cache_teacher_outputs(teacher, val[0], verbose=0)))
    targets = cache.targets(y, x=x)
    val_targets = (val[0], val_cache.targets(val[1], x=val[0]))
    student_times, cached_times = [], []
    for _ in range(args.baseline_rounds):
        student_times.append(timed(
            lambda: student_only(x, y, val, epochs, batch, 0))[1])
        cached_times.append(timed(lambda: distilled(
            teacher, x, targets, val_targets, epochs, batch, 0,
            **DEFAULT))[1])
    student_time = float(np.median(student_times))
    cached_time = float(np.median(cached_times))
    print(f"student-only trainings {np.round(student_times, 1)} s, cached "
          f"distillations {np.round(cached_times, 1)} s")
    _, live_time = timed(lambda: distilled(
        teacher, x, y, val, epochs, batch, 0, **DEFAULT))

    hypermodel = keras_kd.tuning.DistillerHyperModel(
        teacher,
        lambda: bu.mlp_student(x.shape[1:], int(y.max()) + 1, HIDDEN),
        temperature=(1.0, 20.0), alpha=(0.0, 1.0))
    directory = args.directory or tempfile.mkdtemp(prefix="kd_tuning_")
    tuner = keras_tuner.BayesianOptimization(
        hypermodel, objective="val_accuracy", max_trials=args.trials, seed=0,
        directory=directory, project_name="tuning_benchmark", overwrite=True)
    _, search_time = timed(lambda: tuner.search(
        x, y, validation_data=val, epochs=epochs, batch_size=batch,
        verbose=0))
    table = keras_kd.tuning.trial_table(tuner)
    completed = [r for r in table if r["status"] == "COMPLETED"]
    plot = keras_kd.tuning.plot_trials(
        tuner, os.path.join(directory, "trials.png"))
    print(keras_kd.tuning.format_trial_table(table))
    n = len(table)
    print(f"search: {n} trials x {epochs} epochs ({len(completed)} "
          f"completed) in {search_time:.0f} s; plot {plot}")
    for label, seconds in (("student-only training", student_time),
                           ("distillation, cached outputs", cached_time),
                           ("distillation, live teacher", live_time)):
        print(f"  N x {label:<30} = {n} x {seconds:6.1f} s = "
              f"{n * seconds:6.0f} s  -> search / that = "
              f"{search_time / (n * seconds):.2f}")
    rest = search_time - cache_time - n * cached_time
    print(f"  search = teacher pass for the cache ({cache_time:.0f} s, "
          f"{hypermodel.teacher_cache.computed} caches: training + "
          f"validation) + N x cached distillation ({n * cached_time:.0f} s) "
          f"+ KerasTuner and per-trial build/trace ({rest:.0f} s)")

    best = {"temperature": completed[0]["temperature"],
            "alpha": completed[0]["alpha"]}
    seeds = list(range(1, args.seeds + 1))
    configs = [("best", best), ("default", DEFAULT), ("student alone", None)]
    rows = [{
        "benchmark": "tuning", "data": args.data, "tuner":
        "BayesianOptimization", "trials": n, "completed": len(completed),
        "epochs": epochs, "batch_size": batch, "train_samples": len(x),
        "teacher_test_accuracy": teacher_acc, "search_seconds": search_time,
        "student_only_seconds": student_time,
        "student_only_seconds_all": student_times,
        "cached_distillation_seconds_all": cached_times,
        "cache_seconds": cache_time,
        "cached_distillation_seconds": cached_time,
        "live_distillation_seconds": live_time,
        "best_temperature": best["temperature"], "best_alpha": best["alpha"],
        "best_val_accuracy": completed[0]["val_accuracy"],
    }]
    print(f"test accuracy, mean +- std over seeds {seeds}:")
    for name, config in configs:
        scores = []
        for seed in seeds:
            if config is None:
                student = student_only(x, y, val, epochs, batch, seed)
            else:
                student = distilled(teacher, x, targets, val, epochs, batch,
                                    seed, **config)
            scores.append(accuracy(student, x_test, y_test))
        mean, std = bu.mean_std(scores)
        label = name if config is None else (
            f"{name} (T={config['temperature']:.3g}, "
            f"alpha={config['alpha']:.3g})")
        print(f"  {label:<36} {mean:.4f} +- {std:.4f}  "
              f"{[round(s, 4) for s in scores]}")
        rows.append({"benchmark": "tuning", "data": args.data,
                     "config": name, **(config or {}), "epochs": epochs,
                     "seeds": seeds, "test_accuracy": scores,
                     "test_accuracy_mean": mean, "test_accuracy_std": std})
    bu.write_rows(args.output, rows)
    print(f"rows appended to {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
