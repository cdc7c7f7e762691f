#!/usr/bin/env python3
"""How much of one convolution's weights onnxruntime reads from memory, against how many other
weights the network touches between two of its runs: a designed probe for the residency part
of a weight-streaming term (BENCHMARKS.md, "The time model per layer, in context").

    taskset -c 1 bench/.venv/bin/python bench/residency_probe.py [--target C,N,k,H ...]
        [--filler-mb 0,1,2,4,8,16,32,64] [--filler-channels 256] [--runs 100] [--threads 1]

The model: x [1, C, H, H] -> 1x1 Conv+Relu (C->C) -> the target k x k Conv (C->N, pads k//2)
-> a chain of 1x1 Conv+Relu "filler" layers of --filler-channels channels on the same H x H
map, as many as hold the given megabytes of f32 weights -> output. Between two runs of the
target, the filler's weights pass through the caches; its maps stay small, so it adds weights,
not activations. The target's kernel time is read from onnxruntime's profiler (median over
--runs runs after 20 dropped, every graph optimisation, as bench/zoo_time.py profiles). Printed
per filler size: the network's convolution weights, the target's time, and its excess over the
no-filler run per target weight (the flushed `gemv` entry costs 0.203 ns per weight).
"""
import argparse
import os
import sys
import tempfile

import numpy as np
from onnx import helper

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import calibrate  # noqa: E402
from ortutil import grouped_median, session  # noqa: E402


def model(c, n, k, h, filler_c, filler_layers):
    inits, nodes = calibrate.pre_nodes(c)
    inits += [calibrate.weight("target_w", [n, c, k, k]), calibrate.weight("target_b", [n])]
    nodes.append(helper.make_node("Conv", ["pre", "target_w", "target_b"], ["target"], name="target",
                                  kernel_shape=[k, k], pads=[k // 2] * 4))
    src, width = "target", n
    for i in range(filler_layers):
        calibrate.conv_1x1(f"fill{i}", src, width, filler_c, inits, nodes)
        nodes.append(helper.make_node("Relu", [f"fill{i}"], [f"fill{i}_r"], name=f"fill{i}_relu"))
        src, width = f"fill{i}_r", filler_c
    calibrate.conv_1x1("post", src, width, 16, inits, nodes)
    weights = sum(int(np.prod(t.dims)) for t in inits if len(t.dims) == 4)
    return calibrate.finish(nodes, inits, c, h, h, ["post"]), weights


def target_us(blob, threads, runs):
    tmp = tempfile.mkdtemp()
    sess = session(blob, threads, profile_prefix=os.path.join(tmp, "p"))
    x = np.random.default_rng(0).standard_normal(sess.get_inputs()[0].shape).astype(np.float32)
    for _ in range(20 + runs):
        sess.run(None, {"x": x})
    path = sess.end_profiling()
    per_run, _ = calibrate.parse_profile(path, 20)
    os.remove(path)
    durs = [sum(e[2] for e in run if e[0].startswith("target") and e[1] == "Conv") for run in per_run]
    return grouped_median(durs)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--target", action="append", default=[], help="C,N,k,H (default 256,256,3,7 and 128,128,3,4)")
    ap.add_argument("--filler-mb", default="0,1,2,4,8,16,32,64")
    ap.add_argument("--filler-channels", type=int, default=256)
    ap.add_argument("--runs", type=int, default=100)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    targets = args.target or ["256,256,3,7", "128,128,3,4"]
    fc = args.filler_channels
    print(f"# {calibrate.command_line()}")
    print("| target | filler MB | network conv weights MB | target us | excess us | excess ns per target weight |")
    print("|---|---|---|---|---|---|")
    for t in targets:
        c, n, k, h = (int(v) for v in t.split(","))
        tw = n * c * k * k
        base = None
        for mb in (float(v) for v in args.filler_mb.split(",")):
            layers = int(round(mb * 1e6 / (4 * fc * fc)))
            blob, weights = model(c, n, k, h, fc, layers)
            us = target_us(blob, args.threads, args.runs)
            base = us if base is None else base
            print(f"| {c}->{n} {k}x{k} at {h}x{h} | {mb:g} | {4 * weights / 1e6:.1f} | {us:.1f} | {us - base:+.1f} "
                  f"| {(us - base) * 1e3 / tw:+.3f} |", flush=True)


if __name__ == "__main__":
    main()
