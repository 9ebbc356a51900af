"""Training-time augmentation and the perturbations used to measure robustness.

Every augmentation has a probability in :class:`AugmentConfig` (0 turns it off), so a YAML config can say
exactly what a run did. Each draws from the ``random.Random`` it is given: with a per-sample seed, a sample's
augmentation is the same whatever the number of loader workers, and a resumed run repeats the same epochs.
Batch mixing (MixUp / CutMix) works on whole batches in the training loop, seeded per step alike.
"""

from __future__ import annotations

import io
import random
from dataclasses import asdict, dataclass, fields

import numpy as np
import torch
from PIL import Image, ImageEnhance, ImageFilter

from .preprocess import Preprocess, center_crop


@dataclass
class AugmentConfig:
    """Probabilities (``*_p``) and ranges of each training augmentation."""

    hflip_p: float = 0.5
    random_crop: bool = True  # random (else centre) crop of input_size from the resized image
    scale_p: float = 0.0  # random rescale of the image before cropping
    scale_range: tuple[float, float] = (0.8, 1.25)
    jpeg_p: float = 0.0  # re-compress at a random quality (the test data are JPEGs of unknown quality)
    jpeg_quality: tuple[int, int] = (50, 95)
    blur_p: float = 0.0  # Gaussian blur, sigma in pixels
    blur_sigma: tuple[float, float] = (0.1, 2.0)
    resize_p: float = 0.0  # down-and-up scaling by a random factor
    resize_factor: tuple[float, float] = (0.5, 0.9)
    noise_p: float = 0.0  # additive Gaussian noise, std as a fraction of 255
    noise_std: tuple[float, float] = (0.0, 0.03)
    color_p: float = 0.0  # brightness/contrast/saturation jitter of +-color_strength
    color_strength: float = 0.2
    # Batch mixing (applied by the training loop to whole batches): with probability mix_p a batch is blended
    # with a shuffled copy of itself - MixUp (mixup_alpha > 0) or CutMix (cutmix_alpha > 0), one of them at
    # random when both are on - and its labels mixed in proportion (Beta(alpha, alpha) weights).
    mixup_alpha: float = 0.0
    cutmix_alpha: float = 0.0
    mix_p: float = 1.0
    # Fakes made from reals (fakeface.synthfake): each real training image becomes, with this probability, a fake
    # made by a random up-sampling decoder - applied by FaceDataset, which also changes its label.
    synth_fake_p: float = 0.0

    def __post_init__(self):
        if self.mixup_alpha < 0 or self.cutmix_alpha < 0 or not 0 <= self.mix_p <= 1:
            raise ValueError("mixup_alpha and cutmix_alpha must be >= 0 (0: off) and mix_p in [0, 1]")
        if not 0 <= self.synth_fake_p <= 1:
            raise ValueError(f"synth_fake_p must be in [0, 1], got {self.synth_fake_p!r}")

    @classmethod
    def from_dict(cls, d: dict | None) -> AugmentConfig:
        d = dict(d or {})
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown augmentation keys: {sorted(unknown)} (known: {sorted(known)})")
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})

    def to_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}


def train_view(img: Image.Image, pre: Preprocess, aug: AugmentConfig, rng: random.Random) -> Image.Image:
    """The training view of ``img``: photometric corruptions at native size, then resize, crop and flip."""
    if rng.random() < aug.resize_p:
        img = down_up(img, rng.uniform(*aug.resize_factor))
    if rng.random() < aug.blur_p:
        img = blur(img, rng.uniform(*aug.blur_sigma))
    if rng.random() < aug.color_p:
        s = aug.color_strength
        for enhance in (ImageEnhance.Brightness, ImageEnhance.Contrast, ImageEnhance.Color):
            img = enhance(img).enhance(rng.uniform(1 - s, 1 + s))
    if rng.random() < aug.noise_p:
        img = add_noise(img, rng.uniform(*aug.noise_std), rng.randrange(2**31))
    if rng.random() < aug.jpeg_p:
        img = jpeg(img, rng.randint(*aug.jpeg_quality))

    size = pre.input_size
    img = pre.resized(img, size)
    if rng.random() < aug.scale_p:
        factor = rng.uniform(*aug.scale_range)
        w, h = img.size
        target = max(size, round(min(w, h) * factor))
        img = pre.replace(resize=target).resized(img, size)
    if aug.random_crop:
        w, h = img.size
        left, top = rng.randint(0, w - size), rng.randint(0, h - size)
        img = img.crop((left, top, left + size, top + size))
    else:
        img = center_crop(img, size)
    if rng.random() < aug.hflip_p:
        img = img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    return img


def mix_batch(x: torch.Tensor, y: torch.Tensor, aug: AugmentConfig, rng: np.random.Generator):
    """MixUp or CutMix of a batch ``x`` (B, C, H, W) and its labels ``y`` (B,) with a shuffled copy of itself.

    Returns the mixed images and soft labels (the share of each image's pixels or weight that came from a fake);
    the batch unchanged when mixing is off or not drawn. A label below 0 means none (an unlabelled image that only
    a distillation teacher scores): a mix with such an image has none either.
    """
    modes = [(name, a) for name, a in (("mixup", aug.mixup_alpha), ("cutmix", aug.cutmix_alpha)) if a > 0]
    if not modes or rng.random() >= aug.mix_p:
        return x, y
    mode, alpha = modes[rng.integers(len(modes))]
    lam = float(rng.beta(alpha, alpha))
    perm = torch.from_numpy(rng.permutation(len(x))).to(x.device)
    if mode == "mixup":
        x = lam * x + (1 - lam) * x[perm]
    else:  # a box of about (1 - lam) of the area comes from the other image; lam is then its exact share
        h, w = x.shape[-2:]
        bh, bw = int(h * (1 - lam) ** 0.5), int(w * (1 - lam) ** 0.5)
        cy, cx = rng.integers(h), rng.integers(w)
        y0, y1, x0, x1 = max(cy - bh // 2, 0), min(cy + bh // 2, h), max(cx - bw // 2, 0), min(cx + bw // 2, w)
        x = x.clone()
        x[..., y0:y1, x0:x1] = x[perm, :, y0:y1, x0:x1]
        lam = 1 - (y1 - y0) * (x1 - x0) / (h * w)
    mixed = lam * y + (1 - lam) * y[perm]
    return x, torch.where((y < 0) | (y[perm] < 0), torch.full_like(mixed, -1.0), mixed)


# -- corruptions, shared by training augmentation and robustness evaluation -----------------------------------
def jpeg(img: Image.Image, quality: int) -> Image.Image:
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=int(quality))
    buf.seek(0)
    return Image.open(buf).convert("RGB")


def blur(img: Image.Image, sigma: float) -> Image.Image:
    return img.filter(ImageFilter.GaussianBlur(radius=float(sigma)))


def down_up(img: Image.Image, factor: float) -> Image.Image:
    """Down-scale by ``factor`` and back: what re-uploads to social media do to an image."""
    w, h = img.size
    small = img.resize((max(1, round(w * factor)), max(1, round(h * factor))), Image.Resampling.BILINEAR)
    return small.resize((w, h), Image.Resampling.BILINEAR)


def add_noise(img: Image.Image, std: float, seed: int) -> Image.Image:
    arr = np.asarray(img, dtype=np.float32)
    noise = np.random.default_rng(seed).normal(0.0, std * 255.0, arr.shape)
    return Image.fromarray(np.clip(arr + noise, 0, 255).astype(np.uint8))


PERTURBATIONS = {
    "jpeg": lambda img, level, seed: jpeg(img, int(level)),
    "blur": lambda img, level, seed: blur(img, float(level)),
    "resize": lambda img, level, seed: down_up(img, float(level)),
    "noise": lambda img, level, seed: add_noise(img, float(level), seed),
}


def perturb(img: Image.Image, kind: str, level: float, seed: int = 0) -> Image.Image:
    """Apply one named corruption at ``level`` (JPEG quality, blur sigma, scale factor or noise std)."""
    if kind not in PERTURBATIONS:
        raise ValueError(f"unknown perturbation {kind!r}; known: {', '.join(PERTURBATIONS)}")
    return PERTURBATIONS[kind](img, level, seed)
