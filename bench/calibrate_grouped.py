#!/usr/bin/env python3
"""The time model's grouped convolutions whose groups are whole channel blocks (RegNet's and
ResNeXt's later stages), timed warm and fitted with a per-group term, then added to a time table
as `conv_grouped_blocks` entries.

    bench/.venv/bin/python bench/calibrate_grouped.py --table src/time/onnxruntime-x86_64.json \\
        [--threads 1] [--pin 1] [--repeats 3] [--points 120] [--raw bench/results-DATE-calibration-grouped.json]
    bench/.venv/bin/python bench/calibrate_grouped.py --table TABLE.json --raw RAW.json --refit

Why. onnxruntime runs a grouped convolution whose groups hold whole channel blocks (C/g and
N/g multiples of 16) in its blocked layout, and the crate times it by the `dense` (or
`pointwise`) entry on its MACs. That entry was fitted on convolutions of one group. In the zoo,
regnet_x_400mf's 25-group 3x3 convolutions on 400 channels at 7x7 ran 97 µs in the network
against 55 µs modeled, and resnext50_32x4d's 32-group 3x3 on 1024 channels at 7x7 387 against
268 (BENCHMARKS.md, "Depthwise convolutions over a wider grid, and groups of
whole blocks"): a fixed cost per group that a
fit of single-group convolutions cannot see.

What is measured. As bench/calibrate_depthwise.py (whose sweep, fit and table code this uses):
each shape one bench/calibrate.py model, timed warm in interleaved groups with the sentinel,
--repeats sweeps, each shape keeping its fastest. Shapes: a seeded sample of 3x3 (and 3x1 /
1x3, 1x1) convolutions of 2 to 64 groups of 16, 32 or 64 channels in and out, strides 1 and 2,
maps 7x7 to 56x56.

Fit. Non-negative least squares of relative error on `one, macs_padded, in_elems, out_elems,
group_taps` (`group_taps` = groups x kernel taps x output rows: each group's pass of each tap
over a row has a fixed cost), one entry for both alignments (every shape here is aligned). Of
the terms tried on the rows (groups; groups x output rows; groups x output positions; this one)
it fitted them best (median relative error 13.4 % without a term, 10.7 % with it). A table with
the entry times such convolutions by it; a table without it by their class as before. `--refit`
fits the rows of --raw again.
"""
import os
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from calibrate import conv_spec, ok  # noqa: E402
from calibrate_depthwise import arguments, fit_entries, run  # noqa: E402

OP = "conv_grouped_blocks"
KERNELS = {(3, 3): 3, (3, 1): 1, (1, 3): 1, (1, 1): 1}  # kernel: share of the sample
WIDTHS = [16, 32, 64]
GROUPS = [2, 4, 8, 16, 25, 32, 64]
MAPS = [7, 14, 28, 56]


def shapes(points, seed):
    """A seeded sample of about `points` grouped convolutions of whole blocks, per kernel in
    proportion to its share."""
    rng = np.random.default_rng(seed)
    out = []
    for (kh, kw), share in KERNELS.items():
        pool = [conv_spec(w * g, w * g, g, kh, kw, st, h) for w in WIDTHS for g in GROUPS if w * g <= 2048
                for st in (1, 2) for h in MAPS]
        pool = [s for s in pool if ok(s) and s["class"] in ("dense", "pointwise")]
        k = min(len(pool), round(points * share / sum(KERNELS.values())))
        out += [pool[i] for i in sorted(rng.choice(len(pool), size=k, replace=False))]
    return out


def entries(rows):
    """The `conv_grouped_blocks` entries fitted from the rows of one thread count."""
    template = {"op": OP, "note": "bench/calibrate_grouped.py: groups of whole blocks, fastest of the sweeps"}
    return fit_entries(rows, ["group_taps"], template)


def main():
    args = arguments(__doc__, 120, "calibration-grouped")
    run(args, shapes(args.points, args.seed), entries, lambda e: e.get("op") == OP, "grouped_command")


if __name__ == "__main__":
    main()
