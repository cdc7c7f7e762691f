#!/usr/bin/env python3
"""The time model's 1x1 convolutions at one output position (a squeeze-and-excitation block's
two convolutions on its pooled `[1, C, 1, 1]` vector), timed with the caches flushed and fitted,
then added to a time table as `conv_one_position` entries.

    bench/.venv/bin/python bench/calibrate_one_position.py --table src/time/onnxruntime-x86_64.json \\
        [--threads 1,all] [--pin 1] [--raw bench/results-DATE-calibration-one-position.json]
    bench/.venv/bin/python bench/calibrate_one_position.py --table TABLE.json --raw RAW.json --refit

Why. A convolution with one output position is a matrix-vector product: each weight is read
once and used once. In a network the other layers pass through the caches between two runs of
it, so its weights come from memory, as a `Linear` layer's do (bench/calibrate_matmul.py times
those flushed for the same reason). bench/calibrate.py times every convolution warm, and its
`pointwise` fit has no row at one position: in the zoo's squeeze-and-excitation blocks
(mobilenet_v3_small, efficientnet_b0) those convolutions ran 1.3-5x slower in the network than
that fit says (BENCHMARKS.md, "Convolutions at one position").

What is measured. Each shape is one bench/calibrate.py model (x -> 1x1 Conv C->C + Relu ->
target -> 1x1 Conv N->16, here on a 1x1 map) timed by calibrate.py's `measure_group` with its
cache flush before every run (a product with 64 MiB of weights), 40 runs per model: the target's
kernel and any layout reorder it causes, from onnxruntime's profiler, as the convolution table
is timed. Flushed timings vary from sweep to sweep (about 10 %), so the sweep runs --repeats
times (default 5) and each shape keeps the median of its sweeps' medians. Shapes: C_in of at least a block (16) and a multiple of 4 (the blocked `pointwise`
class, which the crate routes here at one output position), squeezing and expanding as
squeeze-and-excitation blocks do, and four squares.

Fit. Non-negative least squares of relative error on `one, weights, in_elems, out_elems`
(bench/calibrate.py's definitions), one entry per alignment (C_in and N multiples of 16) when
each has at least calibrate.MIN_CELL rows, else one for both; the entries replace the table's
`conv_one_position` entries of that thread count. `--refit` fits the rows of --raw again.
"""
import argparse
import datetime
import json
import os
import sys
import tempfile

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from calibrate import (BLOCK, MIN_CELL, conv_spec, fit, flusher, measure_group, pin, refit_into,  # noqa: E402
                       replace_entries, save_table_and_raw, thread_counts)
from ortutil import machine  # noqa: E402

OP = "conv_one_position"
FEATURES = ["one", "weights", "in_elems", "out_elems"]
# Input channels: the squeeze-and-excitation widths of the zoo's mobile networks and around.
WIDE = [16, 32, 64, 96, 120, 144, 240, 288, 480, 576, 672, 960, 1152, 1280, 2048]


def shapes():
    """(C_in, N) pairs: each width squeezed by 4 and by 24 (at least 4 channels), expanded back
    where the squeezed width is itself at least a block and a multiple of 4, and four squares."""
    out = []
    for c in WIDE:
        for s in sorted({max(4, c // 4), max(4, c // 24)}):
            out.append((c, s))
            if s >= BLOCK and s % 4 == 0:
                out.append((s, c))
    return out + [(64, 64), (256, 256), (512, 512), (1024, 1024)]


def entries(rows):
    """The `conv_one_position` entries fitted from the rows of one thread count."""
    al, un = [r for r in rows if r["aligned"]], [r for r in rows if not r["aligned"]]
    cells = [(True, al), (False, un)] if min(len(al), len(un)) >= MIN_CELL else [(None, rows)]
    out = []
    for aligned, part in cells:
        coef, pred, rel = fit(part, FEATURES)
        out.append({"op": OP, "aligned": aligned, "features": FEATURES, "coef": [float(f"{c:.6g}") for c in coef],
                    "rows": len(part), "median_rel_err": round(float(np.median(rel)), 4),
                    "max_rel_err": round(float(np.max(rel)), 4),
                    "note": "1x1 convolutions at one output position, caches flushed before every run"})
        print(f"{OP} aligned {aligned}, {part[0]['threads']} thread(s): coef {out[-1]['coef']}, "
              f"median rel err {np.median(rel):.3f}, max {np.max(rel):.3f}")
        for r, p in zip(part, pred):
            print(f"  {r['C_in']:5} -> {r['N']:5}: {r['median_ns'] / 1e3:8.2f} us, model {p / 1e3:8.2f} us")
    return out


def sweep(threads, args, tmp):
    """Every shape measured flushed with `threads` threads, in interleaved groups of --group,
    --repeats times over; a row's time is the median of its repeats' medians (each of 40 runs)."""
    specs = [conv_spec(c, n, 1, 1, 1, 1, 1) for c, n in shapes()]
    flush, times, rows = flusher(threads), [[] for _ in specs], []
    for rep in range(args.repeats):
        for g in range(0, len(specs), args.group):
            uid = 100000 * threads + 1000 * rep + g
            measured = measure_group(specs[g:g + args.group], threads, 0.0, tmp, uid, flush=flush)
            for k, r in enumerate(measured[:-1]):
                times[g + k].append(r["median_ns"])
                if rep == 0:
                    rows.append(dict(r, sentinel_ns=measured[-1]["median_ns"], all_events=None))
    for r, t in zip(rows, times):
        r.update(median_ns=float(np.median(t)), repeats_ns=t)
    return rows


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--table", required=True)
    ap.add_argument("--threads", default="1", help='comma list of thread counts, "all" = every core')
    ap.add_argument("--pin", type=int, default=1, help="CPU to pin 1-thread sweeps to (-1: no pinning)")
    ap.add_argument("--group", type=int, default=8, help="models interleaved together")
    ap.add_argument("--repeats", type=int, default=5, help="sweeps; each shape's time is their median")
    ap.add_argument("--raw", default=os.path.join(HERE, f"results-{datetime.date.today()}-calibration-one-position.json"))
    ap.add_argument("--refit", action="store_true",
                    help="no measuring: fit the rows of --raw and replace those entries in --table")
    args = ap.parse_args()
    with open(args.table) as f:
        table = json.load(f)
    if args.refit:
        return refit_into(table, args, "one_position_command", entries)
    rows = []
    with tempfile.TemporaryDirectory(prefix="dac-one-position-") as tmp:
        for threads in thread_counts(args.threads):
            pin(threads, args.pin)
            part = sweep(threads, args, tmp)
            rows += part
            replace_entries(table, threads, entries(part))
    save_table_and_raw(args.table, table, "one_position_command", args.raw, rows, machine=machine())


if __name__ == "__main__":
    main()
