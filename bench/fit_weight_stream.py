#!/usr/bin/env python3
"""Fits the weight-streaming term of the time model on a zoo run, with a held-out check.

    bench/.venv/bin/python bench/fit_weight_stream.py RESULTS.json ZOO_DIR [--table TABLE.json]
        [--check MODEL.onnx ...]

RESULTS.json is a `bench/zoo_time.py --profile` run over ZOO_DIR (modeled without the term).
The table's convolution fits are measured with the layer's weights in cache; in a network
whose weights do not fit, a layer reads them from memory. The term adds, per convolution,

    gemv_weights_ns * weights * exposure(P) * residency(S)
    exposure(P) = E * max(0, 1 - P / P0)     P: the output positions (Ho*Wo)
    residency(S) = min(1, S / S1)            S: the network's convolution weight bytes

where gemv_weights_ns is the table's `gemv` entry's `weights` coefficient (a product with its
weights from memory, measured by bench/calibrate_matmul.py). E, P0 and S1 are chosen by grid
search to maximise the share of original layers within 25 % of their measured in-network time.
Two-fold held-out check: the networks sorted by S are dealt alternately into two halves; the
parameters fitted on one half are scored on the other, and the table prints both, with the
fit on all networks and the score without the term. E is fixed at 1 (the whole read exposed
at one position, as in the flushed `gemv`); S1 = 1 byte is "no residency" (every network's
weights from memory). --check prints what the fit on all networks adds to other models'
modeled time (the shipped networks: compare with their measured time in
bench/shipped_time.py's results). The crate does not ship the term: see BENCHMARKS.md.
"""
import argparse
import itertools
import json
import os

from weight_fetch import conv_facts, original_layers

E_GRID = [1.0]
P0_GRID = [100, 200, 300, 400, 600, 800, 1200, 1600, 2400]
S1_GRID = [1, 4e6, 6e6, 8e6, 10e6, 12e6, 16e6, 24e6, 32e6]


def rows_of(results, zoo):
    """(network, S, weights, P, measured ms, modeled ms) of every original convolution."""
    return [(model, size, wb / 4, p, lay["measured_ms"], lay["modeled_ms"])
            for model, size, lay, wb, p in original_layers(results, zoo) if lay["kind"] == "dense_original" and p]


def term_ms(g, weights, positions, size, params):
    """The term's milliseconds for a convolution at `params` (E, P0, S1)."""
    e, p0, s1 = params
    return g * weights * e * max(0.0, 1 - positions / p0) * min(1.0, size / s1) / 1e6


def within(rows, g, params):
    """Layers within 25 % of measured, with the term at `params` (None: without it)."""
    ok = 0
    for _, s, w, p, meas, mod in rows:
        if params:
            mod += term_ms(g, w, p, s, params)
        ok += abs(mod - meas) <= 0.25 * meas
    return ok


def mb(s1):
    return f"{s1 / 1e6:.0f} MB" if s1 > 1 else "none (all from memory)"


def fit(rows, g):
    return max(itertools.product(E_GRID, P0_GRID, S1_GRID), key=lambda q: (within(rows, g, q), -q[0]))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("results")
    ap.add_argument("zoo")
    ap.add_argument("--table", default=os.path.join(os.path.dirname(__file__), "..", "src/time/onnxruntime-x86_64.json"))
    ap.add_argument("--check", nargs="*", default=[], help="models to print the fitted term's addition for")
    args = ap.parse_args()
    table = json.load(open(args.table))
    one = next(t for t in table["tables"] if t["threads"] == 1)
    gemv = next(e for e in one["entries"] if e.get("op") == "gemv")
    g = gemv["coef"][gemv["features"].index("weights")]
    rows = rows_of(json.load(open(args.results))["results"], args.zoo)
    nets = sorted({(s, n) for n, s, *_ in rows})
    halves = [{n for i, (_, n) in enumerate(nets) if i % 2 == k} for k in (0, 1)]
    print(f"gemv weights coefficient {g:.4f} ns; {len(rows)} original convolutions in {len(nets)} networks\n")
    print("| fitted on | E | P0 | S1 | scored on | without the term | with it |")
    print("|---|---|---|---|---|---|---|")
    for k in (0, 1):
        train = [r for r in rows if r[0] in halves[k]]
        test = [r for r in rows if r[0] in halves[1 - k]]
        q = fit(train, g)
        for name, sel in (("same half", train), ("other half", test)):
            print(f"| half {k + 1} ({len(halves[k])} nets) | {q[0]} | {q[1]} | {mb(q[2])} | {name} "
                  f"| {within(sel, g, None)}/{len(sel)} | {within(sel, g, q)}/{len(sel)} |")
    q = fit(rows, g)
    print(f"| all | {q[0]} | {q[1]} | {mb(q[2])} | all | {within(rows, g, None)}/{len(rows)} "
          f"| {within(rows, g, q)}/{len(rows)} |")
    print("\nhalf 1:", ", ".join(sorted(halves[0])), "\nhalf 2:", ", ".join(sorted(halves[1])))
    for path in args.check:
        facts = conv_facts(path)
        s = sum(b for b, _ in facts.values())
        add_ms = sum(term_ms(g, b / 4, p, s, q) for b, p in facts.values() if p)
        print(f"{path}: {s / 1e6:.2f} MB of convolution weights; the term adds {add_ms * 1e3:.1f} us")

if __name__ == "__main__":
    main()
