#!/usr/bin/env python3
"""The time model's blocked depthwise convolutions over a wider grid (many channels on small
maps as well as few channels on large ones), timed warm and fitted with a per-channel term, then
written into a time table as its `depthwise` entries.

    bench/.venv/bin/python bench/calibrate_depthwise.py --table src/time/onnxruntime-x86_64.json \\
        [--threads 1] [--pin 1] [--repeats 3] [--points 270] [--raw bench/results-DATE-calibration-depthwise.json]
    bench/.venv/bin/python bench/calibrate_depthwise.py --table TABLE.json --raw RAW.json --refit

Why. bench/calibrate.py's stratified sample has few depthwise rows with more than 128 channels
on maps below 56x56, and its features (MACs, input and output elements) are all proportional to
`C·H·W` at stride 1: many channels on a small map get the cost per element of few channels on a
large one. In the zoo the mobile networks' depthwise layers of 384-1152 channels at 7x7-14x14
ran 25-50 % slower than that fit (BENCHMARKS.md, "The machine's state, and what it does to the
per-layer goal"), and DAC's depthwise factors of wide layers are modeled too cheap the same way.

What is measured. Each shape is one bench/calibrate.py model (x -> 1x1 Conv C->C + Relu ->
target -> 1x1 Conv C->16), timed by calibrate.py's `measure_group` (warm, interleaved groups of
--group with the sentinel): the target's kernel and any layout reorder it causes. Shapes: a
seeded sample of blocked depthwise convolutions (C a multiple of 4, at least 16) over kernels
3x3, 5x5, 7x7 and the kx1 / 1xk factors, strides 1 and 2, maps 7x7 to 112x112, channels 16 to
1152 (aligned and not). The sweep runs --repeats times; a row keeps the fastest of its sweeps'
medians (the quiet machine the rest of the table describes; BENCHMARKS.md shows the host moving
memory-bound classes by up to 1.7x from minute to minute).

Fit. Non-negative least squares of relative error (calibrate.fit) on `one, macs_padded,
in_elems, out_elems, channel_rows` (`channel_rows` = ceil16(C)·Ho, the channels rounded up to
the block times the output rows: each row a blocked depthwise kernel starts has a fixed cost),
one entry per alignment; the entries replace the table's `depthwise` entries of that thread
count, in place. The fit without `channel_rows` is printed beside it.
`--refit` fits the rows of --raw again. A sweep keeps the rows of other thread counts already
in --raw (so `--threads 1`, then `--threads all`, leave both in one file).
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
from calibrate import (MIN_CELL, FEATURES as CAL_FEATURES, command_line, conv_spec, fit, measure_group,  # noqa: E402
                       ok, pin, save_table_and_raw, thread_counts)
from ortutil import machine  # noqa: E402

CLASS = "depthwise"
BASE = ["one", "macs_padded", "in_elems", "out_elems"]
KERNELS = [(3, 3), (5, 5), (7, 7), (3, 1), (1, 3), (5, 1), (1, 5), (7, 1), (1, 7)]
CHANNELS = [16, 20, 24, 32, 40, 64, 72, 96, 120, 128, 144, 192, 200, 240, 256, 384, 480, 512, 576, 672, 768, 960, 1152]
MAPS = [7, 14, 28, 56, 112]


def shapes(points, seed):
    """A seeded sample of about `points` blocked depthwise shapes: per (kernel, stride), a square
    kernel's stratum gets 2.5 times the share of a kx1 / 1xk one."""
    rng = np.random.default_rng(seed)
    pool = [conv_spec(c, c, c, kh, kw, st, h) for (kh, kw) in KERNELS for c in CHANNELS for st in (1, 2) for h in MAPS]
    pool = [s for s in pool if ok(s) and s["class"] == CLASS]
    strata = sorted({(s["kh"], s["kw"], s["stride"]) for s in pool})
    weight = {key: 2.5 if key[0] == key[1] else 1.0 for key in strata}
    out = []
    for key in strata:
        part = [s for s in pool if (s["kh"], s["kw"], s["stride"]) == key]
        k = min(len(part), round(points * weight[key] / sum(weight.values())))
        out += [part[i] for i in sorted(rng.choice(len(part), size=k, replace=False))]
    return out


def fit_entries(rows, extra, template):
    """Entries `template` + fit on BASE + `extra` (one per alignment when both have
    calibrate.MIN_CELL rows, else one for both); the fit on BASE alone is printed beside it."""
    al, un = [r for r in rows if r["aligned"]], [r for r in rows if not r["aligned"]]
    cells = [(True, al), (False, un)] if min(len(al), len(un)) >= MIN_CELL else [(None, rows)]
    out = []
    for aligned, part in cells:
        for features in (BASE, BASE + extra):
            coef, pred, rel = fit(part, features)
            print(f"{template.get('class', template['op'])} aligned {aligned}, {part[0]['threads']} thread(s), {len(part)} rows, {features}: "
                  f"coef {[float(f'{c:.6g}') for c in coef]}, median rel err {np.median(rel):.3f}, "
                  f"p90 {np.percentile(rel, 90):.3f}, within 25 % {np.mean(rel <= 0.25):.1%}")
        out.append(dict(template, aligned=aligned, features=features, coef=[float(f"{c:.6g}") for c in coef],
                        rows=len(part), median_rel_err=round(float(np.median(rel)), 4),
                        max_rel_err=round(float(np.max(rel)), 4)))
    return out


def entries(rows):
    """The `depthwise` entries fitted from the rows of one thread count."""
    template = {"op": "conv", "class": CLASS, "note": "bench/calibrate_depthwise.py: wider grid, fastest of the sweeps"}
    return fit_entries(rows, ["channel_rows"], template)


def is_depthwise(entry):
    return entry.get("op") == "conv" and entry.get("class") == CLASS


def replace_in_place(table, threads, fitted, matches):
    """Replaces the entries of `table`'s `threads` table that `matches` with `fitted`, each where
    such an entry was (the entries keep their order; the rest are appended)."""
    tabs = [t for t in table["tables"] if t["threads"] == threads]
    if not tabs:
        sys.exit(f"the table has no {threads}-thread entries: run calibrate.py --threads {threads} first")
    entries = tabs[0]["entries"]
    old = [i for i, e in enumerate(entries) if matches(e)]
    for i, e in zip(old, fitted):
        entries[i] = e
    for i in old[len(fitted):][::-1]:
        del entries[i]
    entries += fitted[len(old):]


def sweep(specs, threads, args, tmp):
    """Every shape measured `--repeats` times in interleaved groups; a row keeps the fastest
    sweep's median and records them all."""
    print(f"{len(specs)} shapes, {args.repeats} sweeps, {threads} thread(s)", file=sys.stderr)
    times, rows, sentinels = [[] for _ in specs], [], []
    for rep in range(args.repeats):
        for g in range(0, len(specs), args.group):
            uid = 100000 * threads + 1000 * rep + g
            measured = measure_group(specs[g:g + args.group], threads, args.budget, tmp, uid)
            sentinels.append(measured[-1]["median_ns"])
            for k, r in enumerate(measured[:-1]):
                times[g + k].append(r["median_ns"])
                if rep == 0:
                    rows.append(dict(r, sentinel_ns=measured[-1]["median_ns"], all_events=None))
        groups = -(-len(specs) // args.group)
        print(f"  sweep {rep + 1}: sentinel median {np.median(sentinels[-groups:]) / 1e3:.1f} us", file=sys.stderr)
    for r, t in zip(rows, times):
        r.update(median_ns=float(min(t)), repeats_ns=t)
    return rows, sentinels


def arguments(doc, points, raw_name):
    """The command line of this script and of those built on it (bench/calibrate_grouped.py)."""
    ap = argparse.ArgumentParser(description=doc.splitlines()[0])
    ap.add_argument("--table", required=True)
    ap.add_argument("--threads", default="1", help='comma list of thread counts, "all" = every core')
    ap.add_argument("--pin", type=int, default=1, help="CPU to pin 1-thread sweeps to (-1: no pinning)")
    ap.add_argument("--group", type=int, default=8, help="models interleaved together")
    ap.add_argument("--budget", type=float, default=0.4, help="seconds of timed runs per model and sweep")
    ap.add_argument("--repeats", type=int, default=3, help="sweeps; each shape keeps its fastest")
    ap.add_argument("--points", type=int, default=points, help="shapes in the sample (about)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--raw", default=os.path.join(HERE, f"results-{datetime.date.today()}-{raw_name}.json"))
    ap.add_argument("--refit", action="store_true",
                    help="no measuring: fit the rows of --raw and replace the entries in --table")
    return ap.parse_args()


def run(args, specs, entries, matches, command_key):
    """Measures `specs` (or, with --refit, reads --raw), fits `entries` per thread count and
    writes them into --table in place of those that `matches`."""
    with open(args.table) as f:
        table = json.load(f)
    if args.refit:
        with open(args.raw) as f:
            raw = json.load(f)
        for threads in sorted({r["threads"] for r in raw["rows"]}):
            replace_in_place(table, threads, entries([r for r in raw["rows"] if r["threads"] == threads]), matches)
        table[command_key] = f"{raw['command']}; refitted: {command_line()}"
        with open(args.table, "w") as f:
            json.dump(table, f, indent=1)
        return
    rows, sentinels, earlier = [], {}, []
    counts = thread_counts(args.threads)
    if os.path.exists(args.raw):  # a sweep of other thread counts, kept (see the docstring)
        with open(args.raw) as f:
            old = json.load(f)
        rows = [r for r in old["rows"] if r["threads"] not in counts]
        sentinels = {int(k): v for k, v in old.get("sentinels_ns", {}).items() if int(k) not in counts}
        earlier = old.get("earlier_commands", []) + [old["command"]]
    with tempfile.TemporaryDirectory(prefix="dac-calibrate-") as tmp:
        for threads in counts:
            pin(threads, args.pin)
            part, sentinels[threads] = sweep(specs, threads, args, tmp)
            rows += part
            replace_in_place(table, threads, entries(part), matches)
    save_table_and_raw(args.table, table, command_key, args.raw, rows, machine=machine(), sentinels_ns=sentinels,
                       earlier_commands=earlier)


def main():
    args = arguments(__doc__, 270, "calibration-depthwise")
    run(args, shapes(args.points, args.seed), entries, is_depthwise, "depthwise_command")


if __name__ == "__main__":
    main()
