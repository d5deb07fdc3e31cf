"""Where a quantize-aware model and its int8 `.tflite` part: layer by layer.

A diagnostic for the parity rows of `qad_benchmark.py`. It trains the
CIFAR-10 MobileNet-like student of that benchmark briefly on labels
(`--epochs`, then one epoch of QAT from `quantize_aware`), exports the int8
file, runs `--examples` test images through the LiteRT interpreter with every
tensor kept (`experimental_preserve_all_tensors`) and prints, per op:

- `isolated`: the fraction of output elements where the Keras layers of the
  fake-quant model, fed the interpreter's own int8 input of that op, give a
  different int8 value than the interpreter (and the largest difference);
- `integer`: the same for a NumPy emulation of the integer kernel (the exact
  int32 sum of `(q - zero_point) * w` plus the int32 bias, times the float32
  scale `s_in * s_w / s_out`, rounded half to even, clamped by the fused
  activation), which is what XNNPACK computes.

`--resolver builtin_ref` runs the interpreter's reference kernels instead of
the default (XNNPACK) path. The numbers of the run of 2026-12-07 are in
benchmarks/README.md (QAD, CIFAR-10 parity).

Run (a few minutes on 2 CPU cores):

    flock /tmp/kd_bench.lock env KERAS_BACKEND=tensorflow \\
        python benchmarks/qad_parity_probe.py
"""

import argparse
import os
import tempfile

import benchmark_utils as bu  # noqa: F401 (puts the repository on sys.path)
import keras
import numpy as np

import keras_kd.export
from keras_kd.quantization import quantize_aware
from keras_kd.quantization.layers import FakeQuant, QuantizeWrapper

KERNEL_OPS = ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED")


def interpreter_tensors(path, x, resolver):
    from ai_edge_litert import interpreter as litert

    kind = {"auto": litert.OpResolverType.AUTO,
            "builtin_ref": litert.OpResolverType.BUILTIN_REF}[resolver]
    it = litert.Interpreter(path, experimental_preserve_all_tensors=True,
                            experimental_op_resolver_type=kind)
    it.allocate_tensors()
    index = it.get_input_details()[0]["index"]
    ops = [o for o in it._get_ops_details() if o["op_name"] != "DELEGATE"]
    outputs = {t for op in ops for t in op["outputs"]}
    values = {t: [] for t in outputs}
    for i in range(len(x)):
        it.set_tensor(index, x[i:i + 1])
        it.invoke()
        for t in outputs:
            values[t].append(it.get_tensor(t).copy())
    return it, ops, {t: np.concatenate(v) for t, v in values.items()}


def segments(model):
    """The layers between consecutive FakeQuant outputs (one LiteRT op)."""
    out, current = [], []
    for layer in model.layers[2:]:  # after the input and its quantizer
        current.append(layer)
        if isinstance(layer, FakeQuant):
            out.append(current)
            current = []
    return out


def integer_kernel(op, wrapper, q_in, it, details, z_in, s_in, s_out, z_out):
    import tensorflow as tf

    w_t, b_t = op["inputs"][1], op["inputs"][2]
    wq = it.get_tensor(w_t).astype("float64")
    bq = it.get_tensor(b_t).astype("float64")
    s_w = details[w_t]["quantization_parameters"]["scales"].astype("float32")
    xi = q_in.astype("float64") - z_in
    layer = wrapper.layer
    if op["op_name"] == "FULLY_CONNECTED":
        acc = xi @ wq.T
    elif op["op_name"] == "CONV_2D":
        acc = tf.nn.conv2d(xi, np.transpose(wq, (1, 2, 3, 0)),
                           strides=layer.strides,
                           padding=layer.padding.upper()).numpy()
    else:
        acc = tf.nn.depthwise_conv2d(
            xi, np.transpose(wq, (1, 2, 3, 0)),
            strides=(1, *layer.strides, 1),
            padding=layer.padding.upper()).numpy()
    scale = (np.float32(s_in) * s_w / np.float32(s_out)).astype("float32")
    y = np.rint((acc + bq).astype("float32") * scale) + z_out
    low, high = -128, 127
    if op["op_name"] != "FULLY_CONNECTED":  # the student's ReLU6, fused
        low, high = max(low, z_out), min(high, z_out + np.round(6 / s_out))
    return np.clip(y, low, high)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--train-examples", type=int, default=3000)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--examples", type=int, default=100)
    parser.add_argument("--resolver", choices=("auto", "builtin_ref"),
                        default="auto")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    import cifar10_benchmark as cb
    import qad_benchmark as qb

    (x_all, y_all), (x_test, _) = cb.load_cifar10()
    x, y = cb.balanced_subset(x_all, y_all, args.train_examples)
    x, x_test = x.astype("float32"), x_test[:args.examples].astype("float32")
    keras.utils.set_random_seed(args.seed)
    student = qb.cifar_student()
    student.compile(optimizer=keras.optimizers.Adam(3e-3),
                    loss=bu.sparse_ce())
    student.fit(x, y, epochs=args.epochs, batch_size=64, verbose=2)
    model = quantize_aware(student, x[:256])
    model.compile(optimizer=keras.optimizers.Adam(1e-4), loss=bu.sparse_ce())
    model.fit(x, y, epochs=1, batch_size=64, verbose=2)
    with tempfile.TemporaryDirectory() as folder:
        path = keras_kd.export.export_student(
            model, os.path.join(folder, "student.tflite"),
            quantization="int8")
        it, ops, values = interpreter_tensors(path, x_test, args.resolver)
    details = it.get_tensor_details()
    for k, segment in enumerate(segments(model)):
        op = ops[k + 1]
        t_in, t_out = op["inputs"][0], op["outputs"][0]
        s_in, z_in = details[t_in]["quantization"]
        s_out, z_out = details[t_out]["quantization"]
        q_in = values[t_in].astype("float64")  # int8 would wrap
        y_keras = ((q_in - z_in) * s_in).astype("float32")
        for layer in segment:
            y_keras = layer(y_keras)
        y_keras = np.asarray(y_keras)
        q_keras = np.round(y_keras / s_out) + z_out
        q_lite = values[t_out].astype("float64")
        off = np.abs(q_keras - q_lite)
        line = (f"op {k + 1:2d} {op['op_name']:18s} isolated: "
                f"{(off > 0).mean() * 100:.3f} % off (max {off.max():.0f})")
        wrappers = [w for w in segment if isinstance(w, QuantizeWrapper)]
        if op["op_name"] in KERNEL_OPS and wrappers:
            q_int = integer_kernel(op, wrappers[0], values[t_in], it,
                                   details, z_in, s_in, s_out, z_out)
            off = np.abs(q_int - q_lite)
            line += (f"; integer: {(off > 0).mean() * 100:.3f} % off "
                     f"(max {off.max():.0f})")
        print(line, flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
