"""Input filters that expose generator traces: the model sees a residual of the image instead of the image.

``model_kwargs: {input_filter: npr}`` (or ``highpass``) builds the registered backbone behind a fixed filter.
The filter is part of the module - so checkpoints (model name + kwargs), ``predict``, ``serve`` and the ONNX
export all apply it - and holds no weights, so the state dict and the published trunk weights keep their keys.

* ``npr``: neighbouring pixel relationships (Tan et al., "Rethinking the Up-Sampling Operations in CNN-based
  Generative Network for Generalizable Deepfake Detection", CVPR 2024): the image minus its nearest-neighbour
  2x down-and-up copy, i.e. each pixel relative to its 2x2 cell - where up-sampling layers leave their mark.
* ``highpass``: the image minus a Gaussian-blurred copy (sigma 1), a noise residual in the spirit of SRM filters.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cache

import torch
from torch import nn
from torch.nn import functional as F

# Residuals are small next to the normalised image (a sixth to a tenth of its spread on the 140k faces); the gain brings
# them back near the range the pretrained stem and its batch-norm epsilon were tuned for.
DEFAULT_GAIN = 4.0


class NPR(nn.Module):
    """x - nearest_up(x[::2, ::2]): each pixel minus the top-left pixel of its 2x2 cell, times ``gain``."""

    def __init__(self, gain: float = DEFAULT_GAIN):
        super().__init__()
        self.gain = float(gain)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        up = F.interpolate(x[:, :, ::2, ::2], size=x.shape[-2:], mode="nearest")
        return (x - up) * self.gain


class HighPass(nn.Module):
    """x - GaussianBlur(x, sigma), per channel with reflected borders, times ``gain``."""

    def __init__(self, gain: float = DEFAULT_GAIN, sigma: float = 1.0):
        super().__init__()
        self.gain = float(gain)
        radius = max(1, round(2 * sigma))
        t = torch.arange(-radius, radius + 1, dtype=torch.float32)
        g = torch.exp(-(t**2) / (2 * sigma**2))
        kernel = torch.outer(g, g) / g.sum() ** 2
        self.register_buffer("kernel", kernel.expand(3, 1, -1, -1).clone(), persistent=False)  # not in the state dict
        self.pad = radius

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        blurred = F.conv2d(F.pad(x, [self.pad] * 4, mode="reflect"), self.kernel.to(x.dtype), groups=3)
        return (x - blurred) * self.gain


FILTERS: dict[str, Callable[[float], nn.Module]] = {"npr": NPR, "highpass": HighPass}


@cache
def _filtered_class(cls: type) -> type:
    """``cls`` with its input passed through ``self.input_filter`` first; same state-dict keys as ``cls``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return cls.forward(self, self.input_filter(x))

    return type(f"Filtered{cls.__name__}", (cls,), {"forward": forward, "__module__": __name__})


def make_filter(name: str, gain: float = DEFAULT_GAIN) -> nn.Module:
    if name not in FILTERS:
        raise ValueError(f"unknown input_filter {name!r}; known: {', '.join(sorted(FILTERS))} (or none)")
    return FILTERS[name](gain)


def filtered(builder: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
    """A registry builder that also takes ``input_filter`` (``npr`` | ``highpass`` | None) and ``filter_gain``;
    without a filter it builds exactly what ``builder`` builds."""

    def build(*, input_filter: str | None = None, filter_gain: float = DEFAULT_GAIN, **kwargs) -> nn.Module:
        model = builder(**kwargs)
        if input_filter in (None, "none"):
            return model
        filt = make_filter(input_filter, filter_gain)  # before the class change: a bad name leaves no half model
        model.__class__ = _filtered_class(type(model))
        model.input_filter = filt
        return model

    return build
