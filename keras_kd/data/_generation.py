"""Seeded sampling from a causal LM, as one compiled loop per backend.

The loop runs the whole model on `(batch, length)` token ids at each new
token (no key/value cache), which works for any Keras model mapping token
ids (or KerasHub's `{"token_ids", "padding_mask"}`) to `(batch, length,
vocabulary)` logits. Each row has its own prompt length: row `b` writes its
`i`-th new token at position `prompt_length[b] + i`, read from the logits
at the position before it.

Randomness comes from `uniforms` (one uniform number per row and new
token, drawn by the caller's seeded NumPy generator) through the inverse
cumulative distribution of the filtered, temperature-scaled softmax, so the
same uniforms give the same samples on every backend and no random state
lives inside the compiled function.
"""

import time

import keras
import numpy as np
from keras import ops

from keras_kd.utils import validation


def takes_dict(model):
    """True for models taking `{"token_ids", "padding_mask"}` (KerasHub)."""
    try:
        inputs = model.input
    except (AttributeError, ValueError):
        return False
    return isinstance(inputs, dict) and "token_ids" in inputs


def model_inputs(model, token_ids, padding_mask):
    if takes_dict(model):
        return {"token_ids": token_ids, "padding_mask": padding_mask}
    return token_ids


def check_causal_lm(model, role, vocabulary):
    """Refuses a model that is not a causal LM over token ids.

    One forward pass on 6 tokens, then another with the last token
    changed: the logits of the first 5 positions must not move.
    """
    try:
        ids = np.array([[1, 2, 3, 1, 2, 3]], "int32") % max(vocabulary, 1)
        mask = np.ones_like(ids)
        a = ops.convert_to_numpy(model(model_inputs(model, ids, mask)))
        ids[0, -1] = (ids[0, -1] + 1) % vocabulary
        b = ops.convert_to_numpy(model(model_inputs(model, ids, mask)))
    except Exception as error:  # A model that does not take token ids.
        raise ValueError(
            f"The {role} must be a causal language model mapping `(batch, "
            "sequence)` token ids (or KerasHub's `{'token_ids', "
            "'padding_mask'}`) to `(batch, sequence, vocabulary)` logits to "
            f"generate completions. Calling it on token ids failed: {error}"
        ) from error
    if np.ndim(a) != 3 or a.shape[-1] != vocabulary:
        raise ValueError(
            f"The {role} must return `(batch, sequence, vocabulary)` logits "
            "to generate completions. Received: logits of shape "
            f"{np.shape(a)} for token ids of shape {ids.shape}"
        )
    moved = np.max(np.abs(a[:, :-1] - b[:, :-1]))
    if moved > 1e-4 * (1.0 + np.max(np.abs(a))):
        raise ValueError(
            f"The {role} is not causal: changing the last token changed the "
            f"logits of earlier positions (by {moved:.3g}). On-policy "
            "distillation samples from a causal language model (e.g. a "
            "KerasHub `CausalLM`, or attention with `use_causal_mask=True`)."
        )


def _filtered_logits(logits, temperature, top_k, top_p):
    logits = ops.cast(logits, "float32") / temperature
    neg = ops.full_like(logits, -1e30)
    if top_k is not None:
        kth = ops.top_k(logits, top_k, sorted=True)[0][:, -1:]
        logits = ops.where(logits < kth, neg, logits)
    if top_p is not None:
        sorted_logits = ops.flip(ops.sort(logits, axis=-1), axis=-1)
        probs = ops.softmax(sorted_logits, axis=-1)
        before = ops.cumsum(probs, axis=-1) - probs
        # Keep the smallest set whose mass reaches top_p (at least one).
        kept = ops.where(before < top_p, sorted_logits,
                         ops.full_like(sorted_logits, 1e30))
        threshold = ops.min(kept, axis=-1, keepdims=True)
        logits = ops.where(logits < threshold, neg, logits)
    return logits


def sample_tokens(logits, uniforms, temperature=1.0, top_k=None, top_p=None):
    """One token per row by inverse CDF: `(batch, vocab)`, `(batch,)`."""
    uniforms = ops.convert_to_tensor(uniforms, "float32")
    logits = _filtered_logits(ops.convert_to_tensor(logits), temperature,
                              top_k, top_p)
    probs = ops.softmax(logits, axis=-1)
    cdf = ops.cumsum(probs, axis=-1)
    token = ops.sum(ops.cast(cdf < uniforms[:, None], "int32"), axis=-1)
    return ops.minimum(token, ops.shape(logits)[-1] - 1)


def generate_loop(model, token_ids, prompt_length, uniforms, end_token_id,
                  temperature, top_k, top_p):
    """Completes each row after its prompt; returns `(token_ids, length)`.

    `token_ids` `(batch, length)` int32 holds the prompts (positions from
    `prompt_length` on are overwritten); `length` is the number of new
    tokens of each row, the end token included. Positions after the end
    token or past the sequence hold 0.
    """
    token_ids = ops.cast(token_ids, "int32")
    prompt_length = ops.cast(prompt_length, "int32")
    size = ops.shape(token_ids)[1]
    positions = ops.arange(size, dtype="int32")[None, :]
    ids = ops.where(positions < prompt_length[:, None], token_ids,
                    ops.zeros_like(token_ids))
    batch = ops.shape(ids)[0]
    steps = ops.shape(uniforms)[1]

    def body(i, state):
        ids, length, done = state
        current = prompt_length + length
        mask = ops.cast(positions < current[:, None], "int32")
        logits = model(model_inputs(model, ids, mask), training=False)
        previous = ops.maximum(current - 1, 0)
        index = ops.reshape(previous, (-1, 1, 1))
        step_logits = ops.take_along_axis(logits, index, axis=1)[:, 0]
        step_uniforms = ops.take(uniforms, i, axis=1)
        token = ops.cast(sample_tokens(step_logits, step_uniforms,
                                       temperature, top_k, top_p), "int32")
        write = ops.logical_and(ops.logical_not(done), current < size)
        at = ops.logical_and(positions == current[:, None], write[:, None])
        ids = ops.where(at, token[:, None], ids)
        length = length + ops.cast(write, "int32")
        if end_token_id is not None:
            done = ops.logical_or(
                done, ops.logical_and(write, token == end_token_id))
        return ids, length, done

    state = (ids, ops.zeros((batch,), "int32"), ops.zeros((batch,), "bool"))
    ids, length, _ = ops.fori_loop(0, steps, body, state)
    return ids, length


def teacher_log_prob(logits, labels):
    """Sum of `log softmax(logits)[label]` over the labels != -1, and their
    count."""
    log_probs = ops.log_softmax(ops.cast(logits, "float32"), axis=-1)
    safe = ops.where(labels >= 0, labels, ops.zeros_like(labels))
    picked = ops.take_along_axis(log_probs, safe[..., None], axis=-1)[..., 0]
    real = ops.cast(labels >= 0, "float32")
    return ops.sum(picked * real), ops.sum(real)


class Generator:
    """Compiled generation (and teacher scoring) with a model's weights as
    they are now, also inside `fit` on JAX (from the training state)."""

    def __init__(self, owner, end_token_id, temperature, top_k, top_p,
                 models=None):
        # `owner` holds the variables (a Distiller, or the model itself);
        # `models` maps a role ("student", "teacher") to the model.
        self.distiller = owner
        self.models = models or {"student": owner.student,
                                 "teacher": owner.teacher}
        self.end_token_id = end_token_id
        self.options = (temperature, top_k, top_p)
        self._functions = {}

    def _model(self, role):
        return self.models[role]

    def _generate_fn(self, role):
        model = self._model(role)
        end, (temperature, top_k, top_p) = self.end_token_id, self.options

        def generate(ids, prompt_length, uniforms):
            return generate_loop(model, ids, prompt_length, uniforms, end,
                                 temperature, top_k, top_p)

        return generate

    def _score_fn(self):
        distiller = self.distiller

        def score(x, labels):
            logits = distiller._teacher_outputs(x, None)[0][0]
            return teacher_log_prob(logits, labels)

        return score

    def _compiled(self, key, fn):
        if key in self._functions:
            return self._functions[key]
        backend = keras.backend.backend()
        distiller = self.distiller
        if backend == "jax":
            import jax

            def stateless(trainable, non_trainable, *args):
                mapping = list(zip(distiller.trainable_variables,
                                   trainable))
                mapping += list(zip(distiller.non_trainable_variables,
                                    non_trainable))
                with keras.StatelessScope(state_mapping=mapping):
                    return fn(*args)

            compiled = jax.jit(stateless)
        elif backend == "tensorflow":
            import tensorflow as tf

            compiled = tf.function(fn, reduce_retracing=True)
        else:
            import torch

            def compiled(*args):
                with torch.no_grad():
                    return fn(*args)

        self._functions[key] = compiled
        return compiled

    def _call(self, key, fn, state, *args):
        compiled = self._compiled(key, fn)
        if keras.backend.backend() == "jax":
            if state is None:
                state = ([v.value for v in self.distiller.trainable_variables],
                         [v.value for v in
                          self.distiller.non_trainable_variables])
            return compiled(state[0], state[1], *args)
        return compiled(*args)

    def generate(self, role, ids, prompt_length, uniforms, state=None):
        """`(token_ids, length, seconds)` as NumPy arrays."""
        start = time.perf_counter()
        ids, length = self._call(("generate", role),
                                 self._generate_fn(role), state, ids,
                                 prompt_length, uniforms)
        ids = np.asarray(ops.convert_to_numpy(ids))
        length = np.asarray(ops.convert_to_numpy(length))
        return ids, length, time.perf_counter() - start

    def score(self, x, labels, state=None):
        total, count = self._call(("score",), self._score_fn(), state, x,
                                  labels)
        return float(ops.convert_to_numpy(total)), float(
            ops.convert_to_numpy(count))


def check_sampling(temperature, top_k, top_p):
    temperature = validation.check_positive_number("temperature", temperature)
    if top_k is not None:
        top_k = validation.check_positive_integer("top_k", top_k)
    if top_p is not None:
        if isinstance(top_p, bool) or not isinstance(
                top_p, (int, float)) or not 0.0 < top_p <= 1.0:
            raise ValueError(
                "Argument `top_p` must be a number in (0, 1] or None. "
                f"Received: top_p={top_p!r}")
        top_p = float(top_p)
    return float(temperature), top_k, top_p
