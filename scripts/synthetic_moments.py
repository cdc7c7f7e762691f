#!/usr/bin/env python3
"""Second moments of every convolution's input patches, measured on smooth synthetic images run
through an ONNX model in onnxruntime: the file `dac onnx --input-moments` scores candidates with.
No data: the images are random fields drawn from a prior.

    bench/.venv/bin/python scripts/synthetic_moments.py MODEL.onnx -o MOMENTS.safetensors
        [--prior 0.95,0.5,0.25] [--normalize MEAN[,..]/STD[,..]] [--images 256] [--patches 8192]
        [--max-dim 8192] [--seed 0] [--batch 32]

The images. Each channel of each image is a separable first-order autoregressive Gaussian field
(lag-1 correlation RHO along each axis, unit variance) scaled to MEAN + STD * field: `--prior
RHO,MEAN,STD` (default 0.95,0.5,0.25: smooth images with pixels in [0, 1], mostly). A model that
takes normalised inputs gets them through `--normalize`, its own preprocessing constants
(torchvision's: `--normalize 0.485,0.456,0.406/0.229,0.224,0.225`); the shipped Fashion-MNIST
networks take pixel / 255 and need none. The input's dynamic dimensions other than the batch
must be fixed by the model (or by `--input-size HxW`).

The moments. Every Conv's input is added as a graph output; `--images` fields (seeded) run in
batches; at each Conv, `--patches` input patches drawn at random (image, output position; zero
padding included as the Conv sees it) give `S = E[p pᵀ]`, `p` of length `D = C·kh·kw` ordered
channel, kernel row, kernel column (groups expanded: all C input channels). One F32 `[D, D]`
tensor per Conv, named as dac names the layer (the node's name, or its weight's name without
`.weight`); for a Conv of g > 1 groups, `[g, D/g, D/g]`: each group's diagonal block, the only
part of S its losses read (as `dac onnx --synthetic-moments --save-moments` writes it). A Conv
with D/g above `--max-dim` is left out and listed (its matrix would be (D/g)² floats per
group); `dac onnx --input-moments` then refuses to plan it, so leave it out with `--skip`.
"""
import argparse
import json
import os
import struct
import sys

import numpy as np
import onnx
import onnxruntime as ort
from onnx import helper, numpy_helper


def fields(rng, n, c, h, w, rho):
    """`n x c` unit-variance separable AR(1) fields of `h x w`."""
    f = rng.standard_normal((n, c, h, w))
    innov = np.sqrt(1.0 - rho * rho)
    for x in range(1, w):
        f[..., x] = rho * f[..., x - 1] + innov * f[..., x]
    for y in range(1, h):
        f[..., y, :] = rho * f[..., y - 1, :] + innov * f[..., y, :]
    return f


def conv_layers(model):
    """(name, input tensor, weight dims, attributes) of every Conv with a constant weight."""
    inits = {t.name: t for t in model.graph.initializer}
    out = []
    for node in model.graph.node:
        if node.op_type != "Conv" or len(node.input) < 2 or node.input[1] not in inits:
            continue
        weight = node.input[1]
        dims = list(inits[weight].dims)
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        if attrs.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET"):
            sys.exit(f"{node.name or weight}: auto_pad {attrs['auto_pad']} is not supported here")
        name = node.name or (weight[:-len(".weight")] if weight.endswith(".weight") else weight)
        out.append((name, node.input[0], dims, attrs))
    return out


def patch_moments(x, dims, attrs, count, rng):
    """`E[p pᵀ]` over `count` random input patches of one Conv (module docs): `[D, D]`, or the
    `[g, D/g, D/g]` diagonal blocks of a grouped one."""
    n, c, h, w = x.shape
    kh, kw = dims[2], dims[3]
    sh, sw = attrs.get("strides", [1, 1])
    dh, dw = attrs.get("dilations", [1, 1])
    top, left, bottom, right = attrs.get("pads", [0, 0, 0, 0])
    xp = np.pad(x, ((0, 0), (0, 0), (top, bottom), (left, right)))
    ho = (h + top + bottom - dh * (kh - 1) - 1) // sh + 1
    wo = (w + left + right - dw * (kw - 1) - 1) // sw + 1
    img, oy, ox = rng.integers(0, n, count), rng.integers(0, ho, count), rng.integers(0, wo, count)
    rows = (oy * sh)[:, None] + dh * np.arange(kh)[None, :]                    # [count, kh]
    cols = (ox * sw)[:, None] + dw * np.arange(kw)[None, :]                    # [count, kw]
    p = xp[img[:, None, None, None], np.arange(c)[None, :, None, None], rows[:, None, :, None], cols[:, None, None, :]]
    g = attrs.get("group", 1)
    p = p.reshape(count, g, (c // g) * kh * kw).astype(np.float64)
    blocks = np.einsum("ngi,ngj->gij", p, p) / count
    return blocks[0] if g == 1 else blocks


def save_safetensors(path, tensors):
    """`tensors` (name -> float32 array) as a safetensors file, written beside `path` first."""
    header, offset, blobs = {}, 0, []
    for name, a in tensors.items():
        b = np.ascontiguousarray(a, dtype="<f4").tobytes()
        header[name] = {"dtype": "F32", "shape": list(a.shape), "data_offsets": [offset, offset + len(b)]}
        offset += len(b)
        blobs.append(b)
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text)
        for b in blobs:
            f.write(b)
    os.replace(tmp, path)


def parse_normalize(text, c):
    """The model's input preprocessing `MEAN[,..]/STD[,..]` as per-channel `[1, c, 1, 1]` arrays."""
    mean, std = ([float(v) for v in part.split(",")] for part in (text or "0/1").split("/"))
    return (np.broadcast_to(np.asarray(mean, np.float64), c).reshape(1, c, 1, 1),
            np.broadcast_to(np.asarray(std, np.float64), c).reshape(1, c, 1, 1))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model")
    ap.add_argument("-o", "--output", required=True)
    ap.add_argument("--prior", default="0.95,0.5,0.25", help="RHO,MEAN,STD of the fields")
    ap.add_argument("--normalize", default="", help="MEAN[,..]/STD[,..]: the model's input preprocessing")
    ap.add_argument("--input-size", default="", help="HxW when the model's input size is not fixed")
    ap.add_argument("--images", type=int, default=256)
    ap.add_argument("--patches", type=int, default=8192)
    ap.add_argument("--max-dim", type=int, default=8192)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    rho, mean, std = (float(v) for v in args.prior.split(","))

    model = onnx.load(args.model)
    layers = conv_layers(model)
    kept = [l for l in layers if l[2][1] * l[2][2] * l[2][3] <= args.max_dim]
    for name, _, dims, attrs in layers:
        if (name, dims) not in [(k[0], k[2]) for k in kept]:
            print(f"left out {name}: D/g = {dims[1] * dims[2] * dims[3]} > --max-dim", file=sys.stderr)
    wanted = sorted({l[1] for l in kept})
    present = {o.name for o in model.graph.output}
    for t in wanted:
        if t not in present:
            model.graph.output.append(helper.make_tensor_value_info(t, onnx.TensorProto.FLOAT, None))
    inits = {t.name for t in model.graph.initializer}
    inp = next(i for i in model.graph.input if i.name not in inits)
    dims = [d.dim_value if d.HasField("dim_value") else None for d in inp.type.tensor_type.shape.dim]
    c = dims[1]
    h, w = (int(v) for v in args.input_size.split("x")) if args.input_size else (dims[2], dims[3])
    if not (c and h and w):
        sys.exit(f"input {inp.name} has shape {dims}: give --input-size HxW")
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])

    rng = np.random.default_rng(args.seed)
    norm_mean, norm_std = parse_normalize(args.normalize, c)
    seen = {t: [] for t in wanted}
    for start in range(0, args.images, args.batch):
        n = min(args.batch, args.images - start)
        x = (mean + std * fields(rng, n, c, h, w, rho) - norm_mean) / norm_std
        outs = sess.run(wanted, {inp.name: x.astype(np.float32)})
        for t, o in zip(wanted, outs):
            seen[t].append(o)
    inputs = {t: np.concatenate(v) for t, v in seen.items()}
    moments = {name: patch_moments(inputs[t], dims_, attrs, args.patches, rng).astype(np.float32)
               for name, t, dims_, attrs in kept}
    save_safetensors(args.output, moments)
    print(f"{args.output}: {len(moments)} layers from {args.images} synthetic images "
          f"(prior rho {rho}, mean {mean}, std {std}), {args.patches} patches each")


if __name__ == "__main__":
    main()
