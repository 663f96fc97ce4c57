"""Network definitions, quantizable in eager mode (QuantStub/DeQuantStub, fusable module lists,
FloatFunctional adds). Every model has `fuse_model(qat=False)` that fuses in place.

Only modules the nnc importer supports appear between the stubs; after the final DeQuantStub at
most a log_softmax follows (the compiled C model returns the int8 tensor before it).
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.ao.quantization import DeQuantStub, QuantStub


def _fuse(model: nn.Module, groups, qat: bool):
    from torch.ao.quantization import fuse_modules, fuse_modules_qat
    if qat:
        fuse_modules_qat(model, groups, inplace=True)
    else:
        fuse_modules(model, groups, inplace=True)


# ---------------------------------------------------------------------------------------------
# LeNet-5 (seed 002's QMnistModel), quantization-aware training
# ---------------------------------------------------------------------------------------------
class LeNet5(nn.Module):
    """conv 6@5x5 (pad 2) -> pool -> conv 16@5x5 -> pool -> conv 120@5x5 -> fc 84 -> fc 10.

    Structure and fusion list as in the seed: forward() applies relu3 after the flatten, but the
    fusion pairs fc1 with relu3, so the fused (trained and deployed) network computes
    conv3 -> flatten -> fc1+ReLU -> fc2.
    """

    FUSE = [["conv1", "relu1"], ["conv2", "relu2"], ["fc1", "relu3"]]

    def __init__(self):
        super().__init__()
        self.quant = QuantStub()
        self.conv1 = nn.Conv2d(1, 6, 5, 1, 2)
        self.conv2 = nn.Conv2d(6, 16, 5, 1)
        self.conv3 = nn.Conv2d(16, 120, 5, 1)
        self.fc1 = nn.Linear(120, 84)
        self.fc2 = nn.Linear(84, 10)
        self.relu1 = nn.ReLU()
        self.relu2 = nn.ReLU()
        self.relu3 = nn.ReLU()
        self.maxpool2d = nn.MaxPool2d(2)
        self.flatten = nn.Flatten()
        self.dequant = DeQuantStub()

    def forward(self, x):
        x = self.quant(x)
        x = self.maxpool2d(self.relu1(self.conv1(x)))
        x = self.maxpool2d(self.relu2(self.conv2(x)))
        x = self.conv3(x)
        x = self.flatten(x)
        x = self.relu3(x)
        x = self.fc1(x)
        x = self.fc2(x)
        x = self.dequant(x)
        return F.log_softmax(x, dim=1)

    def fuse_model(self, qat: bool = False):
        _fuse(self, self.FUSE, qat)


# ---------------------------------------------------------------------------------------------
# MNIST CNN (seed 002's MnistModel), post-training quantization
# ---------------------------------------------------------------------------------------------
class MnistCNN(nn.Module):
    """conv 32@3x3 -> conv 64@3x3 -> maxpool 2 -> fc 9216->128 -> fc 10 (1.2 M weights).

    The seed's layers, with stubs added and the functional ReLUs as modules so they fuse."""

    FUSE = [["conv1", "relu1"], ["conv2", "relu2"], ["fc1", "relu3"]]

    def __init__(self):
        super().__init__()
        self.quant = QuantStub()
        self.conv1 = nn.Conv2d(1, 32, 3, 1)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(32, 64, 3, 1)
        self.relu2 = nn.ReLU()
        self.pool = nn.MaxPool2d(2)
        self.dropout1 = nn.Dropout(0.25)
        self.fc1 = nn.Linear(9216, 128)
        self.relu3 = nn.ReLU()
        self.dropout2 = nn.Dropout(0.5)
        self.fc2 = nn.Linear(128, 10)
        self.dequant = DeQuantStub()

    def forward(self, x):
        x = self.quant(x)
        x = self.relu1(self.conv1(x))
        x = self.relu2(self.conv2(x))
        x = self.dropout1(self.pool(x))
        x = torch.flatten(x, 1)
        x = self.dropout2(self.relu3(self.fc1(x)))
        x = self.fc2(x)
        x = self.dequant(x)
        return F.log_softmax(x, dim=1)

    def fuse_model(self, qat: bool = False):
        _fuse(self, self.FUSE, qat)


# ---------------------------------------------------------------------------------------------
# FFN (seed 003): 2 -> 6 -> 4 -> 1 regression
# ---------------------------------------------------------------------------------------------
class FFN(nn.Module):
    FUSE = [["l1", "relu1"], ["l2", "relu2"]]

    def __init__(self, input_size: int = 2):
        super().__init__()
        self.quant = QuantStub()
        self.l1 = nn.Linear(input_size, 6)
        self.relu1 = nn.ReLU()
        self.l2 = nn.Linear(6, 4)
        self.relu2 = nn.ReLU()
        self.l3 = nn.Linear(4, 1)
        self.dequant = DeQuantStub()

    def forward(self, x):
        x = self.quant(x)
        x = self.relu1(self.l1(x))
        x = self.relu2(self.l2(x))
        x = self.l3(x)
        return self.dequant(x)

    def fuse_model(self, qat: bool = False):
        _fuse(self, self.FUSE, qat)


# ---------------------------------------------------------------------------------------------
# Stateful model (seed 000's SampleModel idea): a 32x32 state added to every frame
# ---------------------------------------------------------------------------------------------
class StatefulModel(nn.Module):
    """Each frame (1, 1, 32, 32) goes through two convs to a 32x32 map; the map is added to the
    persistent 32x32 state (in float, between dequant_1 and quant_2, as in the seed), the sum
    becomes the next state and feeds a small classifier.

    The state is a plain attribute, not a parameter: `reset_state()` zeroes it; `state_update`
    False keeps it fixed (used when batches of unrelated images are run). With a batch of N
    frames the state may be (32, 32) or per-sample (N, 1, 32, 32)."""

    FUSE = [["conv1", "relu1"], ["conv2", "relu2"], ["conv3", "relu3"]]

    def __init__(self, random_init_state: bool = False):
        super().__init__()
        self.quant = QuantStub()
        self.conv1 = nn.Conv2d(1, 8, 3, 1, 1)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(8, 1, 3, 1, 1)
        self.relu2 = nn.ReLU()
        self.dequant_1 = DeQuantStub()
        self.quant_2 = QuantStub()
        self.conv3 = nn.Conv2d(1, 8, 3, 2, 1)
        self.relu3 = nn.ReLU()
        self.pool = nn.MaxPool2d(2)
        self.fc = nn.Linear(8 * 8 * 8, 10)
        self.dequant_2 = DeQuantStub()
        self.state_update = True
        self.random_init_state = random_init_state
        self.reset_state()

    def reset_state(self, state: torch.Tensor | None = None):
        if state is not None:
            self.state = state
        elif self.random_init_state:
            self.state = torch.rand(32, 32)
        else:
            self.state = torch.zeros(32, 32)

    def forward(self, x):
        x = self.quant(x)
        x = self.relu1(self.conv1(x))
        x = self.relu2(self.conv2(x))
        # state = x + state: dequantize, add in float, quantize again (as the seed does)
        x = self.dequant_1(x)
        x = torch.add(x, self.state)
        x = self.quant_2(x)
        # The next state is the sum as the int8 model holds it (its quant_2 grid).
        new_state = x.dequantize() if x.is_quantized else x
        if self.state_update:
            self.state = new_state.detach()
        x = self.pool(self.relu3(self.conv3(x)))   # classification layers
        x = torch.flatten(x, 1)
        x = self.fc(x)
        x = self.dequant_2(x)
        return F.log_softmax(x, dim=1)

    def fuse_model(self, qat: bool = False):
        _fuse(self, self.FUSE, qat)


# ---------------------------------------------------------------------------------------------
# Small residual CNN used by the compiler tests (per-channel weights)
# ---------------------------------------------------------------------------------------------
class ResidualCNN(nn.Module):
    """conv 8@3x3 + ReLU -> conv 8@3x3 -> quantized add (skip) -> avgpool 4 -> fc 392->10."""

    FUSE = [["conv1", "relu1"]]

    def __init__(self, channels: int = 8):
        super().__init__()
        self.quant = QuantStub()
        self.conv1 = nn.Conv2d(1, channels, 3, 1, 1)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(channels, channels, 3, 1, 1)
        self.skip = nn.quantized.FloatFunctional()
        self.pool = nn.AvgPool2d(4)
        self.fc = nn.Linear(channels * 7 * 7, 10)
        self.dequant = DeQuantStub()

    def forward(self, x):
        x = self.quant(x)
        y = self.relu1(self.conv1(x))
        z = self.conv2(y)
        x = self.skip.add(y, z)
        x = self.pool(x)
        x = torch.flatten(x, 1)
        x = self.fc(x)
        return self.dequant(x)

    def fuse_model(self, qat: bool = False):
        _fuse(self, self.FUSE, qat)


# ---------------------------------------------------------------------------------------------
# Quantizable ResNets (torchvision-compatible parameter names)
# ---------------------------------------------------------------------------------------------
def _conv3x3(cin, cout, stride=1):
    return nn.Conv2d(cin, cout, 3, stride, 1, bias=False)


def _conv1x1(cin, cout, stride=1):
    return nn.Conv2d(cin, cout, 1, stride, 0, bias=False)


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, cin, planes, stride=1, downsample=None):
        super().__init__()
        self.conv1 = _conv3x3(cin, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU()
        self.conv2 = _conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample
        self.add_relu = nn.quantized.FloatFunctional()

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.add_relu.add_relu(out, identity)

    def fuse_model(self, qat: bool = False):
        _fuse(self, [["conv1", "bn1", "relu"], ["conv2", "bn2"]], qat)
        if self.downsample is not None:
            _fuse(self.downsample, [["0", "1"]], qat)


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, cin, planes, stride=1, downsample=None):
        super().__init__()
        self.conv1 = _conv1x1(cin, planes)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu1 = nn.ReLU()
        self.conv2 = _conv3x3(planes, planes, stride)
        self.bn2 = nn.BatchNorm2d(planes)
        self.relu2 = nn.ReLU()
        self.conv3 = _conv1x1(planes, planes * 4)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.downsample = downsample
        self.add_relu = nn.quantized.FloatFunctional()

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu1(self.bn1(self.conv1(x)))
        out = self.relu2(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.add_relu.add_relu(out, identity)

    def fuse_model(self, qat: bool = False):
        _fuse(self, [["conv1", "bn1", "relu1"], ["conv2", "bn2", "relu2"], ["conv3", "bn3"]], qat)
        if self.downsample is not None:
            _fuse(self.downsample, [["0", "1"]], qat)


RESNET_LAYERS = {18: (BasicBlock, [2, 2, 2, 2]), 34: (BasicBlock, [3, 4, 6, 3]),
                 50: (Bottleneck, [3, 4, 6, 3]), 101: (Bottleneck, [3, 4, 23, 3])}


class QuantizableResNet(nn.Module):
    """ResNet with fused-able conv-bn(-relu), quantized skip adds (add_relu) and stubs.

    depth: 18/34 (basic blocks) or 50/101 (bottlenecks); width: channels of the first stage
    (64 in the standard network); stem 'small' = 3x3 stride-1 conv, no max-pool (for 28x28 or
    32x32 inputs), 'imagenet' = 7x7 stride-2 conv + 3x3 stride-2 max-pool (torchvision's).
    zero_init_residual starts every block as the identity (better training from scratch; an
    untrained network then has all-zero residual branches, whose scales qnnpack's add rejects,
    so it is off by default).
    Parameter names match torchvision's, so its resnet state_dicts load directly.
    """

    def __init__(self, depth=18, num_classes=10, in_channels=1, width=16, stem="small",
                 zero_init_residual=False):
        super().__init__()
        if depth not in RESNET_LAYERS:
            raise ValueError(f"ResNet depth {depth} not supported; choose one of {sorted(RESNET_LAYERS)}")
        block, layers = RESNET_LAYERS[depth]
        self.config = dict(depth=depth, num_classes=num_classes, in_channels=in_channels,
                           width=width, stem=stem)
        self.quant = QuantStub()
        if stem == "imagenet":
            self.conv1 = nn.Conv2d(in_channels, width, 7, 2, 3, bias=False)
            self.maxpool = nn.MaxPool2d(3, 2, 1)
        elif stem == "small":
            self.conv1 = nn.Conv2d(in_channels, width, 3, 1, 1, bias=False)
            self.maxpool = nn.Identity()
        else:
            raise ValueError(f"stem must be 'small' or 'imagenet', not {stem!r}")
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU()
        self._cin = width
        self.layer1 = self._stage(block, width, layers[0], 1)
        self.layer2 = self._stage(block, width * 2, layers[1], 2)
        self.layer3 = self._stage(block, width * 4, layers[2], 2)
        self.layer4 = self._stage(block, width * 8, layers[3], 2)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(width * 8 * block.expansion, num_classes)
        self.dequant = DeQuantStub()
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        for m in self.modules() if zero_init_residual else ():
            if isinstance(m, Bottleneck):
                nn.init.zeros_(m.bn3.weight)
            elif isinstance(m, BasicBlock):
                nn.init.zeros_(m.bn2.weight)

    def _stage(self, block, planes, n, stride):
        downsample = None
        if stride != 1 or self._cin != planes * block.expansion:
            downsample = nn.Sequential(_conv1x1(self._cin, planes * block.expansion, stride),
                                       nn.BatchNorm2d(planes * block.expansion))
        blocks = [block(self._cin, planes, stride, downsample)]
        self._cin = planes * block.expansion
        blocks += [block(self._cin, planes) for _ in range(1, n)]
        return nn.Sequential(*blocks)

    def forward(self, x):
        x = self.quant(x)
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        x = self.avgpool(x)
        x = torch.flatten(x, 1)
        x = self.fc(x)
        return self.dequant(x)

    def fuse_model(self, qat: bool = False):
        _fuse(self, [["conv1", "bn1", "relu"]], qat)
        for m in self.modules():
            if isinstance(m, (BasicBlock, Bottleneck)):
                m.fuse_model(qat)


def resnet_config_from_state_dict(sd: dict, depth: int) -> dict:
    """Infer (in_channels, width, stem, num_classes) from a float ResNet state_dict
    (torchvision naming), so users' own checkpoints load without extra flags."""
    missing = [k for k in ("conv1.weight", "fc.weight") if k not in sd]
    if missing:
        raise ValueError(f"not a ResNet state_dict (torchvision naming): missing {missing}")
    w = sd["conv1.weight"]
    width, in_channels, k = int(w.shape[0]), int(w.shape[1]), int(w.shape[2])
    stem = {7: "imagenet", 3: "small"}.get(k)
    if stem is None:
        raise ValueError(f"conv1 has a {k}x{k} kernel; expected 7 (imagenet stem) or 3 (small stem)")
    return dict(depth=depth, num_classes=int(sd["fc.weight"].shape[0]), in_channels=in_channels,
                width=width, stem=stem)


# ---------------------------------------------------------------------------------------------
# MLPerf Tiny reference networks (v1.0 benchmark architectures, same layers and shapes)
# ---------------------------------------------------------------------------------------------
class _ConvBNReLU(nn.Sequential):
    """conv (no bias) + BN (+ ReLU): fused into one quantized conv at PTQ."""

    def __init__(self, cin, cout, kernel, stride=1, padding=0, groups=1, relu=True):
        layers = [nn.Conv2d(cin, cout, kernel, stride, padding, groups=groups, bias=False),
                  nn.BatchNorm2d(cout)]
        if relu:
            layers.append(nn.ReLU())
        super().__init__(*layers)

    def fuse_model(self, qat: bool = False):
        _fuse(self, [["0", "1", "2"] if len(self) == 3 else ["0", "1"]], qat)


def _fuse_children(model: nn.Module, qat: bool):
    for m in list(model.modules()):
        if m is not model and hasattr(m, "fuse_model"):
            m.fuse_model(qat)


class ResNet8Block(nn.Module):
    """MLPerf Tiny ResNet-8 stack: conv3x3-BN-ReLU, conv3x3-BN, plus the input (a 1x1 strided
    conv when the shape changes), then ReLU."""

    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv1 = _ConvBNReLU(cin, cout, 3, stride, 1)
        self.conv2 = _ConvBNReLU(cout, cout, 3, 1, 1, relu=False)
        self.shortcut = nn.Conv2d(cin, cout, 1, stride) if stride != 1 or cin != cout else None
        self.add_relu = nn.quantized.FloatFunctional()

    def forward(self, x):
        identity = x if self.shortcut is None else self.shortcut(x)
        return self.add_relu.add_relu(self.conv2(self.conv1(x)), identity)


class ResNet8(nn.Module):
    """MLPerf Tiny image classification (CIFAR-10): 3x32x32, conv 16, stacks of 16/32/64
    channels (strides 1/2/2), average pool 8x8, dense 10. 12.5 M MACs."""

    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.quant = QuantStub()
        self.stem = _ConvBNReLU(3, 16, 3, 1, 1)
        self.stack1 = ResNet8Block(16, 16, 1)
        self.stack2 = ResNet8Block(16, 32, 2)
        self.stack3 = ResNet8Block(32, 64, 2)
        self.pool = nn.AvgPool2d(8)
        self.fc = nn.Linear(64, num_classes)
        self.dequant = DeQuantStub()

    def forward(self, x):
        x = self.quant(x)
        x = self.stack3(self.stack2(self.stack1(self.stem(x))))
        x = torch.flatten(self.pool(x), 1)
        return self.dequant(self.fc(x))

    def fuse_model(self, qat: bool = False):
        _fuse_children(self, qat)


class _FeaturesPoolDense(nn.Module):
    """quant -> features -> average pool -> flatten -> dense -> dequant (DS-CNN, MobileNet)."""

    def forward(self, x):
        x = self.quant(x)
        x = torch.flatten(self.pool(self.features(x)), 1)
        return self.dequant(self.fc(x))

    def fuse_model(self, qat: bool = False):
        _fuse_children(self, qat)


class DSCNN(_FeaturesPoolDense):
    """MLPerf Tiny keyword spotting (DS-CNN small): 1x49x10 MFCC, conv 64@10x4 stride 2 ('same':
    padding 5x1), four depthwise-separable blocks (3x3 depthwise + 1x1 pointwise, 64 channels),
    average pool 25x5, dense 12. 2.66 M MACs."""

    def __init__(self, num_classes: int = 12, channels: int = 64):
        super().__init__()
        self.quant = QuantStub()
        layers = [_ConvBNReLU(1, channels, (10, 4), 2, (5, 1))]
        for _ in range(4):
            layers += [_ConvBNReLU(channels, channels, 3, 1, 1, groups=channels),
                       _ConvBNReLU(channels, channels, 1)]
        self.features = nn.Sequential(*layers)
        self.pool = nn.AvgPool2d((25, 5))
        self.fc = nn.Linear(channels, num_classes)
        self.dequant = DeQuantStub()


class MobileNetV1(_FeaturesPoolDense):
    """MLPerf Tiny visual wake words: MobileNetV1 with width multiplier 0.25 on 3x96x96, conv 8@3x3
    stride 2, thirteen depthwise-separable blocks, average pool 3x3, dense 2. 7.49 M MACs."""

    # (output channels at width 1, stride) of the depthwise-separable blocks
    BLOCKS = [(64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2)] + [(512, 1)] * 5 \
        + [(1024, 2), (1024, 1)]

    def __init__(self, alpha: float = 0.25, num_classes: int = 2):
        super().__init__()
        self.quant = QuantStub()
        cin = int(32 * alpha)
        layers = [_ConvBNReLU(3, cin, 3, 2, 1)]
        for cout, stride in self.BLOCKS:
            cout = int(cout * alpha)
            layers += [_ConvBNReLU(cin, cin, 3, stride, 1, groups=cin), _ConvBNReLU(cin, cout, 1)]
            cin = cout
        self.features = nn.Sequential(*layers)
        self.pool = nn.AvgPool2d(3)
        self.fc = nn.Linear(cin, num_classes)
        self.dequant = DeQuantStub()


class FCAutoencoder(nn.Module):
    """MLPerf Tiny anomaly detection: dense autoencoder on 640 log-mel values (5 frames x 128),
    640-128-128-128-128-8-128-128-128-128-640 with ReLU. 0.26 M MACs. (The reference network's
    batch norms after each dense layer fold into the weights; they are left out here.)"""

    WIDTHS = [640, 128, 128, 128, 128, 8, 128, 128, 128, 128, 640]

    def __init__(self):
        super().__init__()
        self.quant = QuantStub()
        n = len(self.WIDTHS) - 1
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(self.WIDTHS, self.WIDTHS[1:]))
        self.relus = nn.ModuleList(nn.ReLU() for _ in range(n - 1))
        self.dequant = DeQuantStub()

    def forward(self, x):
        x = self.quant(x)
        for fc, relu in zip(self.layers, self.relus):
            x = relu(fc(x))
        return self.dequant(self.layers[-1](x))

    def fuse_model(self, qat: bool = False):
        _fuse(self, [[f"layers.{i}", f"relus.{i}"] for i in range(len(self.relus))], qat)
