"""
Title: Tuning temperature and alpha with KerasTuner
Description: Search the distillation `temperature` and `alpha` with
`keras_kd.tuning.DistillerHyperModel` and a stock KerasTuner tuner, then take
the best student, the table of trials and a plot of the search.

The data is scikit-learn's handwritten digits (1,797 8x8 images that install
with scikit-learn), so this runs anywhere without a network.

Run: `python examples/tune_temperature_alpha.py` (about 2.5 minutes: 157 s
with TensorFlow on 2 CPU cores shared with other jobs), or `--quick` for a
smoke run. `--output-dir` keeps the KerasTuner
project and the plot; run again with the same folder to resume the search.
"""

"""
## Setup
"""

import argparse
import os
import tempfile
import time

import keras
import keras_tuner
import numpy as np

import keras_kd
import keras_kd.tuning

parser = argparse.ArgumentParser(description=__doc__.split("\n")[1])
parser.add_argument("--trials", type=int, default=12)
parser.add_argument("--epochs", type=int, default=20)
parser.add_argument("--output-dir", default=None,
                    help="KerasTuner project and plot (default: a temp dir)")
parser.add_argument("--quick", action="store_true")
args = parser.parse_args()
script_start = time.perf_counter()
trials = 3 if args.quick else args.trials
epochs = 2 if args.quick else args.epochs
output_dir = args.output_dir or tempfile.mkdtemp(prefix="keras_kd_tuning_")

(x_train, y_train), (x_test, y_test) = keras_kd.data.load_dataset("digits")
# The search ranks trials on a validation split; the test set stays unseen
# until the best student is chosen.
x_train, x_val = x_train[:-300], x_train[-300:]
y_train, y_val = y_train[:-300], y_train[-300:]
if args.quick:
    x_train, y_train = x_train[:256], y_train[:256]
num_classes = int(y_train.max()) + 1
print(f"train {x_train.shape}, val {x_val.shape}, test {x_test.shape}")

"""
## A teacher, trained once

The teacher is a small CNN. The search never trains it again: every trial
reuses its outputs.
"""

keras.utils.set_random_seed(0)
teacher = keras.Sequential(
    [
        keras.Input(x_train.shape[1:]),
        keras.layers.Conv2D(32, 3, padding="same", activation="relu"),
        keras.layers.MaxPooling2D(),
        keras.layers.Flatten(),
        keras.layers.Dense(128, activation="relu"),
        keras.layers.Dense(num_classes),
    ],
    name="teacher",
)
teacher.compile(
    optimizer="adam",
    loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    metrics=["accuracy"],
)
teacher.fit(x_train, y_train, epochs=max(epochs, 10), batch_size=32,
            verbose=0)
_, teacher_acc = teacher.evaluate(x_test, y_test, verbose=0)

"""
## The search space

The student builder is called once per trial, so every trial starts from
fresh weights. `temperature` is searched on a log scale between 1 and 20,
`alpha` (the weight of the label loss; the soft loss gets `1 - alpha`)
between 0 and 1. A number instead of a range fixes a value; a list gives
choices.
"""


def build_student():
    return keras.Sequential(
        [
            keras.Input(x_train.shape[1:]),
            keras.layers.Flatten(),
            keras.layers.Dense(16, activation="relu"),
            keras.layers.Dense(num_classes),
        ],
        name="student",
    )


hypermodel = keras_kd.tuning.DistillerHyperModel(
    teacher, build_student, temperature=(1.0, 20.0), alpha=(0.0, 1.0)
)

"""
## The search

The objective is the student's validation accuracy. The distillation loss
would be a poor objective: its soft term is measured at each trial's own
temperature, so losses of two trials are not comparable.

The teacher's outputs on `x_train` and `x_val` are computed in the first
trial and reused by the others, so a trial costs about one student training.
"""

tuner = keras_tuner.BayesianOptimization(
    hypermodel,
    objective="val_accuracy",
    max_trials=trials,
    seed=0,
    directory=output_dir,
    project_name="tune_temperature_alpha",
)
start = time.perf_counter()
tuner.search(x_train, y_train, validation_data=(x_val, y_val),
             epochs=epochs, batch_size=32, verbose=0)
search_time = time.perf_counter() - start

"""
## Results

The table lists the trials best first; the plot shows the validation
accuracy over temperature and alpha.
"""

table = keras_kd.tuning.trial_table(tuner)
print(keras_kd.tuning.format_trial_table(table))
plot = keras_kd.tuning.plot_trials(tuner, os.path.join(output_dir,
                                                       "trials.png"))

student = keras_kd.tuning.best_student(tuner)
logits = student.predict(x_test, verbose=0)
student_acc = float(np.mean(np.argmax(logits, -1) == y_test))
best = table[0]
print(f"search: {len(table)} trials in {search_time:.1f} s")
print(f"best: temperature={best['temperature']:.3g}, "
      f"alpha={best['alpha']:.3g}, val_accuracy={best['val_accuracy']:.4f}")
print(f"teacher test accuracy        {teacher_acc:.4f}")
print(f"best student test accuracy   {student_acc:.4f}")
print(f"plot: {plot}")

"""
With the defaults (12 trials of 20 epochs) the search took 137 s on 2 CPU
cores shared with other jobs (the whole script 157 s). The teacher reached
about 95.5 % test accuracy and the best student about 91.5 %, the best
trials had low temperatures (1-3) and the search's val_accuracy spread over
about 89-95 %. With 1,000 training images the ranking of close trials changes
from seed to seed: read the plot as a landscape, not as a single winner.
"""
print(f"run time: {time.perf_counter() - script_start:.0f} s")
