"""On-policy distillation on a task with exposure bias: addition as text.

Task: `"a+b="` followed by the digits of `a + b` written least significant
digit first, then an end token, one token per character (`--digits`-digit
operands). A model generates the answer itself, so one wrong digit feeds
the next ones (exposure bias), and success is measured exactly: the exact
match of the greedy completion (up to the end token) on held-out problems
that are not in the training set. Nothing is downloaded.

Models: tiny causal transformers (Keras layers: token + position
embeddings, pre-norm blocks of `MultiHeadAttention(use_causal_mask=True)`
and an MLP). The teacher (`--teacher-layers` blocks of width
`--teacher-width`) is trained once with plain Keras on the training
problems and kept in `results/teachers/`; the student is much smaller.

Rows (`--rows`), for each seed the same student initial weights, the same
prompts per epoch, optimizer and number of steps:
- `scratch`: the student alone, plain `fit` with cross-entropy on the
  answer tokens.
- `forward KL`: `keras_kd.Distiller(alpha=0.5, temperature=1)` (hard loss +
  forward KL) on the data's answers: today's token-level keras_kd.
- `seq-KD`: the same loss on the teacher's own greedy answers
  (`keras_kd.data.on_policy(..., lmbda=0, seq_kd=True, top_k=1)`).
- `on-policy RKL`: `terms=[ReverseKL()]` on the student's own samples
  (`lmbda=1`, sampling temperature 1).
- `GKD`: `terms=[GeneralizedJSD(beta=0.5)]`, half the batches sampled by the
  student (`lmbda=0.5`), the others the data's answers.
- `keras.distillation`: `keras.distillation.Distiller` with its documented
  `LogitsDistillation()` (T=3) and `student_loss_weight=0.5` on the same
  batches; it ignores sample weights, so the answer-only masking is done by
  its student loss (`SparseCategoricalCrossentropy(ignore_class=0)`) and its
  KD loss counts every position.

Each run appends one JSON line per row and seed to
`results/on_policy.jsonl` (exact match, per-token accuracy of the greedy
answer, training wall time); `--table` prints the markdown table.

Run (one benchmark at a time on a shared machine):

```
flock /tmp/kd_bench.lock python benchmarks/on_policy_benchmark.py --seeds 3
python benchmarks/on_policy_benchmark.py --table
```
"""

import argparse
import json
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import benchmark_utils as bu  # noqa: E402

import keras  # noqa: E402

OUTPUT = os.path.join(bu.HERE, "results", "on_policy.jsonl")
PAD, EOS, PLUS, EQUALS, DIGIT0 = 0, 1, 2, 3, 4
VOCAB = 14


# ---------------------------------------------------------------------------
# Data.


def problems(digits, n_train, n_test, seed=0):
    """Disjoint train and test `(a, b)` pairs."""
    rng = np.random.default_rng(seed)
    top = 10 ** digits
    pairs = rng.choice(top * top, size=n_train + n_test, replace=False)
    a, b = pairs // top, pairs % top
    return (a[:n_train], b[:n_train]), (a[n_train:], b[n_train:])


def encode(a, b, digits):
    """Prompt ids `(n, 2 * digits + 2)` and answer ids (reversed sum + EOS)
    as right-padded dicts."""
    def number(v):
        return [DIGIT0 + int(c) for c in str(v).zfill(digits)]

    prompts = np.array([number(x) + [PLUS] + number(y) + [EQUALS]
                        for x, y in zip(a, b)], "int32")
    width = digits + 2
    answers = np.zeros((len(a), width), "int32")
    lengths = np.zeros((len(a),), "int32")
    for i, (x, y) in enumerate(zip(a, b)):
        row = [DIGIT0 + int(c) for c in str(x + y)[::-1]] + [EOS]
        answers[i, :len(row)] = row
        lengths[i] = len(row)
    mask = (np.arange(width)[None] < lengths[:, None]).astype("int32")
    return ({"token_ids": prompts, "padding_mask": np.ones_like(prompts)},
            {"token_ids": answers, "padding_mask": mask})


def training_arrays(prompts, answers):
    """`(ids, labels, sample_weight)`: prompt + answer, labels -1 except
    on the answer."""
    p = prompts["token_ids"]
    a, mask = answers["token_ids"], answers["padding_mask"]
    n, lp = p.shape
    ids = np.concatenate([p, a], axis=1).astype("int32")
    labels = np.full(ids.shape, -1, "int32")
    for i in range(n):
        k = int(mask[i].sum())
        labels[i, lp - 1:lp - 1 + k] = a[i, :k]
    return ids, labels, (labels >= 0).astype("float32")


# ---------------------------------------------------------------------------
# Models.


class Positions(keras.layers.Layer):
    """Adds a learned position embedding."""

    def __init__(self, length, **kwargs):
        super().__init__(**kwargs)
        self.length = length

    def build(self, input_shape):
        self.table = self.add_weight(shape=(self.length, input_shape[-1]),
                                     initializer="random_normal",
                                     name="table")

    def call(self, x):
        n = keras.ops.shape(x)[1]
        return x + self.table[None, :n]

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "length": self.length}


def transformer(layers, width, length, seed, name):
    keras.utils.set_random_seed(seed)
    ids = keras.Input((None,), dtype="int32")
    x = keras.layers.Embedding(VOCAB, width)(ids)
    x = Positions(length)(x)
    heads = max(1, width // 16)
    for _ in range(layers):
        h = keras.layers.LayerNormalization()(x)
        x = x + keras.layers.MultiHeadAttention(heads, width // heads)(
            h, h, use_causal_mask=True)
        h = keras.layers.LayerNormalization()(x)
        h = keras.layers.Dense(2 * width, activation="gelu")(h)
        x = x + keras.layers.Dense(width)(h)
    x = keras.layers.LayerNormalization()(x)
    return keras.Model(ids, keras.layers.Dense(VOCAB)(x), name=name)


def masked_ce():
    return keras.losses.SparseCategoricalCrossentropy(
        from_logits=True, ignore_class=-1)


def exact_match(model, prompts, answers, digits):
    import keras_kd

    out = keras_kd.data.generate(model, prompts, max_new_tokens=digits + 2,
                                 top_k=1, end_token_id=EOS, batch_size=500)
    lp = prompts["token_ids"].shape[1]
    got = out["token_ids"][:, lp:lp + digits + 2]
    truth, mask = answers["token_ids"], answers["padding_mask"].astype(bool)
    same = (got[:, :truth.shape[1]] == truth) | ~mask
    return float(np.mean(same.all(axis=1))), float(
        (same & mask).sum() / mask.sum())


def teacher_for(args, data):
    path = os.path.join(bu.HERE, "results", "teachers",
                        f"addition_d{args.digits}_l{args.teacher_layers}"
                        f"_w{args.teacher_width}_n{args.train}.keras")
    (prompts, answers), (tp, ta) = data
    if os.path.exists(path):
        teacher = keras.saving.load_model(
            path, custom_objects={"Positions": Positions})
    else:
        teacher = transformer(args.teacher_layers, args.teacher_width,
                              args.length, 1000, "teacher")
        ids, labels, _ = training_arrays(prompts, answers)
        teacher.compile(optimizer=keras.optimizers.Adam(
            keras.optimizers.schedules.CosineDecay(
                3e-3, args.teacher_epochs * len(ids) // 64)), loss=masked_ce())
        teacher.fit(ids, labels, batch_size=64, epochs=args.teacher_epochs,
                    verbose=0)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        teacher.save(path)
    return teacher, exact_match(teacher, tp, ta, args.digits)


# ---------------------------------------------------------------------------
# Rows: each trains `student` for `args.epochs` epochs.


def optimizer(args, steps):
    return keras.optimizers.Adam(
        keras.optimizers.schedules.CosineDecay(args.lr, steps))


def row_scratch(args, teacher, student, data, steps):
    ids, labels, _ = training_arrays(*data)
    student.compile(optimizer=optimizer(args, steps), loss=masked_ce())
    student.fit(ids, labels, batch_size=args.batch_size, epochs=args.epochs,
                verbose=0)


def _keras_kd(args, teacher, student, data, steps, **source):
    import keras_kd

    terms = source.pop("terms", None)
    kwargs = {"alpha": 0.5} if terms is None else {"terms": terms}
    d = keras_kd.Distiller(teacher, student, temperature=1.0, **kwargs)
    d.compile(optimizer=optimizer(args, steps))
    if not source:
        ids, labels, weights = training_arrays(*data)
        d.fit(ids, labels, sample_weight=weights, batch_size=args.batch_size,
              epochs=args.epochs, verbose=0)
        return {}
    batches = keras_kd.data.on_policy(
        d, data[0], data[1], batch_size=args.batch_size,
        max_new_tokens=args.digits + 2, end_token_id=EOS, seed=args.seed,
        **source)
    history = d.fit(batches, epochs=args.epochs, verbose=0).history
    return {k: float(np.mean(history[k])) for k in (
        "generation_time", "completion_length", "teacher_log_prob")
        if k in history}


def row_forward_kl(args, teacher, student, data, steps):
    return _keras_kd(args, teacher, student, data, steps)


def row_seq_kd(args, teacher, student, data, steps):
    return _keras_kd(args, teacher, student, data, steps, lmbda=0.0,
                     seq_kd=True, top_k=1)


def row_on_policy_rkl(args, teacher, student, data, steps):
    import keras_kd

    return _keras_kd(args, teacher, student, data, steps, lmbda=1.0,
                     terms=[keras_kd.terms.ReverseKL()])


def row_gkd(args, teacher, student, data, steps):
    import keras_kd

    return _keras_kd(args, teacher, student, data, steps, lmbda=0.5,
                     terms=[keras_kd.terms.GeneralizedJSD(beta=0.5)])


def row_keras_distillation(args, teacher, student, data, steps):
    from keras.distillation import Distiller
    from keras.distillation import LogitsDistillation

    ids, labels, _ = training_arrays(*data)
    d = Distiller(teacher, student, distillation_losses=LogitsDistillation(),
                  student_loss_weight=0.5)
    d.compile(optimizer=optimizer(args, steps),
              loss=keras.losses.SparseCategoricalCrossentropy(
                  from_logits=True, ignore_class=0))
    # Label 0 (padding, never an answer token) marks the positions its
    # student loss skips.
    d.fit(ids, np.maximum(labels, 0), batch_size=args.batch_size,
          epochs=args.epochs, verbose=0)


ROWS = {
    "scratch": row_scratch,
    "forward KL": row_forward_kl,
    "seq-KD": row_seq_kd,
    "on-policy RKL": row_on_policy_rkl,
    "GKD": row_gkd,
    "keras.distillation": row_keras_distillation,
}
LABELS = {
    "scratch": "student alone (data)",
    "forward KL": "forward KL + CE on the data (keras_kd, off-policy)",
    "seq-KD": "seq-KD: forward KL + CE on the teacher's greedy answers",
    "on-policy RKL": "on-policy reverse KL (`lmbda=1`)",
    "GKD": "GKD: JSD(0.5), `lmbda=0.5`",
    "keras.distillation": "keras.distillation (documented default)",
}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", default=",".join(ROWS))
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--digits", type=int, default=3)
    parser.add_argument("--train", type=int, default=4000)
    parser.add_argument("--test", type=int, default=500)
    parser.add_argument("--teacher-layers", type=int, default=2)
    parser.add_argument("--teacher-width", type=int, default=64)
    parser.add_argument("--teacher-epochs", type=int, default=40)
    parser.add_argument("--student-layers", type=int, default=1)
    parser.add_argument("--student-width", type=int, default=32)
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--output", default=OUTPUT)
    parser.add_argument("--table", action="store_true")
    args = parser.parse_args(argv)
    if args.table:
        print(table(args.output))
        return 0
    args.length = 3 * args.digits + 4
    (a, b), (ta, tb) = problems(args.digits, args.train, args.test)
    data = (encode(a, b, args.digits), encode(ta, tb, args.digits))
    start = time.perf_counter()
    teacher, (t_em, t_tok) = teacher_for(args, data)
    print(f"teacher exact match {t_em:.3f} (token {t_tok:.3f}), "
          f"{time.perf_counter() - start:.0f} s", flush=True)
    load = os.getloadavg()
    steps = args.epochs * -(-args.train // args.batch_size)
    results = []
    for name in args.rows.split(","):
        for seed in range(args.seeds):
            keras.backend.clear_session()
            args.seed = seed
            student = transformer(args.student_layers, args.student_width,
                                  args.length, seed, "student")
            keras.utils.set_random_seed(seed)
            start = time.perf_counter()
            extra = ROWS[name](args, teacher, student, data[0], steps) or {}
            seconds = time.perf_counter() - start
            em, tok = exact_match(student, *data[1], args.digits)
            row = {"row": name, "seed": seed, "exact_match": em,
                   "token_accuracy": tok, "train_seconds": seconds,
                   "teacher_exact_match": t_em, "digits": args.digits,
                   "train": args.train, "test": args.test,
                   "epochs": args.epochs, "steps": steps,
                   "student": f"{args.student_layers}x{args.student_width}",
                   "teacher": f"{args.teacher_layers}x{args.teacher_width}",
                   "load_before": [round(v, 2) for v in load],
                   "load_after": [round(v, 2) for v in os.getloadavg()],
                   **extra}
            print(json.dumps(row), flush=True)
            results.append(row)
        bu.write_rows(args.output, [r for r in results if r["row"] == name])
    print(table(args.output))
    return 0


def table(path):
    with open(path) as f:
        rows = [json.loads(line) for line in f if line.strip()]
    lines = ["| Row | Exact match | Token accuracy | Train time (s) |",
             "|---|---|---|---|"]
    for name in ROWS:
        mine = [r for r in rows if r["row"] == name]
        if not mine:
            continue
        em = bu.mean_std([r["exact_match"] for r in mine])
        tok = bu.mean_std([r["token_accuracy"] for r in mine])
        sec = bu.mean_std([r["train_seconds"] for r in mine])
        lines.append(
            f"| {LABELS[name]} | {em[0]:.3f} ± {em[1]:.3f} (n={len(mine)}) "
            f"| {tok[0]:.3f} ± {tok[1]:.3f} | {sec[0]:.0f} ± {sec[1]:.0f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
