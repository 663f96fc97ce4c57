"""The zoo's PT2E variants: float networks written for torch.export (no stubs, plain ops), quantized
with NncQuantizer on the zoo's calibration data.

    from models import pt2e_zoo
    program = pt2e_zoo.load("lenet5_pt2e")      # a converted torch.export.ExportedProgram

lenet5_pt2e and residual_cnn_pt2e reuse the trained weights of the eager zoo models (same
parameter names); dwsep_pt2e, a MobileNet-style depthwise-separable block, has its own float
checkpoint (plain tensors, `python -m models.pt2e_zoo --train dwsep_pt2e` retrains it).
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from .registry import REPO_ROOT

_CK = "models/checkpoints"


class LeNet5(nn.Module):
    """The network lenet5 deploys (its fused structure): conv3 -> flatten -> fc1+ReLU -> fc2."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 6, 5, 1, 2)
        self.conv2 = nn.Conv2d(6, 16, 5, 1)
        self.conv3 = nn.Conv2d(16, 120, 5, 1)
        self.fc1 = nn.Linear(120, 84)
        self.fc2 = nn.Linear(84, 10)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        x = torch.flatten(self.conv3(x), 1)
        return self.fc2(F.relu(self.fc1(x)))


class ResidualCNN(nn.Module):
    """residual_cnn: conv+ReLU -> conv -> add (skip) -> avgpool 4 -> fc."""

    def __init__(self, channels: int = 8):
        super().__init__()
        self.conv1 = nn.Conv2d(1, channels, 3, 1, 1)
        self.conv2 = nn.Conv2d(channels, channels, 3, 1, 1)
        self.fc = nn.Linear(channels * 7 * 7, 10)

    def forward(self, x):
        y = F.relu(self.conv1(x))
        x = F.avg_pool2d(y + self.conv2(y), 4)
        return self.fc(torch.flatten(x, 1))


class DWSeparable(nn.Module):
    """MobileNet-style: stem conv+ReLU6, depthwise 3x3 + BN + ReLU6, pointwise 1x1 + BN + ReLU,
    max pool, depthwise stride 2 + ReLU6, pointwise expansion + ReLU6, global average pooling,
    classifier."""

    def __init__(self, c1: int = 16, c2: int = 32):
        super().__init__()
        self.stem = nn.Conv2d(1, c1, 3, 1, 1)
        self.dw1 = nn.Conv2d(c1, c1, 3, 1, 1, groups=c1, bias=False)
        self.bn1 = nn.BatchNorm2d(c1)
        self.pw1 = nn.Conv2d(c1, c2, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c2)
        self.dw2 = nn.Conv2d(c2, c2, 3, 2, 1, groups=c2)
        self.pw2 = nn.Conv2d(c2, 2 * c2, 1)
        self.fc = nn.Linear(2 * c2, 10)

    def forward(self, x):
        x = F.relu6(self.stem(x))
        x = F.relu6(self.bn1(self.dw1(x)))
        x = F.max_pool2d(F.relu(self.bn2(self.pw1(x))), 2)
        x = F.relu6(self.pw2(F.relu6(self.dw2(x))))
        x = F.adaptive_avg_pool2d(x, 1)
        return self.fc(torch.flatten(x, 1))


@dataclass
class PT2EModel:
    name: str
    build: type
    weights: str          # float checkpoint, relative to the repository root
    description: str
    per_channel: bool = True
    input_shape: tuple = (1, 1, 28, 28)
    dataset: str = "digits"

    def load_float(self) -> nn.Module:
        path = os.path.join(REPO_ROOT, self.weights)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"{self.name}: float checkpoint {self.weights} missing; create it "
                                    f"with `python -m models.pt2e_zoo --train {self.name}`")
        blob = torch.load(path, map_location="cpu", weights_only=True)
        state = blob.get("state_dict", blob) if isinstance(blob, dict) else blob
        model = self.build()
        own = model.state_dict()
        model.load_state_dict({k: v.float() for k, v in state.items() if k in own})
        return model.eval()

    def calibration_inputs(self, n: int):
        from .registry import get
        return get("lenet5").calibration_inputs(n)   # the digits: every PT2E zoo model reads them

    def example_input(self):
        from .registry import get
        return get("lenet5").example_input()

    def heldout(self):
        from .registry import get
        return get("lenet5").heldout()


MODELS = {m.name: m for m in [
    PT2EModel("lenet5_pt2e", LeNet5, f"{_CK}/lenet5_qat.pt",
              "LeNet-5 through torch.export + NncQuantizer (PTQ, per-channel) with lenet5's trained weights"),
    PT2EModel("residual_cnn_pt2e", ResidualCNN, f"{_CK}/residual_cnn_fp32.pt",
              "residual_cnn through torch.export + NncQuantizer with its trained float weights"),
    PT2EModel("dwsep_pt2e", DWSeparable, f"{_CK}/dwsep_pt2e_fp32.pt",
              "depthwise-separable (MobileNet-style) block, trained on the digits, PT2E PTQ"),
]}

CALIBRATION = 128


def load(name: str, progress: bool = False):
    """The converted PT2E program of a PT2E zoo model (quantized on CALIBRATION real digits)."""
    from nnc.frontend.pt2e_quantizer import quantize_pt2e
    m = MODELS[name]
    calib = m.calibration_inputs(CALIBRATION)
    return quantize_pt2e(m.load_float(), m.example_input(), list(calib), m.per_channel, progress)


def train(name: str, epochs: int = 30, seed: int = 0, lr: float = 1e-2) -> str:
    """Train a PT2E zoo model's float weights on the digits (Adam, one-cycle learning rate: the
    warm-up keeps the BatchNorm statistics of a block this small stable); store plain tensors."""
    from .registry import get
    torch.manual_seed(seed)
    m = MODELS[name]
    model = m.build()
    train_split, held = get("lenet5").data()
    x = torch.from_numpy(np.ascontiguousarray(train_split.x, np.float32))
    y = torch.from_numpy(np.asarray(train_split.y, np.int64))
    torch.set_num_threads(1)   # the same weights on every machine for the same seed
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, lr, total_steps=epochs * -(-len(x) // 64))
    for _ in range(epochs):
        model.train()
        perm = torch.randperm(len(x))
        for i in range(0, len(x), 64):
            idx = perm[i:i + 64]
            opt.zero_grad()
            F.cross_entropy(model(x[idx]), y[idx]).backward()
            opt.step()
            sched.step()
    model.eval()
    with torch.no_grad():
        acc = (model(torch.from_numpy(held.x)).argmax(1).numpy() == held.y).mean()
    path = os.path.join(REPO_ROOT, m.weights)
    torch.save({k: v.detach().clone() for k, v in model.state_dict().items()}, path)
    print(f"{name}: held-out top-1 {acc:.2%} (float) -> {m.weights}")
    return path


if __name__ == "__main__":
    import argparse
    ap = argparse.ArgumentParser(description="Train the float weights of a PT2E zoo model.")
    # lenet5_pt2e and residual_cnn_pt2e read the eager models' checkpoints: never overwritten here
    own = sorted(n for n, m in MODELS.items() if os.path.basename(m.weights).startswith(n))
    ap.add_argument("--train", required=True, choices=own)
    ap.add_argument("--epochs", type=int, default=30)
    args = ap.parse_args()
    train(args.train, args.epochs)
