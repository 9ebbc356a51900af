"""Training images as decoded uint8 tensors at their stored resolution, for augmentation on the device.

:class:`StoredSizeDataset` is what the loader workers do when :mod:`fakeface.batch_augment` augments on the
device: decode (and, with ``jpeg_p``, re-compress at a random quality, the one augmentation tensors cannot
do), nothing else - no float work, no resize unless an image is not of the dataset's stored size. Its items
are :class:`fakeface.data.FaceDataset`'s (``index``, ``label``, ``image``, ``error``), so
:func:`fakeface.data.collate` and the training loader take them unchanged.
"""

from __future__ import annotations

import random

import numpy as np
import torch
from torch.utils.data import Dataset

from .augment import AugmentConfig, jpeg
from .data import DataError, Sample
from .images import DEFAULT_MAX_PIXELS, ImageLoadError, load_image, load_pixels
from .preprocess import resize_pixels, to_uint8_tensor


def stored_size(samples: list[Sample], max_pixels: int | None = DEFAULT_MAX_PIXELS, n: int = 32) -> tuple[int, int]:
    """(h, w) of the first readable image of ``samples`` (a dataset's images share one size, as the 140k set's
    256 px faces do; others are fitted to it)."""
    for s in samples[:n]:
        try:
            return tuple(load_pixels(s.path, max_pixels).shape[:2])
        except ImageLoadError:
            continue
    raise DataError(f"none of the first {min(n, len(samples))} training images could be read")


def fit_to(pixels: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(H, W, 3) uint8 -> (h, w, 3) for ``size`` = (h, w): scaled to cover it, then centre-cropped."""
    h, w = size
    ph, pw = pixels.shape[:2]
    if (ph, pw) == (h, w):
        return pixels
    scale = max(h / ph, w / pw)
    rw, rh = max(w, round(pw * scale)), max(h, round(ph * scale))
    pixels = resize_pixels(pixels, (rw, rh), "bilinear")
    top, left = (rh - h) // 2, (rw - w) // 2
    return pixels[top:top + h, left:left + w]


class StoredSizeDataset(Dataset):
    """Samples -> (3, h, w) uint8 tensors of one stored size; a file that fails to load is an item with an
    ``error``. ``augment.jpeg_p`` re-compresses with a per-sample RNG seeded by (seed, epoch, index), as
    :class:`fakeface.data.FaceDataset` seeds its augmentation."""

    def __init__(self, samples: list[Sample], size: tuple[int, int], augment: AugmentConfig | None = None,
                 seed: int = 0, max_pixels: int | None = DEFAULT_MAX_PIXELS):
        self.samples, self.size, self.seed, self.max_pixels = samples, tuple(size), seed, max_pixels
        self.augment = augment or AugmentConfig()
        # In shared memory: persistent loader workers must see set_epoch() (see FaceDataset)
        self._epoch = torch.zeros((), dtype=torch.int64).share_memory_()

    @property
    def epoch(self) -> int:
        return int(self._epoch)

    def set_epoch(self, epoch: int) -> None:
        self._epoch.fill_(epoch)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> dict:
        sample = self.samples[index]
        item = {"index": index, "label": sample.label, "image": None, "error": None}
        aug = self.augment
        try:
            rng = random.Random(f"{self.seed}/{self.epoch}/{index}")
            if aug.jpeg_p > 0 and rng.random() < aug.jpeg_p:
                pixels = np.asarray(jpeg(load_image(sample.path, self.max_pixels), rng.randint(*aug.jpeg_quality)))
            else:
                pixels = load_pixels(sample.path, self.max_pixels)
            item["image"] = to_uint8_tensor(fit_to(pixels, self.size))
        except ImageLoadError as e:
            item["error"] = str(e)
        return item
