"""The loss and metrics of a Distiller's step, as a mixin of `Distiller`.

One loop over the terms: every term is weighed per position (sample, or
token of a sequence model), masked, and divided by counts summed over all
replicas, so one device and several replicas give the same weights.
"""

from keras import ops

from keras_kd.losses.logits import is_dense_labels
from keras_kd.losses.logits import label_mask
from keras_kd.utils import keras_compat

# Keys of the target dict that carries cached teacher outputs.
LABELS_KEY = "labels"
TEACHER_LOGITS_KEY = "teacher_logits"
TEACHER_FEATURES_KEY = "teacher_features"


# Key of the terms dict holding the loss's `(weights, mask)` per position,
# so the metrics reuse the weights and masks the loss computed.
POSITIONS_KEY = "_positions"


def apply(preprocessing, inputs):
    return inputs if preprocessing is None else preprocessing(inputs)


class LossMixin:
    """`_distillation_loss`, the trackers and `compute_metrics`."""

    def _split_targets(self, y):
        """Returns `(labels, cached_teacher_outputs)` from the target `y`."""
        if isinstance(y, dict) and TEACHER_LOGITS_KEY in y:
            return y.get(LABELS_KEY), y
        if isinstance(y, dict):
            raise ValueError(
                "A dict target must hold the key 'teacher_logits' (cached "
                "teacher outputs, see `keras_kd.data`). Received keys: "
                f"{sorted(y)}"
            )
        return y, None

    def _distillation_loss(self, x, labels, sample_weight, teacher, training):
        """Total loss, the logged terms and the student logits of a batch.

        Every term is `sum over this replica / count over all replicas`, so
        the gradients summed over replicas equal those of one device. The
        loop is the same for every term; what differs comes from the term's
        declarations (`needs_labels`, `relational`, `response`).
        """
        inputs = apply(self.student_preprocessing, x)
        student = self._forward(
            self.student, self._student_view, inputs, training=training
        )
        logits = student[0]
        batch = ops.shape(logits)[0]
        samples = self._global_sum(ops.cast(batch, "float32"))
        keras_mask = keras_compat.keras_mask(logits) \
            if len(logits.shape) > 2 else None
        weights, mask = self._position_weights(logits, labels, sample_weight,
                                               keras_mask)
        labeled = None
        if len(logits.shape) > 2:
            # Per token: only the real tokens of the global batch count, so
            # padding never does and 1 or 2 replicas weigh them the same.
            count = self._global_sum(ops.sum(mask))
            if labels is not None:
                labeled = count
        else:
            count = samples
            if labels is not None:
                labeled = self._global_sum(ops.sum(mask))
        alpha = self._effective_alpha(labeled)
        total = ops.zeros((), "float32")
        terms = {"loss": (None, count)}
        for term, (t_read, s_index) in zip(self.terms, self._reads):
            if term.needs_labels and labels is None:
                continue
            t_in = _select(teacher, t_read)
            s_in = student[s_index]
            if term.relational:
                # Relations span the global batch: gather it from every
                # replica, keep this replica's rows.
                gather = self._gather_batch
                values = self._local_rows(term(
                    _map(gather, t_in), gather(s_in),
                    labels=self._gather_labels(labels),
                ), batch)
            else:
                values = term(t_in, s_in, labels=labels)
            values = _per_position(ops.cast(values, "float32"), weights)
            if term.needs_labels:
                value = ops.divide_no_nan(
                    ops.sum(weights * mask * values), labeled)
                terms[term.log_name] = (value, labeled)
            else:
                value = ops.divide_no_nan(ops.sum(weights * values), count)
                terms[term.log_name] = (value, count)
            total = total + _term_scale(term, alpha) * value
        regularization = self.student.losses + [
            loss for term in self.terms for loss in term.losses
        ]
        if regularization:
            # As Keras' `compute_loss`: one share per replica.
            total = total + ops.sum(ops.stack(regularization)) / (
                samples / ops.cast(batch, "float32")
            )
        total = self._guard_variables(total)
        terms["loss"] = (total, count)
        terms[POSITIONS_KEY] = (weights, mask)
        if getattr(self.student, "fused", False) is True:
            # A `keras_kd.fused.FusedStudent` outputs hidden states and never
            # forms its logits: the metrics get its argmax ids.
            logits = self.student.predicted_ids(logits)
        return total, terms, logits

    def _position_weights(self, logits, labels, sample_weight,
                          keras_mask=None):
        """`(weights, mask)` per position: per sample for `(batch, classes)`
        logits, per token for `(batch, sequence, vocabulary)` logits.

        For a classifier, `weights` are the sample weights and `mask` marks
        the labeled samples (or is None without labels). Per token, a
        position is real when its sample weight is positive and its label
        is not -1 (the padding of KerasHub's preprocessors and Hugging
        Face's -100 convention) and the logits' Keras mask, if any, keeps
        it; `mask` marks the real tokens and `weights` are zero elsewhere,
        for every term.
        """
        rank = len(logits.shape)
        positions = ops.shape(logits)[:-1]
        if sample_weight is None:
            weights = ops.ones(positions, "float32")
        else:
            # One weight per sample or per position: (batch, 1) or
            # (batch, positions) once flat, which broadcasts to every
            # position. (Under tf.function a retraced step may see the
            # weights with an unknown rank.)
            weights = ops.reshape(ops.cast(sample_weight, "float32"),
                                  (positions[0], -1))
            size = 1
            for dim in positions[1:]:
                size = size * dim
            weights = ops.reshape(
                ops.broadcast_to(weights, (positions[0], size)), positions)
        mask = None
        if labels is not None:
            mask = label_mask(labels, self.num_classes, self.outputs, rank)
        if rank == 2:
            return weights, mask
        real = ops.cast(weights > 0, "float32")
        if mask is not None:
            real = real * mask
        if keras_mask is not None:  # E.g. `Embedding(mask_zero=True)`.
            real = real * ops.reshape(ops.cast(keras_mask, "float32"),
                                      ops.shape(real))
        return weights * real, real

    def _gather_labels(self, labels):
        # Integer tensors live on the host under tf.distribute, where
        # `all_gather` has no destination: gather them as float32.
        if labels is None:
            return None
        gathered = self._gather_batch(ops.cast(labels, "float32"))
        return ops.cast(gathered, labels.dtype)

    def _effective_alpha(self, labeled):
        """`alpha`, 0 for a batch without labels, None when unbalanced."""
        if not self._balanced:
            return None
        if labeled is None:
            return ops.zeros((), "float32")
        alpha = ops.cast(self._alpha, "float32")
        return ops.where(labeled > 0, alpha, ops.zeros_like(alpha))

    def _guard_variables(self, total):
        # `alpha.assign(5)` or `temperature.assign(-3)` bypass the setters'
        # checks; inside a traced step the loss then becomes NaN (and
        # `fit` refuses such values before it starts).
        alpha = ops.cast(self._alpha, "float32")
        temperature = ops.cast(self._temperature, "float32")
        valid = ops.logical_and(
            ops.logical_and(alpha >= 0.0, alpha <= 1.0), temperature > 0.0
        )
        return ops.where(valid, total, ops.full_like(total, float("nan")))

    def _update_loss_trackers(self, loss, terms):
        # Each logged value is the global (all-replica) value, weighted by
        # its count, so a Mean over replicas and batches is exact.
        _, count = terms["loss"]
        keras_compat.loss_tracker(self).update_state(
            self._global_sum(loss), sample_weight=count
        )
        for term, tracker in zip(self.terms, self.term_trackers):
            if term.log_name in terms:
                value, n = terms[term.log_name]
                tracker.update_state(self._global_sum(value), sample_weight=n)

    def _update_metrics(self, labels, logits, teacher, terms, sample_weight):
        """Updates `teacher_agreement` and the compiled metrics with the
        weights and masks the loss computed (`terms[POSITIONS_KEY]`)."""
        weights, mask = terms[POSITIONS_KEY]
        teacher_logits = [outputs[0] for outputs in teacher]
        # A `keras_kd.fused.FusedStudent` gives its argmax ids.
        agreement = self.student.teacher_agreement if getattr(
            self.student, "fused", False) is True else None
        self.teacher_agreement_tracker.update_state(
            _agreement(logits, teacher_logits, self.outputs)
            if agreement is None else agreement(logits, teacher_logits),
            sample_weight=weights,
        )
        if type(self).compute_metrics is LossMixin.compute_metrics:
            logs = self._update_compiled_metrics(labels, logits, weights, mask)
        else:
            # A subclass's own `compute_metrics` (Keras' hook) is called as
            # Keras calls it; per token it gets the loss's weights.
            logs = self.compute_metrics(
                None, labels, logits,
                weights if len(logits.shape) > 2 else sample_weight)
        if labels is None:
            # Without labels the label metrics saw nothing: leave them out of
            # the logs rather than report a misleading 0.
            unlabeled = {t.log_name for t in self.terms if t.needs_labels}
            container = keras_compat.compile_metrics(self)
            if container is not None:
                unlabeled.update(m.name for m in container.metrics)
            logs = {k: v for k, v in logs.items() if k not in unlabeled}
        return logs

    def compute_metrics(self, x, y, y_pred, sample_weight=None):
        """Updates the compiled metrics on the labeled samples only.

        `metrics` stay unweighted and `weighted_metrics` use the sample
        weights, as in Keras; unlabeled samples are left out of both. For
        sigmoid outputs the metrics see `sigmoid(logits)`, so Keras'
        thresholds at 0.5 apply.
        """
        labels, _ = self._split_targets(y)
        if labels is None:
            return self.get_metrics_result()
        weights, mask = self._position_weights(y_pred, labels, sample_weight)
        return self._update_compiled_metrics(labels, y_pred, weights, mask)

    def _update_compiled_metrics(self, labels, y_pred, weights, mask):
        """`compute_metrics` with the loss's `(weights, mask)` per position
        (see `_position_weights`)."""
        metrics = keras_compat.compile_metrics(self)
        if labels is not None and metrics is not None:
            rank = len(y_pred.shape)
            weighted = weights * mask if rank == 2 else weights
            if self.outputs == "sigmoid":
                y_pred = ops.sigmoid(ops.cast(y_pred, "float32"))
                safe = ops.reshape(ops.maximum(ops.cast(labels, "float32"),
                                               0.0), ops.shape(y_pred))
            elif is_dense_labels(labels, self.num_classes, logits_rank=rank):
                safe = labels
            else:
                safe = ops.where(labels >= 0, labels, ops.zeros_like(labels))
            if not metrics.built:
                metrics.build(safe, y_pred)
            unweighted, weighted_metrics = keras_compat.flat_metrics(metrics)
            # Keras' CompileMetrics gives unweighted metrics no weights at
            # all, so each list is updated here with its own weights.
            for group, group_weights in (
                (unweighted, mask),
                (weighted_metrics, weighted),
            ):
                for metric in group:
                    if metric is not None:
                        metric.update_state(safe, y_pred,
                                            sample_weight=group_weights)
        return self.get_metrics_result()


def _select(teacher, read):
    """What a term reads from the teachers' outputs (see `_teacher_read`)."""
    if read is None:
        return None
    if isinstance(read, list):
        return [teacher[i][j] for i, j in read]
    i, j = read
    return teacher[i][j]


def _map(fn, value):
    if value is None:
        return None
    if isinstance(value, list):
        return [fn(v) for v in value]
    return fn(value)


def _per_position(values, weights):
    """Broadcasts one value per sample to every token of a sequence batch."""
    extra = len(weights.shape) - len(values.shape)
    if extra <= 0:
        return values
    values = ops.reshape(values, ops.shape(values) + (1,) * extra)
    return ops.broadcast_to(values, ops.shape(weights))


def _term_scale(term, alpha):
    """The weight of a term: its own, times `alpha` for label terms and
    `1 - alpha` for response terms when the Distiller balances them."""
    if alpha is None:
        return term.weight
    if term.needs_labels:
        return term.weight * alpha
    if term.response:
        return term.weight * (1.0 - alpha)
    return term.weight


def _agreement(logits, teacher_logits, outputs):
    """Per sample: does the student decide as the (ensembled) teachers?"""
    logits = ops.cast(logits, "float32")
    if outputs == "sigmoid":
        p_t = sum(ops.sigmoid(t) for t in teacher_logits) / len(
            teacher_logits)
        same = ops.cast((logits > 0) == (p_t > 0.5), "float32")
        return ops.mean(same, axis=-1)
    if len(teacher_logits) == 1:
        # One teacher decides by its largest logit: no softmax needed.
        p_t = teacher_logits[0]
    else:
        p_t = sum(ops.softmax(t, axis=-1) for t in teacher_logits)
    return ops.cast(
        ops.argmax(logits, axis=-1) == ops.argmax(p_t, axis=-1), "float32"
    )
