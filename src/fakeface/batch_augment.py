"""Training augmentation of whole uint8 batches on the compute device: the loader only decodes.

:class:`BatchAugment` does what :func:`fakeface.augment.train_view` does to one Pillow image - down-and-up
scaling, blur, colour jitter and noise at the stored resolution, then the resize to the training size, random
rescale, random crop and flip - to a (B, 3, H, W) uint8 batch of same-sized images (``fakeface.loader``) with
plain tensor operations, so a GPU does the work the loader workers did. JPEG re-compression stays in the workers
(``fakeface.loader``), before the image becomes a tensor. Each batch's random draws are seeded by
(seed, epoch, step, rank): a resumed epoch augments its batches as the first attempt did. The output is the
per-image path's: (B, 3, input_size, input_size) uint8.
"""

from __future__ import annotations

from dataclasses import fields

import numpy as np
import torch
from torch.nn import functional as F

from .augment import AugmentConfig
from .preprocess import Preprocess

# What this path (or the training loop, for batch mixing) does; any other augmentation switched on keeps the
# per-image path, which has every one.
SUPPORTED = frozenset({
    "hflip_p", "random_crop", "scale_p", "scale_range", "jpeg_p", "jpeg_quality", "blur_p", "blur_sigma",
    "resize_p", "resize_factor", "noise_p", "noise_std", "color_p", "color_strength",
    "mixup_alpha", "cutmix_alpha", "mix_p",
})
_GREY = (0.299, 0.587, 0.114)  # ITU-R 601-2 luma, as Pillow's convert("L")


def unsupported_keys(aug: AugmentConfig) -> list[str]:
    """The augmentations switched on in ``aug`` (away from their defaults) that only the per-image path has."""
    default = AugmentConfig()
    return sorted(f.name for f in fields(AugmentConfig)
                  if f.name not in SUPPORTED and getattr(aug, f.name) != getattr(default, f.name))


def _interpolate(x: torch.Tensor, size: tuple[int, int], interpolation: str) -> torch.Tensor:
    """Anti-aliased resize of a float batch to ``size`` = (h, w), as Pillow resizes (nearest and Lanczos, which
    tensors lack anti-aliased, as bilinear)."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    mode = interpolation if interpolation in ("bilinear", "bicubic") else "bilinear"
    return F.interpolate(x, size=size, mode=mode, antialias=True, align_corners=False)


def _to(array: np.ndarray, device: torch.device) -> torch.Tensor:
    """A small host array on ``device`` without waiting for the device: a copy from pageable memory would stall
    the host until every queued kernel ran."""
    t = torch.from_numpy(np.ascontiguousarray(array))
    if device.type != "cuda":
        return t.to(device)
    return t.pin_memory().to(device, non_blocking=True)


def _quantize(x: torch.Tensor) -> torch.Tensor:
    """Back onto the 0-255 integer grid, as each Pillow step leaves an image."""
    return x.clamp_(0, 255).round_()


def gaussian_blur(x: torch.Tensor, sigma: np.ndarray) -> torch.Tensor:
    """Separable Gaussian blur of each image of ``x`` (n, 3, H, W) float by its own ``sigma`` (n,) pixels."""
    n, c, h, w = x.shape
    radius = max(1, int(np.ceil(3 * float(np.max(sigma)))))
    t = np.arange(-radius, radius + 1, dtype=np.float32)
    kernel = np.exp(-0.5 * (t[None] / np.asarray(sigma, np.float32)[:, None]) ** 2)
    kernel = _to(np.repeat(kernel / kernel.sum(1, keepdims=True), c, 0), x.device).to(x.dtype)  # (n * c, K)
    y = F.pad(x.reshape(1, n * c, h, w), (radius, radius, radius, radius), mode="replicate")
    y = F.conv2d(y, kernel[:, None, None, :], groups=n * c)
    y = F.conv2d(y, kernel[:, None, :, None], groups=n * c)
    return y.reshape(n, c, h, w)


def color_jitter(x: torch.Tensor, factors: torch.Tensor) -> torch.Tensor:
    """Brightness, contrast and saturation of each image of ``x`` (n, 3, H, W) float 0-255 scaled by its own
    ``factors`` (n, 3), in that order, as Pillow's ImageEnhance does (contrast about the mean grey level)."""
    grey_w = torch.tensor(_GREY, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    b, c, s = (factors[:, k].to(x.dtype).view(-1, 1, 1, 1) for k in range(3))
    x = _quantize(x * b)
    mean = (x * grey_w).sum(1, keepdim=True).mean((2, 3), keepdim=True).round()
    x = _quantize(mean + (x - mean) * c)
    grey = (x * grey_w).sum(1, keepdim=True)
    return _quantize(grey + (x - grey) * s)


class BatchAugment:
    """``BatchAugment(preprocess, augment, seed)(images, epoch, step, rank)``: (B, 3, H, W) uint8 images of one
    stored size, on any device -> (B, 3, S, S) uint8 training crops (S = ``preprocess.input_size``) there."""

    def __init__(self, preprocess: Preprocess, augment: AugmentConfig, seed: int = 0):
        missing = unsupported_keys(augment)
        if missing:
            raise ValueError(f"augmentations {missing} are not done on batches; use the per-image path")
        self.pre, self.aug, self.seed = preprocess, augment, seed

    def __call__(self, images: torch.Tensor, epoch: int = 0, step: int = 0, rank: int = 0) -> torch.Tensor:
        if images.ndim != 4 or images.shape[1] != 3 or images.dtype != torch.uint8:
            raise ValueError(f"expected a (B, 3, H, W) uint8 batch, got {tuple(images.shape)} {images.dtype}")
        rng = np.random.default_rng((self.seed, epoch, step, rank))
        return self.apply(images, rng)

    def apply(self, images: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
        """The augmentation with every draw from ``rng`` (per-image probabilities first, then each kind's
        parameters for all images, then crop positions)."""
        aug, pre, n = self.aug, self.pre, len(images)
        size = pre.input_size
        if n == 0:
            return images.new_zeros((0, 3, size, size))
        dev = images.device
        drawn = rng.random((6, n)) < np.array([aug.resize_p, aug.blur_p, aug.color_p, aug.noise_p, aug.scale_p,
                                              aug.hflip_p])[:, None]
        down_up, blur, color, noise, scale, flip = drawn
        x = images.float()

        for i in np.flatnonzero(down_up).tolist():  # one factor per image: each its own small size
            h, w = x.shape[-2:]
            f = rng.uniform(*aug.resize_factor)
            small = _interpolate(x[i:i + 1], (max(1, round(h * f)), max(1, round(w * f))), "bilinear")
            x[i] = _quantize(_interpolate(_quantize(small), (h, w), "bilinear"))[0]
        if blur.any():
            idx = _to(np.flatnonzero(blur), dev)
            x[idx] = _quantize(gaussian_blur(x[idx], rng.uniform(*aug.blur_sigma, size=len(idx))))
        if color.any():
            idx = _to(np.flatnonzero(color), dev)
            s = aug.color_strength
            x[idx] = color_jitter(x[idx], _to(rng.uniform(1 - s, 1 + s, (len(idx), 3)), dev))
        if noise.any():
            idx = _to(np.flatnonzero(noise), dev)
            std = _to(rng.uniform(*aug.noise_std, size=len(idx)), dev).to(x.dtype).view(-1, 1, 1, 1)
            g = torch.Generator(device=dev).manual_seed(int(rng.integers(2**63)))
            x[idx] = _quantize(x[idx] + torch.randn(x[idx].shape, generator=g, device=dev) * std * 255.0)

        h, w = x.shape[-2:]
        rw, rh = pre.resized_size((w, h), size)
        x = _quantize(_interpolate(x, (rh, rw), pre.interpolation))
        out = torch.empty((n, 3, size, size), dtype=torch.uint8, device=dev)
        plain = np.flatnonzero(~scale)
        if len(plain):
            idx = _to(plain, dev)
            out[idx] = self._crop(x[idx], rng, flip[plain])
        for i in np.flatnonzero(scale).tolist():  # a rescaled image has a size of its own
            target = max(size, round(min(rw, rh) * rng.uniform(*aug.scale_range)))
            sw, sh = pre.replace(resize=target).resized_size((rw, rh), size)
            xi = _quantize(_interpolate(x[i:i + 1], (sh, sw), pre.interpolation))
            out[i] = self._crop(xi, rng, flip[i:i + 1])[0]
        return out

    def _crop(self, x: torch.Tensor, rng: np.random.Generator, flip: np.ndarray) -> torch.Tensor:
        """Random (or centre) ``input_size`` crops of ``x`` (n, 3, H, W), mirrored where ``flip``: one gather."""
        n, _, h, w = x.shape
        size = self.pre.input_size
        if self.aug.random_crop:
            left, top = rng.integers(0, w - size + 1, n), rng.integers(0, h - size + 1, n)
        else:
            left, top = np.full(n, (w - size) // 2), np.full(n, (h - size) // 2)
        ar = np.arange(size)
        cols = np.where(flip[:, None], left[:, None] + size - 1 - ar, left[:, None] + ar)
        rows = top[:, None] + ar
        dev = x.device
        rows, cols = _to(rows, dev), _to(cols, dev)
        b = torch.arange(n, device=dev)[:, None, None]
        crops = x.permute(0, 2, 3, 1)[b, rows[:, :, None], cols[:, None, :]]  # (n, S, S, 3)
        return crops.permute(0, 3, 1, 2).to(torch.uint8)
