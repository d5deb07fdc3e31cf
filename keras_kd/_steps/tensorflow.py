"""TensorFlow train/test steps of the Distiller.

Copies `keras/src/backend/tensorflow/trainer.py` step for step. Deviations,
each marked below: the teacher runs before the `GradientTape` (or is skipped
when the batch carries cached outputs), and every loss term is normalised by
counts summed over replicas, so a `tf.distribute` strategy gives the same
gradients as one device.
"""

import keras
import tensorflow as tf

from keras_kd.utils import keras_compat


class TensorFlowSteps:
    """Mixin with the TensorFlow `train_step` and `test_step`."""

    def _global_sum(self, value):
        # Deviation: Keras divides each replica's mean by the replica count,
        # which is exact only for equal per-replica counts. Summing the count
        # over replicas is exact for uneven and masked batches too.
        context = tf.distribute.get_replica_context()
        if context is None or context.num_replicas_in_sync == 1:
            return value
        return context.all_reduce(tf.distribute.ReduceOp.SUM, value)

    def _gather_batch(self, value):
        """The global batch of `value`, gathered from every replica."""
        context = tf.distribute.get_replica_context()
        if context is None or context.num_replicas_in_sync == 1:
            return value
        return context.all_gather(value, axis=0)

    def _local_rows(self, values, batch):
        """The rows of `values` (global batch) that belong to this replica."""
        context = tf.distribute.get_replica_context()
        if context is None or context.num_replicas_in_sync == 1:
            return values
        sizes = context.all_gather(tf.reshape(batch, (1,)), axis=0)
        replica = context.replica_id_in_sync_group
        start = tf.reduce_sum(sizes[:replica])
        return values[start:start + batch]

    def _maybe_symbolic_build(self, iterator=None, data_batch=None):
        # Deviation (keras-team/keras#20585): Keras reads the first batch's
        # shapes through an eager `strategy.reduce("MEAN", ...)`, which fails
        # under MultiWorkerMirroredStrategy. Shapes and dtypes are all that
        # the symbolic build needs, so the first local replica's batch does.
        strategy = keras_compat.distribute_strategy(self)
        if iterator is not None and strategy is not None:
            for _, _, it in iterator:
                data_batch = tf.nest.map_structure(
                    lambda v: _first_local_value(strategy, v), next(it)
                )
                break
            iterator = None
        return super()._maybe_symbolic_build(
            iterator=iterator, data_batch=data_batch
        )

    def train_step(self, data):
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        labels, cached = self._split_targets(y)
        x = self._augment(x, cached)
        # Deviation: the frozen teacher runs outside the tape, so its
        # activations are never recorded for the backward pass.
        teacher = self._teacher_outputs(x, cached)
        with tf.GradientTape() as tape:
            loss, terms, student_logits = self._distillation_loss(
                x, labels, sample_weight, teacher, training=True
            )
            scaled_loss = self.optimizer.scale_loss(loss)
        trainable_weights = self.trainable_weights
        gradients = tape.gradient(scaled_loss, trainable_weights)
        self.optimizer.apply_gradients(zip(gradients, trainable_weights))
        self._update_loss_trackers(loss, terms)
        return self._multi_worker_logs(
            self._update_metrics(labels, student_logits, teacher,
                                 terms, sample_weight)
        )

    def test_step(self, data):
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        labels, cached = self._split_targets(y)
        teacher = self._teacher_outputs(x, cached)
        loss, terms, student_logits = self._distillation_loss(
            x, labels, sample_weight, teacher, training=False
        )
        self._update_loss_trackers(loss, terms)
        return self._multi_worker_logs(
            self._update_metrics(labels, student_logits, teacher,
                                 terms, sample_weight)
        )

    def _multi_worker_logs(self, logs):
        # Deviation (keras-team/keras#20585): across workers Keras reduces the
        # step's logs with `strategy.reduce("MEAN", value, axis=0)`, which
        # fails on scalars. Every replica holds the same (synchronised)
        # metric values, so a length-1 axis makes that mean exact.
        strategy = self.distribute_strategy
        if not keras_compat.in_multi_worker_mode(strategy):
            return logs
        return {k: tf.reshape(v, (1,)) for k, v in logs.items()}


def _first_local_value(strategy, value):
    if isinstance(value, tf.distribute.DistributedValues):
        return strategy.experimental_local_results(value)[0]
    return value
