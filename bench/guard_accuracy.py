#!/usr/bin/env python3
"""What the break-even guard in time costs `--macs` plans in accuracy, on the shipped networks.

    DAC=target/release/dac bench/.venv/bin/python bench/guard_accuracy.py [--targets 1.5,2,3]

For each shipped network (models/fmnist_vgg.onnx, models/fmnist_alt.onnx; fmnist_alt.onnx:
`bench/.venv/bin/python scripts/export_onnx.py alt`) and each target X, `dac onnx NET.onnx --macs X
--json` with the default (layers modeled slower than dense stay dense) and with
`--allow-slower` (MACs only); each written model's top-1 accuracy on all 10,000 test images
(onnxruntime, 1 thread, batches of 500; images as bench/accuracy.py's load_test), with the MAC
reduction and the modeled speed-up its report prints. Nothing is timed. Writes into a temporary
directory only.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from accuracy import load_test  # noqa: E402
from ortutil import predict, session  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def accuracy(path, x, y):
    return 100.0 * float((predict(session(path, 1), x) == y).mean())


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--targets", default="1.5,2,3")
    a = ap.parse_args()
    dac = os.environ.get("DAC", os.path.join(ROOT, "target", "release", "dac"))
    x, y = load_test(np.float32)
    print("| network | --macs | default: accuracy | MACs | modeled speed-up "
          "| --allow-slower: accuracy | MACs | modeled speed-up |\n|---|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for net in ("vgg", "alt"):
            for t in a.targets.split(","):
                cells = []
                for extra in ([], ["--allow-slower"]):
                    out = os.path.join(tmp, "out.onnx")
                    run = subprocess.run([dac, "onnx", os.path.join(ROOT, "models", f"fmnist_{net}.onnx"), "-o", out,
                                          "--macs", t, "--json", "--force", *extra],
                                         capture_output=True, text=True, check=True)
                    r = json.loads(run.stdout)
                    cells += [f"{accuracy(out, x, y):.2f} %", f"{r['reduction']:.3f}x", f"{r['speedup']:.2f}x"]
                print(f"| fmnist_{net} | {t} | " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
