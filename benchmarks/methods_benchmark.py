"""Test accuracy of the logit methods on real MNIST: KD, DKD, DIST, logit
standardization, two teachers, and sigmoid outputs, beside the student alone.

The shared CNN teacher (`benchmark_utils.cached_teacher`) and, for the
two-teacher row, a second, narrower CNN are trained once. For each seed the
same MLP student (same initial weights) is trained by every method on the same
data with the same optimizer, batch size and epochs, on teacher outputs
cached once (nothing is augmented, so the loss equals the live teacher's).

Methods (softmax, 10 classes):
- `scratch`: the student alone.
- `kd`: `Distiller(alpha=0.5, temperature=4)` (Hinton).
- `dkd`: `terms=[HardLoss(), DKD()]`: the paper's alpha 1, beta 8, T 4, and
  its linear warm-up over the first 20 epochs.
- `dist`: `terms=[HardLoss(), DIST()]`: beta = gamma = 1, tau = 4.
- `kd+ls`: KD with logit standardization, `alpha=0.1`, base temperature 2
  (the paper's setting: a small label weight, the KD weight 9x).
- `kd two teachers`: KD from the average softened probabilities of the CNN
  teacher and a second, narrower CNN teacher.
Sigmoid outputs (a binary task, "is the digit >= 5", one logit):
- `binary scratch` and `binary kd` (`Distiller` detects one logit as sigmoid:
  Bernoulli KL at T=4 and binary cross-entropy, alpha=0.5).

Run:

```
python benchmarks/methods_benchmark.py --seeds 3
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

METHODS = ("scratch", "kd", "dkd", "dist", "kd+ls", "kd two teachers",
           "binary scratch", "binary kd")


def binary_teacher(x, y, epochs, batch_size):
    """A one-logit CNN for "digit >= 5", trained once and kept on disk."""
    path = os.path.join(bu.HERE, "results", "teachers",
                        f"mnist_binary_e{epochs}_n{len(x)}.keras")
    if os.path.exists(path):
        return keras.saving.load_model(path)
    keras.utils.set_random_seed(0)
    teacher = bu.cnn_teacher(x.shape[1:], 1)
    teacher.compile(optimizer="adam", loss=keras.losses.BinaryCrossentropy(
        from_logits=True))
    teacher.fit(x, y, epochs=epochs, batch_size=batch_size, verbose=0)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    teacher.save(path)
    return teacher


def train(method, teachers, caches, data, args, seed):
    keras.utils.set_random_seed(seed)
    binary = method.startswith("binary")
    (x, y) = data["binary" if binary else "multi"]
    student = bu.mlp_student(x.shape[1:], 1 if binary else 10, args.hidden)
    optimizer = keras.optimizers.Adam(args.learning_rate)
    fit = dict(epochs=args.epochs, batch_size=args.batch_size, verbose=0)
    if method in ("scratch", "binary scratch"):
        loss = keras.losses.BinaryCrossentropy(from_logits=True) if binary \
            else bu.sparse_ce()
        student.compile(optimizer=optimizer, loss=loss)
        student.fit(x, y, **fit)
        return student
    teacher = teachers["binary" if binary else "cnn"]
    kwargs = {}
    if method == "kd" or method == "binary kd":
        kwargs = dict(alpha=0.5, temperature=4.0)
    elif method == "dkd":
        kwargs = dict(terms=[keras_kd.HardLoss(), keras_kd.DKD()])
    elif method == "dist":
        kwargs = dict(terms=[keras_kd.HardLoss(), keras_kd.DIST()])
    elif method == "kd+ls":
        kwargs = dict(alpha=0.1, temperature=2.0, terms=[
            keras_kd.HardLoss(), keras_kd.SoftTargets(standardize=True)])
    elif method == "kd two teachers":
        teacher = None
        kwargs = dict(alpha=0.5, temperature=4.0, teachers={
            "cnn": teachers["cnn"], "narrow": teachers["narrow"]})
    d = keras_kd.Distiller(teacher, student, **kwargs)
    d.compile(optimizer=optimizer)
    key = "two" if method == "kd two teachers" else (
        "binary" if binary else "cnn")
    if key not in caches:
        t0 = time.time()
        caches[key] = keras_kd.data.cache_teacher_outputs(d, x, verbose=0)
        print(f"cached {key} teacher outputs in {time.time() - t0:.0f}s",
              flush=True)
    d.fit(x, caches[key].targets(y), **fit)
    return student


def errors(method, student, test):
    binary = method.startswith("binary")
    xt, yt = test["binary" if binary else "multi"]
    logits = student.predict(xt, batch_size=1024, verbose=0)
    if binary:
        return int(np.sum((logits[:, 0] > 0) != (yt > 0.5))), len(xt)
    return int(np.sum(np.argmax(logits, -1) != yt)), len(xt)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--teacher-epochs", type=int, default=6)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--learning-rate", type=float, default=1e-3)
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--limit", type=int, default=None,
                        help="use only the first N training samples")
    parser.add_argument("--output", default=os.path.join(
        bu.HERE, "results", "methods.jsonl"))
    args = parser.parse_args(argv)
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = sorted(set(methods) - set(METHODS))
    if unknown:
        parser.error(f"unknown methods {unknown}; expected some of "
                     f"{list(METHODS)}")

    (x, y), (xt, yt) = bu.load("mnist", args.limit)
    data = {"multi": (x, y), "binary": (x, (y >= 5).astype("float32"))}
    test = {"multi": (xt, yt), "binary": (xt, (yt >= 5).astype("float32"))}
    teachers = {
        "cnn": bu.cached_teacher("mnist", x, y, args.teacher_epochs,
                                 batch_size=args.batch_size)[0],
        "narrow": bu.cached_teacher("mnist", x, y, args.teacher_epochs,
                                    width=8, batch_size=args.batch_size)[0],
        "binary": binary_teacher(x, data["binary"][1], args.teacher_epochs,
                                 args.batch_size),
    }
    teacher_errors = {
        "cnn": bu.test_errors(teachers["cnn"], xt, yt),
        "narrow": bu.test_errors(teachers["narrow"], xt, yt),
        "binary": errors("binary", teachers["binary"], test)[0],
    }
    print(f"teachers (test errors): {teacher_errors}", flush=True)

    caches, results, rows = {}, {m: [] for m in methods}, []
    seconds = {m: [] for m in methods}
    for seed in range(args.seeds):
        for method in methods:
            t0 = time.time()
            student = train(method, teachers, caches, data, args, seed + 1)
            e, n = errors(method, student, test)
            results[method].append(e)
            seconds[method].append(time.time() - t0)
            print(f"seed {seed} {method:<20} {e:5d} errors "
                  f"({seconds[method][-1]:.0f}s)", flush=True)
            rows.append({"benchmark": "methods", "data": "mnist",
                         "method": method, "seed": seed, "test_errors": e,
                         "test_accuracy": 1 - e / n,
                         "seconds": seconds[method][-1],
                         "teacher_errors": teacher_errors,
                         **{k: v for k, v in vars(args).items()
                            if k not in ("output", "methods")}})
    print(f"\n{'method':<22}{'test errors':>16}{'accuracy %':>18}"
          f"{'seconds':>10}")
    for method in methods:
        n = len(test["binary" if method.startswith("binary") else "multi"][0])
        mean, std = bu.mean_std(results[method])
        amean, astd = bu.mean_std([100 * (1 - e / n) for e in results[method]])
        print(f"{method:<22}{mean:>9.1f} ± {std:<5.1f}{amean:>11.2f} ± "
              f"{astd:.2f}{np.mean(seconds[method]):>10.0f}")
    bu.write_rows(args.output, rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
