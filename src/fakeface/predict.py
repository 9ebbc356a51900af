"""Scoring image files with a trained detector: the library side of ``fakeface predict``.

:class:`Detector` wraps a checkpoint (model, preprocessing, threshold, temperature); :func:`predict_paths`
streams any number of files through loader workers in batches and yields one row per input - scored, or with
the reason it could not be. Nothing holds more than a few batches of decoded images at once.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader

from . import CLASS_NAMES
from .checkpoint import load_checkpoint, model_from_checkpoint
from .data import UNLABELLED, FaceDataset, Sample, collate, default_workers
from .images import DEFAULT_MAX_PIXELS
from .inference import Scorer
from .runtime import resolve_device, resolve_precision


class BaseDetector:
    """What every backend shares: calibrated probabilities, verdicts and a description.

    Subclasses set ``checkpoint`` (a dict with at least "path"), ``preprocess``, ``threshold``, ``temperature``,
    ``name`` and ``scorer`` (``.logits((B,3,S,S) uint8) -> (B,)``, ``.device``, ``.precision``).
    """

    runtime = "pytorch"

    def p_fake(self, logits: np.ndarray | torch.Tensor) -> np.ndarray:
        """Calibrated P(fake) = sigmoid(logit / T)."""
        logits = np.asarray(logits, dtype=np.float64)
        return 1.0 / (1.0 + np.exp(-logits / self.temperature))

    def logits_of(self, p_fake) -> np.ndarray:
        """The raw logits behind calibrated probabilities: the inverse of :meth:`p_fake`."""
        p = np.clip(np.asarray(p_fake, dtype=np.float64), 1e-12, 1 - 1e-12)
        return np.log(p / (1 - p)) * self.temperature

    def verdict(self, p: float) -> str:
        return CLASS_NAMES[int(p >= self.threshold)]

    def predict(self, images: list[Image.Image]) -> np.ndarray:
        """P(fake) for decoded RGB images, one batch."""
        batch = torch.stack([self.preprocess.eval_tensor(img) for img in images])
        return self.p_fake(self.scorer.logits(batch).numpy())

    def describe(self) -> dict:
        pre = self.preprocess
        return {"checkpoint": self.checkpoint["path"], "model": self.name, "input size": pre.crop_size,
                "resize": pre.resize or "native", "normalisation": f"mean {pre.mean}, std {pre.std}",
                "threshold": self.threshold, "threshold policy": self.checkpoint.get("threshold_policy"),
                "temperature": self.temperature, "trained epochs": self.checkpoint.get("epoch"),
                "device": str(self.scorer.device), "precision": self.scorer.precision, "runtime": self.runtime}


class Detector(BaseDetector):
    """A checkpoint ready to score: ``Detector("runs/x/best.pt").predict([img])`` -> P(fake) per image."""

    def __init__(self, checkpoint: str | os.PathLike, device: str = "auto", precision: str = "auto",
                 channels_last: bool = True):
        self.checkpoint = load_checkpoint(checkpoint)
        model, self.preprocess = model_from_checkpoint(self.checkpoint)
        dev = resolve_device(device)
        self.scorer = Scorer(model, self.preprocess, dev, resolve_precision(precision, dev), channels_last)
        self.threshold = float(self.checkpoint.get("threshold", 0.5))
        self.temperature = float(self.checkpoint.get("temperature", 1.0))
        self.name = self.checkpoint["model"]["name"]

    def explain_model(self) -> torch.nn.Module:
        """A private fp32 CPU copy of the model for Grad-CAM, so that hooks and gradients never touch the
        copy that serves predictions (possibly from another thread)."""
        if getattr(self, "_explain_model", None) is None:
            import copy

            model = copy.deepcopy(self.scorer.model).float().cpu()
            self._explain_model = model.to(memory_format=torch.contiguous_format).eval()
        return self._explain_model



def expand_inputs(paths: Iterable[str | os.PathLike]) -> list[str]:
    """Files as given, folders walked recursively (sorted, hidden files skipped). Missing paths stay in the
    list so that they get a row saying so."""
    out = []
    for p in paths:
        p = Path(p)
        if p.is_dir():
            for dirpath, dirnames, filenames in os.walk(p):
                dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
                out += [os.path.join(dirpath, f) for f in sorted(filenames) if not f.startswith(".")]
        else:
            out.append(str(p))
    return out


def predict_paths(detector: Detector, paths: list[str], batch_size: int = 32, workers: int | None = None,
                  max_pixels: int | None = DEFAULT_MAX_PIXELS, labels: list[int] | None = None,
                  on_progress=None, transform=None) -> Iterator[dict]:
    """Yield ``{"path", "p_fake", "pred", "error", "label"}`` per input, in input order.

    ``transform(img, index) -> img`` is applied to each decoded image first (robustness perturbations).
    """
    labels = labels or [UNLABELLED] * len(paths)
    ds = FaceDataset([Sample(p, y) for p, y in zip(paths, labels)], detector.preprocess, max_pixels=max_pixels,
                     transform=transform)
    workers = default_workers() if workers is None else workers
    loader = DataLoader(ds, batch_size=batch_size, num_workers=workers, collate_fn=collate,
                        prefetch_factor=4 if workers else None)
    for batch in loader:
        rows = {}
        if len(batch["index"]):
            probs = detector.p_fake(detector.scorer.logits(batch["image"]).numpy())
            for i, p in zip(batch["index"].tolist(), probs):
                rows[i] = {"p_fake": float(p), "pred": detector.verdict(p), "error": None}
        for i, reason in batch["failures"]:
            rows[i] = {"p_fake": None, "pred": None, "error": reason}
        for i in sorted(rows):
            label = ds.samples[i].label
            yield {"path": ds.samples[i].path, "label": CLASS_NAMES[label] if label >= 0 else None, **rows[i]}
        if on_progress is not None:
            on_progress(len(rows))


def predict_faces(detector: Detector, paths: list[str], max_pixels: int | None = DEFAULT_MAX_PIXELS,
                  on_progress=None) -> Iterator[dict]:
    """Like :func:`predict_paths`, for ordinary photos: find the faces of each image and score each one.

    Rows add ``faces`` (box, crop, P(fake), verdict per face) and ``faces_found``; ``p_fake``/``pred`` are the
    most suspicious face's. An image without a face is scored whole, and its one face says ``whole_image``.
    """
    from .faces import FaceDetector, analyse
    from .images import ImageLoadError, load_image

    face_detector = FaceDetector()
    for path in paths:
        try:
            img = load_image(path, max_pixels)
        except ImageLoadError as e:
            yield {"path": path, "label": None, "p_fake": None, "pred": None, "error": str(e), "faces": [],
                   "faces_found": 0}
        else:
            result = analyse(detector, img, face_detector)
            yield {"path": path, "label": None, "p_fake": result["p_fake"], "pred": result["verdict"], "error": None,
                   "faces": result["faces"], "faces_found": result["faces_found"]}
        if on_progress is not None:
            on_progress(1)
