#!/usr/bin/env python3
"""An independent count of the modeled time `dac onnx` gives a graph's nodes that are not
convolutions (its report's modeled total less the time of every listed convolution): this
script finds those nodes with onnx's own shape inference and evaluates the time table's entries
for them, without dac's code.

    bench/.venv/bin/python bench/check_fixed_time.py MODEL.onnx [MODEL.onnx ...] \\
        [--dac target/release/dac] [--table src/time/onnxruntime-x86_64.json]

Counted as the README says the model does: `Gemm` and `MatMul` with a constant right side
(`gemv` at one row, else `matmul`), `Add`/`Sum`/`Concat` on feature maps (their entries, by the pieces' channel alignment), Swish
(`Sigmoid` + `Mul` of one tensor: `swish`, at the Mul), a `Mul` by a `[1, C, 1, 1]` tensor
(`scale`), `GlobalAveragePool`/`GlobalMaxPool` and a `ReduceMean`/`ReduceMax` over the spatial
axes (`global_pool`), `MaxPool`/`AveragePool` (`pool`); an activation fused into the `Add`,
`BatchNormalization` or `Gemm` before it (`activation_<name>`: its pass over that output; one
fused into a convolution counts with the convolution); and the layout reorders onnxruntime inserts that are not next to a
convolution (`reorder_input`, `reorder_output`), found in onnxruntime's own optimised graph
rather than by dac's rules. Prints both figures per model and their difference.
"""
import argparse
import json
import math
import os
import subprocess
import sys
import tempfile

import onnx
from onnx import numpy_helper, shape_inference

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Activations onnxruntime fuses into the kernel before them: table entry activation_<name>.
ACTIVATIONS = {"Relu": "relu", "Clip": "clip", "LeakyRelu": "leaky_relu", "HardSigmoid": "hard_sigmoid",
               "Sigmoid": "sigmoid", "Tanh": "tanh"}
FEATURES = {"one", "macs", "macs_padded", "macs_strided", "in_elems", "out_elems", "weights", "weights_over_cache",
            "tensor_elems_over_cache"}
CACHED_TENSOR = 1 << 20  # src/time/mod.rs: a Concat's input and output elements beyond it each


def entry(table, op, aligned):
    t = next(t for t in table["tables"] if t["threads"] == 1)
    es = [e for e in t["entries"] if e["op"] == op]
    e = next((e for e in es if e.get("aligned") == aligned), None) or next((e for e in es if e.get("aligned") is None), es[0])
    return e


def evaluate(e, feats):
    assert set(e["features"]) <= FEATURES
    return max(0.0, sum(c * feats.get(f, 0.0) for f, c in zip(e["features"], e["coef"])))


def fixed_ns(path, table):
    m = shape_inference.infer_shapes(onnx.load(path), data_prop=True)
    g = m.graph
    shape = {v.name: [d.dim_value for d in v.type.tensor_type.shape.dim]
             for v in list(g.value_info) + list(g.input) + list(g.output)}
    inits = {i.name: numpy_helper.to_array(i) for i in g.initializer}
    for n, a in inits.items():
        shape[n] = list(a.shape)
    writer = {o: n for n in g.node for o in n.output}
    readers = {}
    for n in g.node:
        for i in n.input:
            readers.setdefault(i, []).append(n)
    block = table["block"]
    numel = lambda t: math.prod(shape[t][1:])  # noqa: E731  (per image: dim 0 is the batch, often symbolic)
    total = 0.0
    for n in g.node:
        op, out = n.op_type, n.output[0]
        if op in ("Gemm", "MatMul") and n.input[1] in inits:
            k, nn = shape[n.input[1]][::-1] if op == "Gemm" else shape[n.input[1]]
            rows = numel(out) // nn
            w = k * nn
            total += evaluate(entry(table, "gemv" if rows == 1 else "matmul", None),
                              {"one": 1, "macs": rows * w, "macs_padded": rows * w, "in_elems": rows * k,
                               "out_elems": rows * nn, "weights": w, "weights_over_cache": max(0, w - (1 << 22))})
        elif op in ("Add", "Sum", "Concat") and len(shape.get(out, [])) >= 3:
            pieces = n.output if op != "Concat" else n.input
            ch = math.gcd(*[shape[p][1] for p in pieces])
            name = "concat" if op == "Concat" else "add"
            over = 2 * max(0, numel(out) - CACHED_TENSOR)
            total += evaluate(entry(table, name, ch % block == 0),
                              {"one": 1, "out_elems": numel(out), "tensor_elems_over_cache": over})
        elif op == "Mul":
            a, b = n.input
            gate = lambda x, y: y in writer and writer[y].op_type == "Sigmoid" and writer[y].input[0] == x  # noqa: E731
            if gate(a, b) or gate(b, a):
                e = entry(table, "swish", shape[out][1] % block == 0)
                total += evaluate(e, {"one": 1, "in_elems": numel(out), "out_elems": numel(out), "macs": numel(out)})
            elif len(shape[a]) == 4 and len(shape[b]) == 4 and (shape[a][2:] == [1, 1]) != (shape[b][2:] == [1, 1]):
                e = entry(table, "scale", shape[out][1] % block == 0)
                total += evaluate(e, {"one": 1, "in_elems": numel(out), "out_elems": numel(out), "macs": numel(out)})
        elif op in ACTIVATIONS and writer.get(n.input[0]) is not None and len(readers[n.input[0]]) == 1 \
                and writer[n.input[0]].op_type in ("Add", "BatchNormalization", "Gemm") \
                and n.input[0] not in {o.name for o in g.output}:
            total += evaluate(entry(table, "activation_" + ACTIVATIONS[op], None), {"one": 1, "out_elems": numel(out)})
        elif op in ("GlobalAveragePool", "GlobalMaxPool", "MaxPool", "AveragePool", "ReduceMean", "ReduceMax"):
            if op.startswith("Reduce"):
                axes = next((list(x.ints) for x in n.attribute if x.name == "axes"), None)
                if axes is None or sorted(v % 4 for v in axes) != [2, 3]:
                    continue
            x = n.input[0]
            kernel = next((list(a.ints) for a in n.attribute if a.name == "kernel_shape"), [1, 1])
            name = "pool" if op in ("MaxPool", "AveragePool") else "global_pool"
            e = entry(table, name, shape[x][1] % block == 0)
            total += evaluate(e, {"one": 1, "in_elems": numel(x), "out_elems": numel(out),
                                  "macs": numel(out) * math.prod(kernel)})
    return total + reorders_ns(path, table, shape)


def reorders_ns(path, table, shape):
    """The layout reorders onnxruntime itself inserts (its optimised graph, 1 thread) that are
    not next to a convolution: a ReorderInput whose reader, or a ReorderOutput whose writer, is
    not an NCHWc Conv (those belong to the convolution's time). Sizes from onnx's inference."""
    import onnxruntime as ort
    with tempfile.TemporaryDirectory() as tmp:
        so = ort.SessionOptions()
        so.intra_op_num_threads = 1
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        so.optimized_model_filepath = os.path.join(tmp, "opt.onnx")
        so.log_severity_level = 3
        ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
        g = onnx.load(so.optimized_model_filepath, load_external_data=False).graph
    writer = {o: n for n in g.node for o in n.output}
    readers = {}
    for n in g.node:
        for i in n.input:
            readers.setdefault(i, []).append(n)
    is_conv = lambda n: n is not None and n.op_type == "Conv" and n.domain == "com.microsoft.nchwc"  # noqa: E731
    total = 0.0
    for n in g.node:
        if n.op_type == "ReorderInput":
            plain, beside = n.input[0], readers.get(n.output[0], [])
            if any(is_conv(r) for r in beside):
                continue
            op = "reorder_input"
        elif n.op_type == "ReorderOutput":
            plain, beside = n.output[0], writer.get(n.input[0])
            if is_conv(beside):
                continue
            op = "reorder_output"
        else:
            continue
        elems = math.prod(shape[plain][1:])
        nhwc = any(a.name == "channels_last" and a.i == 1 for a in n.attribute)
        channels = shape[plain][-1 if nhwc else 1]
        total += evaluate(entry(table, op, channels % table["block"] == 0),
                          {"one": 1, "in_elems": elems, "out_elems": elems})
    return total


def dac_fixed_ms(dac, path):
    """The report's modeled time of the original less that of every convolution it lists."""
    with tempfile.TemporaryDirectory() as tmp:
        out = subprocess.run([dac, "onnx", path, "-o", os.path.join(tmp, "out.onnx"), "--speedup", "2", "--json"],
                             capture_output=True, text=True)
    if out.returncode != 0:
        sys.exit(out.stderr)
    r = json.loads(out.stdout)
    layers = sum(c["time_before_ms"] for c in r["converted"])
    layers += sum(s["time_ms"] for s in r["skipped"] if s.get("time_ms") is not None)
    return r["time_before_ms"] - layers


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("models", nargs="+")
    ap.add_argument("--dac", default=os.path.join(ROOT, "target", "release", "dac"))
    ap.add_argument("--table", default=os.path.join(ROOT, "src", "time", "onnxruntime-x86_64.json"))
    args = ap.parse_args()
    table = json.load(open(args.table))
    print("| model | dac: modeled time outside the convolutions | this count | difference |")
    print("|---|---|---|---|")
    for p in args.models:
        theirs = dac_fixed_ms(args.dac, p)
        try:
            ours = fixed_ns(p, table) / 1e6
        except (KeyError, IndexError):
            print(f"| {os.path.basename(p)} | {theirs:.4f} ms | onnx's shape inference stops before the end | |")
            continue
        print(f"| {os.path.basename(p)} | {theirs:.4f} ms | {ours:.4f} ms | {(theirs - ours) / max(ours, 1e-12):+.2%} |")


if __name__ == "__main__":
    main()
