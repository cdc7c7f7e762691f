#!/usr/bin/python3
"""Train and export the Fashion-MNIST reference networks used by the `dac` crate.

Two architectures (select with --arch):
  vgg : the paper's CIFAR-VGG layout scaled down (13 3x3 convs, widths 16..128)
  alt : a differently shaped net (5x5 kernels, stride-2 convs, grouped convs,
        global average pooling) used to check that rank planning is not tuned
        to a single network.

After training, every BatchNorm is folded into its preceding conv, the folded
float32 model is evaluated on the 10,000 test images, and the following files
are written to --out-dir (default: models/):
  fmnist_<arch>.safetensors  folded weights (F32)
  fmnist_<arch>.json         op list + accuracy metadata
  fmnist_<arch>.preds        10,000 bytes: predicted class of each test image
  fmnist_<arch>.onnx         folded model (opset 13), if export succeeds

Uses only torch + numpy (safetensors is written and re-read by hand).
Run with Debian's CPU torch:  /usr/bin/python3 scripts/train_fmnist.py --arch vgg
"""
import argparse
import gzip
import json
import math
import os
import random
import struct
import sys
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

DATA_DIR_DEFAULT = "/usr/share/datasets/fashion-mnist"


# --------------------------------------------------------------------------
# data
# --------------------------------------------------------------------------
def read_idx_gz(path):
    with gzip.open(path, "rb") as f:
        raw = f.read()
    zero, dtype_code, ndim = struct.unpack(">HBB", raw[:4])
    assert zero == 0 and dtype_code == 0x08, "expected unsigned byte idx file"
    dims = struct.unpack(">" + "I" * ndim, raw[4:4 + 4 * ndim])
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    return data.reshape(dims)


def load_split(data_dir, split):
    prefix = "train" if split == "train" else "t10k"
    x = read_idx_gz(os.path.join(data_dir, f"{prefix}-images-idx3-ubyte.gz"))
    y = read_idx_gz(os.path.join(data_dir, f"{prefix}-labels-idx1-ubyte.gz"))
    # pixel/255 float32, zero pad 28x28 -> 32x32 (2 each side)
    x = torch.from_numpy(x.astype(np.float32) / np.float32(255.0)).unsqueeze(1)
    x = F.pad(x, (2, 2, 2, 2))
    y = torch.from_numpy(y.astype(np.int64))
    return x, y


def augment(xb, gen):
    """Random translation by up to 2 px (random 32x32 crop of a 36x36 zero-padded
    image) and random horizontal flip."""
    n = xb.shape[0]
    xp = F.pad(xb, (2, 2, 2, 2))  # 36x36
    dy = torch.randint(0, 5, (n,), generator=gen)
    dx = torch.randint(0, 5, (n,), generator=gen)
    ar = torch.arange(32)
    rows = (dy[:, None] + ar[None, :])[:, :, None]  # n,32,1
    cols = (dx[:, None] + ar[None, :])[:, None, :]  # n,1,32
    bidx = torch.arange(n)[:, None, None]
    out = xp[:, 0][bidx, rows, cols].unsqueeze(1)
    flip = torch.rand(n, generator=gen) < 0.5
    out = torch.where(flip[:, None, None, None], out.flip(-1), out)
    return out.contiguous()


# --------------------------------------------------------------------------
# architectures
# --------------------------------------------------------------------------
# Each feature layer spec: ("conv", cin, cout, k, stride, pad, groups) |
#                          ("maxpool", 2, 2) | ("avgpool_global",)
# Each classifier spec: list of (in, out) linears, ReLU (+Dropout) between.
def arch_spec(arch):
    if arch == "vgg":
        feats = []
        cin = 1
        for block in [[16, 16], [32, 32], [64, 64, 64], [128, 128, 128], [128, 128, 128]]:
            for cout in block:
                feats.append(("conv", cin, cout, 3, 1, 1, 1))
                cin = cout
            feats.append(("maxpool", 2, 2))
        feats.append(("flatten",))
        cls = [(128, 128), (128, 10)]
        return feats, cls
    if arch == "alt":
        feats = [
            ("conv", 1, 32, 5, 1, 2, 1),      # 32x32
            ("conv", 32, 64, 3, 2, 1, 1),     # 16x16
            ("conv", 64, 64, 3, 1, 1, 4),     # 16x16, groups 4
            ("conv", 64, 128, 5, 2, 2, 1),    # 8x8
            ("conv", 128, 128, 3, 1, 1, 1),   # 8x8
            ("maxpool", 2, 2),                # 4x4
            ("conv", 128, 128, 3, 1, 1, 2),   # 4x4, groups 2
            ("avgpool_global",),              # 128x1x1 -> flatten
        ]
        cls = [(128, 64), (64, 10)]
        return feats, cls
    raise ValueError(arch)


class Net(nn.Module):
    """Training network: conv(no bias) -> BN -> ReLU."""

    def __init__(self, arch):
        super().__init__()
        feats, cls = arch_spec(arch)
        self.feats_spec = feats
        self.cls_spec = cls
        self.convs = nn.ModuleList()
        self.bns = nn.ModuleList()
        for s in feats:
            if s[0] == "conv":
                _, cin, cout, k, st, p, g = s
                self.convs.append(nn.Conv2d(cin, cout, k, st, p, groups=g, bias=False))
                self.bns.append(nn.BatchNorm2d(cout))
        self.linears = nn.ModuleList([nn.Linear(a, b) for a, b in cls])
        self.dropout = nn.Dropout(0.5)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x):
        ci = 0
        for s in self.feats_spec:
            if s[0] == "conv":
                x = F.relu(self.bns[ci](self.convs[ci](x)))
                ci += 1
            elif s[0] == "maxpool":
                x = F.max_pool2d(x, s[1], s[2])
            elif s[0] == "avgpool_global":
                x = x.mean(dim=(2, 3))
            elif s[0] == "flatten":
                x = torch.flatten(x, 1)
        for j, lin in enumerate(self.linears):
            x = lin(x)
            if j + 1 < len(self.linears):
                x = self.dropout(F.relu(x))
        return x


# --------------------------------------------------------------------------
# folding + folded model
# --------------------------------------------------------------------------
def fold(net):
    """Return an ordered dict name -> float32 tensor of folded weights."""
    tensors = {}
    for i, (conv, bn) in enumerate(zip(net.convs, net.bns)):
        w = conv.weight.detach().double()
        b = conv.bias.detach().double() if conv.bias is not None else torch.zeros(w.shape[0], dtype=torch.float64)
        scale = bn.weight.detach().double() / torch.sqrt(bn.running_var.detach().double() + bn.eps)
        wf = w * scale[:, None, None, None]
        bf = bn.bias.detach().double() + (b - bn.running_mean.detach().double()) * scale
        tensors[f"features.{i}.weight"] = wf.float().contiguous()
        tensors[f"features.{i}.bias"] = bf.float().contiguous()
    for j, lin in enumerate(net.linears):
        tensors[f"classifier.{j}.weight"] = lin.weight.detach().float().contiguous().clone()
        tensors[f"classifier.{j}.bias"] = lin.bias.detach().float().contiguous().clone()
    return tensors


def ops_list(arch):
    feats, cls = arch_spec(arch)
    ops = []
    ci = 0
    for s in feats:
        if s[0] == "conv":
            _, cin, cout, k, st, p, g = s
            ops.append({"op": "conv", "name": f"features.{ci}", "in_channels": cin,
                        "out_channels": cout, "kernel": [k, k], "stride": [st, st],
                        "pad": [p, p, p, p], "dilation": [1, 1], "groups": g})
            ops.append({"op": "relu"})
            ci += 1
        elif s[0] == "maxpool":
            ops.append({"op": "maxpool", "kernel": s[1], "stride": s[2]})
        elif s[0] == "avgpool_global":
            ops.append({"op": "avgpool_global"})  # C,H,W -> C,1,1 (mean over H*W)
            ops.append({"op": "flatten"})
        elif s[0] == "flatten":
            ops.append({"op": "flatten"})
    for j, (a, b) in enumerate(cls):
        ops.append({"op": "linear", "name": f"classifier.{j}", "in_features": a, "out_features": b})
        if j + 1 < len(cls):
            ops.append({"op": "relu"})
    return ops


def functional_forward(ops, t, x):
    """Generic interpreter of the ops list with plain torch.nn.functional ops."""
    for op in ops:
        kind = op["op"]
        if kind == "conv":
            top, bottom, left, right = op["pad"]
            x = F.pad(x, (left, right, top, bottom))
            x = F.conv2d(x, t[op["name"] + ".weight"], t[op["name"] + ".bias"],
                         stride=tuple(op["stride"]), dilation=tuple(op["dilation"]),
                         groups=op["groups"])
        elif kind == "relu":
            x = F.relu(x)
        elif kind == "maxpool":
            x = F.max_pool2d(x, op["kernel"], op["stride"], ceil_mode=False)
        elif kind == "avgpool_global":
            x = x.mean(dim=(2, 3), keepdim=True)
        elif kind == "flatten":
            x = torch.flatten(x, 1)
        elif kind == "linear":
            if x.dim() > 2:
                x = torch.flatten(x, 1)
            x = F.linear(x, t[op["name"] + ".weight"], t[op["name"] + ".bias"])
        else:
            raise ValueError(kind)
    return x


class FoldedNet(nn.Module):
    """Plain float32 folded model (convs with bias, relu, pools, linears); used
    for evaluation and ONNX export."""

    def __init__(self, arch, tensors):
        super().__init__()
        layers = []
        self.onnx_names = {}  # "seq.<k>" -> safetensors prefix
        feats, cls = arch_spec(arch)
        ci = 0
        for s in feats:
            if s[0] == "conv":
                _, cin, cout, k, st, p, g = s
                c = nn.Conv2d(cin, cout, k, st, p, groups=g, bias=True)
                c.weight.data.copy_(tensors[f"features.{ci}.weight"])
                c.bias.data.copy_(tensors[f"features.{ci}.bias"])
                self.onnx_names[f"seq.{len(layers)}"] = f"features.{ci}"
                layers += [c, nn.ReLU()]
                ci += 1
            elif s[0] == "maxpool":
                layers.append(nn.MaxPool2d(s[1], s[2]))
            elif s[0] == "avgpool_global":
                layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
            elif s[0] == "flatten":
                layers.append(nn.Flatten())
        for j, (a, b) in enumerate(cls):
            l = nn.Linear(a, b)
            l.weight.data.copy_(tensors[f"classifier.{j}.weight"])
            l.bias.data.copy_(tensors[f"classifier.{j}.bias"])
            self.onnx_names[f"seq.{len(layers)}"] = f"classifier.{j}"
            layers.append(l)
            if j + 1 < len(cls):
                layers.append(nn.ReLU())
        self.seq = nn.Sequential(*layers)

    def forward(self, x):
        return self.seq(x)


# --------------------------------------------------------------------------
# safetensors (hand written)
# --------------------------------------------------------------------------
def write_safetensors(path, tensors, metadata):
    header = {}
    blobs = []
    off = 0
    for name, t in tensors.items():
        assert t.dtype == torch.float32
        b = t.contiguous().numpy().astype("<f4").tobytes()
        header[name] = {"dtype": "F32", "shape": list(t.shape), "data_offsets": [off, off + len(b)]}
        blobs.append(b)
        off += len(b)
    header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    hj = json.dumps(header, separators=(",", ":")).encode("utf-8")
    hj += b" " * ((8 - len(hj) % 8) % 8)  # pad header to 8-byte alignment
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(hj)))
        f.write(hj)
        for b in blobs:
            f.write(b)


def read_safetensors(path):
    with open(path, "rb") as f:
        raw = f.read()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + n].decode("utf-8"))
    base = 8 + n
    meta = header.pop("__metadata__", {})
    out = {}
    for name, info in header.items():
        assert info["dtype"] == "F32"
        b0, b1 = info["data_offsets"]
        arr = np.frombuffer(raw[base + b0:base + b1], dtype="<f4").reshape(info["shape"])
        out[name] = torch.from_numpy(arr.copy())
    return out, meta


def rename_onnx_initializers(path, prefix_map):
    """Rename ONNX initializers seq.<k>.weight -> features.<i>.weight etc. so they
    match the safetensors names. Needs the `onnx` package (Debian python3-onnx);
    silently skipped if it is missing."""
    try:
        import onnx
    except ImportError:
        print("onnx package missing: initializer names left as exported", flush=True)
        return
    m = onnx.load(path)
    ren = {}
    for init in m.graph.initializer:
        pre, _, leaf = init.name.rpartition(".")
        if pre in prefix_map:
            ren[init.name] = prefix_map[pre] + "." + leaf
    for init in m.graph.initializer:
        init.name = ren.get(init.name, init.name)
    for node in m.graph.node:
        for k, inp in enumerate(node.input):
            if inp in ren:
                node.input[k] = ren[inp]
    onnx.checker.check_model(m)
    onnx.save(m, path)
    print(f"renamed {len(ren)} ONNX initializers; checker OK", flush=True)


# --------------------------------------------------------------------------
def evaluate(model, x, y, bs=500):
    model.eval()
    preds = []
    with torch.no_grad():
        for i in range(0, x.shape[0], bs):
            preds.append(model(x[i:i + bs]).argmax(dim=1))
    p = torch.cat(preds)
    return p, int((p == y[: p.shape[0]]).sum())


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--arch", choices=["vgg", "alt"], default="vgg")
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--max-lr", type=float, default=0.1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--data-dir", default=DATA_DIR_DEFAULT)
    ap.add_argument("--out-dir", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "models"))
    ap.add_argument("--smoke", action="store_true", help="tiny run: few batches, small test subset")
    ap.add_argument("--smoke-batches", type=int, default=2)
    args = ap.parse_args()

    torch.manual_seed(args.seed)
    random.seed(args.seed)
    np.random.seed(args.seed)
    torch.set_num_threads(args.threads)
    torch.use_deterministic_algorithms(True)

    xtr, ytr = load_split(args.data_dir, "train")
    xte, yte = load_split(args.data_dir, "test")
    if args.smoke:
        xte, yte = xte[:1000], yte[:1000]
    print(f"torch {torch.__version__}, arch={args.arch}, train {tuple(xtr.shape)}, test {tuple(xte.shape)}", flush=True)

    net = Net(args.arch)
    nparams = sum(p.numel() for p in net.parameters())
    print(f"params: {nparams}", flush=True)
    decay, no_decay = [], []
    for n_, p in net.named_parameters():
        (no_decay if (p.dim() == 1) else decay).append(p)
    opt = torch.optim.SGD([{"params": decay, "weight_decay": 5e-4},
                           {"params": no_decay, "weight_decay": 0.0}],
                          lr=args.max_lr, momentum=0.9, nesterov=True)
    steps_per_epoch = math.ceil(xtr.shape[0] / args.batch)
    if args.smoke:
        steps_per_epoch = args.smoke_batches
    total_steps = steps_per_epoch * args.epochs
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=args.max_lr, total_steps=total_steps,
                                                pct_start=0.25, div_factor=10.0,
                                                final_div_factor=100.0)
    gen = torch.Generator().manual_seed(args.seed)

    t0 = time.time()
    for ep in range(args.epochs):
        net.train()
        perm = torch.randperm(xtr.shape[0], generator=gen)
        tl, tc, tn = 0.0, 0, 0
        te = time.time()
        for s in range(steps_per_epoch):
            idx = perm[s * args.batch:(s + 1) * args.batch]
            xb = augment(xtr[idx], gen)
            yb = ytr[idx]
            out = net(xb)
            loss = F.cross_entropy(out, yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            tl += float(loss) * yb.shape[0]
            tc += int((out.argmax(1) == yb).sum())
            tn += yb.shape[0]
            if args.smoke or (s + 1) % 100 == 0:
                print(f"  ep {ep + 1} step {s + 1}/{steps_per_epoch} loss {tl / tn:.4f} "
                      f"acc {tc / tn:.4f} {time.time() - te:.1f}s", flush=True)
        _, corr = evaluate(net, xte, yte)
        print(f"epoch {ep + 1}/{args.epochs}: train loss {tl / tn:.4f} train acc {tc / tn:.4f} "
              f"test acc {corr / xte.shape[0]:.4f} epoch {time.time() - te:.0f}s total {time.time() - t0:.0f}s",
              flush=True)
    train_seconds = time.time() - t0
    net.eval()

    # ---------------- export ----------------
    name = f"fmnist_{args.arch}" + ("_smoke" if args.smoke else "")
    out_dir = os.path.abspath(args.out_dir)
    os.makedirs(out_dir, exist_ok=True)
    tensors = fold(net)
    ops = ops_list(args.arch)

    # BN-net vs folded-net sanity check
    folded = FoldedNet(args.arch, tensors).eval()
    with torch.no_grad():
        a = net(xte[:256])
        b = folded(xte[:256])
    print(f"max |logits(bn) - logits(folded)| on 256 images: {float((a - b).abs().max()):.3e}", flush=True)

    preds, correct = evaluate(folded, xte, yte)
    n_test = xte.shape[0]
    sub_correct = int((preds[:1000] == yte[:1000]).sum())
    acc = correct / n_test
    print(f"FOLDED float32 model: test accuracy {acc:.4f} ({correct}/{n_test}); first 1000: {sub_correct}/1000",
          flush=True)

    desc = {
        "vgg": "DAC reference: CIFAR-VGG layout scaled down (13 3x3 convs 16..128, 2 linears), "
               "BatchNorm folded into conv weights/bias, trained on Fashion-MNIST",
        "alt": "DAC alt net: 5x5, stride-2, grouped convs + global avg pool, 2 linears, "
               "BatchNorm folded, trained on Fashion-MNIST",
    }[args.arch]
    meta = {"description": desc, "format": "conv weights OIHW [out,in/groups,kh,kw], linear weights [out,in]",
            "ops": "see " + name + ".json", "test_accuracy": f"{acc:.4f}",
            "torch_version": torch.__version__}
    st_path = os.path.join(out_dir, name + ".safetensors")
    write_safetensors(st_path, tensors, meta)

    # verify: re-read with own parser and run the functional interpreter
    t2, meta2 = read_safetensors(st_path)
    assert set(t2) == set(tensors)
    for k in tensors:
        assert torch.equal(t2[k], tensors[k]), k
    fpreds = []
    with torch.no_grad():
        for i in range(0, n_test, 500):
            fpreds.append(functional_forward(ops, t2, xte[i:i + 500]).argmax(1))
    fpreds = torch.cat(fpreds)
    fcorrect = int((fpreds == yte).sum())
    n_diff = int((fpreds != preds).sum())
    print(f"safetensors re-read + functional forward: {fcorrect}/{n_test} correct, "
          f"{n_diff} predictions differ from folded nn model", flush=True)
    assert fcorrect == correct, "functional re-run disagrees with folded model"

    with open(os.path.join(out_dir, name + ".preds"), "wb") as f:
        f.write(bytes(preds.to(torch.uint8).tolist()))

    info = {
        "name": name,
        "arch": args.arch,
        "input": [1, 32, 32],
        "input_transform": "pixel/255, 28x28 zero-padded by 2 each side to 32x32",
        "ops": ops,
        "prediction": "argmax of final linear output, ties to the lowest index",
        "test_accuracy": acc,
        "test_correct": correct,
        "test_total": n_test,
        "subset_correct_first_1000": sub_correct,
        "epochs": args.epochs,
        "seed": args.seed,
        "batch_size": args.batch,
        "max_lr": args.max_lr,
        "train_seconds": round(train_seconds, 1),
        "torch_version": torch.__version__,
        "params": {k: list(v.shape) for k, v in tensors.items()},
    }
    with open(os.path.join(out_dir, name + ".json"), "w") as f:
        json.dump(info, f, indent=1)
        f.write("\n")

    # ONNX
    onnx_path = os.path.join(out_dir, name + ".onnx")
    try:
        torch.onnx.export(folded, torch.zeros(1, 1, 32, 32), onnx_path, opset_version=13,
                          input_names=["input"], output_names=["logits"],
                          dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
                          export_params=True, do_constant_folding=True)
        print(f"wrote {onnx_path}", flush=True)
        rename_onnx_initializers(onnx_path, folded.onnx_names)
    except Exception as e:  # noqa
        print(f"ONNX export FAILED: {type(e).__name__}: {e}", flush=True)
    print(f"done: train_seconds {train_seconds:.0f}", flush=True)


if __name__ == "__main__":
    main()
