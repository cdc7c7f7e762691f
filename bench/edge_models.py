#!/usr/bin/env python3
"""Hand-built ONNX models in the forms other tools write, for `bench/check_variants.py`.

Each model holds one or two small convolutions in a form exporters other than PyTorch's produce:
`auto_pad` SAME_UPPER / SAME_LOWER / VALID (strided, even kernels), no `kernel_shape`, weights in
`float_data`, weights through `Identity`, as `Constant` nodes, as a `DequantizeLinear` of INT8, as
a graph input without initializer, one weight shared by two convolutions or also read by another
node, a convolution output that is also a graph output, NHWC with `Transpose`s (tf2onnx),
unnamed nodes, a static batch of 4, opset 7 with IR version 3, grouped, float16, a 1-D
convolution with `auto_pad`, a convolution inside an `If`; and the shipped `fmnist_vgg.onnx`
quantized by onnxruntime's quantizer in its three forms (QDQ, QOperator, dynamic).

    bench/.venv/bin/python bench/edge_models.py DIR
    DAC=target/release/dac bench/.venv/bin/python bench/check_variants.py DIR

What to expect (BENCHMARKS.md, "Reliability"): every run either writes a model that runs in
onnxruntime (exact at full rank where a layer is converted) or stops with a one-line error that
names the layer and what to pass; the layers dac cannot convert are left dense with their reason
and counted in the totals.
"""
import os
import sys

import numpy as np
import onnx
from onnx import TensorProto as T
from onnx import helper as h
from onnx import numpy_helper as nh

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RNG = np.random.default_rng(0)


def w(*shape, dtype=np.float32):
    return (RNG.standard_normal(shape) * 0.2).astype(dtype)


def vi(name, shape, elem=T.FLOAT):
    return h.make_tensor_value_info(name, elem, shape)


def conv(x, weight, bias, y, name, **attrs):
    return h.make_node("Conv", [x, weight] + ([bias] if bias else []), [y], name=name, **attrs)


X = [vi("x", [1, 8, 15, 15])]
Y = [vi("y", None)]
PADS = {"pads": [1, 1, 1, 1]}


def wb(n=16, c=8, k=(3, 3), dtype=np.float32):
    return [nh.from_array(w(n, c, *k, dtype=dtype), "W"), nh.from_array(w(n, dtype=dtype), "B")]


def models():
    """`name -> (nodes, initializers, inputs, outputs, opset, ir_version)`."""
    m = {}
    for pad in ["SAME_UPPER", "SAME_LOWER", "VALID"]:
        m[f"autopad_{pad.lower()}"] = ([conv("x", "W", "B", "y", "c", auto_pad=pad, strides=[2, 2])], wb(), X, Y)
    m["autopad_even_kernel"] = ([conv("x", "W", "B", "y", "c", auto_pad="SAME_UPPER")], wb(k=(4, 2)), X, Y)
    m["no_kernel_shape"] = ([conv("x", "W", "B", "y", "c", **PADS)], wb(), X, Y)
    fd = [h.make_tensor(t.name, T.FLOAT, t.dims, nh.to_array(t).ravel().tolist()) for t in wb()]
    m["float_data"] = ([conv("x", "W", "B", "y", "c", **PADS)], fd, X, Y)
    m["identity_weight"] = ([h.make_node("Identity", ["W0"], ["W"], name="id"), conv("x", "W", "B", "y", "c", **PADS)],
                            [nh.from_array(w(16, 8, 3, 3), "W0"), nh.from_array(w(16), "B")], X, Y)
    const = [h.make_node("Constant", [], [t.name], value=t) for t in wb()]
    m["constant_weight"] = (const + [conv("x", "W", "B", "y", "c", **PADS)], [], X, Y)
    q = [nh.from_array(RNG.integers(-127, 127, (16, 8, 3, 3)).astype(np.int8), "Wq"),
         nh.from_array(np.full(16, 0.01, np.float32), "s"), nh.from_array(np.zeros(16, np.int8), "z"),
         nh.from_array(w(16), "B")]
    m["dequantized_weight"] = ([h.make_node("DequantizeLinear", ["Wq", "s", "z"], ["W"], name="dq", axis=0),
                                conv("x", "W", "B", "y", "c", **PADS)], q, X, Y)
    m["weight_is_input"] = ([conv("x", "Wi", None, "y", "c", **PADS)], [], X + [vi("Wi", [16, 8, 3, 3])], Y)
    m["shared_weight"] = ([conv("x", "W", "B", "h", "c1", **PADS), h.make_node("Relu", ["h"], ["r"]),
                           conv("r", "W", "B", "y", "c2", **PADS)], wb(8, 8), X, Y)
    m["weight_read_elsewhere"] = ([conv("x", "W", "B", "h", "c", **PADS),
                                   h.make_node("ReduceSum", ["W"], ["ws"], keepdims=0, name="rs"),
                                   h.make_node("Add", ["h", "ws"], ["y"], name="add")], wb(), X, Y)
    m["conv_output_is_graph_output"] = ([conv("x", "W", "B", "h", "c", **PADS), h.make_node("Relu", ["h"], ["y"])],
                                        wb(), X, Y + [vi("h", None)])
    m["nhwc_transposes"] = ([h.make_node("Transpose", ["x"], ["xt"], perm=[0, 3, 1, 2]),
                             conv("xt", "W", "B", "h", "c", **PADS),
                             h.make_node("Transpose", ["h"], ["y"], perm=[0, 2, 3, 1])], wb(), [vi("x", [1, 15, 15, 8])], Y)
    m["unnamed_nodes"] = ([h.make_node("Conv", ["x", "W", "B"], ["h"], **PADS), h.make_node("Relu", ["h"], ["r"]),
                           h.make_node("Conv", ["r", "W2", "B"], ["y"], **PADS)],
                          wb() + [nh.from_array(w(16, 16, 3, 3), "W2")], X, Y)
    m["batch4"] = ([conv("x", "W", "B", "y", "c", **PADS)], wb(), [vi("x", [4, 8, 15, 15])], Y)
    bn = [nh.from_array(v, n) for n, v in [("g", np.ones(16, np.float32)), ("b", np.zeros(16, np.float32)),
                                          ("mu", np.zeros(16, np.float32)), ("var", np.ones(16, np.float32))]]
    m["opset7_ir3"] = ([conv("x", "W", "B", "h", "c", **PADS),
                        h.make_node("BatchNormalization", ["h", "g", "b", "mu", "var"], ["y"])], wb() + bn, X, Y, 7, 3)
    m["grouped"] = ([conv("x", "W", "B", "y", "c", group=2, **PADS)], wb(16, 4), X, Y)
    m["float16"] = ([conv("x", "W", "B", "y", "c", **PADS)], wb(dtype=np.float16),
                    [vi("x", [1, 8, 15, 15], T.FLOAT16)], [vi("y", None, T.FLOAT16)])
    m["conv1d_auto_pad"] = ([conv("x", "W", "B", "y", "c", auto_pad="SAME_UPPER", strides=[2])],
                            [nh.from_array(w(16, 8, 3), "W"), nh.from_array(w(16), "B")], [vi("x", [1, 8, 15])], Y)
    then = h.make_graph([conv("x", "W", "B", "yt", "inner", **PADS)], "then", [], [vi("yt", None)])
    other = h.make_graph([h.make_node("Identity", ["x"], ["ye"])], "else", [], [vi("ye", None)])
    m["conv_inside_if"] = ([h.make_node("If", ["cond"], ["y"], then_branch=then, else_branch=other, name="if")],
                           wb() + [nh.from_array(np.array(True), "cond")], X, Y)
    return m


def quantized(out):
    """fmnist_vgg.onnx through onnxruntime's quantizer: QDQ, QOperator and dynamic."""
    from onnxruntime.quantization import (CalibrationDataReader, QuantFormat, QuantType, quantize_dynamic,
                                          quantize_static)
    src = os.path.join(ROOT, "models", "fmnist_vgg.onnx")
    m = onnx.load(src)
    name, shape = m.graph.input[0].name, [d.dim_value or 1 for d in m.graph.input[0].type.tensor_type.shape.dim]

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.batches = iter([{name: np.random.default_rng(i).random(shape).astype(np.float32)} for i in range(4)])

        def get_next(self):
            return next(self.batches, None)

    for fmt in ["QDQ", "QOperator"]:
        quantize_static(src, os.path.join(out, f"fmnist_vgg_{fmt.lower()}.onnx"), Reader(),
                        quant_format=getattr(QuantFormat, fmt))
    quantize_dynamic(src, os.path.join(out, "fmnist_vgg_dynamic.onnx"), weight_type=QuantType.QUInt8)


def main(out):
    os.makedirs(out, exist_ok=True)
    for name, spec in models().items():
        nodes, inits, inputs, outputs, opset, ir = (*spec, 13, 8)[:6]  # default opset 13, IR 8
        model = h.make_model(h.make_graph(nodes, name, inputs, outputs, initializer=inits),
                             opset_imports=[h.make_opsetid("", opset)])
        model.ir_version = ir
        onnx.save(model, os.path.join(out, f"{name}.onnx"))
    quantized(out)
    print(f"wrote {len(os.listdir(out))} models to {out}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "/tmp/edge_models")
