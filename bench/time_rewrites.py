#!/usr/bin/env python3
"""Several rewrites of one model timed against it in onnxruntime, all interleaved in one run:
which plan is faster, with less noise than separate pairs.

    bench/.venv/bin/python bench/time_rewrites.py ORIGINAL.onnx NAME=REWRITE.onnx [NAME=...]
        [--rounds 200] [--threads 1] [--out bench/results-DATE-time-rewrites.json]

onnxruntime CPU sessions as bench/ortutil.session makes them (intra-op --threads, inter-op 1,
sequential, ORT_ENABLE_ALL), one seeded standard-normal input of the original's shape (batch 1),
two warm-up runs each; then --rounds rounds, each running every model once, the order reversed
every other round. Prints, every 20 rounds and at the end, each rewrite's speed-up (median
original time / median rewrite time) and the original's median; writes the medians, speed-ups,
the running speed-ups every 20 rounds, the machine and the command to --out.
"""
import argparse
import datetime
import json
import os
import shlex
import sys
import time

import numpy as np
import onnx

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from ortutil import machine, run, session  # noqa: E402
from zoo import seeded_input  # noqa: E402


def input_shape(path):
    dims = onnx.load(path, load_external_data=False).graph.input[0].type.tensor_type.shape.dim
    return tuple(d.dim_value if d.dim_value > 0 else 1 for d in dims)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("original")
    ap.add_argument("rewrites", nargs="+", help="NAME=PATH")
    ap.add_argument("--rounds", type=int, default=200)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out")
    args = ap.parse_args()
    paths = {"original": args.original}
    for spec in args.rewrites:
        name, sep, path = spec.partition("=")
        if not sep or not name or name in paths:
            sys.exit(f"give each rewrite as NAME=PATH with a new name, not {spec!r}")
        paths[name] = path
    names = list(paths)
    sessions = {n: session(p, args.threads) for n, p in paths.items()}
    x = seeded_input(input_shape(args.original))
    for s in sessions.values():
        run(s, x)
        run(s, x)
    times = {n: [] for n in names}
    progress = []
    for i in range(args.rounds):
        for n in names if i % 2 == 0 else names[::-1]:
            t = time.perf_counter()
            run(sessions[n], x)
            times[n].append(time.perf_counter() - t)
        if (i + 1) % 20 == 0 or i + 1 == args.rounds:
            med = {n: float(np.median(v)) for n, v in times.items()}
            ratios = {n: med["original"] / med[n] for n in names[1:]}
            progress.append({"rounds": i + 1, "speedup": ratios})
            shown = ", ".join(f"{n} {r:.3f}x" for n, r in ratios.items())
            print(f"{i + 1:4} rounds: original {med['original'] * 1e3:.2f} ms; {shown}", flush=True)
    if args.out:
        out = {"date": datetime.datetime.now().isoformat(timespec="seconds"), "machine": machine(),
               "command": " ".join(shlex.quote(a) for a in [os.path.relpath(sys.executable)] + sys.argv),
               "paths": paths, "median_ms": {n: float(np.median(v)) * 1e3 for n, v in times.items()},
               "speedup": progress[-1]["speedup"], "progress": progress}
        with open(args.out, "w") as f:
            json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()
