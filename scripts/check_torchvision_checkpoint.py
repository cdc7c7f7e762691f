#!/usr/bin/python3
"""`dac convert` on a torchvision state_dict saved as safetensors (seeded resnet18, BatchNorm
buffers and all), in f32, f16 and bf16, then the README's PyTorch loader on each output: at full
rank the loaded model must compute what the original computes (within 1e-4 in f32; in f16 and
bf16 the factors are rounded to the checkpoint's type, so within 4 of its epsilons); planned
runs must load and give finite outputs. Geometry and input sizes from docs/geometry-resnet18.json.

    /usr/bin/python3 scripts/check_torchvision_checkpoint.py    # Debian's python3-torch + bench/.venv's safetensors

Converts with `$DAC` (default target/release/dac) into a temporary directory.
"""
import glob
import os
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path += glob.glob(os.path.join(ROOT, "bench", ".venv", "lib", "python3*", "site-packages"))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
DAC = os.environ.get("DAC", os.path.join(ROOT, "target", "release", "dac"))

import torch  # noqa: E402
import torchvision  # noqa: E402
from safetensors.torch import load_file, save_file  # noqa: E402
from check_readme_loader import apply_records, readme_loader  # noqa: E402

GEOMETRY = os.path.join(ROOT, "docs", "geometry-resnet18.json")
RUNS = {
    "full": ["--energy", "1", "--allow-slower"],
    "speedup2": ["--speedup", "2"],
    "macs2-dac": ["--macs", "2", "--scheme", "dac"],
    "rank4": ["--rank", "4"],
}


def load(path, replacement):
    model = torchvision.models.resnet18()
    apply_records(model, path, replacement)
    state = {k: v.float() if v.is_floating_point() else v for k, v in load_file(path).items()}
    model.load_state_dict(state)  # strict: every tensor has its module
    return model.eval()


def main():
    torch.manual_seed(0)
    replacement = readme_loader()
    net = torchvision.models.resnet18().eval()
    with torch.no_grad():  # BatchNorm statistics that are not the identity
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    x = torch.randn(2, 3, 224, 224)
    failures = 0
    with tempfile.TemporaryDirectory() as tmp:
        for dtype in (torch.float32, torch.float16, torch.bfloat16):
            state = {k: v.to(dtype) if v.is_floating_point() else v for k, v in net.state_dict().items()}
            src = os.path.join(tmp, f"r18_{str(dtype)[6:]}.safetensors")
            save_file(state, src)
            original = load(src, replacement)
            with torch.no_grad():
                want = original(x)
            for run, args in RUNS.items():
                out = os.path.join(tmp, f"out_{run}.safetensors")
                r = subprocess.run([DAC, "convert", src, "-o", out, "--force", "--geometry", GEOMETRY, *args],
                                   capture_output=True, text=True)
                if r.returncode != 0:
                    print(f"{dtype} {run}: dac convert failed: {r.stderr.strip()[-300:]}")
                    failures += 1
                    continue
                total = next((line for line in r.stdout.splitlines() if line.startswith("total")), "")
                with torch.no_grad():
                    got = load(out, replacement)(x)
                rel = float((got - want).abs().max() / want.abs().max())
                tol = 1e-4 if dtype == torch.float32 else 4 * torch.finfo(dtype).eps
                ok = bool(torch.isfinite(got).all()) and (run != "full" or rel < tol)
                failures += not ok
                print(f"{str(dtype)[6:]:>8} {run:<10} relative difference {rel:.2e} "
                      f"{'OK' if ok else 'FAIL'} | {total[:90]}", flush=True)
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
