"""Peak memory of one Distiller train step, fused vs unfused, on JAX.

A KerasHub GPT-2 teacher (2 layers) and student (1 layer), hidden width 64,
built from configs at vocabularies of 32,000 and 256,000 and sequences of
1,024 tokens. Three students are distilled with the hard loss and the
forward KL (`alpha=0.5`):

- `unfused`: `HardLoss()` + `SoftTargets()` on the student's logits;
- `unfused_chunked`: the same with `SoftTargets(chunk_size=256)` (the
  loss's own chunks; the student's logits and their gradient still exist);
- `fused`: `keras_kd.fused.FusedStudent(student, chunk_size=256)` with
  `FusedHardLoss()` + `FusedDivergence()`: no student logits at all.

Each is the Distiller's own JAX `train_step` (teacher forward, loss,
gradients, Adam update, metrics), jitted as Keras does and lowered for
abstract inputs; the peak is the compiled program's `memory_analysis()`
(temp + argument + output - alias bytes), from XLA's buffer assignment:
nothing runs, so one run is enough and it is deterministic. The teacher's
own logits (`batch * sequence * vocabulary * 4` bytes) are in every row.

Run:

```
KERAS_BACKEND=jax python benchmarks/fused_memory_benchmark.py
KERAS_BACKEND=jax python benchmarks/fused_memory_benchmark.py \
    --vocab 32000 --batch 2 --sequence 1024 --no-write
```
"""

import argparse
import os
import sys

os.environ.setdefault("KERAS_BACKEND", "jax")

import keras  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))
import benchmark_utils as bu  # noqa: E402

import keras_kd  # noqa: E402
from keras_kd import fused  # noqa: E402

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)),
                       "results", "fused_memory.jsonl")
MIB = 2.0**20


def gpt2(layers, vocabulary, sequence, width, seed):
    import keras_hub

    keras.utils.set_random_seed(seed)
    backbone = keras_hub.models.GPT2Backbone(
        vocabulary_size=vocabulary, num_layers=layers, num_heads=2,
        hidden_dim=width, intermediate_dim=2 * width,
        max_sequence_length=sequence, dropout=0.0)
    return keras_hub.models.GPT2CausalLM(backbone, preprocessor=None)


def distiller(mode, vocabulary, sequence, width, chunk_size):
    teacher = gpt2(2, vocabulary, sequence, width, 1)
    student = gpt2(1, vocabulary, sequence, width, 2)
    if mode == "fused":
        student = fused.FusedStudent(student, chunk_size=chunk_size)
        terms = [fused.FusedHardLoss(), fused.FusedDivergence()]
    else:
        chunk = chunk_size if mode == "unfused_chunked" else None
        terms = [keras_kd.HardLoss(), keras_kd.SoftTargets(chunk_size=chunk)]
    d = keras_kd.Distiller(teacher, student, alpha=0.5, temperature=2.0,
                           terms=terms)
    d.compile(optimizer="adam")
    return d


def peak(d, batch, sequence):
    import jax
    import jax.numpy as jnp

    def specs(variables):
        return [jax.ShapeDtypeStruct(tuple(v.shape), v.dtype)
                for v in variables]

    state = (specs(d.trainable_variables), specs(d.non_trainable_variables),
             specs(d.optimizer.variables), specs(d.metrics_variables))
    ids = jax.ShapeDtypeStruct((batch, sequence), jnp.int32)
    x = {"token_ids": ids, "padding_mask": ids}
    data = (x, ids, jax.ShapeDtypeStruct((batch, sequence), jnp.float32))
    compiled = jax.jit(d.train_step, donate_argnums=0).lower(
        state, data).compile()
    m = compiled.memory_analysis()
    return {
        "temp_mib": m.temp_size_in_bytes / MIB,
        "argument_mib": m.argument_size_in_bytes / MIB,
        "output_mib": m.output_size_in_bytes / MIB,
        "alias_mib": m.alias_size_in_bytes / MIB,
        "peak_mib": (m.temp_size_in_bytes + m.argument_size_in_bytes
                     + m.output_size_in_bytes - m.alias_size_in_bytes) / MIB,
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--vocab", type=int, nargs="+",
                        default=[32000, 256000])
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--sequence", type=int, default=1024)
    parser.add_argument("--width", type=int, default=64)
    parser.add_argument("--chunk-size", type=int, default=256)
    parser.add_argument("--modes", nargs="+",
                        default=["unfused", "unfused_chunked", "fused"])
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args(argv)
    if keras.backend.backend() != "jax":
        raise SystemExit("Run with KERAS_BACKEND=jax: the peak comes from "
                         "XLA's memory_analysis() of a jitted program.")
    rows = []
    for vocabulary in args.vocab:
        logits_mib = args.batch * args.sequence * vocabulary * 4 / MIB
        for mode in args.modes:
            keras.backend.clear_session()
            d = distiller(mode, vocabulary, args.sequence, args.width,
                          args.chunk_size)
            stats = peak(d, args.batch, args.sequence)
            row = {"benchmark": "fused_memory", "mode": mode,
                   "batch": args.batch, "sequence": args.sequence,
                   "vocabulary": vocabulary, "width": args.width,
                   "chunk_size": args.chunk_size,
                   "logits_mib": logits_mib, **stats,
                   **bu.environment()}
            rows.append(row)
            print(f"V={vocabulary:6d} {mode:16s} "
                  f"peak={stats['peak_mib']:9.1f} MiB (temp "
                  f"{stats['temp_mib']:9.1f}; one logits tensor "
                  f"{logits_mib:7.1f})", flush=True)
    if not args.no_write:
        bu.write_rows(RESULTS, rows)
    return rows


if __name__ == "__main__":
    main()
