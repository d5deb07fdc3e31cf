"""The fused memory path: the student's logits and its token losses, chunk by
chunk, from its last hidden states.

At a real vocabulary the student's logits dominate a distillation step's
memory: one float32 `(4, 1024, 256000)` tensor is 4 GB, and autodiff keeps
it and its gradient. `FusedStudent(model)` wraps a KerasHub causal LM (or
any model whose last layer is a `Dense` or a KerasHub `ReversibleEmbedding`)
so that it returns the hidden states that layer reads; its fused terms
(`FusedDivergence`, `FusedHardLoss`) own the head: they compute
`chunk_size` positions of logits at a time, their loss and, with the
analytic gradient (`keras.ops.custom_gradient`), the gradients of the hidden
states, the head's kernel and bias, so no `(batch, sequence, vocabulary)`
student tensor exists in the step. Values and gradients are those of the
unfused path (the same formulas as `keras_kd.losses.tokens`).

`teacher_agreement` is computed the same way (an argmax per chunk). The
teacher's logits are still materialized (the teacher's forward pass returns
them).

Example:

```python
student = keras_kd.fused.FusedStudent(causal_lm, chunk_size=128)
distiller = keras_kd.Distiller(teacher, student, terms=[
    keras_kd.fused.FusedHardLoss(), keras_kd.fused.FusedDivergence()])
distiller.compile(optimizer="adam")
distiller.fit(x, y, sample_weight=padding_mask)
model = student.model  # the full causal LM, trained
```
"""

import keras
from keras import ops

from keras_kd.losses import tokens
from keras_kd.terms.base import LogitTerm
from keras_kd.terms.base import Term
from keras_kd.utils import keras_compat
from keras_kd.utils import validation

_SPECS = {
    "forward_kl": lambda c: tokens._FORWARD,
    "reverse_kl": lambda c: tokens._REVERSE,
    "jsd": lambda c: tokens._FORWARD if c == 0.0 else (
        tokens._REVERSE if c == 1.0 else ("jsd", False, c)),
    "skew_kl": lambda c: ("skew", False, c),
    "skew_reverse_kl": lambda c: ("skew", True, c),
}


def _is_reversible_embedding(layer):
    # KerasHub's `ReversibleEmbedding` (also Keras' own, in recent versions).
    return any(c.__name__ == "ReversibleEmbedding"
               for c in type(layer).__mro__)


def find_head(model):
    """`(head_layer, hidden_tensor)`: the model's last layer and the
    symbolic tensor it reads, for a Dense or reversed-embedding head."""
    if not (getattr(model, "inputs", None) and getattr(model, "outputs",
                                                       None)):
        raise ValueError(
            "Argument `model` must be a functional model (a KerasHub task, "
            "or `keras.Model(inputs, outputs)`) whose last layer is a "
            f"`Dense` or a `ReversibleEmbedding`. Received: model={model!r}"
        )
    layer = keras_compat.producing_operation(model.outputs[0])
    ok = isinstance(layer, keras.layers.Dense) and layer.activation in (
        None, keras.activations.linear)
    ok = ok or _is_reversible_embedding(layer)
    if not ok or len(model.outputs) != 1:
        raise ValueError(
            "The fused path computes the logits from the last layer's "
            "weights, so the model's single output must come from a "
            "`keras.layers.Dense` without activation or a KerasHub "
            "`ReversibleEmbedding` (a causal LM's head). Received: last "
            f"layer {layer!r}"
        )
    if getattr(layer, "quantization_mode", None):
        raise ValueError(
            "The fused path needs a float head. Received: a head quantized "
            f"to {layer.quantization_mode!r}. Quantize the other layers only."
        )
    node = keras_compat.producing_node(model.outputs[0])
    return layer, node.input_tensors[0]


@keras.saving.register_keras_serializable(package="keras_kd")
class FusedStudent(keras.Model):
    """A student that returns its last hidden states; fused terms own its
    head.

    Args:
        model: A functional `keras.Model` whose last layer is a `Dense`
            (no activation) or a KerasHub `ReversibleEmbedding` (every
            KerasHub causal LM), e.g. `keras_hub.models.GPT2CausalLM`.
        chunk_size: Positive integer, the positions whose logits the fused
            terms compute at a time. Defaults to `256`.
        name: String. Defaults to `"fused_<model name>"`.

    Call arguments:
        inputs: The model's inputs.

    Returns:
        The hidden states the head reads, `(batch, sequence, hidden)`.
    """

    fused = True

    def __init__(self, model, chunk_size=256, name=None, **kwargs):
        head, hidden = find_head(model)
        super().__init__(name=name or f"fused_{model.name}", **kwargs)
        self.model = model
        self.chunk_size = validation.check_positive_integer(
            "chunk_size", chunk_size)
        # Views of `model`'s own layers, not tracked twice.
        object.__setattr__(self, "head", head)
        object.__setattr__(self, "_hidden", keras.Model(
            model.input, hidden, name=f"{model.name}_hidden"))
        self.vocabulary_size = self.logits_width()
        self.built = True

    # The wrapped model's inputs and logits: what the Distiller checks (the
    # vocabulary, the rank, the input shapes) is the model's, not the
    # hidden states `call` returns.
    @property
    def inputs(self):
        return self.model.inputs

    @property
    def outputs(self):
        return self.model.outputs

    @property
    def preprocessor(self):
        return getattr(self.model, "preprocessor", None)

    def call(self, inputs, training=None):
        return self._hidden(inputs, training=training)

    def logits_width(self):
        if isinstance(self.head, keras.layers.Dense):
            return int(self.head.units)
        return int(self.head.input_dim)

    def head_weights(self):
        """`(kernel, bias, transposed, soft_cap)`: logits are
        `hidden @ kernel (+ bias)`, or `hidden @ kernel.T` if `transposed`,
        then `soft_cap * tanh(logits / soft_cap)` if `soft_cap`."""
        head = self.head
        if isinstance(head, keras.layers.Dense):
            return head.kernel, head.bias, False, None
        cap = getattr(head, "logit_soft_cap", None)
        if getattr(head, "tie_weights", True):
            return head.embeddings, None, True, cap
        return head.reverse_embeddings, None, False, cap

    def logits(self, hidden):
        """The full logits of `hidden` (for checks; the fused terms never
        form them)."""
        kernel, bias, transposed, cap = self.head_weights()
        return _head(hidden, kernel, bias, transposed, cap)

    def predicted_ids(self, hidden):
        """The argmax token of every position, chunk by chunk."""
        kernel, bias, transposed, cap = self.head_weights()
        kernel = ops.convert_to_tensor(kernel)
        bias = None if bias is None else ops.convert_to_tensor(bias)
        shape = ops.shape(hidden)
        rows = ops.reshape(hidden, (-1, hidden.shape[-1]))

        def fn(h):
            return ops.cast(ops.argmax(_head(h, kernel, bias, transposed,
                                             cap), axis=-1), "float32")

        ids = tokens._map_rows(fn, (rows,), self.chunk_size, None)
        return ops.cast(ops.reshape(ids, shape[:-1]), "int32")

    def teacher_agreement(self, ids, teacher_logits):
        """Per position: the student's argmax `ids` (`predicted_ids`)
        equal the teachers'."""
        if len(teacher_logits) == 1:
            target = teacher_logits[0]
        else:
            target = sum(ops.softmax(t, axis=-1) for t in teacher_logits)
        return ops.cast(ops.cast(ids, "int32") == ops.cast(
            ops.argmax(target, axis=-1), "int32"), "float32")

    def get_config(self):
        model = keras.saving.serialize_keras_object(self.model)
        model.pop("compile_config", None)
        return {"name": self.name, "model": model,
                "chunk_size": self.chunk_size}

    @classmethod
    def from_config(cls, config, custom_objects=None):
        config = config.copy()
        model = dict(config["model"])
        model.pop("compile_config", None)
        config["model"] = keras.saving.deserialize_keras_object(
            model, custom_objects=custom_objects)
        return cls(**config)


def attach(term, student):
    """Called by the Distiller for each term: links fused terms to a
    `FusedStudent`; refuses a fused student with unfused terms and fused
    terms with another student."""
    fused_student = getattr(student, "fused", False)
    fused_term = isinstance(term, _FusedTerm)
    if fused_student and not fused_term and (
            term.student_layer is None):
        raise ValueError(
            f"The student {student.name!r} is a `FusedStudent`: it returns "
            "hidden states, not logits, so every term reading its output "
            "must be fused. Received: the term "
            f"{term.log_name!r} ({type(term).__name__}). Use "
            "`keras_kd.fused.FusedHardLoss()` and "
            "`keras_kd.fused.FusedDivergence(...)`."
        )
    if fused_term:
        if not fused_student:
            raise ValueError(
                f"The term {term.log_name!r} is fused: it needs a student "
                "wrapped in `keras_kd.fused.FusedStudent`. Received: student "
                f"{student.name!r} of type {type(student).__name__}"
            )
        object.__setattr__(term, "_student", student)


class _FusedTerm:
    """Marker of the terms that read a `FusedStudent`'s hidden states."""

    def _fused_values(self, teacher, hidden, labels, spec, temperature,
                      scale):
        student = self._student
        kernel, bias, transposed, cap = student.head_weights()
        return fused_token_loss(
            hidden, kernel, bias=bias, teacher_logits=teacher, labels=labels,
            spec=spec, temperature=temperature, scale=scale,
            transposed=transposed, soft_cap=cap,
            chunk_size=student.chunk_size)

    def build_for(self, teacher_shape, student_shape):
        student = self.__dict__.get("_student")
        if teacher_shape is not None and student is not None and not \
                isinstance(teacher_shape, list):
            classes = teacher_shape[-1]
            if classes is not None and classes != student.vocabulary_size:
                raise ValueError(
                    "The teacher and the student must share one vocabulary, "
                    f"but the teacher has {classes} logits and the fused "
                    f"student's head {student.vocabulary_size}. Received: "
                    f"teacher vocabulary_size={classes}, student "
                    f"vocabulary_size={student.vocabulary_size}"
                )
        self.built = True


@keras.saving.register_keras_serializable(package="keras_kd")
class FusedDivergence(_FusedTerm, LogitTerm):
    """A token divergence computed from a `FusedStudent`'s hidden states.

    The numbers of `SoftTargets` (`divergence="forward_kl"`), `ReverseKL`,
    `GeneralizedJSD` (`"jsd"` with `beta`), `SkewKL` and `SkewReverseKL`
    (`skew`), without the student's full logits.

    Args:
        divergence: One of `"forward_kl"`, `"reverse_kl"`, `"jsd"`,
            `"skew_kl"`, `"skew_reverse_kl"`. Defaults to `"forward_kl"`.
        beta: Float in `[0, 1]`, for `"jsd"`. Defaults to `0.5`.
        skew: Float in `[0, 1)`, for the skew divergences. Defaults to
            `0.1`.
        temperature: Positive float, or `None` for the Distiller's.
            Defaults to `None`.
        scale_by_temperature_squared: Boolean. Defaults to `True`.
        weight: Non-negative float. Defaults to `1.0`.
        name: The history key. Defaults to `"soft_loss"`.
    """

    response = True
    supported_outputs = ("softmax",)

    def __init__(self, divergence="forward_kl", beta=0.5, skew=0.1,
                 temperature=None, scale_by_temperature_squared=True,
                 weight=1.0, name="soft_loss", **kwargs):
        super().__init__(temperature=temperature, weight=weight, name=name,
                         **kwargs)
        self.divergence = validation.check_one_of(
            "divergence", divergence, tuple(_SPECS))
        self.beta = validation.check_unit_interval("beta", beta)
        self.skew = tokens.check_skew(skew)
        self.scale_by_temperature_squared = validation.check_bool(
            "scale_by_temperature_squared", scale_by_temperature_squared)

    def spec(self):
        return _SPECS[self.divergence](
            self.beta if self.divergence == "jsd" else self.skew)

    def call(self, teacher, student, labels=None):
        if isinstance(teacher, (list, tuple)):
            teacher, _ = self.logits_pair(teacher, teacher[0])
        return self._fused_values(
            ops.cast(teacher, "float32"), student, None, self.spec(),
            self.temperature, self.scale_by_temperature_squared)

    def get_config(self):
        config = super().get_config()
        config.update({
            "divergence": self.divergence, "beta": self.beta,
            "skew": self.skew,
            "scale_by_temperature_squared": self.scale_by_temperature_squared,
        })
        return config


@keras.saving.register_keras_serializable(package="keras_kd")
class FusedHardLoss(_FusedTerm, Term):
    """Cross-entropy of the labels from a `FusedStudent`'s hidden states
    (the numbers of `HardLoss` on token ids), chunk by chunk.

    Args:
        weight: Non-negative float. Defaults to `1.0`.
        name: The history key. Defaults to `"hard_loss"`.
    """

    needs_labels = True
    uses_teacher = False

    def __init__(self, weight=1.0, name="hard_loss", **kwargs):
        super().__init__(weight=weight, name=name, **kwargs)

    def call(self, teacher, student, labels=None):
        return self._fused_values(None, student, labels, None, 1.0, False)


# --- The math. -------------------------------------------------------------


def _head(hidden, kernel, bias, transposed, cap):
    kernel = ops.cast(kernel, hidden.dtype)
    z = ops.matmul(hidden, ops.transpose(kernel) if transposed else kernel)
    if bias is not None:
        z = z + ops.cast(bias, z.dtype)
    z = ops.cast(z, "float32")
    if cap:
        z = cap * ops.tanh(z / cap)
    return z


def fused_token_loss(hidden, kernel, bias=None, teacher_logits=None,
                     labels=None, spec=tokens._FORWARD, temperature=1.0,
                     scale=True, transposed=False, soft_cap=None,
                     chunk_size=256):
    """Per-position loss of the logits `hidden @ kernel (+ bias)`, computed
    `chunk_size` positions at a time, forward and backward.

    With `teacher_logits`, the divergence `spec` (see
    `keras_kd.losses.tokens`) at `temperature`, times `T**2` if `scale`;
    with `labels` (token ids; `-1` ignored), the cross-entropy. Gradients
    flow to `hidden`, `kernel` and `bias` (not to the teacher, the labels
    or the temperature).

    Returns:
        Float32 tensor `hidden.shape[:-1]`.
    """
    shape = ops.shape(hidden)
    width = hidden.shape[-1]
    rows = ops.reshape(hidden, (-1, width))
    vocabulary = kernel.shape[0] if transposed else kernel.shape[-1]
    hard = teacher_logits is None
    if hard:
        target = ops.reshape(ops.cast(labels, "int32"), (-1,))
    else:
        target = ops.reshape(ops.cast(teacher_logits, "float32"),
                             (-1, vocabulary))
    temperature = ops.cast(temperature, "float32")
    has_bias = bias is not None
    kernel_in = ops.convert_to_tensor(kernel)
    bias_in = ops.convert_to_tensor(bias) if has_bias else ops.zeros(
        (vocabulary,), "float32")

    def chunk_values_and_grads(h, t, k, b, upstream):
        z = _head(h, k, b if has_bias else None, transposed, None)
        if soft_cap:
            s = soft_cap * ops.tanh(z / soft_cap)
        else:
            s = z
        if hard:
            valid = ops.cast(t >= 0, "float32")
            safe = ops.where(t >= 0, t, ops.zeros_like(t))
            one_hot = ops.one_hot(safe, vocabulary, dtype="float32")
            log_q = ops.log_softmax(s, axis=-1)
            values = -ops.sum(one_hot * log_q, axis=-1) * valid
            g_s = (ops.exp(log_q) - one_hot) * ops.expand_dims(valid, -1)
        else:
            values, _, g_s = tokens._values_and_grads(
                spec, t / temperature, s / temperature)
            factor = ops.square(temperature) if scale else 1.0
            values = values * factor
            g_s = g_s * factor / temperature
        if upstream is None:
            return values
        g_s = g_s * ops.expand_dims(upstream, -1)
        if soft_cap:
            g_s = g_s * (1.0 - ops.square(ops.tanh(z / soft_cap)))
        g_s = ops.cast(g_s, h.dtype)
        k = ops.cast(k, h.dtype)
        g_h = ops.matmul(g_s, k if transposed else ops.transpose(k))
        g_k = ops.matmul(ops.transpose(g_s), h) if transposed else \
            ops.matmul(ops.transpose(h), g_s)
        return values, g_h, g_k, ops.sum(g_s, axis=0)

    @ops.custom_gradient
    def loss(h, k, b):
        values = _loop(lambda *a: chunk_values_and_grads(*a, None),
                       (h, target), (k, b), chunk_size, None)

        def grad(*args, upstream=None):
            if upstream is None:
                (upstream,) = args
            upstream = ops.cast(upstream, "float32")
            g_h, g_k, g_b = _loop(chunk_values_and_grads, (h, target),
                                  (k, b), chunk_size, upstream)
            return (g_h, ops.cast(g_k, k.dtype), ops.cast(g_b, b.dtype))

        return values, grad

    values = loss(rows, kernel_in, bias_in)
    return ops.reshape(values, shape[:-1])


def _loop(fn, rows, shared, chunk_size, upstream):
    """Runs `fn(h, t, k, b[, upstream])` over chunks of rows. Forward
    (`upstream` None): the values per row. Backward: `(g_h, g_k, g_b)`, the
    row gradients stitched and the weight gradients summed."""
    h, t = rows
    k, b = shared
    n = h.shape[0]
    backward = upstream is not None
    if keras.backend.backend() == "torch" or (
            n is not None and n <= chunk_size):
        n = int(n) if n is not None else int(ops.shape(h)[0])
        parts = []
        for start in range(0, n, chunk_size):
            stop = start + chunk_size
            u = upstream[start:stop] if backward else None
            parts.append(fn(h[start:stop], t[start:stop], k, b, u) if
                         backward else fn(h[start:stop], t[start:stop], k,
                                          b))
        if not backward:
            return ops.concatenate(parts, axis=0)
        return (ops.concatenate([p[1] for p in parts], axis=0),
                sum(p[2] for p in parts), sum(p[3] for p in parts))
    if n is None:
        n = ops.shape(h)[0]
        chunk = ops.minimum(chunk_size, n)
    else:
        chunk = chunk_size
    num_chunks = (n + chunk_size - 1) // chunk_size

    def take(x, start):
        return ops.slice(x, (start,) + (0,) * (len(x.shape) - 1),
                         (chunk,) + tuple(x.shape[1:]))

    if not backward:
        def body(i, out):
            start = ops.minimum(i * chunk_size, n - chunk)
            return ops.slice_update(
                out, (start,), fn(take(h, start), take(t, start), k, b))
        return ops.fori_loop(0, num_chunks, body, ops.zeros((n,),
                                                            "float32"))

    def body(i, carry):
        g_h, g_k, g_b = carry
        start = ops.minimum(i * chunk_size, n - chunk)
        # The last chunk is moved back to end at the last row; its rows
        # already done count once (masked here).
        fresh = ops.cast(ops.arange(chunk) + start >= i * chunk_size,
                         "float32")
        u = take(upstream, start) * fresh
        _, c_h, c_k, c_b = fn(take(h, start), take(t, start), k, b, u)
        keep = ops.expand_dims(fresh, -1)
        c_h = ops.cast(c_h, "float32") * keep + ops.cast(
            take(g_h, start), "float32") * (1.0 - keep)
        g_h = ops.slice_update(g_h, (start, 0), ops.cast(c_h, g_h.dtype))
        return g_h, g_k + ops.cast(c_k, g_k.dtype), g_b + c_b

    init = (ops.zeros(ops.shape(h), h.dtype),
            ops.zeros(ops.shape(k), "float32"),
            ops.zeros(ops.shape(b), "float32"))
    return ops.fori_loop(0, num_chunks, body, init)


__all__ = [
    "FusedDivergence",
    "FusedHardLoss",
    "FusedStudent",
    "fused_token_loss",
]
