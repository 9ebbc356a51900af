"""Scoring batches of images with a model, and turning logits into calibrated probabilities.

Shared by validation, evaluation and prediction; :func:`p_fake` (and its tensor twin :func:`p_fake_tensor`) is
the one place P(fake) = sigmoid(logit / T) is computed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from .devices import autocast
from .preprocess import Normalize, Preprocess


def p_fake(logits, temperature: float = 1.0) -> np.ndarray:
    """Calibrated P(fake) = sigmoid(logit / T) (temperature scaling; T = 1: the model's own probability)."""
    return 1.0 / (1.0 + np.exp(-np.asarray(logits, dtype=np.float64) / temperature))


def p_fake_tensor(logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """:func:`p_fake` on a tensor, on its device and in its dtype (for scores that stay on the device)."""
    return torch.sigmoid(logits / temperature)


def logits_of(p, temperature: float = 1.0) -> np.ndarray:
    """The logits behind calibrated probabilities: the inverse of :func:`p_fake`."""
    p = np.clip(np.asarray(p, dtype=np.float64), 1e-12, 1 - 1e-12)
    return np.log(p / (1 - p)) * temperature


@dataclass
class Scores:
    """Per-image results in loader order; ``failures`` are (dataset index, reason) of unreadable files."""

    index: np.ndarray
    label: np.ndarray
    logit: np.ndarray
    failures: list[tuple[int, str]] = field(default_factory=list)

    @classmethod
    def merge(cls, parts: list[Scores]) -> Scores:
        """One ``Scores`` from several over disjoint parts of a dataset (each process's shard), by dataset index."""
        index = np.concatenate([p.index for p in parts])
        order = np.argsort(index, kind="stable")
        return cls(index[order], np.concatenate([p.label for p in parts])[order],
                   np.concatenate([p.logit for p in parts])[order], sorted(f for p in parts for f in p.failures))

    def probs(self, temperature: float = 1.0) -> np.ndarray:
        return p_fake(self.logit, temperature)


class Scorer:
    """A model plus its normalisation, on a device, at a precision: (B,3,H,W) uint8 -> (B,) logits."""

    def __init__(self, model: nn.Module, preprocess: Preprocess, device: torch.device, precision: str = "fp32",
                 channels_last: bool = True):
        self.device, self.precision, self.channels_last = device, precision, channels_last
        self.normalize = Normalize(preprocess).to(device)
        self.model = model.to(device).eval()
        if channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)

    @torch.inference_mode()
    def logits(self, images: torch.Tensor) -> torch.Tensor:
        x = self.normalize(images.to(self.device, non_blocking=True))
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with autocast(self.device, self.precision):
            out = self.model(x)
        return out.float().squeeze(1).cpu()

    def score_batches(self, batches: Iterable[dict], on_batch: Callable[[int], None] | None = None) -> Scores:
        """Run every batch of a :func:`fakeface.data.collate` loader through the model."""
        index, label, logit, failures = [], [], [], []
        for batch in batches:
            failures += batch["failures"]
            if len(batch["index"]):
                index.append(batch["index"].numpy())
                label.append(batch["label"].numpy())
                logit.append(self.logits(batch["image"]).numpy())
            if on_batch is not None:
                on_batch(len(batch["index"]) + len(batch["failures"]))
        cat = lambda xs, dt: np.concatenate(xs).astype(dt) if xs else np.zeros(0, dt)  # noqa: E731
        return Scores(cat(index, np.int64), cat(label, np.int64), cat(logit, np.float64), failures)
