#!/usr/bin/env python3
"""Warm or flushed: which calibration context matches a layer's time inside its network?

    taskset -c 1 bench/.venv/bin/python bench/flush_probe.py /work/zoo-full \\
        bench/results-2026-11-29-zoo-time-flushed-table.json [--per-cell 2] [--seed 1]

Takes dense layers of the zoo's networks (originals and layers rewrites left dense) with their
in-network kernel time from a `bench/zoo_time.py --profile` run (kernel only, reorders apart),
at most --per-cell per (class, decade of time) for the dense, 1x1 and depthwise classes, picked
with --seed; rebuilds each as calibrate.py's model (the node between two 1x1 convolutions) and
times it warm (runs back to back) and flushed (a product with 64 MiB of weights before every
run), 40 runs each, its kernel events only. Prints one row per layer and, per context, the
share within 25 % of the in-network time and the median signed and absolute error.
"""
import argparse
import os
import random
import sys
import tempfile

import numpy as np
import onnx
from onnx import shape_inference

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import calibrate  # noqa: E402
from ortutil import grouped_median, session  # noqa: E402


def layers(zoo, results):
    """(spec, in-network kernel ns, model) of every dense layer the profile run measured."""
    import json
    out = []
    for m in json.load(open(results))["results"]:
        g = shape_inference.infer_shapes(onnx.load(os.path.join(zoo, m["model"] + ".onnx"),
                                                   load_external_data=False)).graph
        shape = {v.name: [d.dim_value for d in v.type.tensor_type.shape.dim]
                 for v in list(g.value_info) + list(g.input) + list(g.output)}
        dims = {i.name: list(i.dims) for i in g.initializer}
        nodes = {n.name: n for n in g.node}
        for variant in m.get("profile", {}).values():
            for lay in variant.get("layers", []):
                n = nodes.get(lay["layer"])
                if lay["kind"] == "factored" or n is None or n.op_type != "Conv":
                    continue
                x, y = shape.get(n.input[0]), shape.get(n.output[0])
                if not x or not y or not x[2] or not y[2]:
                    continue
                out.append((spec(n, dims[n.input[1]], x, y), lay["measured_kernel_ms"] * 1e6, m["model"]))
    return out


def spec(n, w, x, y):
    attr = {a.name: a for a in n.attribute}
    group = attr["group"].i if "group" in attr else 1
    stride = attr["strides"].ints[0] if "strides" in attr else 1
    s = calibrate.conv_spec(w[1] * group, w[0], group, w[2], w[3], stride, x[2])
    s.update(H=x[2], W=x[3], Ho=y[2], Wo=y[3], macs=w[0] * w[1] * w[2] * w[3] * y[2] * y[3],
             in_elems=w[1] * group * x[2] * x[3], out_elems=w[0] * y[2] * y[3])
    return s


def timed(model, feeds, flush, tmp, runs=40):
    """Median over runs of the target's kernel events (reorders left out), microseconds."""
    sess = session(model, 1, profile_prefix=os.path.join(tmp, f"p{random.random()}"))
    for _ in range(5):
        sess.run(None, feeds)
    for _ in range(runs):
        if flush:
            flush()
        sess.run(None, feeds)
    path = sess.end_profiling()
    per_run, _ = calibrate.parse_profile(path, 5)
    os.remove(path)
    own = [sum(e[2] for e in calibrate.attribute(ev, "between")[1] if not e[1].startswith("Reorder")) for ev in per_run]
    return grouped_median(own)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("zoo")
    ap.add_argument("results")
    ap.add_argument("--per-cell", type=int, default=2)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    random.seed(args.seed)
    pool = [c for c in layers(args.zoo, args.results) if c[0]["class"] in ("dense", "pointwise", "depthwise")]
    random.shuffle(pool)
    count, pick = {}, []
    for c in pool:
        cell = (c[0]["class"], min(int(np.log10(c[1])), 6))
        if count.get(cell, 0) < args.per_cell:
            count[cell] = count.get(cell, 0) + 1
            pick.append(c)
    flush, tmp = calibrate.flusher(1), tempfile.mkdtemp()
    print("| class | C_in | N | k | stride | H | network | in-network µs | warm µs | flushed µs |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    rows = []
    for s, ns, model in pick:
        x = {"x": np.random.default_rng(0).standard_normal([1, s["C_in"], s["H"], s["W"]]).astype(np.float32)}
        m = calibrate.conv_model(s)
        warm, flushed = timed(m, x, None, tmp), timed(m, x, flush, tmp)
        rows.append((ns / 1e3, warm, flushed))
        print(f"| {s['class']} | {s['C_in']} | {s['N']} | {s['kh']}x{s['kw']} | {s['stride']} | {s['H']} | {model} "
              f"| {ns / 1e3:.1f} | {warm:.1f} | {flushed:.1f} |", flush=True)
    r = np.array(rows)
    for i, name in ((1, "warm"), (2, "flushed")):
        e = (r[:, i] - r[:, 0]) / r[:, 0]
        print(f"{name}: {np.sum(abs(e) <= 0.25)} of {len(e)} within 25 %, median signed {np.median(e):+.1%}, "
              f"median |error| {np.median(abs(e)):.1%}")


if __name__ == "__main__":
    main()
