#!/usr/bin/env python3
"""Conformance sweep: every model `dac onnx` writes must pass onnx's checker (`full_check`) and
strict shape inference (`strict_mode`, `check_type`, `data_prop`) wherever its input does. An
input that fails them (a hand-built model whose outputs declare no shape, say) must fail with the
same message and no other. Each model runs through every layout and scheme:

    DAC=target/release/dac bench/.venv/bin/python bench/check_conformance.py MODEL.onnx ...

One line per (model, option set): `ok`, `dac error: ...` (printed, not judged: bench/check_variants.py
judges errors), or `DIFFERS: ...` with both messages. Writes into a temporary directory only.
"""
import os
import subprocess
import sys
import tempfile

import onnx

DAC = os.environ.get("DAC", "target/release/dac")
# A forced layout is modeled slow on many layers: --allow-slower lets --macs write it anyway.
OPTION_SETS = {
    "speedup2": ["--speedup", "2"],
    "macs2_dac_fused": ["--macs", "2", "--scheme", "dac", "--layout", "fused", "--allow-slower"],
    "rank2_multiplier1": ["--rank", "2", "--layout", "multiplier1"],
    "rank2_sum": ["--rank", "2", "--layout", "sum"],
    "macs2_decoupled_sum": ["--macs", "2", "--scheme", "decoupled", "--layout", "sum", "--allow-slower"],
    "macs2_decoupled_multiplier1": ["--macs", "2", "--scheme", "decoupled", "--layout", "multiplier1", "--allow-slower"],
    "macs2_channel": ["--macs", "2", "--scheme", "channel"],
    "macs2_spatial": ["--macs", "2", "--scheme", "spatial"],
}


def conformance(path):
    """None, or the first failure of the checker or of strict shape inference."""
    try:
        onnx.checker.check_model(path, full_check=True)
        onnx.shape_inference.infer_shapes(onnx.load(path), check_type=True, strict_mode=True, data_prop=True)
        return None
    except Exception as e:  # noqa: BLE001
        return str(e).strip().splitlines()[0][:200]


def main(models):
    counts = {"ok": 0, "dac error": 0, "DIFFERS": 0}
    with tempfile.TemporaryDirectory() as tmp:
        for model in models:
            expected = conformance(model)
            for name, args in OPTION_SETS.items():
                out = os.path.join(tmp, f"{os.path.basename(model)[:-5]}.{name}.onnx")
                p = subprocess.run([DAC, "onnx", model, "-o", out, "--force", "-q", *args],
                                   capture_output=True, text=True)
                if p.returncode:
                    counts["dac error"] += 1
                    print(f"{model} {name}: dac error: {p.stderr.strip()[:150]}", flush=True)
                    continue
                got = conformance(out)
                os.remove(out)
                if got == expected:
                    counts["ok"] += 1
                    print(f"{model} {name}: ok{' (input fails alike)' if expected else ''}", flush=True)
                else:
                    counts["DIFFERS"] += 1
                    print(f"{model} {name}: DIFFERS: input {expected or 'passes'}; output {got}", flush=True)
    print(", ".join(f"{k}: {v}" for k, v in counts.items()))
    return 1 if counts["DIFFERS"] else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
