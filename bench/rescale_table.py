#!/usr/bin/env python3
"""A time table for this CPU from a reference table and this CPU's calibration rows: the
reference's fits, their coefficients times a speed factor measured here.

    bench/.venv/bin/python bench/rescale_table.py --reference src/time/onnxruntime-x86_64.json \\
        --raw bench/results-DATE-calibration.json [--matmul-raw R] [--elementwise-raw R] \\
        [--activation-raw R] --out TABLE.json [--threads 1] [--per-entry]

Why. A table fitted from scratch on another CPU of the same kind describes its single nodes
better but can plan a network worse: its fits follow the grid's noise and its gaps (BENCHMARKS.md,
"A Zen 5 table from the reference table": the Zen 5's own table and every per-entry rescaling
planned vgg16 slower than the reference table's plan did there). One factor for the whole table
keeps the reference's relative costs, so its plans, and makes its milliseconds this CPU's.

How. The rows are the ones the calibration scripts write (bench/calibrate.py's --raw for the
convolutions, Concat and Add; calibrate_matmul.py's, calibrate_elementwise.py's and
calibrate_activation.py's), measured on this CPU with --threads 1; each row goes to the entry
the crate would use for it (class, alignment; as `TimeModel::fit` picks). The factor is the
summed measured over the summed reference-predicted time of every row; each entry's
coefficients are the reference's times it. With --per-entry each entry has its own factor
instead: its rows' summed measured over summed predicted time, or, for Add and the fused
activations, whose times are differences of two timings and can be near 0 or negative, the
least-squares factor of the relative errors (against max(t, 1 us) for Add, the convolution's
time for an activation, as their fits weigh them); an entry without rows takes the whole
table's (said in its "note"). The table written has this CPU's name, instruction set and CPU
family (from the conv raw file's machine; an instruction set or channel block other than the
reference's is refused), the reference's `threads` table only, and per entry "factor", "rows",
and the median relative error over its rows before and after (`reference_median_rel_err`,
`median_rel_err`). Nothing is measured.
"""
import argparse
import json
import os
import shlex
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
import calibrate  # noqa: E402
import calibrate_elementwise  # noqa: E402

DIFFERENCES = {"add"}  # ops timed as a difference of two timings (and every activation_*)


def value(feature, row):
    """A feature of a row: calibrate.py's definition for convolutions, else the row's field."""
    if "features" in row and feature in row["features"]:
        return float(row["features"][feature])
    if feature == "one":
        return 1.0
    if feature in row:
        return float(row[feature])
    return float(calibrate.FEATURES[feature](row))


def pick(entries, op, aligned):
    """The entry the crate uses for `op` at this alignment (src/time/mod.rs, `TimeModel::fit`)."""
    of_op = [e for e in entries if (e["op"], e.get("class")) == op]
    for want in (aligned, None):
        for e in of_op:
            if e["aligned"] == want:
                return e
    return of_op[0] if of_op else None


def conv_rows(raw, threads):
    """((op, class), aligned, row with "ns") of the convolution, Concat and Add rows."""
    out = []
    for r in raw["rows"]:
        if r["threads"] != threads or r.get("median_ns") is None or not np.isfinite(r["median_ns"]):
            continue
        conv = r["op"] == "conv"
        op = (r["op"], calibrate.classify(r["C_in"], r["N"], r["group"], r["kh"], r["kw"]) if conv else None)
        out.append((op, r["aligned"], dict(r, ns=r["median_ns"])))
    return out


def matmul_rows(raw, threads):
    return [((("gemv" if r["m"] == 1 else "matmul"), None), None, dict(r, ns=r["median_ns"]))
            for r in raw["rows"] if r["threads"] == threads]


def elementwise_rows(raw, threads):
    rows = [r for r in raw["rows"] if r["threads"] == threads]
    block = calibrate_elementwise.BLOCK
    return [((op, None), r["C"] % block == 0, r) for op, _, rs in calibrate_elementwise.cells(rows) for r in rs]


def activation_rows(raw, threads):
    return [((f"activation_{r['act']}", None), None, r) for r in raw["rows"] if r["threads"] == threads]


def predicted(entry, rows):
    return np.array([sum(c * value(f, r) for f, c in zip(entry["features"], entry["coef"])) for r in rows])


def relative_to(op, rows):
    """What an entry's errors are relative to: the time (at least 1 us for Add, timed as a
    difference), or for a fused activation the convolution's time, as their fits weigh them."""
    if op.startswith("activation_"):
        return np.array([r["conv_ns"] for r in rows], dtype=np.float64)
    return np.maximum(np.abs([r["ns"] for r in rows]), 1000.0 if op in DIFFERENCES else 1e-9)


def entry_factor(op, pred, t, rel):
    """One entry's factor: the ratio of its rows' summed measured to summed predicted times
    (the factor that keeps their total); for Add and the activations, timed as differences, the
    least-squares factor of their relative errors."""
    if op in DIFFERENCES or op.startswith("activation_"):
        w2 = rel ** -2.0
        return float((w2 * pred * t).sum() / (w2 * pred * pred).sum())
    return float(t.sum() / pred.sum())


def rescale(reference, sources, threads, per_entry):
    """The rescaled entries of `reference`'s `threads` table and the factor of the whole table
    (the ratio of every row's summed measured to summed predicted time); with `per_entry`,
    each entry has its own factor (`entry_factor`) instead, and an entry without rows the
    table's."""
    tables = [t for t in reference["tables"] if t["threads"] == threads]
    if not tables:
        sys.exit(f"the reference has no {threads}-thread table")
    entries = tables[0]["entries"]
    cells = {}
    for op, aligned, row in sources:
        e = pick(entries, op, aligned)
        if e is None:
            print(f"no reference entry for {op}: row left out", file=sys.stderr)
            continue
        cells.setdefault(id(e), []).append(row)
    fits = {id(e): (predicted(e, cells[id(e)]), np.array([r["ns"] for r in cells[id(e)]], dtype=np.float64),
                    relative_to(e["op"], cells[id(e)])) for e in entries if id(e) in cells}
    whole = round(sum(t.sum() for _, t, _ in fits.values()) / sum(p.sum() for p, _, _ in fits.values()), 4)
    print(f"the whole table: {sum(len(t) for _, t, _ in fits.values())} rows, factor {whole:.4f}")
    done = []
    for e in entries:
        new = {k: v for k, v in e.items() if k not in ("rows", "median_rel_err", "max_rel_err", "note",
                                                        "median_rel_conv_err", "max_rel_conv_err")}
        s = whole
        if id(e) in fits:
            pred, t, rel = fits[id(e)]
            s = entry_factor(e["op"], pred, t, rel) if per_entry else whole
            before, after = (float(np.median(np.abs(k * pred - t) / rel)) for k in (1.0, s))
            new.update(rows=len(t), reference_median_rel_err=round(before, 4), median_rel_err=round(after, 4))
            name = e["op"] if e["op"] != "conv" else e["class"]
            print(f"{name:24} aligned {str(e['aligned']):5} {len(t):4} rows: factor {s:.3f}, "
                  f"median rel err {before:.3f} -> {after:.3f}")
        elif per_entry:
            new["note"] = "no rows measured here: the whole table's factor"
        new["factor"] = round(s, 4)  # the coefficients are the reference's times this recorded factor
        new["coef"] = [float(f"{c * new['factor']:.6g}") for c in new["coef"]]
        done.append(new)
    return done, whole


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reference", required=True)
    ap.add_argument("--raw", required=True, help="bench/calibrate.py's raw rows measured on this CPU")
    ap.add_argument("--matmul-raw")
    ap.add_argument("--elementwise-raw")
    ap.add_argument("--activation-raw")
    ap.add_argument("--out", required=True)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--per-entry", action="store_true",
                    help="a factor per entry (changes the relative costs, so the plans) instead of one for the table")
    args = ap.parse_args()
    load = lambda p: json.load(open(p))  # noqa: E731
    reference, raw = load(args.reference), load(args.raw)
    m = raw["meta"]["machine"]
    if m["isa"] != reference.get("isa") or m.get("block", reference["block"]) != reference["block"]:
        sys.exit(f"this CPU's instruction set {m['isa']} (block {m.get('block')}) is not the reference's: fit a table")
    sources = conv_rows(raw, args.threads)
    for path, rows in ((args.matmul_raw, matmul_rows), (args.elementwise_raw, elementwise_rows),
                       (args.activation_raw, activation_rows)):
        if path:
            sources += rows(load(path), args.threads)
    entries, whole = rescale(reference, sources, args.threads, args.per_entry)
    rel = lambda p: os.path.relpath(p, ROOT) if p else None  # noqa: E731
    head = {k: reference[k] for k in ("runtime", "block", "units", "context", "classes", "feature_definitions")}
    head.update({"cpu": reference.get("cpu") or m["cpu"], "cpu_model": m["cpu"], "isa": m["isa"]})
    if m.get("cpu_family") is not None:
        head["cpu_family"] = m["cpu_family"]
    head.update({
        "date": raw["meta"]["date"][:10],
        "command": " ".join(shlex.quote(a) for a in [os.path.relpath(sys.executable, os.getcwd())] + sys.argv),
        "rescaled_from": {"table": rel(args.reference), "date": reference.get("date"),
                          "cpu": reference.get("cpu"), "cpu_family": reference.get("cpu_family")},
        "rescale_rule": (
            "every entry: the reference's features and coefficients times one factor, "
            + ("its rows' summed measured / summed reference-predicted time (add and activations: least squares "
               f"of the relative errors); entries without rows the whole table's, {whole:.4f}" if args.per_entry else
               f"{whole:.4f} for every entry, the summed measured / summed reference-predicted time of every row "
               "(relative costs, so plans, are the reference's; modeled times are this CPU's)")),
        "raw": [rel(p) for p in (args.raw, args.matmul_raw, args.elementwise_raw, args.activation_raw) if p],
    })
    table = dict(head, tables=[{"threads": args.threads, "note": raw["meta"].get("notes", {}).get(str(args.threads), ""),
                                "entries": entries}])
    tmp = args.out + ".tmp"
    with open(tmp, "w") as f:
        json.dump(table, f, indent=1)
        f.write("\n")
    os.replace(tmp, args.out)


if __name__ == "__main__":
    main()
