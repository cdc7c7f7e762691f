#!/usr/bin/env python3
"""Claimed (modeled) against realised speed-up of `dac onnx --speedup X` on a zoo of full-size
ONNX models, in onnxruntime and in tract, with `--macs X` (the MAC-planned baseline) beside it,
and optionally a per-layer check of the time model against onnxruntime's profiler.

    bench/.venv/bin/python bench/zoo_time.py DIR [--dac PATH] [--targets 1.5,2,3]
        [--macs-targets 2] [--threads 1] [--dac-threads T] [--dac-args "--cpu avx2"] [--only a,b] [--out bench/results-DATE-zoo-time.json]
        [--budget SECONDS] [--no-tract] [--tract PATH] [--profile] [--profile-runs N]
        [--work TMPDIR] [--keep]

DIR holds the models and `macs.json` (format: bench/zoo.py). For each model:

1. Rewrites: `dac onnx M -o W --speedup X --json --force --threads T` for every X of --targets,
   and `dac onnx M -o W --macs X ...` for every X of --macs-targets (default 2 only). From the
   report: claimed modeled speed-up ("speedup"), plan met / max_speedup, MAC reduction. With
   --dac-args --measure the claim is the speed-up dac measured in onnxruntime ("measured":
   "speedup", "met"; the modeled one is kept as "modeled_speedup"); ORT_DYLIB_PATH defaults to
   the library of the onnxruntime this script imports.
2. onnxruntime (CPU, intra-op threads = --threads, inter-op 1, sequential, ORT_ENABLE_ALL,
   batch 1, one seeded input): one session of the original shared by all rewrites; for each
   rewrite, interleaved original/rewrite runs after a warm-up, about --budget seconds per pair
   (15..1000 runs each: a large network's run-to-run spread needs more than --budget allows it),
   medians. Realised speed-up = median original / median rewrite.
   Output error of the rewrite: max |y_rewrite - y_orig| / max |y_orig| (first output).
3. tract (unless --no-tract): one `tract_time` invocation (examples/tract_time.rs, single
   thread) on the original and every rewrite of the model, interleaved, about --budget seconds
   per model; medians. If the joint invocation fails, each rewrite is retried alone with the
   original so one failure is pinned on its model; errors are recorded, never fatal.
4. --profile: the original and every --speedup rewrite run in onnxruntime with profiling (same
   settings, 1 thread; 3 warm-up runs dropped, then --profile-runs runs, default about --budget
   seconds, 20..300). Kernel events ("cat" "Node", "*_kernel_time") are split into runs by
   the "model_run" events. onnxruntime renames the nodes it rewrites (an NCHWc node is named
   after its output tensor plus "_nchwc", e.g. a Conv fused with its Relu is
   "/relu/Relu_output_0_nchwc"), so the optimised graph is saved (optimized_model_filepath)
   and each kernel is traced back to a node of the model given to onnxruntime: by name; else
   from the tensor its name or outputs carry, walking back through fused activations / Adds to
   a node of the same op; else by its weight initializer; else by the longest "/"-prefix of its
   name that names a node (e.g. SiLU fused as ".../Mul/QuickGeluFusion/"). A ReorderInput goes to the node that
   consumes its output, a ReorderOutput to the node that produces its input (graph edges of the
   optimised model); a reorder next to no modelled layer is reported apart ("reorder").
   Per layer of the dac report, measured in-context time = median over runs of the summed
   kernel times of its nodes (dense: the node itself; factored: every node named "<layer>/..."
   plus those listed in "nodes") plus its attributed reorders (kernel-only also kept).
   Compared with the modeled time (original: time_before_ms of converted layers and time_ms
   of skipped ones; rewrite: time_after_ms / time_ms): relative error (modeled - measured) /
   measured, summarised (median and 90th percentile of |error|, max, share within 25 %, signed
   median) for dense layers in the original, dense layers in rewrites and factored layers.
   Also the share of the run's kernel time in the op types the time model covers (Conv, Gemm,
   MatMul, Add, Concat, Split, after tracing fused kernels back to their node), in reorders,
   and in the rest (pools, Relu, BatchNormalization, Flatten, ...): medians over runs of the
   per-run shares. An unprofiled session of the same model runs alternately with the profiled
   runs: onnxruntime's profiler slows the kernels themselves (on networks of many small layers
   the profiled kernel times add up to more than the unprofiled run's wall time), so each
   layer's error is also given against its measured time scaled by the run's unprofiled /
   profiled median wall time ("unprofiled"; an estimate that spreads the profiler's cost over
   the layers in proportion to their time).

Prints markdown tables: (a) per model and target; (b) the --profile accuracy summary. Writes
every number, the machine, onnxruntime version, date and command line to --out (JSON, rewritten
after each model). A failing model or rewrite is recorded and skipped.
"""
import argparse
import datetime
import json
import os
import re
import shlex
import subprocess
import sys
import time

import numpy as np
import onnx
import onnxruntime as ort

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
from ortutil import grouped_median, machine, ort_library, run, session, time_pair  # noqa: E402
from zoo import rel_error, run_dac, seeded_input  # noqa: E402

MIN_REPEATS, MAX_REPEATS = 15, 1000
COVERED = {"Conv", "Gemm", "MatMul", "Add", "Concat", "Split"}
# onnxruntime op types that stand for an ONNX op after fusion.
BASE_OP = {"FusedConv": "Conv", "NhwcFusedConv": "Conv", "NhwcConv": "Conv", "FusedGemm": "Gemm",
           "FusedMatMul": "MatMul", "Sum": "Add"}
# Ops onnxruntime fuses into a preceding Conv/Gemm/MatMul (followed backwards when tracing).
FUSIBLE = {"Relu", "Clip", "Sigmoid", "HardSigmoid", "HardSwish", "LeakyRelu", "Tanh", "Add", "Sum",
           "Mul", "BatchNormalization", "Identity"}


# ---------------------------------------------------------------------------------------------
# tract


def tract_time(tract, shape, budget, paths):
    """[ms per path] and runs, or raises RuntimeError with tract's message."""
    cmd = [tract, ",".join(map(str, shape)), f"{budget:.3f}"] + paths
    try:
        env = dict(os.environ, RUST_BACKTRACE="0", RUST_LIB_BACKTRACE="0")
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=1800 + 10 * budget, env=env)
    except subprocess.TimeoutExpired:
        raise RuntimeError("timeout")
    if p.returncode != 0:
        msg = (p.stderr or p.stdout).split("Stack backtrace:")[0].strip()
        raise RuntimeError(f"exit {p.returncode}: " + msg[-800:])
    out = json.loads(p.stdout.strip().splitlines()[-1])
    return out["ms"], out["runs"]


def tract_model(args, shape, src, variants):
    """Times the original and every written rewrite in tract; fills each variant's "tract_*"."""
    ok = [v for v in variants if v.get("path")]
    if not ok:
        return {"error": "no rewrite to time"}
    budget = args.budget * (1 + len(ok)) / 2
    try:
        ms, runs = tract_time(args.tract, shape, budget, [src] + [v["path"] for v in ok])
        for v, m in zip(ok, ms[1:]):
            v.update(tract_ms_before=ms[0], tract_ms_after=m, tract_speedup=ms[0] / m, tract_runs=runs)
        return {"ms_original": ms[0], "runs": runs}
    except RuntimeError as e:
        joint = str(e)
    # Pin the failure: the original alone, then each rewrite beside it.
    try:
        ms, runs = tract_time(args.tract, shape, args.budget / 2, [src])
    except RuntimeError as e:
        for v in ok:
            v["tract_error"] = "original: " + str(e)
        return {"error": "original: " + str(e)}
    for v in ok:
        try:
            ms, runs = tract_time(args.tract, shape, args.budget, [src, v["path"]])
            v.update(tract_ms_before=ms[0], tract_ms_after=ms[1], tract_speedup=ms[0] / ms[1], tract_runs=runs)
        except RuntimeError as e:
            v["tract_error"] = str(e)
    return {"joint_error": joint}


# ---------------------------------------------------------------------------------------------
# Profiles


class Graph:
    """Producers, consumers and names of an ONNX graph (weights not loaded into numpy)."""

    def __init__(self, model):
        g = model.graph
        self.nodes = list(g.node)
        self.by_name = {n.name: n for n in self.nodes if n.name}
        self.inits = {t.name for t in g.initializer}
        self.producer, self.consumers = {}, {}
        for n in self.nodes:
            for o in n.output:
                self.producer[o] = n
            for i in n.input:
                self.consumers.setdefault(i, []).append(n)


def trace_back(g, tensor, op, depth=6):
    """The node of op type `op` whose output reaches `tensor` through fusible ops only; else the
    producer of `tensor` (or None)."""
    first = g.producer.get(tensor)
    frontier = [first] if first is not None else []
    for _ in range(depth):
        nxt = []
        for n in frontier:
            if n.op_type == op:
                return n
            if n.op_type in FUSIBLE:
                nxt += [g.producer[i] for i in n.input if i not in g.inits and i in g.producer]
        frontier = nxt
        if not frontier:
            break
    return first


def resolve(g, node):
    """The node of the model given to onnxruntime that an optimised-graph node stands for."""
    if node.name in g.by_name:
        return g.by_name[node.name]
    op = BASE_OP.get(node.op_type, node.op_type)
    stem = re.sub(r"_token_\d+$", "", node.name)
    stem = re.sub(r"_nchwc$", "", stem)
    for t in [stem] + list(node.output):
        if t in g.producer:
            return trace_back(g, t, op)
    for i in node.input:
        if i in g.inits:
            cons = [c for c in g.consumers.get(i, []) if BASE_OP.get(c.op_type, c.op_type) == op]
            if len(cons) == 1:
                return cons[0]
    # Fusions named "<node>/<Fusion>/" (e.g. SiLU as ".../Mul/QuickGeluFusion/").
    parts = node.name.rstrip("/").split("/")
    for k in range(len(parts) - 1, 1, -1):
        if "/".join(parts[:k]) in g.by_name:
            return g.by_name["/".join(parts[:k])]
    return None


def optimized_map(g, opt):
    """{optimised node name: (original node or None, is_reorder)}; a reorder maps to the
    original node of the optimised node on its NCHW side's neighbour."""
    prod, cons = {}, {}
    for n in opt.graph.node:
        for o in n.output:
            prod[o] = n
        for i in n.input:
            cons.setdefault(i, []).append(n)
    out = {}
    for n in opt.graph.node:
        if n.op_type in ("ReorderInput", "ReorderOutput"):
            if n.op_type == "ReorderInput":
                nb = [c for c in cons.get(n.output[0], []) if not c.op_type.startswith("Reorder")]
            else:
                nb = [prod[n.input[0]]] if n.input[0] in prod else []
            out[n.name] = (resolve(g, nb[0]) if nb else None, True)
        else:
            out[n.name] = (resolve(g, n), False)
    return out


def profile(path, x, runs, budget, work, tag):
    """Per run: [(optimised node name, op_name, dur us)], the optimised model, and the median
    wall time (s) of the profiled runs and of an unprofiled session of the same model, run
    alternately with them (the profiler's own cost: it slows the kernels of small layers)."""
    prefix = os.path.join(work, f"prof-{tag}")
    opt_path = prefix + "-opt.onnx"
    sess = session(path, 1, profile_prefix=prefix, optimized=opt_path)
    plain = session(path, 1)
    for _ in range(3):
        run(sess, x)
    if runs is None:
        t = time.perf_counter(); run(sess, x); one = time.perf_counter() - t
        runs = int(min(300, max(20, budget / max(one, 1e-6))))
        skip = 4
    else:
        skip = 3
    # time_pair's own two warm-up runs of each session are dropped too.
    walls = time_pair(sess, plain, x, repeats=runs)[:2]
    skip += 2
    f = sess.end_profiling()
    del sess, plain
    with open(f) as fh:
        ev = json.load(fh)
    os.remove(f)
    opt = onnx.load(opt_path, load_external_data=False)
    for p in (opt_path, opt_path + ".data"):
        if os.path.exists(p):
            os.remove(p)
    bounds = sorted((e["ts"], e["ts"] + e["dur"]) for e in ev
                    if e.get("cat") == "Session" and e.get("name") == "model_run")
    starts = np.array([b[0] for b in bounds])
    per = [[] for _ in bounds]
    for e in ev:
        if e.get("cat") == "Node" and e.get("name", "").endswith("_kernel_time"):
            i = int(np.searchsorted(starts, e["ts"], side="right")) - 1
            if 0 <= i < len(bounds) and e["ts"] <= bounds[i][1]:
                per[i].append((e["name"][: -len("_kernel_time")], e.get("args", {}).get("op_name", "?"), e["dur"]))
    return per[skip:], opt, walls


def layer_of_factory(report, rewritten):
    """node name -> layer name, for the nodes of the model that report describes (rewritten)
    or of the original model (not rewritten)."""
    conv = report.get("converted") or []
    dense = [s["name"] for s in report.get("skipped") or []]
    exact, prefixes = {}, []
    if rewritten:
        for c in conv:
            prefixes.append(c["name"] + "/")
            for n in c.get("nodes") or []:
                exact[n] = c["name"]
    else:
        dense = dense + [c["name"] for c in conv]
    for d in dense:
        exact[d] = d

    def layer_of(name):
        if name in exact:
            return exact[name]
        for p in prefixes:
            if name.startswith(p):
                return p[:-1]
        return None
    return layer_of


def profile_model(path, report, rewritten, x, runs, budget, work, tag):
    """Per-layer measured vs modeled times and the kernel-time breakdown of one model."""
    per, opt, (wall_profiled, wall_plain) = profile(path, x, runs, budget, work, tag)
    unprofile = wall_plain / wall_profiled
    g = Graph(onnx.load(path, load_external_data=False))
    omap = optimized_map(g, opt)
    layer_of = layer_of_factory(report, rewritten)
    modeled, kind = {}, {}
    for c in report.get("converted") or []:
        modeled[c["name"]] = c["time_after_ms"] if rewritten else c["time_before_ms"]
        kind[c["name"]] = "factored" if rewritten else "dense_original"
    for s in report.get("skipped") or []:
        if s.get("time_ms") is not None:
            modeled[s["name"]] = s["time_ms"]
            kind[s["name"]] = "dense_rewrite" if rewritten else "dense_original"
    own = {l: [] for l in modeled}
    reo = {l: [] for l in modeled}
    cats = {"covered_layers": [], "covered_other": [], "reorder": [], "rest": [], "total": []}
    by_op = []
    unresolved = set()
    for events in per:
        o = {l: 0 for l in modeled}
        r = {l: 0 for l in modeled}
        c = {k: 0 for k in cats}
        ops = {}
        for name, op_name, dur in events:
            orig, is_reorder = omap.get(name, (None, op_name.startswith("Reorder")))
            layer = layer_of(orig.name) if orig is not None else None
            c["total"] += dur
            if is_reorder:
                if layer in r:
                    r[layer] += dur
                    c["covered_layers"] += dur
                else:
                    c["reorder"] += dur
                key = "Reorder"
            else:
                key = orig.op_type if orig is not None else BASE_OP.get(op_name, op_name)
                if orig is None:
                    unresolved.add(name)
                if layer in o:
                    o[layer] += dur
                    c["covered_layers"] += dur
                elif key in COVERED:
                    c["covered_other"] += dur
                else:
                    c["rest"] += dur
            ops[key] = ops.get(key, 0) + dur
        by_op.append(ops)
        for l in modeled:
            own[l].append(o[l]); reo[l].append(r[l])
        for k in cats:
            cats[k].append(c[k])
    layers = []
    for l in modeled:
        tot = [a + b for a, b in zip(own[l], reo[l])]
        meas = grouped_median(tot) / 1e3
        kern = grouped_median(own[l]) / 1e3
        layers.append({
            "layer": l, "kind": kind[l], "modeled_ms": modeled[l], "measured_ms": meas,
            "measured_kernel_ms": kern, "reorder_ms": grouped_median(reo[l]) / 1e3,
            "rel_error": (modeled[l] - meas) / meas if meas > 0 else None,
            "rel_error_kernel": (modeled[l] - kern) / kern if kern > 0 else None,
            "rel_error_unprofiled": (modeled[l] - meas * unprofile) / (meas * unprofile) if meas > 0 else None,
        })
    # Medians over runs (robust to a run slowed by other work on the machine).
    total = grouped_median(cats["total"])
    frac = {k: float(np.median(np.array(v, dtype=np.float64) / np.maximum(cats["total"], 1)))
            for k, v in cats.items() if k != "total"}
    keys = sorted({k for ops in by_op for k in ops})
    op_ms = {k: grouped_median([ops.get(k, 0) for ops in by_op]) / 1e3 for k in keys}
    return {
        "runs": len(per), "kernel_total_ms": total / 1e3,
        "wall_profiled_ms": wall_profiled * 1e3, "wall_unprofiled_ms": wall_plain * 1e3,
        "modeled_layers_ms": float(sum(modeled.values())),
        "measured_layers_ms": float(sum(x["measured_ms"] for x in layers)),
        "fraction": frac,
        "fraction_covered_ops": frac["covered_layers"] + frac["covered_other"],
        "by_op_ms": dict(sorted(op_ms.items(), key=lambda kv: -kv[1])),
        "unresolved_kernels": sorted(unresolved),
        "layers": layers,
    }


def summarise(errors):
    e = np.array([v for v in errors if v is not None and np.isfinite(v)], dtype=np.float64)
    if len(e) == 0:
        return {"n": 0}
    a = np.abs(e)
    return {"n": int(len(e)), "median_abs": float(np.median(a)), "p90_abs": float(np.percentile(a, 90)),
            "max_abs": float(a.max()), "within_25pct": float(np.mean(a <= 0.25)),
            "median_signed": float(np.median(e))}


def profile_summary(profiles):
    """{kind: summary} over the layer records of `profiles` (a list of profile_model results)."""
    out = {}
    for kind in ("dense_original", "dense_rewrite", "factored"):
        recs = [x for p in profiles for x in p["layers"] if x["kind"] == kind]
        out[kind] = summarise([x["rel_error"] for x in recs])
        out[kind]["kernel_only"] = summarise([x["rel_error_kernel"] for x in recs])
        if all("rel_error_unprofiled" in x for x in recs):
            out[kind]["unprofiled"] = summarise([x["rel_error_unprofiled"] for x in recs])
    return out


# ---------------------------------------------------------------------------------------------


def bench_model(name, spec, args):
    src = os.path.join(args.dir, spec["file"])
    shape = [1] + list(spec["input"][1:])
    r = {"model": name, "file": spec["file"], "input": shape, "variants": []}
    x = seeded_input(shape)
    sess0 = session(src, args.threads)
    y0 = run(sess0, x)
    plan = [("speedup", t) for t in args.targets] + [("macs", t) for t in args.macs_targets]
    for mode, target in plan:
        v = {"mode": mode, "target": target}
        r["variants"].append(v)
        out = os.path.join(args.work, f"{name}-{mode}{target:g}.onnx")
        rep, secs, err = run_dac(args.dac, src, out, [f"--{mode}", f"{target:g}", "--threads", str(args.dac_threads or args.threads),
                                                      *args.dac_args.split()])
        v["convert_s"] = secs
        if err:
            v["error"] = err
            print(f"  {name} --{mode} {target:g}: dac failed: {err[:300]}", file=sys.stderr)
            continue
        p = rep.get("plan") or {}
        v.update({
            "claimed_speedup": rep.get("speedup"), "time_before_ms": rep.get("time_before_ms"),
            "time_after_ms": rep.get("time_after_ms"), "mac_reduction": rep.get("reduction"),
            "macs_before": rep.get("macs_before"), "macs_after": rep.get("macs_after"),
            "met": p.get("met"), "max_speedup": p.get("max_speedup"), "max_reduction": p.get("max_reduction"),
            "converted": len(rep.get("converted") or []), "skipped": len(rep.get("skipped") or []),
            "schemes": {s: sum(1 for c in rep["converted"] if c["scheme"] == s)
                        for s in sorted({c["scheme"] for c in rep.get("converted") or []})},
            "layouts": {str(l): sum(1 for c in rep["converted"] if c.get("layout") == l)
                        for l in sorted({str(c.get("layout")) for c in rep.get("converted") or []})},
            "time_model": rep.get("time_model"),
        })
        m = rep.get("measured")
        if m:  # --dac-args --measure: the tool's claim is the speed-up it measured
            v.update({"modeled_speedup": v["claimed_speedup"], "claimed_speedup": m["speedup"],
                      "met": m["met"] if m["target"] is not None else v["met"], "measured": m})
        v["_report"] = rep
        try:
            sess1 = session(out, args.threads)
            v["rel_error"] = rel_error(y0, run(sess1, x))
            tb, ta, n = time_pair(sess0, sess1, x, budget=args.budget, min_repeats=MIN_REPEATS, max_repeats=MAX_REPEATS)
            v.update(ort_ms_before=tb * 1e3, ort_ms_after=ta * 1e3, ort_runs=n, ort_speedup=tb / ta)
            v["realised_over_claimed"] = v["ort_speedup"] / v["claimed_speedup"] if v["claimed_speedup"] else None
            v["path"] = out
            del sess1
        except Exception as e:
            v["error"] = f"onnxruntime: {type(e).__name__}: {e}"
            print(f"  {name} --{mode} {target:g}: {v['error'][:300]}", file=sys.stderr)
        print(f"  {name} --{mode} {target:g}: claimed {v.get('claimed_speedup', float('nan')):.3f}, "
              f"ORT {v.get('ort_speedup', float('nan')):.3f}", file=sys.stderr, flush=True)
    del sess0

    if not args.no_tract:
        r["tract"] = tract_model(args, shape, src, r["variants"])
        if "error" in r["tract"] or "joint_error" in r["tract"]:
            print(f"  {name} tract: {json.dumps(r['tract'])[:300]}", file=sys.stderr)

    if args.profile:
        r["profile"] = {}
        first = next((v for v in r["variants"] if v.get("path") and v["mode"] == "speedup"), None)
        if first is not None:
            try:
                r["profile"]["original"] = profile_model(src, first["_report"], False, x, args.profile_runs, args.budget,
                                                         args.work, name + "-orig")
            except Exception as e:
                r["profile"]["original"] = {"error": f"{type(e).__name__}: {e}"}
            for v in r["variants"]:
                if v.get("path") and v["mode"] == "speedup":
                    key = f"speedup{v['target']:g}"
                    try:
                        r["profile"][key] = profile_model(v["path"], v["_report"], True, x, args.profile_runs, args.budget,
                                                          args.work, f"{name}-{key}")
                        r["profile"][key]["time_before_ms"] = v["time_before_ms"]
                        r["profile"][key]["time_after_ms"] = v["time_after_ms"]
                    except Exception as e:
                        r["profile"][key] = {"error": f"{type(e).__name__}: {e}"}
        ok = [p for p in r["profile"].values() if "layers" in p]
        r["profile_summary"] = profile_summary(ok)
    for v in r["variants"]:
        v.pop("_report", None)
        p = v.pop("path", None)
        if p and not args.keep and os.path.exists(p):
            os.remove(p)
    return r


# ---------------------------------------------------------------------------------------------
# Tables


def f(v, fmt="{:.2f}"):
    return "—" if v is None or (isinstance(v, float) and not np.isfinite(v)) else fmt.format(v)


def cell(text):
    return str(text).replace("|", "\\|").replace("\n", " ")


TABLE_A = ("| model | target | claimed (modeled) | met (max) | MAC red. | ORT ms before | ORT ms after "
           "| ORT realised | realised/claimed | tract ms before | tract ms after | tract realised | rel. error |\n"
           "|---|---|---|---|---|---|---|---|---|---|---|---|---|")


def rows_a(r):
    if "error_script" in r:
        return [f"| {r['model']} | script error: {cell(r['error_script'])[:200]} |" + " |" * 11]
    out = []
    for v in r["variants"]:
        tgt = f"{'--speedup' if v['mode'] == 'speedup' else '--macs'} {v['target']:g}"
        if "claimed_speedup" not in v:
            out.append(f"| {r['model']} | {tgt} | dac failed: {cell(v.get('error', ''))[:150]} |" + " |" * 10)
            continue
        met = ("met" if v["met"] else "NOT met") + f" ({f(v['max_speedup'])}x)"
        tract = (f(v.get("tract_ms_before")), f(v.get("tract_ms_after")), f(v.get("tract_speedup"), "{:.2f}x"))
        if "tract_error" in v:
            tract = ("tract failed: " + cell(v["tract_error"])[:80], "", "")
        out.append("| " + " | ".join([
            r["model"], tgt, f(v["claimed_speedup"], "{:.2f}x"), met, f(v["mac_reduction"], "{:.2f}x"),
            f(v.get("ort_ms_before")), f(v.get("ort_ms_after")), f(v.get("ort_speedup"), "{:.2f}x"),
            f(v.get("realised_over_claimed")), *tract, f(v.get("rel_error"), "{:.1e}")]) + " |")
    return out


TABLE_B = ("| model | layers | n | median abs err | p90 abs err | max abs err | within 25 % | signed median "
           "| kernel-only median abs | within 25 %, unprofiled scale |\n|---|---|---|---|---|---|---|---|---|---|")


def rows_b(model, summary):
    out = []
    for kind in ("dense_original", "dense_rewrite", "factored"):
        s = summary.get(kind, {"n": 0})
        if not s.get("n"):
            continue
        out.append("| " + " | ".join([model, kind.replace("_", " "), str(s["n"]), f(100 * s["median_abs"], "{:.0f} %"),
                                      f(100 * s["p90_abs"], "{:.0f} %"), f(100 * s["max_abs"], "{:.0f} %"),
                                      f(100 * s["within_25pct"], "{:.0f} %"), f(100 * s["median_signed"], "{:+.0f} %"),
                                      f(100 * s["kernel_only"].get("median_abs", float("nan")), "{:.0f} %"),
                                      f(100 * s.get("unprofiled", {}).get("within_25pct", float("nan")), "{:.0f} %")]) + " |")
    return out


TABLE_C = ("| model | run | kernel ms/run | modeled layers ms | measured layers ms | in modeled layers "
           "| other Conv/Gemm/MatMul/Add/Concat/Split | unattributed reorders | rest (pools, Relu, ...) "
           "| wall ms profiled / unprofiled |\n"
           "|---|---|---|---|---|---|---|---|---|---|")


def rows_c(r):
    out = []
    for key, p in (r.get("profile") or {}).items():
        if "error" in p:
            out.append(f"| {r['model']} | {key} | profile failed: {cell(p['error'])[:150]} |" + " |" * 7)
            continue
        fr = p["fraction"]
        out.append("| " + " | ".join([
            r["model"], key, f(p["kernel_total_ms"]), f(p["modeled_layers_ms"]), f(p["measured_layers_ms"]),
            f(100 * fr["covered_layers"], "{:.1f} %"), f(100 * fr["covered_other"], "{:.1f} %"),
            f(100 * fr["reorder"], "{:.1f} %"), f(100 * fr["rest"], "{:.1f} %"),
            f(p.get("wall_profiled_ms", float("nan"))) + " / " + f(p.get("wall_unprofiled_ms", float("nan")))]) + " |")
    return out


# ---------------------------------------------------------------------------------------------


def floats(s):
    return [float(t) for t in s.split(",") if t.strip()]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("dir")
    ap.add_argument("--dac", default=os.path.join(ROOT, "target", "release", "dac"))
    ap.add_argument("--tract", default=os.path.join(ROOT, "target", "release", "examples", "tract_time"))
    ap.add_argument("--targets", type=floats, default=[1.5, 2.0, 3.0])
    ap.add_argument("--macs-targets", type=floats, default=[2.0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--dac-threads", type=int, default=None,
                    help="`dac onnx --threads` (which time-model table plans); default: --threads")
    ap.add_argument("--dac-args", default="", help="more options for every `dac onnx` call, e.g. \"--cpu avx2\"")
    ap.add_argument("--only", default=None, help="comma-separated model names")
    ap.add_argument("--out", default=None)
    ap.add_argument("--budget", type=float, default=6.0,
                    help="seconds of timed runs per original/rewrite pair (ORT), per model (tract), "
                         "per profiled model")
    ap.add_argument("--no-tract", action="store_true")
    ap.add_argument("--profile", action="store_true")
    ap.add_argument("--profile-runs", type=int, default=None, help="default: about --budget s, 20..300")
    ap.add_argument("--work", default="/tmp/dac-zoo-time")
    ap.add_argument("--keep", action="store_true", help="keep the rewritten models")
    args = ap.parse_args()
    os.makedirs(args.work, exist_ok=True)
    if not args.no_tract and not os.path.exists(args.tract):
        sys.exit(f"{args.tract} missing: cargo build --release --features onnx --example tract_time "
                 "(or pass --no-tract)")

    # `dac onnx --measure` (in --dac-args) loads the onnxruntime library this script runs with.
    os.environ.setdefault("ORT_DYLIB_PATH", ort_library())
    with open(os.path.join(args.dir, "macs.json")) as fh:
        specs = json.load(fh)
    names = list(specs)
    if args.only:
        want = args.only.split(",")
        missing = [n for n in want if n not in specs]
        if missing:
            sys.exit(f"not in macs.json: {', '.join(missing)}")
        names = want

    meta = {
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "command": " ".join(shlex.quote(a) for a in [sys.executable] + sys.argv),
        "cwd": os.getcwd(), "machine": machine(), "affinity": sorted(os.sched_getaffinity(0)),
        "onnxruntime": ort.__version__, "onnx": onnx.__version__, "numpy": np.__version__,
        "threads": args.threads, "dac_threads": args.dac_threads or args.threads,
        "targets": args.targets, "macs_targets": args.macs_targets,
        "budget_s": args.budget, "profile": args.profile, "tract": None if args.no_tract else os.path.realpath(args.tract),
        "dac": os.path.realpath(args.dac),
        "dac_version": subprocess.run([args.dac, "--version"], capture_output=True, text=True).stdout.strip(),
    }
    print(f"onnxruntime {ort.__version__}, {args.threads} thread(s), batch 1, {meta['machine']['cpu']} "
          f"({meta['machine']['cores']} cores), affinity {meta['affinity']}, load {meta['machine']['loadavg_start']}",
          file=sys.stderr)
    results, start = [], time.perf_counter()
    for n in names:
        t = time.perf_counter()
        try:
            r = bench_model(n, specs[n], args)
        except Exception as e:  # one broken model must not lose the others
            r = {"model": n, "error_script": f"{type(e).__name__}: {e}"}
        r["bench_s"] = time.perf_counter() - t
        r["loadavg"] = os.getloadavg()
        results.append(r)
        print(f"{n}: {r['bench_s']:.0f} s", file=sys.stderr, flush=True)
        if args.out:
            write(args.out, meta, results, start, args)
    meta["machine"]["loadavg_end"] = os.getloadavg()
    print(TABLE_A)
    for r in results:
        print("\n".join(rows_a(r)))
    if args.profile:
        print("\nTime model against onnxruntime's profiler, per layer, relative error (modeled - measured) / "
              "measured; measured = kernels + attributed reorders, median over runs:\n")
        print(TABLE_B)
        for r in results:
            if r.get("profile_summary"):
                print("\n".join(rows_b(r["model"], r["profile_summary"])))
        allp = [p for r in results for p in (r.get("profile") or {}).values() if "layers" in p]
        print("\n".join(rows_b("**all**", profile_summary(allp))))
        print("\nShare of the kernel time of a run (median over runs):\n")
        print(TABLE_C)
        for r in results:
            print("\n".join(rows_c(r)))
    if args.out:
        write(args.out, meta, results, start, args)


def write(path, meta, results, start, args):
    meta = dict(meta, total_s=time.perf_counter() - start)
    out = {"meta": meta, "results": results}
    if args.profile:
        allp = [p for r in results for p in (r.get("profile") or {}).values() if "layers" in p]
        out["profile_summary"] = profile_summary(allp)
    with open(path, "w") as fh:
        json.dump(out, fh, indent=1)


if __name__ == "__main__":
    main()
