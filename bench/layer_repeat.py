#!/usr/bin/env python3
"""The time model per layer against the zoo's original networks profiled several times, in
rounds spread over the run: how much of the per-layer error is the machine's minute-to-minute
speed, and how the model does against each layer's quietest measurement.

    taskset -c 1 bench/.venv/bin/python bench/layer_repeat.py /work/zoo-full [--rounds 3] [--budget 2]
        [--only resnet18,mobilenet_v2] [--out bench/results-DATE-layer-repeat.json]
    bench/.venv/bin/python bench/layer_repeat.py /work/zoo-full --rescore RAW.json [--out NEW.json]

`--rescore` measures nothing: it takes the layers' measured times from a previous run's JSON and
asks the `dac` binary (a new time table, say) for their modeled times again, so that two models
are scored on the same measurements.

Each original network is profiled as `bench/zoo_time.py --profile` profiles it (its
`profile_model`: kernels plus attributed layout reorders per layer, median over the runs of one
profile), once per round, every network in turn before the next round, so that a network's
profiles lie minutes apart. The modeled time of each layer is the one `dac onnx --json`
reports for the original layer (any target gives the same; `--speedup 2` is used).

Printed: per round, the share of layers within 25 % of their measured time; then the same
against the median over the rounds and against the fastest round (the machine at its quietest:
the table was fitted to quiet timings); and the share of layers whose slowest round took more
than 1.25x their fastest. Over all layers and per network.
"""
import argparse
import json
import os
import sys
import tempfile

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
from ortutil import machine  # noqa: E402
from zoo import run_dac, seeded_input  # noqa: E402
from zoo_time import profile_model  # noqa: E402


def within(modeled, measured):
    rel = (np.asarray(modeled) - np.asarray(measured)) / np.asarray(measured)
    return float(np.mean(np.abs(rel) <= 0.25))


def scores(layers):
    """{label: share within 25 %} for the layers' rounds, median and fastest, and the spread."""
    modeled = [l["modeled_ms"] for l in layers]
    rounds = np.array([l["measured_ms"] for l in layers])  # layers x rounds
    out = {f"round {k + 1}": within(modeled, rounds[:, k]) for k in range(rounds.shape[1])}
    out["median of rounds"] = within(modeled, np.median(rounds, axis=1))
    out["fastest round"] = within(modeled, rounds.min(axis=1))
    out["spread > 1.25x"] = float(np.mean(rounds.max(axis=1) / rounds.min(axis=1) > 1.25))
    return out


def modeled_ms(report):
    """{layer: modeled time of the original layer} from a `dac onnx --json` report."""
    out = {c["name"]: c["time_before_ms"] for c in report.get("converted") or []}
    out.update({s["name"]: s["time_ms"] for s in report.get("skipped") or [] if s.get("time_ms") is not None})
    return out


def rescore(nets, args):
    """Fills `nets` with the layers of --rescore's run, modeled by this run's `dac`."""
    with open(args.rescore) as f:
        old = json.load(f)
    args.rounds, args.budget = old["rounds"], old["budget_s"]
    for n, net in nets.items():
        model = modeled_ms(net["report"])
        for l in old["layers"][n]:
            net["layers"][l["layer"]] = dict(l, modeled_ms=model[l["layer"]], modeled_ms_before=l["modeled_ms"])


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("dir")
    ap.add_argument("--dac", default=os.path.join(ROOT, "target", "release", "dac"))
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--budget", type=float, default=2.0, help="seconds of profiled runs per network and round")
    ap.add_argument("--only", default=None)
    ap.add_argument("--out")
    ap.add_argument("--rescore", metavar="RAW", help="no profiling: the measured times of RAW, modeled anew")
    args = ap.parse_args()
    specs = json.load(open(os.path.join(args.dir, "macs.json")))
    names = args.only.split(",") if args.only else list(specs)
    work = tempfile.mkdtemp()
    nets = {}
    for n in names:
        src = os.path.join(args.dir, specs[n]["file"])
        rep, _, err = run_dac(args.dac, src, os.path.join(work, "r.onnx"), ["--speedup", "2"])
        if err:
            sys.exit(f"{n}: dac failed: {err[:300]}")
        nets[n] = {"src": src, "report": rep, "x": seeded_input([1] + list(specs[n]["input"][1:])), "layers": {}}
    if args.rescore:
        rescore(nets, args)
    for k in range(0 if args.rescore else args.rounds):
        for n, net in nets.items():
            prof = profile_model(net["src"], net["report"], False, net["x"], None, args.budget, work, f"{n}-{k}")
            for l in prof["layers"]:
                rec = net["layers"].setdefault(l["layer"], {"layer": l["layer"], "modeled_ms": l["modeled_ms"],
                                                            "measured_ms": []})
                rec["measured_ms"].append(l["measured_ms"])
        print(f"round {k + 1} done", file=sys.stderr, flush=True)
    timed = {n: [l for l in net["layers"].values() if min(l["measured_ms"]) > 0] for n, net in nets.items()}
    timed["**all**"] = [l for ls in timed.values() for l in ls]
    table = {n: scores(ls) for n, ls in timed.items()}
    cols = list(table["**all**"])
    print("| network | layers | " + " | ".join(cols) + " |\n|---|---|" + "---|" * len(cols))
    for n, s in table.items():
        print(f"| {n} | {len(timed[n])} | " + " | ".join(f"{100 * s[c]:.1f} %" for c in cols) + " |")
    if args.out:
        out = {"command": " ".join(sys.argv), "machine": machine(), "rescored": args.rescore, "rounds": args.rounds, "budget_s": args.budget,
               "scores": table, "layers": {n: list(net["layers"].values()) for n, net in nets.items()}}
        with open(args.out, "w") as f:
            json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()
