"""onnxruntime helpers shared by the bench scripts: one way to open a session, run it, time two
sessions against each other, take a median of profiler microseconds, and describe the machine.

Imported by zoo.py, zoo_time.py, shipped_time.py, calibrate.py and calibrate_matmul.py (run
from any directory: each script puts bench/ on sys.path).
"""

import os
import platform
import subprocess
import time

import numpy as np
import onnxruntime as ort


def session(model, threads, profile_prefix=None, optimized=None):
    """A CPU session on `model` (a path or serialized bytes): `threads` intra-op threads, one
    inter-op thread, sequential execution, every graph optimisation, warnings silenced; with
    `profile_prefix` the profiler on, with `optimized` the optimised graph written there."""
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.log_severity_level = 3
    if profile_prefix:
        opts.enable_profiling = True
        opts.profile_file_prefix = profile_prefix
    if optimized:
        opts.optimized_model_filepath = optimized
    return ort.InferenceSession(model, opts, providers=["CPUExecutionProvider"])


def run(sess, x):
    """The first output of `sess` on the input `x`."""
    return sess.run(None, {sess.get_inputs()[0].name: x})[0]


def predict(sess, x, batch=500):
    """Top-1 class of every row of `x` (argmax of the first output, lowest index on ties), in
    batches of `batch`."""
    return np.concatenate([run(sess, x[i:i + batch]).argmax(1) for i in range(0, len(x), batch)])


def time_pair(s0, s1, x, budget=None, repeats=None, min_repeats=5, max_repeats=1000):
    """Interleaved runs of two sessions on `x` (the order alternating every round), after two
    warm-up runs each: `repeats` rounds, or as many as fit in about `budget` seconds (clamped to
    `min_repeats..max_repeats`). Returns (median s of s0, median s of s1, rounds)."""
    for s in (s0, s1):
        run(s, x); run(s, x)
    if repeats is None:
        t = time.perf_counter(); run(s0, x); run(s1, x); pair = time.perf_counter() - t
        repeats = int(min(max_repeats, max(min_repeats, budget / max(pair, 1e-6))))
    t0, t1 = [], []
    for i in range(repeats):
        order = ((s0, t0), (s1, t1)) if i % 2 == 0 else ((s1, t1), (s0, t0))
        for s, ts in order:
            t = time.perf_counter(); run(s, x); ts.append(time.perf_counter() - t)
    return float(np.median(t0)), float(np.median(t1)), repeats


def grouped_median(values):
    """Median of whole-microsecond values (onnxruntime's profiler), interpolated within the
    median's 1 us class; the plain median of values that are not whole."""
    v = np.sort(np.asarray(values, dtype=np.float64))
    if len(v) == 0:
        return float("nan")
    if not np.all(v == np.round(v)):
        return float(np.median(v))
    m = float(np.median(v))
    if m != round(m):  # even count straddling two classes
        return m
    below, at = float(np.sum(v < m)), float(np.sum(v == m))
    return m if at == 0 else m - 0.5 + (len(v) / 2.0 - below) / at


def machine():
    """CPU model, family (the CPUID family number) and count (lscpu), platform, and the load
    average when called."""
    info = {"cpu": None, "cores": os.cpu_count(), "platform": platform.platform()}
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        for line in out.splitlines():
            k, _, v = line.partition(":")
            if k.strip() == "Model name":
                info["cpu"] = v.strip()
            elif k.strip() == "CPU family" and v.strip().isdigit():
                info["cpu_family"] = int(v.strip())
            elif k.strip() == "CPU(s)":
                info["cores"] = int(v.strip())
    except OSError:
        pass
    info["loadavg_start"] = os.getloadavg()
    return info


def ort_library():
    """The shared library of the onnxruntime package this script imports (for `dac onnx
    --measure`, ORT_DYLIB_PATH), or "" when it has none."""
    capi = os.path.join(os.path.dirname(ort.__file__), "capi")
    libs = sorted(f for f in os.listdir(capi) if f.startswith("libonnxruntime.so"))
    return os.path.join(capi, libs[0]) if libs else ""
