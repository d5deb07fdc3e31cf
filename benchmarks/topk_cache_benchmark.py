"""Top-k teacher cache: bytes per token and the error of the densified teacher.

For vocabularies of 4,096 and 32,000 entries, caches the same teacher logits
densely (float32) and with `top_k=8, 32, 128` (float16 log-probabilities,
uint16 indices, float32 tail log-mass), on disk, and reports:

- bytes per token of each cache: the stored arrays, and the `.npy` files on
  disk with their headers (the small JSON metadata is left out);
- the error of the teacher rebuilt by `densify_top_k` (the stored top k, the
  remaining mass spread uniformly) against the full logits: mean
  `KL(full || densified)` per token at T=1 and T=2, and the mean difference
  of the forward-KL distillation loss (`keras_kd.losses.soft_target_kl`,
  `T**2 * KL(teacher || student)`) for one fixed student.

The logits are synthetic, NOT from a trained language model (a tiny randomly
initialised transformer would give nearly flat, unrepresentative
distributions): per position, a Zipf unigram term `-s * log(rank)` (s drawn
in [0.8, 1.5], ranks a random permutation of the vocabulary) plus Gaussian
noise (std 0.5) plus a boost of 3 + Exp(3) on 1 + Poisson(2) context tokens
drawn from the unigram distribution. Each row records the resulting mean
entropy and top-1 / top-k probability mass so the peakedness can be judged.
The student is `0.6 * teacher + N(0, 1)` noise per entry. The end-to-end
accuracy with a trained language model is still to be measured.

Run:

```
KERAS_BACKEND=jax python benchmarks/topk_cache_benchmark.py
python benchmarks/topk_cache_benchmark.py --vocab 32000 --k 8 32 128 \
    --samples 16 --sequence 64 --no-write
```
"""

import argparse
import os
import shutil
import sys
import tempfile
import time

import keras
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import benchmark_utils as bu  # noqa: E402

import keras_kd  # noqa: E402
from keras_kd.data import topk  # noqa: E402

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results",
                       "topk_cache.jsonl")


class Identity(keras.Model):
    """A teacher that returns its input: the logits are the data."""

    def call(self, x):
        return x


def zipf_logits(rng, samples, sequence, vocab):
    """Peaked, Zipf-tailed synthetic LM logits `(samples, sequence, vocab)`."""
    rank = rng.permutation(vocab)
    unigram = -np.log1p(rank)
    p_unigram = np.exp(unigram) / np.exp(unigram).sum()
    out = np.empty((samples * sequence, vocab), "float32")
    for i in range(len(out)):
        z = rng.uniform(0.8, 1.5) * unigram + rng.normal(0.0, 0.5, vocab)
        m = 1 + rng.poisson(2)
        boosted = rng.choice(vocab, size=m, replace=False, p=p_unigram)
        z[boosted] += 3.0 + rng.exponential(3.0, m)
        out[i] = z
    return out.reshape(samples, sequence, vocab)


def log_softmax(z):
    z = np.asarray(z, "float64")
    z = z - z.max(-1, keepdims=True)
    return z - np.log(np.exp(z).sum(-1, keepdims=True))


def folder_bytes(path):
    return sum(os.path.getsize(os.path.join(path, f))
               for f in os.listdir(path) if f.endswith(".npy"))


def distribution_stats(logits, ks):
    lp = log_softmax(logits.reshape(-1, logits.shape[-1]))
    p = np.exp(lp)
    top = -np.sort(-p, axis=-1)
    stats = {"entropy": float(-(p * lp).sum(-1).mean()),
             "top1_mass": float(top[:, 0].mean())}
    for k in ks:
        stats[f"top{k}_mass"] = float(top[:, :k].sum(-1).mean())
    return stats


def errors(full, cache, student, temperatures):
    """Mean KL(full || densified) and loss differences, per sample chunk."""
    kl = {t: [] for t in temperatures}
    loss_full = {t: [] for t in temperatures}
    loss_dense = {t: [] for t in temperatures}
    for start in range(0, len(full), 4):
        stop = start + 4
        dense = keras.ops.convert_to_numpy(topk.densify_top_k(
            cache.values[start:stop], cache.indices[start:stop],
            cache.tail_log_mass[start:stop], cache.num_classes))
        for t in temperatures:
            p = log_softmax(full[start:stop] / t)
            q = log_softmax(dense / t)
            kl[t].append((np.exp(p) * (p - q)).sum(-1).ravel())
            s = student[start:stop]
            loss_full[t].append(keras.ops.convert_to_numpy(
                keras_kd.losses.soft_target_kl(full[start:stop], s, t)))
            loss_dense[t].append(keras.ops.convert_to_numpy(
                keras_kd.losses.soft_target_kl(dense, s, t)))
    row = {}
    for t in temperatures:
        lf = np.concatenate(loss_full[t]).astype("float64")
        ld = np.concatenate(loss_dense[t]).astype("float64")
        row[f"kl_full_densified_t{t:g}"] = float(np.concatenate(kl[t]).mean())
        row[f"loss_full_t{t:g}"] = float(lf.mean())
        row[f"loss_densified_t{t:g}"] = float(ld.mean())
        row[f"loss_abs_diff_t{t:g}"] = float(np.abs(ld - lf).mean())
        row[f"loss_rel_diff_t{t:g}"] = float(
            abs(ld.mean() - lf.mean()) / lf.mean())
    return row


def run(args):
    rows = []
    temperatures = (1.0, 2.0)
    for vocab in args.vocab:
        rng = np.random.default_rng(args.seed)
        logits = zipf_logits(rng, args.samples, args.sequence, vocab)
        student = (0.6 * logits + rng.normal(0.0, 1.0, logits.shape)).astype(
            "float32")
        tokens = args.samples * args.sequence
        stats = distribution_stats(logits, args.k)
        folder = tempfile.mkdtemp(prefix="topk_bench_")
        try:
            teacher = Identity()
            start = time.perf_counter()
            dense = keras_kd.data.cache_teacher_outputs(
                teacher, logits, batch_size=4, verbose=0,
                path=os.path.join(folder, "dense"))
            dense_s = time.perf_counter() - start
            dense_bytes = dense.logits.nbytes / tokens
            dense_disk = folder_bytes(dense.path) / tokens
            del dense
            for k in args.k:
                start = time.perf_counter()
                cache = keras_kd.data.cache_teacher_outputs(
                    teacher, logits, batch_size=4, verbose=0, top_k=k,
                    path=os.path.join(folder, f"top{k}"))
                seconds = time.perf_counter() - start
                row = {"benchmark": "topk_cache", "vocabulary": vocab,
                       "top_k": k, "tokens": tokens,
                       "samples": args.samples, "sequence": args.sequence,
                       "seed": args.seed, "logits": "synthetic zipf-like",
                       "bytes_per_token": sum(
                           a.nbytes for a in (cache.values, cache.indices,
                                              cache.tail_log_mass)) / tokens,
                       "disk_bytes_per_token": folder_bytes(cache.path)
                       / tokens,
                       "dense_float32_bytes_per_token": dense_bytes,
                       "dense_disk_bytes_per_token": dense_disk,
                       "index_dtype": str(cache.indices.dtype),
                       "write_seconds": seconds,
                       "dense_write_seconds": dense_s, **stats}
                row["compression"] = dense_bytes / row["bytes_per_token"]
                row.update(errors(logits, cache, student, temperatures))
                rows.append(row)
                print({key: (round(v, 6) if isinstance(v, float) else v)
                       for key, v in row.items()})
                del cache
        finally:
            shutil.rmtree(folder, ignore_errors=True)
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--vocab", type=int, nargs="+", default=[4096, 32000])
    parser.add_argument("--k", type=int, nargs="+", default=[8, 32, 128])
    parser.add_argument("--samples", type=int, default=16)
    parser.add_argument("--sequence", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", default=RESULTS)
    parser.add_argument("--no-write", action="store_true",
                        help="Print the rows without appending them.")
    args = parser.parse_args(argv)
    rows = run(args)
    if not args.no_write:
        bu.write_rows(args.output, rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
