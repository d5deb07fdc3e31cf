"""Backend-specific train/test steps, picked at import time.

This mirrors `keras/src/models/model.py`, which picks its trainer class from
`keras.backend.backend()`.
"""

import keras

_BACKEND = keras.backend.backend()

if _BACKEND == "tensorflow":
    from keras_kd._steps.tensorflow import TensorFlowSteps as BackendSteps
elif _BACKEND == "jax":
    from keras_kd._steps.jax import JAXSteps as BackendSteps
elif _BACKEND == "torch":
    from keras_kd._steps.torch import TorchSteps as BackendSteps
else:

    from keras_kd._steps._local import WholeBatch

    class BackendSteps(WholeBatch):
        """Placeholder for backends keras_kd does not train on."""

        def train_step(self, *args, **kwargs):
            raise NotImplementedError(
                "keras_kd trains on the TensorFlow, JAX and PyTorch backends. "
                f"Received: keras.backend.backend()={_BACKEND!r}. Set "
                "KERAS_BACKEND=tensorflow, jax or torch."
            )

        test_step = train_step
