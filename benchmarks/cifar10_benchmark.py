"""CIFAR-10 (JPEG copy): every distillation method on a residual CNN pair,
with standard augmentation, on a CPU budget.

Data: `../shared/data/cifar10_jpg.zip` (25,000 training, 10,000 test
images), decoded once with PIL into `benchmarks/results/cifar10_data/`
(ignored by git). The students train on the first `--train-images` training
images (class-balanced order), every row with the same augmentation
(`RandomCropFlip(padding=4)`: zero padding, random 32x32 crop, random
horizontal flip), optimizer, batch size and epochs, and are tested on all
10,000 test images.

Models (inputs are uint8 pixels, rescaled inside the models):
- teacher: a ResNet-14-like network, widths 16-32-64 with two basic blocks
  per stage, trained once with the same augmentation and kept in
  `results/teachers/`; a second, narrower teacher (8-16-32) for the
  two-teacher row.
- student: a ResNet-8-like network, widths 8-16-32, one basic block per
  stage.

Rows (`--rows`, comma-separated; every run appends one JSON line to
`results/cifar10.jsonl`, so partial runs accumulate):
- `student`: the student alone (cross-entropy).
- `keras.distillation default` / `keras.distillation kl`:
  `keras.distillation.Distiller` with `LogitsDistillation(temperature=4)`
  (its default loss, `"kl_divergence"` on temperature-divided logits) or
  with `loss=keras.losses.KLDivergence()` (softmax, T^2), weight 0.5.
- `kd`: `keras_kd.Distiller(alpha=0.5, temperature=4)`, live teacher on the
  same augmented batch.
- `dkd`, `dist`, `kd+ls`: `HardLoss()` plus `DKD()` / `DIST()` /
  `SoftTargets(standardize=True)` (alpha 0.1, T 2).
- `fitnets`, `attention`, `sp`, `rkd`, `pkt`: KD plus a feature or relation
  term (see `features`).
- `two teachers`: KD from the two teachers' averaged soft targets.
- `best`: the best combination found: FitNets (from the wide teacher) on
  top of KD from both teachers (the two best rows of seed 0).
- `function matching`: soft loss only (`alpha=0`), live teacher on the same
  augmented batch (Beyer et al., 2022, without mixup and long schedules).
- `kd views k1` / `k4` / `k16`: KD (alpha 0.5, T 4) from
  `cache_teacher_views(teacher, x, views=K)`, no live teacher.
- `epoch time`: in one run, interleaved, the time of an epoch of: a
  student-only step on augmented data, KD with the live teacher on
  augmented data, and KD from the K=4 view cache.

Run (TensorFlow backend, 2 CPU cores):

```
python benchmarks/cifar10_benchmark.py --rows student,kd --seeds 0,1,2
python benchmarks/cifar10_benchmark.py --table
```
"""

import argparse
import json
import os
import sys
import time
import zipfile

import keras
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import benchmark_utils as bu  # noqa: E402

import keras_kd  # noqa: E402
from keras_kd.data.views import RandomCropFlip  # noqa: E402
from keras_kd.data.views import cache_teacher_views  # noqa: E402

ZIP = os.path.join(bu.ROOT, "..", "shared", "data", "cifar10_jpg.zip")
DATA = os.path.join(bu.HERE, "results", "cifar10_data", "cifar10_uint8.npz")
OUTPUT = os.path.join(bu.HERE, "results", "cifar10.jsonl")
CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog",
           "horse", "ship", "truck")
ROWS = ("student", "keras.distillation default", "keras.distillation kl",
        "kd", "dkd", "dist", "kd+ls", "fitnets", "attention", "sp", "rkd",
        "pkt", "two teachers", "function matching", "kd views k1",
        "kd views k4", "kd views k16", "best", "epoch time")
# Rows whose terms read the teacher's logits only (a view cache can serve
# them; `--from-views`).
LOGIT_ROWS = ("kd", "dkd", "dist", "kd+ls")
AUGMENTATION = RandomCropFlip(padding=4)


def load_cifar10():
    """`(x, y), (xt, yt)` uint8 images, decoded once from the JPEG zip."""
    if not os.path.exists(DATA):
        from PIL import Image

        if not os.path.exists(ZIP):
            raise SystemExit(f"CIFAR-10 not found at {ZIP}")
        arrays = {}
        with zipfile.ZipFile(ZIP) as z:
            for split in ("train", "test"):
                names = sorted(n for n in z.namelist()
                               if n.startswith(f"cifar10/{split}/")
                               and n.endswith(".jpg"))
                x = np.stack([np.asarray(Image.open(z.open(n)).convert(
                    "RGB")) for n in names])
                y = np.array([CLASSES.index(n.split("/")[2]) for n in names],
                             "int32")
                arrays[f"x_{split}"], arrays[f"y_{split}"] = x, y
        os.makedirs(os.path.dirname(DATA), exist_ok=True)
        np.savez(DATA, **arrays)
    data = np.load(DATA)
    return ((data["x_train"], data["y_train"]),
            (data["x_test"], data["y_test"]))


def balanced_subset(x, y, count):
    """The first `count` images, interleaving classes (fixed order)."""
    rank = np.zeros(len(y), "int64")
    for c in range(10):
        where = np.flatnonzero(y == c)
        rank[where] = np.arange(len(where))
    order = np.lexsort((y, rank))[:count]
    return x[order], y[order]


def resnet(widths, blocks, prefix, num_classes=10):
    """A CIFAR ResNet: stem, `len(widths)` stages of basic blocks, GAP."""
    inputs = keras.Input((32, 32, 3))
    x = keras.layers.Rescaling(1 / 127.5, -1.0)(inputs)
    x = keras.layers.Conv2D(widths[0], 3, padding="same", use_bias=False)(x)
    x = keras.layers.BatchNormalization()(x)
    x = keras.layers.ReLU()(x)
    for stage, width in enumerate(widths):
        for block in range(blocks):
            stride = 2 if stage > 0 and block == 0 else 1
            shortcut = x
            y = keras.layers.Conv2D(width, 3, stride, padding="same",
                                    use_bias=False)(x)
            y = keras.layers.BatchNormalization()(y)
            y = keras.layers.ReLU()(y)
            y = keras.layers.Conv2D(width, 3, padding="same",
                                    use_bias=False)(y)
            y = keras.layers.BatchNormalization()(y)
            if stride != 1 or shortcut.shape[-1] != width:
                shortcut = keras.layers.Conv2D(width, 1, stride,
                                               use_bias=False)(shortcut)
                shortcut = keras.layers.BatchNormalization()(shortcut)
            name = f"{prefix}_block{stage + 1}" if block == blocks - 1 \
                else None
            x = keras.layers.ReLU(name=name)(keras.layers.Add()([y, shortcut]))
    x = keras.layers.GlobalAveragePooling2D(name=f"{prefix}_pool")(x)
    outputs = keras.layers.Dense(num_classes, name=f"{prefix}_logits")(x)
    return keras.Model(inputs, outputs, name=prefix)


def teacher_model(width=16):
    return resnet((width, 2 * width, 4 * width), 2, "t")


def student_model(width=8):
    return resnet((width, 2 * width, 4 * width), 1, "s")


def augmented(x, y, batch_size, seed, repeat=False):
    """A `tf.data` pipeline: shuffle, batch, live `RandomCropFlip`."""
    import tensorflow as tf

    ds = tf.data.Dataset.from_tensor_slices((x, y)).shuffle(
        len(x), seed=seed, reshuffle_each_iteration=True).batch(batch_size)
    ds = ds.map(lambda a, b: (AUGMENTATION(a), b),
                num_parallel_calls=tf.data.AUTOTUNE)
    if repeat:
        ds = ds.repeat()
    return ds.prefetch(tf.data.AUTOTUNE)


def optimizer(args, steps):
    schedule = keras.optimizers.schedules.CosineDecay(
        args.learning_rate, decay_steps=steps)
    return keras.optimizers.SGD(schedule, momentum=0.9, nesterov=True,
                                weight_decay=5e-4)


def cached_teacher(x, y, width, epochs, args):
    path = os.path.join(bu.HERE, "results", "teachers",
                        f"cifar10_resnet14_w{width}_e{epochs}_n{len(x)}.keras")
    if os.path.exists(path):
        return keras.saving.load_model(path), path
    keras.utils.set_random_seed(0)
    teacher = teacher_model(width)
    steps = epochs * (len(x) // args.batch_size + 1)
    teacher.compile(optimizer=optimizer(args, steps), loss=bu.sparse_ce(),
                    metrics=["accuracy"])
    t0 = time.time()
    teacher.fit(augmented(x, y, args.batch_size, 0), epochs=epochs,
                verbose=2)
    print(f"teacher w{width} trained in {time.time() - t0:.0f}s", flush=True)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    teacher.save(path)
    return teacher, path


def features(row):
    """The feature/relation terms of a row (beside KD alpha 0.5, T 4).

    Published weights: attention 1000 per pair, and the `RelationMatch`
    defaults (SP 3000, RKD distance 25 / angle 50, PKT 30000).
    """
    if row == "fitnets":
        return [keras_kd.FeatureMatch("t_block2", "s_block2", loss="mse")]
    if row == "attention":
        return [keras_kd.FeatureMatch(f"t_block{i}", f"s_block{i}",
                                      loss="attention", weight=1000.0)
                for i in (1, 2, 3)]
    if row == "sp":
        return [keras_kd.RelationMatch("similarity_preserving", "t_block3",
                                       "s_block3")]
    if row == "rkd":
        return [keras_kd.RelationMatch("rkd_distance", "t_pool", "s_pool"),
                keras_kd.RelationMatch("rkd_angle", "t_pool", "s_pool")]
    if row == "pkt":
        return [keras_kd.RelationMatch("pkt", "t_pool", "s_pool")]
    return []


def kd_distiller(row, teachers, student):
    teacher = teachers["main"]
    if row in ("kd", "kd views k1", "kd views k4", "kd views k16"):
        return keras_kd.Distiller(teacher, student, alpha=0.5,
                                  temperature=4.0)
    if row == "function matching":
        return keras_kd.Distiller(teacher, student, alpha=0.0,
                                  temperature=4.0)
    if row == "dkd":
        return keras_kd.Distiller(teacher, student, terms=[
            keras_kd.HardLoss(), keras_kd.DKD()])
    if row == "dist":
        return keras_kd.Distiller(teacher, student, terms=[
            keras_kd.HardLoss(), keras_kd.DIST()])
    if row == "kd+ls":
        return keras_kd.Distiller(teacher, student, alpha=0.1,
                                  temperature=2.0, terms=[
                                      keras_kd.HardLoss(),
                                      keras_kd.SoftTargets(standardize=True)])
    if row in ("two teachers", "best"):
        # "best": the two best rows of the first seed together, FitNets
        # (from the wide teacher) on top of KD from both teachers.
        features = [keras_kd.FeatureMatch("t_block2", "s_block2",
                                          loss="mse", teacher="wide")] \
            if row == "best" else []
        return keras_kd.Distiller(None, student, alpha=0.5, temperature=4.0,
                                  teachers={"wide": teacher,
                                            "narrow": teachers["narrow"]},
                                  features=features)
    return keras_kd.Distiller(teacher, student, alpha=0.5, temperature=4.0,
                              features=features(row))


def train(row, seed, teachers, data, caches, args):
    """Trains one student; returns it (the caller times and tests it)."""
    keras.utils.set_random_seed(seed)
    x, y = data
    student = student_model(args.student_width)
    steps = args.epochs * -(-len(x) // args.batch_size)
    opt = optimizer(args, steps)
    live = augmented(x, y, args.batch_size, seed)
    if row == "student":
        student.compile(optimizer=opt, loss=bu.sparse_ce())
        student.fit(live, epochs=args.epochs, verbose=0)
    elif row.startswith("keras.distillation"):
        kwargs = {}
        if row.endswith("kl"):
            kwargs["loss"] = keras.losses.KLDivergence()
        d = keras.distillation.Distiller(
            teacher=teachers["main"], student=student,
            distillation_losses=keras.distillation.LogitsDistillation(
                temperature=4.0, **kwargs),
            student_loss_weight=0.5)
        d.compile(optimizer=opt, loss=bu.sparse_ce())
        d.fit(live, epochs=args.epochs, verbose=0)
    elif row.startswith("kd views") or row in args.from_views:
        k = int(row.rsplit("k", 1)[1]) if row.startswith("kd views") \
            else args.max_views
        d = kd_distiller(row, teachers, student)
        d.compile(optimizer=opt)
        cache = view_cache(x, teachers["main"], caches, args).take(k)
        d.fit(cache.dataset(x, y, args.batch_size, seed=seed, distiller=d),
              epochs=args.epochs, verbose=0)
    else:
        d = kd_distiller(row, teachers, student)
        d.compile(optimizer=opt)
        d.fit(live, epochs=args.epochs, verbose=0)
    return student


def view_cache(x, teacher, caches, args):
    """The K=16 view cache of the training images (K=1, 4 are its prefix)."""
    if "views" not in caches:
        path = os.path.join(bu.HERE, "results", "cifar10_data",
                            f"views_k{args.max_views}_n{len(x)}")
        t0 = time.time()
        try:
            caches["views"] = keras_kd.data.views.TeacherViewCache.load(path)
        except FileNotFoundError:
            caches["views"] = cache_teacher_views(
                teacher, x, views=args.max_views, seed=0, batch_size=500,
                path=path)
        caches["views_seconds"] = time.time() - t0
        print(f"view cache K={args.max_views}: {time.time() - t0:.0f}s",
              flush=True)
    return caches["views"]


def accuracy(model, xt, yt):
    logits = model.predict(xt, batch_size=1000, verbose=0)
    return float(np.mean(np.argmax(logits, -1) == yt))


def teacher_accuracy(teachers, xt, yt, args):
    """Test accuracy of each teacher, computed once and kept beside the data."""
    path = os.path.join(os.path.dirname(DATA), "teacher_accuracy.json")
    known = json.load(open(path)) if os.path.exists(path) else {}
    result = {}
    for name, teacher in teachers.items():
        width = args.teacher_width // (2 if name == "narrow" else 1)
        key = f"w{width}_e{args.teacher_epochs}_n{args.teacher_images}"
        if key not in known:
            known[key] = accuracy(teacher, xt, yt)
            with open(path, "w") as f:
                json.dump(known, f)
        result[name] = known[key]
    return result


def epoch_times(teachers, data, caches, args, rounds=3):
    """Interleaved epoch times: student-only, live KD, cached-view KD."""
    x, y = data
    cache = view_cache(x, teachers["main"], caches, args).take(4)
    keras.utils.set_random_seed(0)
    runs = {}
    student = student_model(args.student_width)
    student.compile(optimizer=optimizer(args, 10**6), loss=bu.sparse_ce())
    runs["student only"] = (student, augmented(x, y, args.batch_size, 0))
    live = kd_distiller("kd", teachers, student_model(args.student_width))
    live.compile(optimizer=optimizer(args, 10**6))
    runs["kd live teacher"] = (live, augmented(x, y, args.batch_size, 0))
    cached = kd_distiller("kd", teachers, student_model(args.student_width))
    cached.compile(optimizer=optimizer(args, 10**6))
    runs["kd cached views"] = (cached, cache.dataset(
        x, y, args.batch_size, seed=0))
    times = {name: [] for name in runs}
    for r in range(rounds + 1):  # Round 0 compiles and is not counted.
        for name, (model, ds) in runs.items():
            t0 = time.perf_counter()
            model.fit(ds, epochs=1, verbose=0)
            if r:
                times[name].append(time.perf_counter() - t0)
    return times


def read_rows(path=OUTPUT):
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def source(row, from_views, max_views):
    """Where a row's teacher outputs come from (`from_views`: the row's
    recorded `--from-views` entry, "" for a live teacher)."""
    if row.startswith("kd views"):
        return f"views K={row.rsplit('k', 1)[1]}"
    if row == from_views:
        return f"views K={max_views}"
    return "none" if row == "student" else "live"


def table(path=OUTPUT, epochs=None):
    """Prints the markdown table of the rows in `path` (of one schedule)."""
    rows = [r for r in read_rows(path)
            if epochs is None or r.get("epochs") == epochs]
    runs = [r for r in rows if r.get("row") != "epoch time"]
    print("| Method | Teacher outputs | Test accuracy % (mean ± std, vs "
          "student) | n | Seconds per run |")
    print("|---|---|---|---|---|")
    base = [r["test_accuracy"] for r in runs if r["row"] == "student"]
    for name in ROWS[:-1]:  # "epoch time" has its own table.
        acc = [100 * r["test_accuracy"] for r in runs if r["row"] == name]
        sec = [r["seconds"] for r in runs if r["row"] == name]
        if not acc:
            continue
        where = {source(r["row"], r.get("from_views", ""), r["max_views"])
                 for r in runs if r["row"] == name}
        mean, std = bu.mean_std(acc)
        delta = (f" ({mean - 100 * np.mean(base):+.2f})" if base and
                 name != "student" else "")
        print(f"| {name} | {', '.join(sorted(where))} | {mean:.2f} ± "
              f"{std:.2f}{delta} | {len(acc)} | {np.mean(sec):.0f} |")
    for r in [r for r in rows if r.get("row") == "epoch time"]:
        med = {k: float(np.median(v)) for k, v in r["epoch_seconds"].items()}
        base_t = med["student only"]
        print("\n| Epoch (same augmentation) | Median seconds | vs student |")
        print("|---|---|---|")
        for k, v in med.items():
            print(f"| {k} | {v:.1f} | {v / base_t:.2f}x |")
    teachers = [r["teacher_accuracy"] for r in runs if "teacher_accuracy"
                in r]
    if teachers:
        print(f"\nteachers: {teachers[-1]}")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", default="student,kd")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--teacher-epochs", type=int, default=10)
    parser.add_argument("--teacher-width", type=int, default=16)
    parser.add_argument("--student-width", type=int, default=8)
    parser.add_argument("--train-images", type=int, default=5000)
    parser.add_argument("--teacher-images", type=int, default=25000)
    parser.add_argument("--max-views", type=int, default=16)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--learning-rate", type=float, default=0.1)
    parser.add_argument(
        "--from-views", default="",
        help="rows (comma-separated, logit terms only) that read the "
             "teacher from the K=--max-views view cache instead of running "
             "it live")
    parser.add_argument("--output", default=OUTPUT)
    parser.add_argument("--table", action="store_true")
    args = parser.parse_args(argv)
    if args.table:
        table(args.output, args.epochs)
        return 0
    rows = [r.strip() for r in args.rows.split(",") if r.strip()]
    from_views = [r.strip() for r in args.from_views.split(",") if r.strip()]
    bad = sorted(set(from_views) - set(LOGIT_ROWS))
    if bad:
        parser.error(f"--from-views takes logit-only rows {list(LOGIT_ROWS)}; "
                     f"received {bad}")
    args.from_views = from_views
    unknown = sorted(set(rows) - set(ROWS) - {"teacher"})
    if unknown:
        parser.error(f"unknown rows {unknown}; expected some of {list(ROWS)}")
    seeds = [int(s) for s in args.seeds.split(",")]

    (x_all, y_all), (xt, yt) = load_cifar10()
    xtr, ytr = balanced_subset(x_all, y_all, args.teacher_images)
    teachers = {
        "main": cached_teacher(xtr, ytr, args.teacher_width,
                               args.teacher_epochs, args)[0],
    }
    if {"two teachers", "best", "teacher"} & set(rows):
        teachers["narrow"] = cached_teacher(
            xtr, ytr, args.teacher_width // 2, args.teacher_epochs, args)[0]
    teacher_acc = teacher_accuracy(teachers, xt, yt, args)
    print(f"teachers: test accuracy {teacher_acc}, params "
          f"{teachers['main'].count_params()} vs student "
          f"{student_model(args.student_width).count_params()}", flush=True)
    data = balanced_subset(x_all, y_all, args.train_images)
    caches = {}
    if any(r.startswith("kd views") or r == "epoch time" or r in from_views
           for r in rows):
        # Built (or loaded) once, outside the timed runs; its time is
        # recorded as `view_cache_seconds`.
        view_cache(data[0], teachers["main"], caches, args)
    settings = {k: v for k, v in vars(args).items()
                if k not in ("output", "rows", "seeds", "table",
                             "from_views")}
    for seed in seeds:
        for row in rows:
            if row == "teacher":
                continue
            if row == "epoch time":
                if seed != seeds[0]:
                    continue
                times = epoch_times(teachers, data, caches, args)
                print(f"epoch times {times}", flush=True)
                bu.write_rows(args.output, [{
                    "benchmark": "cifar10", "row": row,
                    "epoch_seconds": times, **settings}])
                continue
            t0 = time.time()
            student = train(row, seed, teachers, data, caches, args)
            seconds = time.time() - t0
            acc = accuracy(student, xt, yt)
            print(f"seed {seed} {row:<28} {100 * acc:6.2f}% "
                  f"({seconds:.0f}s)", flush=True)
            bu.write_rows(args.output, [{
                "benchmark": "cifar10", "row": row, "seed": seed,
                "test_accuracy": acc, "seconds": seconds,
                "view_cache_seconds": caches.get("views_seconds"),
                "teacher_accuracy": teacher_acc,
                "from_views": ",".join(r for r in from_views if r == row),
                **settings}])
    return 0


if __name__ == "__main__":
    sys.exit(main())
