#!/usr/bin/env python3
"""Is this machine, now, the machine a time table was measured on? Re-measures a seeded sample of
the table's own calibration rows, in the same context and by the same code (bench/calibrate.py's
measure_group), and prints per convolution class the ratio of today's time to the time recorded
in the raw calibration file, beside the ratio of its fixed sentinel (a dense 64->64 3x3 at 28x28).

    taskset -c 1 bench/.venv/bin/python bench/drift_check.py [--raw bench/results-2026-11-29-calibration.json]
        [--per-class 8] [--classes depthwise,dense,...] [--seed 0] [--threads 1] [--rounds 1]
        [--out FILE.json]

Why: the per-layer error of the time model (BENCHMARKS.md, "The time model per layer, in
context") mixes two things, the model's fit and the machine's state. A class whose rows now run
slower than they did when the table was measured, in the very context they were measured in,
misses by that much in any network, whatever the model; a fit cannot remove it, only measuring
on the machine (a table of its own, or `dac onnx --measure`) can.

Printed: per class, the rows measured, the median ratio now / then and its range, and the median
ratio of the table's prediction to today's time (negative: the table is too fast today). Rows are
drawn per class at random (seeded) from the raw file's 1-thread (or --threads) convolution rows
whose time is at most --max-ms (default 2 ms, to keep the run short).

--rounds R measures the same rows R times, one round after another (a round of every class
takes about a minute with 8 rows per class), and prints per class the median over its rows of
the slowest round's time over the fastest's: how much the machine's speed for that kind of
kernel moves within minutes, in the context the table was measured in.
"""
import argparse
import json
import os
import random
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import calibrate  # noqa: E402
from context_probe import predict  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SPEC_KEYS = ("C_in", "N", "group", "kh", "kw", "stride", "H")


def sample_rows(raw, threads, per_class, classes, max_ms, seed):
    """{class: [rows]}: up to per_class seeded rows of each class from the raw calibration rows."""
    rows = [r for r in raw["rows"] if r.get("op") == "conv" and r.get("threads") == threads
            and not r.get("flushed") and r["median_ns"] <= max_ms * 1e6 and r.get("dilation", 1) == 1]
    rng = random.Random(seed)
    by_class = {}
    for r in rows:
        by_class.setdefault(r["class"], []).append(r)
    wanted = classes or sorted(by_class)
    return {c: rng.sample(by_class[c], min(per_class, len(by_class[c]))) for c in wanted if c in by_class}


def remeasure(rows, threads, budget):
    """Today's rows for `rows` (same specs), and today's sentinel row (measured with them)."""
    specs = [calibrate.conv_spec(r["C_in"], r["N"], r["group"], r["kh"], r["kw"], r["stride"], r["H"]) for r in rows]
    now = calibrate.measure_group(specs, threads, budget, tempfile.mkdtemp(), 0)
    return now[:-1], now[-1]


def summary(then_rows, now_rows, table, threads):
    ratio = [n["median_ns"] / t["median_ns"] for t, n in zip(then_rows, now_rows)]
    err = [(predict(table, threads, n) - n["median_ns"]) / n["median_ns"] for n in now_rows]
    return {"rows": len(ratio), "ratio_median": float(np.median(ratio)), "ratio_min": min(ratio),
            "ratio_max": max(ratio), "table_error_median": float(np.median(err)),
            "pairs": [{**{k: n[k] for k in SPEC_KEYS}, "then_ns": t["median_ns"],
                       "now_ns": n["median_ns"]} for t, n in zip(then_rows, now_rows)]}


def one_round(picked, table, args):
    """Every picked row measured once more: ({class: summary}, sentinel ns of each class's group)."""
    classes, sentinels = {}, []
    for cls, rows in picked.items():
        now, sentinel = remeasure(rows, args.threads, args.budget)
        sentinels.append(sentinel["median_ns"])
        classes[cls] = summary(rows, now, table, args.threads)
        s = classes[cls]
        print(f"| {cls} | {s['rows']} | {s['ratio_median']:.2f} | {s['ratio_min']:.2f}-{s['ratio_max']:.2f} "
              f"| {s['table_error_median']:+.0%} |", flush=True)
    return classes, sentinels


def row_spread(rounds):
    """Per class, the median over its rows of the slowest over the fastest round's time."""
    out = {}
    for cls in rounds[0]:
        per_row = zip(*([p["now_ns"] for p in r[cls]["pairs"]] for r in rounds))
        out[cls] = float(np.median([max(t) / min(t) for t in per_row]))
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--raw", default=os.path.join(ROOT, "bench", "results-2026-11-29-calibration.json"))
    ap.add_argument("--table", default=os.path.join(ROOT, "src", "time", "onnxruntime-x86_64.json"))
    ap.add_argument("--per-class", type=int, default=8)
    ap.add_argument("--classes", default="", help="comma-separated classes (default: every class in the raw file)")
    ap.add_argument("--max-ms", type=float, default=2.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--budget", type=float, default=1.0, help="seconds per row (calibrate.py's --budget)")
    ap.add_argument("--rounds", type=int, default=1, help="measure the same rows this many times, one after another")
    ap.add_argument("--out")
    args = ap.parse_args()
    raw = json.load(open(args.raw))
    table = json.load(open(args.table))
    classes = [c for c in args.classes.split(",") if c]
    picked = sample_rows(raw, args.threads, args.per_class, classes, args.max_ms, args.seed)
    then = [c["sentinel"]["median_ns"] for c in raw.get("checks", []) if c.get("threads") == args.threads]
    then = then[0] if then else None
    print(f"# {calibrate.command_line()}")
    out = {"command": calibrate.command_line(), "machine": calibrate.machine(), "raw": args.raw, "rounds": []}
    for k in range(args.rounds):
        print(f"\nround {k + 1} ({time.strftime('%H:%M:%S')})\n")
        print("| class | rows | now / then, median | range | table error today, median |")
        print("|---|---|---|---|---|")
        classes, sentinels = one_round(picked, table, args)
        now = float(np.median(sentinels))
        out["rounds"].append({"started": time.strftime("%H:%M:%S"), "classes": classes,
                              "sentinel": {"then_ns": then, "now_ns": now}})
        print(f"\nsentinel dense 64->64 3x3 28x28: {now / 1e3:.1f} us now"
              + (f", {then / 1e3:.1f} us then, now / then {now / then:.2f}" if then else ""))
    if args.rounds > 1:
        out["row_spread"] = row_spread([r["classes"] for r in out["rounds"]])
        print("\nper class, median over its rows of the slowest round's time over the fastest's:")
        print("| class | slowest / fastest |\n|---|---|")
        for cls, v in out["row_spread"].items():
            print(f"| {cls} | {v:.2f} |")
    if args.out:
        with open(args.out, "w") as f:
            json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()
