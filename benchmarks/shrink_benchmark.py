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

`--teacher lm` is the tinyshakespeare GPT-2 pair of `lm_benchmark.py`,
with that benchmark's data, vocabulary and cached teacher (KerasHub
`GPT2CausalLM`, 4 layers x 128 wide, 4 heads, 1000 steps, vocabulary 2,000,
loaded from results/teachers: run `lm_benchmark.py --rows scratch --seeds 0`
first) and its student budget: `--steps` (300) padded batches of 16 chunks
of 32-128 tokens, the same batches for every row of a seed, Adam 2e-3.
The rows train with `lm_benchmark`'s own row functions: `scratch` (masked
next-token cross-entropy) for the labels rows, `forward KL`
(`keras_kd.Distiller`, `HardLoss` + forward KL masked by the padding,
alpha 0.5, T 1, the live teacher) for the distilled rows. Random
initialisation is the shrunk model's class rebuilt from its config under
the seed (`clone_model` would return a plain Functional). `depthN` keeps N
of the 4 transformer layers (the N that change their input most on the
importance data, 1 - cosine), `widthF` keeps the fraction F of each
layer's FFN channels (`intermediate_dim`, by mean absolute activation).
Importance data: the first
`--importance-samples` (64) training chunks, padded to 128 tokens. The
metric is `lm_benchmark.validation_loss` (token cross-entropy over the
whole validation split) and its perplexity; `--table` prints the markdown
table of the lm rows of `--output`.

A spec is `widthF`, `depthN` or `keepI,J,...`, several joined by `+`;
for `--teacher lm` also `ffnF`, `headsF` and `hiddenF`, the fractions of
`intermediate_dim`, `num_heads` and `hidden_dim` kept (`shrink`'s `width`
dict; `heads0.5` alone also halves `hidden_dim`, the head width is kept).

Run (one benchmark at a time on a shared machine):

```
flock /tmp/kd_bench.lock python benchmarks/shrink_benchmark.py --teacher cnn \\
    --shrink width0.5 --seeds 3
flock /tmp/kd_bench.lock python benchmarks/shrink_benchmark.py \\
    --teacher resnet --shrink width0.5 depth2 --seeds 3
flock /tmp/kd_bench.lock python benchmarks/shrink_benchmark.py \\
    --teacher cifar10 --shrink keep0+width0.5 --seeds 3 --epochs 10
flock /tmp/kd_bench.lock python benchmarks/shrink_benchmark.py \\
    --teacher lm --shrink depth1 width0.25 --seeds 3
python benchmarks/shrink_benchmark.py --teacher lm --table
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


# KerasHub widths: spec prefix -> key of shrink's `width` dict.
HUB_WIDTHS = {"ffn": "intermediate_dim", "heads": "num_heads",
              "hidden": "hidden_dim"}


def shrink_arguments(spec):
    kwargs = {}
    for part in spec.split("+"):
        hub = [p for p in HUB_WIDTHS if part.startswith(p)]
        if hub:
            width = kwargs.setdefault("width", {})
            width[HUB_WIDTHS[hub[0]]] = float(part[len(hub[0]):])
        elif part.startswith("width"):
            kwargs["width"] = float(part[5:])
        elif part.startswith("depth"):
            kwargs["depth"] = int(part[5:])
        elif part.startswith("keep"):
            kwargs["keep"] = [int(i) for i in part[4:].split(",")]
        else:
            raise SystemExit("--shrink takes widthF, depthN, keepI,J or, for "
                             "--teacher lm, ffnF, headsF, hiddenF (joined "
                             f"by +), got {spec!r}")
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


# lm_benchmark.py's defaults (its parser lives inside its main()): the
# data, the teacher's file name and the student budget.
LM_DEFAULTS = dict(min_len=32, max_len=128, vocabulary_size=2000,
                   teacher_layers=4, teacher_width=128, teacher_heads=4,
                   teacher_steps=1000, teacher_learning_rate=2e-3)
LM_LABELS = {"random init, alone": "random init, alone (masked CE)",
             "random init, distilled": "random init, distilled (forward KL)",
             "shrunk, fine-tuned on labels":
                 "shrunk, fine-tuned on labels (masked CE)",
             "shrunk + distilled": "shrunk + distilled (forward KL)"}


def lm_arguments(args):
    return argparse.Namespace(
        **LM_DEFAULTS, steps=args.steps, batch_size=args.batch_size,
        learning_rate=args.learning_rate, alpha=args.alpha,
        temperature=args.temperature)


def lm_teacher(lm_args, train, val, vocab_hash):
    import lm_benchmark as lm

    name = (f"lm_gpt2_l{lm_args.teacher_layers}_w{lm_args.teacher_width}_"
            f"s{lm_args.teacher_steps}_v{lm_args.vocabulary_size}_"
            f"{vocab_hash}.keras")
    path = os.path.join(HERE, "results", "teachers", name)
    if not os.path.exists(path):
        raise SystemExit(f"{path} not found: run lm_benchmark.py --rows "
                         "scratch --seeds 0 first")
    teacher, path, _ = lm.cached_teacher(vocab_hash, train, val, lm_args)
    return teacher, path


def lm_importance(train, n, lm_args):
    """The first `n` training chunks, padded to `max_len` tokens."""
    import lm_benchmark as lm

    batches = lm.training_batches(train, 0, -(-n // lm_args.batch_size),
                                  lm_args)
    out = {k: np.zeros((n, lm_args.max_len), "int32")
           for k in ("token_ids", "padding_mask")}
    row = 0
    for x, _, _ in batches:
        for k in out:
            take = min(len(x[k]), n - row)
            out[k][row:row + take, :x[k].shape[1]] = x[k][:take]
        row += len(x["token_ids"])
    return out


def kept_layers(teacher, student):
    """Which teacher transformer layer each student layer was copied from."""
    def query(layer):
        return keras.ops.convert_to_numpy(layer.weights[0])

    old = [query(t) for t in teacher.backbone.transformer_layers]
    return [next((i for i, w in enumerate(old)
                  if w.shape == query(s).shape
                  and np.array_equal(w, query(s))), None)
            for s in student.backbone.transformer_layers]


def train_lm(row, ctx, shrunk, batches, seed):
    """One run with lm_benchmark's own rows (`scratch`, `forward KL`)."""
    import lm_benchmark as lm

    keras.utils.set_random_seed(seed + 1)  # lm_benchmark's student seed
    student = type(shrunk).from_config(shrunk.get_config())  # fresh weights
    if not row.startswith("random"):
        student.set_weights(shrunk.get_weights())
    start = time.perf_counter()
    if row.endswith("distilled"):
        lm.row_forward_kl(ctx, student, batches)
    else:
        lm.row_scratch(ctx, student, batches)
    return student, time.perf_counter() - start


def run_lm(args, rows_run):
    import lm_benchmark as lm

    lm_args = lm_arguments(args)
    train, val_stream, vocab_hash, _ = lm.tokenize(lm_args.vocabulary_size)
    val = lm.validation_batches(val_stream, lm_args)
    teacher, path = lm_teacher(lm_args, train, val, vocab_hash)
    teacher_loss = lm.validation_loss(teacher, val)
    print(f"teacher lm: validation loss {teacher_loss:.4f} (perplexity "
          f"{np.exp(teacher_loss):.1f}), {teacher.count_params():,} "
          "parameters", flush=True)
    ctx = lm.Context(lm_args, teacher)
    data = lm_importance(train, args.importance_samples, lm_args)
    batches = {seed: lm.training_batches(train, seed + 1, args.steps,
                                         lm_args)
               for seed in range(args.seeds)}
    for spec in args.shrink:
        shrunk = shrink(teacher, importance_data=data,
                        **shrink_arguments(spec))
        inherited = lm.validation_loss(shrunk, val)
        kept = kept_layers(teacher, shrunk)
        print(f"{spec}: {shrunk.count_params():,} parameters, layers {kept} "
              f"of the teacher, validation loss {inherited:.4f} before "
              "training", flush=True)
        for row in [r for r in ROWS if r in rows_run]:
            losses, times, rows = [], [], []
            for seed in range(args.seeds):
                student, seconds = train_lm(row, ctx, shrunk, batches[seed],
                                            seed)
                loss = lm.validation_loss(student, val)
                losses.append(loss)
                times.append(seconds)
                rows.append({
                    "benchmark": "shrink", "teacher": "lm", "shrink": spec,
                    "row": row, "seed": seed, "validation_loss": loss,
                    "perplexity": float(np.exp(loss)), "seconds": seconds,
                    "steps": args.steps, "batch_size": args.batch_size,
                    "learning_rate": args.learning_rate,
                    "optimizer": "adam", "alpha": args.alpha,
                    "temperature": args.temperature,
                    "teacher_steps": lm_args.teacher_steps,
                    "teacher_validation_loss": teacher_loss,
                    "teacher_params": teacher.count_params(),
                    "student_params": shrunk.count_params(),
                    "inherited_validation_loss": inherited,
                    "kept_layers": kept,
                    "importance_samples": args.importance_samples,
                    "teacher_file": os.path.basename(path),
                    "vocabulary": f"sentencepiece-unigram-{vocab_hash}",
                    "load_average": os.getloadavg()[0],
                })
                print(f"    seed {seed} {row}: validation loss {loss:.4f} "
                      f"({seconds:.0f} s)", flush=True)
            m, s = bu.mean_std(losses)
            print(f"  {row:30s} {m:.4f} ± {s:.4f}  {np.mean(times):6.1f} s",
                  flush=True)
            bu.write_rows(args.output, rows)


def lm_table(path):
    """The markdown table of the lm rows of `path` (last run per seed)."""
    import json

    runs, info = {}, {}
    with open(path) as f:
        for line in f:
            r = json.loads(line)
            if r.get("teacher") != "lm":
                continue
            runs.setdefault(r["shrink"], {}).setdefault(
                r["row"], {})[r["seed"]] = r
            info[r["shrink"]] = r
    specs = list(runs)
    if not specs:
        return f"no --teacher lm rows in {path}"
    first = info[specs[0]]
    lines = ["| tinyshakespeare, validation loss (perplexity), n seeds, s per "
             "run | " + " | ".join(f"`{s}`" for s in specs) + " |",
             "|---|" + "---|" * len(specs)]
    t = first["teacher_validation_loss"]
    lines.append(f"| teacher ({first['teacher_params']:,} params) | "
                 + " | ".join(f"{t:.3f} ({np.exp(t):.1f})" for _ in specs)
                 + " |")
    def layers(kept):
        if None in kept:  # heads or hidden channels sliced from every layer
            return f"all {len(kept)}, sliced"
        return str(kept)

    lines.append("| student parameters (teacher layers kept) | " + " | ".join(
        f"{info[s]['student_params']:,} ({layers(info[s]['kept_layers'])})"
        for s in specs) + " |")
    lines.append("| shrunk, before any training | " + " | ".join(
        f"{info[s]['inherited_validation_loss']:.3f} "
        f"({np.exp(info[s]['inherited_validation_loss']):.1f})"
        for s in specs) + " |")
    for row in ROWS:
        cells = []
        for s in specs:
            rs = list(runs[s].get(row, {}).values())
            if not rs:
                cells.append("")
                continue
            m, sd = bu.mean_std([r["validation_loss"] for r in rs])
            ppl = bu.mean_std([np.exp(r["validation_loss"]) for r in rs])
            secs = np.mean([r["seconds"] for r in rs])
            cells.append(f"{m:.3f} ± {sd:.3f} ({ppl[0]:.1f} ± {ppl[1]:.1f}),"
                         f" n={len(rs)}, {secs:.0f} s")
        lines.append(f"| {LM_LABELS[row]} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--teacher",
                        choices=("cnn", "resnet", "cifar10", "lm"),
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
    parser.add_argument("--steps", type=int, default=300,
                        help="training steps per run (lm)")
    parser.add_argument("--batch-size", type=int, default=None,
                        help="128, or 16 (lm)")
    parser.add_argument("--learning-rate", type=float, default=None,
                        help="Adam 1e-3 (MNIST), SGD 0.1 (cifar10) or Adam "
                        "2e-3 (lm)")
    parser.add_argument("--alpha", type=float, default=0.5)
    parser.add_argument("--temperature", type=float, default=None,
                        help="4, or 1 (lm)")
    parser.add_argument("--importance-samples", type=int, default=None,
                        help="256 images, or 64 chunks (lm)")
    parser.add_argument("--table", action="store_true",
                        help="print the markdown table of the lm rows of "
                        "--output and exit")
    parser.add_argument("--output", default=os.path.join(
        HERE, "results", "shrink.jsonl"))
    args = parser.parse_args()
    if args.table:
        print(lm_table(args.output))
        return
    cifar, lm = args.teacher == "cifar10", args.teacher == "lm"
    if args.train_size is None:
        args.train_size = 5000 if cifar else 10000
    if args.learning_rate is None:
        args.learning_rate = 0.1 if cifar else 2e-3 if lm else 1e-3
    if args.batch_size is None:
        args.batch_size = 16 if lm else 128
    if args.temperature is None:
        args.temperature = 1.0 if lm else 4.0
    if args.importance_samples is None:
        args.importance_samples = 64 if lm else 256
    rows_run = [r.strip() for r in args.rows.split(";") if r.strip()]
    unknown = sorted(set(rows_run) - set(ROWS))
    if unknown:
        parser.error(f"unknown rows {unknown}; expected some of {list(ROWS)}")
    if lm:
        run_lm(args, rows_run)
        return

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
