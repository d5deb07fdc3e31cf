"""Language-model distillation on tinyshakespeare: token-level KD with
padding, KerasHub GPT-2 causal LMs built from configs.

Data: `../shared/data/tinyshakespeare.txt`, split by position (the first 90 %
of the characters for training, the last 10 % for validation). A SentencePiece
unigram vocabulary of 2,000 pieces is trained on the training part only with
`keras_hub.tokenizers.compute_sentence_piece_proto` (nothing is downloaded);
each line is tokenized and followed by the end-of-sequence id, which serves as
the newline token. The token stream is cut into chunks of random lengths
(`--min-len`..`--max-len` tokens, seeded), each batch is padded to its longest
chunk, and a batch is `({"token_ids", "padding_mask"}, labels, sample_weight)`
with labels the next token and `sample_weight` the padding mask of shape
`[batch, sequence]` (what `keras_hub.models.CausalLMPreprocessor` returns).

Models: a GPT-2 teacher (`--teacher-layers` blocks, width `--teacher-width`)
trained once with plain Keras on the same kind of batches and kept in
`results/teachers/` (its file name carries a hash of the vocabulary), and a much
smaller GPT-2 student. Both are `keras_hub.models.GPT2CausalLM(backbone,
preprocessor=None)` returning `[batch, sequence, vocabulary]` logits.

Rows (`--rows`), for each seed the same student initial weights, optimizer,
steps and batches:
- `scratch`: the student alone, plain `fit` with masked next-token
  cross-entropy (`reduction="mean_with_sample_weight"`).
- `keras.distillation`: `keras.distillation.Distiller` with
  `LogitsDistillation()` at its documented default (`"kl_divergence"`, T=3)
  and `student_loss_weight=0.5`; it ignores `sample_weight`, so padded
  positions count in both of its losses.
- `keras.distillation KL`: the same with a correct KL
  (`loss=keras.losses.KLDivergence()`, T=`--temperature`), to separate the
  cost of padding from the cost of the default loss.
- `forward KL`, `reverse KL`, `JSD` (beta 0.5), `skew KL` (skew 0.1):
  `keras_kd.Distiller(alpha=--alpha, temperature=--temperature)` with
  `HardLoss()` and the matching token term, masked by the sample weight.
- `top-8`, `top-32`, `top-128`: forward KL trained from
  `keras_kd.data.cache_teacher_outputs(..., top_k=k)` instead of the live
  teacher.

Validation loss is the masked token cross-entropy averaged over the real
tokens of the whole validation split (computed here in NumPy from the
student's logits), perplexity its exponential. Each run appends one JSON line
to `results/lm.jsonl`; `--table` prints the markdown table from that file.

Run:

```
python benchmarks/lm_benchmark.py --rows scratch,keras.distillation --seeds 3
python benchmarks/lm_benchmark.py --rows "forward KL,reverse KL,JSD" --seeds 3
python benchmarks/lm_benchmark.py --rows top-8,top-32,top-128 --seeds 3
python benchmarks/lm_benchmark.py --table
```
"""

import argparse
import hashlib
import json
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import benchmark_utils as bu  # noqa: E402

import keras  # noqa: E402

TEXT = os.path.join(bu.HERE, "..", "..", "shared", "data",
                    "tinyshakespeare.txt")
OUTPUT = os.path.join(bu.HERE, "results", "lm.jsonl")
EOL = 3  # SentencePiece's end-of-sequence id, used as the newline token.
VALIDATION_SEED = 12345


# ---------------------------------------------------------------------------
# Data.


def tokenize(vocabulary_size):
    """Trains the vocabulary on the training part; returns the two streams."""
    import keras_hub
    import tensorflow as tf

    with open(TEXT, encoding="utf-8") as f:
        text = f.read()
    cut = int(0.9 * len(text))
    train, validation = text[:cut], text[cut:]
    lines = [line for line in train.split("\n") if line.strip()]
    proto = keras_hub.tokenizers.compute_sentence_piece_proto(
        tf.data.Dataset.from_tensor_slices(lines),
        vocabulary_size=vocabulary_size, model_type="unigram")
    tokenizer = keras_hub.tokenizers.SentencePieceTokenizer(proto=proto)

    def stream(part):
        ids = tokenizer(part.split("\n"))
        ids = ids.to_list() if hasattr(ids, "to_list") else ids
        out = []
        for line in ids:
            out.extend(int(i) for i in line)
            out.append(EOL)
        return np.asarray(out, dtype="int32")

    vocab_hash = hashlib.sha256(proto).hexdigest()[:10]
    return stream(train), stream(validation), vocab_hash, tokenizer


def chunks(stream, rng, min_len, max_len):
    """Cuts a token stream into consecutive chunks of random lengths.

    A chunk of `n + 1` tokens gives `n` inputs and `n` next-token labels.
    """
    out, start = [], 0
    while start + min_len + 1 <= len(stream):
        n = int(rng.integers(min_len, max_len + 1))
        piece = stream[start:start + n + 1]
        out.append(piece)
        start += len(piece) - 1
    return out


def pad_batch(pieces):
    """Pads to the longest piece: (x dict, labels, sample_weight)."""
    length = max(len(p) for p in pieces) - 1
    ids = np.zeros((len(pieces), length), "int32")
    labels = np.zeros((len(pieces), length), "int32")
    mask = np.zeros((len(pieces), length), "int32")
    for i, p in enumerate(pieces):
        n = len(p) - 1
        ids[i, :n], labels[i, :n], mask[i, :n] = p[:-1], p[1:], 1
    x = {"token_ids": ids, "padding_mask": mask}
    return x, labels, mask.astype("float32")


def training_batches(stream, seed, steps, args):
    """`steps` padded batches, the same for every row of a seed."""
    rng = np.random.default_rng(seed)
    batches = []
    while len(batches) < steps:
        pieces = chunks(stream, rng, args.min_len, args.max_len)
        order = rng.permutation(len(pieces))
        for i in range(0, len(order) - args.batch_size + 1, args.batch_size):
            batches.append(pad_batch([pieces[j] for j in
                                      order[i:i + args.batch_size]]))
            if len(batches) == steps:
                break
    return batches


def validation_batches(stream, args):
    rng = np.random.default_rng(VALIDATION_SEED)
    pieces = chunks(stream, rng, args.min_len, args.max_len)
    return [pad_batch(pieces[i:i + args.batch_size])
            for i in range(0, len(pieces), args.batch_size)]


def dataset(batches, with_weights=True):
    """A `tf.data.Dataset` yielding the precomputed, variable-length batches."""
    import tensorflow as tf

    def gen():
        for x, y, w in batches:
            yield (x, y, w) if with_weights else (x, y)

    spec = ({"token_ids": tf.TensorSpec((None, None), tf.int32),
             "padding_mask": tf.TensorSpec((None, None), tf.int32)},
            tf.TensorSpec((None, None), tf.int32))
    if with_weights:
        spec = spec + (tf.TensorSpec((None, None), tf.float32),)
    return tf.data.Dataset.from_generator(gen, output_signature=spec)


# ---------------------------------------------------------------------------
# Models and evaluation.


def gpt2(vocabulary_size, layers, width, heads, max_len, name):
    import keras_hub

    backbone = keras_hub.models.GPT2Backbone(
        vocabulary_size=vocabulary_size, num_layers=layers, num_heads=heads,
        hidden_dim=width, intermediate_dim=4 * width,
        max_sequence_length=max_len, name=f"{name}_backbone")
    return keras_hub.models.GPT2CausalLM(backbone, preprocessor=None,
                                         name=name)


def masked_ce():
    return keras.losses.SparseCategoricalCrossentropy(
        from_logits=True, reduction="mean_with_sample_weight")


def validation_loss(model, batches):
    """Token cross-entropy averaged over the real tokens of all batches."""
    total, count = 0.0, 0.0
    for x, y, w in batches:
        logits = np.asarray(model.predict_on_batch(x), "float64")
        logits -= logits.max(-1, keepdims=True)
        log_z = np.log(np.exp(logits).sum(-1))
        picked = np.take_along_axis(logits, y[..., None], -1)[..., 0]
        total += float(((log_z - picked) * w).sum())
        count += float(w.sum())
    return total / count


def cached_teacher(vocab_hash, stream, val, args):
    """Trains the teacher once; later runs load it from results/teachers."""
    name = (f"lm_gpt2_l{args.teacher_layers}_w{args.teacher_width}_"
            f"s{args.teacher_steps}_v{args.vocabulary_size}_{vocab_hash}.keras")
    path = os.path.join(bu.HERE, "results", "teachers", name)
    if os.path.exists(path):
        import keras_hub  # noqa: F401 (registers the classes)

        return keras.saving.load_model(path), path, None
    keras.utils.set_random_seed(0)
    teacher = gpt2(args.vocabulary_size, args.teacher_layers,
                   args.teacher_width, args.teacher_heads, args.max_len,
                   "teacher")
    teacher.compile(optimizer=keras.optimizers.Adam(
        keras.optimizers.schedules.CosineDecay(
            args.teacher_learning_rate, args.teacher_steps, alpha=0.1)),
        loss=masked_ce())
    batches = training_batches(stream, 0, args.teacher_steps, args)
    t0 = time.time()
    teacher.fit(dataset(batches), epochs=1, verbose=2)
    seconds = time.time() - t0
    print(f"teacher trained in {seconds:.0f}s, validation loss "
          f"{validation_loss(teacher, val):.4f}", flush=True)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    teacher.save(path)
    return teacher, path, seconds


def new_student(args, seed):
    keras.utils.set_random_seed(seed)
    return gpt2(args.vocabulary_size, args.student_layers,
                args.student_width, args.student_heads, args.max_len,
                "student")


def optimizer(args):
    return keras.optimizers.Adam(args.learning_rate)


# ---------------------------------------------------------------------------
# Rows: each trains a fresh student on `batches` and returns it.


def row_scratch(ctx, student, batches):
    student.compile(optimizer=optimizer(ctx.args), loss=masked_ce())
    student.fit(dataset(batches), epochs=1, verbose=0)


def _keras_distillation(ctx, student, batches, loss):
    from keras.distillation import Distiller
    from keras.distillation import LogitsDistillation

    distillation = LogitsDistillation() if loss is None else \
        LogitsDistillation(temperature=ctx.args.temperature, loss=loss)
    d = Distiller(ctx.teacher, student, distillation_losses=distillation,
                  student_loss_weight=0.5)
    d.compile(optimizer=optimizer(ctx.args),
              loss=keras.losses.SparseCategoricalCrossentropy(
                  from_logits=True))
    # The sample weight is passed as to any Keras model; keras.distillation's
    # compute_loss does not use it.
    d.fit(dataset(batches), epochs=1, verbose=0)


def row_keras_distillation(ctx, student, batches):
    _keras_distillation(ctx, student, batches, None)


def row_keras_distillation_kl(ctx, student, batches):
    _keras_distillation(ctx, student, batches, keras.losses.KLDivergence())


def _keras_kd(ctx, student, batches, term=None):
    import keras_kd

    terms = None if term is None else [keras_kd.HardLoss(), term]
    d = keras_kd.Distiller(ctx.teacher, student, alpha=ctx.args.alpha,
                           temperature=ctx.args.temperature, terms=terms)
    d.compile(optimizer=optimizer(ctx.args))
    d.fit(dataset(batches), epochs=1, verbose=0)


def _top_k(ctx, student, batches, k):
    """Forward KL from the teacher's top-k cache of these very batches.

    All chunks are padded to `--max-len` for the cache (it takes arrays of
    one shape), in batch order; each cached batch is then cut back to its
    longest chunk, so the student sees the batches of the other rows. The
    time of the row includes filling the cache.
    """
    import keras_kd
    import tensorflow as tf

    def padded(part):
        out = np.zeros((len(batches) * ctx.args.batch_size, ctx.args.max_len),
                       part[0].dtype)
        for i, b in enumerate(part):
            rows = slice(i * ctx.args.batch_size, (i + 1) * ctx.args.batch_size)
            out[rows, :b.shape[1]] = b
        return out

    x = {key: padded([b[0][key] for b in batches])
         for key in ("token_ids", "padding_mask")}
    y = padded([b[1] for b in batches])
    w = padded([b[2] for b in batches])
    d = keras_kd.Distiller(ctx.teacher, student, alpha=ctx.args.alpha,
                           temperature=ctx.args.temperature)
    d.compile(optimizer=optimizer(ctx.args))
    cache = keras_kd.data.cache_teacher_outputs(d, x, top_k=k, batch_size=64,
                                                verbose=0)

    def trim(x, targets, w):
        n = tf.reduce_max(tf.reduce_sum(tf.cast(w > 0, "int32"), axis=1))
        return ({key: v[:, :n] for key, v in x.items()},
                {key: v[:, :n] for key, v in targets.items()}, w[:, :n])

    ds = cache.dataset(x, y, batch_size=ctx.args.batch_size, shuffle=False,
                       distiller=d, sample_weight=w).map(trim)
    d.fit(ds, epochs=1, verbose=0)


def row_forward_kl(ctx, student, batches):
    _keras_kd(ctx, student, batches)


def row_reverse_kl(ctx, student, batches):
    import keras_kd

    _keras_kd(ctx, student, batches, keras_kd.terms.ReverseKL())


def row_jsd(ctx, student, batches):
    import keras_kd

    _keras_kd(ctx, student, batches, keras_kd.terms.GeneralizedJSD(beta=0.5))


def row_skew_kl(ctx, student, batches):
    import keras_kd

    _keras_kd(ctx, student, batches, keras_kd.terms.SkewKL(skew=0.1))


def _top_k_row(k):
    def row(ctx, student, batches):
        _top_k(ctx, student, batches, k)
    return row


ROWS = {
    "scratch": row_scratch,
    "keras.distillation": row_keras_distillation,
    "keras.distillation KL": row_keras_distillation_kl,
    "forward KL": row_forward_kl,
    "reverse KL": row_reverse_kl,
    "JSD": row_jsd,
    "skew KL": row_skew_kl,
    "top-8": _top_k_row(8),
    "top-32": _top_k_row(32),
    "top-128": _top_k_row(128),
}

LABELS = {
    "scratch": "student alone (masked CE)",
    "keras.distillation": "keras.distillation, documented default",
    "keras.distillation KL": "keras.distillation, KL loss",
    "forward KL": "keras_kd forward KL",
    "reverse KL": "keras_kd reverse KL",
    "JSD": "keras_kd JSD (beta 0.5)",
    "skew KL": "keras_kd skew KL (0.1)",
    "top-8": "keras_kd forward KL, top-8 cache",
    "top-32": "keras_kd forward KL, top-32 cache",
    "top-128": "keras_kd forward KL, top-128 cache",
}


# ---------------------------------------------------------------------------
# Table.


def table(path):
    """The markdown table of the runs in `path`, rows in `ROWS` order."""
    runs = {}
    teacher = None
    with open(path) as f:
        for line in f:
            r = json.loads(line)
            runs.setdefault(r["row"], {})[r["seed"]] = r  # last run of a seed
            teacher = r.get("teacher_validation_loss", teacher)
    lines = ["| tinyshakespeare, GPT-2 teacher → GPT-2 student | validation "
             "loss | perplexity | seconds per run | n |",
             "|---|---|---|---|---|"]
    if teacher is not None:
        lines.append(f"| teacher | {teacher:.3f} | {np.exp(teacher):.1f} "
                     "| | |")
    for name in ROWS:
        if name not in runs:
            continue
        rs = list(runs[name].values())
        loss = bu.mean_std([r["validation_loss"] for r in rs])
        ppl = bu.mean_std([np.exp(r["validation_loss"]) for r in rs])
        secs = np.mean([r["seconds"] for r in rs])
        lines.append(f"| {LABELS[name]} | {loss[0]:.3f} ± {loss[1]:.3f} | "
                     f"{ppl[0]:.1f} ± {ppl[1]:.1f} | {secs:.0f} | {len(rs)} |")
    return "\n".join(lines)


# ---------------------------------------------------------------------------


class Context:
    def __init__(self, args, teacher):
        self.args, self.teacher = args, teacher


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", default="scratch,keras.distillation",
                        help=f"comma-separated, some of {list(ROWS)}")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--first-seed", type=int, default=0)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--min-len", type=int, default=32)
    parser.add_argument("--max-len", type=int, default=128)
    parser.add_argument("--vocabulary-size", type=int, default=2000)
    parser.add_argument("--learning-rate", type=float, default=2e-3)
    parser.add_argument("--alpha", type=float, default=0.5)
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--student-layers", type=int, default=1)
    parser.add_argument("--student-width", type=int, default=64)
    parser.add_argument("--student-heads", type=int, default=2)
    parser.add_argument("--teacher-layers", type=int, default=4)
    parser.add_argument("--teacher-width", type=int, default=128)
    parser.add_argument("--teacher-heads", type=int, default=4)
    parser.add_argument("--teacher-steps", type=int, default=1000)
    parser.add_argument("--teacher-learning-rate", type=float, default=2e-3)
    parser.add_argument("--table", action="store_true",
                        help="print the markdown table of --output and exit")
    parser.add_argument("--output", default=OUTPUT)
    args = parser.parse_args(argv)
    if args.table:
        print(table(args.output))
        return 0
    rows = [r.strip() for r in args.rows.split(",") if r.strip()]
    unknown = [r for r in rows if r not in ROWS]
    if unknown:
        parser.error(f"unknown rows {unknown}; expected some of {list(ROWS)}")

    t0 = time.time()
    train, val_stream, vocab_hash, _ = tokenize(args.vocabulary_size)
    val = validation_batches(val_stream, args)
    print(f"vocabulary {args.vocabulary_size} ({vocab_hash}): "
          f"{len(train)} training tokens, {len(val_stream)} validation "
          f"tokens ({time.time() - t0:.0f}s)", flush=True)
    teacher, teacher_path, teacher_seconds = cached_teacher(
        vocab_hash, train, val, args)
    teacher_loss = validation_loss(teacher, val)
    print(f"teacher: {teacher.count_params()} parameters, validation loss "
          f"{teacher_loss:.4f} (perplexity {np.exp(teacher_loss):.1f})",
          flush=True)
    ctx = Context(args, teacher)

    for seed in range(args.first_seed, args.first_seed + args.seeds):
        batches = training_batches(train, seed + 1, args.steps, args)
        real = sum(float(w.sum()) for _, _, w in batches)
        cells = sum(w.size for _, _, w in batches)
        for name in rows:
            student = new_student(args, seed + 1)
            x = batches[0][0]
            shape = tuple(student(x).shape)
            expected = (*x["token_ids"].shape, args.vocabulary_size)
            if shape != expected:
                raise SystemExit(f"student(x) returned {shape}, expected "
                                 f"{expected}")
            start = time.time()
            ROWS[name](ctx, student, batches)
            seconds = time.time() - start
            loss = validation_loss(student, val)
            print(f"seed {seed} {name:<24} validation loss {loss:.4f} "
                  f"perplexity {np.exp(loss):7.2f} ({seconds:.0f}s)",
                  flush=True)
            bu.write_rows(args.output, [{
                "benchmark": "lm", "row": name, "seed": seed,
                "validation_loss": loss, "perplexity": float(np.exp(loss)),
                "seconds": seconds, "real_token_fraction": real / cells,
                "student_parameters": student.count_params(),
                "teacher_parameters": teacher.count_params(),
                "teacher_validation_loss": teacher_loss,
                "teacher_file": os.path.basename(teacher_path),
                "vocabulary": f"sentencepiece-unigram-{vocab_hash}",
                "load_average": os.getloadavg()[0],
                **{k: v for k, v in vars(args).items()
                   if k not in ("output", "rows", "table")}}])
    return 0


if __name__ == "__main__":
    sys.exit(main())
