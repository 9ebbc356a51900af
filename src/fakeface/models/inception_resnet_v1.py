"""Inception-ResNet-V1 in the exact layout and state_dict key names of facenet-pytorch's ``InceptionResnetV1``.

Same module names as facenet-pytorch 2.6.0 (``conv2d_1a``, ``repeat_1.N``, ``mixed_6a``, ``last_bn``, ...) so its
published VGGFace2 / CASIA-WebFace weights load key for key. Only torch is needed to read this file.
Reference: Szegedy et al., "Inception-v4, Inception-ResNet and the Impact of Residual Connections" (2016).
"""

from __future__ import annotations

import torch
from torch import nn


class BasicConv2d(nn.Module):
    """Conv (no bias) -> BatchNorm -> ReLU."""

    def __init__(self, in_planes: int, out_planes: int, kernel_size, stride: int, padding=0):
        super().__init__()
        self.conv = nn.Conv2d(in_planes, out_planes, kernel_size, stride=stride, padding=padding, bias=False)
        self.bn = nn.BatchNorm2d(out_planes, eps=0.001, momentum=0.1)  # eps value found in tensorflow
        self.relu = nn.ReLU(inplace=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.bn(self.conv(x)))


def _chain(*specs) -> nn.Sequential:
    """A branch of BasicConv2d layers from (in, out, kernel, stride, padding) tuples."""
    return nn.Sequential(*[BasicConv2d(*spec) for spec in specs])


class _Residual(nn.Module):
    """Shared forward of the Inception-ResNet blocks: concat branches, 1x1 up-projection, scaled residual."""

    def __init__(self, scale: float, relu: bool = True):
        super().__init__()
        self.scale = scale
        if relu:
            self.relu = nn.ReLU(inplace=False)

    def branches(self) -> list[nn.Module]:
        return [self.branch0, self.branch1] + ([self.branch2] if hasattr(self, "branch2") else [])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv2d(torch.cat([branch(x) for branch in self.branches()], 1))
        out = out * self.scale + x
        return self.relu(out) if hasattr(self, "relu") else out


class Block35(_Residual):
    """35x35 grid block (Inception-ResNet-A); 256 channels."""

    def __init__(self, scale: float = 1.0):
        super().__init__(scale)
        self.branch0 = BasicConv2d(256, 32, 1, 1)
        self.branch1 = _chain((256, 32, 1, 1), (32, 32, 3, 1, 1))
        self.branch2 = _chain((256, 32, 1, 1), (32, 32, 3, 1, 1), (32, 32, 3, 1, 1))
        self.conv2d = nn.Conv2d(96, 256, 1, stride=1)


class Block17(_Residual):
    """17x17 grid block (Inception-ResNet-B); 896 channels."""

    def __init__(self, scale: float = 1.0):
        super().__init__(scale)
        self.branch0 = BasicConv2d(896, 128, 1, 1)
        self.branch1 = _chain((896, 128, 1, 1), (128, 128, (1, 7), 1, (0, 3)), (128, 128, (7, 1), 1, (3, 0)))
        self.conv2d = nn.Conv2d(256, 896, 1, stride=1)


class Block8(_Residual):
    """8x8 grid block (Inception-ResNet-C); 1792 channels. The last one has no ReLU."""

    def __init__(self, scale: float = 1.0, noReLU: bool = False):  # noqa: N803 - facenet's argument name
        super().__init__(scale, relu=not noReLU)
        self.branch0 = BasicConv2d(1792, 192, 1, 1)
        self.branch1 = _chain((1792, 192, 1, 1), (192, 192, (1, 3), 1, (0, 1)), (192, 192, (3, 1), 1, (1, 0)))
        self.conv2d = nn.Conv2d(384, 1792, 1, stride=1)


class Mixed_6a(nn.Module):  # noqa: N801 - facenet's class name
    """Reduction-A: 256 -> 896 channels, stride 2."""

    def __init__(self):
        super().__init__()
        self.branch0 = BasicConv2d(256, 384, 3, 2)
        self.branch1 = _chain((256, 192, 1, 1), (192, 192, 3, 1, 1), (192, 256, 3, 2))
        self.branch2 = nn.MaxPool2d(3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.branch0(x), self.branch1(x), self.branch2(x)], 1)


class Mixed_7a(nn.Module):  # noqa: N801 - facenet's class name
    """Reduction-B: 896 -> 1792 channels, stride 2."""

    def __init__(self):
        super().__init__()
        self.branch0 = _chain((896, 256, 1, 1), (256, 384, 3, 2))
        self.branch1 = _chain((896, 256, 1, 1), (256, 256, 3, 2))
        self.branch2 = _chain((896, 256, 1, 1), (256, 256, 3, 1, 1), (256, 256, 3, 2))
        self.branch3 = nn.MaxPool2d(3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.branch0(x), self.branch1(x), self.branch2(x), self.branch3(x)], 1)


class InceptionResnetV1(nn.Module):
    """facenet's Inception-ResNet-V1 trunk (23,482,624 parameters) with a ``num_classes``-logit head.

    ``forward_features`` gives the 512-d embedding (before L2 normalisation); ``forward_head`` the logits.
    The smallest input that survives every stride is 75x75 px; facenet was trained at 160 px.
    """

    def __init__(self, num_classes: int = 1, dropout: float = 0.6):
        super().__init__()
        self.num_classes = num_classes
        self.conv2d_1a = BasicConv2d(3, 32, 3, 2)
        self.conv2d_2a = BasicConv2d(32, 32, 3, 1)
        self.conv2d_2b = BasicConv2d(32, 64, 3, 1, 1)
        self.maxpool_3a = nn.MaxPool2d(3, stride=2)
        self.conv2d_3b = BasicConv2d(64, 80, 1, 1)
        self.conv2d_4a = BasicConv2d(80, 192, 3, 1)
        self.conv2d_4b = BasicConv2d(192, 256, 3, 2)
        self.repeat_1 = nn.Sequential(*[Block35(scale=0.17) for _ in range(5)])
        self.mixed_6a = Mixed_6a()
        self.repeat_2 = nn.Sequential(*[Block17(scale=0.10) for _ in range(10)])
        self.mixed_7a = Mixed_7a()
        self.repeat_3 = nn.Sequential(*[Block8(scale=0.20) for _ in range(5)])
        self.block8 = Block8(noReLU=True)
        self.avgpool_1a = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(dropout)
        self.last_linear = nn.Linear(1792, 512, bias=False)
        self.last_bn = nn.BatchNorm1d(512, eps=0.001, momentum=0.1)
        self.logits = nn.Linear(512, num_classes)

    def feature_layer(self) -> nn.Module:
        """The last convolutional block: where Grad-CAM looks."""
        return self.block8

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        # (B, 3, H, W) -> (B, 1792, H/32-ish, W/32-ish)
        for name in ("conv2d_1a", "conv2d_2a", "conv2d_2b", "maxpool_3a", "conv2d_3b", "conv2d_4a", "conv2d_4b",
                     "repeat_1", "mixed_6a", "repeat_2", "mixed_7a", "repeat_3", "block8"):
            x = getattr(self, name)(x)
        return x

    def forward_head(self, x: torch.Tensor) -> torch.Tensor:
        x = self.avgpool_1a(x).flatten(1)  # (B, 1792)
        x = self.last_bn(self.last_linear(self.dropout(x)))  # (B, 512) facenet's embedding
        return self.logits(x)  # (B, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


# The head is ours; everything else must match facenet's files key for key.
HEAD_PREFIXES = ("logits.",)
