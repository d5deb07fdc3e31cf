"""Response vs feature vs relation distillation for a CNN pair, on MNIST
padded to 32x32.

Teacher: two conv blocks (16x16x32, then 8x8x64 maps) and a dense head.
Student: two narrower conv blocks (16x16x8, then 8x8x16) and a dense head, so
matched maps differ in width (64 vs 16 channels; the tests cover heads that
also change the resolution).

Methods (same student initial weights per seed, same optimizer and epochs):
- `scratch`: labels only.
- `response`: `Distiller(alpha, temperature)`.
- `+ FeatureMatch`: response + FitNets-style `FeatureMatch("t_block2",
  "s_block2")` with an automatic 1x1-conv + BN head.
- `+ attention`: response + attention transfer on both blocks.
- `+ RKD`: response + RKD distance (25) and angle (50) between the teacher's
  embedding and the student's flattened last block.
- `+ SP`: response + similarity-preserving (3000) on the last block.

Accuracy runs use teacher outputs cached once (logits and the matched maps),
which gives the same losses as the live teacher since nothing is augmented.
The step times are measured separately, with the live teacher, on the same
batches, interleaved, and reported relative to `response`.

Run:

```
python benchmarks/feature_benchmark.py --seeds 3 --epochs 8 --limit 20000
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


def pad32(x):
    return np.pad(x, ((0, 0), (2, 2), (2, 2), (0, 0)))


def conv_block(x, filters, name):
    x = keras.layers.Conv2D(filters, 3, padding="same", activation="relu",
                            name=f"{name}_conv")(x)
    return keras.layers.MaxPooling2D(name=name)(x)


def teacher_model():
    inputs = keras.Input((32, 32, 1))
    x = conv_block(inputs, 32, "t_block1")
    x = conv_block(x, 64, "t_block2")
    x = keras.layers.Flatten(name="t_flat")(x)
    x = keras.layers.Dense(128, activation="relu", name="t_embedding")(x)
    return keras.Model(inputs, keras.layers.Dense(10, name="t_logits")(x),
                       name="teacher")


def student_model():
    inputs = keras.Input((32, 32, 1))
    x = conv_block(inputs, 8, "s_block1")
    x = conv_block(x, 16, "s_block2")
    x = keras.layers.Flatten(name="s_flat")(x)
    return keras.Model(inputs, keras.layers.Dense(10, name="s_logits")(x),
                       name="student")


def features(method):
    if method == "+ FeatureMatch":
        return [keras_kd.FeatureMatch("t_block2", "s_block2", loss="mse")]
    if method == "+ attention":
        return [keras_kd.FeatureMatch("t_block1", "s_block1",
                                      loss="attention", weight=1000.0),
                keras_kd.FeatureMatch("t_block2", "s_block2",
                                      loss="attention", weight=1000.0)]
    if method == "+ RKD":
        return [keras_kd.RelationMatch("rkd_distance", "t_embedding",
                                       "s_flat"),
                keras_kd.RelationMatch("rkd_angle", "t_embedding", "s_flat")]
    if method == "+ SP":
        return [keras_kd.RelationMatch("similarity_preserving", "t_block2",
                                       "s_block2")]
    return []


METHODS = ("scratch", "response", "+ FeatureMatch", "+ attention", "+ RKD",
           "+ SP")


def make_distiller(teacher, method, args):
    student = student_model()
    d = keras_kd.Distiller(teacher, student, alpha=args.alpha,
                           temperature=args.temperature,
                           features=features(method))
    d.compile(optimizer=keras.optimizers.Adam(args.learning_rate),
              metrics=["accuracy"])
    return d, student


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--teacher-epochs", type=int, default=6)
    parser.add_argument("--limit", type=int, default=20000)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--alpha", type=float, default=0.5)
    parser.add_argument("--temperature", type=float, default=4.0)
    parser.add_argument("--learning-rate", type=float, default=2e-3)
    parser.add_argument("--timing-steps", type=int, default=20)
    parser.add_argument("--timing-rounds", type=int, default=3)
    parser.add_argument("--methods", nargs="+", choices=METHODS,
                        default=list(METHODS),
                        help="methods to run (response is always timed)")
    parser.add_argument("--output", default=os.path.join(
        bu.HERE, "results", "feature.jsonl"))
    args = parser.parse_args(argv)
    methods = [m for m in METHODS if m in args.methods]

    (x, y), (xt, yt) = bu.load("mnist", args.limit)
    x, xt = pad32(x), pad32(xt)
    keras.utils.set_random_seed(0)
    teacher = teacher_model()
    teacher.compile(optimizer="adam", loss=bu.sparse_ce())
    teacher.fit(x, y, epochs=args.teacher_epochs, batch_size=128, verbose=0)
    teacher_errors = bu.test_errors(teacher, xt, yt)
    print(f"train={len(x)} test={len(xt)} teacher: {teacher_errors} errors",
          flush=True)

    # Step times with the live teacher, interleaved over rounds.
    n = args.batch_size * args.timing_steps
    timed = {}
    for method in METHODS[1:]:
        if method != "response" and method not in methods:
            continue
        keras.utils.set_random_seed(1)
        timed[method] = make_distiller(teacher, method, args)[0]
    times = {m: [] for m in timed}
    for round_index in range(args.timing_rounds + 1):
        for method, d in timed.items():
            start = time.perf_counter()
            d.fit(x[:n], y[:n], batch_size=args.batch_size, epochs=1,
                  shuffle=False, verbose=0)
            if round_index:  # Round 0 is the warm-up (tracing).
                times[method].append(
                    (time.perf_counter() - start) / args.timing_steps * 1e3)
    step = {m: float(np.median(t)) for m, t in times.items()}

    errors = {m: [] for m in methods}
    caches = {}
    rows = []
    for seed in range(args.seeds):
        for method in methods:
            keras.utils.set_random_seed(seed + 1)
            t0 = time.time()
            fit = dict(epochs=args.epochs, batch_size=args.batch_size,
                       verbose=0)
            if method == "scratch":
                student = student_model()
                student.compile(
                    optimizer=keras.optimizers.Adam(args.learning_rate),
                    loss=bu.sparse_ce())
                student.fit(x, y, **fit)
            else:
                d, student = make_distiller(teacher, method, args)
                if method not in caches:
                    caches[method] = keras_kd.data.cache_teacher_outputs(
                        d, x, verbose=0)
                d.fit(x, caches[method].targets(y, distiller=d), **fit)
            e = bu.test_errors(student, xt, yt)
            errors[method].append(e)
            print(f"seed {seed} {method:<16} {e:5d} errors "
                  f"({time.time() - t0:.0f}s)", flush=True)
            rows.append({"benchmark": "feature", "method": method,
                         "seed": seed, "test_errors": e,
                         "test_accuracy": 1 - e / len(xt),
                         "teacher_errors": teacher_errors,
                         "ms_per_step": step.get(method),
                         **{k: v for k, v in vars(args).items()
                            if k != "output"}})
    print(f"\n{'method':<18}{'accuracy %':>18}{'errors':>16}"
          f"{'step vs response':>20}")
    for method in methods:
        acc = [100 * (1 - e / len(xt)) for e in errors[method]]
        amean, astd = bu.mean_std(acc)
        emean, estd = bu.mean_std(errors[method])
        ratio = (f"{step[method] / step['response']:.2f}"
                 if method in step else "-")
        print(f"{method:<18}{amean:>11.2f} ± {astd:.2f}{emean:>9.1f} ± "
              f"{estd:<5.1f}{ratio:>14}")
    bu.write_rows(args.output, rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
