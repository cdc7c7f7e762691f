#!/usr/bin/env python3
"""Writes the fuzz targets' seed files (small valid inputs) into fuzz/seeds/<target>/.

    bench/.venv/bin/python fuzz/seeds.py     # numpy, onnx, safetensors; no dac code

ONNX seeds cover the operator patterns shape inference follows (computed pads, channel
shuffle, squeeze-excitation, NHWC MatMul with LayerNormalization, pools, Resize); safetensors
seeds are small checkpoints (F32, F16, BF16-free) and a dac output with `dac.layer.*` records
(written by `dac convert`, when target/release/dac exists).
"""
import os
import subprocess
import sys

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from safetensors.numpy import save_file

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
rng = np.random.default_rng(0)


def w(*shape):
    return rng.standard_normal(shape).astype(np.float32)


def init(name, array):
    return numpy_helper.from_array(np.asarray(array), name)


def model(name, nodes, inits, out_shape, opset=13, in_shape=("N", 2, 8, 8)):
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, list(in_shape))
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, out_shape)
    g = helper.make_graph(nodes, name, [x], [y], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)], producer_name="dac-fuzz-seeds")
    onnx.checker.check_model(m)
    return m.SerializeToString()


def onnx_seeds():
    conv = lambda i, o, wname, **kw: helper.make_node("Conv", [i, wname], [o], **kw)
    s = {}
    s["conv_relu_conv"] = model("a", [conv("x", "c", "w1", pads=[1, 1, 1, 1]), helper.make_node("Relu", ["c"], ["r"]),
                                      conv("r", "y", "w2", strides=[2, 2], group=2)],
                                [init("w1", w(4, 2, 3, 3)), init("w2", w(4, 2, 3, 3))], ["N", 4, 3, 3])
    s["computed_pad_shuffle"] = model("b", [
        conv("x", "c", "w1"),
        helper.make_node("Shape", ["c"], ["s"]), helper.make_node("Gather", ["s", "two"], ["h"], axis=0),
        helper.make_node("Div", ["h", "three"], ["q"]),
        helper.make_node("Concat", ["z2", "q", "q", "z2", "q", "q"], ["pads"], axis=0),
        helper.make_node("Pad", ["c", "pads"], ["p"]),
        helper.make_node("Reshape", ["p", "split_shape"], ["r"]),
        helper.make_node("Transpose", ["r"], ["t"], perm=[0, 2, 1, 3, 4]),
        helper.make_node("Reshape", ["t", "back"], ["u"]),
        conv("u", "y", "w2"),
    ], [init("w1", w(4, 2, 3, 3)), init("w2", w(2, 4, 3, 3)), init("two", np.array([2], np.int64)),
        init("three", np.array([3], np.int64)), init("z2", np.array([0, 0], np.int64)),
        init("split_shape", np.array([0, 2, 2, 10, 10], np.int64)), init("back", np.array([0, -1, 10, 10], np.int64))],
        ["N", 2, 8, 8])
    s["squeeze_excitation_gemm"] = model("c", [
        conv("x", "c", "w1", pads=[1, 1, 1, 1]),
        helper.make_node("GlobalAveragePool", ["c"], ["g"]), conv("g", "e", "w2"),
        helper.make_node("HardSigmoid", ["e"], ["hs"]), helper.make_node("Mul", ["c", "hs"], ["m"]),
        helper.make_node("MaxPool", ["m"], ["mp"], kernel_shape=[3, 3], strides=[2, 2], ceil_mode=1),
        helper.make_node("Flatten", ["mp"], ["f"]), helper.make_node("Gemm", ["f", "fc"], ["y"], transB=1),
    ], [init("w1", w(4, 2, 3, 3)), init("w2", w(4, 4, 1, 1)), init("fc", w(3, 64))], ["N", 3])
    s["nhwc_layernorm_matmul"] = model("d", [
        conv("x", "c", "w1", group=2, pads=[3, 3, 3, 3]),
        helper.make_node("Transpose", ["c"], ["t"], perm=[0, 2, 3, 1]),
        helper.make_node("LayerNormalization", ["t", "g", "b"], ["ln"], axis=-1),
        helper.make_node("MatMul", ["ln", "m1"], ["h"]), helper.make_node("Erf", ["h"], ["e"]),
        helper.make_node("MatMul", ["e", "m2"], ["o"]),
        helper.make_node("Transpose", ["o"], ["u"], perm=[0, 3, 1, 2]),
        helper.make_node("Resize", ["u", "", "scales"], ["y"], mode="nearest"),
    ], [init("w1", w(2, 1, 7, 7)), init("g", np.ones(2, np.float32)), init("b", np.zeros(2, np.float32)),
        init("m1", w(2, 8)), init("m2", w(8, 2)), init("scales", np.array([1, 1, 2, 2], np.float32))],
        ["N", 2, 16, 16], opset=17)
    return s


def safetensors_seeds(out):
    save_file({"conv1.weight": w(4, 2, 3, 3), "conv1.bias": w(4), "conv2.weight": w(4, 4, 3, 3),
               "fc.weight": w(3, 4)}, os.path.join(out, "small_f32.safetensors"), metadata={"format": "pt"})
    save_file({"a.weight": w(3, 3, 5, 3).astype(np.float16), "b.weight": w(6, 3, 1, 1).astype(np.float16)},
              os.path.join(out, "small_f16.safetensors"))
    dac = os.path.join(ROOT, "target", "release", "dac")
    if os.path.exists(dac):
        dst = os.path.join(out, "dac_output.safetensors")
        subprocess.run([dac, "convert", os.path.join(out, "small_f32.safetensors"), "-o", dst, "--rank", "2",
                        "--force", "--quiet"], check=True)


def main():
    for target in ["onnx_model", "onnx_shapes", "rewrite", "protobuf"]:
        d = os.path.join(HERE, "seeds", target)
        os.makedirs(d, exist_ok=True)
        for name, data in onnx_seeds().items():
            with open(os.path.join(d, name + ".onnx"), "wb") as f:
                f.write(data)
    for target in ["safetensors", "convert"]:
        d = os.path.join(HERE, "seeds", target)
        os.makedirs(d, exist_ok=True)
        safetensors_seeds(d)
    print("seeds written under", os.path.join(HERE, "seeds"))


if __name__ == "__main__":
    sys.exit(main())
