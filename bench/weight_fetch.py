#!/usr/bin/env python3
"""How much slower than modeled the large networks' weight-heavy convolutions run, per weight,
by the number of output positions: evidence that their weights stream from memory.

    bench/.venv/bin/python bench/weight_fetch.py RESULTS.json ZOO_DIR [--min-weights-bytes 200000]
        [--network-bytes 32000000] [--below]

RESULTS.json is a `bench/zoo_time.py --profile` run over ZOO_DIR. For every original
convolution of a network whose weights total more than --network-bytes (the reference machine's
L3 is 32 MiB), with at least --min-weights-bytes of weights of its own, the excess
(measured - modeled) in-network time is divided by its weight count; printed per bucket of
output positions (Ho*Wo), with the median relative error of the model. For comparison,
bench/calibrate_matmul.py's products with their weights from memory cost about 0.20 ns per
weight (the `gemv` entry's `weights` coefficient). --below takes the networks whose weights
fit instead.
"""
import argparse
import collections
import json
import math
import os

import numpy as np
import onnx
from onnx import shape_inference

BUCKETS = [64, 196, 784, math.inf]


def conv_facts(path):
    """{node name: (weight bytes, output positions)} of the model's convolutions."""
    m = shape_inference.infer_shapes(onnx.load(path))
    inits = {i.name: i for i in m.graph.initializer}
    shapes = {v.name: [d.dim_value for d in v.type.tensor_type.shape.dim]
              for v in list(m.graph.value_info) + list(m.graph.output)}
    out = {}
    for n in m.graph.node:
        if n.op_type == "Conv" and n.input[1] in inits:
            y = shapes.get(n.output[0], [])
            out[n.name] = (4 * math.prod(inits[n.input[1]].dims), y[2] * y[3] if len(y) == 4 else None)
    return out


def original_layers(results, zoo):
    """(network, its convolution weight bytes, profiled layer, weight bytes, output positions)
    of every layer of the original networks of a `zoo_time.py --profile` run's `results`."""
    for r in results:
        layers = ((r.get("profile") or {}).get("original") or {}).get("layers")
        if not layers:
            continue
        facts = conv_facts(os.path.join(zoo, r["file"]))
        size = sum(b for b, _ in facts.values())
        for lay in layers:
            wb, positions = facts.get(lay["layer"], (0, None))
            yield r["model"], size, lay, wb, positions


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("results")
    ap.add_argument("zoo")
    ap.add_argument("--min-weights-bytes", type=float, default=200e3)
    ap.add_argument("--network-bytes", type=float, default=32e6)
    ap.add_argument("--below", action="store_true", help="the networks at or below --network-bytes instead")
    ap.add_argument("--by-network", action="store_true", help="also per network: its weights and its layers' median")
    args = ap.parse_args()
    by, sizes = collections.defaultdict(list), {}
    for model, size, lay, wb, positions in original_layers(json.load(open(args.results))["results"], args.zoo):
        sizes[model] = size
        if (size <= args.network_bytes) != args.below or wb < args.min_weights_bytes or positions is None:
            continue
        bucket = next(b for b in BUCKETS if positions <= b)
        excess_ns = (lay["measured_ms"] - lay["modeled_ms"]) * 1e6
        by[bucket].append((model, excess_ns / (wb / 4), lay["rel_error"]))
    print("| output positions | layers | networks | excess ns per weight, median | model error, median |")
    print("|---|---|---|---|---|")
    lo = 0
    for b in BUCKETS:
        v = by.get(b, [])
        if v:
            nets = ", ".join(sorted({x[0] for x in v}))
            print(f"| {lo + 1}–{b if b != math.inf else ''} | {len(v)} | {nets} | {np.median([x[1] for x in v]):.3f} "
                  f"| {100 * np.median([x[2] for x in v]):+.0f} % |")
        lo = b
    if args.by_network:
        print("\n| network | weights | positions | layers | excess ns per weight, median |\n|---|---|---|---|---|")
        for b in BUCKETS[:2]:
            nets = sorted({x[0] for x in by.get(b, [])}, key=lambda n: sizes[n])
            for n in nets:
                v = [x[1] for x in by[b] if x[0] == n]
                print(f"| {n} | {sizes[n] / 1e6:.1f} MB | up to {b} | {len(v)} | {np.median(v):.3f} |")


if __name__ == "__main__":
    main()
