"""
Title: Distilling a language model, token by token
Description: A KerasHub GPT-2 teacher (built from a config) teaches a much
smaller GPT-2 student on variable-length, padded sequences; the student
alone is the baseline.

Data: the docstrings of Python's own standard library (real English text
that ships with every Python), as bytes, so this runs anywhere without a
network or a tokenizer download. Run
`python examples/distill_language_model.py`, or `--quick` for a smoke run.
"""

"""
## Setup
"""

import argparse
import importlib
import inspect
import time

import keras
import keras_hub
import numpy as np

import keras_kd

parser = argparse.ArgumentParser(description="Token-level distillation.")
parser.add_argument("--epochs", type=int, default=6)
parser.add_argument("--quick", action="store_true")
args = parser.parse_args()
epochs = 1 if args.quick else args.epochs
start = time.time()

"""
## Text: standard-library docstrings, as bytes

Token ids are the bytes plus one; 0 is padding. Each example is a slice of
16 to 64 bytes, padded to 64: the padding mask is the per-token
`sample_weight`, the same `(batch, sequence)` weight that KerasHub's
`CausalLMPreprocessor` returns for strings.
"""

MODULES = ["argparse", "collections", "csv", "dataclasses", "datetime",
           "decimal", "email.message", "fractions", "functools", "heapq",
           "http.client", "itertools", "json", "logging", "pathlib",
           "random", "statistics", "string", "textwrap", "typing",
           "unittest", "urllib.parse"]


def docstrings():
    texts = []
    for name in MODULES:
        module = importlib.import_module(name)
        for _, obj in sorted(vars(module).items()):
            doc = inspect.getdoc(obj) if callable(obj) else None
            if doc and obj.__module__ == module.__name__:
                texts.append(doc)
    return "\n\n".join(texts).encode("utf-8")


LENGTH = 64
VOCABULARY = 257
data = np.frombuffer(docstrings(), dtype=np.uint8).astype("int32") + 1
if args.quick:
    data = data[:6_000]
split = int(0.9 * len(data))


def examples(stream, seed):
    rng = np.random.default_rng(seed)
    ids, starts = [], 0
    while starts + LENGTH + 1 <= len(stream):
        n = int(rng.integers(16, LENGTH + 1))
        ids.append(np.pad(stream[starts:starts + n + 1],
                          (0, LENGTH + 1 - n - 1)))
        starts += n
    ids = np.stack(ids)
    mask = (ids > 0).astype("int32")
    x = {"token_ids": ids[:, :-1], "padding_mask": mask[:, :-1]}
    return x, ids[:, 1:], mask[:, 1:].astype("float32")


x_train, y_train, w_train = examples(data[:split], seed=0)
x_val, y_val, w_val = examples(data[split:], seed=1)
print(f"{len(data):,} bytes: {len(y_train)} training and {len(y_val)} "
      f"validation sequences, {int(w_train.sum()):,} training tokens")


def causal_lm(layers, width, seed):
    keras.utils.set_random_seed(seed)
    backbone = keras_hub.models.GPT2Backbone(
        vocabulary_size=VOCABULARY, num_layers=layers, num_heads=4,
        hidden_dim=width, intermediate_dim=4 * width,
        max_sequence_length=LENGTH)
    return keras_hub.models.GPT2CausalLM(backbone, preprocessor=None)


def perplexity(model):
    """exp of the cross-entropy per real validation token."""
    logits = model.predict(x_val, batch_size=128, verbose=0).astype("float64")
    logits -= logits.max(-1, keepdims=True)
    log_p = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    nll = -np.take_along_axis(log_p, y_val[..., None], -1)[..., 0]
    return float(np.exp((nll * w_val).sum() / w_val.sum()))


def masked_loss():
    return keras.losses.SparseCategoricalCrossentropy(from_logits=True)


"""
## The teacher: 2 blocks of width 128
"""

teacher = causal_lm(2, 128, seed=0)
teacher.compile(optimizer=keras.optimizers.Adam(2e-3), loss=masked_loss(),
                weighted_metrics=[])
teacher.fit(x_train, y_train, sample_weight=w_train, batch_size=32,
            epochs=epochs, verbose=0)
print(f"teacher ({teacher.count_params():,} parameters): validation "
      f"perplexity {perplexity(teacher):.2f}")

"""
## The student alone, then distilled: 1 block of width 32

Same initial weights, optimizer and epochs. The Distiller reads the
`(batch, sequence)` sample weight as the padding mask: the loss is the mean
over real tokens of `alpha * cross-entropy + (1 - alpha) * T**2 * KL`.
"""

student = causal_lm(1, 32, seed=1)
student.compile(optimizer=keras.optimizers.Adam(2e-3), loss=masked_loss(),
                weighted_metrics=[])
student.fit(x_train, y_train, sample_weight=w_train, batch_size=32,
            epochs=epochs, verbose=0)
baseline = perplexity(student)

student = causal_lm(1, 32, seed=1)
distiller = keras_kd.Distiller(teacher, student, alpha=0.5, temperature=1.0)
distiller.compile(optimizer=keras.optimizers.Adam(2e-3))
distiller.fit(x_train, y_train, sample_weight=w_train, batch_size=32,
              epochs=epochs, verbose=0)
distilled = perplexity(distiller.student)

print(f"student ({student.count_params():,} parameters), validation "
      f"perplexity per byte:")
print(f"  alone:     {baseline:.2f}")
print(f"  distilled: {distilled:.2f}")
print(f"({time.time() - start:.0f} s)")
