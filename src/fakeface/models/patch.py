"""A truncated-receptive-field EfficientNet-Lite: a logit per image patch, averaged (Chai et al., "What makes
fake images detectable? Understanding properties that generalize", ECCV 2020).

``model_kwargs: {patch_stages: 3}`` keeps the stem and the first 3 stages of the trunk (Lite0: 40 channels at
1/8 of the input, a receptive field of a few tens of pixels) and replaces the rest with a 1x1-convolution head
that scores every position; the image's logit is the mean of the map. Local textures, not the face's overall
look, must then carry the decision - the property Chai et al. found to transfer across face generators.
"""

from __future__ import annotations

import torch
from torch import nn

from .efficientnet_lite import BN, LITE0_STAGES, EfficientNetLite

PATCH_HIDDEN = 128


class PatchLite(EfficientNetLite):
    """EfficientNet-Lite cut after ``patch_stages`` stages, with a per-patch 1x1 head under ``_fc``."""

    def __init__(self, patch_stages: int = 3, num_classes: int = 1, dropout: float = 0.2,
                 drop_path_rate: float = 0.2, stages=LITE0_STAGES, **kwargs):
        if not isinstance(patch_stages, int) or not 1 <= patch_stages < len(stages):
            raise ValueError(f"patch_stages must be a whole number in [1, {len(stages) - 1}], got {patch_stages!r}")
        super().__init__(num_classes, dropout, drop_path_rate, stages, **kwargs)
        kept = sum(repeats for repeats, *_ in stages[:patch_stages])
        # The published trunk's later blocks and head have no place here: load_trunk_weights skips them.
        self.dropped_prefixes = tuple(f"_blocks.{i}." for i in range(kept, len(self._blocks))) + (
            "_conv_head.", "_bn1.")
        self._blocks = self._blocks[:kept]
        del self._conv_head, self._bn1, self.head_act
        channels = stages[patch_stages - 1][5]
        self._fc = nn.Sequential(nn.Conv2d(channels, PATCH_HIDDEN, 1, bias=False), nn.BatchNorm2d(PATCH_HIDDEN, **BN),
                                 nn.ReLU6(), nn.Dropout(dropout), nn.Conv2d(PATCH_HIDDEN, num_classes, 1))

    def feature_layer(self) -> nn.Module:
        """The last kept block: where Grad-CAM looks."""
        return self._blocks[-1]

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act(self._bn0(self._conv_stem(x)))
        for block in self._blocks:
            x = block(x)
        return x

    def patch_logits(self, x: torch.Tensor) -> torch.Tensor:
        """(B, num_classes, h, w): one logit per patch."""
        return self._fc(self.forward_features(x))

    def forward_head(self, x: torch.Tensor) -> torch.Tensor:
        return self._fc(x).mean(dim=(2, 3))


def build_lite(stages=LITE0_STAGES, patch_stages: int | None = None, **kwargs) -> EfficientNetLite:
    """The registry's EfficientNet-Lite builder: the whole network, or with ``patch_stages`` its patch version."""
    if patch_stages is None:
        return EfficientNetLite(stages=stages, **kwargs)
    return PatchLite(patch_stages, stages=stages, **kwargs)
