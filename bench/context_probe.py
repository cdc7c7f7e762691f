#!/usr/bin/env python3
"""One convolution's time in two contexts, to tell a miss of the time table's fit from a miss of
its context: the calibration context of bench/calibrate.py (the node between a 1x1 Conv+Relu and
a 1x1 Conv) against the same node's kernels inside a real network.

    bench/.venv/bin/python bench/context_probe.py --spec 1024,1024,1024,3,1,7 [--spec ...]
        [--table src/time/onnxruntime-x86_64.json] [--threads 1]
    bench/.venv/bin/python bench/context_probe.py --model OUT.onnx --match /layer4/layer4.2/ [--runs 200]

--spec C_in,N,group,k,stride,H (k x k kernel, H x H input, pads k//2): measured as calibrate.py
measures it (its Unit, attribution, grouped median and drift sentinel; --flush: a cache flush
before every run) and printed beside the
table's prediction for its class (the features of calibrate.py's fit). --model: every kernel
event of onnxruntime's profiler whose node name contains --match (onnxruntime names an NCHWc
node after its output tensor, so a factor's node is "<layer output>/dac_<factor>.<i>_nchwc" and
a Conv fused with the Relu after it is "<relu output>_nchwc"), median microseconds over --runs
runs after 20 dropped; the same session settings as zoo_time.py's profile (1 thread, every
graph optimisation), on one seeded input.
"""
import argparse
import collections
import json
import os
import sys
import tempfile

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import calibrate  # noqa: E402
from ortutil import grouped_median, session  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def predict(table, threads, spec):
    """The table's nanoseconds for a conv spec, as src/time evaluates it (class, alignment)."""
    group = next(t for t in table["tables"] if t["threads"] == threads)
    entries = [e for e in group["entries"] if e.get("op") == "conv" and e.get("class") == spec["class"]]
    entry = next((e for e in entries if e.get("aligned") in (spec["aligned"], None)), entries[0])
    return sum(c * calibrate.FEATURES[f](spec) for f, c in zip(entry["features"], entry["coef"]))


def probe_specs(args):
    table = json.load(open(args.table))
    specs = []
    for text in args.spec:
        c_in, n, group, k, stride, h = (int(v) for v in text.split(","))
        specs.append(calibrate.conv_spec(c_in, n, group, k, k, stride, h))
    flush = calibrate.flusher(args.threads) if args.flush else None
    rows = calibrate.measure_group(specs, args.threads, args.budget, tempfile.mkdtemp(), 0, flush=flush)
    print("| C_in | N | group | k | stride | H | class | calibration context us | table us | table error |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows[:-1]:
        got, want = r["median_ns"] / 1e3, predict(table, args.threads, r) / 1e3
        print(f"| {r['C_in']} | {r['N']} | {r['group']} | {r['kh']} | {r['stride']} | {r['H']} | {r['class']} "
              f"| {got:.1f} | {want:.1f} | {(want - got) / got:+.0%} |")
    sentinel = rows[-1]["median_ns"] / 1e3
    print(f"\nsentinel dense 64->64 3x3 28x28: {sentinel:.1f} us")


def probe_model(args):
    sess = session(args.model, args.threads, profile_prefix=os.path.join(tempfile.mkdtemp(), "p"))
    inp = sess.get_inputs()[0]
    shape = [d if isinstance(d, int) else 1 for d in inp.shape]
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    for _ in range(20 + args.runs):
        sess.run(None, {inp.name: x})
    path = sess.end_profiling()
    runs, _ = calibrate.parse_profile(path, 20)
    os.remove(path)
    times = collections.OrderedDict()
    for name, op, dur, _ in (e for run in runs for e in run if args.match in e[0]):
        times.setdefault((name, op), []).append(dur)
    print("| node | op | us |\n|---|---|---|")
    for (name, op), durs in times.items():
        print(f"| {name} | {op} | {grouped_median(durs):.1f} |")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--spec", action="append", default=[], help="C_in,N,group,k,stride,H")
    ap.add_argument("--model")
    ap.add_argument("--match", default="")
    ap.add_argument("--runs", type=int, default=200)
    ap.add_argument("--table", default=os.path.join(ROOT, "src", "time", "onnxruntime-x86_64.json"))
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--budget", type=float, default=1.0, help="seconds per spec (calibrate.py's --budget)")
    ap.add_argument("--flush", action="store_true", help="calibrate.py's --flush: a cache flush before each run")
    args = ap.parse_args()
    if not args.spec and not args.model:
        ap.error("give --spec (calibration context) or --model with --match (in a network)")
    if args.spec:
        probe_specs(args)
    if args.model:
        probe_model(args)


if __name__ == "__main__":
    main()
