#!/usr/bin/env python3
"""Time the reference network and its `dac onnx` rewrites in onnxruntime.

Usage (after `cargo run --release --features onnx --example onnx_speed`, which writes the
rewritten models to target/onnx_speed/):

    python3 bench/onnx_speed.py [STEM]          # default fmnist_vgg

Creates bench/.venv with onnxruntime from PyPI on first use. One intra-op thread, sequential
execution, all graph optimisations on; median wall-clock of repeated runs, batch 1 and 32.
"""
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
VENV = os.path.join(HERE, ".venv")


def ensure_venv():
    py = os.path.join(VENV, "bin", "python")
    if not os.path.exists(py):
        subprocess.check_call([sys.executable, "-m", "venv", VENV])
        subprocess.check_call([py, "-m", "pip", "install", "-q", "onnxruntime", "numpy"])
    # A venv's python is a symlink to the base interpreter, so compare prefixes, not executables.
    if os.path.realpath(sys.prefix) != os.path.realpath(VENV) and not os.environ.get("DAC_IN_VENV"):
        env = dict(os.environ, DAC_IN_VENV="1")
        os.execve(py, [py] + sys.argv, env)


def median_time(sess, x, budget):
    name = sess.get_inputs()[0].name
    sess.run(None, {name: x})
    times = []
    start = time.perf_counter()
    while (time.perf_counter() - start < budget or len(times) < 10) and len(times) < 2000:
        t = time.perf_counter()
        sess.run(None, {name: x})
        times.append(time.perf_counter() - t)
    times.sort()
    return times[len(times) // 2]


def main():
    ensure_venv()
    import numpy as np
    import onnxruntime as ort

    stem = sys.argv[1] if len(sys.argv) > 1 else "fmnist_vgg"
    d = os.path.join(ROOT, "target", "onnx_speed")
    names = ["original"] + [f"{t}x-{v}" for t in ("1.5", "2", "3") for v in ("auto", "dac-fused", "dac-multiplier1")]
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    print(f"onnxruntime {ort.__version__} on {stem}, 1 thread, median wall-clock per run")
    print("| model | batch 1 (ms) | speed-up | batch 32 (ms) | speed-up |")
    print("|---|---|---|---|---|")
    base = None
    rng = np.random.default_rng(0)
    for n in names:
        path = os.path.join(d, f"{stem}-{n}.onnx")
        if not os.path.exists(path):
            print(f"| {n} | missing: {path} | | | |")
            continue
        sess = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
        t1 = median_time(sess, rng.random((1, 1, 32, 32), dtype=np.float32), 1.5)
        t32 = median_time(sess, rng.random((32, 1, 32, 32), dtype=np.float32), 3.0)
        if base is None:
            base = (t1, t32)
        print(f"| {stem}-{n} | {t1 * 1e3:.3f} | {base[0] / t1:.2f}x | {t32 * 1e3:.2f} | {base[1] / t32:.2f}x |")


if __name__ == "__main__":
    main()
