"""Students cut from the teacher (`keras_kd.students.shrink`) vs students
initialised at random, with and without distillation, over several seeds.

One teacher is trained first (and cached in results/teachers). The student
architecture is `shrink(teacher, ...)`; every row trains that same
architecture for the same number of epochs, batch size and optimizer:

- `random init, alone`: fresh weights (`keras.models.clone_model`),
  cross-entropy with the labels;
- `random init, distilled`: fresh weights, `keras_kd.Distiller` (teacher
  outputs cached once, alpha 0.5, T 4);
- `shrunk, fine-tuned on labels`: the teacher's surviving weights,
  cross-entropy with the labels;
- `shrunk + distilled`: the teacher's surviving weights, the Distiller.

`--teacher cnn` is the MNIST CNN pair of the other benchmarks (Sequential:
conv 32, conv 64, dense 128; no residual blocks, so width only). `--teacher
resnet` is a residual CNN (stem conv and four residual blocks of two 3x3
convolutions with BatchNormalization), pruned by width and by depth.
Channels are ranked on 256 training images (mean absolute activation);
blocks are kept evenly spaced. The wall time is each row's training time
(the distilled rows include caching the teacher's outputs). The machine's
load average is recorded with every row.

`--teacher cifar10` is the CIFAR-10 table's ResNet-14-like teacher
(widths 16-32-64, two basic blocks per stage, `cifar10_benchmark.py`,
loaded from results/teachers: run `cifar10_benchmark.py --rows teacher`
first) with that table's setup:
5,000 class-balanced training images, all 10,000 test images, SGD Nesterov
0.9 with lr 0.1 cosine decay and weight decay 5e-4, batch 128,
`RandomCropFlip(padding=4)`. Its identity-shortcut blocks are the two of
stage 1 and the second block of stages 2 and 3 (the first block of stages 2
and 3 has a projection shortcut and is always kept), so `keep0` (keep block
0 of those four) leaves one basic block per stage, and `keep0+width0.5` is
the CIFAR table's ResNet-8 student (widths 8-16-32). The distilled rows
read the teacher from a view cache (`cache_teacher_views`, K=`--views`,
built once and shared by every distilled run; its time is recorded as
`view_cache_seconds`, not in the rows' wall time). `--rows` picks a subset
of the rows.

A spec is `widthF`, `depthN` or `keepI,J,...`, several joined by `+`.

Run (one benchmark at a time on a shared machine):

```
flock /tmp/kd_bench.lock python benchmarks/shrink_benchmark.py --teacher cnn \\
    --shrink width0.5 --seeds 3
flock /tmp/kd_bench.lock python benchmarks/shrink_benchmark.py \\
    --teacher resnet --shrink width0.5 depth2 --seeds 3
flock /tmp/kd_bench.lock python benchmarks/shrink_benchmark.py \\
    --teacher cifar10 --shrink keep0+width0.5 --seeds 3 --epochs 10
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
from keras_kd.students import shrink  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
L = keras.layers
ROWS = ("random init, alone", "random init, distilled",
        "shrunk, fine-tuned on labels", "shrunk + distilled")


def resnet_teacher(input_shape, num_classes, width=32, blocks=4):
    inputs = keras.Input(input_shape)
    h = L.Conv2D(width, 3, padding="same", name="stem")(inputs)
    h = L.BatchNormalization(momentum=0.9, name="stem_bn")(h)
    h = L.ReLU()(h)
    h = L.MaxPooling2D(name="pool")(h)
    for b in range(blocks):
        r = L.Conv2D(width, 3, padding="same", activation="relu",
                     name=f"block{b}_conv1")(h)
        r = L.Conv2D(width, 3, padding="same", name=f"block{b}_conv2")(r)
        r = L.BatchNormalization(momentum=0.9, name=f"block{b}_bn")(r)
        h = L.ReLU()(L.Add(name=f"block{b}_add")([h, r]))
    h = L.GlobalAveragePooling2D()(h)
    h = L.Dense(64, activation="relu", name="fc")(h)
    return keras.Model(inputs, L.Dense(num_classes, name="logits")(h),
                       name="resnet_teacher")


def teacher_for(args, x, y):
    if args.teacher == "cnn":
        return bu.cached_teacher("mnist", x, y, args.teacher_epochs)
    path = os.path.join(HERE, "results", "teachers",
                        f"mnist_resnet_e{args.teacher_epochs}_n{len(x)}.keras")
    if os.path.exists(path):
        return keras.saving.load_model(path), path
    keras.utils.set_random_seed(0)
    teacher = resnet_teacher(x.shape[1:], int(y.max()) + 1)
    teacher.compile(optimizer="adam", loss=bu.sparse_ce(),
                    metrics=["accuracy"])
    teacher.fit(x, y, epochs=args.teacher_epochs, batch_size=128, verbose=0)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    teacher.save(path)
    return teacher, path


def shrink_arguments(spec):
    kwargs = {}
    for part in spec.split("+"):
        if part.startswith("width"):
            kwargs["width"] = float(part[5:])
        elif part.startswith("depth"):
            kwargs["depth"] = int(part[5:])
        elif part.startswith("keep"):
            kwargs["keep"] = [int(i) for i in part[4:].split(",")]
        else:
            raise SystemExit("--shrink takes widthF, depthN or keepI,J "
                             f"(joined by +), got {spec!r}")
    return kwargs


def accuracy(model, x, y):
    logits = model.predict(x, batch_size=1024, verbose=0)
    return float(np.mean(np.argmax(logits, -1) == y))


def cifar10_setup(args):
    """The CIFAR table's data, teacher and view cache (cifar10_benchmark)."""
    import cifar10_benchmark as cb

    (x_all, y_all), (xt, yt) = cb.load_cifar10()
    x, y = cb.balanced_subset(x_all, y_all, args.train_size)
    path = os.path.join(HERE, "results", "teachers",
                        "cifar10_resnet14_w16_e10_n25000.keras")
    if not os.path.exists(path):
        raise SystemExit(f"{path} not found: run cifar10_benchmark.py "
                         "--rows teacher first")
    teacher = keras.saving.load_model(path)
    return (x, y), (xt, yt), teacher, path


def train_cifar10(row, teacher, shrunk, x, y, args, seed, caches):
    """One CIFAR-10 run with the CIFAR table's optimizer and augmentation."""
    import cifar10_benchmark as cb

    keras.utils.set_random_seed(seed)
    student = keras.models.clone_model(shrunk)  # fresh weights
    if not row.startswith("random"):
        student.set_weights(shrunk.get_weights())
    steps = args.epochs * -(-len(x) // args.batch_size)
    opt = cb.optimizer(args, steps)
    start = time.perf_counter()
    if row.endswith("distilled"):
        d = keras_kd.Distiller(teacher, student, alpha=args.alpha,
                               temperature=args.temperature)
        d.compile(optimizer=opt)
        d.fit(caches["views"].dataset(x, y, args.batch_size, seed=seed,
                                      distiller=d),
              epochs=args.epochs, verbose=0)
    else:
        student.compile(optimizer=opt, loss=bu.sparse_ce())
        student.fit(cb.augmented(x, y, args.batch_size, seed),
                    epochs=args.epochs, verbose=0)
    return student, time.perf_counter() - start


def train(row, teacher, shrunk, x, y, args, seed):
    keras.utils.set_random_seed(seed)
    if row.startswith("random"):
        student = keras.models.clone_model(shrunk)  # fresh weights
    else:
        student = keras.models.clone_model(shrunk)
        student.set_weights(shrunk.get_weights())
    optimizer = keras.optimizers.Adam(args.learning_rate)
    start = time.perf_counter()
    if row.endswith("distilled"):
        distiller = keras_kd.Distiller(teacher, student, alpha=args.alpha,
                                       temperature=args.temperature)
        distiller.compile(optimizer=optimizer)
        cache = keras_kd.data.cache_teacher_outputs(distiller, x, verbose=0)
        distiller.fit(x, cache.targets(y, x=x), epochs=args.epochs,
                      batch_size=args.batch_size, shuffle=True, verbose=0)
    else:
        student.compile(optimizer=optimizer, loss=bu.sparse_ce())
        student.fit(x, y, epochs=args.epochs, batch_size=args.batch_size,
                    shuffle=True, verbose=0)
    return student, time.perf_counter() - start


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--teacher", choices=("cnn", "resnet", "cifar10"),
                        default="cnn")
    parser.add_argument("--rows", default=";".join(ROWS),
                        help="semicolon-separated subset of the rows")
    parser.add_argument("--views", type=int, default=8,
                        help="teacher views per image (cifar10)")
    parser.add_argument("--shrink", nargs="+", default=["width0.5"])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--train-size", type=int, default=None,
                        help="10,000 (MNIST) or 5,000 (cifar10)")
    parser.add_argument("--teacher-epochs", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--learning-rate", type=float, default=None,
                        help="Adam 1e-3 (MNIST) or SGD 0.1 (cifar10)")
    parser.add_argument("--alpha", type=float, default=0.5)
    parser.add_argument("--temperature", type=float, default=4.0)
    parser.add_argument("--importance-samples", type=int, default=256)
    parser.add_argument("--output", default=os.path.join(
        HERE, "results", "shrink.jsonl"))
    args = parser.parse_args()
    cifar = args.teacher == "cifar10"
    if args.train_size is None:
        args.train_size = 5000 if cifar else 10000
    if args.learning_rate is None:
        args.learning_rate = 0.1 if cifar else 1e-3
    rows_run = [r.strip() for r in args.rows.split(";") if r.strip()]
    unknown = sorted(set(rows_run) - set(ROWS))
    if unknown:
        parser.error(f"unknown rows {unknown}; expected some of {list(ROWS)}")

    caches = {}
    if cifar:
        (x, y), (xt, yt), teacher, _ = cifar10_setup(args)
        args.teacher_epochs = 10
        if any(r.endswith("distilled") for r in rows_run):
            t0 = time.perf_counter()
            caches["views"] = keras_kd.data.views.cache_teacher_views(
                teacher, x, views=args.views, seed=0, batch_size=500)
            caches["seconds"] = time.perf_counter() - t0
            print(f"view cache K={args.views}: {caches['seconds']:.0f} s",
                  flush=True)
    else:
        (x, y), (xt, yt) = bu.load("mnist", limit=args.train_size)
        teacher, _ = teacher_for(args, x, y)
    teacher_accuracy = accuracy(teacher, xt, yt)
    print(f"teacher {args.teacher}: {teacher_accuracy:.4f}, "
          f"{teacher.count_params():,} parameters")
    for spec in args.shrink:
        shrunk = shrink(teacher, importance_data=x[:args.importance_samples],
                        **shrink_arguments(spec))
        inherited = accuracy(shrunk, xt, yt)
        print(f"{spec}: {shrunk.count_params():,} parameters, "
              f"{inherited:.4f} before training", flush=True)
        if cifar:
            import cifar10_benchmark as cb

            print(f"  (CIFAR table's ResNet-8 student: "
                  f"{cb.student_model(8).count_params():,} parameters)",
                  flush=True)
        rows = []
        for row in [r for r in ROWS if r in rows_run]:
            accs, times = [], []
            for seed in range(args.seeds):
                if cifar:
                    student, seconds = train_cifar10(
                        row, teacher, shrunk, x, y, args, seed, caches)
                else:
                    student, seconds = train(row, teacher, shrunk, x, y,
                                             args, seed)
                acc = accuracy(student, xt, yt)
                accs.append(acc)
                times.append(seconds)
                rows.append({
                    "benchmark": "shrink", "teacher": args.teacher,
                    "shrink": spec, "row": row, "seed": seed,
                    "test_accuracy": acc, "seconds": seconds,
                    "epochs": args.epochs, "train_size": len(x),
                    "teacher_epochs": args.teacher_epochs,
                    "teacher_accuracy": teacher_accuracy,
                    "teacher_params": teacher.count_params(),
                    "student_params": shrunk.count_params(),
                    "inherited_accuracy": inherited,
                    "load_average": os.getloadavg()[0],
                    **({"views": args.views,
                        "view_cache_seconds": caches.get("seconds"),
                        "learning_rate": args.learning_rate,
                        "optimizer": "sgd nesterov cosine wd5e-4",
                        "augmentation": "RandomCropFlip(padding=4)",
                        "test_size": len(xt)} if cifar else {}),
                })
                print(f"    seed {seed} {row}: {100 * acc:.2f} % "
                      f"({seconds:.0f} s)", flush=True)
            m, s = bu.mean_std(accs)
            print(f"  {row:30s} {100 * m:6.2f} ± {100 * s:.2f} %  "
                  f"{np.mean(times):6.1f} s", flush=True)
            bu.write_rows(args.output, rows)
            rows = []


if __name__ == "__main__":
    main()
