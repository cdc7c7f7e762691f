#!/usr/bin/env python3
"""The time model's matrix products: onnxruntime `Gemm` (a PyTorch `Linear` at batch 1:
`[1, k] x [n, k]^T + bias`) and `MatMul` with a constant right side (`[1, m, k] x [k, n]`, as a
ConvNeXt block's MLP exports), timed and fitted, then added to a time table as `gemv` (one row)
and `matmul` entries.

    bench/.venv/bin/python bench/calibrate_matmul.py --table src/time/onnxruntime-x86_64.json \\
        [--threads 1,all] [--budget 1.0] [--raw bench/results-DATE-calibration-matmul.json]

Each shape is one model holding the product alone (CPU, ORT_ENABLE_ALL, sequential, inter-op 1,
intra-op threads 1 or every core; a 1-thread sweep is pinned to CPU 1 by the caller, e.g.
`taskset -c 1`). Its time is the median wall time of repeated runs minus the median wall time of
a model holding one `Identity` of the same input (the per-run overhead), measured alternately.
Before every timed run a third session runs a product with 64 MiB of weights (twice the
reference machine's L3), so the product's weights come from memory, as in a network, where the
other layers pass through the caches between two runs of it: a `Linear` layer at batch 1 timed
alone keeps its weights in cache and runs 4-6x faster than inside the zoo's networks (1280 x
1000: 68 us alone, 249-262 us flushed, 252-336 us in mobilenet_v2 and efficientnet_b0).
`--warm` measures without the flush.
A product of one row reads every weight once: its time follows the weight count, with a cliff
where the weights stop fitting in the cache between runs. The fit is a non-negative least
squares on the features `one, macs, in_elems, out_elems, weights, weights_over_cache` (in = m·k,
out = m·n, weights = k·n, weights_over_cache = weights beyond 2^22 elements, src/time/mod.rs
CACHED_WEIGHTS) minimising relative error, as bench/calibrate.py does for convolutions; the
entries replace any of the table's `gemv`/`matmul` entries with that thread count.
"""
import argparse
import datetime
import json
import os
import shlex
import sys
import time

import numpy as np
import onnxruntime as ort
from onnx import TensorProto, helper

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from calibrate import nnls, refit_into, replace_entries, thread_counts  # noqa: E402  (the same solver as the convolution fits)
from ortutil import session  # noqa: E402

FEATURES = ["one", "macs", "in_elems", "out_elems", "weights", "weights_over_cache"]
# Weight elements kept in cache between runs: src/time/mod.rs CACHED_WEIGHTS (16 MiB of f32).
CACHED_WEIGHTS = 1 << 22

# (m, k, n): linear layers of the zoo's classifiers and of transformer-style MLPs, and around.
SHAPES = [
    (1, 512, 1000), (1, 1024, 1000), (1, 1280, 1000), (1, 2048, 1000), (1, 576, 1024),
    (1, 1024, 1024), (1, 4096, 1000), (1, 4096, 4096), (1, 9216, 4096), (1, 25088, 4096),
    (1, 256, 256), (1, 128, 10), (1, 768, 768), (1, 3072, 768), (1, 2048, 2048), (1, 12544, 1024),
    (3136, 96, 384), (3136, 384, 96), (784, 192, 768), (784, 768, 192), (196, 384, 1536),
    (196, 1536, 384), (49, 768, 3072), (49, 3072, 768), (64, 512, 512), (16, 1024, 1024),
]


def model(m, k, n, gemm, rng):
    w = (rng.standard_normal((n, k) if gemm else (k, n)) / np.sqrt(k)).astype(np.float32)
    inits = [helper.make_tensor("W", TensorProto.FLOAT, w.shape, w.tobytes(), raw=True)]
    if gemm:
        inits.append(helper.make_tensor("B", TensorProto.FLOAT, [n], np.zeros(n, np.float32).tobytes(), raw=True))
        node = helper.make_node("Gemm", ["x", "W", "B"], ["y"], transB=1)
        shape_in, shape_out = [1, k], [1, n]
    else:
        node = helper.make_node("MatMul", ["x", "W"], ["y"])
        shape_in, shape_out = [1, m, k], [1, m, n]
    g = helper.make_graph([node], "p", [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape_in)],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, shape_out)], inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString(), shape_in


def identity(shape):
    g = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "i",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, shape)])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString()


def flusher(threads, rng):
    """A function running a product with 64 MiB of weights: it evicts every cache's data, as a
    network's other layers do."""
    bytes_, _ = model(1, 4096, 4096, True, rng)
    sess, x = session(bytes_, threads), {"x": np.ones([1, 4096], np.float32)}
    return lambda: sess.run(None, x)


def measure(m, k, n, threads, budget, rng, flush=None):
    bytes_, shape = model(m, k, n, m == 1, rng)
    s, e = session(bytes_, threads), session(identity(shape), threads)
    x = rng.standard_normal(shape).astype(np.float32)
    for sess in (s, e, s, e):
        sess.run(None, {"x": x})
    ts, te = [], []
    start = time.perf_counter()
    while time.perf_counter() - start < budget or len(ts) < 20:
        for sess, out in ((s, ts), (e, te)):
            if flush:
                flush()
            t = time.perf_counter()
            sess.run(None, {"x": x})
            out.append(time.perf_counter() - t)
    ns = (np.median(ts) - np.median(te)) * 1e9
    return {"m": m, "k": k, "n": n, "op": "Gemm" if m == 1 else "MatMul", "threads": threads, "flushed": bool(flush),
            "median_ns": float(max(ns, 1.0)), "overhead_ns": float(np.median(te) * 1e9), "runs": len(ts),
            "macs": m * k * n, "in_elems": m * k, "out_elems": m * n, "weights": k * n,
            "weights_over_cache": max(0, k * n - CACHED_WEIGHTS)}


def fit(rows):
    X = np.array([[1.0 if f == "one" else float(r[f]) for f in FEATURES] for r in rows])
    t = np.array([r["median_ns"] for r in rows])
    coef = nnls(X / t[:, None], np.ones(len(rows)))
    rel = np.abs(X @ coef - t) / t
    return coef, float(np.median(rel)), float(rel.max())


def entries(sweep):
    """The `gemv` (m = 1) and `matmul` entries fitted from the rows of one thread count."""
    out = []
    for op, part in (("gemv", [r for r in sweep if r["m"] == 1]), ("matmul", [r for r in sweep if r["m"] > 1])):
        coef, med, mx = fit(part)
        out.append({"op": op, "aligned": None, "features": FEATURES, "coef": [float(f"{c:.6g}") for c in coef],
                    "rows": len(part), "median_rel_err": round(med, 4), "max_rel_err": round(mx, 4)})
        print(f"{op}, {part[0]['threads']} thread(s): coef {out[-1]['coef']}, median rel err {med:.3f}, max {mx:.3f}")
        for r in part:
            pred = sum(c * (1.0 if f == "one" else r[f]) for c, f in zip(coef, FEATURES))
            print(f"  m={r['m']:5} k={r['k']:6} n={r['n']:5}: {r['median_ns'] / 1e3:9.1f} us, "
                  f"model {pred / 1e3:9.1f} us")
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--table", required=True)
    ap.add_argument("--threads", default="1,all")
    ap.add_argument("--budget", type=float, default=1.0, help="seconds of timed runs per shape")
    ap.add_argument("--raw", default=os.path.join(HERE, f"results-{datetime.date.today()}-calibration-matmul.json"))
    ap.add_argument("--warm", action="store_true", help="no cache flush before runs (the product alone, cached)")
    ap.add_argument("--refit", action="store_true",
                    help="no measuring: fit the rows of --raw and replace those entries in --table")
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    table = json.load(open(args.table))
    if args.refit:
        return refit_into(table, args, "matmul_command", entries)
    rows = []
    for threads in thread_counts(args.threads):
        flush = None if args.warm else flusher(threads, rng)
        sweep = [measure(m, k, n, threads, args.budget, rng, flush) for (m, k, n) in SHAPES]
        rows += sweep
        replace_entries(table, threads, entries(sweep))
    table["matmul_command"] = " ".join(shlex.quote(a) for a in [sys.executable] + sys.argv)
    with open(args.table, "w") as f:
        json.dump(table, f, indent=1)
    with open(args.raw, "w") as f:
        json.dump({"date": datetime.datetime.now().isoformat(timespec="seconds"), "onnxruntime": ort.__version__,
                   "command": " ".join(shlex.quote(a) for a in [sys.executable] + sys.argv), "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
