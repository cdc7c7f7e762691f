#!/usr/bin/python3
"""Export a "zoo" of torchvision architectures to ONNX, with PyTorch's own MAC counts.

Purpose: realistic test inputs for dac's ONNX rewriting (grouped and depthwise convs,
Concat of dense blocks, channel shuffle, squeeze-excitation, 1x7/7x1 convs, LayerNorm and
Linear-as-MatMul, ...) and a reference MAC count that is computed by PyTorch, not by dac.
Weights are seeded random (torch.manual_seed(0) before each model is built); nothing
pretrained is downloaded. CI does not run this script: the reduced zoo it writes is
committed under tests/data/zoo/, the full-size one is not committed at all.

Usage (Debian's torch 1.13 + torchvision 0.14: /usr/bin/python3; PyPI torch is not needed):

    /usr/bin/python3 scripts/zoo.py reduced tests/data/zoo [--ref DIR] [--only NAME,...]
    /usr/bin/python3 scripts/zoo.py full /work/zoo-full     [--ref DIR] [--only NAME,...]
    bench/.venv/bin/python scripts/zoo.py check tests/data/zoo [--ref DIR]

  reduced  reduced-width (and in places reduced-depth) versions of the architectures, small
           enough to commit (well under 4 MB together); same module classes and forward code
           as torchvision, fewer channels and/or blocks, 10 classes, small inputs.
  full     the 16 full-size architectures at 224x224, 1000 classes (several hundred MB; not
           committed).
  check    independent check in an environment with numpy, onnx and onnxruntime but no torch:
           onnx.checker, onnxruntime's output on the reference input equal to PyTorch's
           (relative to the output's largest magnitude), finite outputs, and a MAC count from
           onnx shape inference (Conv, ConvTranspose, Gemm, MatMul with a weight initializer)
           equal to macs.json.

Each mode writes into OUTDIR one NAME.onnx per model and OUTDIR/macs.json:
    {NAME: {"file": "NAME.onnx", "input": [1, 3, H, W], "macs": int, "conv_macs": int,
            "linear_macs": int, "convs": int, "params": int}, ...}
counted by forward hooks at batch 1: Conv2d (output numel * in_channels/groups * kh * kw),
ConvTranspose2d (input numel * out_channels/groups * kh * kw) and Linear (every position it
is applied at: output numel / out_features * in_features * out_features); bias adds,
pools, normalisation and elementwise ops are not MACs. "convs" is the number of Conv2d (and
ConvTranspose2d) calls, "params" the PyTorch parameter count (batch-norm affine parameters
included, running statistics not).

The export steps also save each model's reference input and PyTorch output (batch 2, so the
symbolic batch dimension is exercised) as DIR/NAME.npz, by default in
/tmp/zoo-ref/<basename of OUTDIR>, where `check` looks for them.

Export settings, like an ordinary PyTorch export: model.eval(), opset 13,
do_constant_folding=True (batch norm after a conv is folded into the conv), input "input",
output "output", symbolic batch dimension "N" and static spatial dimensions. Before export
the batch-norm running statistics are calibrated (one forward pass of a seeded random batch
with only the batch norms in training mode and momentum=None), so that random-weight
activations stay of order one; ConvNeXt's layer scales (1e-6 at initialisation) are drawn
uniformly from [0.1, 0.5] so that its blocks matter; and parameters initialised to a constant
(zero biases, unit norm scales) get N(0, 0.1) noise, so that the exporter does not merge
equal initializers behind Identity nodes as it would not for a trained model. All seeded.
"""
import argparse
import json
import os
import sys
from functools import partial

try:
    import torch
    import torchvision.models as tvm
    from torch import nn
    from torchvision.models.convnext import CNBlock, CNBlockConfig
    from torchvision.models.efficientnet import _efficientnet_conf
    from torchvision.models.mobilenetv3 import _mobilenet_v3_conf
    from torchvision.models.regnet import BlockParams
    from torchvision.models.resnet import BasicBlock, Bottleneck
    from torchvision.ops import Conv2dNormActivation, SqueezeExcitation
except ImportError:  # `check` runs where there is onnx but no torch
    torch = None

OPSET = 13
REDUCED_CLASSES = 10
IMAGE_CHANNELS = 3


# --- reduction of architectures whose widths torchvision hard-codes ------------------------

def narrow(model, k, remap=None, group_k=None):
    """Divide every channel count of `model`'s Conv2d, BatchNorm2d and Linear layers by `k`.

    The image channels (3) and the class count stay; `remap` gives explicit new sizes for
    some counts (e.g. the 4096-wide hidden layers of AlexNet and VGG). Grouped convolutions
    stay grouped: depthwise ones stay depthwise, and the group count of the others is divided
    by `group_k` (default k, which keeps the per-group width) where it can be. The replaced
    layers get He-normal (fan-in) weights and zero biases. Any other module with parameters
    of its own is refused, so that nothing is silently left wide.
    """
    remap = remap or {}
    group_k = group_k or k

    def size(c):
        if c in remap:
            return remap[c]
        if c in (IMAGE_CHANNELS, REDUCED_CLASSES):
            return c
        if c % k:
            raise ValueError(f"channel count {c} is not divisible by {k}")
        return c // k

    for parent in list(model.modules()):
        for name, m in list(parent.named_children()):
            if type(m) is nn.Conv2d:
                cin, cout = size(m.in_channels), size(m.out_channels)
                groups = m.groups
                if groups == m.in_channels and groups > 1:
                    groups = cin
                elif groups % group_k == 0:
                    groups //= group_k
                new = nn.Conv2d(cin, cout, m.kernel_size, m.stride, m.padding, m.dilation, groups,
                                m.bias is not None, m.padding_mode)
            elif type(m) is nn.BatchNorm2d:
                new = nn.BatchNorm2d(size(m.num_features), m.eps, m.momentum, m.affine, m.track_running_stats)
            elif type(m) is nn.Linear:
                new = nn.Linear(size(m.in_features), size(m.out_features), m.bias is not None)
            elif any(True for _ in m.parameters(recurse=False)):
                raise TypeError(f"narrow: cannot narrow {type(m).__name__}")
            else:
                continue
            if isinstance(new, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(new.weight, mode="fan_in", nonlinearity="relu")
                if new.bias is not None:
                    nn.init.zeros_(new.bias)
            setattr(parent, name, new)
    return model


def drop(model, *names):
    """Replace shape-preserving repeated blocks by identities (fewer blocks, same forward code)."""
    for name in names:
        setattr(model, name, nn.Identity())
    return model


# --- model families (reduced variants; the full ones are torchvision's builders) ------------

def alexnet_reduced():
    # AdaptiveAvgPool2d((6, 6)) exports only when the feature map is a multiple of 6: 224 input.
    return narrow(tvm.AlexNet(num_classes=REDUCED_CLASSES), 16, {4096: 32})


def vgg11_reduced():
    # AdaptiveAvgPool2d((7, 7)) likewise needs a 224 input.
    features = tvm.vgg.make_layers(tvm.vgg.cfgs["A"], batch_norm=False)
    return narrow(tvm.VGG(features, num_classes=REDUCED_CLASSES, init_weights=True), 32, {4096: 32})


def resnet18_reduced():
    # ResNet-18's 2/2/2/2 basic blocks at 1/16 of the widths (4 .. 32 channels).
    return narrow(tvm.ResNet(BasicBlock, [2, 2, 2, 2], num_classes=REDUCED_CLASSES), 16)


def resnext_reduced():
    # 1/16 of the widths in 4 groups instead of 32 (group widths 2, 4, 8, 16 instead of 4 .. 32).
    net = tvm.ResNet(Bottleneck, [1, 2, 2, 1], num_classes=REDUCED_CLASSES, groups=32, width_per_group=4)
    return narrow(net, 16, group_k=8)


def googlenet_reduced():
    net = tvm.GoogLeNet(num_classes=REDUCED_CLASSES, aux_logits=False, transform_input=False, init_weights=True)
    # inception4b and 4c map 512 channels to 512: dropping them keeps the other seven blocks.
    return narrow(drop(net, "inception4b", "inception4c"), 16)


def inception_v3_reduced():
    net = tvm.Inception3(num_classes=REDUCED_CLASSES, aux_logits=False, transform_input=False, init_weights=True)
    # Keep one block of each kind in each stage (5b/5c A, 6a B, 6b/6e C, 7a D, 7b E).
    return narrow(drop(net, "Mixed_5d", "Mixed_6c", "Mixed_6d", "Mixed_7c"), 16)


def densenet_reduced():
    # Growth rate 4 (not 32), 2/4/6/4 layers per dense block (not 6/12/24/16), 8 stem channels.
    return tvm.DenseNet(growth_rate=4, block_config=(2, 4, 6, 4), num_init_features=8, bn_size=4,
                        num_classes=REDUCED_CLASSES)


def shufflenet_reduced():
    # All 4/8/4 blocks, stage channels 8 .. 128 instead of 24 .. 1024.
    return tvm.ShuffleNetV2([4, 8, 4], [8, 16, 32, 64, 128], num_classes=REDUCED_CLASSES)


def mobilenet_v2_reduced():
    # MobileNetV2's width_mult leaves the 1280-channel head; narrowing shrinks it too.
    return narrow(tvm.MobileNetV2(num_classes=REDUCED_CLASSES), 8)


def mobilenet_v3_small_reduced():
    # torchvision's own knobs: width 0.25 (channels round up to multiples of 8) and reduced tail.
    setting, last_channel = _mobilenet_v3_conf("mobilenet_v3_small", width_mult=0.25, reduced_tail=True)
    return tvm.MobileNetV3(setting, last_channel, num_classes=REDUCED_CLASSES)


def efficientnet_b0_reduced():
    # Width 0.1 (channels round up to multiples of 8, 8 .. 32) and half the blocks of each stage.
    setting, last_channel = _efficientnet_conf("efficientnet_b0", width_mult=0.1, depth_mult=0.5)
    return tvm.EfficientNet(setting, dropout=0.2, num_classes=REDUCED_CLASSES, last_channel=last_channel)


def regnet_x_reduced():
    # RegNetX blocks (grouped ResBottleneckBlock, no SE) with group width 4 (not 16), widths
    # 8 .. 64 and 1/1/2/1 blocks (not 1/2/7/12).
    params = BlockParams(depths=[1, 1, 2, 1], widths=[8, 16, 32, 64], group_widths=[4, 4, 4, 4],
                         bottleneck_multipliers=[1.0] * 4, strides=[2] * 4)
    return tvm.RegNet(params, num_classes=REDUCED_CLASSES, stem_width=8)


def convnext_reduced():
    # ConvNeXt-T has 3/3/9/3 blocks of 96/192/384/768 channels: 1/1/2/1 blocks of 8/16/24/32.
    setting = [CNBlockConfig(8, 16, 1), CNBlockConfig(16, 24, 1), CNBlockConfig(24, 32, 2), CNBlockConfig(32, None, 1)]
    return tvm.ConvNeXt(setting, stochastic_depth_prob=0.1, num_classes=REDUCED_CLASSES)


def squeezenet_reduced():
    # SqueezeNet 1.1 at 1/8 of the widths (squeeze layers of 2 .. 8 channels).
    return narrow(tvm.SqueezeNet("1_1", num_classes=REDUCED_CLASSES), 8)


def mnasnet_reduced():
    # torchvision's MNASNet 0.5 (alpha=0.5), then at 1/8 of the widths (head 160, not 1280).
    return narrow(tvm.MNASNet(0.5, num_classes=REDUCED_CLASSES), 8)


def se_block():
    """A standalone squeeze-excitation block (torchvision.ops.SqueezeExcitation, as in
    EfficientNet and RegNetY) between two convolutions."""
    return nn.Sequential(
        Conv2dNormActivation(3, 32, kernel_size=3),
        SqueezeExcitation(32, 8),
        Conv2dNormActivation(32, 16, kernel_size=1, activation_layer=None),
    )


# name -> (builder, input side)
REDUCED = {
    "alexnet": (alexnet_reduced, 224),
    "vgg11": (vgg11_reduced, 224),
    "resnet18": (resnet18_reduced, 64),
    "resnext50_32x4d": (resnext_reduced, 64),
    "googlenet": (googlenet_reduced, 64),
    "inception_v3": (inception_v3_reduced, 75),
    "densenet121": (densenet_reduced, 64),
    "shufflenet_v2_x1_0": (shufflenet_reduced, 64),
    "mobilenet_v2": (mobilenet_v2_reduced, 64),
    "mobilenet_v3_small": (mobilenet_v3_small_reduced, 64),
    "efficientnet_b0": (efficientnet_b0_reduced, 64),
    "regnet_x_400mf": (regnet_x_reduced, 64),
    "convnext_tiny": (convnext_reduced, 64),
    "squeezenet1_1": (squeezenet_reduced, 64),
    "mnasnet0_5": (mnasnet_reduced, 64),
    "se_block": (se_block, 32),
}

FULL_SIDE = 224
FULL_KWARGS = {
    "googlenet": dict(aux_logits=False, transform_input=False, init_weights=True),
    "inception_v3": dict(aux_logits=False, transform_input=False, init_weights=True),
}


def full_model(name):
    """torchvision's own builder, random weights (no download), 1000 classes."""
    return getattr(tvm, name)(weights=None, **FULL_KWARGS.get(name, {}))


FULL = {
    name: (partial(full_model, name), FULL_SIDE)
    for name in ["alexnet", "vgg16", "resnet18", "resnet50", "resnext50_32x4d", "googlenet", "inception_v3",
                 "densenet121", "shufflenet_v2_x1_0", "mobilenet_v2", "mobilenet_v3_small", "efficientnet_b0",
                 "regnet_x_400mf", "convnext_tiny", "squeezenet1_1", "mnasnet1_0"]
}

MODES = {"reduced": REDUCED, "full": FULL}


# --- preparing, counting and exporting --------------------------------------------------------

def prepare(model, side):
    """Seeded, finite and non-degenerate random weights, closer to a trained model's.

    Parameters that torchvision initialises to a constant (zero biases, unit norm scales) get
    N(0, 0.1) noise: the exporter would otherwise merge equal initializers behind Identity
    nodes, which trained models do not have. ConvNeXt's layer scales (1e-6) are drawn from
    [0.1, 0.5], and the batch-norm statistics are those of a seeded random batch (one forward
    pass with only the batch norms in training mode).
    """
    with torch.no_grad():
        for p in model.parameters():
            if bool((p == p.flatten()[0]).all()):
                p.add_(0.1 * torch.randn_like(p))
    for m in model.modules():
        if isinstance(m, CNBlock):
            with torch.no_grad():
                m.layer_scale.uniform_(0.1, 0.5)
    model.eval()
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if norms:
        for m in norms:
            m.reset_running_stats()
            m.momentum = None  # cumulative average: after one batch, exactly its statistics
            m.train()
        with torch.no_grad():
            model(torch.randn(4, 3, side, side))
        model.eval()
    return model


def count_macs(model, side):
    """MACs of one image, from forward hooks on Conv2d, ConvTranspose2d and Linear."""
    counts = {"conv_macs": 0, "linear_macs": 0, "convs": 0}

    def hook(m, inputs, out):
        if isinstance(m, nn.Conv2d):
            counts["conv_macs"] += out.numel() * (m.in_channels // m.groups) * m.kernel_size[0] * m.kernel_size[1]
            counts["convs"] += 1
        elif isinstance(m, nn.ConvTranspose2d):
            counts["conv_macs"] += inputs[0].numel() * (m.out_channels // m.groups) * m.kernel_size[0] * m.kernel_size[1]
            counts["convs"] += 1
        else:
            counts["linear_macs"] += out.numel() // m.out_features * m.in_features * m.out_features

    handles = [m.register_forward_hook(hook) for m in model.modules()
               if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear))]
    with torch.no_grad():
        model(torch.zeros(1, 3, side, side))
    for h in handles:
        h.remove()
    counts["macs"] = counts["conv_macs"] + counts["linear_macs"]
    return counts


def export(name, builder, side, outdir, refdir):
    torch.manual_seed(0)
    model = prepare(builder(), side)
    entry = {"file": f"{name}.onnx", "input": [1, 3, side, side]}
    counts = count_macs(model, side)
    entry.update({k: counts[k] for k in ("macs", "conv_macs", "linear_macs", "convs")})
    entry["params"] = sum(p.numel() for p in model.parameters())
    torch.manual_seed(1)
    dummy = torch.randn(1, 3, side, side)
    torch.onnx.export(model, dummy, os.path.join(outdir, entry["file"]), opset_version=OPSET,
                      do_constant_folding=True, input_names=["input"], output_names=["output"],
                      dynamic_axes={"input": {0: "N"}, "output": {0: "N"}})
    torch.manual_seed(2)
    x = torch.randn(2, 3, side, side)
    with torch.no_grad():
        y = model(x)
    if not torch.isfinite(y).all():
        raise RuntimeError(f"{name}: PyTorch output is not finite")
    import numpy as np
    np.savez(os.path.join(refdir, f"{name}.npz"), input=x.numpy(), output=y.numpy())
    return entry


def run_export(mode, outdir, refdir, only):
    table = MODES[mode]
    names = list(table) if not only else only
    os.makedirs(outdir, exist_ok=True)
    os.makedirs(refdir, exist_ok=True)
    torch.set_num_threads(min(2, os.cpu_count() or 1))
    path = os.path.join(outdir, "macs.json")
    macs = json.load(open(path)) if only and os.path.exists(path) else {}
    for name in names:
        builder, side = table[name]
        entry = export(name, builder, side, outdir, refdir)
        macs[name] = entry
        size = os.path.getsize(os.path.join(outdir, entry["file"]))
        print(f"{name:20} {side:3}x{side:<3} {entry['macs']:>14,} MACs {entry['convs']:4} convs "
              f"{entry['params']:>12,} params {size:>12,} bytes", flush=True)
    macs = {name: macs[name] for name in table if name in macs}
    with open(path, "w") as f:  # one model a line
        f.write("{\n" + ",\n".join(f" {json.dumps(name)}: {json.dumps(e)}" for name, e in macs.items()) + "\n}\n")


# --- independent check (numpy, onnx, onnxruntime; no torch) ------------------------------------

def onnx_macs(model, side):
    """MACs at batch 1 from onnx shape inference: Conv, ConvTranspose, Gemm, MatMul by a weight.

    Shape inference does not see through the Shape/Gather/Div/Cast arithmetic that a dynamic
    batch puts in front of some Reshapes (ShuffleNet's channel shuffle); the shapes it leaves
    unknown are read from an onnxruntime run at batch 1 instead. Returns the counts and how
    many shapes came from onnxruntime.
    """
    import numpy as np
    import onnx
    import onnxruntime as ort
    from onnx import shape_inference

    g = shape_inference.infer_shapes(model, data_prop=True).graph

    def dims(vi):
        shape = vi.type.tensor_type.shape
        if not vi.type.tensor_type.HasField("shape") or any(
                not d.HasField("dim_value") and d.dim_param != "N" for d in shape.dim):
            return None
        return [d.dim_value if d.HasField("dim_value") else 1 for d in shape.dim]

    shapes = {vi.name: dims(vi) for vi in list(g.value_info) + list(g.input) + list(g.output)}
    inits = {t.name: list(t.dims) for t in g.initializer}
    needed = []
    for n in g.node:
        if n.op_type == "Conv":
            needed.append(n.output[0])
        elif n.op_type in ("ConvTranspose", "Gemm") or (n.op_type == "MatMul" and n.input[1] in inits):
            needed.append(n.input[0])
    unknown = [t for t in needed if not shapes.get(t)]
    if unknown:
        probe = onnx.ModelProto()
        probe.CopyFrom(model)
        probe.graph.output.extend(onnx.helper.make_tensor_value_info(t, onnx.TensorProto.FLOAT, None) for t in unknown)
        sess = ort.InferenceSession(probe.SerializeToString(), providers=["CPUExecutionProvider"])
        values = sess.run(unknown, {"input": np.zeros((1, 3, side, side), np.float32)})
        shapes.update({t: list(v.shape) for t, v in zip(unknown, values)})

    conv, linear, convs = 0, 0, 0
    for n in g.node:
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in n.attribute}
        if n.op_type == "Conv":
            w = inits[n.input[1]]
            conv += int(np.prod(shapes[n.output[0]])) * int(np.prod(w[1:]))
            convs += 1
        elif n.op_type == "ConvTranspose":
            w = inits[n.input[1]]
            conv += int(np.prod(shapes[n.input[0]])) * int(np.prod(w[1:]))
            convs += 1
        elif n.op_type == "Gemm":
            w = inits[n.input[1]]
            k, m = (w[1], w[0]) if attrs.get("transB", 0) else (w[0], w[1])
            rows = shapes[n.input[0]][1 if attrs.get("transA", 0) else 0]
            linear += rows * k * m
        elif n.op_type == "MatMul" and n.input[1] in inits:
            w = inits[n.input[1]]
            linear += int(np.prod(shapes[n.input[0]][:-1])) * w[0] * w[1]
    return {"macs": conv + linear, "conv_macs": conv, "linear_macs": linear, "convs": convs}, len(unknown)


def run_check(outdir, refdir):
    from collections import Counter

    import numpy as np
    import onnx
    import onnxruntime as ort

    macs = json.load(open(os.path.join(outdir, "macs.json")))
    ops = Counter()
    failures = 0
    for name, entry in macs.items():
        path = os.path.join(outdir, entry["file"])
        onnx.checker.check_model(path)
        model = onnx.load(path)
        ops.update(n.op_type for n in model.graph.node)
        problems = []
        for tensor, tail in ((model.graph.input[0], entry["input"][1:]), (model.graph.output[0], None)):
            shape = [d.dim_param or d.dim_value for d in tensor.type.tensor_type.shape.dim]
            if shape[0] != "N" or (tail and shape[1:] != tail):
                problems.append(f"{tensor.name} has shape {shape}")
        counted, from_ort = onnx_macs(model, entry["input"][2])
        for key, value in counted.items():
            if value != entry[key]:
                problems.append(f"{key}: onnx {value:,} vs torch {entry[key]:,}")
        ref = os.path.join(refdir, f"{name}.npz")
        rel = float("nan")
        if os.path.exists(ref):
            data = np.load(ref)
            opts = ort.SessionOptions()
            opts.intra_op_num_threads = 2
            sess = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
            (y,) = sess.run(["output"], {"input": data["input"]})
            if not np.isfinite(y).all():
                problems.append("onnxruntime output not finite")
            ref_y = data["output"]
            rel = float(np.abs(y - ref_y).max() / np.abs(ref_y).max())
            if y.shape != ref_y.shape or not rel <= 1e-4:
                problems.append(f"onnxruntime differs from torch: {rel:.2e} relative, shape {y.shape}")
        else:
            problems.append(f"no reference {ref}")
        failures += bool(problems)
        print(f"{name:20} {'ok' if not problems else 'FAIL'}  max|ort-torch|/max|torch| {rel:.1e}  "
              f"{counted['macs']:,} MACs  {len(model.graph.node)} nodes"
              + (f"  ({from_ort} shapes from onnxruntime)" if from_ort else "") + "".join(f"\n    {p}" for p in problems),
              flush=True)
    print("op types:", ", ".join(f"{op} {n}" for op, n in sorted(ops.items())))
    return failures


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("mode", choices=["reduced", "full", "check"])
    parser.add_argument("outdir")
    parser.add_argument("--ref", help="reference inputs/outputs (default /tmp/zoo-ref/<basename of OUTDIR>)")
    parser.add_argument("--only", help="comma-separated model names (export modes)")
    args = parser.parse_args()
    refdir = args.ref or os.path.join("/tmp/zoo-ref", os.path.basename(os.path.normpath(args.outdir)))
    if args.mode == "check":
        sys.exit(1 if run_check(args.outdir, refdir) else 0)
    if torch is None:
        sys.exit("zoo.py: exporting needs torch and torchvision (/usr/bin/python3)")
    run_export(args.mode, args.outdir, refdir, args.only.split(",") if args.only else None)


if __name__ == "__main__":
    main()
