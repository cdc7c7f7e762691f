#!/usr/bin/env python3
"""Compare `dac` with what a user would otherwise write: numpy's batched SVD, onnxruntime's Conv,
a memcpy and `cp`. Every ratio is measured in one run, on the same machine, on the same weights.

    python3 bench/compare.py [--reps N] [--quick] [--skip-e2e] [--json FILE]

Creates bench/.venv (numpy, onnxruntime, onnx, safetensors, threadpoolctl from PyPI) on first
use, builds the Rust examples and the `dac` binary in release mode (unless --no-build: then it
uses them as built, and `cargo build --release --features cli --bins --examples` must have built
them from the same commit), and prints medians and ratios against the targets of the speed issue.
The end-to-end part (`dac convert`) is skipped with a message when target/release/dac is missing.

In process, numpy's batched SVD and the dac library call (`examples/bench_decompose`: the
`*_into_ms` figures with reusable output buffers when the example reports them, else the plain
ones; which one is printed) are measured in the same run, and dac / memcpy divides two figures of
the same bench_decompose process. End to end, `dac convert`, `cp` and `dac convert --svd
nalgebra` run interleaved (outputs removed untimed before each run), and the numpy script's time
is its own, from loading to saving.

Not part of `cargo test`: speed targets are never asserted in tests.

numpy is timed in a child process with OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE removed from its
environment (they only exist to keep old OpenBLAS builds working on this CPU, and slow a current
one down); the kernel OpenBLAS then picks is reported via threadpoolctl.
"""
import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
VENV = os.path.join(HERE, ".venv")
VENV_PY = os.path.join(VENV, "bin", "python")
PACKAGES = ["numpy", "onnxruntime", "onnx", "safetensors", "threadpoolctl"]

# The 13 VGG16 convolutions (in, out), 3x3, padding 1.
VGG16 = [(3, 64), (64, 64), (64, 128), (128, 128), (128, 256), (256, 256), (256, 256), (256, 512),
         (512, 512), (512, 512), (512, 512), (512, 512), (512, 512)]
VGG16_NAMES = [f"features.{i}" for i in (0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28)]
VGG16_FC = [("classifier.0", 25088, 4096), ("classifier.3", 4096, 4096), ("classifier.6", 4096, 1000)]


def ensure_venv():
    """Re-executes this script inside bench/.venv, creating it first if needed."""
    if os.path.realpath(sys.prefix) == os.path.realpath(VENV):
        return
    if not os.path.exists(VENV_PY):
        print(f"creating {VENV} ...", file=sys.stderr)
        subprocess.check_call([sys.executable, "-m", "venv", VENV])
        subprocess.check_call([VENV_PY, "-m", "pip", "install", "--quiet", *PACKAGES])
    os.execv(VENV_PY, [VENV_PY, *sys.argv])


def median_ms(fn, reps):
    fn()  # warm-up
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1e3)
    return statistics.median(times)


def vgg16_weights(np, with_fc=False):
    rng = np.random.default_rng(0)
    tensors = {}
    for name, (c, n) in zip(VGG16_NAMES, VGG16):
        tensors[f"{name}.weight"] = (rng.standard_normal((n, c, 3, 3), dtype=np.float32) * 0.05)
        tensors[f"{name}.bias"] = rng.standard_normal(n, dtype=np.float32) * 0.01
    if with_fc:
        for name, i, o in VGG16_FC:
            tensors[f"{name}.weight"] = rng.standard_normal((o, i), dtype=np.float32) * 0.01
            tensors[f"{name}.bias"] = rng.standard_normal(o, dtype=np.float32) * 0.01
    return tensors


def numpy_decompose(np, tensors, rank):
    """What a DAC script in numpy does: batched SVD of the per-channel matrices, then factors."""
    out = {}
    for key, w in tensors.items():
        if not key.endswith(".weight") or w.ndim != 4:
            out[key] = w
            continue
        n, c, kh, kw = w.shape
        m = w.reshape(n, c, kh * kw).transpose(1, 0, 2)  # [C, N, K]
        _, s, vt = np.linalg.svd(m, full_matrices=False)
        r = min(rank, s.shape[1])
        root = np.sqrt(s[:, :r])  # [C, r]
        dw = vt[:, :r, :] * root[:, :, None]  # [C, r, K]
        pw = np.matmul(m, np.swapaxes(vt[:, :r, :], 1, 2)) / root[:, None, :]  # [C, N, r]
        base = key[: -len(".weight")]
        out[f"{base}.depthwise.weight"] = np.ascontiguousarray(dw.reshape(c * r, 1, kh, kw))
        out[f"{base}.pointwise.weight"] = np.ascontiguousarray(pw.transpose(1, 0, 2).reshape(n, c * r, 1, 1))
    return out


def worker_numpy(reps):
    import numpy as np
    from threadpoolctl import threadpool_info, threadpool_limits

    tensors = vgg16_weights(np)
    weights = [w for k, w in tensors.items() if k.endswith(".weight")]
    mats = [w.reshape(w.shape[0], w.shape[1], 9).transpose(1, 0, 2) for w in weights]
    dst = [np.empty_like(w) for w in weights]

    def svd_only():
        for m in mats:
            np.linalg.svd(m, full_matrices=False)

    def copy_existing():
        for d, w in zip(dst, weights):
            np.copyto(d, w)

    res = {
        "weights": int(sum(w.size for w in weights)),
        "numpy_svd_ms": median_ms(svd_only, reps),
        "numpy_decompose_r3_ms": median_ms(lambda: numpy_decompose(np, tensors, 3), reps),
        "memcpy_existing_ms": median_ms(copy_existing, reps),
        "memcpy_fresh_ms": median_ms(lambda: [w.copy() for w in weights], reps),
        "numpy_version": np.__version__,
        # The batched SVD loops over small matrices; BLAS threads matter little, but the
        # single-thread ratios use this figure.
        "numpy_svd_1t_ms": None,
        "blas": [{k: i.get(k) for k in ("internal_api", "version", "architecture", "num_threads")}
                 for i in threadpool_info()],
    }
    with threadpool_limits(1):
        res["numpy_svd_1t_ms"] = median_ms(svd_only, reps)
    print(json.dumps(res))


def worker_numpy_e2e(src, dst, rank):
    import numpy as np
    from safetensors.numpy import load_file, save_file

    t = time.perf_counter()
    tensors = load_file(src)
    save_file(numpy_decompose(np, tensors, rank), dst)
    print(json.dumps({"numpy_e2e_ms": (time.perf_counter() - t) * 1e3}))


def worker_ort(reps):
    import numpy as np
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(1)
    n = c = 256
    x = rng.standard_normal((1, c, 56, 56), dtype=np.float32)

    def session(nodes, inits):
        graph = helper.make_graph(
            nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, c, 56, 56])],
            [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, n, 56, 56])],
            [numpy_helper.from_array(a, k) for k, a in inits.items()])
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
        model.ir_version = 8  # readable by any current onnxruntime
        onnx.checker.check_model(model)
        so = ort.SessionOptions()
        so.intra_op_num_threads = 1
        so.inter_op_num_threads = 1
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        return ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])

    res = {"onnxruntime_version": ort.__version__}
    w = rng.standard_normal((n, c, 3, 3), dtype=np.float32) * 0.05
    b = rng.standard_normal(n, dtype=np.float32) * 0.01
    dense = session([helper.make_node("Conv", ["x", "w", "b"], ["y"], pads=[1, 1, 1, 1])], {"w": w, "b": b})
    res["ort_dense_ms"] = median_ms(lambda: dense.run(None, {"x": x}), reps)
    for r in (1, 2, 4):
        dw = rng.standard_normal((c * r, 1, 3, 3), dtype=np.float32)
        pw = rng.standard_normal((n, c * r, 1, 1), dtype=np.float32)
        s = session([helper.make_node("Conv", ["x", "dw"], ["m"], pads=[1, 1, 1, 1], group=c),
                     helper.make_node("Conv", ["m", "pw", "b"], ["y"])], {"dw": dw, "pw": pw, "b": b})
        res[f"ort_pair_r{r}_ms"] = median_ms(lambda: s.run(None, {"x": x}), reps)
    print(json.dumps(res))


def run_json(cmd, env=None):
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env).stdout
    return json.loads(out.strip().splitlines()[-1])


def target_dir():
    return os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target"))


def timed_process(cmd, fresh=None):
    """Wall time (ms) and peak RSS (MiB) of one child process; `fresh` (an output path) is
    removed first, untimed, so that no run pays for freeing the previous run's file."""
    if fresh and os.path.exists(fresh):
        os.remove(fresh)
    t = time.perf_counter()
    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(p.pid, 0)
    wall = (time.perf_counter() - t) * 1e3
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"{cmd} failed: {p.stderr.read().decode()}")
    return wall, usage.ru_maxrss / 1024


def peak_rss_mib(cmd, fresh=None):
    """Peak RSS (MiB) of `cmd` as GNU time reports it (`/usr/bin/time -f %M`), else from
    wait4. wait4's figure of a child of this Python process can include the interpreter's own
    pages from before the exec (fork copies the page tables), so it is only an upper bound."""
    if fresh and os.path.exists(fresh):
        os.remove(fresh)
    gnu_time = shutil.which("time", path="/usr/bin:/bin")
    if gnu_time is None:
        return timed_process(cmd)[1], "wait4 (upper bound)"
    with tempfile.NamedTemporaryFile("r", suffix=".rss") as f:
        subprocess.run([gnu_time, "-f", "%M", "-o", f.name, *cmd], check=True, stdout=subprocess.DEVNULL)
        return int(f.read().split()[-1]) / 1024, "/usr/bin/time %M"


def interleaved(cmds, reps):
    """Runs each (name, cmd, out) in turn, `reps` rounds (after one untimed warm-up round), so
    that load changes hit every command alike; returns name -> list of (ms, MiB)."""
    runs = {name: [] for name, _, _ in cmds}
    for i in range(reps + 1):
        for name, cmd, out in cmds:
            r = timed_process(cmd, out)
            if i > 0:
                runs[name].append(r)
    return runs


def e2e(results, reps, quick):
    """`dac convert --rank 3` against a numpy script doing the same and against `cp`: on the 13
    VGG16 convolutions (~59 MB), and on a full VGG16-shaped checkpoint (~553 MB, the three
    linear layers copied unchanged) with the converter's peak RSS."""
    import numpy as np
    from safetensors.numpy import save_file

    dac = os.path.join(target_dir(), "release", "dac")
    if not os.path.exists(dac):
        print(f"\n[e2e] skipped: {dac} not found (cargo build --release --features cli --bins)")
        return
    tmp = tempfile.mkdtemp(prefix="dac-bench-", dir=os.environ.get("DAC_BENCH_TMP"))
    try:
        convs = os.path.join(tmp, "vgg16-convs.safetensors")
        save_file(vgg16_weights(np), convs)
        results["convs_file_mib"] = os.path.getsize(convs) / 2**20
        out = os.path.join(tmp, "out.safetensors")
        copy = os.path.join(tmp, "copy.safetensors")
        convert = [dac, "convert", convs, "-o", out, "--rank", "3", "--quiet"]
        runs = interleaved([("dac", convert, out), ("cp", ["cp", convs, copy], copy),
                            ("dac_nalgebra", convert + ["--svd", "nalgebra"], out)], reps)
        results["dac_convert_convs_ms"] = statistics.median(r[0] for r in runs["dac"])
        results["dac_convert_convs_peak_rss_mib"], results["rss_source"] = peak_rss_mib(convert, out)
        results["dac_convert_convs_nalgebra_ms"] = statistics.median(r[0] for r in runs["dac_nalgebra"])
        results["copy_convs_ms"] = statistics.median(r[0] for r in runs["cp"])
        env = clean_env()
        # The script's own time from loading to saving (interpreter start-up and imports
        # excluded, which favours numpy).
        numpy_runs = []
        for _ in range(max(3, reps)):
            if os.path.exists(out):
                os.remove(out)
            numpy_runs.append(run_json([sys.executable, __file__, "--worker", "numpy-e2e", convs, out], env)
                              ["numpy_e2e_ms"])
        results["numpy_e2e_ms"] = statistics.median(numpy_runs)
        if quick:
            return
        full = os.path.join(tmp, "vgg16.safetensors")
        save_file(vgg16_weights(np, with_fc=True), full)
        results["vgg16_file_mib"] = os.path.getsize(full) / 2**20
        convert = [dac, "convert", full, "-o", out, "--rank", "3", "--quiet"]
        runs = interleaved([("cp", ["cp", full, copy], copy), ("dac", convert, out)], max(3, reps))
        results["cp_full_ms"] = statistics.median(r[0] for r in runs["cp"])
        results["dac_convert_full_ms"] = statistics.median(r[0] for r in runs["dac"])
        results["dac_convert_full_peak_rss_mib"], results["rss_source"] = peak_rss_mib(convert, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def clean_env():
    env = dict(os.environ)
    env.pop("OPENBLAS_CORETYPE", None)
    env.pop("OPENBLAS_L2_SIZE", None)
    return env


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reps", type=int, default=11)
    ap.add_argument("--quick", action="store_true", help="skip the 553 MB checkpoint")
    ap.add_argument("--skip-e2e", action="store_true")
    ap.add_argument("--json", help="also write the results here")
    ap.add_argument("--no-build", action="store_true", help="use the example binaries already built")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("args", nargs="*", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.worker == "numpy":
        return worker_numpy(a.reps)
    if a.worker == "numpy-e2e":
        return worker_numpy_e2e(a.args[0], a.args[1], 3)
    if a.worker == "ort":
        return worker_ort(a.reps)

    if not a.no_build:
        subprocess.check_call(["cargo", "build", "--release", "--quiet", "--features", "cli", "--bin", "dac",
                               "--example", "bench_decompose", "--example", "bench_exec"], cwd=ROOT)
    ex = os.path.join(target_dir(), "release", "examples")
    me = [sys.executable, __file__]
    res = {"date": time.strftime("%Y-%m-%d %H:%M"), "loadavg_before": os.getloadavg()[0]}
    res.update(run_json(me + ["--worker", "numpy", "--reps", str(a.reps)], clean_env()))
    for threads in (2, 1):
        rust = run_json([os.path.join(ex, "bench_decompose"), "--reps", str(a.reps), "--threads", str(threads),
                         "--rank", "3", "--no-nalgebra"])
        for k, v in rust.items():
            if k.endswith("_ms"):
                res[f"rust_{k[:-3]}_{threads}t_ms"] = v
        # The library call measured: with reusable output buffers when the example has it.
        for label, keys in (("r3", ("decompose_gram_into_ms", "decompose_gram_ms")),
                            ("full", ("decompose_gram_full_into_ms", "decompose_gram_full_ms"))):
            key = next(k for k in keys if k in rust)
            res[f"dac_{label}_{threads}t_ms"] = rust[key]
            res[f"dac_{label}_{threads}t_key"] = key
    res.update(run_json(me + ["--worker", "ort", "--reps", str(a.reps)]))
    res.update({f"dac_{k}": v for k, v in run_json([os.path.join(ex, "bench_exec"), "--reps", str(a.reps)]).items()})
    if not a.skip_e2e:
        e2e(res, max(3, a.reps // 2), a.quick)
    res["loadavg_after"] = os.getloadavg()[0]

    print(json.dumps(res, indent=1))
    rows = []

    def ratio(name, num, den, target, better_low=True):
        """A table row `num / den`; `target` None: for information, no target."""
        if res.get(num) is not None and res.get(den) is not None:
            v = res[num] / res[den]
            if target is None:
                rows.append((name, f"{res[num]:.2f} / {res[den]:.2f} ms", f"{v:.2f}", "-", "-"))
                return
            ok = v <= target if better_low else v >= target
            rows.append((name, f"{res[num]:.2f} / {res[den]:.2f} ms", f"{v:.2f}", f"{'<=' if better_low else '>='} {target}",
                         "yes" if ok else "NO"))

    # In process: numpy's SVD and dac from this run; dac / memcpy from the same bench_decompose
    # process (its own copy of the same bytes into existing buffers).
    for t in (2, 1):
        numpy_key = "numpy_svd_ms" if t == 2 or res.get("numpy_svd_1t_ms") is None else "numpy_svd_1t_ms"
        for label, name in (("r3", "r=3"), ("full", "full rank")):
            print(f"dac {name}, {t} thread(s): {res[f'dac_{label}_{t}t_key']}")
            ratio(f"numpy svd / dac {name}, {t} thread(s)", numpy_key, f"dac_{label}_{t}t_ms", 10, False)
            ratio(f"dac {name} / memcpy, {t} thread(s)", f"dac_{label}_{t}t_ms",
                  f"rust_memcpy_existing_{t}t_ms", 4)
    ratio("numpy script / dac convert (convs, e2e)", "numpy_e2e_ms", "dac_convert_convs_ms", 10, False)
    ratio("dac convert / cp (convs, e2e)", "dac_convert_convs_ms", "copy_convs_ms", 4)
    ratio("dac convert --svd nalgebra / cp (convs, e2e)", "dac_convert_convs_nalgebra_ms", "copy_convs_ms", None)
    ratio("dac convert / cp (full VGG16)", "dac_convert_full_ms", "cp_full_ms", 2)
    if "dac_convert_full_peak_rss_mib" in res:
        v = res["dac_convert_full_peak_rss_mib"] / res["vgg16_file_mib"]
        rows.append(("peak RSS / input size (full VGG16)", f"{res['dac_convert_full_peak_rss_mib']:.0f} / "
                     f"{res['vgg16_file_mib']:.0f} MiB", f"{v:.2f}", "<= 1.5", "yes" if v <= 1.5 else "NO"))
    if "dac_convert_convs_peak_rss_mib" in res:
        v = res["dac_convert_convs_peak_rss_mib"] / res["convs_file_mib"]
        rows.append(("peak RSS / input size (convs)", f"{res['dac_convert_convs_peak_rss_mib']:.0f} / "
                     f"{res['convs_file_mib']:.0f} MiB", f"{v:.2f}", "-", "-"))
    if "rss_source" in res:
        print(f"peak RSS measured with {res['rss_source']}")
    ratio("dac dense / ort dense (1 thread)", "dac_dense_ms", "ort_dense_ms", 2)
    for r in (1, 2, 4):
        ratio(f"dac pair r={r} / ort pair r={r} (1 thread)", f"dac_pair_r{r}_ms", f"ort_pair_r{r}_ms", 2)
    print("\n| measure | values | ratio | target | met |\n| --- | --- | --- | --- | --- |")
    for row in rows:
        print("| " + " | ".join(row) + " |")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(res, f, indent=1)


if __name__ == "__main__":
    if "--worker" not in sys.argv:
        ensure_venv()
    main()
