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

Run (one benchmark at a time on a shared machine):

```
flock /tmp/kd_bench.lock python benchmarks/shrink_benchmark.py --teacher cnn \\
    --shrink width0.5 --seeds 3
flock /tmp/kd_bench.lock python benchmarks/shrink_benchmark.py \\
    --teacher resnet --shrink width0.5 depth2 --seeds 3
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
    if spec.startswith("width"):
        return {"width": float(spec[5:])}
    if spec.startswith("depth"):
        return {"depth": int(spec[5:])}
    raise SystemExit(f"--shrink must be widthF or depthN, got {spec!r}")


def accuracy(model, x, y):
    logits = model.predict(x, batch_size=1024, verbose=0)
    return float(np.mean(np.argmax(logits, -1) == y))


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
    parser.add_argument("--teacher", choices=("cnn", "resnet"),
                        default="cnn")
    parser.add_argument("--shrink", nargs="+", default=["width0.5"])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--train-size", type=int, default=10000)
    parser.add_argument("--teacher-epochs", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--learning-rate", type=float, default=1e-3)
    parser.add_argument("--alpha", type=float, default=0.5)
    parser.add_argument("--temperature", type=float, default=4.0)
    parser.add_argument("--importance-samples", type=int, default=256)
    parser.add_argument("--output", default=os.path.join(
        HERE, "results", "shrink.jsonl"))
    args = parser.parse_args()

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
              f"{inherited:.4f} before training")
        rows = []
        for row in ROWS:
            accs, times = [], []
            for seed in range(args.seeds):
                student, seconds = train(row, teacher, shrunk, x, y, args,
                                         seed)
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
                })
            m, s = bu.mean_std(accs)
            print(f"  {row:30s} {100 * m:6.2f} ± {100 * s:.2f} %  "
                  f"{np.mean(times):6.1f} s", flush=True)
        bu.write_rows(args.output, rows)


if __name__ == "__main__":
    main()
