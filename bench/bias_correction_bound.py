#!/usr/bin/env python3
"""An upper bound, using data, on what bias correction could add to the planner's plans (issue #15).

Bias correction (Nagel et al. 2019, "Data-Free Quantization") adds to each factored layer's bias
the mean of the error it makes, E[(W - W_r) x], so that the factored network's activations keep
their means. Done data-free, E[x] comes from BatchNorm statistics (the shipped networks have
none) or from an assumed input distribution. This script measures the bound instead: E[x] taken
from real training images, which no data-free estimate can beat on average.

For each (network, target) it runs `dac convert --macs X` (default options, as bench/accuracy.py
does), reads each factored layer's chain of factors back as its one equivalent dense kernel W_r
(composing the factors on one-hot inputs), and evaluates on all 10,000 test images:
  - the factored network as written (the accuracy EXPERIMENTS.md records);
  - the same with each factored layer's bias corrected by E[(W - W_r) x] over the first N
    training images, x being that layer's input in the original network ("orig"), or in the
    corrected factored network, layer by layer ("sequential").

    DAC=target/release/dac bench/.venv/bin/python bench/bias_correction_bound.py [--net vgg] [--targets 2] [--train 2000]
"""
import argparse, gzip, json, os, sys
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import accuracy as A  # noqa: E402  (the independent numpy forward pass and the convert call)

TRAIN = "/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz"


def train_images(n):
    with gzip.open(TRAIN) as f:
        img = np.frombuffer(f.read(), np.uint8, offset=16).reshape(-1, 28, 28)[:n]
    x = np.zeros((len(img), 1, 32, 32), np.float32)
    x[:, 0, 2:30, 2:30] = img.astype(np.float32) / np.float32(255.0)
    return x


def equivalent_kernel(chain, op):
    """The dense kernel [N, C/g, kh, kw] that a chain of factor convolutions computes (stride 1,
    no padding: a kh x kw one-hot input per (c, i, j) gives one output position)."""
    kh, kw = op["kernel"]
    C, g = op["in_channels"], op["groups"]
    x = np.zeros((C, C * kh * kw, kh, kw))
    for c in range(C):
        for i in range(kh):
            for j in range(kw):
                x[c, (c * kh + i) * kw + j, i, j] = 1
    for w, _b, _s, _p, d, groups in chain:
        x = A.conv2d(x, w.astype(np.float64), None, (1, 1), (0, 0, 0, 0), d, groups)
    k = x[:, :, 0, 0].reshape(-1, C, kh, kw)  # [N, C, kh, kw]; a grouped layer keeps its block
    cg, ng = C // g, k.shape[0] // g
    return np.stack([k[n, (n // ng) * cg:(n // ng + 1) * cg] for n in range(k.shape[0])])


class Dense:
    """A checkpoint view where every conv layer is one dense kernel (what accuracy.forward runs)."""

    def __init__(self, t):
        self.t = t

    def layer(self, op):
        n = op["name"]
        return [(self.t[n + ".weight"], self.t.get(n + ".bias"), tuple(op["stride"]), tuple(op["pad"]),
                 tuple(op["dilation"]), op["groups"])]


def step(op, net, x):
    """One op of accuracy.forward on x laid out [B, C, H, W]; None at flatten (convs only)."""
    if op["op"] == "flatten":
        return None
    return A.forward([op], net, x).transpose(1, 0, 2, 3)


def corrected(ops, dense, factored, names, xt, sequential):
    """The factored weights with each factored layer's bias corrected by its mean error."""
    t = dict(factored.t)
    xo = xa = xt
    for op in ops:
        if op["op"] == "conv" and op["name"] in names:
            n = op["name"]
            diff = Dense({n + ".weight": dense.t[n + ".weight"].astype(np.float64)
                          - factored.t[n + ".weight"].astype(np.float64)})
            src = (xa if sequential else xo).astype(np.float64)
            e = A.forward([op], diff, src).mean(axis=(1, 2, 3))  # [N]: the mean error per output
            t[n + ".bias"] = (dense.t[n + ".bias"] + e).astype(np.float32)
        xo, xa = step(op, dense, xo), step(op, Dense(t), xa)
        if xo is None:
            break
    return Dense(t)


def accuracy(ops, net, data):
    x, y = data
    pred = np.concatenate([A.forward(ops, net, x[i:i + 500]).argmax(1) for i in range(0, len(x), 500)])
    return 100.0 * float((pred == y).mean())


def cell(name, x, data, xt, depth):
    spec = json.load(open(os.path.join(A.ROOT, "models", f"fmnist_{name}.json")))
    ops = spec["ops"]
    extra = [] if depth is None else ["--depth-weight", str(depth)]
    out, res = A.convert(name, ops, ["--macs", str(x)], "auto", extra, f"bias_bound_{x}")
    if out is None:
        raise SystemExit(f"dac convert failed: {res}")
    dense = A.Checkpoint(os.path.join(A.ROOT, "models", f"fmnist_{name}.safetensors"))
    ck = A.Checkpoint(out)
    t, names = dict(dense.t), set()
    for op in ops:
        if op["op"] == "conv" and op["name"] + ".weight" not in ck.t:
            t[op["name"] + ".weight"] = equivalent_kernel(ck.layer(op), op).astype(np.float32)
            names.add(op["name"])
    factored = Dense(t)
    written = 100.0 * A.evaluate(ops, out, data)[1] / len(data[1])
    row = [accuracy(ops, factored, data), written]
    for seq in (False, True):
        row.append(accuracy(ops, corrected(ops, dense, factored, names, xt, seq), data))
    return row


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--net", choices=["vgg", "alt", "both"], default="both")
    ap.add_argument("--targets", default="1.5,2,3")
    ap.add_argument("--train", type=int, default=2000, help="training images for E[x] (default 2000)")
    ap.add_argument("--depth-weight", type=float, default=None,
                    help="passed to dac convert (default: the converter's; 0 for the recorded run)")
    a = ap.parse_args()
    data, xt = A.load_test(np.float32), train_images(a.train)
    print("| network | --macs | as written | equivalent dense kernels | + bias correction (orig) | "
          "+ bias correction (sequential) |\n|---|---|---|---|---|---|")
    for name in (["vgg", "alt"] if a.net == "both" else [a.net]):
        for x in a.targets.split(","):
            kernels, written, orig, seq = cell(name, float(x), data, xt, a.depth_weight)
            print(f"| fmnist_{name} | {x} | {written:.2f} | {kernels:.2f} | {orig:.2f} | {seq:.2f} |", flush=True)


if __name__ == "__main__":
    main()
