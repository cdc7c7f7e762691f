#!/usr/bin/env python3
"""Accuracy and measured speed-up of `dac onnx` variants of one Fashion-MNIST ONNX model (input
[N,1,32,32], the shipped networks' preprocessing), side by side.

    bench/.venv/bin/python bench/variants.py MODEL.onnx --variant 'NAME=FLAGS' [--variant ...]
        [--targets 1.5,2,3] [--dac PATH] [--threads 1] [--budget 3] [--out FILE.json]

Each variant's FLAGS (split on spaces) are passed to `dac onnx MODEL -o W --force --json`
once per target, with `--speedup X` appended (write `{macs}` in FLAGS to get `--macs X`
instead). For each rewrite: the tool's claimed (modeled) speed-up and whether it met the
target; top-1 accuracy on all 10,000 test images in onnxruntime; the measured speed-up (the
original and the rewrite timed interleaved at batch 1, shipped_time.py's settings). Prints a
markdown table; --out keeps everything as JSON.
"""
import argparse
import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
from accuracy import load_test  # noqa: E402
from ortutil import machine, session, time_pair  # noqa: E402
from shipped_time import MAX_REPEATS, MIN_REPEATS, predict  # noqa: E402
from zoo import run_dac  # noqa: E402


def flags_for(text, target):
    flags = text.split()
    if "{macs}" in flags:
        return [f for f in flags if f != "{macs}"] + ["--macs", f"{target:g}"]
    return flags + ["--speedup", f"{target:g}"]


def point(args, sess0, p0, data, name, text, target):
    x, y = data
    out = os.path.join(args.work, f"{name}-{target:g}.onnx")
    rep, _, err = run_dac(args.dac, args.model, out, flags_for(text, target) + ["--threads", str(args.threads)])
    v = {"variant": name, "flags": text, "target": target}
    if err:
        return dict(v, error=err)
    plan = rep.get("plan") or {}
    v.update(claimed=rep.get("speedup"), met=plan.get("met"), mac_reduction=rep.get("reduction"),
             converted=[(c["name"], c["scheme"], c["rank"]) for c in rep.get("converted") or []])
    s1 = session(out, args.threads)
    p1 = predict(s1, x)
    tb, ta, n = time_pair(sess0, s1, x[:1].copy(), budget=args.budget, min_repeats=MIN_REPEATS,
                          max_repeats=MAX_REPEATS)
    os.remove(out)
    return dict(v, accuracy=float((p1 == y).mean()), agreement=float((p1 == p0).mean()),
                ms_before=tb * 1e3, ms_after=ta * 1e3, runs=n, measured=tb / ta)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model")
    ap.add_argument("--variant", action="append", required=True, help="NAME=FLAGS")
    ap.add_argument("--targets", default="1.5,2,3")
    ap.add_argument("--dac", default=os.path.join(ROOT, "target", "release", "dac"))
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--budget", type=float, default=3.0, help="seconds of timing per rewrite")
    ap.add_argument("--work", default="/tmp/dac-variants")
    ap.add_argument("--out")
    args = ap.parse_args()
    os.makedirs(args.work, exist_ok=True)
    data = load_test("float32")
    sess0 = session(args.model, args.threads)
    p0 = predict(sess0, data[0])
    dense = float((p0 == data[1]).mean())
    points = []
    for v in args.variant:
        name, _, text = v.partition("=")
        for target in [float(t) for t in args.targets.split(",")]:
            points.append(point(args, sess0, p0, data, name, text, target))
            print(f"  {name} {target:g}: {json.dumps({k: points[-1].get(k) for k in ('claimed', 'measured', 'accuracy')})}",
                  file=sys.stderr, flush=True)
    print(f"{os.path.basename(args.model)}: dense {100 * dense:.2f} %\n")
    print("| variant | target | claimed | met | MAC red. | measured | accuracy |\n|---|---|---|---|---|---|---|")
    for p in points:
        if "error" in p:
            print(f"| {p['variant']} | {p['target']:g} | error: {p['error'][:80]} | | | | |")
            continue
        print(f"| {p['variant']} | {p['target']:g} | {p['claimed']:.2f}x | {'met' if p['met'] else 'NOT met'} "
              f"| {p['mac_reduction']:.2f}x | {p['measured']:.2f}x | {100 * p['accuracy']:.2f} % |")
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"machine": machine(), "command": sys.argv, "dense_accuracy": dense, "points": points}, f, indent=1)


if __name__ == "__main__":
    main()
