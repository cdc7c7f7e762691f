#!/usr/bin/env python3
"""Whole factored layouts timed in context against the time model: one 3x3 convolution (C -> N on
an H x H map, pads 1) between a 1x1 Conv+Relu (C -> C) and a 1x1 Conv (N -> 16), the context of
bench/calibrate.py, dense and rewritten by `dac onnx` into each asked scheme, rank and layout.

    bench/.venv/bin/python bench/layout_probe.py --size 64,64,224 [--size C,N,H ...]
        [--variant dac:sum:4 --variant spatial::32 ...] [--runs 20] [--dac target/release/dac]
        [--time-table TABLE.json] [--out bench/results-DATE-layout-probe.json]

A variant is SCHEME:LAYOUT:RANK (`dac`, `decoupled`, `spatial`, `channel`; LAYOUT empty for the
schemes with one). Each model runs in onnxruntime with its profiler as bench/zoo_time.py
--profile runs one (1 thread, every graph optimisation, one seeded input, an unprofiled session
alternating with it): the layer's measured time is the median over runs of its nodes' kernel
times plus the reorders they cause; its modeled time is the `time_before_ms` (dense) or
`time_after_ms` (rewritten) of `dac onnx --json`, with its default table for this CPU unless
--time-table. The calibration times one node at a time; here a layout's nodes run together, as
in a rewritten network (a sum layout's branches each read the layer's input again and add into
one output). Prints one line per model and writes every row to --out.
"""
import argparse
import datetime
import json
import os
import shlex
import sys
import tempfile

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from ortutil import machine  # noqa: E402
from zoo import run_dac, seeded_input  # noqa: E402
from zoo_time import profile_model  # noqa: E402

ROOT = os.path.dirname(HERE)


def probe_model(c, n, h, rng):
    """The probe network as ONNX: pre (1x1 C->C, Relu), "target" (3x3 C->N, Relu), post (1x1 N->16)."""
    def init(name, shape, fan_in):
        return numpy_helper.from_array((rng.standard_normal(shape) / np.sqrt(fan_in)).astype(np.float32), name)
    inits = [init("w0", (c, c, 1, 1), c), init("w1", (n, c, 3, 3), 9 * c),
             numpy_helper.from_array(np.zeros(n, np.float32), "b1"), init("w2", (16, n, 1, 1), n)]
    nodes = [helper.make_node("Conv", ["x", "w0"], ["a"], name="pre"),
             helper.make_node("Relu", ["a"], ["b"], name="pre_relu"),
             helper.make_node("Conv", ["b", "w1", "b1"], ["c"], name="target", pads=[1, 1, 1, 1], kernel_shape=[3, 3]),
             helper.make_node("Relu", ["c"], ["d"], name="target_relu"),
             helper.make_node("Conv", ["d", "w2"], ["y"], name="post")]
    graph = helper.make_graph(nodes, "layout_probe", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, c, h, h])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 16, h, h])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def variant_flags(text):
    scheme, layout, rank = text.split(":")
    flags = ["--rank", rank, "--scheme", scheme, "--layers", "target"]
    return flags + (["--layout", layout] if layout else [])


def measure(args, src, x, name, flags, rewritten, work):
    """(modeled ms, measured ms, profile) of the target layer of `src` or of its rewrite."""
    out = os.path.join(work, f"{name}.onnx")
    rep, _, err = run_dac(args.dac, src, out, flags + args.dac_args)
    if err:
        raise RuntimeError(err)
    prof = profile_model(out if rewritten else src, rep, rewritten, x, args.runs, None, work, name)
    layer = next(l for l in prof["layers"] if l["layer"] == "target")
    return layer, prof


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", action="append", required=True, help="C,N,H")
    ap.add_argument("--variant", action="append", default=None, help="SCHEME:LAYOUT:RANK (default dac:sum:2,4,6)")
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--dac", default=os.path.join(ROOT, "target", "release", "dac"))
    ap.add_argument("--time-table", default=None)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    args.dac_args = ["--time-table", args.time_table] if args.time_table else []
    variants = args.variant or ["dac:sum:2", "dac:sum:4", "dac:sum:6"]
    rng = np.random.default_rng(0)
    rows = []
    meta = {"date": datetime.datetime.now().isoformat(timespec="seconds"), "command": shlex.join(sys.argv),
            "machine": machine(), "runs": args.runs}
    with tempfile.TemporaryDirectory() as work:
        for size in args.size:
            c, n, h = (int(v) for v in size.split(","))
            src = os.path.join(work, f"probe-{c}-{n}-{h}.onnx")
            onnx.save(probe_model(c, n, h, rng), src)
            x = seeded_input([1, c, h, h])
            dense, _ = measure(args, src, x, "dense", ["--rank", "1", "--layers", "target"], False, work)
            for v in [None] + variants:
                try:
                    layer, prof = (dense, None) if v is None else \
                        measure(args, src, x, v.replace(":", "-"), variant_flags(v), True, work)
                except Exception as e:  # a variant dac refuses (rank too high) is reported, not fatal
                    print(f"C={c} N={n} H={h} {v}: {e}", file=sys.stderr)
                    continue
                row = {"C": c, "N": n, "H": h, "variant": v or "dense", "modeled_ms": layer["modeled_ms"],
                       "measured_ms": layer["measured_ms"], "dense_measured_ms": dense["measured_ms"]}
                if prof:
                    row.update(wall_profiled_ms=prof["wall_profiled_ms"], wall_unprofiled_ms=prof["wall_unprofiled_ms"])
                rows.append(row)
                print(f"C={c:4d} N={n:4d} H={h:4d} {row['variant']:18s} modeled {row['modeled_ms']:8.3f} ms  "
                      f"measured {row['measured_ms']:8.3f} ms  ({row['measured_ms'] / row['modeled_ms']:.2f}x the model, "
                      f"{row['measured_ms'] / dense['measured_ms']:.2f}x dense)", flush=True)
                if args.out:
                    with open(args.out, "w") as f:
                        json.dump({"meta": meta, "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
