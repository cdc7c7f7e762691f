#!/usr/bin/env python3
"""Two time models on the same measured layers: the per-layer error of two `bench/zoo_time.py
--profile` runs' modeled times, each against both runs' measured times.

    bench/.venv/bin/python bench/compare_layer_models.py OLD.json NEW.json [--changed] [--by-network]

Why. A change to the time table changes the modeled time of some layers; the measured times of
the original networks do not depend on it, but they drift with the machine's speed between two
runs (on a shared host by up to 1.5x for small layers). Scoring each model against the same
measurements separates the model's change from the machine's. Only the original networks'
layers are compared (the rewrites' plans may differ between the runs); a layer is matched by
name in both runs.

Prints, per run of measurements and per model, the share of layers within 25 % of measured,
the median relative error and the median absolute one, over all matched layers and, with
--changed, over the layers whose modeled time differs between the runs (by more than 0.5 %).
First, how well the two runs' measurements agree with each other: the share of layers whose
measured times differ by more than 25 % between the runs (the same files, the same machine kind),
a floor under any model's "within 25 %" on one run's measurements (with --by-network, per network).
"""
import argparse
import json

import numpy as np


def original_layers(path):
    """{(model, layer): (modeled ms, measured ms)} of every original network's profiled layers."""
    with open(path) as f:
        results = json.load(f)["results"]
    out = {}
    for r in results:
        prof = (r.get("profile") or {}).get("original") or {}
        for x in prof.get("layers", []):
            if x.get("measured_ms"):
                out[(r["model"], x["layer"])] = (x["modeled_ms"], x["measured_ms"])
    return out


def summary(modeled, measured):
    rel = (np.asarray(modeled) - np.asarray(measured)) / np.asarray(measured)
    return f"{np.mean(np.abs(rel) <= 0.25):6.1%} within 25 %, median {np.median(rel):+6.1%}, |median| {np.median(np.abs(rel)):5.1%}"


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("old")
    ap.add_argument("new")
    ap.add_argument("--changed", action="store_true", help="also the layers whose modeled time changed")
    ap.add_argument("--by-network", action="store_true", help="the runs' agreement per network too")
    args = ap.parse_args()
    a, b = original_layers(args.old), original_layers(args.new)
    keys = sorted(set(a) & set(b))
    changed = [k for k in keys if abs(a[k][0] - b[k][0]) > 0.005 * a[k][0]]
    print(f"{len(keys)} layers in both runs, {len(changed)} modeled differently")
    ratio = np.array([b[k][1] / a[k][1] for k in keys])
    p10, p90 = np.percentile(ratio, [10, 90])
    print(f"measured new / old run: median {np.median(ratio):.2f}, p10 {p10:.2f}, p90 {p90:.2f}; "
          f"{np.mean(np.abs(ratio - 1) > 0.25):.1%} of the layers differ by more than 25 %")
    if args.by_network:
        for net in sorted({k[0] for k in keys}):
            r = np.array([b[k][1] / a[k][1] for k in keys if k[0] == net])
            print(f"  {net:22} {len(r):4} layers: median {np.median(r):.2f}, "
                  f"{np.mean(np.abs(r - 1) > 0.25):.0%} differ by more than 25 %")
    for subset, name in ((keys, "all"), (changed, "changed")):
        if name == "changed" and not args.changed or not subset:
            continue
        for run, label in ((a, "old run"), (b, "new run")):
            measured = [run[k][1] for k in subset]
            print(f"{name:8} measured in the {label}: old model {summary([a[k][0] for k in subset], measured)}; "
                  f"new model {summary([b[k][0] for k in subset], measured)}")


if __name__ == "__main__":
    main()
