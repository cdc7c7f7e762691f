#!/usr/bin/env python3
"""The depth weight for `--speedup` plans, scanned on training images of both shipped networks.

    DAC=target/release/dac bench/.venv/bin/python bench/depth_time_scan.py [--alphas 0,1,1.5,2,3,4]
        [--targets 1.1,1.15,1.2,1.25,1.5,1.75,2,2.5,3] [--train-dir /usr/share/datasets/fashion-mnist]
        [--out results.json]

`AUTO_DEPTH_WEIGHT` (3) was chosen for `--macs` targets (EXPERIMENTS.md, "The depth weight").
This scan asks the same question of `--speedup` targets, by the same rule fixed in advance: for
each weight A, `dac onnx models/fmnist_<net>.onnx --speedup X --depth-weight A` for both
networks and every target X; each written model's top-1 accuracy on the first 1,000 training
images of each class (Debian's `dataset-fashion-mnist`, pixel/255 zero-padded to 32x32, as
the test set everywhere else; the set `AUTO_DEPTH_WEIGHT` was chosen on); the weight with the
largest mean over all cells wins, ties within 0.05 points going to the default, 3. Data-free
plans; the images only score them; the test set is not read. Nothing is timed.
"""
import argparse
import gzip
import json
import os
import subprocess
import sys
import tempfile

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from accuracy import load_idx  # noqa: E402
from ortutil import predict, session  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def load_train(directory, per_class=1000):
    """The first `per_class` training images of each class, in file order."""
    with gzip.open(os.path.join(directory, "train-labels-idx1-ubyte.gz")) as f:
        lab = np.frombuffer(f.read(), np.uint8, offset=8)
    seen, picks = np.zeros(256, int), []
    for i, c in enumerate(lab):
        seen[c] += 1
        if seen[c] <= per_class:
            picks.append(i)
    return load_idx(directory, "train", np.float32, picks)


def accuracy(path, x, y):
    return 100.0 * float((predict(session(path, 1), x) == y).mean())


def floats(s):
    return [float(t) for t in s.split(",") if t.strip()]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--alphas", type=floats, default=[0, 1, 1.5, 2, 3, 4])
    ap.add_argument("--targets", type=floats, default=[1.1, 1.15, 1.2, 1.25, 1.5, 1.75, 2, 2.5, 3])
    ap.add_argument("--train-dir", default="/usr/share/datasets/fashion-mnist")
    ap.add_argument("--out")
    a = ap.parse_args()
    dac = os.environ.get("DAC", os.path.join(ROOT, "target", "release", "dac"))
    x, y = load_train(a.train_dir)
    cells = []
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "out.onnx")
        for net in ("vgg", "alt"):
            src = os.path.join(ROOT, "models", f"fmnist_{net}.onnx")
            for t in a.targets:
                for alpha in a.alphas:
                    run = subprocess.run([dac, "onnx", src, "-o", out, "--speedup", f"{t:g}", "--depth-weight",
                                          f"{alpha:g}", "--json", "--force"], capture_output=True, text=True, check=True)
                    r = json.loads(run.stdout)
                    cells.append(dict(net=net, target=t, alpha=alpha, accuracy=accuracy(out, x, y),
                                      speedup=r["speedup"], met=r["plan"]["met"]))
                    print(f"{net} {t:g} A={alpha:g}: {cells[-1]['accuracy']:.2f} % (modeled {r['speedup']:.2f}x)",
                          file=sys.stderr, flush=True)
    print("| network | --speedup | " + " | ".join(f"A = {al:g}" for al in a.alphas) + " |")
    print("|---|---|" + "---|" * len(a.alphas))
    for net in ("vgg", "alt"):
        for t in a.targets:
            row = [c for c in cells if c["net"] == net and c["target"] == t]
            print(f"| fmnist_{net} | {t:g} | " + " | ".join(f"{c['accuracy']:.2f}" for c in row) + " |")
    means = {al: float(np.mean([c["accuracy"] for c in cells if c["alpha"] == al])) for al in a.alphas}
    print("| **mean** | | " + " | ".join(f"**{means[al]:.2f}**" for al in a.alphas) + " |")
    best = max(means, key=means.get)
    if 3.0 in means and means[best] - means[3.0] <= 0.05:
        best = 3.0
    print(f"\nlargest mean (ties within 0.05 to the default 3): A = {best:g}")
    if a.out:
        with open(a.out, "w") as f:
            json.dump(dict(command=sys.argv, cells=cells, means=means, chosen=best), f, indent=1)


if __name__ == "__main__":
    main()
