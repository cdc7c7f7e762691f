#!/usr/bin/env python3
"""Fashion-MNIST test accuracy (all 10,000 images) of a checkpoint written by `dac convert`,
computed by an independent numpy forward pass (im2col + matmul; nothing from the crate is reused).

    bench/.venv/bin/python bench/accuracy.py --net vgg --speedup 2 --scheme auto [--fit correlated]
                     (--speedup X here plans X times fewer MACs: `dac convert --macs X`)
    bench/.venv/bin/python bench/accuracy.py --net alt --energy 1 --allow-slower --scheme spatial
    bench/.venv/bin/python bench/accuracy.py --net vgg --dense            # the unconverted model
    bench/.venv/bin/python bench/accuracy.py --all                        # the whole grid, markdown
    bench/.venv/bin/python bench/accuracy.py --net vgg --eval FILE        # an existing checkpoint

The forward pass follows models/<stem>.json "ops" (models/README.md). A converted layer `<name>`
has no `<name>.weight`; its `dac.layer.<name>` metadata says how to run its factors: without
"scheme" it is DAC (depthwise [C*r,1,kh,kw], groups C, the layer's own stride/padding/dilation,
then pointwise [N,(C/g)*r,1,1], groups g); otherwise "factors" lists plain grouped convolutions
in run order. Every layer's geometry (stride, padding, groups) is passed to `dac convert`, since a
checkpoint does not record it.
"""
import argparse, gzip, json, os, subprocess, sys, time
import numpy as np
from safetensors import safe_open

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DAC = os.environ.get("DAC", "/tmp/dac-eval")
OUT = os.environ.get("ACC_OUT", "/tmp/acc")
DATA = os.path.join(ROOT, "data", "fashion-mnist")
VARIANTS = [("dac", []), ("dac+correlated", ["--fit", "correlated"]), ("auto", []),
            ("auto+correlated", ["--fit", "correlated"]), ("spatial", [])]


def load_idx(directory, prefix, dtype, pick=None):
    """Images and labels of `directory/prefix-*-idx*-ubyte.gz` (rows `pick`, default all):
    pixel/255 zero-padded to 32x32, as the networks were trained."""
    with gzip.open(os.path.join(directory, f"{prefix}-images-idx3-ubyte.gz")) as f:
        img = np.frombuffer(f.read(), np.uint8, offset=16).reshape(-1, 28, 28)
    with gzip.open(os.path.join(directory, f"{prefix}-labels-idx1-ubyte.gz")) as f:
        lab = np.frombuffer(f.read(), np.uint8, offset=8)
    if pick is not None:
        img, lab = img[pick], lab[pick]
    x = np.zeros((len(img), 1, 32, 32), dtype)
    x[:, 0, 2:30, 2:30] = img.astype(np.float32) / np.float32(255.0)  # pixel/255 in f32, as torch
    return x, lab.astype(np.int64)


def load_test(dtype):
    return load_idx(DATA, "t10k", dtype)


def conv2d(x, w, b=None, stride=(1, 1), pad=(0, 0, 0, 0), dil=(1, 1), groups=1):
    """PyTorch conv2d semantics on x laid out [C, B, H, W] (channel-major, so each group is one big
    GEMM); pad = (top, bottom, left, right); w = [O, C/groups, kh, kw]. Returns [O, B, Ho, Wo]."""
    C, B, H, W = x.shape
    O, Cg, kh, kw = w.shape
    if C != Cg * groups or O % groups:
        raise ValueError(f"conv: input has {C} channels, weight {list(w.shape)} groups {groups}")
    t, bo, l, r = pad
    xp = np.pad(x, ((0, 0), (0, 0), (t, bo), (l, r)))
    Ho = (H + t + bo - dil[0] * (kh - 1) - 1) // stride[0] + 1
    Wo = (W + l + r - dil[1] * (kw - 1) - 1) // stride[1] + 1
    tap = lambda ch, i, j: xp[ch, :, i * dil[0]:i * dil[0] + stride[0] * (Ho - 1) + 1:stride[0],
                              j * dil[1]:j * dil[1] + stride[1] * (Wo - 1) + 1:stride[1]]
    if groups > 1 and Cg * kh * kw <= 16:  # depthwise-like: many tiny GEMMs; multiply-add instead
        src = (np.arange(O) // (O // groups)) * Cg  # first input channel of each output's group
        y = np.zeros((O, B, Ho, Wo), x.dtype)
        for c in range(Cg):
            for i in range(kh):
                for j in range(kw):
                    y += w[:, c, i, j].astype(x.dtype)[:, None, None, None] * tap(src + c, i, j)
        return y if b is None else y + b.astype(x.dtype)[:, None, None, None]
    cols = np.empty((C, kh * kw, B, Ho, Wo), x.dtype)  # im2col: row (c, i, j), column (b, y, x)
    for i in range(kh):
        for j in range(kw):
            cols[:, i * kw + j] = tap(slice(None), i, j)
    cols = cols.reshape(groups, Cg * kh * kw, B * Ho * Wo)
    wm = w.reshape(groups, O // groups, Cg * kh * kw).astype(x.dtype)
    y = np.matmul(wm, cols).reshape(O, B, Ho, Wo)  # [g,Og,K] @ [g,K,N]
    if b is not None:
        y += b.astype(x.dtype)[:, None, None, None]
    return y


class Checkpoint:
    def __init__(self, path):
        f = safe_open(path, "np")
        self.t = {k: f.get_tensor(k) for k in f.keys()}
        self.meta = f.metadata() or {}

    def layer(self, op):
        """[(weight, bias, stride, pad, dilation, groups)] to run for conv op `op`, in order."""
        n, geo = op["name"], (tuple(op["stride"]), tuple(op["pad"]), tuple(op["dilation"]))
        if n + ".weight" in self.t:
            return [(self.t[n + ".weight"], self.t.get(n + ".bias")) + geo + (op["groups"],)]
        m = json.loads(self.meta["dac.layer." + n])
        for k, v in (("in_channels", op["in_channels"]), ("out_channels", op["out_channels"]),
                     ("kernel", op["kernel"]), ("groups", op["groups"])):
            if m.get(k) != v:
                raise ValueError(f"{n}: metadata {k}={m.get(k)} but the network has {v}")
        if "scheme" not in m:  # DAC: depthwise (layer geometry) then grouped pointwise
            C, r = m["in_channels"], m["rank"]
            dw, pw = self.t[n + ".depthwise.weight"], self.t[n + ".pointwise.weight"]
            if dw.shape[0] != C * r or pw.shape[1] * m["groups"] != C * r:
                raise ValueError(f"{n}: DAC shapes {dw.shape} {pw.shape} vs C={C} r={r}")
            return [(dw, self.t.get(n + ".depthwise.bias")) + geo + (C,),
                    (pw, self.t.get(n + ".pointwise.bias"), (1, 1), (0, 0, 0, 0), (1, 1), m["groups"])]
        out = []
        for fc in m["factors"]:
            w = self.t[f"{n}.{fc['role']}.weight"]
            if list(w.shape) != fc["shape"]:
                raise ValueError(f"{n}.{fc['role']}: tensor {list(w.shape)} vs metadata {fc['shape']}")
            out.append((w, self.t.get(f"{n}.{fc['role']}.bias"), tuple(fc["stride"]),
                        tuple(fc["padding"]), tuple(fc["dilation"]), fc["groups"]))
        return out


def forward(ops, ck, x):
    x = x.transpose(1, 0, 2, 3).copy()  # [B, C, H, W] -> [C, B, H, W]
    for op in ops:
        k = op["op"]
        if k == "conv":
            for w, b, s, p, d, g in ck.layer(op):
                x = conv2d(x, w, b, s, p, d, g)
            if x.shape[0] != op["out_channels"]:
                raise ValueError(f"{op['name']}: {x.shape[0]} output channels")
        elif k == "relu":
            x = np.maximum(x, 0)
        elif k == "maxpool":
            s, kk = op["stride"], op["kernel"]
            C, B, H, W = x.shape
            Ho, Wo = (H - kk) // s + 1, (W - kk) // s + 1
            x = np.max([x[:, :, i:i + s * (Ho - 1) + 1:s, j:j + s * (Wo - 1) + 1:s]
                        for i in range(kk) for j in range(kk)], axis=0)
        elif k == "avgpool_global":
            x = x.mean(axis=(2, 3), keepdims=True)
        elif k == "flatten":
            x = x.transpose(1, 0, 2, 3).reshape(x.shape[1], -1)  # [B, C*H*W], c-major
        elif k == "linear":
            x = x @ ck.t[op["name"] + ".weight"].T.astype(x.dtype) + ck.t[op["name"] + ".bias"]
        else:
            raise ValueError("unknown op " + k)
    return x


def evaluate(ops, path, data, chunk=500):
    ck, (x, y) = Checkpoint(path), data
    pred = np.concatenate([forward(ops, ck, x[i:i + chunk]).argmax(1)  # argmax: lowest index on ties
                           for i in range(0, len(x), chunk)])
    return pred, int((pred == y).sum())


def geometry_flags(ops):
    """--layer-input (true input size) and the geometry a checkpoint does not record."""
    h = w = 32
    flags = ["--input", "32x32"]
    for op in ops:
        if op["op"] == "conv":
            n, (sh, sw), pad, (dh, dw) = op["name"], op["stride"], op["pad"], op["dilation"]
            flags += ["--layer-input", f"{n}={h}x{w}", "--stride", f"{n}={sh}x{sw}",
                      "--padding", f"{n}=" + ",".join(map(str, pad)), "--dilation", f"{n}={dh}x{dw}",
                      "--groups", f"{n}={op['groups']}"]
            kh, kw = op["kernel"]
            h = (h + pad[0] + pad[1] - dh * (kh - 1) - 1) // sh + 1
            w = (w + pad[2] + pad[3] - dw * (kw - 1) - 1) // sw + 1
        elif op["op"] == "maxpool":
            h, w = (h - op["kernel"]) // op["stride"] + 1, (w - op["kernel"]) // op["stride"] + 1
    return flags


def convert(net, ops, budget, scheme, extra, tag, no_geometry=False):
    """Runs `dac convert`; returns (output path, parsed JSON) or (None, error text)."""
    os.makedirs(OUT, exist_ok=True)
    out = os.path.join(OUT, f"{net}_{tag}.safetensors")
    geo = geometry_flags(ops)
    if no_geometry:  # sizes only, no --stride/--padding/--dilation/--groups
        geo = geo[:2] + sum([geo[i:i + 2] for i in range(2, len(geo), 2) if geo[i] == "--layer-input"], [])
    cmd = [DAC, "convert", os.path.join(ROOT, "models", f"fmnist_{net}.safetensors"), "-o", out,
           *budget, *geo, "--scheme", scheme, *extra, "--json", "--force"]
    p = subprocess.run(cmd, capture_output=True, text=True)
    if p.returncode:
        return None, (p.stderr.strip() or p.stdout.strip()).replace("\n", " ")
    return out, json.loads(p.stdout)


def run_cell(net, budget, scheme, extra, data, no_geometry=False, quiet=False):
    spec = json.load(open(os.path.join(ROOT, "models", f"fmnist_{net}.json")))
    tag = "_".join(a.lstrip("-").replace("=", "") for a in budget + ["--scheme", scheme] + extra)
    out, res = convert(net, spec["ops"], budget, scheme, extra, tag, no_geometry)
    if out is None:
        print(f"  {net} {tag}: dac convert failed: {res}")
        return None, None, res
    plan = res.get("plan") or {}
    red = plan.get("reduction", res.get("reduction"))
    layers = ", ".join(f"{c['name']}={c['scheme']}/{c['rank']}" for c in res["converted"])
    try:
        _, correct = evaluate(spec["ops"], out, data)
    except (ValueError, KeyError) as e:
        print(f"  {net} {tag}: evaluation failed: {e!r}")
        return red, None, f"evaluation failed: {e!r}"
    if not quiet:
        print(f"  {net} {tag}: reduction {red:.3f}, accuracy {correct / 100:.2f} %  [{layers}]")
    return red, correct, layers


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--net", choices=["vgg", "alt"])
    ap.add_argument("--speedup", type=float)
    ap.add_argument("--energy", type=float)
    ap.add_argument("--scheme", default="dac")
    ap.add_argument("--fit")
    ap.add_argument("--allow-slower", action="store_true")
    ap.add_argument("--no-geometry", action="store_true",
                    help="pass only --layer-input sizes (no --stride/--padding/--groups)")
    ap.add_argument("--dense", action="store_true", help="evaluate the unconverted model")
    ap.add_argument("--eval", metavar="FILE", help="evaluate an existing checkpoint")
    ap.add_argument("--all", action="store_true", help="the whole grid, as a markdown table")
    ap.add_argument("--f64", action="store_true", help="evaluate in float64 (default float32)")
    a = ap.parse_args()
    t0 = time.time()
    data = load_test(np.float64 if a.f64 else np.float32)
    nets = ["vgg", "alt"] if a.all else [a.net]
    if None in nets:
        ap.error("--net is required unless --all")
    for net in nets if (a.all or a.dense) else []:  # dense check: must reproduce the recorded accuracy and predictions
        spec = json.load(open(os.path.join(ROOT, "models", f"fmnist_{net}.json")))
        pred, c = evaluate(spec["ops"], os.path.join(ROOT, "models", f"fmnist_{net}.safetensors"), data)
        ref = np.frombuffer(open(os.path.join(ROOT, "models", f"fmnist_{net}.preds"), "rb").read(), np.uint8)
        diff = np.nonzero(pred != ref)[0].tolist()
        ok = "OK" if c == spec["test_correct"] else "MISMATCH"
        print(f"dense {net}: {c / 100:.2f} % ({c}/10000, recorded {spec['test_correct']}: {ok}); "
              f"predictions differing from {net}.preds: {diff}")
    if a.eval:
        spec = json.load(open(os.path.join(ROOT, "models", f"fmnist_{a.net}.json")))
        c = evaluate(spec["ops"], a.eval, data)[1]
        print(f"{a.eval}: {c / 100:.2f} %")
    elif a.all:
        rows = []
        for net in nets:
            for x in (1.5, 2, 3):
                for name, extra in VARIANTS:
                    scheme = name.split("+")[0]
                    red, c, info = run_cell(net, ["--macs", str(x)], scheme, extra, data)
                    rows.append((net, x, name, red, c, info))
        print("\n| net | target | variant | reduction | accuracy % | notes |\n|---|---|---|---|---|---|")
        for net, x, name, red, c, info in rows:
            acc = f"{c / 100:.2f}" if c is not None else "—"
            note = info if (c is None or name.startswith("auto")) else ""
            print(f"| {net} | {x}x | {name} | {'—' if red is None else f'{red:.3f}'} | {acc} | {note} |")
    elif not a.dense:
        if (a.speedup is None) == (a.energy is None):
            ap.error("give exactly one of --speedup, --energy (or --dense / --all / --eval)")
        budget = ["--macs", str(a.speedup)] if a.speedup else ["--energy", str(a.energy)]
        extra = (["--fit", a.fit] if a.fit else []) + (["--allow-slower"] if a.allow_slower else [])
        run_cell(a.net, budget, a.scheme, extra, data, a.no_geometry)
    print(f"total time {time.time() - t0:.1f} s", file=sys.stderr)


if __name__ == "__main__":
    main()
