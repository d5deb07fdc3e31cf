"""PyTorch train/test steps of the Distiller.

Copies `keras/src/backend/torch/trainer.py` step for step. Deviations, each
marked below: the frozen teacher runs under `torch.no_grad()` before the
student (or is skipped when the batch carries cached outputs), and the loss
terms are logged next to the total loss.

Keras' torch trainer has no data-parallel path in `fit` (no strategy and no
`keras.distribution` support), so every step sees the whole batch on one
device: summing over replicas, gathering the global batch and keeping this
replica's rows are all the identity here.
"""

import warnings

import keras
import torch

from keras_kd._steps._local import WholeBatch


class TorchSteps(WholeBatch):
    """Mixin with the PyTorch `train_step` and `test_step`.

    One device: Keras' torch `fit` does not split a batch over replicas, so
    the local sum is the global one.
    """

    def train_step(self, data):
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        labels, cached = self._split_targets(y)
        x = self._augment(x, cached)
        # Deviation: the frozen teacher runs first, under `no_grad`, so its
        # activations are never recorded for the backward pass (Keras runs
        # one forward, the model's own).
        with torch.no_grad():
            teacher = self._teacher_outputs(x, cached)

        # Compute predictions and the loss (the student runs once).
        loss, terms, student_logits = self._distillation_loss(
            x, labels, sample_weight, teacher, training=True
        )

        # Call torch.nn.Module.zero_grad() to clear the leftover gradients
        # for the weights from the previous train step.
        self.zero_grad()

        # Deviation: the loss terms are logged beside the total, each with
        # its own count, instead of one loss tracker weighted by batch size.
        self._update_loss_trackers(loss, terms)
        if self.optimizer is not None:
            loss = self.optimizer.scale_loss(loss)

        # Compute gradients
        if self.trainable_weights:
            # Call torch.Tensor.backward() on the loss to compute gradients
            # for the weights.
            loss.backward()

            trainable_weights = self.trainable_weights[:]
            gradients = [v.value.grad for v in trainable_weights]

            # Update weights
            with torch.no_grad():
                self.optimizer.apply(gradients, trainable_weights)
        else:
            warnings.warn("The model does not have any trainable weights.")

        return self._update_metrics(
            labels, student_logits, teacher,
            terms, sample_weight
        )

    def test_step(self, data):
        # Keras' `make_test_function` already runs this under `no_grad`.
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        labels, cached = self._split_targets(y)
        teacher = self._teacher_outputs(x, cached)
        loss, terms, student_logits = self._distillation_loss(
            x, labels, sample_weight, teacher, training=False
        )
        self._update_loss_trackers(loss, terms)
        return self._update_metrics(
            labels, student_logits, teacher,
            terms, sample_weight
        )
