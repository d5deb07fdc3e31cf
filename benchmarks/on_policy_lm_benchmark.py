"""On-policy distillation of a language model on tinyshakespeare.

The rows of `on_policy_benchmark.py` (addition as text) on real text, with
the GPT-2 pair of `lm_benchmark.py`: its SentencePiece vocabulary of 2,000
pieces trained on the first 90 % of `../shared/data/tinyshakespeare.txt`, its
cached teacher (`keras_hub.models.GPT2CausalLM`, 4 blocks of width 128,
1,000 steps, in `results/teachers/`; train it with `lm_benchmark.py` first)
and its student (1 block of width 64, 2 heads). Nothing is downloaded.

Data: each token stream is cut into consecutive, non-overlapping pieces of
`--prompt-length + --completion-length` tokens (32 + 16 by default:
generation recomputes the whole sequence per new token, and 32 new tokens
from the teacher cost about 25 of its forward passes per batch on CPU); the
first part is the prompt, the rest the completion, both right-padded dicts
`{"token_ids", "padding_mask"}` (KerasHub's layout). For each seed a seeded
draw of `--steps * --batch-size` training pairs is used, in the same order
by every row (one epoch, no reshuffling), so every row makes the same number
of steps on the same prompts. Only the completion tokens count in every
loss (the prompt is masked as padding is).

Rows (`--rows`), for each seed the same student initial weights, prompts,
optimizer (Adam, `--learning-rate`) and steps:
- `scratch`: the student alone, plain `fit` with the masked cross-entropy on
  the data's completions.
- `forward KL`: `keras_kd.Distiller(alpha=0.5, temperature=1)` (hard loss +
  forward KL) on the data's completions: today's token-level keras_kd.
- `seq-KD`: the same loss on the teacher's own completions
  (`keras_kd.data.on_policy(..., lmbda=0, seq_kd=True)`), sampled at
  temperature 1 (`--seq-kd-top-k 1` for greedy, as the addition benchmark;
  greedy text from this teacher loops).
- `on-policy RKL`: `terms=[ReverseKL()]` on the student's own samples
  (`lmbda=1`, temperature 1).
- `GKD`: `terms=[GeneralizedJSD(beta=0.5)]`, half the batches sampled by the
  student (`lmbda=0.5`), the others the data's completions.
- `keras.distillation`: `keras.distillation.Distiller` with its documented
  `LogitsDistillation()` (T=3) and `student_loss_weight=0.5` on the same
  prompt + completion batches; it ignores sample weights, so its student
  loss skips the prompt through `ignore_class=-1` and its KD loss counts
  every position.

Metrics, on held-out pairs cut from the validation stream (the last 10 % of
the text): `validation_loss`, the cross-entropy of the completion tokens
given their prompts (real tokens only); `teacher_log_prob`, the teacher's
mean log-probability per token of the completions the trained student
samples from the validation prompts (temperature 1, a fixed seed), and
`teacher_log_prob_greedy` for its greedy completions; `distinct_2`, the
share of distinct bigrams among the sampled completions (a mode-seeking
student can please the teacher by repeating itself). A `teacher` reference
row holds the teacher's own numbers. Also recorded: training wall time,
the on-policy logs of `fit` (generation time per batch, tokens generated,
the teacher's log-probability of the student's training samples) and the
load average. Each run appends one JSON line per row and seed to
`results/on_policy_lm.jsonl`; `--table` prints the markdown table.

Run (one benchmark at a time on a shared machine):

```
flock /tmp/kd_bench.lock python benchmarks/lm_benchmark.py --rows scratch \
    --seeds 1   # trains and caches the teacher once, if missing
flock /tmp/kd_bench.lock python benchmarks/on_policy_lm_benchmark.py --seeds 3
python benchmarks/on_policy_lm_benchmark.py --table
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
import lm_benchmark as lm  # noqa: E402

import keras  # noqa: E402

OUTPUT = os.path.join(bu.HERE, "results", "on_policy_lm.jsonl")
SAMPLE_SEED = 2024  # The uniforms of the evaluation samples.
ON_POLICY_LOGS = ("generation_time", "tokens_generated", "completion_length",
                  "teacher_log_prob")


# ---------------------------------------------------------------------------
# Data.


def _on_policy_module():
    """`keras_kd.data.on_policy` the module (the package attribute of that
    name is the function)."""
    import importlib

    return importlib.import_module("keras_kd.data.on_policy")


def pairs(stream, prompt_length, completion_length):
    """Consecutive prompt/completion pairs as right-padded dicts (all rows
    full length: the padding masks are ones)."""
    size = prompt_length + completion_length
    n = len(stream) // size
    pieces = stream[:n * size].reshape(n, size).astype("int32")
    prompts, completions = pieces[:, :prompt_length], pieces[:, prompt_length:]
    return ({"token_ids": prompts, "padding_mask": np.ones_like(prompts)},
            {"token_ids": completions,
             "padding_mask": np.ones_like(completions)})


def subset(data, rows):
    return tuple({k: v[rows] for k, v in part.items()} for part in data)


def rows_of(part):
    """The list of 1-D token arrays of a right-padded dict."""
    lengths = part["padding_mask"].sum(axis=1)
    return [part["token_ids"][i, :n] for i, n in enumerate(lengths)]


def training_arrays(prompts, completions):
    """`(x, labels, sample_weight)` as `keras_kd.data.on_policy` builds its
    data batches: prompt + completion, labels the next completion token,
    -1 (weight 0) elsewhere."""
    op = _on_policy_module()

    p, c = rows_of(prompts), rows_of(completions)
    length = max(len(a) for a in p) + max(len(b) for b in c)
    ids, mask, labels, weights = op.assemble(p, c, length)
    return {"token_ids": ids, "padding_mask": mask}, labels, weights


# ---------------------------------------------------------------------------
# Evaluation.


def log_softmax(logits):
    logits = np.asarray(logits, "float64")
    logits = logits - logits.max(-1, keepdims=True)
    return logits - np.log(np.exp(logits).sum(-1, keepdims=True))


def completion_log_prob(model, x, labels, batch_size=128):
    """Sum of the model's log-probabilities of the labels != -1, count."""
    total, count = 0.0, 0.0
    for i in range(0, len(labels), batch_size):
        part = {k: v[i:i + batch_size] for k, v in x.items()}
        y = labels[i:i + batch_size]
        lp = log_softmax(model.predict_on_batch(part))
        picked = np.take_along_axis(lp, np.maximum(y, 0)[..., None], -1)[
            ..., 0]
        total += float((picked * (y >= 0)).sum())
        count += float((y >= 0).sum())
    return total, count


def validation_loss(model, val):
    x, labels, _ = training_arrays(*val)
    total, count = completion_log_prob(model, x, labels)
    return -total / count


def samples(model, prompts, args, greedy):
    """`(x, labels)` of the model's completions of `prompts` (labels: the
    completion tokens, -1 elsewhere)."""
    import keras_kd
    op = _on_policy_module()

    out = keras_kd.data.generate(
        model, prompts, max_new_tokens=args.completion_length,
        temperature=1.0, top_k=1 if greedy else None, seed=SAMPLE_SEED,
        batch_size=128)
    ids = out["token_ids"]
    mask, labels, _ = op.masks(out["prompt_length"], out["completion_length"],
                               ids.shape[1])
    labels = op.next_tokens(ids, labels)
    return {"token_ids": ids, "padding_mask": mask}, labels


def distinct_2(labels):
    """Share of distinct bigrams among the completions' bigrams."""
    grams, total = set(), 0
    for row in labels:
        toks = row[row >= 0]
        for a, b in zip(toks[:-1], toks[1:]):
            grams.add((int(a), int(b)))
            total += 1
    return len(grams) / max(total, 1)


def evaluate(model, teacher, val, sample_prompts, args):
    start = time.perf_counter()
    out = {"validation_loss": validation_loss(model, val)}
    for name, greedy in (("", False), ("_greedy", True)):
        x, labels = samples(model, sample_prompts, args, greedy)
        total, count = completion_log_prob(teacher, x, labels)
        out[f"teacher_log_prob{name}"] = total / count
        out[f"distinct_2{name}"] = distinct_2(labels)
    out["eval_seconds"] = time.perf_counter() - start
    return out


# ---------------------------------------------------------------------------
# Rows: each trains `student` on `data` (one epoch of `args.steps` batches).


def optimizer(args):
    return keras.optimizers.Adam(args.learning_rate)


def row_scratch(args, teacher, student, data):
    x, labels, weights = training_arrays(*data)
    student.compile(optimizer=optimizer(args), loss=lm.masked_ce())
    student.fit(x, np.maximum(labels, 0), sample_weight=weights,
                batch_size=args.batch_size, epochs=1, shuffle=False,
                verbose=0)


def _keras_kd(args, teacher, student, data, **source):
    import keras_kd

    terms = source.pop("terms", None)
    kwargs = {"alpha": 0.5} if terms is None else {"terms": terms}
    d = keras_kd.Distiller(teacher, student, temperature=1.0, **kwargs)
    d.compile(optimizer=optimizer(args))
    if not source:
        x, labels, weights = training_arrays(*data)
        d.fit(x, labels, sample_weight=weights, batch_size=args.batch_size,
              epochs=1, shuffle=False, verbose=0)
        return {}
    completions = data[1] if source.get("lmbda", 0) < 1 and not source.get(
        "seq_kd") else None
    batches = keras_kd.data.on_policy(
        d, data[0], completions, batch_size=args.batch_size,
        max_new_tokens=args.completion_length, seed=args.seed,
        shuffle=False, **source)
    history = d.fit(batches, epochs=1, verbose=0).history
    return {f"fit_{k}": float(history[k][-1]) for k in ON_POLICY_LOGS
            if k in history}


def row_forward_kl(args, teacher, student, data):
    return _keras_kd(args, teacher, student, data)


def row_seq_kd(args, teacher, student, data):
    return _keras_kd(args, teacher, student, data, lmbda=0.0, seq_kd=True,
                     top_k=args.seq_kd_top_k)


def row_on_policy_rkl(args, teacher, student, data):
    import keras_kd

    return _keras_kd(args, teacher, student, data, lmbda=1.0,
                     terms=[keras_kd.terms.ReverseKL()])


def row_gkd(args, teacher, student, data):
    import keras_kd

    return _keras_kd(args, teacher, student, data, lmbda=0.5,
                     terms=[keras_kd.terms.GeneralizedJSD(beta=0.5)])


def row_keras_distillation(args, teacher, student, data):
    from keras.distillation import Distiller
    from keras.distillation import LogitsDistillation

    x, labels, _ = training_arrays(*data)
    d = Distiller(teacher, student, distillation_losses=LogitsDistillation(),
                  student_loss_weight=0.5)
    d.compile(optimizer=optimizer(args),
              loss=keras.losses.SparseCategoricalCrossentropy(
                  from_logits=True, ignore_class=-1))
    d.fit(x, labels, batch_size=args.batch_size, epochs=1, shuffle=False,
          verbose=0)


ROWS = {
    "scratch": row_scratch,
    "forward KL": row_forward_kl,
    "seq-KD": row_seq_kd,
    "on-policy RKL": row_on_policy_rkl,
    "GKD": row_gkd,
    "keras.distillation": row_keras_distillation,
}
LABELS = {
    "teacher": "teacher (reference, 4x128)",
    "scratch": "student alone (CE on the data)",
    "forward KL": "forward KL + CE on the data (keras_kd, off-policy)",
    "seq-KD": "seq-KD: forward KL + CE on the teacher's samples",
    "on-policy RKL": "on-policy reverse KL (`lmbda=1`)",
    "GKD": "GKD: JSD(0.5), `lmbda=0.5`",
    "keras.distillation": "keras.distillation (documented default)",
}


# ---------------------------------------------------------------------------


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", default=",".join(ROWS),
                        help=f"comma-separated, some of {list(ROWS)}")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--first-seed", type=int, default=0)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--prompt-length", type=int, default=32)
    parser.add_argument("--completion-length", type=int, default=16)
    parser.add_argument("--validation-pairs", type=int, default=512)
    parser.add_argument("--sample-prompts", type=int, default=256)
    parser.add_argument("--learning-rate", type=float, default=2e-3)
    parser.add_argument("--seq-kd-top-k", type=int, default=None)
    parser.add_argument("--output", default=OUTPUT)
    parser.add_argument("--table", action="store_true",
                        help="print the markdown table of --output and exit")
    args = parser.parse_args(argv)
    if args.table:
        print(table(args.output))
        return 0
    rows = [r.strip() for r in args.rows.split(",") if r.strip()]
    unknown = [r for r in rows if r not in ROWS]
    if unknown:
        parser.error(f"unknown rows {unknown}; expected some of {list(ROWS)}")
    # lm_benchmark's defaults: its teacher file and its student.
    lm_args = argparse.Namespace(
        batch_size=16, min_len=32, max_len=128, vocabulary_size=2000,
        student_layers=1, student_width=64, student_heads=2,
        teacher_layers=4, teacher_width=128, teacher_heads=4,
        teacher_steps=1000, teacher_learning_rate=2e-3)
    if args.prompt_length + args.completion_length > lm_args.max_len:
        parser.error(f"--prompt-length + --completion-length must be at most "
                     f"{lm_args.max_len}")

    t0 = time.time()
    train, val_stream, vocab_hash, _ = lm.tokenize(lm_args.vocabulary_size)
    name = (f"lm_gpt2_l{lm_args.teacher_layers}_w{lm_args.teacher_width}_"
            f"s{lm_args.teacher_steps}_v{lm_args.vocabulary_size}_"
            f"{vocab_hash}.keras")
    if not os.path.exists(os.path.join(bu.HERE, "results", "teachers", name)):
        raise SystemExit(
            f"The teacher results/teachers/{name} is missing. Train it once "
            "with: python benchmarks/lm_benchmark.py --rows scratch --seeds 1")
    teacher, teacher_path, _ = lm.cached_teacher(vocab_hash, train, None,
                                                 lm_args)
    train_pairs = pairs(train, args.prompt_length, args.completion_length)
    val = subset(pairs(val_stream, args.prompt_length,
                       args.completion_length),
                 np.arange(args.validation_pairs))
    sample_prompts = {k: v[:args.sample_prompts] for k, v in val[0].items()}
    n_train = args.steps * args.batch_size
    if n_train > len(train_pairs[0]["token_ids"]):
        parser.error(f"--steps * --batch-size must be at most "
                     f"{len(train_pairs[0]['token_ids'])} (one epoch)")
    print(f"vocabulary {vocab_hash}: {len(train_pairs[0]['token_ids'])} "
          f"training pairs, {len(val[0]['token_ids'])} validation pairs "
          f"({time.time() - t0:.0f}s)", flush=True)
    common = {"benchmark": "on_policy_lm", "steps": args.steps,
              "batch_size": args.batch_size,
              "prompt_length": args.prompt_length,
              "completion_length": args.completion_length,
              "learning_rate": args.learning_rate,
              "validation_pairs": args.validation_pairs,
              "sample_prompts": args.sample_prompts,
              "seq_kd_top_k": args.seq_kd_top_k,
              "teacher_file": os.path.basename(teacher_path),
              "teacher": "gpt2 4x128", "student": "gpt2 1x64",
              "vocabulary": f"sentencepiece-unigram-{vocab_hash}"}
    reference = evaluate(teacher, teacher, val, sample_prompts, args)
    print(f"teacher {json.dumps(reference)}", flush=True)
    bu.write_rows(args.output, [{
        **common, "row": "teacher", "seed": None, **reference,
        "load_average": [round(v, 2) for v in os.getloadavg()]}])

    for seed in range(args.first_seed, args.first_seed + args.seeds):
        order = np.random.default_rng(seed + 1).permutation(
            len(train_pairs[0]["token_ids"]))[:n_train]
        data = subset(train_pairs, order)
        for name in rows:
            keras.backend.clear_session()
            args.seed = seed
            student = lm.new_student(lm_args, seed + 1)
            keras.utils.set_random_seed(seed)
            load = os.getloadavg()
            start = time.perf_counter()
            extra = ROWS[name](args, teacher, student, data) or {}
            seconds = time.perf_counter() - start
            metrics = evaluate(student, teacher, val, sample_prompts, args)
            row = {**common, "row": name, "seed": seed,
                   "train_seconds": seconds, **metrics, **extra,
                   "student_parameters": student.count_params(),
                   "load_before": [round(v, 2) for v in load],
                   "load_after": [round(v, 2) for v in os.getloadavg()]}
            print(json.dumps(row), flush=True)
            bu.write_rows(args.output, [row])
    print(table(args.output))
    return 0


def table(path):
    """The markdown table of `path` (the last run of each row and seed)."""
    runs, teacher = {}, None
    with open(path) as f:
        for line in f:
            r = json.loads(line)
            if r["row"] == "teacher":
                teacher = r
            else:
                runs.setdefault(r["row"], {})[r["seed"]] = r
    lines = ["| Row | Validation loss | Teacher log-prob of samples (T=1) "
             "| ... greedy | distinct-2 (T=1) | Train time (s) | n |",
             "|---|---|---|---|---|---|---|"]
    if teacher is not None:
        lines.append(
            f"| {LABELS['teacher']} | {teacher['validation_loss']:.3f} | "
            f"{teacher['teacher_log_prob']:.3f} | "
            f"{teacher['teacher_log_prob_greedy']:.3f} | "
            f"{teacher['distinct_2']:.3f} | | |")
    for name in ROWS:
        if name not in runs:
            continue
        rs = list(runs[name].values())
        cells = []
        for key, digits in (("validation_loss", 3), ("teacher_log_prob", 3),
                            ("teacher_log_prob_greedy", 3),
                            ("distinct_2", 3), ("train_seconds", 0)):
            m, s = bu.mean_std([r[key] for r in rs])
            cells.append(f"{m:.{digits}f} ± {s:.{digits}f}")
        lines.append(f"| {LABELS[name]} | " + " | ".join(cells)
                     + f" | {len(rs)} |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
