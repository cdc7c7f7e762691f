#!/usr/bin/python3
"""Independent check of exported models in models/ (no training).

For each given model stem (default: fmnist_vgg fmnist_alt):
  * reads <stem>.safetensors with the hand-written parser,
  * interprets <stem>.json "ops" with plain torch.nn.functional ops on the test
    images from data/fashion-mnist/ (pixel/255, zero-padded 28->32),
  * compares predictions image-for-image with <stem>.preds and the counts in
    the JSON (test_correct, subset_correct_first_1000),
  * if the onnx package is available: runs onnx.checker on <stem>.onnx, renames
    initializers to the safetensors names if needed (--fix-onnx-names), and
    checks the ONNX Conv/Gemm initializers are bit-identical to the safetensors.

  /usr/bin/python3 scripts/check_exports.py [--fix-onnx-names] [stem ...]
"""
import json
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from train_fmnist import functional_forward, load_split, read_safetensors, rename_onnx_initializers  # noqa: E402

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")


def main():
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    fix = "--fix-onnx-names" in sys.argv
    stems = args or ["fmnist_vgg", "fmnist_alt"]
    torch.set_num_threads(2)
    xte, yte = load_split(os.path.join(ROOT, "data", "fashion-mnist"), "test")
    ok = True
    for stem in stems:
        base = os.path.join(ROOT, "models", stem)
        if not os.path.exists(base + ".json"):
            print(f"{stem}: missing, skipped")
            continue
        info = json.load(open(base + ".json"))
        t, meta = read_safetensors(base + ".safetensors")
        stored = torch.from_numpy(np.frombuffer(open(base + ".preds", "rb").read(), dtype=np.uint8).astype(np.int64))
        n = stored.shape[0]  # 10000 (smaller only for --smoke exports)
        preds = []
        with torch.no_grad():
            for i in range(0, n, 500):
                preds.append(functional_forward(info["ops"], t, xte[i:min(i + 500, n)]))
        logits = torch.cat(preds)
        preds = logits.argmax(1)
        top2 = logits.topk(2, dim=1).values
        gap = top2[:, 0] - top2[:, 1]
        print(f"{stem}: smallest top-1/top-2 logit gap {float(gap.min()):.3e}; "
              f"images with gap < 1e-4: {int((gap < 1e-4).sum())}, < 1e-3: {int((gap < 1e-3).sum())} "
              f"(indices {torch.nonzero(gap < 1e-3).flatten().tolist()})")
        correct = int((preds == yte[:n]).sum())
        sub = int((preds[:1000] == yte[:1000]).sum())
        ndiff = int((preds != stored).sum())
        print(f"{stem}: functional forward {correct}/{n} (json says {info['test_correct']}), "
              f"first 1000 {sub} (json {info['subset_correct_first_1000']}), "
              f"{ndiff} differ from .preds; stored preds correct: {int((stored == yte[:n]).sum())}")
        ok &= ndiff == 0 and correct == info["test_correct"] and sub == info["subset_correct_first_1000"]
        try:
            import onnx
            from onnx import numpy_helper
        except ImportError:
            print("  onnx package missing: ONNX not checked")
            continue
        if not os.path.exists(base + ".onnx"):
            print("  no ONNX file")
            continue
        m = onnx.load(base + ".onnx")
        names = [i.name for i in m.graph.initializer]
        if fix and any(n.startswith("seq.") for n in names):
            prefix_map = {}
            k = 0
            for node in m.graph.node:
                if node.op_type in ("Conv", "Gemm"):
                    pre = node.input[1].rpartition(".")[0]
                    if node.op_type == "Conv":
                        prefix_map[pre] = f"features.{k}"
                        k += 1
            j = 0
            for node in m.graph.node:
                if node.op_type == "Gemm":
                    prefix_map[node.input[1].rpartition(".")[0]] = f"classifier.{j}"
                    j += 1
            rename_onnx_initializers(base + ".onnx", prefix_map)
            m = onnx.load(base + ".onnx")
        onnx.checker.check_model(m)
        inits = {i.name: numpy_helper.to_array(i) for i in m.graph.initializer}
        mism = [n for n, v in t.items() if n not in inits or not np.array_equal(inits[n], v.numpy())]
        print(f"  onnx: opset {m.opset_import[0].version}, inputs {[i.name for i in m.graph.input]}, "
              f"outputs {[o.name for o in m.graph.output]}, {len(inits)} initializers, "
              f"{len(mism)} differ from/missing vs safetensors {mism[:4]}")
        ok &= not mism
    print("ALL OK" if ok else "MISMATCH")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
