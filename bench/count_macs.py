#!/usr/bin/env python3
"""Independent MAC count of ONNX models (onnx shape inference; no dac code): every Conv at its
inferred output size, Gemm and MatMul with an initializer weight. Prints each model's total
against the first's.

    bench/.venv/bin/python bench/count_macs.py ORIGINAL.onnx REWRITTEN.onnx ...
"""
import sys

import onnx
from onnx import shape_inference


def macs(path):
    m = shape_inference.infer_shapes(onnx.load(path))
    shapes = {vi.name: [d.dim_value for d in vi.type.tensor_type.shape.dim] for vi in list(m.graph.value_info) + list(m.graph.output) + list(m.graph.input)}
    inits = {t.name: list(t.dims) for t in m.graph.initializer}
    total = 0
    for n in m.graph.node:
        if n.op_type == "Conv":
            w = inits[n.input[1]]; out = shapes[n.output[0]]
            total += out[2] * out[3] * w[0] * w[1] * w[2] * w[3]
        elif n.op_type == "Gemm":
            w = inits[n.input[1]]; total += w[0] * w[1]
        elif n.op_type == "MatMul":
            w = inits.get(n.input[1]); total += w[0] * w[1] if w else 0
    return total


d = macs(sys.argv[1])
for p in sys.argv[2:]:
    a = macs(p); print(f"{p}: {d} -> {a} MACs, {d / a:.4f}x")
