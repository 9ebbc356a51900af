"""Fakes made from reals: a real photo passed through a random up-sampling decoder, labelled fake.

The idea of AutoGAN (Zhang, Karaman & Chang, "Detecting and Simulating Artifacts in GAN Fake Images", 2019):
every GAN generator ends in up-sampling layers, and those leave the traces detectors pick up. A real image
down-sampled 2x or 4x and brought back by a randomly drawn up-sampler - a transposed convolution, or nearest /
bilinear up-sampling followed by a convolution, each with a random smooth kernel, optionally followed by a tiny
random convolutional net - carries such traces with the content of a real face, so a detector trained on it
learns up-sampling itself rather than one generator's look. One image at a time, seeded by the caller's RNG.
"""

from __future__ import annotations

import random

import numpy as np
import torch
from PIL import Image
from torch.nn import functional as F

UPSAMPLERS = ("transposed", "nearest_conv", "bilinear_conv")


def _smooth_kernel(g: np.random.Generator, size: int) -> np.ndarray:
    """A random low-pass kernel summing to 1: a Gaussian of random width, plus a little noise."""
    t = np.arange(size) - (size - 1) / 2
    sigma = g.uniform(0.5, 1.5)
    k = np.exp(-(t[:, None] ** 2 + t[None, :] ** 2) / (2 * sigma**2))
    k = k / k.sum() * (1 + g.normal(0, 0.15, k.shape))
    return (k / k.sum()).astype(np.float32)


def _up2(x: torch.Tensor, mode: str, g: np.random.Generator) -> torch.Tensor:
    """(1, 3, H, W) -> (1, 3, 2H, 2W) by one randomly drawn up-sampling layer, the same kernel for each channel."""
    if mode == "transposed":
        # stride-2 transposed convolution, 4x4 kernel: each of the 4 output phases sums its own 4 taps; each is
        # brought to about 1 - a few percent apart, the faint checkerboard such layers leave, not a visible one
        k = _smooth_kernel(g, 4)
        for i in range(2):
            for j in range(2):
                k[i::2, j::2] *= (1 + g.normal(0, 0.03)) / k[i::2, j::2].sum()
        k = torch.from_numpy(k)[None, None]
        return F.conv_transpose2d(x.transpose(0, 1), k, stride=2, padding=1).transpose(0, 1)
    x = F.interpolate(x, scale_factor=2, mode="nearest" if mode == "nearest_conv" else "bilinear",
                      align_corners=False if mode != "nearest_conv" else None)
    k = torch.from_numpy(_smooth_kernel(g, 3))[None, None]
    # the channels as a batch of one-channel images: one kernel for all, 3x faster than a grouped convolution
    return F.conv2d(F.pad(x, [1, 1, 1, 1], mode="replicate").transpose(0, 1), k).transpose(0, 1)


def _tiny_net(x: torch.Tensor, g: np.random.Generator) -> torch.Tensor:
    """A random two-layer conv net as a small residual change: a generator's last layers mix channels too."""
    w1 = torch.from_numpy(g.normal(0, 0.3, (8, 3, 3, 3)).astype(np.float32))
    w2 = torch.from_numpy(g.normal(0, 0.3, (3, 8, 1, 1)).astype(np.float32))
    y = F.conv2d(F.leaky_relu(F.conv2d(F.pad(x, [1, 1, 1, 1], mode="replicate"), w1), 0.2), w2)
    return x + 0.05 * torch.tanh(y)


def synth_fake(img: Image.Image, rng: random.Random) -> Image.Image:
    """``img`` (RGB) after a random down-sampling (2x, or 4x less often) and a random up-sampling decoder, same
    size."""
    g = np.random.default_rng(rng.randrange(2**63))
    w, h = img.size
    factor = 2 if g.random() < 0.7 else 4
    x = torch.from_numpy(np.asarray(img, dtype=np.float32).transpose(2, 0, 1).copy()).unsqueeze(0) / 255
    small_h, small_w = max(1, h // factor), max(1, w // factor)
    x = F.interpolate(x, size=(small_h, small_w), mode="area")
    mode = UPSAMPLERS[int(g.integers(len(UPSAMPLERS)))]
    with torch.no_grad():
        for _ in range(int(np.log2(factor))):
            x = _up2(x, mode, g)
        if g.random() < 0.5:
            x = _tiny_net(x, g)
        if x.shape[-2:] != (h, w):  # sizes that do not divide by the factor
            x = F.interpolate(x, size=(h, w), mode="bilinear", align_corners=False)
    out = (x[0].clamp(0, 1) * 255).round().to(torch.uint8).numpy().transpose(1, 2, 0)
    return Image.fromarray(np.ascontiguousarray(out))
