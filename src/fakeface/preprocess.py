"""Preprocessing, defined once and stored in every checkpoint.

A :class:`Preprocess` says how a decoded RGB image becomes the model's input: resize, crop, normalise.
Training, evaluation, prediction, the server and the ONNX export all rebuild it from the checkpoint
(``Preprocess.from_dict(ckpt["preprocess"])``), so they can never disagree: a model normalised one way in
training and another in prediction scores wrongly without any error.

Images travel as uint8 tensors (B, 3, H, W) on 0-255 pixels - 4x less memory between loader workers and the
model - and :class:`Normalize` turns them into model input on the compute device.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

import numpy as np
import torch
from PIL import Image
from torch import nn
from torch.nn import functional as F

_RESAMPLE = {"bilinear": Image.Resampling.BILINEAR, "bicubic": Image.Resampling.BICUBIC,
             "nearest": Image.Resampling.NEAREST, "lanczos": Image.Resampling.LANCZOS}

FACENET_MEAN = (127.5, 127.5, 127.5)  # facenet's fixed_image_standardization: (x - 127.5) / 128
FACENET_STD = (128.0, 128.0, 128.0)
IMAGENET_MEAN = (0.485 * 255, 0.456 * 255, 0.406 * 255)
IMAGENET_STD = (0.229 * 255, 0.224 * 255, 0.225 * 255)
# TensorFlow's EfficientNet-Lite ImageNet weights were trained on (x - 127) / 128, not on ImageNet's mean/std:
# with it the stem's activations match its batch-norm running variance; with ImageNet's they are 4x larger.
TF_LITE_MEAN = (127.0, 127.0, 127.0)
TF_LITE_STD = (128.0, 128.0, 128.0)


@dataclass(frozen=True)
class Preprocess:
    """How an RGB image becomes model input.

    Attributes:
        input_size: side of the square training crop.
        eval_size: side of the square centre crop at evaluation / prediction (``None``: ``input_size``).
            Convolutional backbones can score a larger view than they were trained on.
        resize: the shorter side is resized to this first; ``None`` keeps native resolution (resizing can
            blur generator traces). An image smaller than the crop is up-scaled to fit.
        interpolation: resampling filter for resizing.
        mean, std: per-channel normalisation on 0-255 pixels: ``(x - mean) / std``.
    """

    input_size: int = 160
    eval_size: int | None = None
    resize: int | None = 160
    interpolation: str = "bilinear"
    mean: tuple[float, float, float] = FACENET_MEAN
    std: tuple[float, float, float] = FACENET_STD

    def __post_init__(self):
        if self.interpolation not in _RESAMPLE:
            raise ValueError(f"interpolation must be one of {sorted(_RESAMPLE)}, got {self.interpolation!r}")
        for name in ("input_size", "eval_size", "resize"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or value < 16):
                raise ValueError(f"{name} must be an integer >= 16 or None, got {value!r}")
        if len(self.mean) != 3 or len(self.std) != 3 or min(self.std) <= 0:
            raise ValueError("mean and std need 3 values each, std > 0")
        object.__setattr__(self, "mean", tuple(float(v) for v in self.mean))
        object.__setattr__(self, "std", tuple(float(v) for v in self.std))

    @property
    def crop_size(self) -> int:
        """Side of the evaluation crop."""
        return self.eval_size or self.input_size

    @property
    def min_decode_side(self) -> int | None:
        """The smallest image side the evaluation view can be made from without up-scaling (``None``: native
        resolution, the whole image is needed). See ``fakeface.images.load_image(min_side=...)``."""
        return None if self.resize is None else max(self.resize, self.crop_size)

    def to_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, d: dict) -> Preprocess:
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown preprocessing keys: {sorted(unknown)}")
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})

    def replace(self, **changes) -> Preprocess:
        return Preprocess.from_dict({**self.to_dict(), **{k: v for k, v in changes.items() if v is not None}})

    # -- image ops ---------------------------------------------------------------------------------------------
    def resized_size(self, size: tuple[int, int], min_side: int) -> tuple[int, int]:
        """(w, h) after resizing the shorter side to ``resize`` (or native), and to at least ``min_side``."""
        w, h = size
        target = max(self.resize or min(w, h), min_side)
        if min(w, h) == target:
            return w, h
        scale = target / min(w, h)
        return max(target, round(w * scale)), max(target, round(h * scale))

    def resized(self, img: Image.Image, min_side: int) -> Image.Image:
        """Resize so the shorter side is ``resize`` (or native), and at least ``min_side``."""
        size = self.resized_size(img.size, min_side)
        if size == img.size:
            return img
        return Image.fromarray(resize_pixels(np.asarray(img), size, self.interpolation))

    def eval_image(self, img: Image.Image) -> Image.Image:
        """Deterministic view: resize, then centre crop ``crop_size``."""
        return Image.fromarray(self.eval_tensor(img).numpy().transpose(1, 2, 0))

    def eval_tensor(self, img: Image.Image | np.ndarray) -> torch.Tensor:
        """(3, S, S) uint8 tensor of the evaluation view of an RGB image or its (H, W, 3) uint8 pixels: resize,
        then centre crop ``crop_size``."""
        pixels, s = np.asarray(img, dtype=np.uint8), self.crop_size
        shape = (pixels.shape[1], pixels.shape[0])
        size = self.resized_size(shape, s)
        if size != shape:
            pixels = resize_pixels(pixels, size, self.interpolation)
        w, h = size
        left, top = (w - s) // 2, (h - s) // 2
        return to_uint8_tensor(pixels[top:top + s, left:left + s])


def resize_pixels(pixels: np.ndarray, size: tuple[int, int], interpolation: str) -> np.ndarray:
    """(H, W, 3) uint8 -> (h, w, 3) uint8 for ``size`` = (w, h), anti-aliased like Pillow's ``Image.resize``.

    Bilinear and bicubic use PyTorch's uint8 kernels, which match Pillow's filters (within one grey level, two
    for bicubic, in under 1 % of pixels) in much less time (``python benchmarks/decode.py`` measures both):
    preprocessing runs beside the model on the same cores, so its time is the model's. It runs inline in the
    calling thread (no OpenMP team for one image) and releases the GIL. Nearest and Lanczos use Pillow.
    """
    if interpolation not in ("bilinear", "bicubic"):
        return np.asarray(Image.fromarray(pixels).resize(size, _RESAMPLE[interpolation]))
    if not pixels.flags.writeable:  # Pillow's arrays are read-only, and torch warns on those
        pixels = pixels.copy()
    x = torch.from_numpy(pixels).permute(2, 0, 1).unsqueeze(0)  # a channels-last view
    out = F.interpolate(x, size=(size[1], size[0]), mode=interpolation, antialias=True, align_corners=False)
    return out[0].numpy().transpose(1, 2, 0)


def center_crop(img: Image.Image, size: int) -> Image.Image:
    w, h = img.size
    left, top = (w - size) // 2, (h - size) // 2
    return img.crop((left, top, left + size, top + size))


def to_uint8_tensor(img: Image.Image | np.ndarray) -> torch.Tensor:
    """PIL RGB or (H, W, 3) uint8 pixels -> (3, H, W) uint8 tensor.

    The transpose is numpy's, on this thread: torch's copy would start an OpenMP team in whatever thread calls it
    (a decoding thread beside the model's threads), which competes with the model's own team for the cores.
    """
    return torch.from_numpy(np.ascontiguousarray(np.asarray(img, dtype=np.uint8).transpose(2, 0, 1)))


class Normalize(nn.Module):
    """(B, 3, H, W) 0-255 pixels (uint8 or float) -> normalised float input. Part of the exported graph."""

    def __init__(self, preprocess: Preprocess):
        super().__init__()
        self.register_buffer("mean", torch.tensor(preprocess.mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(preprocess.std).view(1, 3, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x.float() - self.mean) / self.std
