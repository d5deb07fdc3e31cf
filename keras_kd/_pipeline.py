"""Raw inputs through a KerasHub preprocessor, as KerasHub's own `fit` does.

A KerasHub task (e.g. `keras_hub.models.GPT2CausalLM`) built with a
`preprocessor` takes raw strings in `fit`: its preprocessor tokenizes them
into `(x, y, sample_weight)` inside a `tf.data` pipeline. The Distiller
does the same with the student's preprocessor, so both models see the same
token ids and the padding mask becomes the `(batch, sequence)` sample
weight.
"""

import keras


def resolve(preprocessor, student):
    """The preprocessor in use: `"auto"` takes the student's own."""
    if preprocessor is None:
        return None
    if isinstance(preprocessor, str):
        if preprocessor != "auto":
            raise ValueError(
                "Argument `preprocessor` must be 'auto', None, or a "
                "preprocessing layer (e.g. a KerasHub "
                f"`CausalLMPreprocessor`). Received: preprocessor="
                f"{preprocessor!r}"
            )
        return getattr(student, "preprocessor", None)
    if not callable(preprocessor):
        raise TypeError(
            "Argument `preprocessor` must be a layer or function mapping a "
            "batch of raw inputs to `(x, y, sample_weight)`. Received: "
            f"preprocessor={preprocessor!r}"
        )
    return preprocessor


def preprocessed(preprocessor, x, y=None, sample_weight=None, batch_size=None,
                 shuffle=False):
    """A `tf.data.Dataset` of `preprocessor` applied to each batch."""
    import tensorflow as tf

    if isinstance(x, tf.data.Dataset):
        if y is not None or sample_weight is not None:
            raise ValueError(
                "With a `tf.data.Dataset` as `x`, `y` and `sample_weight` "
                "come from the dataset. Received: y or sample_weight as well."
            )
        dataset = x
    else:
        if isinstance(x, keras.utils.PyDataset):
            raise ValueError(
                "A `PyDataset` is not passed through the preprocessor. Pass "
                "raw inputs as arrays, lists or a `tf.data.Dataset`, or "
                "preprocess the batches yourself and build the Distiller "
                "with `preprocessor=None`."
            )
        data = keras.utils.pack_x_y_sample_weight(x, y, sample_weight)
        dataset = tf.data.Dataset.from_tensor_slices(data)
        if shuffle:
            dataset = dataset.shuffle(
                int(dataset.cardinality()), reshuffle_each_iteration=True)
        dataset = dataset.batch(batch_size or 32)

    def apply(*batch):
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(
            batch[0] if len(batch) == 1 else batch)
        return preprocessor(x, y, sample_weight)

    return dataset.map(apply, num_parallel_calls=tf.data.AUTOTUNE).prefetch(
        tf.data.AUTOTUNE)
