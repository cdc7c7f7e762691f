#!/usr/bin/env python3
"""Accuracy against measured speed-up on the shipped Fashion-MNIST networks: `dac onnx --speedup X`
(time-planned, scheme auto) against MAC-planned DAC (`dac onnx --macs X --scheme dac --allow-slower`).

    bench/.venv/bin/python bench/shipped_time.py [--nets vgg,alt] [--targets 1.25,1.5,1.75,2,2.5,3]
        [--dac PATH] [--threads 1] [--budget SECONDS] [--speedup-args=--measure] [--matched]
        [--out bench/results-DATE-shipped-time.json]
        [--work TMPDIR] [--keep]

Goal checked (issue #16): on the shipped networks the accuracy at a given measured speed-up is at
least that of MAC-planned DAC at the same measured speed-up.

For each network models/fmnist_<net>.onnx (fmnist_alt.onnx: scripts/export_onnx.py alt) and each
target X, two rewrites: "speedup" = `dac onnx NET.onnx --speedup X`, "macs-dac" =
`dac onnx NET.onnx --macs X --scheme dac --allow-slower` (MACs only, as issue #13 planned them:
without --allow-slower, layers modeled slower than dense would stay dense) (both `--json
--force --threads T`). For each, and for
the original:
- claimed: the report's modeled "speedup", plan met, MAC "reduction" (with --speedup-args=--measure,
  the speedup variant's claim is the speed-up dac measured in onnxruntime, and "met" its
  verdict; ORT_DYLIB_PATH defaults to this script's onnxruntime library);
- measured speed-up: onnxruntime CPU, intra-op threads --threads (default 1), inter-op 1,
  sequential, ORT_ENABLE_ALL, batch 1, one test image; one session of the original shared by all
  rewrites; per rewrite, interleaved original/rewrite runs after a warm-up, about --budget
  seconds per pair (20..20000 runs each); ratio of medians;
- top-1 accuracy on all 10,000 test images (data/fashion-mnist, preprocessed as
  bench/accuracy.py's load_test: pixel/255 zero-padded to 32x32), onnxruntime, batches of 500,
  argmax (lowest index on ties). The original's predictions are also compared with
  models/fmnist_<net>.preds.

--speedup-args: `{net}` in it becomes the network's stem (fmnist_vgg, fmnist_alt), for per-network
files such as `--input-moments DIR/{net}.safetensors` (scripts/synthetic_moments.py).

--matched: after the targets, one more "speedup" point per macs-dac point, `--speedup S` where S
is that point's measured speed-up rounded up to 0.01 (the goal compares accuracies at the same
measured speed-up; the fixed grid of targets may have no --speedup point near a macs-dac one).

Comparison: for every macs-dac point, the best accuracy among "speedup" points whose measured
speed-up is at least its measured speed-up (the goal holds at that point if it is >= the macs-dac
accuracy; "no point" if no speedup point is that fast), with the test images only one of the
two classifies correctly and the exact two-sided McNemar p-value that both are equally accurate
(is a miss more than chance?), and the same the other way round (for information). Prints markdown tables; writes every number, machine, onnxruntime version,
date and command line to --out (JSON). A failing rewrite is recorded and skipped.
"""
import argparse
import datetime
import json
import math
import os
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
from accuracy import load_test  # noqa: E402
from ortutil import machine, ort_library, predict, session, time_pair  # noqa: E402
from zoo import run_dac  # noqa: E402

MIN_REPEATS, MAX_REPEATS = 20, 20000


def bench_net(net, args, data):
    src = os.path.join(ROOT, "models", f"fmnist_{net}.onnx")
    r = {"net": net, "file": os.path.relpath(src, ROOT), "points": []}
    if not os.path.exists(src):
        r["error"] = f"{src} missing (bench/.venv/bin/python scripts/export_onnx.py {net})"
        return r
    x, y = data
    x1 = x[:1].copy()
    sess0 = session(src, args.threads)
    p0 = predict(sess0, x)
    ref = np.frombuffer(open(os.path.join(ROOT, "models", f"fmnist_{net}.preds"), "rb").read(), np.uint8)
    r["original"] = {"correct": int((p0 == y).sum()), "accuracy": float((p0 == y).mean()),
                     "differs_from_preds": np.nonzero(p0 != ref)[0].tolist()}
    ctx = (src, x, x1, y, sess0, p0)
    for target in args.targets:
        for variant, flags in (("speedup", ["--speedup", f"{target:g}", *speedup_args(args, net)]),
                               ("macs-dac", ["--macs", f"{target:g}", "--scheme", "dac", "--allow-slower"])):
            r["points"].append(bench_point(args, net, variant, target, flags, ctx))
    if args.matched:
        for p in [p for p in r["points"] if p["variant"] == "macs-dac" and p.get("measured_speedup", 0) > 1.005]:
            target = math.ceil(100 * p["measured_speedup"]) / 100
            v = bench_point(args, net, "speedup", target, ["--speedup", f"{target:g}", *speedup_args(args, net)], ctx)
            v["matched_to_macs"] = p["target"]
            r["points"].append(v)
    r["comparison"] = compare(r["points"])
    return r


def speedup_args(args, net):
    """--speedup-args for `net`, `{net}` replaced by its stem (fmnist_vgg, fmnist_alt)."""
    return args.speedup_args.replace("{net}", f"fmnist_{net}").split()


def bench_point(args, net, variant, target, flags, ctx):
    """One rewrite: dac's report, onnxruntime's accuracy and measured speed-up."""
    src, x, x1, y, sess0, p0 = ctx
    v = {"variant": variant, "target": target}
    out = os.path.join(args.work, f"{net}-{variant}{target:g}.onnx")
    rep, secs, err = run_dac(args.dac, src, out, flags + ["--threads", str(args.threads)])
    v["convert_s"] = secs
    if err:
        v["error"] = err
        print(f"  {net} {variant} {target:g}: dac failed: {err[:300]}", file=sys.stderr)
        return v
    plan = rep.get("plan") or {}
    v.update({
        "claimed_speedup": rep.get("speedup"), "met": plan.get("met"), "max_speedup": plan.get("max_speedup"),
        "mac_reduction": rep.get("reduction"), "time_before_ms": rep.get("time_before_ms"),
        "time_after_ms": rep.get("time_after_ms"),
        "layers": [{"name": c["name"], "scheme": c["scheme"], "rank": c["rank"], "layout": c.get("layout")}
                   for c in rep.get("converted") or []],
        "dense": [s["name"] for s in rep.get("skipped") or []],
    })
    if rep.get("measured"):  # --speedup-args=--measure: the claim dac measured
        v.update(modeled_speedup=v["claimed_speedup"], claimed_speedup=rep["measured"]["speedup"],
                 met=rep["measured"]["met"], measured_by_dac=rep["measured"])
    try:
        s1 = session(out, args.threads)
        p1 = predict(s1, x)
        RIGHT[id(v)] = p1 == y
        v["correct"] = int((p1 == y).sum())
        v["accuracy"] = float((p1 == y).mean())
        v["agreement_with_original"] = float((p1 == p0).mean())
        tb, ta, n = time_pair(sess0, s1, x1, budget=args.budget, min_repeats=MIN_REPEATS,
                              max_repeats=MAX_REPEATS)
        v.update(ort_ms_before=tb * 1e3, ort_ms_after=ta * 1e3, ort_runs=n, measured_speedup=tb / ta)
        del s1
    except Exception as e:
        v["error"] = f"onnxruntime: {type(e).__name__}: {e}"
    if not args.keep and os.path.exists(out):
        os.remove(out)
    print(f"  {net} {variant} {target:g}: claimed {v.get('claimed_speedup', float('nan')):.3f}, measured "
          f"{v.get('measured_speedup', float('nan')):.3f}, accuracy {100 * v.get('accuracy', float('nan')):.2f} %",
          file=sys.stderr, flush=True)
    return v


# Per point (keyed by id), which test images it classifies correctly; kept out of the JSON.
RIGHT = {}


def mcnemar(mine, other):
    """Images only `mine` gets right, only `other` gets right, and the exact two-sided McNemar
    p-value (binomial on the discordant images) that both are equally accurate."""
    a, b = int((mine & ~other).sum()), int((other & ~mine).sum())
    n = a + b
    tail = sum(math.comb(n, k) for k in range(min(a, b) + 1)) / 2 ** n if n else 1.0
    return {"only_this": a, "only_other": b, "p_value": min(1.0, 2 * tail)}


def compare(points):
    """For each point of one variant, the best accuracy of the other variant at a measured
    speed-up at least as high."""
    ok = [p for p in points if "measured_speedup" in p and "accuracy" in p]
    out = {}
    for mine, other in (("macs-dac", "speedup"), ("speedup", "macs-dac")):
        rows = []
        for p in (q for q in ok if q["variant"] == mine):
            faster = [q for q in ok if q["variant"] == other and q["measured_speedup"] >= p["measured_speedup"]]
            best = max(faster, key=lambda q: q["accuracy"]) if faster else None
            rows.append({
                "target": p["target"], "measured_speedup": p["measured_speedup"], "accuracy": p["accuracy"],
                "best_other_accuracy": best["accuracy"] if best else None,
                "best_other_target": best["target"] if best else None,
                "best_other_measured_speedup": best["measured_speedup"] if best else None,
                "other_at_least_as_accurate": (best["accuracy"] >= p["accuracy"]) if best else None,
                "mcnemar": mcnemar(RIGHT[id(p)], RIGHT[id(best)]) if best and id(p) in RIGHT and id(best) in RIGHT
                else None,
            })
        out[f"{mine}_vs_{other}"] = rows
    g = out["macs-dac_vs_speedup"]
    out["goal"] = {
        "points": len(g),
        "holds": sum(1 for c in g if c["other_at_least_as_accurate"] is True),
        "fails": sum(1 for c in g if c["other_at_least_as_accurate"] is False),
        "no_speedup_point_as_fast": sum(1 for c in g if c["other_at_least_as_accurate"] is None),
    }
    out["goal"]["holds_everywhere"] = out["goal"]["holds"] == len(g) and len(g) > 0
    return out


def pct(v):
    return "—" if v is None else f"{100 * v:.2f} %"


def x_(v):
    return "—" if v is None else f"{v:.2f}x"


def print_net(r):
    print(f"\n### fmnist_{r['net']}\n")
    if "error" in r:
        print(f"error: {r['error']}")
        return
    o = r["original"]
    print(f"original: accuracy {pct(o['accuracy'])} ({o['correct']}/10000), "
          f"{len(o['differs_from_preds'])} predictions differ from fmnist_{r['net']}.preds\n")
    print("| variant | target | claimed (modeled) | met (max) | MAC red. | ORT ms orig | ORT ms | measured speed-up "
          "| accuracy | layers (scheme/rank) |\n|---|---|---|---|---|---|---|---|---|---|")
    for p in sorted(r["points"], key=lambda p: (p["variant"], p["target"])):
        if "claimed_speedup" not in p or "error" in p:
            print(f"| {p['variant']} | {p['target']:g} | failed: {p.get('error', '')[:150]} | | | | | | | |")
            continue
        met = ("met" if p["met"] else "NOT met") + f" ({x_(p['max_speedup'])})"
        layers = ", ".join(f"{c['name'].split('/')[2] if c['name'].count('/') >= 2 else c['name']}="
                           f"{c['scheme']}/{c['rank']}" for c in p["layers"])
        print("| " + " | ".join([p["variant"], f"{p['target']:g}", x_(p["claimed_speedup"]), met, x_(p["mac_reduction"]),
                                 f"{p['ort_ms_before']:.3f}", f"{p['ort_ms_after']:.3f}", x_(p["measured_speedup"]),
                                 pct(p["accuracy"]), layers]) + " |")
    c = r["comparison"]
    print("\nMAC-planned DAC point → best `--speedup` accuracy at a measured speed-up at least as high:\n")
    print("| macs-dac target | measured | accuracy | best --speedup accuracy (target, measured) | goal "
          "| images only DAC / only --speedup gets right, McNemar p |\n|---|---|---|---|---|---|")
    for row in c["macs-dac_vs_speedup"]:
        best = ("no --speedup point as fast" if row["best_other_accuracy"] is None else
                f"{pct(row['best_other_accuracy'])} ({row['best_other_target']:g}, {x_(row['best_other_measured_speedup'])})")
        verdict = {True: "holds", False: "FAILS", None: "—"}[row["other_at_least_as_accurate"]]
        m = row.get("mcnemar")
        test = "—" if m is None else f"{m['only_this']} / {m['only_other']}, p = {m['p_value']:.2g}"
        print(f"| {row['target']:g} | {x_(row['measured_speedup'])} | {pct(row['accuracy'])} | {best} | {verdict} "
              f"| {test} |")
    print("\n`--speedup` point → best MAC-planned DAC accuracy at a measured speed-up at least as high:\n")
    print("| speedup target | measured | accuracy | best macs-dac accuracy (target, measured) | --speedup at least as accurate |\n"
          "|---|---|---|---|---|")
    for row in c["speedup_vs_macs-dac"]:
        best = ("no macs-dac point as fast" if row["best_other_accuracy"] is None else
                f"{pct(row['best_other_accuracy'])} ({row['best_other_target']:g}, {x_(row['best_other_measured_speedup'])})")
        verdict = {None: "—", True: "no", False: "yes"}[row["other_at_least_as_accurate"]]
        if row["best_other_accuracy"] is not None and row["best_other_accuracy"] == row["accuracy"]:
            verdict = "yes (equal)"
        print(f"| {row['target']:g} | {x_(row['measured_speedup'])} | {pct(row['accuracy'])} | {best} | {verdict} |")
    g = c["goal"]
    print(f"\nGoal on fmnist_{r['net']}: {'HOLDS' if g['holds_everywhere'] else 'does NOT hold'} at every MAC-planned "
          f"DAC point ({g['holds']} hold, {g['fails']} fail, {g['no_speedup_point_as_fast']} without a --speedup "
          f"point as fast, of {g['points']})")


def floats(s):
    return [float(t) for t in s.split(",") if t.strip()]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nets", default="vgg,alt")
    ap.add_argument("--targets", type=floats, default=[1.25, 1.5, 1.75, 2.0, 2.5, 3.0])
    ap.add_argument("--dac", default=os.path.join(ROOT, "target", "release", "dac"))
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--budget", type=float, default=4.0, help="seconds of timed runs per original/rewrite pair")
    ap.add_argument("--speedup-args", default="",
                    help="more options for the --speedup rewrites, e.g. --speedup-args=--measure; `{net}` is "
                         "replaced by the network's stem, e.g. --speedup-args='--input-moments DIR/{net}.safetensors'")
    ap.add_argument("--matched", action="store_true",
                    help="also plan --speedup S at each MAC-planned point's measured speed-up S (rounded up to 0.01)")
    ap.add_argument("--out", default=None)
    ap.add_argument("--work", default="/tmp/dac-shipped-time")
    ap.add_argument("--keep", action="store_true", help="keep the rewritten models")
    args = ap.parse_args()
    os.environ.setdefault("ORT_DYLIB_PATH", ort_library())
    os.makedirs(args.work, exist_ok=True)
    meta = {
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "command": " ".join(shlex.quote(a) for a in [sys.executable] + sys.argv),
        "cwd": os.getcwd(), "machine": machine(), "affinity": sorted(os.sched_getaffinity(0)),
        "onnxruntime": ort.__version__, "onnx": onnx.__version__, "numpy": np.__version__,
        "threads": args.threads, "targets": args.targets, "budget_s": args.budget,
        "dac": os.path.realpath(args.dac),
        "dac_version": subprocess.run([args.dac, "--version"], capture_output=True, text=True).stdout.strip(),
    }
    print(f"onnxruntime {ort.__version__}, {args.threads} thread(s), batch 1 for timing, {meta['machine']['cpu']} "
          f"({meta['machine']['cores']} cores), affinity {meta['affinity']}, load {meta['machine']['loadavg_start']}",
          file=sys.stderr)
    data = load_test(np.float32)
    results, start = [], time.perf_counter()
    for net in args.nets.split(","):
        t = time.perf_counter()
        try:
            r = bench_net(net, args, data)
        except Exception as e:
            r = {"net": net, "error": f"{type(e).__name__}: {e}", "points": []}
        r["bench_s"] = time.perf_counter() - t
        r["loadavg"] = os.getloadavg()
        results.append(r)
        print(f"{net}: {r['bench_s']:.0f} s", file=sys.stderr, flush=True)
        if args.out:
            write(args.out, meta, results, start)
    meta["machine"]["loadavg_end"] = os.getloadavg()
    for r in results:
        print_net(r)
    if args.out:
        write(args.out, meta, results, start)


def write(path, meta, results, start):
    with open(path, "w") as f:
        json.dump({"meta": dict(meta, total_s=time.perf_counter() - start), "results": results}, f, indent=1)


if __name__ == "__main__":
    main()
