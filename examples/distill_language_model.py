"""
Title: Distilling a language model, token by token
Description: A KerasHub GPT-2 teacher (built from a config) teaches a much
smaller GPT-2 student on variable-length, padded sequences; the student
alone is the baseline.

Data: the docstrings of Python's own standard library (real English text
that ships with every Python), as bytes, so this runs anywhere without a
network or a tokenizer download. Run
`python examples/distill_language_model.py`, or `--quick` for a smoke run.

Expected output (TensorFlow backend; 419 s from start to end, 263 s of CPU
time, on 2 CPU cores shared with other jobs, load average about 6):
validation perplexity per byte 7.52 for the teacher (24 epochs), 14.04 for
the student alone and 13.48 for the student distilled (6 epochs each): the
teacher is far better than the student alone, and distillation closes 9 %
of the gap at this budget.
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
import tensorflow as tf

import keras_kd

parser = argparse.ArgumentParser(description="Token-level distillation.")
parser.add_argument("--epochs", type=int, default=6,
                    help="epochs of the student, alone and distilled")
parser.add_argument("--teacher-epochs", type=int, default=24,
                    help="epochs of the teacher (it must be good to teach)")
parser.add_argument("--quick", action="store_true")
args = parser.parse_args()
epochs = 1 if args.quick else args.epochs
teacher_epochs = 1 if args.quick else args.teacher_epochs
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
    """exp of the cross-entropy per real validation token.

    The model is called directly on a few large batches: `predict` would
    build a compiled function for each of the three models, which
    TensorFlow reports as retracing.
    """
    nll, count = 0.0, 0.0
    for first in range(0, len(y_val), 512):
        batch = {k: v[first:first + 512] for k, v in x_val.items()}
        logits = keras.ops.convert_to_numpy(
            model(batch, training=False)).astype("float64")
        logits -= logits.max(-1, keepdims=True)
        log_p = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
        y, w = y_val[first:first + 512], w_val[first:first + 512]
        token_nll = -np.take_along_axis(log_p, y[..., None], -1)[..., 0]
        nll += float((token_nll * w).sum())
        count += float(w.sum())
    return float(np.exp(nll / count))


def masked_loss():
    return keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def fit_alone(model, epochs):
    """Plain Keras training on the labels, shuffled every epoch.

    A KerasHub task's own `fit` turns arrays into a `tf.data` pipeline
    without shuffling them (Keras then warns that `shuffle=True` is
    ignored), so the examples are shuffled here, as `Distiller.fit` does.
    """
    model.compile(optimizer=keras.optimizers.Adam(2e-3), loss=masked_loss(),
                  weighted_metrics=[])
    dataset = tf.data.Dataset.from_tensor_slices(
        (x_train, y_train, w_train)).shuffle(
            len(y_train), seed=0, reshuffle_each_iteration=True).batch(32)
    model.fit(dataset, epochs=epochs, shuffle=False, verbose=0)
    return model


"""
## The teacher: 2 blocks of width 128, trained 4x longer than the student

A teacher only helps if it is better than what the student reaches alone:
the larger model needs more steps to get there.
"""

teacher = fit_alone(causal_lm(2, 128, seed=0), teacher_epochs)
teacher_ppl = perplexity(teacher)
print(f"teacher ({teacher.count_params():,} parameters, {teacher_epochs} "
      f"epochs): validation perplexity {teacher_ppl:.2f}")

"""
## The student alone, then distilled: 1 block of width 32

Same initial weights, optimizer and epochs. The Distiller reads the
`(batch, sequence)` sample weight as the padding mask: the loss is the mean
over real tokens of `alpha * cross-entropy + (1 - alpha) * T**2 * KL`.
"""

student = fit_alone(causal_lm(1, 32, seed=1), epochs)
baseline = perplexity(student)

student = causal_lm(1, 32, seed=1)
distiller = keras_kd.Distiller(teacher, student, alpha=0.5, temperature=1.0)
distiller.compile(optimizer=keras.optimizers.Adam(2e-3))
distiller.fit(x_train, y_train, sample_weight=w_train, batch_size=32,
              epochs=epochs, verbose=0)
distilled = perplexity(distiller.student)

print(f"Validation perplexity per byte ({epochs} student epochs):")
print(f"  teacher ({teacher.count_params():,} parameters): {teacher_ppl:.2f}")
print(f"  student alone ({student.count_params():,} parameters): "
      f"{baseline:.2f}")
print(f"  student distilled: {distilled:.2f}")
if teacher_ppl >= baseline:
    print("The teacher is no better than the student alone, so it has "
          "nothing to teach: train it longer (--teacher-epochs).")
elif distilled < baseline:
    gap = 100 * (baseline - distilled) / (baseline - teacher_ppl)
    print(f"Distillation closed {gap:.0f} % of the gap between the student "
          "alone and the teacher, with the same student, data and epochs.")
else:
    print("The teacher is better than the student alone, but distillation "
          "did not help the student at this budget.")
print(f"({time.time() - start:.0f} s)")
