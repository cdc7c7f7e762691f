#!/usr/bin/env python3
"""Which factorisation of one layer does less damage on real inputs, against what the planner's
data-free input models say: a check of the score's ranking on a shipped network.

    bench/.venv/bin/python bench/score_vs_data.py --model models/fmnist_alt.onnx --layer /seq/seq.6/Conv \\
        --candidate "channel 96=--layers /seq/seq.6/Conv --scheme channel --rank 96" \\
        --candidate "dac 14=--layers /seq/seq.6/Conv --scheme dac --rank 14" [--images 2000] [--dac target/release/dac]

Each candidate is a `dac onnx` rewrite of the model (the arguments after `=`). For each, the
layer's effective dense kernel is read back from the rewritten file by running its factor
subgraph on unit impulses (checked on the original file: the kernel read back equals its
initializer), and ΔW = effective − original. Printed per candidate:

- measured: the relative output error of the layer (pre-activation) and of the logits, and the
  accuracy, on the first --images test images, run in onnxruntime;
- predicted: `sqrt(tr(ΔW S ΔWᵀ) / tr(W S Wᵀ))` for input second-moment matrices S over the
  layer's input patches (C·kh·kw): white (S = I), the planner's tap-correlation model at several
  ρ (S = I_C ⊗ R_ρ, R_ρ[a][b] = ρ^(|Δy|+|Δx|)), with --common also that model plus a component
  shared by every input element (S = (1−b)·I_C ⊗ R_ρ + b·11ᵀ: the mean that inputs after a ReLU,
  all non-negative, have in common), with --synthetic S measured on the layer's inputs when
  the network runs on smooth random fields (a data-free prior on images: lag-1 correlation,
  mean, standard deviation), and S measured on the same images (the truth the data-free models
  stand in for).

Also printed: the layer input's uncentred lag-1 spatial correlation and cross-channel
correlation, measured. No dac code computes anything here but the rewrites.
"""
import argparse
import gzip
import os
import shlex
import subprocess
import tempfile

import numpy as np
import onnx
import onnx.utils
import onnxruntime as ort
from onnx import helper, numpy_helper

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_images(n):
    d = os.path.join(ROOT, "data", "fashion-mnist")
    with gzip.open(os.path.join(d, "t10k-images-idx3-ubyte.gz")) as f:
        x = np.frombuffer(f.read(), np.uint8, offset=16).reshape(-1, 28, 28)[:n]
    with gzip.open(os.path.join(d, "t10k-labels-idx1-ubyte.gz")) as f:
        y = np.frombuffer(f.read(), np.uint8, offset=8)[:n]
    return np.pad(x.astype(np.float32) / 255.0, ((0, 0), (2, 2), (2, 2)))[:, None], y


def conv_node(model, name):
    node = next(n for n in model.graph.node if n.name == name and n.op_type == "Conv")
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    if attrs.get("group", 1) != 1 or any(d != 1 for d in attrs.get("dilations", [1, 1])):
        raise SystemExit(f"{name}: only group 1, dilation 1 layers")
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    return node, inits[node.input[1]], attrs.get("strides", [1, 1]), attrs.get("pads", [0, 0, 0, 0])


def run(path, inputs, names, x):
    """The tensors `names` of the model at `path` on `x`, batch by batch."""
    m = onnx.load(path)
    have = {o.name for o in m.graph.output}
    for n in names:
        if n not in have:
            m.graph.output.append(helper.make_empty_tensor_value_info(n))
    s = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
    outs = [s.run(names, {inputs: x[i:i + 500]}) for i in range(0, len(x), 500)]
    return [np.concatenate([o[j] for o in outs]) for j in range(len(names))]


def effective_kernel(path, layer_in, layer_out, w_shape, stride, pads, hw):
    """The dense kernel the subgraph from `layer_in` to `layer_out` computes, from unit impulses
    placed so that every tap of every channel is hit (stride-many phases per axis), run as one
    batch."""
    n, c, kh, kw = w_shape
    sub = os.path.join(tempfile.mkdtemp(), "sub.onnx")
    onnx.utils.extract_model(path, sub, [layer_in], [layer_out])
    m = onnx.load(sub)
    dims = m.graph.input[0].type.tensor_type.shape.dim
    for d, v in zip(dims[1:], (c, *hw)):
        d.dim_value = v
    s = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
    base = (hw[0] // 2, hw[1] // 2)
    spots = [(ch, py, px) for ch in range(c) for py in range(base[0], base[0] + stride[0])
             for px in range(base[1], base[1] + stride[1])]
    x = np.zeros((len(spots) + 1, c, *hw), np.float32)  # the last one all zeros: the bias
    for k, (ch, py, px) in enumerate(spots):
        x[k, ch, py, px] = 1
    out = s.run(None, {layer_in: x})[0]
    w = np.full(w_shape, np.nan)
    for (ch, py, px), r in zip(spots, out[:-1] - out[-1]):
        for oy in range(r.shape[1]):
            for ox in range(r.shape[2]):
                dy, dx = py + pads[0] - stride[0] * oy, px + pads[1] - stride[1] * ox
                if 0 <= dy < kh and 0 <= dx < kw:
                    w[:, ch, dy, dx] = r[:, oy, ox]
    if np.isnan(w).any():
        raise SystemExit("the impulses did not reach every tap (map too small for this geometry)")
    return w


def patches(a, kh, kw, stride, pads):
    ap = np.pad(a, ((0, 0), (0, 0), (pads[0], pads[2]), (pads[1], pads[3])))
    ho = (ap.shape[2] - kh) // stride[0] + 1
    wo = (ap.shape[3] - kw) // stride[1] + 1
    return np.concatenate([ap[:, :, stride[0] * i:stride[0] * i + kh, stride[1] * j:stride[1] * j + kw]
                           .reshape(len(a), -1) for i in range(ho) for j in range(wo)])


def tap_corr(kh, kw, rho):
    taps = [(i, j) for i in range(kh) for j in range(kw)]
    return np.array([[rho ** (abs(a[0] - b[0]) + abs(a[1] - b[1])) for b in taps] for a in taps])


def smooth_fields(n, shape, rho, mean, std, seed=0):
    """n separable first-order autoregressive Gaussian fields of `shape` (C, H, W): lag-1
    correlation rho along each axis, unit variance, then scaled to mean and std."""
    z = np.random.default_rng(seed).standard_normal((n, *shape))
    for ax in (2, 3):
        z = np.moveaxis(z, ax, -1).copy()
        for i in range(1, z.shape[-1]):
            z[..., i] = rho * z[..., i - 1] + np.sqrt(1 - rho ** 2) * z[..., i]
        z = np.moveaxis(z, -1, ax)
    return (mean + std * z).astype(np.float32)


def predicted(s, dw, w):
    a, b = dw.reshape(len(dw), -1), w.reshape(len(w), -1)
    return float(np.sqrt(np.trace(a @ s @ a.T) / np.trace(b @ s @ b.T)))


def input_stats(a):
    m2 = np.maximum((a ** 2).mean(axis=(0, 2, 3)), 1e-12)
    lag = (a[:, :, :, 1:] * a[:, :, :, :-1]).mean(axis=(0, 2, 3)) / m2
    p = a.transpose(0, 2, 3, 1).reshape(-1, a.shape[1])
    c = p.T @ p / len(p)
    d = np.sqrt(np.diag(c)) + 1e-12
    off = (c / d[:, None] / d[None, :])[~np.eye(len(c), dtype=bool)]
    return float(np.median(lag)), float(np.median(off))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True)
    ap.add_argument("--layer", required=True, help="the Conv node's name")
    ap.add_argument("--candidate", action="append", required=True, help="LABEL=dac onnx arguments")
    ap.add_argument("--images", type=int, default=2000)
    ap.add_argument("--synthetic", action="append", default=[],
                    help="RHO,MEAN,STD: also S measured on the layer's inputs when the network runs on 1000 "
                         "smooth random fields of that prior (repeatable)")
    ap.add_argument("--rhos", default="0.2,0.5,0.7,0.9")
    ap.add_argument("--common", default="", help="shares of a common component: each RHO also with S = (1-b) I_C (x) "
                                                 "R_rho + b 11^T for every b given (comma-separated)")
    ap.add_argument("--dac", default=os.path.join(ROOT, "target", "release", "dac"))
    args = ap.parse_args()
    x, y = test_images(args.images)
    model = onnx.load(args.model)
    node, w0, stride, pads = conv_node(model, args.layer)
    inp_name, layer_in, layer_out = model.graph.input[0].name, node.input[0], node.output[0]
    a, out0, logits0 = run(args.model, inp_name, [layer_in, layer_out, model.graph.output[0].name], x)
    hw = a.shape[2:]
    check = effective_kernel(args.model, layer_in, layer_out, w0.shape, stride, pads, hw)
    print(f"# {args.layer} {list(w0.shape)}, input {list(a.shape[1:])}; kernel read back from the original file: "
          f"max |diff| {np.abs(check - w0).max():.1e}")
    lag, cross = input_stats(a)
    print(f"# its input on {len(x)} test images: lag-1 spatial correlation (uncentred, median over channels) "
          f"{lag:.2f}, cross-channel correlation (median) {cross:.2f}")
    p = patches(a, *w0.shape[2:], stride, pads)
    rhos = [float(r) for r in args.rhos.split(",")]
    models = [("white", np.eye(p.shape[1]))]
    for r in rhos:
        sep = np.kron(np.eye(w0.shape[1]), tap_corr(*w0.shape[2:], r))
        models.append((f"rho {r:g}", sep))
        models += [(f"rho {r:g} + common {b:g}", (1 - b) * sep + b * np.ones_like(sep))
                   for b in (float(v) for v in args.common.split(",") if v)]
    for prior in args.synthetic:
        rho, mean, std = (float(v) for v in prior.split(","))
        fields = smooth_fields(1000, x.shape[1:], rho, mean, std)
        ps = patches(run(args.model, inp_name, [layer_in], fields)[0], *w0.shape[2:], stride, pads)
        models.append((f"synthetic {prior}", ps.T @ ps / len(ps)))
    models.append(("measured S", p.T @ p / len(p)))
    print("| candidate | measured: layer output error | logits error | accuracy | "
          + " | ".join(f"predicted, {n}" for n, _ in models) + " |")
    print("|---" * (4 + len(models)) + "|")
    work = tempfile.mkdtemp()
    for cand in args.candidate:
        label, dac_args = cand.split("=", 1)
        out = os.path.join(work, "c.onnx")
        subprocess.run([args.dac, "onnx", args.model, "-o", out, "--force", *shlex.split(dac_args)],
                       check=True, capture_output=True)
        o, logits = run(out, inp_name, [layer_out, model.graph.output[0].name], x)
        dw = effective_kernel(out, layer_in, layer_out, w0.shape, stride, pads, hw) - w0
        rel = lambda u, v: float(np.sqrt(((u - v) ** 2).sum() / (v ** 2).sum()))  # noqa: E731
        acc = float(np.mean(logits.argmax(1) == y))
        print(f"| {label} | {rel(o, out0):.3f} | {rel(logits, logits0):.3f} | {acc:.2%} | "
              + " | ".join(f"{predicted(s, dw, w0):.3f}" for _, s in models) + " |")


if __name__ == "__main__":
    main()
