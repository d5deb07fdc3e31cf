"""Peak memory of the token-level losses, naive vs chunked, on JAX.

For `(batch, sequence, vocabulary)` logits, each divergence of
`keras_kd.losses.tokens` is compiled with XLA twice: as written
(`chunk_size=None`, autodiff of the formula) and chunked
(`chunk_size=256` positions per chunk, analytic gradient). Two programs are
measured:

- `loss`: value and gradient of the summed loss w.r.t. the student logits
  (the teacher logits under `stop_gradient`, as in the Distiller);
- `train_step`: one Adam step of a tiny LM head (`Dense(vocabulary)` on
  hidden states of width 256) distilled from given teacher logits.

The peak is the compiled program's `memory_analysis()`: temp + argument +
output bytes (minus aliased bytes). It comes from the compiler's buffer
assignment, before anything runs, so it is deterministic and one run is
enough; nothing is allocated, so vocabularies of 50k fit any machine. The
analytic estimate of the naive loss program counts full-size
`(positions, vocabulary)` float32 arrays: the two logits, the gradient, and
the residuals autodiff keeps for the backward pass (`NAIVE_RESIDUALS`).

Run:

```
KERAS_BACKEND=jax python benchmarks/memory_benchmark.py
KERAS_BACKEND=jax python benchmarks/memory_benchmark.py --vocab 32000 \
    --batch 4 --sequence 512 --chunk-size 256 --no-write
```
"""

import argparse
import os
import sys

os.environ.setdefault("KERAS_BACKEND", "jax")

import keras  # noqa: E402
from keras import ops  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import benchmark_utils as bu  # noqa: E402

from keras_kd.losses import tokens  # noqa: E402

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)),
                       "results", "memory.jsonl")

DIVERGENCES = {
    "forward_kl": tokens.forward_kl_divergence,
    "reverse_kl": tokens.reverse_kl_divergence,
    "jsd": tokens.generalized_js_divergence,
    "skew_kl": tokens.skew_kl_divergence,
    "skew_reverse_kl": tokens.skew_reverse_kl_divergence,
}

# Full-size arrays the backward pass of the formula needs: log p and log q,
# plus the probabilities it weighs by (p, q) and, for mixtures, log m.
NAIVE_RESIDUALS = {
    "forward_kl": 3,       # log p, log q, p
    "reverse_kl": 3,       # log p, log q, q
    "jsd": 5,              # log p, log q, log m, p, q
    "skew_kl": 4,          # log p, log q, log m, p
    "skew_reverse_kl": 4,  # log p, log q, log m, q
}

MIB = 2.0**20


def _peak(compiled):
    m = compiled.memory_analysis()
    return {
        "temp_mib": m.temp_size_in_bytes / MIB,
        "argument_mib": m.argument_size_in_bytes / MIB,
        "output_mib": m.output_size_in_bytes / MIB,
        "alias_mib": m.alias_size_in_bytes / MIB,
        "peak_mib": (m.temp_size_in_bytes + m.argument_size_in_bytes
                     + m.output_size_in_bytes - m.alias_size_in_bytes) / MIB,
    }


def loss_program(fn, shape, chunk_size):
    import jax
    import jax.numpy as jnp

    def loss(teacher, student):
        return jnp.sum(fn(teacher, student, chunk_size=chunk_size))

    def step(teacher, student):
        return jax.value_and_grad(loss, argnums=1)(
            jax.lax.stop_gradient(teacher), student)

    spec = jax.ShapeDtypeStruct(shape, jnp.float32)
    return jax.jit(step).lower(spec, spec).compile()


def train_step_program(fn, shape, chunk_size, hidden=256):
    import jax
    import jax.numpy as jnp

    batch, sequence, vocabulary = shape
    head = keras.layers.Dense(vocabulary, use_bias=False)
    head.build((None, sequence, hidden))
    optimizer = keras.optimizers.Adam(1e-3)
    optimizer.build(head.trainable_variables)

    def step(trainable, optimizer_vars, hidden_states, teacher):
        def loss(trainable):
            logits, _ = head.stateless_call(trainable, [], hidden_states)
            return ops.mean(fn(teacher, logits, chunk_size=chunk_size))

        value, grads = jax.value_and_grad(loss)(trainable)
        trainable, optimizer_vars = optimizer.stateless_apply(
            optimizer_vars, grads, trainable)
        return value, trainable, optimizer_vars

    def specs(variables):
        return [jax.ShapeDtypeStruct(tuple(v.shape), v.dtype)
                for v in variables]

    return jax.jit(step, donate_argnums=(0, 1)).lower(
        specs(head.trainable_variables), specs(optimizer.variables),
        jax.ShapeDtypeStruct((batch, sequence, hidden), jnp.float32),
        jax.ShapeDtypeStruct(shape, jnp.float32),
    ).compile()


def naive_estimate_mib(name, shape):
    positions = shape[0] * shape[1]
    full = positions * shape[2] * 4 / MIB
    return (2 + 1 + NAIVE_RESIDUALS[name]) * full, full


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--vocab", type=int, nargs="+",
                        default=[32000, 50257])
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--sequence", type=int, default=512)
    parser.add_argument("--chunk-size", type=int, default=256)
    parser.add_argument("--divergences", nargs="+", default=list(DIVERGENCES))
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args(argv)
    if keras.backend.backend() != "jax":
        raise SystemExit("Run with KERAS_BACKEND=jax: the peak comes from "
                         "XLA's memory_analysis() of a jitted program.")
    rows = []
    for vocabulary in args.vocab:
        shape = (args.batch, args.sequence, vocabulary)
        for name in args.divergences:
            fn = DIVERGENCES[name]
            estimate, full = naive_estimate_mib(name, shape)
            for program, build in (("loss", loss_program),
                                   ("train_step", train_step_program)):
                for chunk_size in (None, args.chunk_size):
                    stats = _peak(build(fn, shape, chunk_size))
                    row = {
                        "benchmark": "memory", "program": program,
                        "divergence": name, "batch": args.batch,
                        "sequence": args.sequence, "vocabulary": vocabulary,
                        "chunk_size": chunk_size,
                        "full_size_array_mib": full,
                        "naive_loss_estimate_mib": estimate, **stats,
                    }
                    rows.append(row)
                    print(f"{program:10s} {name:16s} V={vocabulary:6d} "
                          f"chunk={str(chunk_size):5s} "
                          f"peak={stats['peak_mib']:8.1f} MiB "
                          f"(temp {stats['temp_mib']:7.1f}, naive estimate "
                          f"{estimate:7.1f})", flush=True)
    if not args.no_write:
        bu.write_rows(RESULTS, rows)
    return rows


if __name__ == "__main__":
    main()
