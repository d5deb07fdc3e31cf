"""Replica helpers for steps that see the whole batch at once."""


class WholeBatch:
    """`_global_sum`, `_gather_batch` and `_local_rows` for a step that sees
    the global batch: a jitted JAX step (also under `keras.distribution`)
    and Keras' torch `fit`, which does not split a batch over replicas."""

    def _global_sum(self, value):
        return value

    def _gather_batch(self, value):
        return value

    def _local_rows(self, values, batch):
        return values
