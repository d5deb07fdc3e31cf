"""On-policy batches for language-model distillation (GKD, seq-KD).

`on_policy(distiller, prompts, completions)` returns a `keras.utils.PyDataset`
that `distiller.fit` takes. Each batch holds prompts; for a fraction `lmbda`
of the batches the current student completes them, otherwise the data's
completions are used (or, with `seq_kd=True`, the teacher's own). The
teacher then scores prompt + completion in the Distiller's step as usual,
and every term counts the completion tokens only: prompt positions and
padding get the label -1 and the sample weight 0, as padding always does.

How it works: the batches the dataset yields carry the prompt lengths.
Which batches are generated, and the uniform numbers the sampler uses, are
drawn per step by a NumPy generator seeded with `(seed, epoch, step)`, so
the same seed gives the same samples. The generation itself does not
happen in the data pipeline (TensorFlow prefetches it in another thread,
and JAX keeps the training state outside the model): `Distiller.fit` adds
a callback that wraps the step function and, right before each step,
generates with the weights that step trains (on JAX, from the training
state itself), in one compiled loop (`tf.function`, `jax.jit`, or eager
PyTorch under `no_grad`).
"""

import numbers

import keras
import numpy as np
from keras import ops

from keras_kd.data import _generation
from keras_kd.utils import validation

DATA, STUDENT, TEACHER = 0, 1, 2
INFO_KEY = "_on_policy"
# Per-step logs (history keys), documented in `on_policy`.
LOG_KEYS = ("on_policy_fraction", "generation_time", "tokens_generated",
            "completion_length", "teacher_log_prob")


def on_policy(distiller, prompts, completions=None, batch_size=32, lmbda=0.5,
              max_new_tokens=None, temperature=1.0, top_k=None, top_p=None,
              seq_kd=False, generation_batch_size=None, seed=None,
              end_token_id=None, shuffle=True, log_teacher_log_prob=True):
    """Batches where the student (or the teacher) completes the prompts.

    For a fraction `lmbda` of the batches (decided per batch by a seeded
    generator), the **current** student samples a completion of each
    prompt; the teacher scores prompt + completion in the Distiller's step
    and the terms (e.g. `keras_kd.terms.ReverseKL()` or
    `keras_kd.terms.GeneralizedJSD(beta=0.5)`, as GKD) count the completion
    tokens only. The other batches use the data's `completions`
    (off-policy, what `fit` on token ids does), or with `seq_kd=True` the
    teacher's own samples (sequence-level KD). `lmbda=1` is fully
    on-policy; `lmbda=0` is exactly `fit` on the prompt + completion token
    ids with the prompt masked.

    A completion ends at the end token (`end_token_id`, by default the
    student's tokenizer's): it counts, later positions do not. Generation
    recomputes the whole sequence at each new token (no key/value cache),
    so it suits short completions.

    Per step, `fit` logs (running means over the epoch; history keys):
    `on_policy_fraction` (share of the batches sampled by the student),
    `generation_time` (seconds per generated batch), `tokens_generated`
    (new tokens per generated batch, end tokens included),
    `completion_length` (mean new tokens per generated sequence) and
    `teacher_log_prob` (the teacher's mean log-probability, at temperature
    1, of the tokens the student sampled: one extra teacher forward pass per
    student batch, skipped with `log_teacher_log_prob=False`).

    Args:
        distiller: The `keras_kd.Distiller` that will `fit` on the batches;
            its student (and teacher, with `seq_kd=True`) must be causal
            language models over token ids.
        prompts: A list of strings (tokenized by the student's KerasHub
            preprocessor, start token included when it adds one), or a dict
            `{"token_ids": (n, p), "padding_mask": (n, p)}`, right-padded,
            each row with its own length.
        completions: The data's completions, in the same form as `prompts`
            (strings get the end token appended when the preprocessor adds
            one), or `None` when every batch is generated (`lmbda=1` or
            `seq_kd=True`). Defaults to `None`.
        batch_size: Positive integer. Defaults to `32`.
        lmbda: Float in [0, 1], the share of student-generated batches.
            Defaults to `0.5`.
        max_new_tokens: Positive integer, the most tokens generated per
            completion, or `None` for the longest data completion.
            Defaults to `None`.
        temperature: Positive float, the sampling temperature. Defaults to
            `1.0`.
        top_k: Positive integer or `None`: sample among the `top_k` most
            likely tokens (`top_k=1` is greedy). Defaults to `None`.
        top_p: Float in (0, 1] or `None`: nucleus sampling. Defaults to
            `None`.
        seq_kd: Boolean. The batches that the student does not generate are
            completed by the teacher instead of taken from the data.
            Defaults to `False`.
        generation_batch_size: Positive integer or `None`, rows generated at
            a time (bounds the memory of generation). Defaults to
            `batch_size`.
        seed: Integer or `None`. The same seed gives the same batches and
            the same samples (for the same weights). Defaults to `None`.
        end_token_id: Integer or `None`, the end-of-sequence token. Defaults
            to the student's tokenizer's `end_token_id`, else `None` (every
            completion runs to `max_new_tokens`).
        shuffle: Boolean, reshuffle the prompts every epoch (seeded).
            Defaults to `True`.
        log_teacher_log_prob: Boolean, log `teacher_log_prob`. Defaults to
            `True`.

    Returns:
        An `OnPolicyData` (a `keras.utils.PyDataset` of
        `({"token_ids", "padding_mask", ...}, labels, sample_weight)`
        batches) for `distiller.fit(data, epochs=...)`. It works on
        TensorFlow, JAX and PyTorch, on one device (and JAX
        `keras.distribution.DataParallel`), but not under a
        `tf.distribute` strategy; pass it to `fit` only (evaluate on token
        ids).

    Example:

    ```python
    data = keras_kd.data.on_policy(
        distiller, prompts, completions, lmbda=0.5, max_new_tokens=8,
        seed=0)
    distiller.fit(data, epochs=3)
    ```

    Reference:
    - [Agarwal et al., 2024](https://arxiv.org/abs/2306.13649) (GKD)
    - [Kim & Rush, 2016](https://arxiv.org/abs/1606.07947) (seq-KD)
    """
    return OnPolicyData(
        distiller, prompts, completions=completions, batch_size=batch_size,
        lmbda=lmbda, max_new_tokens=max_new_tokens, temperature=temperature,
        top_k=top_k, top_p=top_p, seq_kd=seq_kd,
        generation_batch_size=generation_batch_size, seed=seed,
        end_token_id=end_token_id, shuffle=shuffle,
        log_teacher_log_prob=log_teacher_log_prob)


class OnPolicyData(keras.utils.PyDataset):
    """The batches of `keras_kd.data.on_policy` (see there for arguments)."""

    def __init__(self, distiller, prompts, completions=None, batch_size=32,
                 lmbda=0.5, max_new_tokens=None, temperature=1.0, top_k=None,
                 top_p=None, seq_kd=False, generation_batch_size=None,
                 seed=None, end_token_id=None, shuffle=True,
                 log_teacher_log_prob=True):
        super().__init__()
        if not hasattr(distiller, "_teacher_models") or not hasattr(
                distiller, "student"):
            raise TypeError(
                "Argument `distiller` must be a `keras_kd.Distiller`. "
                f"Received: distiller={validation.short_repr(distiller)}")
        self.distiller = distiller
        self.lmbda = validation.check_unit_interval("lmbda", lmbda)
        self.batch_size = validation.check_positive_integer(
            "batch_size", batch_size)
        self.generation_batch_size = self.batch_size if \
            generation_batch_size is None else \
            validation.check_positive_integer("generation_batch_size",
                                              generation_batch_size)
        self.temperature, self.top_k, self.top_p = \
            _generation.check_sampling(temperature, top_k, top_p)
        self.seq_kd = validation.check_bool("seq_kd", seq_kd)
        self.shuffle = validation.check_bool("shuffle", shuffle)
        self.log_teacher_log_prob = validation.check_bool(
            "log_teacher_log_prob", log_teacher_log_prob)
        if seed is None:
            seed = int(np.random.SeedSequence().entropy % (2 ** 31))
        elif isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
            raise TypeError(
                "Argument `seed` must be an integer or None. Received: "
                f"seed={seed!r}")
        self.seed = int(seed)
        if len(distiller._teacher_models) != 1:
            raise ValueError(
                "On-policy batches need a Distiller with one teacher. "
                f"Received: teachers {distiller.teacher_names}")
        if distiller._output_rank != 3:
            raise ValueError(
                "On-policy batches need a language-model student returning "
                "`(batch, sequence, vocabulary)` logits. Received: a student "
                f"with outputs of rank {distiller._output_rank}")
        vocabulary = distiller.num_classes
        tokenizer, preprocessor = _tokenizer(distiller)
        self.end_token_id = _end_token(end_token_id, tokenizer)
        self._prompts = _token_rows(prompts, "prompts", preprocessor,
                                    tokenizer, end=False)
        generated_always = self.lmbda == 1.0 or self.seq_kd
        if completions is None:
            if not generated_always:
                raise ValueError(
                    "Argument `completions` is needed for the off-policy "
                    f"batches (lmbda={self.lmbda} < 1 and seq_kd=False). Pass "
                    "the data's completions, `lmbda=1.0` or `seq_kd=True`.")
            self._completions = None
        else:
            self._completions = _token_rows(completions, "completions",
                                            preprocessor, tokenizer, end=True)
            if len(self._completions) != len(self._prompts):
                raise ValueError(
                    "Arguments `prompts` and `completions` must have the same "
                    f"number of rows. Received: {len(self._prompts)} prompts "
                    f"and {len(self._completions)} completions")
        longest = 0 if self._completions is None else max(
            len(c) for c in self._completions)
        if max_new_tokens is None:
            if longest == 0:
                raise ValueError(
                    "Argument `max_new_tokens` is needed without data "
                    "completions. Received: max_new_tokens=None")
            max_new_tokens = longest
        self.max_new_tokens = validation.check_positive_integer(
            "max_new_tokens", max_new_tokens)
        if any(len(p) == 0 for p in self._prompts):
            raise ValueError(
                "Every prompt needs at least one token (the first completion "
                "token is predicted from the last prompt token). Received: an "
                "empty prompt")
        for row in self._prompts + (self._completions or []):
            if len(row) and (row.min() < 0 or row.max() >= vocabulary):
                raise ValueError(
                    f"Token ids must be in [0, {vocabulary}) (the student's "
                    f"vocabulary). Received: ids in [{row.min()}, "
                    f"{row.max()}]")
        self.length = max(len(p) for p in self._prompts) + max(
            self.max_new_tokens, longest)
        _generation.check_causal_lm(distiller.student, "student", vocabulary)
        if self.seq_kd:
            _generation.check_causal_lm(distiller.teacher, "teacher",
                                        vocabulary)
        self._generator = _generation.Generator(
            distiller, self.end_token_id, self.temperature, self.top_k,
            self.top_p)
        self._epoch = 0

    # --- PyDataset. -------------------------------------------------------

    def __len__(self):
        return -(-len(self._prompts) // self.batch_size)

    def _order(self):
        n = len(self._prompts)
        if not self.shuffle:
            return np.arange(n)
        return np.random.default_rng([self.seed, self._epoch]).permutation(n)

    def __getitem__(self, index):
        if index < 0 or index >= len(self):
            raise IndexError(f"Batch index {index} is out of range.")
        rows = self._order()[index * self.batch_size:
                             (index + 1) * self.batch_size]
        prompts = [self._prompts[i] for i in rows]
        if self._completions is None:
            completions = [np.zeros((0,), "int32")] * len(rows)
        else:
            completions = [self._completions[i] for i in rows]
        ids, mask, labels, weights = assemble(prompts, completions,
                                              self.length)
        x = {"token_ids": ids, "padding_mask": mask, INFO_KEY: {
            "prompt_length": np.array([len(p) for p in prompts], "int32"),
        }}
        return x, labels, weights

    def source_of(self, epoch, step, rows):
        """`(source, uniforms)` of a step: who completes the batch (DATA,
        STUDENT or TEACHER) and the sampler's uniform numbers, drawn from
        `(seed, epoch, step)` alone."""
        rng = np.random.default_rng([self.seed, epoch, step])
        if rng.random() < self.lmbda:
            source = STUDENT
        else:
            source = TEACHER if self.seq_kd else DATA
        return source, rng.random((rows, self.max_new_tokens),
                                  dtype="float32")

    # --- The hook `Distiller.fit` calls. ----------------------------------

    def _keras_kd_callbacks(self, distiller):
        if distiller is not self.distiller:
            raise ValueError(
                "These on-policy batches were made for another Distiller "
                f"({self.distiller.name!r}). Call `keras_kd.data.on_policy` "
                "with the Distiller that fits on them.")
        return [_OnPolicySteps(self)]

    def _prepare(self, data, state=None, epoch=0, step=0):
        """The batch step `step` of `epoch` trains on, generated now if it
        is to be (with the weights in `state` on JAX)."""
        x, _, _ = keras.utils.unpack_x_y_sample_weight(data)
        info = x[INFO_KEY]
        ids = _numpy(x["token_ids"]).astype("int32")
        prompt_length = _numpy(info["prompt_length"]).astype("int32")
        source, uniforms = self.source_of(epoch, step, len(ids))
        stats = {"student": source == STUDENT}
        if source == DATA:
            _, labels, weights = keras.utils.unpack_x_y_sample_weight(data)
            labels, weights = _numpy(labels), _numpy(weights)
            mask = _numpy(x["padding_mask"])
        else:
            role = "student" if source == STUDENT else "teacher"
            parts, seconds = [], 0.0
            step = self.generation_batch_size
            for start in range(0, len(ids), step):
                part = slice(start, start + step)
                new_ids, new_length, took = self._generator.generate(
                    role, ids[part], prompt_length[part], uniforms[part],
                    state)
                parts.append((new_ids, new_length))
                seconds += took
            ids = np.concatenate([p[0] for p in parts])
            length = np.concatenate([p[1] for p in parts])
            mask, labels, weights = masks(prompt_length, length,
                                          ids.shape[1])
            ids = ids * mask
            labels = next_tokens(ids, labels)
            stats.update(seconds=seconds, tokens=int(length.sum()),
                         rows=len(length))
        model_x = _generation.model_inputs(self.distiller.student, ids, mask)
        batch = (model_x, labels, weights)
        batch = keras.tree.map_structure(ops.convert_to_tensor, batch)
        batch = _distribute(batch)
        if source == STUDENT and self.log_teacher_log_prob:
            total, count = self._generator.score(batch[0], batch[1], state)
            stats.update(log_prob=total, log_prob_count=count)
        self._last_stats = stats
        return batch


def assemble(prompts, completions, length):
    """Right-padded `(ids, padding_mask, labels, sample_weight)` of prompt +
    completion rows; labels are the next tokens of the completion, -1
    elsewhere."""
    n = len(prompts)
    ids = np.zeros((n, length), "int32")
    for b, (p, c) in enumerate(zip(prompts, completions)):
        row = np.concatenate([p, c])[:length]
        ids[b, :len(row)] = row
    prompt_length = np.array([len(p) for p in prompts], "int32")
    completion_length = np.array(
        [min(len(c), length - len(p)) for p, c in zip(prompts, completions)],
        "int32")
    mask, labels, weights = masks(prompt_length, completion_length, length)
    ids = ids * mask
    return ids, mask, next_tokens(ids, labels), weights


def next_tokens(ids, labels):
    """The next token where `labels >= 0`, -1 elsewhere."""
    return np.where(labels >= 0, np.roll(ids, -1, axis=1), -1).astype(
        "int32")


def masks(prompt_length, completion_length, length):
    """`(padding_mask, label_positions, sample_weight)`: positions `t` with
    `prompt_length - 1 <= t < prompt_length + completion_length - 1`
    predict a completion token."""
    positions = np.arange(length)[None]
    end = (prompt_length + completion_length)[:, None]
    mask = (positions < end).astype("int32")
    predicts = (positions >= prompt_length[:, None] - 1) & (
        positions < end - 1)
    labels = np.where(predicts, 0, -1).astype("int32")
    return mask, labels, predicts.astype("float32")


class _OnPolicySteps(keras.callbacks.Callback):
    """Wraps the step function to generate right before each step, and
    writes the generation's logs."""

    def __init__(self, data):
        super().__init__()
        self.data = data
        self._plain = None

    def on_train_begin(self, logs=None):
        model = self.data.distiller
        if model.steps_per_execution != 1:
            raise ValueError(
                "On-policy batches are generated one step at a time: compile "
                "the Distiller with `steps_per_execution=1`. Received: "
                f"steps_per_execution={model.steps_per_execution}")
        # A `fit` that stopped on an error left its wrapper in place.
        plain = getattr(model.train_function, "_keras_kd_plain",
                        model.train_function)
        self._plain = plain
        data = self.data
        backend = keras.backend.backend()
        if backend == "jax":
            def function(state, iterator):
                batch = data._prepare(next(iterator), state, *self._step())
                return plain(state, iter([batch]))
        elif backend == "tensorflow":
            def function(iterator):
                batch = data._prepare(next(iterator), None, *self._step())
                return plain(iter([batch]))
        else:
            def function(batches):
                batch = data._prepare(batches[0], None, *self._step())
                return plain([batch])
        function._keras_kd_plain = plain
        model.train_function = function

    def on_train_end(self, logs=None):
        if self._plain is not None:
            self.data.distiller.train_function = self._plain
            self._plain = None

    def on_epoch_begin(self, epoch, logs=None):
        # The epoch orders the prompts and, with the step, seeds the batch.
        self.data._epoch = epoch
        self._epoch, self._steps = epoch, 0
        self._sums = dict.fromkeys(
            ("batches", "student", "generated", "seconds", "tokens", "rows",
             "log_prob", "log_prob_count"), 0.0)

    def _step(self):
        """`(epoch, step)` of the step about to run."""
        step = self._steps
        self._steps += 1
        return self._epoch, step

    def _record(self):
        stats = self.data._last_stats
        sums = self._sums
        sums["batches"] += 1
        sums["student"] += float(stats["student"])
        if "seconds" in stats:
            sums["generated"] += 1
            for key in ("seconds", "tokens", "rows"):
                sums[key] += stats[key]
        if "log_prob" in stats:
            sums["log_prob"] += stats["log_prob"]
            sums["log_prob_count"] += stats["log_prob_count"]

    def _logs(self):
        sums = self._sums
        logs = {}
        if sums["batches"]:
            logs["on_policy_fraction"] = sums["student"] / sums["batches"]
        if sums["generated"]:
            logs["generation_time"] = sums["seconds"] / sums["generated"]
            logs["tokens_generated"] = sums["tokens"] / sums["generated"]
            logs["completion_length"] = sums["tokens"] / max(sums["rows"], 1)
        if sums["log_prob_count"]:
            logs["teacher_log_prob"] = (sums["log_prob"]
                                        / sums["log_prob_count"])
        return logs

    def on_train_batch_end(self, batch, logs=None):
        self._record()
        if logs is not None:
            logs.update(self._logs())

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs.update(self._logs())


def _numpy(value):
    return np.asarray(ops.convert_to_numpy(value))


def _distribute(batch):
    """Lays a new batch out over the devices of a JAX distribution."""
    if keras.backend.backend() != "jax" or \
            keras.distribution.distribution() is None:
        return batch
    # The private helper Keras' JAX trainer shards its batches with.
    from keras.src.backend.jax.trainer import _distribute_data

    return _distribute_data(batch)


def _tokenizer(distiller):
    preprocessor = getattr(distiller, "_preprocessor", None) or getattr(
        distiller.student, "preprocessor", None)
    tokenizer = getattr(preprocessor, "tokenizer", None)
    return tokenizer, preprocessor


def _end_token(end_token_id, tokenizer):
    if end_token_id is None:
        return getattr(tokenizer, "end_token_id", None)
    if isinstance(end_token_id, bool) or not isinstance(
            end_token_id, numbers.Integral) or end_token_id < 0:
        raise ValueError(
            "Argument `end_token_id` must be a non-negative integer or None. "
            f"Received: end_token_id={end_token_id!r}")
    return int(end_token_id)


def _token_rows(data, name, preprocessor, tokenizer, end):
    """A list of 1-D int32 arrays, one per prompt (or completion)."""
    if isinstance(data, dict):
        if "token_ids" not in data:
            raise ValueError(
                f"A dict `{name}` must hold 'token_ids' (and "
                f"'padding_mask'). Received keys: {sorted(data)}")
        ids = np.asarray(ops.convert_to_numpy(data["token_ids"]))
        if ids.ndim != 2:
            raise ValueError(
                f"`{name}['token_ids']` must be 2-D `(rows, length)`. "
                f"Received: shape {ids.shape}")
        mask = np.asarray(ops.convert_to_numpy(
            data.get("padding_mask", np.ones_like(ids)))).astype(bool)
        if mask.shape != ids.shape:
            raise ValueError(
                f"`{name}['padding_mask']` must have the shape of its "
                f"'token_ids'. Received: {mask.shape} and {ids.shape}")
        lengths = mask.sum(axis=1)
        if np.any(mask != (np.arange(ids.shape[1])[None] < lengths[:, None])):
            raise ValueError(
                f"`{name}` must be right-padded: each row's padding mask is "
                "ones then zeros. Received: a mask with a gap or left "
                "padding")
        return [ids[i, :n].astype("int32") for i, n in enumerate(lengths)]
    if isinstance(data, str):
        data = [data]
    if isinstance(data, np.ndarray):
        data = data.tolist()
    if isinstance(data, (list, tuple)) and all(
            isinstance(s, str) for s in data):
        if tokenizer is None:
            raise ValueError(
                f"String `{name}` are tokenized by the student's KerasHub "
                "preprocessor, and this student has none. Pass a dict "
                "`{'token_ids', 'padding_mask'}` instead.")
        rows = []
        for text in data:
            ids = np.asarray(ops.convert_to_numpy(
                tokenizer.tokenize(text))).astype("int32").reshape(-1)
            if not end and getattr(preprocessor, "add_start_token", False):
                ids = np.concatenate([[tokenizer.start_token_id], ids])
            if end and getattr(preprocessor, "add_end_token", False):
                ids = np.concatenate([ids, [tokenizer.end_token_id]])
            rows.append(ids.astype("int32"))
        return rows
    raise TypeError(
        f"Argument `{name}` must be a list of strings or a dict "
        "`{'token_ids', 'padding_mask'}`. Received: "
        f"{name}={validation.short_repr(data)}")


def generate(model, prompts, max_new_tokens, temperature=1.0, top_k=None,
             top_p=None, end_token_id=None, seed=None, batch_size=64):
    """Completes prompts with a causal LM (seeded; `top_k=1` is greedy).

    The sampler `keras_kd.data.on_policy` uses, with the model's current
    weights, outside `fit`.

    Args:
        model: A causal language model (token ids, or KerasHub's
            `{"token_ids", "padding_mask"}`, to logits).
        prompts: Strings (through `model.preprocessor`) or a right-padded
            dict `{"token_ids", "padding_mask"}`.
        max_new_tokens: Positive integer.
        temperature, top_k, top_p: As in `keras_kd.data.on_policy`.
        end_token_id: Integer or `None` (the tokenizer's, if any).
        seed: Integer or `None`.
        batch_size: Positive integer, rows generated at a time. Defaults to
            `64`.

    Returns:
        A dict of NumPy arrays: `"token_ids"` `(n, length)` (prompt then
        completion, 0 after it), `"prompt_length"` `(n,)` and
        `"completion_length"` `(n,)` (new tokens, the end token included).

    Example:

    ```python
    out = keras_kd.data.generate(student, prompts, max_new_tokens=8, top_k=1)
    ```
    """
    validation.check_model("model", model)
    temperature, top_k, top_p = _generation.check_sampling(temperature, top_k,
                                                           top_p)
    max_new_tokens = validation.check_positive_integer("max_new_tokens",
                                                       max_new_tokens)
    batch_size = validation.check_positive_integer("batch_size", batch_size)
    preprocessor = getattr(model, "preprocessor", None)
    tokenizer = getattr(preprocessor, "tokenizer", None)
    end_token_id = _end_token(end_token_id, tokenizer)
    rows = _token_rows(prompts, "prompts", preprocessor, tokenizer, end=False)
    length = max(len(r) for r in rows) + max_new_tokens
    ids, _, _, _ = assemble(rows, [np.zeros((0,), "int32")] * len(rows),
                            length)
    prompt_length = np.array([len(r) for r in rows], "int32")
    rng = np.random.default_rng(seed)
    uniforms = rng.random((len(rows), max_new_tokens), dtype="float32")
    generator = _generation.Generator(model, end_token_id, temperature,
                                      top_k, top_p, models={"model": model})
    outs, lengths = [], []
    for start in range(0, len(rows), batch_size):
        part = slice(start, start + batch_size)
        out, n, _ = generator.generate("model", ids[part], prompt_length[part],
                                       uniforms[part])
        outs.append(out)
        lengths.append(n)
    length = np.concatenate(lengths)
    ids = np.concatenate(outs)
    mask, _, _ = masks(prompt_length, length, ids.shape[1])
    return {"token_ids": ids * mask, "prompt_length": prompt_length,
            "completion_length": length}
