#!/usr/bin/env python3
"""Builds an ONNX model of a shipped network from its safetensors weights and JSON "ops"
(models/README.md), with onnx.helper only (no torch), and checks it.

    bench/.venv/bin/python scripts/export_onnx.py alt                # writes models/fmnist_alt.onnx
    bench/.venv/bin/python scripts/export_onnx.py vgg --out /tmp/fmnist_vgg.onnx   # reproduce check
    bench/.venv/bin/python scripts/export_onnx.py NET [--out PATH] [--force] [--check N] [--ref REF.onnx]

The graph follows the shipped fmnist_vgg.onnx (torch.onnx.export): opset 17 (the shipped file is
opset 13), input "input" [batch,1,32,32] (dynamic batch), output "logits" [batch,10]; op k of
"ops" becomes node "/seq/seq.k/<Op>" writing "/seq/seq.k/<Op>_output_0" (the last writes
"logits"); conv -> Conv (weights "<name>.weight", "<name>.bias", ONNX pads [top,left,bottom,
right]), relu -> Relu, maxpool -> MaxPool (no padding, floor), avgpool_global ->
GlobalAveragePool, flatten -> Flatten(axis 1), linear -> Gemm(transB 1). Initializers are the
safetensors tensors, bit for bit, in file order of the ops.

Checks (a failure exits non-zero; nothing is written before the checks pass unless --out is
a temporary path):
1. onnx.checker.
2. onnxruntime predictions on the first --check (default 1000) Fashion-MNIST test images
   (bench/accuracy.py's load_test) against models/<stem>.preds; a differing image is tolerated
   only if its top-1/top-2 logit gap is below 1e-3 (the near-ties of models/README.md).
3. If a reference ONNX exists (--ref, default models/<stem>.onnx when it is not the output):
   max |logits difference| on 64 random inputs and on the checked test images, and the node
   list (op types, names, attributes) compared with the reference's.
"""
import argparse
import json
import os
import sys

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper
from safetensors import safe_open

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "bench"))
from accuracy import load_test  # noqa: E402

OPSET = 17


def build(stem):
    spec = json.load(open(os.path.join(ROOT, "models", f"{stem}.json")))
    f = safe_open(os.path.join(ROOT, "models", f"{stem}.safetensors"), "np")
    tensors = {k: f.get_tensor(k) for k in f.keys()}
    c, h, w = spec["input"]
    nodes, inits = [], []
    x = "input"
    ops = spec["ops"]
    for k, op in enumerate(ops):
        kind = op["op"]
        onnx_op = {"conv": "Conv", "relu": "Relu", "maxpool": "MaxPool", "avgpool_global": "GlobalAveragePool",
                   "flatten": "Flatten", "linear": "Gemm"}[kind]
        name = f"/seq/seq.{k}/{onnx_op}"
        y = "logits" if k + 1 == len(ops) else f"{name}_output_0"
        inputs, attrs = [x], {}
        if kind in ("conv", "linear"):
            for p in ("weight", "bias"):
                t = f"{op['name']}.{p}"
                inits.append(numpy_helper.from_array(np.ascontiguousarray(tensors[t], dtype=np.float32), t))
                inputs.append(t)
        if kind == "conv":
            top, bottom, left, right = op["pad"]
            wt = tensors[op["name"] + ".weight"]
            if list(wt.shape) != [op["out_channels"], op["in_channels"] // op["groups"]] + list(op["kernel"]):
                raise ValueError(f"{op['name']}: weight {list(wt.shape)} does not match the op")
            attrs = dict(dilations=list(op["dilation"]), group=op["groups"], kernel_shape=list(op["kernel"]),
                         pads=[top, left, bottom, right], strides=list(op["stride"]))
        elif kind == "maxpool":
            attrs = dict(ceil_mode=0, kernel_shape=[op["kernel"]] * 2, pads=[0, 0, 0, 0], strides=[op["stride"]] * 2)
        elif kind == "flatten":
            attrs = dict(axis=1)
        elif kind == "linear":
            attrs = dict(alpha=1.0, beta=1.0, transB=1)
        nodes.append(helper.make_node(onnx_op, inputs, [y], name=name, **attrs))
        x = y
    classes = ops[-1]["out_features"]
    graph = helper.make_graph(
        nodes, "main_graph",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", c, h, w])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", classes])],
        initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              producer_name="dac scripts/export_onnx.py")
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def logits(model_or_path, x, batch=500):
    src = model_or_path.SerializeToString() if isinstance(model_or_path, onnx.ModelProto) else model_or_path
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    sess = ort.InferenceSession(src, opts, providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    return np.concatenate([sess.run(None, {name: x[i:i + batch]})[0] for i in range(0, len(x), batch)])


def node_signature(model):
    return [(n.op_type, n.name, [helper.get_attribute_value(a) for a in sorted(n.attribute, key=lambda a: a.name)],
             [a.name for a in sorted(n.attribute, key=lambda a: a.name)]) for n in model.graph.node]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("net", help="vgg, alt or a stem such as fmnist_alt")
    ap.add_argument("--out", default=None, help="default models/<stem>.onnx")
    ap.add_argument("--force", action="store_true", help="replace an existing --out")
    ap.add_argument("--check", type=int, default=1000, help="test images compared with <stem>.preds")
    ap.add_argument("--ref", default=None, help="reference ONNX to compare outputs with")
    a = ap.parse_args()
    stem = a.net if a.net.startswith("fmnist_") else f"fmnist_{a.net}"
    out = a.out or os.path.join(ROOT, "models", f"{stem}.onnx")
    if os.path.exists(out) and not a.force:
        sys.exit(f"{out} exists (--force to replace, or --out elsewhere)")
    model = build(stem)
    ok = True

    x, _ = load_test(np.float32)
    x = x[:a.check]
    y = logits(model, x)
    pred = y.argmax(1)
    ref = np.frombuffer(open(os.path.join(ROOT, "models", f"{stem}.preds"), "rb").read(), np.uint8)[:a.check]
    top2 = np.sort(y, axis=1)[:, -2:]
    gap = top2[:, 1] - top2[:, 0]
    diff = np.nonzero(pred != ref)[0]
    real = [int(i) for i in diff if gap[i] >= 1e-3]
    print(f"{stem}: onnxruntime predictions on the first {len(x)} test images: {len(x) - len(diff)} equal "
          f"{stem}.preds; differing {diff.tolist()} (near-ties, gap < 1e-3: "
          f"{[int(i) for i in diff if gap[i] < 1e-3]})")
    if real:
        print(f"{stem}: MISMATCH on images {real}")
        ok = False

    ref_path = a.ref or os.path.join(ROOT, "models", f"{stem}.onnx")
    if os.path.exists(ref_path) and os.path.realpath(ref_path) != os.path.realpath(out):
        refm = onnx.load(ref_path)
        xr = np.random.default_rng(0).random((64,) + tuple(x.shape[1:]), dtype=np.float32)
        d_rand = float(np.max(np.abs(logits(model, xr) - logits(ref_path, xr))))
        d_test = float(np.max(np.abs(y - logits(ref_path, x))))
        same_nodes = node_signature(model) == node_signature(refm)
        ref_inits = {t.name: numpy_helper.to_array(t) for t in refm.graph.initializer}
        same_inits = all(t.name in ref_inits and np.array_equal(numpy_helper.to_array(t), ref_inits[t.name])
                         for t in model.graph.initializer) and len(ref_inits) == len(model.graph.initializer)
        print(f"{stem}: against {ref_path} (opset {refm.opset_import[0].version}): max |logit diff| "
              f"{d_rand:.2e} on 64 random inputs, {d_test:.2e} on the test images; nodes (types, names, "
              f"attributes) {'identical' if same_nodes else 'DIFFER'}; initializers "
              f"{'bit-identical' if same_inits else 'DIFFER'}")
        if d_rand > 1e-4 or d_test > 1e-4 or not same_inits:
            ok = False
    if not ok:
        sys.exit(f"{stem}: checks failed, {out} not written")
    onnx.save(model, out)
    print(f"wrote {out} ({os.path.getsize(out)} bytes, opset {OPSET})")


if __name__ == "__main__":
    main()
