#!/usr/bin/python3
"""Exports seeded torch models in the ONNX flavours real exporters produce, for the robustness
sweep `bench/check_variants.py` (Debian's torch, `/usr/bin/python3`; no training):

  * resnet18 at 64x64 with opsets 9, 11, 13, 17; a symbolic batch; symbolic height and width;
    every initializer also a graph input (`keep_initializers_as_inputs`); no constant folding;
    a training-mode export (BatchNormalization nodes kept); weights as inputs only
    (`export_params=False`); external data (`save_as_external_data`);
  * `mixed`: asymmetric kernels and strides, a grouped dilated conv, `F.pad` (pads computed
    by a Reshape/Slice/Transpose chain), BatchNorm, a depthwise conv, a ConvTranspose, Linear;
  * `oned`: Conv1d, Conv2d and Conv3d in one graph.

    /usr/bin/python3 scripts/export_variants.py OUTDIR
"""
import os
import sys

import onnx
import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision

out = sys.argv[1]
os.makedirs(out, exist_ok=True)
torch.manual_seed(0)


class Mixed(nn.Module):
    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv2d(3, 16, 3, padding=1)
        self.c2 = nn.Conv2d(16, 32, (3, 5), stride=(1, 2), padding=(1, 2), bias=False)
        self.c3 = nn.Conv2d(32, 32, 3, dilation=2, padding=2, groups=2)
        self.c4 = nn.Conv2d(32, 48, 3, padding=0)
        self.bn = nn.BatchNorm2d(48)
        self.dw = nn.Conv2d(48, 48, 3, padding=1, groups=48)
        self.ct = nn.ConvTranspose2d(48, 24, 2, stride=2)
        self.c5 = nn.Conv2d(24, 24, 3, padding=1)
        self.fc = nn.Linear(24, 10)

    def forward(self, x):
        x = F.relu(self.c1(x))
        x = F.relu(self.c2(x))
        x = F.relu(self.c3(x))
        x = F.pad(x, (0, 1, 1, 0))
        x = F.relu(self.bn(self.c4(x)))
        x = F.relu(self.dw(x))
        x = F.relu(self.ct(x))
        x = F.relu(self.c5(x))
        return self.fc(F.adaptive_avg_pool2d(x, 1).flatten(1))


class OneD(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Conv1d(8, 16, 5, padding=2)
        self.b = nn.Conv2d(1, 16, 3, padding=1)
        self.c = nn.Conv3d(2, 4, 3, padding=1)

    def forward(self, x):
        y = self.a(x.reshape(1, 8, 64))
        z = self.b(y.reshape(1, 1, 16, 64))
        w = self.c(z.reshape(1, 2, 8, 16, 64))
        return w.flatten()


def export(model, x, name, **kw):
    model.eval()
    path = os.path.join(out, name + ".onnx")
    torch.onnx.export(model, x, path, input_names=["input"], output_names=["output"], **kw)
    return path


r18 = torchvision.models.resnet18()
x = torch.randn(1, 3, 64, 64)
for opset in (9, 11, 13, 17):
    export(r18, x, f"r18_opset{opset}", opset_version=opset)
export(r18, x, "r18_dynbatch", opset_version=13, dynamic_axes={"input": {0: "n"}, "output": {0: "n"}})
export(r18, x, "r18_dynhw", opset_version=13, dynamic_axes={"input": {0: "n", 2: "h", 3: "w"}})
export(r18, x, "r18_initsinputs", opset_version=11, keep_initializers_as_inputs=True)
export(r18, x, "r18_nofold", opset_version=13, do_constant_folding=False)
export(r18, x, "r18_noparams", opset_version=13, export_params=False)
p = export(r18, x, "r18_ext_tmp", opset_version=13)
m = onnx.load(p)
data = os.path.join(out, "r18_external.data")
if os.path.exists(data):
    os.remove(data)  # onnx.save appends to an existing data file
onnx.save(m, os.path.join(out, "r18_external.onnx"), save_as_external_data=True, all_tensors_to_one_file=True,
          location="r18_external.data", size_threshold=0)
os.remove(p)
# Last: a training-mode export runs the model in training mode (BatchNorm statistics move).
export(r18, x, "r18_train", opset_version=13, training=torch.onnx.TrainingMode.TRAINING, do_constant_folding=False)
mixed = Mixed()
with torch.no_grad():
    mixed.bn.running_mean.uniform_(-0.5, 0.5)
    mixed.bn.running_var.uniform_(0.5, 2.0)
export(mixed, torch.randn(1, 3, 20, 24), "mixed", opset_version=13)
export(mixed, torch.randn(1, 3, 20, 24), "mixed_train", opset_version=13,
       training=torch.onnx.TrainingMode.TRAINING, do_constant_folding=False)
export(OneD(), torch.randn(1, 8, 64), "oned", opset_version=13)
print("exported to", out)
