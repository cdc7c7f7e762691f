#!/usr/bin/env python3
"""The time of an activation that onnxruntime fuses into the convolution before it, measured in
context and fitted, then added to a time table as `activation_<name>` entries.

    bench/.venv/bin/python bench/calibrate_activation.py \\
        --table src/time/onnxruntime-x86_64.json [--threads 1,all] [--pin 1] [--budget 0.3] \\
        [--raw bench/results-DATE-calibration-activation.json]

A 1-thread sweep pins this process to CPU `--pin` (as `taskset -c 1` would); a sweep of more
threads unpins it to every CPU (calibrate.py's rule; other work on the machine is not
controlled, and the runs it slows down are dropped as calibrate.py drops them).

onnxruntime (1.32, CPU, every graph optimisation) runs `Relu`, `Clip`, `LeakyRelu`,
`HardSigmoid`, `Sigmoid`, `Tanh` and `x·hardsigmoid(x)` after a convolution inside that
convolution's kernel (its profile shows one `Conv` event). Only `Relu` is applied in the
kernel's registers; the others are a pass over the output after it (MLAS's activation), which
the convolution entries of calibrate.py do not contain (their target has no activation). In the
zoo's mobile networks that pass is 15-45 % of a depthwise or expanding 1x1 convolution's time.

What is measured. For each convolution shape, calibrate.py's context (`pre` 1x1 Conv + Relu ->
target -> `post` 1x1 Conv) with the target alone and with each activation after it, measured
interleaved in one group (calibrate.measure_group, which adds its sentinel). An activation's
time is the target's median time with it less the target's median time without it. Shapes:
depthwise 3x3 and 5x5 (stride 1 and 2), 1x1 and dense 3x3 convolutions with channels on and off
the 16-channel block, outputs from about 3,000 to 1.2 million values.

Fit, per activation: `t_ns = a + b*out_elems`, non-negative least squares of the error relative
to the convolution's own time (the time the activation is added to), one entry for both channel
alignments (the pass runs on the blocked output either way; the probe before this script found
no difference by class or alignment). The entries replace the table's `activation_*` entries
of that thread count; the raw rows go to --raw.
"""
import argparse
import datetime
import json
import os
import sys
import tempfile

import numpy as np
from onnx import TensorProto, helper

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import calibrate  # noqa: E402

# Table name suffix -> how the activation is written after the target convolution.
ACTIVATIONS = ["relu", "clip", "leaky_relu", "hard_sigmoid", "hard_swish", "sigmoid", "tanh"]
# (C_in, N, group, k, stride, H): depthwise, 1x1 and dense 3x3; channels on and off the block.
SHAPES = [
    (32, 32, 32, 3, 1, 112), (96, 96, 96, 3, 2, 112), (144, 144, 144, 3, 1, 56), (144, 144, 144, 3, 2, 56),
    (192, 192, 192, 3, 1, 28), (384, 384, 384, 3, 1, 14), (576, 576, 576, 3, 1, 14), (960, 960, 960, 3, 1, 7),
    (120, 120, 120, 5, 1, 28), (672, 672, 672, 5, 2, 14), (88, 88, 88, 3, 1, 28), (200, 200, 200, 3, 1, 14),
    (16, 96, 1, 1, 1, 112), (24, 144, 1, 1, 1, 56), (64, 384, 1, 1, 1, 14), (160, 960, 1, 1, 1, 7),
    (40, 120, 1, 1, 1, 28), (96, 576, 1, 1, 1, 14), (48, 200, 1, 1, 1, 28), (320, 1280, 1, 1, 1, 7),
    (64, 64, 1, 3, 1, 56), (128, 128, 1, 3, 1, 28), (40, 88, 1, 3, 1, 28), (256, 256, 1, 3, 1, 14),
]


def activation(name, src, nodes, inits):
    """Appends activation `name` reading `src`; returns its output."""
    out = "target_act"
    if name == "clip":
        inits += [helper.make_tensor("clip_lo", TensorProto.FLOAT, [], [0.0]),
                  helper.make_tensor("clip_hi", TensorProto.FLOAT, [], [6.0])]
        nodes.append(helper.make_node("Clip", [src, "clip_lo", "clip_hi"], [out], name=out))
    elif name == "hard_swish":
        nodes += [helper.make_node("HardSigmoid", [src], ["target_hs"], name="target_hs", alpha=1 / 6, beta=0.5),
                  helper.make_node("Mul", [src, "target_hs"], [out], name=out)]
    else:
        op = {"relu": "Relu", "leaky_relu": "LeakyRelu", "hard_sigmoid": "HardSigmoid", "sigmoid": "Sigmoid",
              "tanh": "Tanh"}[name]
        nodes.append(helper.make_node(op, [src], [out], name=out))
    return out


def conv_model(s):
    """calibrate.py's conv model with `s["act"]` (if any) after the target."""
    inits, nodes = calibrate.pre_nodes(s["C_in"])
    inits += [calibrate.weight("target_w", [s["N"], s["C_in"] // s["group"], s["kh"], s["kw"]]),
              calibrate.weight("target_b", [s["N"]])]
    ph, pw = s["kh"] // 2, s["kw"] // 2
    nodes.append(helper.make_node("Conv", ["pre", "target_w", "target_b"], ["target"], name="target",
                                  group=s["group"], kernel_shape=[s["kh"], s["kw"]], strides=[s["stride"]] * 2,
                                  pads=[ph, pw, ph, pw]))
    src = activation(s["act"], "target", nodes, inits) if s.get("act") else "target"
    calibrate.conv_1x1("post", src, s["N"], 16, inits, nodes)
    return calibrate.finish(nodes, inits, s["C_in"], s["H"], s["W"], ["post"])


def sweep(threads, budget, tmp):
    """One row per (shape, activation): the activation's time and the convolution's."""
    calibrate.conv_model = conv_model  # measure_group builds its models with it
    rows = []
    for k, (c, n, g, kk, s, h) in enumerate(SHAPES):
        base = calibrate.conv_spec(c, n, g, kk, kk, s, h)
        specs = [base] + [dict(base, act=a) for a in ACTIVATIONS]
        # At several threads, the runs slowed by other work on the machine are dropped (as calibrate.py does).
        got = calibrate.measure_group(specs, threads, budget, tmp, 100 * k, filter_runs=threads > 1)
        alone = got[0]
        fused = all(len(r["events"]) == len(alone["events"]) for r in got[1:len(specs)])
        for r in got[1:len(specs)]:
            rows.append({"act": r["act"], "class": base["class"], "C_in": c, "N": n, "group": g, "k": kk, "stride": s,
                         "H": h, "out_elems": base["out_elems"], "conv_ns": alone["median_ns"],
                         "with_ns": r["median_ns"], "ns": r["median_ns"] - alone["median_ns"], "fused": fused,
                         "events": r["events"], "threads": threads})
        print(f"{base['class']:10} {c}->{n} k{kk} s{s} {h}: conv {alone['median_ns'] / 1e3:.1f} us, "
              + ", ".join(f"{r['act']} {r['ns'] / 1e3:+.1f}" for r in rows[-len(ACTIVATIONS):]), flush=True)
    return rows


def entry(act, rows):
    """`t = a + b*out_elems`, error relative to the convolution's time, non-negative."""
    X = np.array([[1.0, r["out_elems"]] for r in rows])
    t = np.array([r["ns"] for r in rows])
    w = 1.0 / np.array([r["conv_ns"] for r in rows])
    coef = calibrate.nnls(X * w[:, None], t * w)
    resid = (X @ coef - t) * w
    print(f"activation_{act}: coef {[float(f'{c:.6g}') for c in coef]}, {len(rows)} rows, error relative to the "
          f"conv: median {np.median(np.abs(resid)):.3f}, max {np.abs(resid).max():.3f}")
    return {"op": f"activation_{act}", "aligned": None, "features": ["one", "out_elems"],
            "coef": [float(f"{c:.6g}") for c in coef], "rows": len(rows),
            "median_rel_conv_err": round(float(np.median(np.abs(resid))), 4),
            "max_rel_conv_err": round(float(np.abs(resid).max()), 4)}


def entries(rows):
    """One entry per activation, from the rows of one thread count."""
    return [entry(a, [r for r in rows if r["act"] == a]) for a in ACTIVATIONS]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--table", required=True)
    ap.add_argument("--threads", default="1")
    ap.add_argument("--budget", type=float, default=0.3, help="seconds of timed runs per model")
    ap.add_argument("--pin", type=int, default=1, help="CPU for 1-thread sweeps (-1: no pinning)")
    ap.add_argument("--raw", default=os.path.join(HERE, f"results-{datetime.date.today()}-calibration-activation.json"))
    ap.add_argument("--refit", action="store_true",
                    help="no measuring: fit the rows of --raw and replace those entries in --table")
    args = ap.parse_args()
    table = json.load(open(args.table))
    if args.refit:
        return calibrate.refit_into(table, args, "activation_command", entries)
    tmp = tempfile.mkdtemp()
    all_rows = []
    for threads in calibrate.thread_counts(args.threads):
        calibrate.pin(threads, args.pin)
        rows = sweep(threads, args.budget, tmp)
        all_rows += rows
        calibrate.replace_entries(table, threads, entries(rows))
    calibrate.save_table_and_raw(args.table, table, "activation_command", args.raw, all_rows,
                                 machine=calibrate.machine())


if __name__ == "__main__":
    main()
