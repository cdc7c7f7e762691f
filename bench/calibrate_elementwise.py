#!/usr/bin/env python3
"""The time model's operators that are neither convolutions nor products: Swish (`x·sigmoid(x)`,
which onnxruntime fuses into one `QuickGelu`), a per-channel scale (`Mul` of a feature map by a
`[1, C, 1, 1]` tensor, as squeeze-and-excitation blocks export), global pooling and
`MaxPool`/`AveragePool`, timed in context and fitted, then added to a time table as `swish`,
`scale`, `global_pool` and `pool` entries.

    taskset -c 1 bench/.venv/bin/python bench/calibrate_elementwise.py \\
        --table src/time/onnxruntime-x86_64.json [--threads 1,all] [--budget 0.4] \\
        [--raw bench/results-DATE-calibration-elementwise.json] [--flush]

Each shape is one model: `x -> Conv 1x1 (C->C) -> pattern -> Conv 1x1 (C->16)` (CPU,
ORT_ENABLE_ALL, sequential, inter-op 1, intra-op threads 1 or every core). Its time is the median
over runs (onnxruntime's profiler) of every kernel event between the two convolutions that is
neither a convolution nor a layout reorder (its NCHWc convolutions hand over blocked tensors; a
broadcasting `Mul` reads plain NCHW, so reorders surround it). Patterns:

- `swish`: `Sigmoid(y)`, `Mul(y, ·)` on the first convolution's output `y`.
- `se`: Swish, then a squeeze-and-excitation block as EfficientNet exports it (`GlobalAveragePool`,
  1x1 Conv C->C/4, Swish, 1x1 Conv C/4->C, `Sigmoid`, `Mul` of the Swish output by it). Its
  `GlobalAveragePool` events are `global_pool` rows; the rest less the `swish` fit's prediction
  for its two Swishes is a `scale` row.
- `gap`: `GlobalAveragePool` on the convolution's output (a classifier head): a `global_pool` row.
- `pool`: `MaxPool` or `AveragePool` (kernel 2 or 3, stride 1 or 2, pads k//2 for stride 1).
- `reorder`: `Neg` (which runs on plain NCHW tensors) between the two convolutions: its
  `ReorderOutput` and `ReorderInput` events are the `reorder_output` and `reorder_input` rows.

The layout reorders around a pattern are not part of its time: the time model counts them
where they occur, from the graph (`src/io/onnx/reorders.rs`), as `reorder_input` and
`reorder_output` nodes.

With `--flush` every timed run follows a cache flush (calibrate.py's: a product with 64 MiB of
weights) and each shape runs FLUSH_RUNS = 40 times, as in a network too large for the caches;
the shipped table is measured warm (see calibrate.py).

Fits are non-negative least squares minimising relative error (calibrate.py's `nnls`) on
`one, in_elems, out_elems` (`pool` also `macs` = output elements x kernel taps), one per channel
alignment (channels a multiple of the 16-channel block, or not: off the block every pattern runs
up to 3x slower per value); the entries replace the table's entries of the same ops for that
thread count. Maps are kept below MAX_ELEMENTS values: beyond about a million, a map stops
fitting in cache and runs up to 3x slower per value than the fit says.
"""
import argparse
import collections
import datetime
import json
import os
import sys
import tempfile

import numpy as np
from onnx import helper

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from calibrate import (BLOCK, FLUSH_RUNS, conv_1x1, finish, flusher, nnls, parse_profile, refit_into, replace_entries,  # noqa: E402
                       save_table_and_raw, thread_counts, weight)
from ortutil import grouped_median, session  # noqa: E402

CONV_OPS = {"Conv", "FusedConv"}
# Multiples of the 16-channel block (AVX-512), then counts off it (a separate fit: up to 3x slower per value).
CHANNELS = [16, 32, 64, 96, 144, 192, 240, 320, 480, 672, 1152, 1280, 12, 20, 24, 40, 56, 72, 88, 120, 200, 360, 600]
SIZES = [7, 14, 28, 56, 112]
# Beyond about a million values a map stops fitting in cache and every pattern runs up to 3x
# slower per value than the linear fit says; the zoo's maps around convolutions stay below it.
MAX_ELEMENTS = 1_300_000
POOLS = [("MaxPool", 3, 2), ("MaxPool", 2, 2), ("MaxPool", 3, 1), ("AveragePool", 3, 1), ("AveragePool", 2, 2)]


def head(c, nodes, inits):
    """The first convolution (no activation, so nothing fuses into it)."""
    inits += [weight("pre_w", [c, c, 1, 1]), weight("pre_b", [c])]
    nodes.append(helper.make_node("Conv", ["x", "pre_w", "pre_b"], ["pre"], name="pre"))


def swish(src, name, nodes):
    nodes += [helper.make_node("Sigmoid", [src], [f"{name}_s"], name=f"{name}_sig"),
              helper.make_node("Mul", [src, f"{name}_s"], [name], name=name)]


def model(spec):
    c, h = spec["C"], spec["H"]
    nodes, inits = [], []
    head(c, nodes, inits)
    kind = spec["pattern"]
    if kind == "swish":
        swish("pre", "target", nodes)
    elif kind == "se":
        swish("pre", "y", nodes)
        nodes.append(helper.make_node("GlobalAveragePool", ["y"], ["g"], name="gap"))
        conv_1x1("se_a", "g", c, max(c // 4, 8), inits, nodes)
        swish("se_a", "se_act", nodes)
        conv_1x1("se_b", "se_act", max(c // 4, 8), c, inits, nodes)
        nodes += [helper.make_node("Sigmoid", ["se_b"], ["se_s"], name="se_sig"),
                  helper.make_node("Mul", ["y", "se_s"], ["target"], name="target")]
    elif kind == "gap":
        nodes.append(helper.make_node("GlobalAveragePool", ["pre"], ["target"], name="target"))
    elif kind == "reorder":
        nodes.append(helper.make_node("Neg", ["pre"], ["target"], name="target"))
    else:
        k, s = spec["k"], spec["stride"]
        p = k // 2 if s == 1 else 0
        nodes.append(helper.make_node(spec["op"], ["pre"], ["target"], name="target", kernel_shape=[k, k],
                                      strides=[s, s], pads=[p] * 4))
    conv_1x1("post", "target", c, 16, inits, nodes)
    return finish(nodes, inits, c, h, h, ["post"])


def out_hw(spec):
    if spec["pattern"] == "gap":
        return 1
    if spec["pattern"] != "pool":
        return spec["H"]
    k, s = spec["k"], spec["stride"]
    p = k // 2 if s == 1 else 0
    return (spec["H"] + 2 * p - k) // s + 1


def measure(spec, threads, budget, tmp, uid, flush=None):
    """Median microseconds per run of the non-convolution events, split by operator. With
    `flush`, FLUSH_RUNS runs, each after a call of it."""
    sess = session(model(spec), threads, profile_prefix=os.path.join(tmp, f"e{uid}"))
    x = {"x": np.random.default_rng(uid).standard_normal([1, spec["C"], spec["H"], spec["H"]]).astype(np.float32)}
    for _ in range(10):
        sess.run(None, x)
    start, n = datetime.datetime.now(), 0
    while n < (FLUSH_RUNS if flush else 30) or (not flush and (datetime.datetime.now() - start).total_seconds() < budget):
        if flush:
            flush()
        sess.run(None, x)
        n += 1
    path = sess.end_profiling()
    runs, _ = parse_profile(path, 10)
    os.remove(path)
    per_op = collections.defaultdict(list)
    for run in runs:
        totals = collections.Counter()
        for _, op, dur, _ in between(run):
            if op not in CONV_OPS:
                totals[op] += dur
        for op, us in totals.items():
            per_op[op].append(us)
    return {op: grouped_median(v) for op, v in per_op.items()}, n


def between(events):
    """The events after the first convolution's and before the last one's (the model's own
    input and output reorders fall outside)."""
    first = next(i for i, e in enumerate(events) if e[0].startswith("pre"))
    last = max(i for i, e in enumerate(events) if e[0].startswith("post"))
    return events[first + 1:last]


def grid(rng):
    specs = []
    for c in CHANNELS:
        for h in SIZES:
            if 3000 <= c * h * h <= MAX_ELEMENTS:
                specs += [{"pattern": p, "C": c, "H": h} for p in ("swish", "se", "gap", "reorder")]
    for c in [32, 64, 96, 128, 192, 256, 480, 512, 832, 24, 40, 88, 200, 360]:
        for h in [14, 28, 56, 112]:
            for i in rng.choice(len(POOLS), 2, replace=False) if c * h * h <= MAX_ELEMENTS else []:
                op, k, s = POOLS[i]
                specs.append({"pattern": "pool", "C": c, "H": h, "op": op, "k": k, "stride": s})
    return specs


def features(spec):
    elems = spec["C"] * spec["H"] * spec["H"]
    out = spec["C"] * out_hw(spec) ** 2
    taps = spec.get("k", 1) ** 2
    return {"one": 1.0, "in_elems": float(elems), "out_elems": float(out), "macs": float(out * taps)}


def fit(rows, names):
    X = np.array([[r["features"][f] for f in names] for r in rows])
    t = np.array([r["ns"] for r in rows])
    coef = nnls(X / t[:, None], np.ones(len(rows)))
    rel = np.abs(X @ coef - t) / t
    return coef, X @ coef, rel


def entries(op, names, rows):
    """One entry per alignment (channels a multiple of the block or not); one entry for both
    (`aligned` null) when the grid has rows of one alignment only, as with 8-channel blocks."""
    split = [(a, [r for r in rows if (r["C"] % BLOCK == 0) == a]) for a in (True, False)]
    if not all(part for _, part in split):
        return [entry(op, names, rows, None)]
    return [entry(op, names, part, a) for a, part in split]


def entry(op, names, rows, aligned):
    coef, pred, rel = fit(rows, names)
    print(f"{op}, aligned {aligned}: coef {[float(f'{c:.6g}') for c in coef]}, {len(rows)} rows, median rel err "
          f"{np.median(rel):.3f}, max {rel.max():.3f}")
    for r, p in zip(rows, pred):
        print(f"  {r['label']:34} {r['ns'] / 1e3:9.1f} us, model {p / 1e3:9.1f} us")
    return {"op": op, "aligned": aligned, "features": names, "coef": [float(f"{c:.6g}") for c in coef],
            "rows": len(rows), "median_rel_err": round(float(np.median(rel)), 4),
            "max_rel_err": round(float(rel.max()), 4)}, coef


def label(spec):
    extra = f" {spec['op']} k{spec['k']} s{spec['stride']}" if spec["pattern"] == "pool" else ""
    return f"{spec['pattern']} C={spec['C']} H={spec['H']}{extra}"


def sweep(threads, args, tmp):
    """Measured rows of every pattern, then the entries fitted from them."""
    rows = []
    flush = flusher(threads) if args.flush else None
    for uid, spec in enumerate(grid(np.random.default_rng(args.seed))):
        by_op, runs = measure(spec, threads, args.budget, tmp, uid, flush)
        rows.append(dict(spec, threads=threads, runs=runs, flushed=args.flush, by_op_us=by_op, features=features(spec),
                         label=label(spec)))
    return rows, fit_rows(rows)


def fit_rows(rows):
    """The entries fitted from the measured rows of one thread count."""
    return [e for op, names, rs in cells(rows) for e, _ in entries(op, names, rs)]


def cells(rows):
    """(op, features, rows with the op's nanoseconds "ns") of every entry, in table order, from
    the measured rows of one thread count. A Mul scale's time is its squeeze-and-excitation
    block's less the global pool and the two Swish (the Swish fit of the same rows)."""
    def ns(r, ops=None):
        """Nanoseconds of the row's events of `ops` (default: all but the layout reorders)."""
        return 1e3 * sum(v for op, v in r["by_op_us"].items()
                         if (op in ops if ops else not op.startswith("Reorder")))
    sw = [dict(r, ns=ns(r)) for r in rows if r["pattern"] == "swish"]
    by_alignment = {a: [r for r in sw if (r["C"] % BLOCK == 0) == a] for a in (True, False)}
    swish = {a: fit(part if all(by_alignment.values()) else sw, ["one", "in_elems"])[0]
             for a, part in by_alignment.items()}
    gp = [dict(r, ns=ns(r)) for r in rows if r["pattern"] == "gap"]
    gp += [dict(r, ns=ns(r, {"GlobalAveragePool"})) for r in rows if r["pattern"] == "se"]
    sc = []
    for r in (r for r in rows if r["pattern"] == "se"):
        coef = swish[r["C"] % BLOCK == 0]
        swishes = coef[0] * 2 + coef[1] * (r["features"]["in_elems"] + max(r["C"] // 4, 8))
        rest = ns(r) - ns(r, {"GlobalAveragePool"}) - swishes
        sc.append(dict(r, ns=max(rest, 1.0)))
    out = [("swish", ["one", "in_elems"], sw), ("scale", ["one", "out_elems"], sc),
           ("global_pool", ["one", "in_elems"], [r for r in gp if r["ns"] > 0]),
           ("pool", ["one", "in_elems", "out_elems", "macs"], [dict(r, ns=ns(r)) for r in rows if r["pattern"] == "pool"])]
    for op, name in (("ReorderInput", "reorder_input"), ("ReorderOutput", "reorder_output")):
        ro = [dict(r, ns=ns(r, {op})) for r in rows if r["pattern"] == "reorder"]
        out.append((name, ["one", "in_elems"], [r for r in ro if r["ns"] > 0]))
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--table", required=True)
    ap.add_argument("--threads", default="1,all")
    ap.add_argument("--budget", type=float, default=0.4, help="seconds of timed runs per shape")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--flush", action="store_true", help="a cache flush before each run (as calibrate.py's --flush)")
    ap.add_argument("--raw", default=os.path.join(HERE, f"results-{datetime.date.today()}-calibration-elementwise.json"))
    ap.add_argument("--refit", action="store_true",
                    help="no measuring: fit the rows of --raw and replace those entries in --table")
    args = ap.parse_args()
    table = json.load(open(args.table))
    if args.refit:
        return refit_into(table, args, "elementwise_command", fit_rows)
    tmp = tempfile.mkdtemp()
    all_rows = []
    for threads in thread_counts(args.threads):
        print(f"## {threads} thread(s)")
        rows, fitted = sweep(threads, args, tmp)
        all_rows += rows
        replace_entries(table, threads, fitted)
    save_table_and_raw(args.table, table, "elementwise_command", args.raw, all_rows)


if __name__ == "__main__":
    main()
