#!/usr/bin/python3
"""`dac inspect` and `dac convert` on seeded torchvision checkpoints, checked against PyTorch.

For each architecture: `scripts/torch_geometry.py` writes the geometry sidecar and the seeded
state_dict; the model is rebuilt here with the same seed (its state must equal the file's), its
BatchNorm running statistics are set away from the identity, and that state_dict (f32) is the
checkpoint. Then:

- `dac inspect CKPT --geometry G --json`: every convolution's stride, padding, dilation, groups,
  input size and MACs, and the total, must equal what hooks on the PyTorch model count
  (`N * C/g * kh * kw * oh * ow` per Conv2d; `in * out` per Linear application);
- `dac convert CKPT -o OUT --geometry G` at full rank (`--energy 1 --allow-slower`), `--speedup 2`
  and `--macs 2` (and, with `--run full-spatial|full-channel|full-decoupled`, the other schemes at
  full rank): the output is loaded with the README's loader (scripts/check_readme_loader.py's
  `apply_records` + the README's `replacement`) into the same architecture and run on seeded
  random inputs. Full rank must match the original (max |diff| / max |original| <= 1e-5; above
  1e-4 is a failure); planned outputs must load and give finite outputs. The MACs `convert`
  reports before and after (per layer and in total, linear layers included) must equal the
  counts of the original and the loaded model.

    /usr/bin/python3 scripts/check_checkpoints.py                  # all architectures, /tmp/ckpt
    /usr/bin/python3 scripts/check_checkpoints.py --arch resnet18 --arch vgg16 --out /tmp/ckpt

Every failure is printed with the exact command that reproduces it; results go to
OUT/results.json. Converts with `$DAC` (default target/release/dac). Needs Debian's
python3-torch and torchvision, and `safetensors` (bench/.venv's is appended to sys.path).
"""
import argparse
import glob
import json
import os
import shlex
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path += glob.glob(os.path.join(ROOT, "bench", ".venv", "lib", "python3*", "site-packages"))
sys.path.insert(0, HERE)
DAC = os.environ.get("DAC", os.path.join(ROOT, "target", "release", "dac"))

import torch  # noqa: E402
import torch.nn as nn  # noqa: E402
from safetensors.torch import load_file  # noqa: E402
from check_readme_loader import apply_records, readme_loader  # noqa: E402
import torch_geometry  # noqa: E402

# name: (constructor keyword arguments, input size)
ARCHS = {
    "resnet18": ({}, 224),
    "resnet50": ({}, 224),
    "vgg16": ({}, 224),
    "mobilenet_v2": ({}, 224),
    "densenet121": ({}, 224),
    "googlenet": ({"aux_logits": False, "init_weights": True}, 224),
    "regnet_x_400mf": ({}, 224),
    "resnext50_32x4d": ({}, 224),
    "efficientnet_b0": ({}, 224),
    "convnext_tiny": ({}, 224),
    "shufflenet_v2_x1_0": ({}, 224),
    "alexnet": ({}, 224),
    "inception_v3": ({"aux_logits": False, "init_weights": True}, 299),
}
RUNS = {
    "full": ["--energy", "1", "--allow-slower"],
    "speedup2": ["--speedup", "2"],
    "macs2": ["--macs", "2"],
    # not run by default (--run NAME): the other schemes at their maximum rank, exact as well
    "full-spatial": ["--energy", "1", "--allow-slower", "--scheme", "spatial"],
    "full-channel": ["--energy", "1", "--allow-slower", "--scheme", "channel"],
    "full-decoupled": ["--energy", "1", "--allow-slower", "--scheme", "decoupled"],
}
DEFAULT_RUNS = ["full", "speedup2", "macs2"]
FULL_TOL, FULL_FAIL = 1e-5, 1e-4


def command(args):
    return " ".join(shlex.quote(str(a)) for a in args)


def run(args):
    """`(CompletedProcess, seconds)`."""
    t = time.perf_counter()
    r = subprocess.run([str(a) for a in args], capture_output=True, text=True)
    return r, time.perf_counter() - t


def count_macs(model, size, channels=3):
    """Per module name: MACs of one image through every Conv2d (`N * C/g * kh * kw` per output
    position) and Linear (`in * out` per application), from the shapes a forward pass sees;
    also each convolution's input `(H, W)`."""
    names = {id(m): n for n, m in model.named_modules()}
    macs, inputs = {}, {}

    def hook(m, args, out):
        name = names[id(m)]
        if isinstance(m, nn.Conv2d):
            c_g, kh, kw = m.weight.shape[1:]
            macs[name] = macs.get(name, 0) + out.numel() * c_g * kh * kw
            inputs[name] = tuple(args[0].shape[-2:])
        else:
            macs[name] = macs.get(name, 0) + out.numel() * m.in_features

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    try:
        with torch.no_grad():
            model(torch.zeros(1, channels, size, size))
    finally:
        for h in handles:
            h.remove()
    return macs, inputs


def perturb_batchnorm(model, seed=0):
    """BatchNorm running statistics away from the identity (seeded)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.running_mean is not None:
                m.running_mean.copy_(torch.rand(m.running_mean.shape, generator=g) * 0.2 - 0.1)
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)


def load_converted(arch, kwargs, path, replacement):
    model = torch_geometry.build_model(arch, kwargs=kwargs)
    apply_records(model, path, replacement)
    model.load_state_dict(load_file(path))  # strict: every tensor has its module
    return model.eval()


def expected_geometry(conv):
    p = torch_geometry.conv_padding(conv)
    return {"stride": list(conv.stride), "padding": list(p), "dilation": list(conv.dilation), "groups": conv.groups}


def check_inspect(arch, ckpt, geo, model, macs, inputs, fail):
    args = [DAC, "inspect", ckpt, "--geometry", geo, "--json"]
    r, _ = run(args)
    if r.returncode != 0:
        fail("inspect", args, r.stderr.strip())
        return None
    doc = json.loads(r.stdout)
    convs = {n: m for n, m in model.named_modules() if isinstance(m, nn.Conv2d)}
    seen = {l["name"]: l for l in doc["layers"]}
    if set(seen) != set(convs):
        fail("inspect", args, f"layers differ: only dac {sorted(set(seen) - set(convs))[:5]}, "
             f"only torch {sorted(set(convs) - set(seen))[:5]}")
    bad = []
    for name, l in seen.items():
        if name not in convs:
            continue
        want = expected_geometry(convs[name])
        got = {"stride": l["stride"], "padding": l["padding"], "dilation": l["dilation"], "groups": l["groups"]}
        if got != want:
            bad.append(f"{name}: geometry {got} != torch {want}")
        if tuple(l["input_size"] or ()) != inputs.get(name):
            bad.append(f"{name}: input {l['input_size']} != torch {inputs.get(name)}")
        if l["macs"] != macs.get(name):
            bad.append(f"{name}: MACs {l['macs']} != torch {macs.get(name)}")
    for line in bad[:8]:
        fail("inspect", args, line)
    if len(bad) > 8:
        fail("inspect", args, f"... and {len(bad) - 8} more layer mismatches")
    conv_total = sum(macs[n] for n in convs if n in macs)
    if doc["total_macs"] != conv_total:
        fail("inspect", args, f"total_macs {doc['total_macs']} != torch conv total {conv_total}")
    return doc


def check_convert_macs(arch, args, summary, model_macs, loaded_macs, fail):
    """Per-layer and total MACs `convert` reports against the original and the loaded model."""
    bad = []
    for l in summary.get("converted", []):
        name = l["name"]
        after = sum(v for k, v in loaded_macs.items() if k.startswith(name + "."))
        if l["macs_before"] != model_macs.get(name):
            bad.append(f"{name}: MACs before {l['macs_before']} != torch {model_macs.get(name)}")
        if l["macs_after"] != after:
            bad.append(f"{name}: MACs after {l['macs_after']} != torch (loaded model) {after}")
    for l in summary.get("skipped", []):
        if l.get("macs") is not None and l["macs"] != model_macs.get(l["name"]):
            bad.append(f"{l['name']} (dense): MACs {l['macs']} != torch {model_macs.get(l['name'])}")
    for line in bad[:8]:
        fail("convert", args, line)
    if len(bad) > 8:
        fail("convert", args, f"... and {len(bad) - 8} more layer mismatches")
    total = summary["total"]
    before, after = sum(model_macs.values()), sum(loaded_macs.values())
    if total["macs_before"] != before:
        fail("convert", args, f"total MACs before {total['macs_before']} != torch {before} "
             f"(linear: dac {summary.get('linear_macs')})")
    if total["macs_after"] != after:
        fail("convert", args, f"total MACs after {total['macs_after']} != torch (loaded model) {after}")


def check_arch(arch, out, replacement, runs):
    kwargs, size = ARCHS[arch]
    d = os.path.join(out, arch)
    os.makedirs(d, exist_ok=True)
    geo, seeded, ckpt = (os.path.join(d, n) for n in ("geometry.json", "seeded.safetensors", "model.safetensors"))
    res = {"arch": arch, "input": size, "failures": [], "runs": {}}

    def fail(stage, args, message):
        res["failures"].append({"stage": stage, "command": command(args), "message": message})
        print(f"  FAIL {stage}: {message}\n       $ {command(args)}", flush=True)

    gen = [sys.executable, os.path.join(HERE, "torch_geometry.py"), "--arch", arch, "--input", f"{size}x{size}",
           "-o", geo, "--state-dict", seeded]
    for k, v in kwargs.items():
        gen += ["--kwarg", f"{k}={v!r}"]
    r, _ = run(gen)
    if r.returncode != 0:
        fail("torch_geometry", gen, r.stderr.strip()[-500:])
        return res
    model = torch_geometry.build_model(arch, kwargs=kwargs)
    saved = load_file(seeded)
    state = model.state_dict()
    if set(saved) != set(state) or any(not torch.equal(saved[k], state[k]) for k in state):
        fail("torch_geometry", gen, "--state-dict differs from the model built with the same seed")
    perturb_batchnorm(model)
    torch_geometry.save_state_dict(model, ckpt)
    res["commands"] = {"geometry": command(gen)}

    macs, inputs = count_macs(model, size)
    convs = [n for n, m in model.named_modules() if isinstance(m, nn.Conv2d)]
    res["layers"] = len(convs)
    res["linear"] = sum(isinstance(m, nn.Linear) for m in model.modules())
    res["torch_conv_macs"] = sum(macs[n] for n in convs if n in macs)
    res["torch_macs"] = sum(macs.values())
    doc = check_inspect(arch, ckpt, geo, model, macs, inputs, fail)
    res["dac_inspect_macs"] = doc["total_macs"] if doc else None
    res["dac_inspect_layers"] = len(doc["layers"]) if doc else None

    torch.manual_seed(1)
    x = torch.randn(3, 3, size, size)
    with torch.no_grad():
        want = model(x)
    for name in runs:
        dst = os.path.join(d, f"{name}.safetensors")
        args = [DAC, "convert", ckpt, "-o", dst, "--force", "--geometry", geo, *RUNS[name], "--json"]
        r, seconds = run(args)
        info = res["runs"][name] = {"seconds": round(seconds, 2), "command": command(args)}
        print(f"  {name}: convert {seconds:.1f} s", flush=True)
        if r.returncode != 0:
            fail(f"convert {name}", args, r.stderr.strip()[-500:])
            continue
        summary = json.loads(r.stdout)
        total = summary["total"]
        info.update(converted=len(summary["converted"]), skipped=len(summary["skipped"]),
                    macs_before=total["macs_before"], macs_after=total["macs_after"],
                    reduction=total["reduction"], speedup=total.get("speedup"),
                    met=(summary.get("plan") or {}).get("met"),
                    schemes=sorted({c["scheme"] for c in summary["converted"]}),
                    uncounted=len(summary.get("uncounted", [])))
        try:
            loaded = load_converted(arch, kwargs, dst, replacement)
            with torch.no_grad():
                got = loaded(x)
        except Exception as e:  # a loader failure is a finding, not the end of the run
            fail(f"load {name}", args, f"{type(e).__name__}: {str(e)[:400]}")
            continue
        rel = float((got - want).abs().max() / want.abs().max())
        info["rel_error"] = rel
        info["finite"] = bool(torch.isfinite(got).all())
        if not info["finite"]:
            fail(f"run {name}", args, "non-finite outputs")
        if name.startswith("full") and not rel <= FULL_FAIL:
            fail(f"run {name}", args, f"full rank: max relative difference {rel:.3e} > {FULL_FAIL:g}")
        loaded_macs, _ = count_macs(loaded, size)
        info["torch_macs_after"] = sum(loaded_macs.values())
        check_convert_macs(arch, args, summary, macs, loaded_macs, lambda s, a, m: fail(f"{s} {name}", a, m))
        if name.startswith("full") and rel > FULL_TOL:
            print(f"  note {name}: max relative difference {rel:.2e} above {FULL_TOL:g}", flush=True)
        if name != "full":
            os.remove(dst)
    return res


def fmt_macs(n):
    return "-" if n is None else f"{n / 1e9:.4f}G"


def table(results):
    head = ["arch", "convs", "inspect MACs (dac)", "conv MACs (torch)", "full rel.err", "full s", "speedup2 s",
            "speedup2 claim", "macs2 s", "macs2 claim", "fails"]
    rows = [head]
    for r in results:
        runs = r["runs"]

        def claim(name):
            i = runs.get(name, {})
            if "reduction" not in i:
                return "-"
            t = f", {i['speedup']:.2f}x time" if i.get("speedup") else ""
            return f"{i['reduction']:.2f}x MACs{t}" + ("" if i.get("met", True) else " (unmet)")

        rows.append([r["arch"], str(r.get("layers", "-")), fmt_macs(r.get("dac_inspect_macs")),
                     fmt_macs(r.get("torch_conv_macs")),
                     f"{runs['full']['rel_error']:.1e}" if "rel_error" in runs.get("full", {}) else "-",
                     str(runs.get("full", {}).get("seconds", "-")), str(runs.get("speedup2", {}).get("seconds", "-")),
                     claim("speedup2"), str(runs.get("macs2", {}).get("seconds", "-")), claim("macs2"),
                     str(len(r["failures"]))])
    widths = [max(len(row[i]) for row in rows) for i in range(len(head))]
    for row in rows:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip())
    for r in results:
        for name, i in r["runs"].items():
            if name not in DEFAULT_RUNS:
                err = f"{i['rel_error']:.1e}" if "rel_error" in i else "-"
                print(f"{r['arch']} {name}: max relative difference {err}, convert {i['seconds']} s, "
                      f"MACs {fmt_macs(i.get('macs_before'))} -> {fmt_macs(i.get('macs_after'))}")


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--arch", action="append", choices=list(ARCHS), help="architecture (repeatable; default all)")
    p.add_argument("--run", action="append", choices=list(RUNS), help=f"conversion (repeatable; default {', '.join(DEFAULT_RUNS)})")
    p.add_argument("--out", default="/tmp/ckpt", help="working directory (default /tmp/ckpt)")
    p.add_argument("--results", default="results.json", help="results file name in --out (default results.json)")
    a = p.parse_args()
    torch.set_num_threads(2)
    replacement = readme_loader()
    results = []
    for arch in a.arch or list(ARCHS):
        print(f"{arch}", flush=True)
        results.append(check_arch(arch, a.out, replacement, a.run or DEFAULT_RUNS))
        with open(os.path.join(a.out, a.results), "w") as f:
            json.dump(results, f, indent=1)
    print()
    table(results)
    failures = sum(len(r["failures"]) for r in results)
    print(f"\n{failures} failure(s); details in {os.path.join(a.out, a.results)}")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
