"""JAX train/test steps of the Distiller.

Copies `keras/src/backend/jax/trainer.py` step for step, in stateless form.
Deviations, each marked below: the teacher runs before `jax.value_and_grad`
under `stop_gradient` (or is skipped when the batch carries cached outputs),
and the loss terms are logged next to the total loss.
"""

import jax
import keras
from keras import tree

from keras_kd._steps._local import WholeBatch


class JAXSteps(WholeBatch):
    """Mixin with the stateless JAX `train_step` and `test_step`.

    A jitted JAX step sees the global batch (also under
    `keras.distribution`), so a plain sum is already global.
    """

    def _state_mapping(self, trainable_variables, non_trainable_variables):
        return list(zip(self.trainable_variables, trainable_variables)) + list(
            zip(self.non_trainable_variables, non_trainable_variables)
        )

    def _stateless_augment(self, trainable, non_trainable, x, cached):
        """Augments the batch once; returns it and the updated state."""
        if self.augmentation is None:
            return x, non_trainable
        mapping = self._state_mapping(trainable, non_trainable)
        with keras.StatelessScope(state_mapping=mapping) as scope:
            x = self._augment(x, cached)
        updated = []
        for ref_v, v in zip(self.non_trainable_variables, non_trainable):
            value = scope.get_current_value(ref_v)
            updated.append(v if value is None else value)
        return x, updated

    def _stateless_teacher(self, trainable, non_trainable, x, cached):
        # Deviation: the teacher is evaluated once, outside the function
        # that is differentiated.
        if cached is not None:
            outputs = self._teacher_outputs(x, cached)
        else:
            mapping = self._state_mapping(trainable, non_trainable)
            with keras.StatelessScope(state_mapping=mapping):
                outputs = self._teacher_outputs(x, None)
        return tree.map_structure(jax.lax.stop_gradient, outputs)

    def _stateless_loss(
        self,
        trainable_variables,
        non_trainable_variables,
        optimizer_variables,
        x,
        labels,
        sample_weight,
        teacher,
        training,
    ):
        mapping = self._state_mapping(
            trainable_variables, non_trainable_variables
        )
        with keras.StatelessScope(
            state_mapping=mapping, collect_losses=True
        ) as scope:
            loss, terms, student_logits = self._distillation_loss(
                x, labels, sample_weight, teacher, training=training
            )
        new_non_trainable = []
        for ref_v, v in zip(
            self.non_trainable_variables, non_trainable_variables
        ):
            value = scope.get_current_value(ref_v)
            new_non_trainable.append(v if value is None else value)
        unscaled_loss = loss
        if training and self.optimizer is not None:
            opt_mapping = list(
                zip(self.optimizer.variables, optimizer_variables)
            )
            with keras.StatelessScope(state_mapping=opt_mapping):
                loss = self.optimizer.scale_loss(loss)
        return loss, (unscaled_loss, terms, student_logits, new_non_trainable)

    def _stateless_metrics(
        self, metrics_variables, loss, terms, labels, logits, teacher, sw
    ):
        mapping = list(zip(self.metrics_variables, metrics_variables))
        with keras.StatelessScope(state_mapping=mapping) as scope:
            self._update_loss_trackers(loss, terms)
            logs = self._update_metrics(labels, logits, teacher,
                                        terms, sw)
        new_metrics_variables = []
        for ref_v in self.metrics_variables:
            new_v = scope.get_current_value(ref_v)
            new_metrics_variables.append(
                ref_v.value if new_v is None else new_v
            )
        return logs, new_metrics_variables

    def train_step(self, state, data):
        (
            trainable_variables,
            non_trainable_variables,
            optimizer_variables,
            metrics_variables,
        ) = state
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        labels, cached = self._split_targets(y)
        x, non_trainable_variables = self._stateless_augment(
            trainable_variables, non_trainable_variables, x, cached
        )
        teacher = self._stateless_teacher(
            trainable_variables, non_trainable_variables, x, cached
        )
        grad_fn = jax.value_and_grad(self._stateless_loss, has_aux=True)
        (_, aux), grads = grad_fn(
            trainable_variables,
            non_trainable_variables,
            optimizer_variables,
            x,
            labels,
            sample_weight,
            teacher,
            True,
        )
        unscaled_loss, terms, student_logits, non_trainable_variables = aux
        (
            trainable_variables,
            optimizer_variables,
        ) = self.optimizer.stateless_apply(
            optimizer_variables, grads, trainable_variables
        )
        logs, metrics_variables = self._stateless_metrics(
            metrics_variables,
            unscaled_loss,
            terms,
            labels,
            student_logits,
            teacher,
            sample_weight,
        )
        state = (
            trainable_variables,
            non_trainable_variables,
            optimizer_variables,
            metrics_variables,
        )
        return logs, state

    def test_step(self, state, data):
        (
            trainable_variables,
            non_trainable_variables,
            metrics_variables,
        ) = state
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        labels, cached = self._split_targets(y)
        teacher = self._stateless_teacher(
            trainable_variables, non_trainable_variables, x, cached
        )
        loss, aux = self._stateless_loss(
            trainable_variables,
            non_trainable_variables,
            None,
            x,
            labels,
            sample_weight,
            teacher,
            False,
        )
        _, terms, student_logits, non_trainable_variables = aux
        logs, metrics_variables = self._stateless_metrics(
            metrics_variables,
            loss,
            terms,
            labels,
            student_logits,
            teacher,
            sample_weight,
        )
        state = (
            trainable_variables,
            non_trainable_variables,
            metrics_variables,
        )
        return logs, state
