#!/usr/bin/env python3
"""A/B timing of two `dac` binaries on the same `dac convert` job, alternating run by run.

    python3 bench/ab_convert.py OLD_DAC NEW_DAC INPUT.safetensors [--reps N] -- CONVERT_ARGS...

Prints the median and minimum wall time of each binary. The input is, for example, the file of
the 13 VGG16 convolutions that bench/compare.py builds (`vgg16_weights` saved with safetensors).
"""
import argparse
import os
import statistics
import subprocess
import tempfile
import time


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("old")
    ap.add_argument("new")
    ap.add_argument("input")
    ap.add_argument("--reps", type=int, default=41)
    ap.add_argument("args", nargs=argparse.REMAINDER)
    a = ap.parse_args()
    args = [x for x in a.args if x != "--"]
    bins = [("old", a.old), ("new", a.new)]
    times = {name: [] for name, _ in bins}
    out = os.path.join(tempfile.mkdtemp(prefix="dac-ab-"), "out.safetensors")
    for i in range(a.reps):
        for name, binary in bins if i % 2 == 0 else reversed(bins):
            start = time.perf_counter()
            subprocess.run([binary, "convert", a.input, "-o", out, "--quiet", "--force", *args], check=True)
            times[name].append((time.perf_counter() - start) * 1000)
    for name, t in times.items():
        print(f"{name} {' '.join(args)}: median {statistics.median(t):.1f} ms, min {min(t):.1f} ms ({len(t)} runs)")


if __name__ == "__main__":
    main()
