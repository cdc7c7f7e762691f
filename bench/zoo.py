#!/usr/bin/env python3
"""Check `dac onnx` across a zoo of full-size ONNX models: MAC counts, full-rank exactness,
claimed against true MAC reduction, and onnxruntime speed of the `--macs 2` rewrite (the
MAC-planned rewrite; `bench/zoo_time.py` measures `--speedup`, the modeled-time target).

    bench/.venv/bin/python bench/zoo.py DIR [--dac PATH] [--out results.json] [--threads 1]
                                            [--repeats N] [--only name,name] [--work TMPDIR]

DIR holds the models and a `macs.json`: {"<model>": {"file": "resnet18.onnx", "input":
[1,3,224,224], "macs": <PyTorch-counted MACs at batch 1>, ...}}. For each model:

1. Full rank: `dac onnx --energy 1 --allow-slower` (every eligible layer at its maximum rank,
   checked in the JSON report); original and rewrite run in onnxruntime on one seeded input,
   batch 1; reports max |diff| / max |orig| of the output.
2. MACs: dac's `macs_before` (from `--macs 2 --json`) against the PyTorch count; an
   independent count (onnx shape inference, batch fixed to 1; Conv, ConvTranspose, Gemm,
   MatMul) of the original and of the written `--macs 2` model, whose ratio is the true
   reduction, against dac's claimed `reduction`.
3. Speed: onnxruntime CPU, `--threads` intra-op threads (default 1), sequential, ORT_ENABLE_ALL,
   batch 1; median of interleaved before/after runs after a warm-up.
4. dac's wall time for the `--macs 2` conversion.

Prints a markdown table; writes every number, the machine, onnxruntime version, date and
command line to --out (JSON). A dac failure is recorded and the model skipped.
"""
import argparse
import datetime
import json
import os
import shlex
import subprocess
import sys
import time

import numpy as np
import onnx
import onnxruntime as ort
from onnx import shape_inference

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
from ortutil import machine, run, session, time_pair  # noqa: E402,F401  (machine, run: also used by importers)

# Seconds of timed runs (before + after together) per model when --repeats is not given.
TIME_BUDGET = 6.0
MIN_REPEATS, MAX_REPEATS = 5, 200


# ---------------------------------------------------------------------------------------------
# Independent MAC count


def fix_batch(model, batch=1):
    """Sets dim 0 of every graph input (not initializers) to `batch`."""
    inits = {t.name for t in model.graph.initializer}
    for vi in model.graph.input:
        if vi.name in inits:
            continue
        dims = vi.type.tensor_type.shape.dim
        if dims:
            dims[0].ClearField("dim_param")
            dims[0].dim_value = batch
    return model


def ort_shapes(path, names, input_shape):
    """Shapes of the tensors `names`, by running the model in onnxruntime at `input_shape` (a
    fallback for tensors onnx shape inference leaves unknown, e.g. after ShuffleNet's channel
    shuffle, whose Reshape target is computed through Div and Cast)."""
    m = onnx.load(path)
    have = {o.name for o in m.graph.output}
    for n in names:
        if n not in have:
            m.graph.output.append(onnx.ValueInfoProto(name=n))
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = ort.InferenceSession(m.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    outs = sess.run(names, {sess.get_inputs()[0].name: seeded_input(input_shape)})
    return {n: list(o.shape) for n, o in zip(names, outs)}


def count_macs(path, input_shape):
    """MACs at batch 1: {"total", "by_op", "ort_shapes"}.

    Conv: out_c*out_h*out_w*(in_c/group)*kh*kw (and any further spatial dims); ConvTranspose:
    in_c*in_spatial*(out_c/group)*k; Gemm: M*K*N; MatMul: prod(output dims)*K. Shapes from onnx
    shape inference with the batch dimension fixed to 1; tensors it leaves unknown are measured
    by running the model in onnxruntime (their count is reported as "ort_shapes")."""
    m = onnx.load(path)
    # Weights are not needed for shapes; drop their data so inference stays cheap on vgg16.
    for t in m.graph.initializer:
        if t.dims and np.prod(t.dims) > 1024:
            t.ClearField("raw_data")
    fix_batch(m)
    m = shape_inference.infer_shapes(m, data_prop=True)
    shapes = {}
    for vi in list(m.graph.input) + list(m.graph.value_info) + list(m.graph.output):
        tt = vi.type.tensor_type
        if tt.HasField("shape"):
            shapes[vi.name] = [d.dim_value if d.HasField("dim_value") else None for d in tt.shape.dim]
    for t in m.graph.initializer:
        shapes[t.name] = list(t.dims)

    def known(name):
        s = shapes.get(name)
        return s is not None and all(d is not None and d > 0 for d in s)

    nodes = [n for n in m.graph.node if n.op_type in ("Conv", "ConvTranspose", "Gemm", "MatMul")]
    needed = {n.input[0] for n in nodes} | {n.input[1] for n in nodes} | {n.output[0] for n in nodes}
    missing = sorted(t for t in needed if not known(t))
    if missing:
        shapes.update(ort_shapes(path, missing, input_shape))

    by_op, total = {}, 0
    for n in nodes:
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in n.attribute}
        x, w, y = shapes[n.input[0]], shapes[n.input[1]], shapes[n.output[0]]
        if n.op_type == "Conv":
            c = int(np.prod(y[1:])) * int(np.prod(w[1:]))  # out_c*spatial * (in_c/g)*k
        elif n.op_type == "ConvTranspose":
            c = int(np.prod(x[1:])) * w[1] * int(np.prod(w[2:]))  # in_c*in_sp * (out_c/g)*k
        elif n.op_type == "Gemm":
            mdim, k = (x[1], x[0]) if attrs.get("transA", 0) else (x[0], x[1])
            ndim = w[0] if attrs.get("transB", 0) else w[1]
            c = mdim * k * ndim
        else:  # MatMul
            c = int(np.prod(y)) * x[-1]
        by_op[n.op_type] = by_op.get(n.op_type, 0) + int(c)
        total += int(c)
    return {"total": total, "by_op": by_op, "ort_shapes": len(missing)}


# ---------------------------------------------------------------------------------------------
# dac


def run_dac(dac, src, dst, flags):
    cmd = [dac, "onnx", src, "-o", dst, "--force", "--json"] + flags
    t = time.perf_counter()
    p = subprocess.run(cmd, capture_output=True, text=True)
    secs = time.perf_counter() - t
    if p.returncode != 0:
        err = (p.stderr or p.stdout).strip()
        return None, secs, f"exit {p.returncode}: {err}"
    try:
        return json.loads(p.stdout), secs, None
    except json.JSONDecodeError as e:
        return None, secs, f"bad JSON ({e}): {p.stdout[:500]} {p.stderr[:500]}"


def full_rank_check(report):
    """Layers not at their maximum rank (should be none with --energy 1)."""
    return [(c["name"], c["rank"], c["max_rank"]) for c in report["converted"] if c["rank"] != c["max_rank"]]


# ---------------------------------------------------------------------------------------------
# onnxruntime


def seeded_input(shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def rel_error(a, b):
    return float(np.max(np.abs(a - b)) / np.max(np.abs(a)))


# ---------------------------------------------------------------------------------------------


def bench_model(name, spec, d, args):
    src = os.path.join(d, spec["file"])
    r = {"model": name, "file": spec["file"], "input": spec["input"], "macs_pytorch": spec["macs"]}
    shape = [1] + list(spec["input"][1:])
    x = seeded_input(shape)
    full = os.path.join(args.work, f"{name}-full.onnx")
    fast = os.path.join(args.work, f"{name}-2x.onnx")

    # Independent count of the original.
    c0 = count_macs(src, shape)
    r["count_original"] = c0
    r["count_original_vs_pytorch"] = c0["total"] / spec["macs"] - 1

    # --macs 2 rewrite.
    rep, secs, err = run_dac(args.dac, src, fast, ["--macs", "2"])
    r["convert_s"] = secs
    sess0 = session(src, args.threads)
    y0 = run(sess0, x)
    if err:
        r["error_speedup2"] = err
    else:
        plan = rep.get("plan") or {}
        r.update({
            "dac_macs_before": rep["macs_before"], "dac_macs_after": rep["macs_after"],
            "dac_reduction": rep["reduction"], "plan_met": plan.get("met"),
            "plan_max_reduction": plan.get("max_reduction"),
            "dac_before_vs_pytorch": rep["macs_before"] / spec["macs"] - 1,
            "converted": len(rep["converted"]), "skipped": len(rep["skipped"] or []),
            "uncounted": rep.get("uncounted"),
            "schemes": {s: sum(1 for c in rep["converted"] if c["scheme"] == s)
                        for s in sorted({c["scheme"] for c in rep["converted"]})},
        })
        c1 = count_macs(fast, shape)
        r["count_rewritten"] = c1
        r["true_reduction"] = c0["total"] / c1["total"]
        r["claimed_vs_true"] = rep["reduction"] / r["true_reduction"] - 1
        r["dac_after_vs_count"] = rep["macs_after"] / c1["total"] - 1
        sess1 = session(fast, args.threads)
        r["speedup2_rel_error"] = rel_error(y0, run(sess1, x))
        tb, ta, n = time_pair(sess0, sess1, x, budget=TIME_BUDGET, repeats=args.repeats_for(name),
                              min_repeats=MIN_REPEATS, max_repeats=MAX_REPEATS)
        r.update({"ms_before": tb * 1e3, "ms_after": ta * 1e3, "timed_runs": n, "realised_speedup": tb / ta})
        del sess1

    # Full-rank rewrite.
    rep, secs, err = run_dac(args.dac, src, full, ["--energy", "1", "--allow-slower"])
    r["full_convert_s"] = secs
    if err:
        r["error_full"] = err
    else:
        r["full_converted"] = len(rep["converted"])
        r["full_skipped"] = {}
        for s in rep["skipped"] or []:
            r["full_skipped"][s["reason"]] = r["full_skipped"].get(s["reason"], 0) + 1
        r["full_not_max_rank"] = full_rank_check(rep)
        sessf = session(full, args.threads)
        r["full_rel_error"] = rel_error(y0, run(sessf, x))
        del sessf
    if not args.keep:
        for p in (full, fast):
            if os.path.exists(p):
                os.remove(p)
    return r


def pct(v):
    return f"{100 * v:+.2f}%"


def cell(text):
    return text.replace("|", "\\|").replace("\n", " ")


def row(r):
    if "error_script" in r:
        return f"| {r['model']} | {r['macs_pytorch']:,} | script error: {cell(r['error_script'])} | | | | | | | |"
    if "error_full" in r:
        full = "dac failed: " + cell(r["error_full"])
    else:
        full = f"{r['full_rel_error']:.1e} ({r['full_converted']} layers"
        if r["full_not_max_rank"]:
            full += f", {len(r['full_not_max_rank'])} below max rank"
        full += ")"
    if "error_speedup2" in r:
        err = "dac failed: " + cell(r["error_speedup2"])
        cols = [err, full, err, "—", "—", "—", "—"]
    else:
        met = "met" if r["plan_met"] else f"NOT met, max {r['plan_max_reduction']:.3f}x"
        cols = [
            f"{r['dac_macs_before']:,} ({pct(r['dac_before_vs_pytorch'])})", full,
            f"{r['dac_reduction']:.4f}x ({met})",
            f"{r['true_reduction']:.4f}x (claim {pct(r['claimed_vs_true'])})",
            f"{r['ms_before']:.2f}", f"{r['ms_after']:.2f}", f"{r['realised_speedup']:.2f}x",
        ]
    return "| " + " | ".join([r["model"], f"{r['macs_pytorch']:,}"] + cols + [f"{r['convert_s']:.1f}"]) + " |"


HEADER = ("| model | MACs (PyTorch) | dac MACs before (diff %) | full-rank rel. error (ORT) "
          "| claimed reduction @ --macs 2 | true MAC reduction of written model "
          "| ORT ms before | ORT ms after | realised speedup | conversion s |\n"
          "|---|---|---|---|---|---|---|---|---|---|")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("dir")
    ap.add_argument("--dac", default=os.path.join(ROOT, "target", "release", "dac"))
    ap.add_argument("--out", default=None)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", default=None,
                    help="timed runs per model (before and after each), or NAME=N,NAME=N,N; "
                         f"default: about {TIME_BUDGET:.0f} s of runs per model")
    ap.add_argument("--only", default=None, help="comma-separated model names")
    ap.add_argument("--work", default="/tmp/dac-zoo", help="where rewritten models go")
    ap.add_argument("--keep", action="store_true", help="keep the rewritten models")
    args = ap.parse_args()

    per, default = {}, None
    for part in (args.repeats or "").split(","):
        if "=" in part:
            k, v = part.split("="); per[k] = int(v)
        elif part:
            default = int(part)
    args.repeats_for = lambda n: per.get(n, default)
    os.makedirs(args.work, exist_ok=True)

    with open(os.path.join(args.dir, "macs.json")) as f:
        specs = json.load(f)
    names = list(specs)
    if args.only:
        want = args.only.split(",")
        names = [n for n in want if n in specs]
        missing = [n for n in want if n not in specs]
        if missing:
            sys.exit(f"not in macs.json: {', '.join(missing)}")

    meta = {
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "command": " ".join(shlex.quote(a) for a in [sys.executable] + sys.argv),
        "machine": machine(), "onnxruntime": ort.__version__, "onnx": onnx.__version__,
        "numpy": np.__version__, "threads": args.threads, "dac": os.path.realpath(args.dac),
        "dac_version": subprocess.run([args.dac, "--version"], capture_output=True, text=True).stdout.strip(),
    }
    print(f"onnxruntime {ort.__version__}, {args.threads} thread(s), batch 1, "
          f"{meta['machine']['cpu']} ({meta['machine']['cores']} cores), load {meta['machine']['loadavg_start']}",
          file=sys.stderr)
    results = []
    start = time.perf_counter()
    for n in names:
        t = time.perf_counter()
        try:
            r = bench_model(n, specs[n], args.dir, args)
        except Exception as e:  # keep going: one broken model must not lose the others
            r = {"model": n, "macs_pytorch": specs[n]["macs"], "error_script": f"{type(e).__name__}: {e}"}
        r["bench_s"] = time.perf_counter() - t
        r["loadavg"] = os.getloadavg()
        results.append(r)
        print(f"{n}: {r['bench_s']:.0f} s", file=sys.stderr, flush=True)
        if args.out:
            write(args.out, meta, results, start)
    meta["machine"]["loadavg_end"] = os.getloadavg()
    print(HEADER)
    for r in results:
        print(row(r))
    if args.out:
        write(args.out, meta, results, start)


def write(path, meta, results, start):
    meta = dict(meta, total_s=time.perf_counter() - start)
    with open(path, "w") as f:
        json.dump({"meta": meta, "results": results}, f, indent=1)


if __name__ == "__main__":
    main()
