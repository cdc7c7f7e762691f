#!/usr/bin/env python3
"""How many factored layers of a MAC-only plan are modeled slower than their dense layer, and
what the break-even guard in time does to those plans.

    python3 bench/slower_layers.py [--dac PATH] [--zoo DIR] [--out results.json]

By default `--macs X` keeps dense every layer whose factors are not modeled at least 10 % faster
than it (the break-even guard in time, as `--speedup` does); `--allow-slower` plans MACs alone.
For each case it runs `dac onnx MODEL --macs X --json` twice, with `--allow-slower` (MAC only)
and without (the default), and reads the reports: the factored layers whose `time_after_ms`
exceeds their `time_before_ms`, the share of the MACs saved that those layers account for, the
MAC reduction reached and the modeled speed-up. Cases: both shipped networks
(models/fmnist_vgg.onnx, models/fmnist_alt.onnx; fmnist_alt.onnx: `bench/.venv/bin/python
scripts/export_onnx.py alt`) at `--macs 1.5, 2, 3` and at `--macs 2 --scheme dac`, and, with
--zoo, every DIR/*.onnx at `--macs 2`. Modeled times only; nothing is timed. Needs no package
beyond the standard library.
"""
import argparse
import glob
import json
import os
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def report(dac, model, args, out):
    """dac's JSON report of `dac onnx MODEL -o OUT ARGS --json --force`, or None on failure."""
    run = subprocess.run([dac, "onnx", model, "-o", out, "--json", "--force", *args], capture_output=True, text=True)
    if run.returncode != 0:
        print(f"{model} {' '.join(args)}: dac failed: {run.stderr.strip()}", file=sys.stderr)
        return None
    return json.loads(run.stdout)


def slower(rep):
    """(factored layers, those modeled slower than dense, their share of the MACs saved)."""
    conv = rep["converted"]
    slow = [l for l in conv if l["time_after_ms"] > l["time_before_ms"]]
    saved = sum(l["macs_before"] - l["macs_after"] for l in conv)
    slow_saved = sum(l["macs_before"] - l["macs_after"] for l in slow)
    return len(conv), [l["name"] for l in slow], slow_saved / saved if saved else 0.0


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dac", default=os.path.join(ROOT, "target", "release", "dac"))
    ap.add_argument("--zoo", help="a directory of ONNX models (scripts/zoo.py full DIR), each at --macs 2")
    ap.add_argument("--out", help="write every case's figures here (JSON)")
    a = ap.parse_args()
    cases = [(os.path.join(ROOT, "models", f"fmnist_{n}.onnx"), args) for n in ("vgg", "alt")
             for args in (["--macs", "1.5"], ["--macs", "2"], ["--macs", "3"], ["--macs", "2", "--scheme", "dac"])]
    if a.zoo:
        cases += [(p, ["--macs", "2"]) for p in sorted(glob.glob(os.path.join(a.zoo, "*.onnx")))]
    rows = []
    print("| model | options | MAC only (`--allow-slower`): modeled speed-up | factored | modeled slower than dense "
          "| their share of the MACs saved | default (guard): MAC reduction | modeled speed-up | factored "
          "| modeled slower |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for model, args in cases:
            free = report(a.dac, model, args + ["--allow-slower"], os.path.join(tmp, "out.onnx"))
            guarded = report(a.dac, model, args, os.path.join(tmp, "out.onnx"))
            if free is None or guarded is None:
                continue
            n, slow, share = slower(free)
            gn, gslow, _ = slower(guarded)
            name = os.path.basename(model)
            met = "" if guarded["plan"]["met"] else " (NOT met)"
            print(f"| {name} | `{' '.join(args)}` | {free['speedup']:.2f}x | {n} | {len(slow)} | {share:.0%} "
                  f"| {guarded['reduction']:.2f}x{met} | {guarded['speedup']:.2f}x | {gn} | {len(gslow)} |")
            rows.append(dict(model=name, args=args, speedup=free["speedup"], factored=n, slower=slow, share=share,
                             guarded=dict(reduction=guarded["reduction"], met=guarded["plan"]["met"],
                                          speedup=guarded["speedup"], factored=gn, slower=gslow)))
    if a.out:
        with open(a.out, "w") as f:
            json.dump(dict(command=sys.argv, dac=a.dac, rows=rows), f, indent=1)


if __name__ == "__main__":
    main()
