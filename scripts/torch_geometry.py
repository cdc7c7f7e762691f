#!/usr/bin/python3
"""Writes the geometry sidecar of a PyTorch model for `dac inspect/convert --geometry`.

A safetensors checkpoint holds weights only; `dac` needs each convolution's stride, padding,
dilation, groups and input size to count MACs and plan ranks. This script builds the model,
runs one forward pass on zeros with a hook on every `nn.Conv2d`, and writes what each one saw in
the format `dac::io::read_geometry` parses (docs/geometry-resnet18.json is an example):

    {"input": [H, W],
     "layers": {"<module name>": {"stride": S | [SH, SW], "padding": P | [top, bottom, left, right],
                                  "dilation": D | [DH, DW], "groups": G, "input": [H, W]}, ...,
                "<linear module>": {"positions": N},
                "<transposed convolution>": {"transposed": true, "groups": G, "input": [H, W]}}}

An `nn.Linear` the forward pass applies at more than one position per image (a channels-last
MLP at every pixel, as in ConvNeXt, or tokens) gets `positions`, so that dac counts all of them;
an `nn.ConvTranspose2d` is marked `transposed` (its 4-D weight looks like a convolution's), so
that dac leaves it dense and counts it as what it is.

Keys are module names, i.e. the state_dict prefixes `dac convert` names layers by
(`layer1.0.conv1` for `layer1.0.conv1.weight`). String padding is resolved as PyTorch applies it
("valid": 0; "same": total `d*(k-1)`, the odd pixel at the bottom/right). A convolution with a
`padding_mode` other than "zeros" cannot be described (dac's factors pad with zeros): it is
reported and the script exits with status 1 without writing anything.

    /usr/bin/python3 scripts/torch_geometry.py --arch resnet18 --input 224x224 -o geometry.json
    /usr/bin/python3 scripts/torch_geometry.py --arch googlenet --kwarg aux_logits=False \\
        --kwarg init_weights=True --input 224 -o g.json --state-dict googlenet.safetensors
    /usr/bin/python3 scripts/torch_geometry.py --model mypkg.nets:build --channels 1 --input 28x28 -o g.json

`--arch NAME` is `torchvision.models.NAME(weights=None)` (or `pretrained=False` on an older
torchvision), `--model MODULE:CALLABLE` any callable returning an `nn.Module`; `--kwarg K=V`
(a Python literal) is passed to either. The model is built after `torch.manual_seed(SEED)`
(default 0); `--state-dict OUT.safetensors` also writes its state_dict (the `safetensors`
package from Debian, bench/.venv or the path; if none is importable, a minimal writer of the
same format). Uses Debian's `python3-torch` (torch 1.13, torchvision 0.14).
"""
import argparse
import ast
import glob
import importlib
import json
import math
import os
import struct
import sys

import torch
import torch.nn as nn

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def parse_size(text):
    """`HxW` or `N` (square) as `(H, W)`."""
    parts = text.lower().split("x")
    if len(parts) == 1:
        parts = parts * 2
    if len(parts) != 2 or not all(p.isdigit() and int(p) > 0 for p in parts):
        raise argparse.ArgumentTypeError(f"{text!r} is not HxW or N")
    return int(parts[0]), int(parts[1])


def parse_kwarg(text):
    """`KEY=VALUE` with VALUE a Python literal (a bare word stays a string)."""
    key, sep, value = text.partition("=")
    if not sep or not key.isidentifier():
        raise argparse.ArgumentTypeError(f"{text!r} is not KEY=VALUE")
    try:
        return key, ast.literal_eval(value)
    except (ValueError, SyntaxError):
        return key, value


def build_model(arch=None, spec=None, kwargs=None, seed=0):
    """The model `torchvision.models.<arch>` or `module:callable` builds after
    `torch.manual_seed(seed)`, in eval mode."""
    kwargs = dict(kwargs or {})
    torch.manual_seed(seed)
    if arch is not None:
        import torchvision
        ctor = getattr(torchvision.models, arch, None)
        if not callable(ctor):
            raise SystemExit(f"error: torchvision.models has no architecture {arch!r}")
        try:
            model = ctor(weights=None, **kwargs)
        except TypeError as e:  # torchvision < 0.13
            if "weights" not in str(e):
                raise
            torch.manual_seed(seed)
            model = ctor(pretrained=False, **kwargs)
    else:
        module, sep, name = spec.partition(":")
        if not sep:
            raise SystemExit(f"error: --model {spec!r} is not MODULE:CALLABLE")
        obj = importlib.import_module(module)
        for part in name.split("."):
            obj = getattr(obj, part)
        model = obj(**kwargs)
    if not isinstance(model, nn.Module):
        raise SystemExit(f"error: {arch or spec} returned {type(model).__name__}, not an nn.Module")
    return model.eval()


def _compact(values):
    """`S` when every side agrees, else the list (`[SH, SW]`, `[top, bottom, left, right]`)."""
    return values[0] if len(set(values)) == 1 else list(values)


def conv_padding(conv):
    """`(top, bottom, left, right)` zero padding of `conv` as PyTorch applies it."""
    if conv.padding == "valid":
        return (0, 0, 0, 0)
    if conv.padding == "same":
        sides = []
        for d, k in zip(conv.dilation, conv.kernel_size):
            total = d * (k - 1)
            sides.append((total // 2, total - total // 2))  # the odd pixel goes to the end
        return sides[0] + sides[1]
    ph, pw = conv.padding
    return (ph, ph, pw, pw)


def trace(model, input_size, channels=3):
    """Runs `model` once on a zero batch of one `channels x H x W` image and returns
    `(convs, calls, names, problems)`: the `nn.Conv2d` modules by first name, each module's
    observed inputs `(H, W)` and outputs, every name of every module (shared modules have
    several), and a list of what cannot be described."""
    names = {}
    for name, m in model.named_modules(remove_duplicate=False):
        names.setdefault(id(m), []).append(name)
    convs = {ns[0]: m for m in model.modules() if isinstance(m, nn.Conv2d) for ns in [names[id(m)]]}
    calls = {}

    def hook(m, inputs, output):
        calls.setdefault(id(m), []).append((tuple(inputs[0].shape), tuple(output.shape)))

    watched = [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear))]
    handles = [m.register_forward_hook(hook) for m in watched]
    try:
        with torch.no_grad():
            model(torch.zeros(1, channels, *input_size))
    finally:
        for h in handles:
            h.remove()
    problems = []
    for name, conv in convs.items():
        if conv.padding_mode != "zeros":
            problems.append(f"{name}: padding_mode={conv.padding_mode!r} (dac's factors pad with zeros)")
        inputs = {c[0][-2:] for c in calls.get(id(conv), [])}
        if len(inputs) > 1:
            problems.append(f"{name}: called on several input sizes {sorted(inputs)}")
    return convs, calls, names, problems


def geometry(model, input_size, channels=3):
    """The sidecar document (a dict) of `model` at `input_size` and the list of problems found;
    every name of a shared convolution gets its entry. Convolutions the forward pass does not
    reach get no "input" (dac then uses the network input)."""
    convs, calls, names, problems = trace(model, input_size, channels)
    layers = {}
    for conv in convs.values():
        entry = {
            "stride": _compact(conv.stride),
            "padding": _compact(conv_padding(conv)),
            "dilation": _compact(conv.dilation),
            "groups": conv.groups,
        }
        seen = calls.get(id(conv))
        if seen:
            entry["input"] = list(seen[0][0][-2:])
        for name in names[id(conv)]:
            layers[name] = entry
    for m in model.modules():
        seen = calls.get(id(m))
        if isinstance(m, nn.ConvTranspose2d):
            # Its 4-D weight looks like a convolution's: say what it is.
            entry = {"transposed": True, "groups": m.groups}
            if seen:
                entry["input"] = list(seen[0][0][-2:])
        elif isinstance(m, nn.Linear) and seen:
            # On a channels-last map or on tokens it runs once per position; dac counts one
            # application unless told.
            positions = sum(math.prod(i[:-1]) for i, _ in seen)
            if positions == 1:
                continue
            entry = {"positions": positions}
        else:
            continue
        for name in names[id(m)]:
            layers[name] = entry
    return {"input": list(input_size), "layers": layers}, problems


def stray_weights(model):
    """State-dict `.weight` entries with 4 dimensions that are not an `nn.Conv2d`'s: dac would
    take them for OIHW convolutions."""
    described = (nn.Conv2d, nn.ConvTranspose2d)
    conv_names = {n for n, m in model.named_modules(remove_duplicate=False) if isinstance(m, described)}
    return [k for k, v in model.state_dict().items()
            if k.endswith(".weight") and v.dim() == 4 and k[:-len(".weight")] not in conv_names]


def _safetensors_save():
    """`safetensors.torch.save_file`, importing the package from bench/.venv if needed."""
    try:
        from safetensors.torch import save_file
        return save_file
    except ImportError:
        pass
    venv = glob.glob(os.path.join(ROOT, "bench", ".venv", "lib", "python3*", "site-packages"))
    sys.path += venv
    try:
        from safetensors.torch import save_file
        return save_file
    except ImportError:
        for p in venv:
            sys.path.remove(p)
        return None


_DTYPES = {torch.float32: "F32", torch.float64: "F64", torch.float16: "F16", torch.bfloat16: "BF16",
           torch.int64: "I64", torch.int32: "I32", torch.int16: "I16", torch.int8: "I8",
           torch.uint8: "U8", torch.bool: "BOOL"}


def _write_safetensors(tensors, path):
    """A minimal safetensors writer (little-endian, header padded to 8 bytes)."""
    header, blobs, offset = {}, [], 0
    for name, t in tensors.items():
        raw = t.contiguous().reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b""
        header[name] = {"dtype": _DTYPES[t.dtype], "shape": list(t.shape), "data_offsets": [offset, offset + len(raw)]}
        blobs.append(raw)
        offset += len(raw)
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text)
        for raw in blobs:
            f.write(raw)


def save_state_dict(model, path):
    """Writes `model.state_dict()` (every tensor its own contiguous copy) as safetensors."""
    state = {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}
    save = _safetensors_save()
    if save is not None:
        save(state, path)
    else:
        _write_safetensors(state, path)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--arch", help="a torchvision.models architecture, e.g. resnet18")
    which.add_argument("--model", metavar="MODULE:CALLABLE", help="a callable returning the nn.Module")
    p.add_argument("--kwarg", action="append", type=parse_kwarg, default=[], metavar="KEY=VALUE",
                   help="keyword argument for the constructor (a Python literal); repeatable")
    p.add_argument("--input", type=parse_size, required=True, metavar="HxW", help="input size HxW (or N)")
    p.add_argument("--channels", type=int, default=3, help="input channels (default 3)")
    p.add_argument("--seed", type=int, default=0, help="torch.manual_seed before building (default 0)")
    p.add_argument("-o", "--output", required=True, help="the sidecar JSON to write ('-': stdout)")
    p.add_argument("--state-dict", metavar="OUT.safetensors", help="also write the model's state_dict")
    a = p.parse_args(argv)

    model = build_model(a.arch, a.model, dict(a.kwarg), a.seed)
    doc, problems = geometry(model, a.input, a.channels)
    if problems:
        for line in problems:
            print(f"error: {line}", file=sys.stderr)
        return 1
    for name in stray_weights(model):
        print(f"warning: {name} is 4-D but not an nn.Conv2d's weight: dac will read it as a convolution",
              file=sys.stderr)
    layers = [f'    {json.dumps(k)}: {json.dumps(v)}' for k, v in doc["layers"].items()]
    text = '{\n  "input": %s,\n  "layers": {\n%s\n  }\n}\n' % (json.dumps(doc["input"]), ",\n".join(layers))
    if a.output == "-":
        sys.stdout.write(text)
    else:
        with open(a.output, "w") as f:
            f.write(text)
    if a.state_dict:
        save_state_dict(model, a.state_dict)
    print(f"{len(doc['layers'])} convolution(s) at {a.input[0]}x{a.input[1]} -> {a.output}"
          + (f"; state_dict -> {a.state_dict}" if a.state_dict else ""), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
