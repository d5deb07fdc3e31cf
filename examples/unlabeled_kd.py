"""
Title: Distilling with few labels and many unlabeled images
Description: The teacher labels extra data for free: mix a small labeled set
with unlabeled images (label -1), cache the teacher's outputs once, and
train the student on both.

Data: scikit-learn's handwritten digits; only 100 training labels are kept.
Run `python examples/unlabeled_kd.py` (about a minute: 67 s with TensorFlow
on 2 CPU cores shared with other jobs), or `--quick` for a smoke run. It
prints the student trained on the labels alone beside the distilled one.
"""

"""
## Setup
"""

import argparse
import time

import keras
import numpy as np

import keras_kd

parser = argparse.ArgumentParser()
parser.add_argument("--epochs", type=int, default=60)
parser.add_argument("--labels", type=int, default=100)
parser.add_argument("--quick", action="store_true")
args = parser.parse_args()
start = time.perf_counter()
epochs = 1 if args.quick else args.epochs

(x_train, y_train), (x_test, y_test) = keras_kd.data.load_dataset("digits")
if args.quick:
    x_train, y_train = x_train[:256], y_train[:256]

"""
## A teacher trained elsewhere

Here it is trained on the full training split; in practice it is the large
model you already have.
"""

keras.utils.set_random_seed(0)
teacher = keras.Sequential([
    keras.Input((8, 8, 1)),
    keras.layers.Flatten(),
    keras.layers.Dense(256, activation="relu"),
    keras.layers.Dense(10),
], name="teacher")
teacher.compile(
    optimizer="adam",
    loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
)
teacher.fit(x_train, y_train, epochs=epochs, batch_size=32, verbose=0)

"""
## Few labels: -1 marks the unlabeled images
"""

labels = np.full_like(y_train, -1)
keep = np.random.default_rng(0).choice(len(y_train), args.labels,
                                       replace=False)
labels[keep] = y_train[keep]


def student_model():
    keras.utils.set_random_seed(1)
    return keras.Sequential([
        keras.Input((8, 8, 1)),
        keras.layers.Flatten(),
        keras.layers.Dense(32, activation="relu"),
        keras.layers.Dense(10),
    ], name="student")


scratch = student_model()
scratch.compile(
    optimizer="adam",
    loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    metrics=["accuracy"],
)
scratch.fit(x_train[keep], y_train[keep], epochs=epochs * 5, batch_size=32,
            verbose=0)
_, scratch_accuracy = scratch.evaluate(x_test, y_test, verbose=0)

"""
## Cache the teacher once, then distil on labeled + unlabeled images

The hard loss averages over the labeled images of each batch, the soft loss
over all of them. With cached outputs an epoch costs about a student-only
epoch.
"""

distiller = keras_kd.Distiller(teacher, student_model(), alpha=0.5,
                               temperature=4.0)
cache = keras_kd.data.cache_teacher_outputs(distiller, x_train, verbose=0)
# The test images too, so each epoch's validation runs the student alone.
test_cache = keras_kd.data.cache_teacher_outputs(distiller, x_test, verbose=0)
distiller.compile(optimizer="adam", metrics=["accuracy"])
history = distiller.fit(x_train, cache.targets(labels, x=x_train),
                        epochs=epochs, batch_size=32,
                        validation_data=(x_test, test_cache.targets(y_test)),
                        verbose=0)

print(f"student on {args.labels} labels alone:   {scratch_accuracy:.4f}")
print(f"student distilled on all images: "
      f"{history.history['val_accuracy'][-1]:.4f}")

"""
With the defaults (100 labels, 60 epochs) the student trained on the labels
alone reaches about 92 %, the student distilled on all images about 95.5 %.
"""
print(f"run time: {time.perf_counter() - start:.0f} s")
