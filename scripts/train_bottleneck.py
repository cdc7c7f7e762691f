#!/usr/bin/python3
"""Train a small bottleneck ResNet on Fashion-MNIST and export it as ONNX: a trained network
with 1x1 convolutions (the shipped ones have none), to check what factoring 1x1 layers does to
accuracy at a measured speed-up. Not shipped (the crate's tests do not use it).

    /usr/bin/python3 scripts/train_bottleneck.py --out /tmp/fmnist_bottleneck.onnx [--epochs 3]

Needs Debian's python3-torch and the training images of dataset-fashion-mnist
(/usr/share/datasets/fashion-mnist; `apt-get install dataset-fashion-mnist`; the repository
ships only the test images).

Layout (input 1x32x32, pixel/255, 28x28 zero-padded by 2 as the shipped networks): stem 3x3
1->32 stride 2 (16x16), then three stages of bottleneck blocks (1x1 reduce, 3x3, 1x1 expand,
a 1x1 projection on the shortcut where the shape changes, ReLU after the add): 32->128 at
16x16 (mid 32), 128->256 at 8x8 (mid 64, stride 2 in the 3x3), 256->512 at 4x4 (mid 128, stride
2), two blocks per stage; global average pooling and a linear layer. Every convolution is
followed by BatchNorm in training; the export folds them (torch.onnx.export in eval mode,
opset 13, do_constant_folding), so the graph holds Conv, Relu, Add, GlobalAveragePool, Flatten
and Gemm. Node names follow the modules: `.reduce`, `.conv`, `.expand`, `.down` (so the 1x1
layers can be selected with globs). Seeded (torch.manual_seed), SGD with a one-cycle learning
rate, light augmentation (train_fmnist.py's); prints the test accuracy of the exported model
in onnxruntime when available.
"""
import argparse
import os
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from train_fmnist import DATA_DIR_DEFAULT, augment, load_split  # noqa: E402


class ConvBn(nn.Module):
    def __init__(self, cin, cout, k, stride=1):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, k, stride, k // 2, bias=False)
        self.bn = nn.BatchNorm2d(cout)

    def forward(self, x):
        return self.bn(self.conv(x))


class Bottleneck(nn.Module):
    def __init__(self, cin, mid, cout, stride):
        super().__init__()
        self.reduce = ConvBn(cin, mid, 1)
        self.conv = ConvBn(mid, mid, 3, stride)
        self.expand = ConvBn(mid, cout, 1)
        self.down = ConvBn(cin, cout, 1, stride) if (cin != cout or stride != 1) else None

    def forward(self, x):
        y = F.relu(self.reduce(x))
        y = F.relu(self.conv(y))
        y = self.expand(y)
        return F.relu(y + (self.down(x) if self.down is not None else x))


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = ConvBn(1, 32, 3, 2)
        blocks, cin = [], 32
        for mid, cout, stride in [(32, 128, 1), (64, 256, 2), (128, 512, 2)]:
            blocks += [Bottleneck(cin, mid, cout, stride), Bottleneck(cout, mid, cout, 1)]
            cin = cout
        self.blocks = nn.Sequential(*blocks)
        self.fc = nn.Linear(512, 10)

    def forward(self, x):
        x = self.blocks(F.relu(self.stem(x)))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


def evaluate(net, x, y):
    net.eval()
    with torch.no_grad():
        pred = torch.cat([net(x[i:i + 500]).argmax(1) for i in range(0, len(x), 500)])
    return (pred == y).float().mean().item() * 100


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--max-lr", type=float, default=0.1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--data-dir", default=DATA_DIR_DEFAULT)
    args = ap.parse_args()
    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    xtr, ytr = load_split(args.data_dir, "train")
    xte, yte = load_split(args.data_dir, "test")
    net = Net()
    steps = args.epochs * (len(xtr) // args.batch)
    opt = torch.optim.SGD(net.parameters(), lr=args.max_lr, momentum=0.9, weight_decay=5e-4, nesterov=True)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, args.max_lr, total_steps=steps)
    gen = torch.Generator().manual_seed(args.seed)
    t0 = time.time()
    for epoch in range(args.epochs):
        net.train()
        perm = torch.randperm(len(xtr), generator=gen)
        for i in range(len(xtr) // args.batch):
            idx = perm[i * args.batch:(i + 1) * args.batch]
            loss = F.cross_entropy(net(augment(xtr[idx], gen)), ytr[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
        print(f"epoch {epoch + 1}: test {evaluate(net, xte, yte):.2f} % ({time.time() - t0:.0f} s)", flush=True)
    net.eval()
    torch.onnx.export(net, torch.zeros(1, 1, 32, 32), args.out, opset_version=13, input_names=["input"],
                      output_names=["logits"], dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
                      do_constant_folding=True)
    print(f"wrote {args.out}; torch test accuracy {evaluate(net, xte, yte):.2f} %")


if __name__ == "__main__":
    main()
