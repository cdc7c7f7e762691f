#!/usr/bin/env python3
"""Adds the large-tensor term to a time table, fitted on whole layouts timed by
bench/layout_probe.py.

    bench/.venv/bin/python bench/fit_tensor_term.py PROBE.json --table IN.json --out OUT.json

Why. The calibration times one node at a time, between two 1x1 convolutions. A factored layout
runs several nodes on the layer's tensors: DAC's sum layout reads the layer's input once per
branch and adds every branch into one output, its multiplier-1 layout concatenates r tensors.
Where those tensors are large (64 channels at 224x224: 3.2 M elements, 12.8 MB), the layout runs
up to about 2x its nodes' summed calibrated times; at 56x56 it runs as calibrated
(BENCHMARKS.md, "Factored layouts on large maps").

The term. Per node, `tensor_elems_over_cache`: the elements of its input and of its output
tensor beyond CACHED_TENSOR = 2^20 each (src/time/mod.rs, bench/calibrate.py), times one
coefficient in ns per element, added to the depthwise convolutions' entries (class `depthwise`, both alignments) and
to Concat's. It is not given to the 1x1 convolutions: timed alone, a large-map 1x1 convolution
runs at or below its calibrated time, and the fit is no better with them (same share of layouts
within 25 %).

The fit. PROBE.json's rows of DAC (sum, multiplier1) and Network Decoupling (sum) layouts; each
layout's nodes rebuilt as src/time/layouts.rs builds them; measured = a * modeled + k * F
(F: the layout's summed feature), least squares on relative errors, k >= 0. `a` absorbs the
machine's speed during the probe against the table's; the coefficient written is k / a, in the
table's own scale. The probe's modeled times must be the input table's (`dac onnx` with that
table, which must not have the term yet). Prints the share of layouts within 25 % of measured
before and after; writes the table with the term, "tensor_term" recording the fit and command.
"""
import argparse
import copy
import json
import os
import shlex
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from calibrate import CACHED_TENSOR, FEATURES  # noqa: E402

FEATURE = "tensor_elems_over_cache"


def layout_nodes(variant, c, n, h):
    """(kind, input elements, output elements) of each node of a probe layout (3x3, pads 1,
    stride 1: the map keeps its size), or None for a scheme without several layouts."""
    scheme, layout, rank = variant.split(":")
    r, area = int(rank), h * h
    if scheme == "dac" and layout == "sum":
        return [("depthwise", c * area, c * area), ("pointwise", c * area, n * area)] * r
    if scheme == "dac" and layout == "multiplier1":
        return [("depthwise", c * area, c * area)] * r + [("concat", r * c * area, r * c * area),
                                                          ("pointwise", r * c * area, n * area)]
    if scheme == "decoupled" and layout == "sum":
        return [("pointwise", c * area, n * area), ("depthwise", n * area, n * area)] * r
    return None


def feature(nodes):
    """The layout's summed term feature over its depthwise and Concat nodes (calibrate.py's
    definition, the crate's)."""
    term = FEATURES[FEATURE]
    return sum(term({"in_elems": i, "out_elems": o}) for kind, i, o in nodes if kind in ("depthwise", "concat"))


def fit(rows):
    """(a, k in ns per element, per-row relative errors before and after)."""
    pts = [(r, layout_nodes(r["variant"], r["C"], r["N"], r["H"])) for r in rows if r["variant"] != "dense"]
    pts = [(r, nodes) for r, nodes in pts if nodes is not None]
    y = np.array([r["measured_ms"] for r, _ in pts])
    m = np.array([r["modeled_ms"] for r, _ in pts])
    f = np.array([feature(nodes) for _, nodes in pts]) * 1e-6  # ms per (ns per element)
    a0 = float(np.sum(m / y) / np.sum((m / y) ** 2))  # one scale, no term
    (a, k), *_ = np.linalg.lstsq(np.stack([m / y, f / y], 1), np.ones_like(y), rcond=None)
    if k < 0:
        a, k = a0, 0.0
    return float(a), float(k), np.abs(a0 * m - y) / y, np.abs(a * m + k * f - y) / y


def with_term(table, coef, record):
    out = copy.deepcopy(table)
    for group in out["tables"]:
        for e in group["entries"]:
            if (e.get("op") == "conv" and e.get("class") == "depthwise") or e.get("op") == "concat":
                if FEATURE in e["features"]:
                    raise SystemExit(f"the table already has {FEATURE}; give the table without it")
                e["features"] = e["features"] + [FEATURE]
                e["coef"] = e["coef"] + [float(f"{coef:.6g}")]
    out["tensor_term"] = record
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("probe", help="bench/layout_probe.py's --out")
    ap.add_argument("--table", required=True, help="the table the probe's modeled times came from")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    probe, table = json.load(open(args.probe)), json.load(open(args.table))
    a, k, before, after = fit(probe["rows"])
    coef = k / a
    share = lambda rel: float(np.mean(rel <= 0.25))  # noqa: E731
    print(f"{len(before)} layouts; speed of the probe against the table a = {a:.3f}; k = {k:.4f} ns per element, "
          f"{coef:.4f} in the table's scale")
    print(f"within 25 % of measured: {share(before):.1%} without the term (one scale), {share(after):.1%} with it; "
          f"median |error| {np.median(before):.1%} -> {np.median(after):.1%}")
    record = {"feature": FEATURE, "threshold_elements": int(CACHED_TENSOR), "coef_ns_per_element": float(f"{coef:.6g}"),
              "entries": "conv depthwise (both alignments), concat", "probe": args.probe,
              "probe_speed_against_table": round(a, 4), "layouts": len(before),
              "within_25pct_before": round(share(before), 4), "within_25pct_after": round(share(after), 4),
              "command": shlex.join(["bench/.venv/bin/python"] + sys.argv)}
    with open(args.out, "w") as f:
        json.dump(with_term(table, coef, record), f, indent=1)
        f.write("\n")


if __name__ == "__main__":
    main()
