#!/usr/bin/env python3
"""Calibrate a time cost model of onnxruntime CPU convolutions (and Concat / Add) in context.

    bench/.venv/bin/python bench/calibrate.py --out src/time/onnxruntime-x86_64.json
        [--threads 1,all] [--quick] [--raw bench/results-DATE-calibration.json]
        [--pin 1] [--budget 1.0] [--group 8] [--seed 0] [--flush]
    bench/.venv/bin/python bench/calibrate.py --out TABLE.json --raw RAW.json --refit

Run from the repository root. `--threads` is a comma list of intra-op thread counts ("all" =
every core); the sweeps run in that order. A 1-thread sweep pins this process to CPU `--pin`
(sched_setaffinity, like `taskset -c 1`); a multi-thread sweep unpins it to every CPU (other
work on the machine is not controlled: the JSON records the load average). After each sweep the
fitted table (--out) and every raw measurement (--raw, with machine and command) are rewritten;
tables of other thread counts already in --out are kept.

What is measured. For each grid point a small ONNX model (opset 17, float32, batch 1) is built:

    x -> "pre" (dense 1x1 Conv C_in->C_in + Relu) -> target -> "post" (1x1 Conv N->16) -> y

so that the target runs as inside a real network (pre/post keep onnxruntime in its NCHWc
blocked layout). Targets: single Convs (pads kh//2, kw//2; dilation 1; kernels 3x3, 5x5, 7x7,
11x11, 3x1, 1x3 and 1x1), Concat along channels of r tensors made by r 1x1 Convs ("src*") of the
pre output, and Add of two 1x1 Conv outputs. A fixed sentinel model (dense 64->64 3x3 28x28) is
measured in every group to track drift of the machine's speed.

Conv classes follow the kernel path onnxruntime 1.32 takes on x86-64 (found by inspecting its
optimized graphs; see classify()): group 1 -> "dense" (k > 1) / "pointwise" (1x1) if C_in >= 16
and C_in % 4 == 0 (NCHWc, N and C_in padded to the 16-block), "*_small_cin" if C_in < 16 (NCHWc
with NCHW input), "*_nchw" if C_in >= 16 and C_in % 4 != 0 (plain NCHW Conv with reorders);
group = C_in = N -> "depthwise" if C % 4 == 0 (NCHWc) else "depthwise_nchw"; group = C_in,
N = m*C_in -> "depthwise_multiplier"; other groups -> "grouped_pointwise" (1x1; measured with
group = N, Network Decoupling's summing conv) and "grouped" (k > 1; measured 3x3 with 32 groups).
Those three run NCHW, except groups of whole blocks (C_in/group and N/group multiples of 16),
which run NCHWc and are classed dense/pointwise.

How. onnxruntime CPU, graph_optimization_level ORT_ENABLE_ALL, intra_op_num_threads = threads,
inter_op 1, sequential, with profiling on. Models are measured in interleaved groups of
--group: each session is warmed up, then the group runs in 8 round-robin rounds until each
model has about --budget seconds of runs (between 20 and 1000 runs). With --flush every run
follows a cache flush (a product with 64 MiB of weights, as bench/calibrate_matmul.py does) and
each model runs FLUSH_RUNS = 40 times; the conv fits then gain a term in the weight elements.
Flushed, a node runs as in a network too large for the caches (in the zoo's large networks
within a few % per layer, median); warm, as in one that fits in them (the shipped Fashion-MNIST
networks). The shipped table is warm (BENCHMARKS.md: a flushed table made the small networks'
plans 1.4x faster than claimed, and less accurate). The profile JSON is split
into runs ("model_run" events) after dropping warm-up runs; the target's time in one run is the
sum of the kernel events ("cat": "Node", "*_kernel_time") strictly between the pre Conv's event
and the post Conv's event in execution order, leaving out the "src*" producer Convs: the target
node itself (onnxruntime renames it after its output, e.g. "target_nchwc") plus every
ReorderInput / ReorderOutput it made onnxruntime insert (in-context cost; a reorder that would
also sit between pre and post without the target is counted too). Reported time: median over
runs. Profile durations are whole microseconds, so the median is the interpolated median of
grouped data (m - 0.5 + (n/2 - #below)/#at), which resolves below 1 us.

Add: onnxruntime fuses an Add into one of its producing Convs (the NCHWc Conv's "Sum" input,
4 inputs instead of 3), so it has no event of its own. Model: pre -> src0, src1 (identical 1x1
Convs C->C) -> Add -> post. Per run, its cost is (all events between pre and post) minus the
two producers counted as plain Convs: the unfused producer's time taken twice (paired in the same
run, so the difference is not swamped by run-to-run noise). Unfused, this is the Add event plus
any reorders. Can be slightly negative on tiny tensors.

Busy machine. A multi-thread sweep shares the cores with whatever else runs. Each row therefore
records its group's sentinel time; groups whose sentinel ran > 1.15x the sweep's fastest are
re-measured (--retries) and otherwise left out of the fit. Within a model, a multi-thread sweep
also keeps only the runs whose context time (pre, post and producer kernels of the same run) is
within 1.2x + 2 us of that model's 10th percentile, and reports the median over those
("median_all_runs_ns" keeps the plain median). 1-thread sweeps (pinned) use every run.

Checks printed per sweep: the sum of all kernel events of a run against the wall time of
sess.run (perf_counter) and against the profiler's model_run, and on a few models the wall time
with profiling against without.

Fit (per threads, per class, per aligned = C_in % 16 == 0 and N % 16 == 0): non-negative least
squares (Lawson-Hanson) minimising relative error (rows weighted by 1/t) of
    conv:         t_ns = a + b*M + c*in_elems + d*out_elems (+ e*weights with --flush)
    concat, add:  t_ns = a + b*out_elems
with in_elems = C_in*H*W, out_elems = N*Ho*Wo (concat: r*C*H*W; add: C*H*W), weights =
N*(C_in/group)*kh*kw and M = macs =
N*(C_in/group)*kh*kw*Ho*Wo, except for the NCHWc classes (dense, pointwise, depthwise,
*_small_cin) where M = macs_padded (channels rounded up to 16 as NCHWc computes them; see
macs_padded()), and depthwise_nchw, which has another term f*macs_strided (macs if stride > 1,
else 0). Each table entry names its features. A cell of fewer than 6 rows is merged with
the other alignment of its class ("aligned": null, also used for classes that are never
aligned). Cells whose median relative error exceeds 15 % are also fitted with extra features
(raw file, "fit_experiments"; not used in the table). --refit redoes the fit from a raw file.
"""
import argparse
import datetime
import json
import math
import os
import shlex
import sys
import tempfile
import time

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
import ortutil  # noqa: E402
from ortutil import grouped_median, session  # noqa: E402
MIN_RUNS, MAX_RUNS, WARMUP, ROUNDS = 20, 1000, 5, 8
# With --flush (the default): runs per model, each after a cache flush (a product with 64 MiB of
# weights, calibrate_matmul.flusher), so the budget is not spent on flushes of tiny models.
FLUSH_RUNS = 40
CONV_CLASSES = ["dense", "pointwise", "depthwise", "dense_small_cin", "pointwise_small_cin", "dense_nchw",
                "pointwise_nchw", "depthwise_nchw", "depthwise_multiplier", "grouped_pointwise", "grouped"]
# Classes fitted on MACs with channel counts padded as NCHWc computes them (see macs_padded).
PADDED_CLASSES = {"dense", "pointwise", "depthwise", "dense_small_cin", "pointwise_small_cin"}
# Features per conv class (default: one, macs, in_elems, out_elems). depthwise_nchw gets an extra
# MAC term for stride > 1: onnxruntime's NCHW depthwise runs about 3x slower per MAC when strided
# (median relative error 29 % without it, 7 % with it, 1 thread).
CLASS_FEATURES = {c: ["one", "macs_padded", "in_elems", "out_elems"] for c in PADDED_CLASSES}
CLASS_FEATURES["depthwise_nchw"] = ["one", "macs", "in_elems", "out_elems", "macs_strided"]
DEFAULT_CONV_FEATURES = ["one", "macs", "in_elems", "out_elems"]
# Rows measured after a cache flush (--flush) also fit a term in the weight elements, which then
# come from memory.
FLUSHED_EXTRA = ["weights"]
MIN_CELL = 6
NEVER_ALIGNED = {"dense_small_cin", "pointwise_small_cin", "dense_nchw", "pointwise_nchw", "depthwise_nchw"}
# A group whose sentinel ran slower than this times the sweep's fastest is "contended": its rows
# are re-measured (--retries) and, if still contended, left out of the fit.
CONTENDED_RATIO = 1.15


# ---------------------------------------------------------------------------------------------
# Machine


def isa_block():
    """The instruction set onnxruntime's NCHWc kernels use on this CPU and their channel block."""
    flags = ""
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((line for line in f if line.startswith("flags")), "")
    except OSError:
        pass
    if " avx512f" in flags:
        return "avx512", 16
    if " avx2" in flags:
        return "avx2", 8
    return "sse", 4


def machine():
    """`ortutil.machine()` and the instruction set and channel block onnxruntime's NCHWc
    kernels use on this CPU."""
    info = ortutil.machine()
    info["isa"], info["block"] = isa_block()
    return info


# Channels per block of onnxruntime's NCHWc kernels on this CPU (16 with AVX-512, 8 with AVX2):
# the classes and the alignment of the table written here follow it, as its "block" says.
BLOCK = isa_block()[1]


# ---------------------------------------------------------------------------------------------
# Models

_rng = np.random.default_rng(12345)


def weight(name, shape):
    fan_in = int(np.prod(shape[1:])) if len(shape) > 1 else 1
    a = _rng.standard_normal(shape).astype(np.float32) / math.sqrt(max(fan_in, 1))
    return numpy_helper.from_array(a, name)


def finish(nodes, inits, c_in, h, w, outputs):
    g = helper.make_graph(nodes, "calib", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, c_in, h, w])],
                          [helper.make_tensor_value_info(o, TensorProto.FLOAT, None) for o in outputs], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    return m.SerializeToString()


def pre_nodes(c):
    inits = [weight("pre_w", [c, c, 1, 1]), weight("pre_b", [c])]
    nodes = [helper.make_node("Conv", ["x", "pre_w", "pre_b"], ["pre_c"], name="pre"),
             helper.make_node("Relu", ["pre_c"], ["pre"], name="pre_relu")]
    return inits, nodes


def conv_1x1(name, src, c_in, c_out, inits, nodes):
    inits += [weight(f"{name}_w", [c_out, c_in, 1, 1]), weight(f"{name}_b", [c_out])]
    nodes.append(helper.make_node("Conv", [src, f"{name}_w", f"{name}_b"], [name], name=name))


def conv_model(s):
    inits, nodes = pre_nodes(s["C_in"])
    inits += [weight("target_w", [s["N"], s["C_in"] // s["group"], s["kh"], s["kw"]]), weight("target_b", [s["N"]])]
    ph, pw = s["kh"] // 2, s["kw"] // 2
    nodes.append(helper.make_node("Conv", ["pre", "target_w", "target_b"], ["target"], name="target",
                                  group=s["group"], kernel_shape=[s["kh"], s["kw"]], strides=[s["stride"]] * 2,
                                  dilations=[1, 1], pads=[ph, pw, ph, pw]))
    conv_1x1("post", "target", s["N"], 16, inits, nodes)
    return finish(nodes, inits, s["C_in"], s["H"], s["W"], ["post"])


def concat_model(s):
    r, c = s["r"], s["C"]
    inits, nodes = pre_nodes(c)
    for j in range(r):
        conv_1x1(f"src{j}", "pre", c, c, inits, nodes)
    nodes.append(helper.make_node("Concat", [f"src{j}" for j in range(r)], ["target"], name="target", axis=1))
    conv_1x1("post", "target", r * c, 16, inits, nodes)
    return finish(nodes, inits, c, s["H"], s["W"], ["post"])


def add_model(s):
    c = s["C"]
    inits, nodes = pre_nodes(c)
    for j in range(2):
        conv_1x1(f"src{j}", "pre", c, c, inits, nodes)
    nodes.append(helper.make_node("Add", ["src0", "src1"], ["target"], name="target"))
    conv_1x1("post", "target", c, 16, inits, nodes)
    return finish(nodes, inits, c, s["H"], s["W"], ["post"])


# ---------------------------------------------------------------------------------------------
# Grid


def ceil_block(c):
    return -(-c // BLOCK) * BLOCK


def classify(c_in, n, group, kh, kw):
    """Conv class by the kernel path onnxruntime 1.32 (x86-64, NCHWc) takes, found by inspecting
    its optimized graphs: group 1 runs NCHWc if C_in < 16 (NCHW input, "_small_cin") or
    C_in % 4 == 0, any N (padded to the block); a depthwise conv runs NCHWc iff C % 4 == 0; any
    grouped conv whose groups are whole blocks (C_in/group and N/group multiples of 16) runs NCHWc
    and is classed dense/pointwise; any other grouped conv runs NCHW (im2col + GEMM per group)
    with reorders around it: grouped 1x1 ("grouped_pointwise") and k > 1 ("grouped")."""
    if group == 1:
        base = "pointwise" if kh == kw == 1 else "dense"
        if c_in < BLOCK:
            return base + "_small_cin"
        return base if c_in % 4 == 0 else base + "_nchw"
    if group == c_in == n:
        return "depthwise" if c_in % 4 == 0 else "depthwise_nchw"
    if group == c_in:
        return "depthwise_multiplier"
    if (c_in // group) % BLOCK == 0 and (n // group) % BLOCK == 0:
        # Groups of whole blocks run in the blocked layout (seen: 512 -> 512 in 32 groups of 16
        # channels ran NCHWc; a 4-group 64 -> 64 3x3 ran at the dense rate). src/time/mod.rs
        # ConvClass::of follows the same rule.
        return "pointwise" if kh == kw == 1 else "dense"
    return "grouped_pointwise" if kh == kw == 1 else "grouped"


def conv_spec(c_in, n, group, kh, kw, stride, h):
    cls = classify(c_in, n, group, kh, kw)
    w = h
    ho = (h + 2 * (kh // 2) - kh) // stride + 1
    wo = (w + 2 * (kw // 2) - kw) // stride + 1
    return {"op": "conv", "class": cls, "C_in": c_in, "N": n, "group": group, "kh": kh, "kw": kw,
            "stride": stride, "dilation": 1, "H": h, "W": w, "Ho": ho, "Wo": wo,
            "macs": n * (c_in // group) * kh * kw * ho * wo, "in_elems": c_in * h * w,
            "out_elems": n * ho * wo, "aligned": c_in % BLOCK == 0 and n % BLOCK == 0}


def est_ms(s):
    """Rough single-thread time of the whole model (pre + target + post), to keep models < 30 ms."""
    if s["op"] == "conv":
        ctx = s["C_in"] ** 2 * s["H"] * s["W"] + 16 * s["out_elems"]
        rate = {"dense": 40e6, "pointwise": 40e6, "depthwise": 5e6, "dense_small_cin": 15e6,
                "pointwise_small_cin": 10e6, "dense_nchw": 25e6, "pointwise_nchw": 20e6, "depthwise_nchw": 1.5e6,
                "depthwise_multiplier": 2e6, "grouped": 3e6, "grouped_pointwise": 1e6}[s["class"]]
        return ctx / 40e6 + s["macs"] / rate + (s["in_elems"] + s["out_elems"]) * 2e-6
    if s["op"] == "concat":
        c = s["C"]
        return (c * c * s["H"] * s["W"] * (1 + s["r"]) + 16 * s["out_elems"]) / 40e6 + s["out_elems"] * 4e-6
    c = s["C"]
    return c * c * s["H"] * s["W"] * 3 / 40e6 + s["out_elems"] * 4e-6


SIZES = [7, 14, 28, 56, 112, 224]
MAX_IN_ELEMS = 64 * 224 * 224  # 3.2 M input elements
MAX_MS = 25.0


def ok(s):
    if s["Ho"] < 1 or s["H"] < max(s["kh"], s["kw"]) or est_ms(s) > MAX_MS:
        return False
    if s["in_elems"] > MAX_IN_ELEMS or s["out_elems"] > MAX_IN_ELEMS:
        return False
    if s["stride"] == 4 and s["H"] < 28:
        return False
    return True


def sample(pool, k, rng):
    pool = sorted(pool, key=lambda s: json.dumps(s, sort_keys=True))
    if len(pool) <= k:
        return pool
    idx = rng.choice(len(pool), size=k, replace=False)
    return [pool[i] for i in sorted(idx)]


def stratified(pool, key, quotas, rng):
    """Samples per stratum key(s) and per alignment: quotas[class] = (aligned, unaligned)."""
    out = []
    for kv in sorted({key(s) for s in pool}, key=str):
        part = [s for s in pool if key(s) == kv]
        qa, qu = quotas[part[0]["class"]]
        out += sample([s for s in part if s["aligned"]], qa, rng)
        out += sample([s for s in part if not s["aligned"]], qu, rng)
    return out


def grid(quick, seed):
    rng = np.random.default_rng(seed)
    kernels = [(3, 3), (5, 5), (7, 7), (11, 11), (3, 1), (1, 3)]
    # Channel counts from the brief, plus rank-like counts off the 16-block that NCHWc pads (20,
    # 40, 72, ...), small input counts (NCHW-input path: 3, 4, 8, 12) and counts that are not
    # multiples of 4 (17, 35, 50, 78, 130: onnxruntime falls back to NCHW for C_in of these).
    c_nchwc = [16, 24, 32, 64, 128, 256, 512, 20, 40, 72, 100, 200]
    c_small = [3, 4, 8, 12]
    c_odd = [17, 35, 50, 78, 130]
    cin_set = c_nchwc + c_small + c_odd
    n_set = [16, 24, 32, 64, 128, 256, 512, 8, 20, 40, 72, 100, 200] + c_odd
    q = (lambda full: 1 if quick else full)
    specs = []

    def strides(kh, kw):
        return [1, 2, 4] if (kh, kw) == (11, 11) else [1, 2]

    def by_class_kernel(s):
        return (s["class"], s["kh"], s["kw"])

    pool = [conv_spec(ci, n, 1, kh, kw, st, h) for (kh, kw) in kernels for ci in cin_set for n in n_set
            for st in strides(kh, kw) for h in SIZES]
    specs += stratified([s for s in pool if ok(s)], by_class_kernel,
                        {"dense": (q(24), q(14)), "dense_small_cin": (0, q(6)), "dense_nchw": (0, q(6))}, rng)

    pool = [conv_spec(ci, n, 1, 1, 1, st, h) for ci in cin_set for n in n_set for st in (1, 2) for h in SIZES]
    specs += stratified([s for s in pool if ok(s)], lambda s: (s["class"], s["stride"]),
                        {"pointwise": (q(22), q(16)), "pointwise_small_cin": (0, q(10)), "pointwise_nchw": (0, q(10))}, rng)

    dw_c = [3, 8, 16, 24, 32, 64, 96, 128, 256, 512, 1024] + [20, 40, 72, 100] + c_odd
    pool = [conv_spec(c, c, c, kh, kw, st, h) for (kh, kw) in kernels for c in dw_c
            for st in strides(kh, kw) for h in SIZES]
    specs += stratified([s for s in pool if ok(s)], by_class_kernel,
                        {"depthwise": (q(14), q(9)), "depthwise_nchw": (0, q(5))}, rng)

    pool = [conv_spec(c, m * c, c, k, k, st, h) for k in (3, 7)
            for c in [3, 8, 16, 24, 32, 64, 128, 256] for m in (2, 4, 8) for st in (1, 2) for h in (14, 28, 56, 112)]
    specs += stratified([s for s in pool if ok(s)], lambda s: s["kh"], {"depthwise_multiplier": (q(15), q(12))}, rng)

    # Network Decoupling's summing conv: 1x1, group = N, T inputs per group.
    pool = [conv_spec(n * t, n, n, 1, 1, st, h) for n in [8, 16, 20, 24, 32, 64, 128, 256]
            for t in (2, 4, 8) for st in (1, 2) for h in (7, 14, 28, 56, 112)]
    pool = [s for s in pool if ok(s) and s["C_in"] <= 1024]
    specs += sample([s for s in pool if s["aligned"]], q(22), rng)
    specs += sample([s for s in pool if not s["aligned"]], q(14), rng)
    # ResNeXt-like: 3x3, 32 groups.
    pool = [conv_spec(ci, n, 32, 3, 3, st, h) for ci in (64, 128, 256, 512) for n in (64, 128, 256, 512)
            for st in (1, 2) for h in (7, 14, 28, 56)]
    specs += sample([s for s in pool if ok(s)], q(24), rng)
    # Depthwise layers of mobile networks, many channels on small maps (the corner the stratified
    # sample above visits least), and the kx1 / 1xk depthwise factors spatial SVD makes of them.
    pool = [conv_spec(c, c, c, k, k, st, h) for k in (3, 5) for c in (144, 240, 384, 480, 576, 672, 960, 1152)
            for st in (1, 2) for h in (7, 14, 28)]
    specs += sample([s for s in pool if ok(s)], q(24), rng)
    pool = [conv_spec(c, c, c, kh, kw, 1, h) for (kh, kw) in ((5, 1), (1, 5), (7, 1), (1, 7))
            for c in (96, 192, 384, 768) for h in (7, 14, 28, 56)]
    specs += sample([s for s in pool if ok(s)], q(16), rng)
    # Narrow groups (8 or 16 channels per group, RegNet-like) and their 3x1 / 1x3 factors.
    pool = [conv_spec(c, c, c // gw, kh, kw, st, h) for gw in (8, 16) for c in (64, 128, 240, 400, 512)
            for (kh, kw) in ((3, 3), (3, 1), (1, 3)) for st in (1, 2) for h in (7, 14, 28, 56)]
    specs += sample([s for s in pool if ok(s)], q(30), rng)

    cc = []
    for r in (2, 4, 8, 16):
        for c in (16, 32, 64, 256, 24, 40):
            for h in (7, 14, 28, 56, 112):
                s = {"op": "concat", "class": "concat", "r": r, "C": c, "H": h, "W": h,
                     "out_elems": r * c * h * h, "in_elems": r * c * h * h, "aligned": c % BLOCK == 0}
                if s["out_elems"] <= MAX_IN_ELEMS and est_ms(s) <= MAX_MS:
                    cc.append(s)
    specs += sample([s for s in cc if s["aligned"]], q(45), rng)
    specs += sample([s for s in cc if not s["aligned"]], q(14), rng)

    aa = []
    for c in (16, 24, 32, 64, 128, 256, 512, 40):
        for h in (7, 14, 28, 56, 112):
            s = {"op": "add", "class": "add", "C": c, "H": h, "W": h, "out_elems": c * h * h,
                 "in_elems": 2 * c * h * h, "aligned": c % BLOCK == 0}
            if s["out_elems"] <= MAX_IN_ELEMS and est_ms(s) <= MAX_MS:
                aa.append(s)
    specs += sample(aa, q(40), rng)
    return specs


# ---------------------------------------------------------------------------------------------
# Measurement


def parse_profile(path, skip_runs):
    """Per run (after the first `skip_runs`): list of (name, op, dur_us) kernel events in order."""
    with open(path) as f:
        ev = json.load(f)
    runs = sorted((e["ts"], e["ts"] + e["dur"], e["dur"]) for e in ev
                  if e.get("cat") == "Session" and e.get("name") == "model_run")
    nodes = sorted((e["ts"], e["name"][: -len("_kernel_time")], e.get("args", {}).get("op_name", "?"), e["dur"],
                    len(e.get("args", {}).get("input_type_shape", [])))
                   for e in ev if e.get("cat") == "Node" and e.get("name", "").endswith("_kernel_time"))
    starts = np.array([r[0] for r in runs])
    per = [[] for _ in runs]
    for ts, name, op, dur, nin in nodes:
        i = int(np.searchsorted(starts, ts, side="right")) - 1
        if 0 <= i < len(runs) and ts <= runs[i][1]:
            per[i].append((name, op, dur, nin))
    return per[skip_runs:], [r[2] for r in runs][skip_runs:]


def attribute(events, mode):
    """Target time of one run (us) and the attributed events. Events are (name, op, us, inputs)."""
    i_pre = next((i for i, e in enumerate(events) if e[0].startswith("pre")), None)
    i_post = next((i for i, e in enumerate(events) if e[0].startswith("post")), None)
    if i_pre is None or i_post is None or i_post < i_pre:
        raise RuntimeError(f"pre/post not found in {[e[0] for e in events]}")
    between = events[i_pre + 1:i_post]
    if mode == "add":
        srcs = [e for e in between if e[0].startswith("src")]
        plain = [e[2] for e in srcs if e[3] <= 3]
        if not plain:
            raise RuntimeError(f"no unfused producer in {between}")
        base = sum(plain) + (len(srcs) - len(plain)) * float(np.mean(plain))
        return sum(e[2] for e in between) - base, between
    got = [e for e in between if not e[0].startswith("src")]
    return sum(e[2] for e in got), got


class Unit:
    def __init__(self, spec, model, c_in, mode, threads, tmp, uid):
        self.spec, self.mode = spec, mode
        self.prefix = os.path.join(tmp, f"u{uid}")
        self.sess = session(model, threads, profile_prefix=self.prefix)
        self.x = {"x": np.random.default_rng(uid).standard_normal([1, c_in, spec["H"], spec["W"]]).astype(np.float32)}
        self.walls = []
        self.n = MIN_RUNS

    def run(self, timed=True):
        t = time.perf_counter()
        self.sess.run(None, self.x)
        if timed:
            self.walls.append(time.perf_counter() - t)


def units_for(spec, threads, tmp, uid):
    if spec["op"] == "conv":
        return [Unit(spec, conv_model(spec), spec["C_in"], "between", threads, tmp, uid)]
    if spec["op"] == "concat":
        return [Unit(spec, concat_model(spec), spec["C"], "between", threads, tmp, uid)]
    return [Unit(spec, add_model(spec), spec["C"], "add", threads, tmp, uid)]


SENTINEL = dict(conv_spec(64, 64, 1, 3, 3, 1, 28), sentinel=True)


def measure_group(specs, threads, budget, tmp, uid0, filter_runs=False, flush=None):
    """Measures `specs` interleaved, plus the fixed SENTINEL model (returned last) that tracks
    drift of the machine's speed across groups. With filter_runs (multi-thread sweeps), the median
    is taken over the runs whose context time (all kernel events not attributed to the target:
    pre, post, producers) is within RUN_FILTER of the model's fast runs, which drops runs slowed
    down by other work on the machine (see select_runs). With `flush`, every timed run follows a
    call of it (FLUSH_RUNS runs per model)."""
    specs = list(specs) + [SENTINEL]
    units = []
    for k, s in enumerate(specs):
        units += units_for(s, threads, tmp, uid0 + k)
    for u in units:  # warm-up: WARMUP runs, the last 2 timed to size the run count
        for i in range(WARMUP):
            u.run(timed=i >= WARMUP - 2)
        per = max(min(u.walls), 1e-6)
        u.n = FLUSH_RUNS if flush else int(min(MAX_RUNS, max(MIN_RUNS, budget / per)))
        u.walls = []
    for rnd in range(ROUNDS):
        order = units if rnd % 2 == 0 else units[::-1]
        for u in order:
            for _ in range(-(-u.n // ROUNDS)):
                if flush:
                    flush()
                u.run()
    load = os.getloadavg()[0]
    res = []
    for u in units:
        path = u.sess.end_profiling()
        runs, run_durs = parse_profile(path, WARMUP)
        os.remove(path)
        target, total, ctx, last = [], [], [], None
        for ev in runs:
            t, last = attribute(ev, u.mode)
            target.append(t)
            total.append(sum(e[2] for e in ev))
            ctx.append(total[-1] - sum(e[2] for e in last))
        keep = select_runs(ctx) if filter_runs else list(range(len(target)))
        res.append({
            "target_us": grouped_median([target[i] for i in keep]), "all_runs_us": grouped_median(target),
            "runs_kept": len(keep), "kernels_us": grouped_median(total),
            "model_run_us": grouped_median(run_durs), "wall_us": float(np.median(u.walls)) * 1e6,
            "runs": len(target), "events": [f"{e[0]}:{e[1]}" + ("+sum" if e[3] == 4 and e[1] == "Conv" else "")
                                            for e in (last or [])], "load1": load,
            "all_events": [f"{e[0]}:{e[1]}" for e in runs[-1]] if runs else [],
        })
        u.sess = None
    out = []
    i = 0
    for s in specs:
        r = dict(s, threads=threads, flushed=flush is not None)
        a = res[i]
        i += 1
        r.update({"median_ns": a["target_us"] * 1e3, "runs": a["runs"], "events": a["events"]})
        if filter_runs:
            r.update({"median_all_runs_ns": a["all_runs_us"] * 1e3, "runs_kept": a["runs_kept"]})
        if s["op"] == "conv":
            r["nchwc"] = any(e.startswith("target_nchwc") for e in a["events"])
            r["reorders"] = sum(1 for e in a["events"] if ":Reorder" in e)
        if s["op"] == "add":
            r["fused"] = not any(e.endswith(":Add") for e in a["events"])
        r.update({"kernels_ns": a["kernels_us"] * 1e3, "model_run_ns": a["model_run_us"] * 1e3,
                  "wall_ns": a["wall_us"] * 1e3, "load1": a["load1"], "all_events": a["all_events"]})
        out.append(r)
    return out


RUN_FILTER = (1.2, 2.0)  # keep runs with context <= 1.2 x its 10th percentile + 2 us


def select_runs(ctx):
    """Indices of the runs whose context time is close to the model's fastest runs; all runs if
    fewer than 10 (or a quarter) would be kept."""
    c = np.asarray(ctx, dtype=np.float64)
    if len(c) == 0:
        return []
    limit = RUN_FILTER[0] * np.percentile(c, 10) + RUN_FILTER[1]
    keep = [i for i in range(len(c)) if c[i] <= limit]
    return keep if len(keep) >= max(10, len(c) // 4) else list(range(len(c)))


def profiling_overhead_check(specs, threads, tmp):
    """Wall time per run with profiling against without, interleaved, on a few models."""
    lines = []
    for k, s in enumerate(specs):
        model = conv_model(s)
        a = session(model, threads, profile_prefix=os.path.join(tmp, f"chk{k}"))
        b = session(model, threads)
        x = {"x": np.random.default_rng(k).standard_normal([1, s["C_in"], s["H"], s["W"]]).astype(np.float32)}
        ta, tb = [], []
        for _ in range(WARMUP):
            a.run(None, x); b.run(None, x)
        for i in range(100):
            for sess, ts in (((a, ta), (b, tb)) if i % 2 == 0 else ((b, tb), (a, ta))):
                t = time.perf_counter(); sess.run(None, x); ts.append(time.perf_counter() - t)
        path = a.end_profiling()
        runs, _ = parse_profile(path, WARMUP)
        os.remove(path)
        lines.append({"spec": f"{s['class']} {s['C_in']}->{s['N']} k{s['kh']}x{s['kw']} s{s['stride']} {s['H']}",
                      "wall_profiled_us": float(np.median(ta)) * 1e6, "wall_unprofiled_us": float(np.median(tb)) * 1e6,
                      "kernels_us": grouped_median([sum(e[2] for e in ev) for ev in runs])})
    return lines


# ---------------------------------------------------------------------------------------------
# Fit


def nnls(A, b, tol=1e-12, max_iter=500):
    """Lawson-Hanson non-negative least squares: argmin ||Ax - b|| subject to x >= 0."""
    m, n = A.shape
    x = np.zeros(n)
    passive = np.zeros(n, dtype=bool)
    w = A.T @ (b - A @ x)
    it = 0
    while not passive.all() and np.max(np.where(passive, -np.inf, w)) > tol and it < max_iter:
        it += 1
        j = int(np.argmax(np.where(passive, -np.inf, w)))
        passive[j] = True
        while True:
            z = np.zeros(n)
            z[passive] = np.linalg.lstsq(A[:, passive], b, rcond=None)[0]
            if np.all(z[passive] > tol):
                x = z
                break
            neg = passive & (z <= tol)
            alpha = np.min(x[neg] / (x[neg] - z[neg]))
            x = x + alpha * (z - x)
            passive &= x > tol
            x[~passive] = 0.0
        w = A.T @ (b - A @ x)
    return x


def macs_padded(r):
    """MACs as the NCHWc kernels compute them: group 1: ceil16(N) * C_in' * kh*kw*Ho*Wo with
    C_in' = C_in if C_in < 16 (NCHW-input path, not padded) else ceil16(C_in); depthwise:
    ceil16(C) * kh*kw*Ho*Wo; any other conv: macs."""
    k = r["kh"] * r["kw"] * r["Ho"] * r["Wo"]
    if r["group"] == 1:
        cin = r["C_in"] if r["C_in"] < BLOCK else ceil_block(r["C_in"])
        return ceil_block(r["N"]) * cin * k
    if r["group"] == r["C_in"] == r["N"]:
        return ceil_block(r["N"]) * k
    return r["macs"]


# Elements of one tensor beyond which a node of a factored layout stops reading and writing it
# from cache (src/time/mod.rs CACHED_TENSOR; bench/fit_tensor_term.py).
CACHED_TENSOR = float(1 << 20)

FEATURES = {
    "one": lambda r: 1.0,
    "macs": lambda r: r["macs"],
    "in_elems": lambda r: r["in_elems"],
    "out_elems": lambda r: r["out_elems"],
    "weights": lambda r: r["N"] * (r["C_in"] // r["group"]) * r["kh"] * r["kw"],
    # Experimental features, tried on badly fitted cells only:
    "macs_padded": lambda r: macs_padded(r),
    "out_elems_khkw": lambda r: r["out_elems"] * r["kh"] * r["kw"],
    "macs_strided": lambda r: r["macs"] if r["stride"] > 1 else 0.0,
    "groups": lambda r: r["group"],
    "im2col": lambda r: r["C_in"] * r["kh"] * r["kw"] * r["Ho"] * r["Wo"],
    "unfilled_out": lambda r: (ceil_block(r["N"]) - r["N"]) * r["Ho"] * r["Wo"],
    "unfilled_in": lambda r: (ceil_block(r["C_in"]) - r["C_in"]) * r["H"] * r["W"],
    "in_elems_small_c": lambda r: r["in_elems"] if r["C_in"] < 8 else 0.0,
    # Blocked channel groups times output rows (bench/calibrate_depthwise.py): the depthwise kernel's
    # per-row overhead, which many channels on a small map pay more of per element.
    "channel_rows": lambda r: ceil_block(r["C_in"]) * r["Ho"],
    # Groups times kernel taps times output rows (bench/calibrate_grouped.py): a fixed cost of
    # each group's pass of each tap over a row.
    "group_taps": lambda r: r["group"] * r["kh"] * r["kw"] * r["Ho"],
    "tensor_elems_over_cache": lambda r: max(0.0, r["in_elems"] - CACHED_TENSOR) + max(0.0, r["out_elems"] - CACHED_TENSOR),
}


def fit(rows, features, floor_ns=0.0):
    X = np.array([[FEATURES[f](r) for f in features] for r in rows], dtype=np.float64)
    t = np.array([r["median_ns"] for r in rows], dtype=np.float64)
    wts = 1.0 / np.maximum(np.abs(t), max(floor_ns, 1e-9))
    A = X * wts[:, None]
    scale = np.linalg.norm(A, axis=0)
    scale[scale == 0] = 1.0
    coef = nnls(A / scale, t * wts) / scale
    pred = X @ coef
    rel = np.abs(pred - t) / np.maximum(np.abs(t), max(floor_ns, 1e-9))
    return coef, pred, rel


def fit_tables(rows):
    """{threads: [entries]} and the experiments on badly fitted cells."""
    tables, experiments = {}, []
    # Class from the current rule (so that --refit applies it to older raw files too).
    rows = [dict(r, **{"class": classify(r["C_in"], r["N"], r["group"], r["kh"], r["kw"])}) if r["op"] == "conv" else r
            for r in rows]
    excluded = {}
    for threads in sorted({r["threads"] for r in rows}):
        entries = []
        sn = [r["sentinel_ns"] for r in rows if r["threads"] == threads and r.get("sentinel_ns")]
        if sn:
            limit = CONTENDED_RATIO * min(sn)
            excluded[threads] = sum(1 for r in rows if r["threads"] == threads and (r.get("sentinel_ns") or 0) > limit)
            rows = [r for r in rows if r["threads"] != threads or (r.get("sentinel_ns") or 0) <= limit]
        for cls in CONV_CLASSES + ["concat", "add"]:
            rs = [r for r in rows if r["threads"] == threads and r["class"] == cls and r.get("median_ns") is not None
                  and np.isfinite(r["median_ns"])]
            if not rs:
                continue
            if cls in CONV_CLASSES:
                feats = CLASS_FEATURES.get(cls, DEFAULT_CONV_FEATURES)
                if all(r.get("flushed") for r in rs):
                    feats = feats + FLUSHED_EXTRA
            else:
                feats = ["one", "out_elems"]
            # Add's cost is a difference of two timings and can be ~0 or negative on tiny tensors:
            # weight it by 1/max(t, 1 us) instead of 1/t.
            floor = 1000.0 if cls == "add" else 0.0
            al = [r for r in rs if r["aligned"]]
            un = [r for r in rs if not r["aligned"]]
            if cls in NEVER_ALIGNED:
                cells = [(None, rs, "never aligned by definition of the class")]
            elif len(al) < MIN_CELL or len(un) < MIN_CELL:
                cells = [(None, rs, f"merged: aligned {len(al)} rows, unaligned {len(un)} rows")]
            else:
                cells = [(True, al, None), (False, un, None)]
            for aligned, cr, note in cells:
                coef, pred, rel = fit(cr, feats, floor)
                e = {"op": "conv" if cls in CONV_CLASSES else cls}
                if cls in CONV_CLASSES:
                    e["class"] = cls
                e.update({"aligned": aligned, "features": feats, "coef": [float(f"{c:.6g}") for c in coef],
                          "rows": len(cr), "median_rel_err": round(float(np.median(rel)), 4),
                          "max_rel_err": round(float(np.max(rel)), 4)})
                if note:
                    e["note"] = note
                if floor:
                    e["note"] = (e.get("note", "") + "; " if e.get("note") else "") + \
                        "relative error against max(t, 1000 ns) (t is a difference, near 0 on tiny tensors)"
                entries.append(e)
                if cls in CONV_CLASSES and np.median(rel) > 0.15:
                    experiments += try_features(threads, cls, aligned, cr, feats)
        tables[threads] = entries
    return tables, experiments, excluded


def try_features(threads, cls, aligned, rows, base):
    out = []
    extras = ["macs_padded", "out_elems_khkw", "unfilled_out", "unfilled_in", "groups", "im2col"]
    trials = [base + [f] for f in extras if f not in base] + [base + ["groups", "im2col"]]
    for feats in trials:
        coef, pred, rel = fit(rows, feats)
        out.append({"threads": threads, "class": cls, "aligned": aligned, "features": feats,
                    "coef": [float(f"{c:.6g}") for c in coef], "rows": len(rows),
                    "median_rel_err": round(float(np.median(rel)), 4), "max_rel_err": round(float(np.max(rel)), 4)})
    return out


# ---------------------------------------------------------------------------------------------
# Output


CLASS_DOC = {
    "rule": "group 1: C_in < 16 -> {dense|pointwise}_small_cin; C_in % 4 != 0 -> {dense|pointwise}_nchw; else "
            "dense|pointwise (pointwise = 1x1 kernel). group = C_in = N: C % 4 == 0 -> depthwise, else "
            "depthwise_nchw. group = C_in, N = m*C_in (m > 1): depthwise_multiplier. Other group > 1: "
            "C_in/group and N/group both multiples of 16 -> dense|pointwise (runs blocked, macs_padded = macs), "
            "else grouped_pointwise (1x1) or grouped (k > 1). "
            "aligned = C_in % 16 == 0 and N % 16 == 0; aligned null = entry for both.",
    "why": "onnxruntime's NCHWc transformer (16-channel blocks here) pads N and C_in >= 16 to the block, takes "
           "C_in < 16 as NCHW input, and leaves C_in >= 16 with C_in % 4 != 0, depthwise with C % 4 != 0 and "
           "other grouped convs in NCHW, with ReorderInput/ReorderOutput around them (counted in the time)."}
FEATURE_DOC = {
    "one": "1",
    "macs": "N * (C_in/group) * kh * kw * Ho * Wo",
    "macs_padded": "group 1: ceil16(N) * C_in' * kh*kw*Ho*Wo, C_in' = C_in if C_in < 16 else ceil16(C_in); "
                   "depthwise: ceil16(C) * kh*kw*Ho*Wo (ceil16(x) = x rounded up to a multiple of 16)",
    "macs_strided": "macs if stride > 1 else 0",
    "in_elems": "C_in * H * W (conv input, batch 1)",
    "out_elems": "conv: N * Ho * Wo; concat: total output elements r*C*H*W; add: C*H*W",
    "Ho": "(H + 2*(kh//2) - kh) // stride + 1 (the calibration used pads kh//2, kw//2)",
}


# The ops this script fits; a table's other entries (calibrate_matmul.py's products,
# calibrate_elementwise.py's element operators) and head keys are kept when it is rewritten.
OWN_OPS = {"conv", "concat", "add"}


def write_table(path, meta, tables, extra=None):
    old, old_head = {}, {}
    if os.path.exists(path):
        try:
            with open(path) as f:
                prev = json.load(f)
            old_head = {k: v for k, v in prev.items() if k != "tables"}
            for t in prev.get("tables", []):
                old[t["threads"]] = t
        except (OSError, ValueError, KeyError):
            old, old_head = {}, {}
    for th, entries in tables.items():
        kept = [e for e in old.get(th, {}).get("entries", []) if e.get("op") not in OWN_OPS]
        old[th] = {"threads": th, "note": meta["notes"].get(th, "") + (extra or {}).get(th, ""),
                   "entries": entries + kept}
    # "cpu" is what the crate matches this machine's CPU name against: a table already named for
    # a family this CPU belongs to ("AMD EPYC", "Intel(R) Xeon(R)") keeps that name on a refit or
    # follow-up sweep; "cpu_model" is the model name measured on.
    model = meta["machine"]["cpu"]
    family = old_head.get("cpu")
    cpu = family if family and " ".join(family.lower().split()) in " ".join(model.lower().split()) else model
    head = {"runtime": f"onnxruntime {ort.__version__}", "cpu": cpu, "cpu_model": model, "isa": meta["machine"]["isa"],
            "block": meta["machine"]["block"], "date": meta["date"][:10], "command": meta["command"],
            "units": "ns", "context": "target between a 1x1 Conv+Relu (C_in->C_in) and a 1x1 Conv (N->16); "
            "time = target kernel + layout reorders it causes (onnxruntime profiling, median over runs)",
            "then": meta.get("followups", []),
            "raw": os.path.relpath(meta["raw"], ROOT),
            "classes": CLASS_DOC, "feature_definitions": FEATURE_DOC}
    if not old_head and meta["machine"].get("cpu_family") is not None:
        # A new table names the CPU family number it was measured on: the crate then picks it
        # only on CPUs of that family (one generation: AMD family 25 is Zen 3/4, 26 is Zen 5).
        head["cpu_family"] = meta["machine"]["cpu_family"]
    if meta.get("flush"):
        head["context"] += "; caches flushed (a 64 MiB product) before every run"
    head.update({k: v for k, v in old_head.items() if k not in head})
    lines = ["{"]
    for k, v in head.items():
        lines.append(f"  {json.dumps(k)}: {json.dumps(v)},")
    lines.append('  "tables": [')
    ts = sorted(old)
    for i, th in enumerate(ts):
        t = old[th]
        lines.append(f'    {{"threads": {th}, "note": {json.dumps(t.get("note", ""))}, "entries": [')
        for j, e in enumerate(t["entries"]):
            lines.append("      " + json.dumps(e) + ("," if j + 1 < len(t["entries"]) else ""))
        lines.append("    ]}" + ("," if i + 1 < len(ts) else ""))
    lines.append("  ]")
    lines.append("}")
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")


def write_raw(path, meta, rows, experiments, checks):
    with open(path, "w") as f:
        json.dump({"meta": meta, "checks": checks, "fit_experiments": experiments, "rows": rows}, f, indent=0)


def print_table(entries, threads):
    print(f"\n## threads = {threads}")
    print("| op | class | aligned | rows | coefficients (ns per feature) | median rel | max rel |")
    print("|---|---|---|---|---|---|---|")
    for e in entries:
        cs = ", ".join(f"{f} {v:.4g}" for f, v in zip(e["features"], e["coef"]))
        print(f"| {e['op']} | {e.get('class', '')} | {e['aligned']} | {e['rows']} | {cs} | "
              f"{e['median_rel_err']:.3f} | {e['max_rel_err']:.3f} |")


def consistency(rows, threads):
    rs = [r for r in rows if r["threads"] == threads]
    ratio = np.array([r["kernels_ns"] / r["wall_ns"] for r in rs])
    over = np.array([r["wall_ns"] - r["kernels_ns"] for r in rs])
    over_run = np.array([r["model_run_ns"] - r["kernels_ns"] for r in rs])
    big = [r for r in rs if r["wall_ns"] > 1e6]
    rb = np.array([r["kernels_ns"] / r["wall_ns"] for r in big]) if big else np.array([np.nan])
    c = {"threads": threads, "models": len(rs),
         "kernels_over_wall_median": float(np.median(ratio)),
         "kernels_over_wall_p10_p90": [float(np.percentile(ratio, 10)), float(np.percentile(ratio, 90))],
         "kernels_over_wall_median_models_over_1ms": float(np.nanmedian(rb)),
         "wall_minus_kernels_us_median": float(np.median(over)) / 1e3,
         "model_run_minus_kernels_us_median": float(np.median(over_run)) / 1e3}
    print(f"\nprofile vs wall ({threads} thread(s)): sum of kernel events / wall = {c['kernels_over_wall_median']:.3f} "
          f"(p10 {c['kernels_over_wall_p10_p90'][0]:.3f}, p90 {c['kernels_over_wall_p10_p90'][1]:.3f}; "
          f"models > 1 ms: {c['kernels_over_wall_median_models_over_1ms']:.3f}); wall - kernels = "
          f"{c['wall_minus_kernels_us_median']:.1f} us, model_run - kernels = {c['model_run_minus_kernels_us_median']:.1f} us")
    for r in rs[:: max(1, len(rs) // 6)][:6]:
        tag = f"{r['class']} " + (f"{r['C_in']}->{r['N']} g{r['group']} k{r['kh']}x{r['kw']} s{r['stride']} {r['H']}"
                                  if r["op"] == "conv" else f"C{r['C']} r{r.get('r', 2)} {r['H']}")
        print(f"  {tag}: kernels {r['kernels_ns'] / 1e3:.1f} us, model_run {r['model_run_ns'] / 1e3:.1f} us, "
              f"wall {r['wall_ns'] / 1e3:.1f} us, target {r['median_ns'] / 1e3:.1f} us")
    return c


def measure_groups(specs, threads, args, tmp, first_group):
    """Measures `specs` in interleaved groups of args.group; returns (rows in spec order, sentinel
    list). Each row records its group ("batch") and the group's sentinel time ("sentinel_ns")."""
    rows, sentinel = [], []
    t0 = time.perf_counter()
    for g in range(0, len(specs), args.group):
        part = specs[g:g + args.group]
        gid = first_group + g // args.group
        try:
            got = measure_group(part, threads, args.budget, tmp, 100 * gid, filter_runs=threads > 1,
                                flush=args.flusher)
            sn = got[-1]["median_ns"]
            for r in got[:-1]:
                r["batch"], r["sentinel_ns"] = gid, sn
            rows += got[:-1]
            sentinel.append({"group": gid, "median_ns": sn, "load1": got[-1]["load1"]})
        except Exception as e:  # keep going; record the failure
            for s in part:
                rows.append(dict(s, threads=threads, median_ns=None, batch=gid, error=f"{type(e).__name__}: {e}"))
            print(f"group {gid}: {type(e).__name__}: {e}", file=sys.stderr)
        done = min(g + args.group, len(specs))
        el = time.perf_counter() - t0
        print(f"[{threads} thr] {done}/{len(specs)} models, {el:.0f} s, "
              f"eta {el / done * (len(specs) - done):.0f} s, load {os.getloadavg()[0]:.2f}",
              file=sys.stderr, flush=True)
    return rows, sentinel


def retry_contended(rows, specs, sentinel, threads, args, tmp):
    """Re-measures (up to --retries times) the rows of groups whose sentinel ran slower than
    CONTENDED_RATIO x the fastest sentinel of the sweep (the machine was busy: on 2 cores a
    concurrent compile halves a 2-thread run); a re-measured row replaces the old one if its
    group's sentinel was faster. Modifies rows and sentinel in place."""
    for attempt in range(1, args.retries + 1):
        smin = min(x["median_ns"] for x in sentinel)
        bad = [i for i, r in enumerate(rows)
               if r.get("median_ns") is None or (r.get("sentinel_ns") or np.inf) > CONTENDED_RATIO * smin]
        if not bad:
            return
        print(f"[{threads} thr] retry {attempt}: re-measuring {len(bad)} rows of contended groups "
              f"(sentinel > {CONTENDED_RATIO} x {smin / 1e3:.1f} us)", file=sys.stderr, flush=True)
        first = max(x["group"] for x in sentinel) + 1
        new, sent = measure_groups([specs[i] for i in bad], threads, args, tmp, first)
        sentinel += sent
        for i, nr in zip(bad, new):
            old = rows[i]
            if nr.get("median_ns") is not None and (old.get("median_ns") is None or
                                                     nr["sentinel_ns"] < (old.get("sentinel_ns") or np.inf)):
                nr["retry"] = attempt
                rows[i] = nr


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True, help="fitted table (JSON)")
    ap.add_argument("--threads", default="1,all", help='comma list of thread counts, "all" = every core')
    ap.add_argument("--quick", action="store_true", help="tiny grid (smoke test)")
    ap.add_argument("--raw", default=None, help="raw measurements (default bench/results-DATE-calibration.json)")
    ap.add_argument("--pin", type=int, default=1, help="CPU to pin 1-thread sweeps to (-1: no pinning)")
    ap.add_argument("--budget", type=float, default=1.0, help="seconds of timed runs per model")
    ap.add_argument("--group", type=int, default=8, help="models interleaved together")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--flush", action="store_true",
                    help="a cache flush before each run (FLUSH_RUNS runs per model; conv fits gain a weights term)")
    ap.add_argument("--retries", type=int, default=2,
                    help="re-measure rows of groups whose sentinel shows a busy machine, up to this many times")
    ap.add_argument("--retry-only", type=int, default=None, metavar="THREADS",
                    help="no sweep: re-measure the contended rows of --raw for THREADS, then refit")
    ap.add_argument("--refit", action="store_true",
                    help="no measuring: refit the rows of --raw and rewrite --out (and the raw file's fit_experiments)")
    args = ap.parse_args()
    if args.refit:
        return refit(args)
    if args.retry_only is not None:
        return retry_only(args)

    now = datetime.datetime.now()
    raw = args.raw or os.path.join(HERE, f"results-{now.date().isoformat()}-calibration.json")
    # Every CPU of the machine (not the inherited mask, so that running under `taskset -c 1`
    # still lets an "all" sweep use every core).
    all_cpus = list(range(os.cpu_count())) if hasattr(os, "sched_setaffinity") else None
    ncores = len(all_cpus) if all_cpus else os.cpu_count()
    threads_list = [ncores if t.strip() == "all" else int(t) for t in args.threads.split(",")]
    meta = {"date": now.isoformat(timespec="seconds"),
            "command": " ".join(shlex.quote(a) for a in [os.path.relpath(sys.executable, os.getcwd())] + sys.argv),
            "machine": machine(), "onnxruntime": ort.__version__, "onnx": onnx.__version__, "numpy": np.__version__,
            "raw": raw, "quick": args.quick, "budget_s": args.budget, "group": args.group, "seed": args.seed,
            "flush": args.flush,
            "sweeps": {}, "notes": {}}
    # Rows of other thread counts already in --raw are kept (e.g. re-running only "--threads all"
    # after a 1-thread sweep); the raw meta then records this command as a follow-up.
    prev_rows, prev_checks = [], []
    if os.path.exists(raw):
        try:
            with open(raw) as f:
                old = json.load(f)
        except (OSError, ValueError):
            old = None
        others = [r for r in (old or {}).get("rows", []) if r["threads"] not in threads_list]
        if others:
            prev_rows = others
            prev_checks = [c for c in old.get("checks", []) if c["threads"] not in threads_list]
            om = old["meta"]
            om.setdefault("followups", []).append(meta["command"])
            om["notes"] = {int(k): v for k, v in om.get("notes", {}).items() if int(k) not in threads_list}
            om["sweeps"] = {int(k): v for k, v in om.get("sweeps", {}).items() if int(k) not in threads_list}
            om.setdefault("followup_dates", []).append(meta["date"])
            meta = om
    specs = grid(args.quick, args.seed)
    counts = {}
    for s in specs:
        counts[s["class"]] = counts.get(s["class"], 0) + 1
    print(f"onnxruntime {ort.__version__}, {meta['machine']['cpu']}, {meta['machine']['isa']}; "
          f"{len(specs)} grid points: {counts}", file=sys.stderr)

    rows, checks = list(prev_rows), list(prev_checks)
    with tempfile.TemporaryDirectory(prefix="dac-calib-") as tmp:
        for threads in threads_list:
            pinned = pin(threads, args.pin)
            note = (f"1 thread pinned to CPU {pinned}" if threads == 1 and pinned and len(pinned) == 1
                    else f"{threads} threads, not pinned (CPUs {pinned}); other work on the machine may have "
                         f"shared the cores: per model, median over the runs whose context kernels ran at idle "
                         f"speed; groups with a slow sentinel re-measured")
            args.flusher = flusher(threads) if args.flush else None
            if args.flush:
                note += f"; a 64 MiB product before every run (caches flushed), {FLUSH_RUNS} runs per model"
            meta["notes"][threads] = note + "; load average at start {:.2f}".format(os.getloadavg()[0])
            t0 = time.perf_counter()
            load0 = os.getloadavg()
            # Order: shuffle so that each interleaved group mixes classes and sizes.
            order = list(np.random.default_rng(args.seed + threads).permutation(len(specs)))
            sweep_specs = [specs[i] for i in order]
            sweep, sentinel = measure_groups(sweep_specs, threads, args, tmp, 0)
            retry_contended(sweep, sweep_specs, sentinel, threads, args, tmp)
            secs = time.perf_counter() - t0
            chk = consistency([r for r in sweep if r.get("median_ns") is not None], threads)
            if threads > 1:
                kept = [r["runs_kept"] / r["runs"] for r in sweep if r.get("runs")]
                chk["runs_kept_fraction_median"] = float(np.median(kept))
                print(f"  runs kept by the context filter: median {np.median(kept):.2f} of a model's runs")
            conv = [s for s in specs if s["op"] == "conv"]
            pick = [conv[i] for i in np.random.default_rng(7).choice(len(conv), size=min(4, len(conv)), replace=False)]
            chk["profiling_overhead"] = profiling_overhead_check(pick, threads, tmp)
            for c in chk["profiling_overhead"]:
                print(f"  wall with / without profiling, sum of kernel events: {c['spec']}: "
                      f"{c['wall_profiled_us']:.1f} / {c['wall_unprofiled_us']:.1f} us, {c['kernels_us']:.1f} us")
            sv = np.array([x["median_ns"] for x in sentinel])
            chk["sentinel"] = {"spec": "dense 64->64 3x3 s1 28x28, measured in every group",
                               "median_ns": float(np.median(sv)), "min_ns": float(sv.min()), "max_ns": float(sv.max()),
                               "p10_p90_ns": [float(np.percentile(sv, 10)), float(np.percentile(sv, 90))],
                               "per_group": sentinel}
            print(f"  sentinel (dense 64->64 3x3 28x28) over {len(sv)} groups: median {np.median(sv) / 1e3:.1f} us, "
                  f"p10 {np.percentile(sv, 10) / 1e3:.1f}, p90 {np.percentile(sv, 90) / 1e3:.1f}, "
                  f"min {sv.min() / 1e3:.1f}, max {sv.max() / 1e3:.1f}")
            checks.append(chk)
            meta["sweeps"][threads] = {"seconds": secs, "models": len(specs), "pinned_cpus": pinned,
                                       "loadavg_start": load0, "loadavg_end": os.getloadavg()}
            rows += sweep
            tables, experiments, excluded = fit_tables([r for r in rows if r.get("median_ns") is not None])
            write_table(args.out, meta, {threads: tables[threads]}, extra_notes(checks, excluded))
            write_raw(raw, meta, rows, experiments, checks)
            print_table(tables[threads], threads)
            for e in experiments:
                if e["threads"] == threads:
                    print(f"  experiment {e['class']} aligned={e['aligned']} {e['features']}: "
                          f"median {e['median_rel_err']:.3f}, max {e['max_rel_err']:.3f}")
            print(f"sweep {threads} thread(s): {secs:.0f} s", file=sys.stderr, flush=True)


def sentinel_note(chk):
    sv = chk.get("sentinel")
    if not sv:
        return ""
    return ("; sentinel dense 64->64 3x3 28x28 over {} groups: median {:.1f} us, p10-p90 {:.1f}-{:.1f} us"
            .format(len(sv["per_group"]), sv["median_ns"] / 1e3, sv["p10_p90_ns"][0] / 1e3, sv["p10_p90_ns"][1] / 1e3))


def extra_notes(checks, excluded):
    out = {}
    for chk in checks:
        th = chk["threads"]
        out[th] = sentinel_note(chk)
        if excluded.get(th):
            out[th] += (f"; {excluded[th]} rows measured while the machine was busy (group sentinel > "
                        f"{CONTENDED_RATIO} x the fastest) left out of the fit")
    return out


def command_line():
    return " ".join(shlex.quote(a) for a in [os.path.relpath(sys.executable, os.getcwd())] + sys.argv)


def thread_counts(spec):
    """The intra-op thread counts of a `--threads` list ("1,all": "all" = every CPU)."""
    return [os.cpu_count() if t == "all" else int(t) for t in spec.split(",")]


def save_table_and_raw(table_path, table, command_key, raw_path, rows, **extra):
    """For the scripts that add entries to a table: writes `table` (its `command_key` set to
    this command line) and the raw rows with the date, onnxruntime's version and `extra`."""
    command = command_line()
    table[command_key] = command
    with open(table_path, "w") as f:
        json.dump(table, f, indent=1)
    with open(raw_path, "w") as f:
        json.dump(dict({"date": datetime.datetime.now().isoformat(timespec="seconds"), "onnxruntime": ort.__version__,
                        "command": command, "rows": rows}, **extra), f, indent=1)


def replace_entries(table, threads, fitted):
    """Replaces the entries of `table`'s `threads` table whose op is among `fitted`'s."""
    tabs = [t for t in table["tables"] if t["threads"] == threads]
    if not tabs:
        sys.exit(f"the table has no {threads}-thread entries to add to: run calibrate.py --threads {threads} first")
    ops = {e["op"] for e in fitted}
    tabs[0]["entries"] = [e for e in tabs[0]["entries"] if e.get("op") not in ops] + fitted


def refit_into(table, args, command_key, fit):
    """`--refit` of the scripts that add entries to a table: `fit` (rows of one thread count ->
    entries) over the rows of --raw, per thread count, replacing those entries in --table,
    which records the command that measured the rows and this one. Nothing is measured."""
    with open(args.raw) as f:
        raw = json.load(f)
    for threads in sorted({r["threads"] for r in raw["rows"]}):
        replace_entries(table, threads, fit([r for r in raw["rows"] if r["threads"] == threads]))
    table[command_key] = f"{raw['command']}; refitted: {command_line()}"
    with open(args.table, "w") as f:
        json.dump(table, f, indent=1)


def refit(args):
    with open(args.raw) as f:
        d = json.load(f)
    meta = d["meta"]
    meta["notes"] = {int(k): v for k, v in meta.get("notes", {}).items()}
    if command_line() not in meta.setdefault("followups", [])[-1:]:
        meta["followups"].append(command_line())
    rows = [r for r in d["rows"] if r.get("median_ns") is not None]
    tables, experiments, excluded = fit_tables(rows)
    write_table(args.out, meta, tables, extra_notes(d.get("checks", []), excluded))
    d["fit_experiments"] = experiments
    d["meta"] = meta
    with open(args.raw, "w") as f:
        json.dump(d, f, indent=0)
    for th, entries in tables.items():
        print_table(entries, th)


SPEC_KEYS = ["op", "class", "C_in", "N", "group", "kh", "kw", "stride", "dilation", "H", "W", "Ho", "Wo", "macs",
             "in_elems", "out_elems", "aligned", "r", "C"]


def flusher(threads):
    """calibrate_matmul's cache flush (a product with 64 MiB of weights) for `threads` threads."""
    import calibrate_matmul
    return calibrate_matmul.flusher(threads, np.random.default_rng(12345))


def pin(threads, cpu):
    """Pins this process to `cpu` for 1 thread (cpu >= 0), else to every CPU; returns the CPU list."""
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {cpu} if threads == 1 and cpu >= 0 else set(range(os.cpu_count())))
        return sorted(os.sched_getaffinity(0))
    return None


def retry_only(args):
    """Re-measures the contended rows of one thread count in --raw, then refits."""
    with open(args.raw) as f:
        d = json.load(f)
    meta, th = d["meta"], args.retry_only
    meta.setdefault("followups", []).append(command_line())
    chk = next(c for c in d["checks"] if c["threads"] == th)
    sentinel = chk["sentinel"]["per_group"]
    idx = [i for i, r in enumerate(d["rows"]) if r["threads"] == th]
    gsize = meta.get("group", 8)
    for k, i in enumerate(idx):  # raw files from before rows carried their group: by order
        r = d["rows"][i]
        if "batch" not in r:
            r["batch"] = k // gsize
            r["sentinel_ns"] = next(x["median_ns"] for x in sentinel if x["group"] == r["batch"])
    rows = [d["rows"][i] for i in idx]
    specs = [{k: r[k] for k in SPEC_KEYS if k in r} for r in rows]
    pin(th, args.pin)
    args.flusher = flusher(th) if any(r.get("flushed") for r in rows) else None
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="dac-calib-") as tmp:
        retry_contended(rows, specs, sentinel, th, args, tmp)
    for k, i in enumerate(idx):
        d["rows"][i] = rows[k]
    sv = np.array([x["median_ns"] for x in sentinel])
    chk["sentinel"].update({"median_ns": float(np.median(sv)), "min_ns": float(sv.min()), "max_ns": float(sv.max()),
                            "p10_p90_ns": [float(np.percentile(sv, 10)), float(np.percentile(sv, 90))]})
    meta["sweeps"][str(th) if str(th) in meta["sweeps"] else th]["retry_seconds"] = time.perf_counter() - t0
    with open(args.raw, "w") as f:
        json.dump(d, f, indent=0)
    refit(args)


if __name__ == "__main__":
    main()
