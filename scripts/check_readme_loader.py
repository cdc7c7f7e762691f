#!/usr/bin/env python3
"""Runs the README's PyTorch loader ("Loading the result in PyTorch": the block defining
`replacement`, read from README.md) on converted Fashion-MNIST checkpoints of every scheme, and
checks that the loaded PyTorch model predicts what `bench/accuracy.py`'s independent numpy
forward pass predicts for the same file.

    /usr/bin/python3 scripts/check_readme_loader.py      # Debian's python3-torch + bench/.venv's packages

Needs torch and numpy (Debian `python3-torch`) and safetensors (bench/.venv, appended to
sys.path).
Converts with `$DAC` (default target/release/dac) into `$ACC_OUT` (default /tmp/acc).
"""
import glob, json, os, re, sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path += glob.glob(os.path.join(ROOT, "bench", ".venv", "lib", "python3*", "site-packages"))
sys.path.insert(0, os.path.join(ROOT, "bench"))
os.environ.setdefault("DAC", os.path.join(ROOT, "target", "release", "dac"))

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn as nn  # noqa: E402
from safetensors import safe_open  # noqa: E402
from safetensors.torch import load_file  # noqa: E402
import accuracy  # noqa: E402  (bench/accuracy.py)


def readme_loader():
    """The README's first loader block (the one defining `replacement`), executed."""
    text = open(os.path.join(ROOT, "README.md")).read()
    blocks = re.findall(r"```python\n(.*?)```", text, re.S)
    code = next(b for b in blocks if "def replacement(" in b)
    scope = {}
    exec(code, scope)
    return scope["replacement"]


class JsonNet(nn.Module):
    """models/<net>.json's ops as PyTorch modules named as the checkpoint's tensors."""

    def __init__(self, ops):
        super().__init__()
        self.ops = ops
        self.features, self.classifier = nn.ModuleList(), nn.ModuleList()
        for op in ops:
            if op["op"] == "conv":
                t, b, l, r = op["pad"]
                assert (t, l) == (b, r), op
                self.features.append(nn.Conv2d(op["in_channels"], op["out_channels"], tuple(op["kernel"]),
                                               stride=tuple(op["stride"]), padding=(t, l),
                                               dilation=tuple(op["dilation"]), groups=op["groups"]))
            elif op["op"] == "linear":
                self.classifier.append(nn.Linear(op["in_features"], op["out_features"]))

    def forward(self, x):
        ci = li = 0
        for op in self.ops:
            kind = op["op"]
            if kind == "conv":
                x, ci = self.features[ci](x), ci + 1
            elif kind == "relu":
                x = torch.relu(x)
            elif kind == "maxpool":
                x = nn.functional.max_pool2d(x, op["kernel"], op["stride"])
            elif kind == "avgpool_global":
                x = x.mean(dim=(2, 3), keepdim=True)
            elif kind == "flatten":
                x = x.flatten(1)
            elif kind == "linear":
                x, li = self.classifier[li](x), li + 1
            else:
                raise ValueError(f"op {kind}")
        return x


def apply_records(model, path, replacement):
    """Replaces every module the checkpoint's `dac.layer.*` records name by `replacement`."""
    with safe_open(path, "pt") as f:
        meta = f.metadata() or {}
    for key, value in meta.items():
        if key.startswith("dac.layer."):
            name = key[len("dac.layer."):]
            parent, _, attr = name.rpartition(".")
            owner = model.get_submodule(parent) if parent else model
            setattr(owner, attr, replacement(json.loads(value), getattr(owner, attr)))


def torch_predictions(ops, path, images, replacement):
    model = JsonNet(ops)
    apply_records(model, path, replacement)
    model.load_state_dict(load_file(path))  # strict: every tensor has its module
    model.eval()
    with torch.no_grad():
        return torch.cat([model(torch.from_numpy(b)).argmax(1) for b in np.array_split(images, 20)]).numpy()


def main():
    replacement = readme_loader()
    images, labels = accuracy.load_test(np.float32)
    failures = 0
    # Every scheme at least once: auto at 3x on vgg writes spatial layers, auto at 2x on alt
    # spatial and DAC (grouped, strided, 5x5); channel SVD and decoupled explicitly. MAC-only
    # plans (--allow-slower), so that layers modeled slower than dense are written too.
    slow = "--allow-slower"
    cases = [("vgg", "auto", ["--macs", "3", slow]), ("alt", "auto", ["--macs", "2", slow]),
             ("vgg", "channel", ["--macs", "1.5", slow]), ("vgg", "decoupled", ["--macs", "1.5", slow])]
    for net, scheme, budget in cases:
        ops = json.load(open(os.path.join(ROOT, "models", f"fmnist_{net}.json")))["ops"]
        out, res = accuracy.convert(net, ops, budget, scheme, [], f"readme_{scheme}")
        if out is None:
            print(f"{net} {scheme}: dac convert failed: {res}")
            failures += 1
            continue
        schemes = sorted({c["scheme"] for c in res["converted"]})
        pt = torch_predictions(ops, out, images, replacement)
        npy, correct = accuracy.evaluate(ops, out, (images, labels))
        differ = int((pt != npy).sum())
        ok = differ <= 2  # f32 summation order may flip a near-tie
        failures += not ok
        print(f"{net} --scheme {scheme} {' '.join(budget)} ({', '.join(schemes)}): PyTorch via the README "
              f"{(pt == labels).mean() * 100:.2f} %, numpy {correct / 100:.2f} %, "
              f"{differ} predictions differ {'OK' if ok else 'FAIL'}", flush=True)
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
