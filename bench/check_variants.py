#!/usr/bin/env python3
"""Robustness sweep: `dac onnx` over every model of a directory (scripts/export_variants.py)
with several option sets. For each run: no panic; an error leaves no output behind; a written
model loads and runs in onnxruntime with finite outputs (printed: the relative difference to the
original on one random input, and the report's totals); the written model passes onnx's checker
(`full_check`) and strict shape inference wherever the input does (an input that fails them, such
as a hand-built model whose outputs declare no shape, must fail with the same message, no other);
the input file is unchanged.

    DAC=target/release/dac bench/.venv/bin/python bench/check_variants.py DIR [--to-opsets 18,19,20,21] [--fp16]

`--to-opsets` first writes copies of `mixed.onnx` and `r18_opset17.onnx` converted to those
opsets by onnx's version converter (torch 1.13 exports up to opset 17); `--fp16` copies of
`mixed.onnx` and `r18_opset13.onnx` with float16 weights and activations (float32 inputs and
outputs) by onnxconverter-common's converter (`bench/.venv/bin/pip install onnxconverter-common`).
"""
import glob
import hashlib
import os
import subprocess
import sys

import numpy as np
import onnxruntime as ort

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from check_conformance import conformance  # noqa: E402  (onnx's checker + strict shape inference)

DAC = os.environ.get("DAC", "/work/main/target/release/dac")
MODES = {
    "full": ["--energy", "1", "--allow-slower"],
    "rank9": ["--rank", "9"],
    "speedup2": ["--speedup", "2"],
    "macs2": ["--macs", "2"],
    "energy": ["--energy", "0.9"],
    "auto_macs": ["--macs", "1.5", "--scheme", "auto"],
}


def digest(p):
    return hashlib.sha256(open(p, "rb").read()).hexdigest()


def feeds(sess):
    out = {}
    rng = np.random.default_rng(0)
    for i in sess.get_inputs():
        # A symbolic batch is 1, symbolic spatial dimensions 64.
        shape = [d if isinstance(d, int) else (1 if k < 2 else 64) for k, d in enumerate(i.shape)]
        dtype = {"tensor(float16)": np.float16, "tensor(double)": np.float64}.get(i.type, np.float32)
        out[i.name] = rng.standard_normal(shape).astype(dtype)
    return out


def run(path, f):
    so = ort.SessionOptions()
    so.log_severity_level = 3
    s = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
    return s.run(None, {k: v for k, v in f.items() if k in {i.name for i in s.get_inputs()}})


def main(d):
    outdir = os.path.join(d, "out")
    os.makedirs(outdir, exist_ok=True)
    for model in sorted(glob.glob(os.path.join(d, "*.onnx"))):
        name = os.path.basename(model)[:-5]
        before, checked = digest(model), conformance(model)
        try:
            s = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
            f = feeds(s)
            ref = run(model, f)
        except Exception as e:  # noqa: BLE001
            print(f"{name}: original does not run in onnxruntime: {str(e)[:100]}")
            ref, f = None, None
        modes = dict(MODES)
        if "initsinputs" in name:
            modes["frozen"] = ["--speedup", "2", "--freeze-input-weights"]
        for mode, args in modes.items():
            out = os.path.join(outdir, f"{name}.{mode}.onnx")
            for p in glob.glob(out + "*"):
                os.remove(p)
            r = subprocess.run([DAC, "onnx", model, "-o", out, "--force", *args], capture_output=True, text=True)
            tail = (r.stderr.strip().splitlines() or [""])[-1][:150]
            if "panicked" in r.stderr:
                print(f"{name} {mode}: PANIC {tail}")
                continue
            left = [p for p in os.listdir(outdir) if p.startswith(f"{name}.{mode}")]
            if r.returncode != 0:
                print(f"{name} {mode}: error ({tail}){' LEFT ' + str(left) if left else ''}")
                continue
            summary = [l for l in r.stdout.splitlines() if "MAC" in l or "time" in l.lower()][-2:]
            msg = ""
            if ref is not None:
                try:
                    got = run(out, f)
                    diff = max(float(np.max(np.abs(a - b))) for a, b in zip(ref, got))
                    scale = max(float(np.max(np.abs(a))) for a in ref)
                    fin = all(np.isfinite(g).all() for g in got)
                    msg = f"rel diff {diff / scale:.2e} finite={fin}"
                except Exception as e:  # noqa: BLE001
                    msg = f"ORT FAILS: {str(e)[:200]}"
            c = conformance(out)
            if c != checked:
                msg += f" ONNX CHECK FAILS: {c} (input: {checked or 'passes'})"
            print(f"{name} {mode}: ok {msg} | {' / '.join(s.strip()[:90] for s in summary)}")
        if digest(model) != before:
            print(f"{name}: INPUT MODIFIED")


def upgrade(d, opsets):
    import onnx
    from onnx import version_converter
    for name in ("mixed", "r18_opset17"):
        m = onnx.load(os.path.join(d, name + ".onnx"))
        for v in opsets:
            c = version_converter.convert_version(m, v)
            onnx.checker.check_model(c)
            onnx.save(c, os.path.join(d, f"{name}_to{v}.onnx"))


def to_fp16(d):
    import warnings
    import onnx
    from onnxconverter_common import float16
    warnings.filterwarnings("ignore", module="onnxconverter_common")  # tiny weights rounded
    for name in ("mixed", "r18_opset13"):
        m = float16.convert_float_to_float16(onnx.load(os.path.join(d, name + ".onnx")), keep_io_types=True)
        onnx.save(m, os.path.join(d, f"{name}_fp16.onnx"))


if "--fp16" in sys.argv:
    to_fp16(sys.argv[1])
if "--to-opsets" in sys.argv:
    upgrade(sys.argv[1], [int(v) for v in sys.argv[sys.argv.index("--to-opsets") + 1].split(",")])
main(sys.argv[1])
