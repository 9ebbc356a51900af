"""Scoring image files with a trained detector: the library side of ``fakeface predict``.

:class:`Detector` wraps a checkpoint (model, preprocessing, threshold, temperature); :func:`predict_paths`
streams any number of files in batches and yields one row per input - scored, or with the reason it could not
be. Threads decode the next batches while the model scores the current one (:func:`decoded_batches`), and
nothing holds more than a few batches of decoded images at once.
"""

from __future__ import annotations

import os
import warnings
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from itertools import islice
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from . import CLASS_NAMES, distributed
from .checkpoint import (
    ENSEMBLE_CALIBRATION,
    calibration_fingerprint,
    load_checkpoint,
    model_from_checkpoint,
    read_ensemble_calibration,
)
from .data import UNLABELLED, FaceDataset, Sample, collate, default_workers
from .images import DEFAULT_MAX_PIXELS
from .inference import Scorer
from .models import parse_tta
from .runtime import resolve_device, resolve_precision


class BaseDetector:
    """What every backend shares: calibrated probabilities, verdicts and a description.

    Subclasses set ``checkpoint`` (a dict with at least "path"), ``preprocess``, ``threshold``, ``temperature``,
    ``name`` and ``scorer`` (``.logits((B,3,S,S) uint8) -> (B,)``, ``.device``, ``.precision``).
    """

    runtime = "pytorch"

    @property
    def members(self) -> list[BaseDetector]:
        """The single detectors behind this one: itself, or an ensemble's members."""
        return [self]

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
                "temperature": self.temperature, "test-time augmentation": self.checkpoint.get("tta") or "none",
                "trained epochs": self.checkpoint.get("epoch"),
                "device": str(self.scorer.device), "precision": self.scorer.precision, "runtime": self.runtime}


class Detector(BaseDetector):
    """A checkpoint ready to score: ``Detector("runs/x/best.pt").predict([img])`` -> P(fake) per image."""

    def __init__(self, checkpoint: str | os.PathLike, device: str = "auto", precision: str = "auto",
                 channels_last: bool = True, tta: str | None = None):
        self.checkpoint = load_checkpoint(checkpoint)
        if tta is not None:  # instead of the checkpoint's own test-time augmentation ("none" turns it off)
            self.checkpoint["tta"] = parse_tta(tta)
        model, self.preprocess = model_from_checkpoint(self.checkpoint)
        dev = resolve_device(device)
        self.name = self.checkpoint["model"]["name"]
        self.scorer = Scorer(model, self.preprocess, dev, resolve_precision(precision, dev, self.name), channels_last)
        self.threshold = float(self.checkpoint.get("threshold", 0.5))
        self.temperature = float(self.checkpoint.get("temperature", 1.0))

    def explain_model(self) -> torch.nn.Module:
        """A private fp32 CPU copy of the model for Grad-CAM, so that hooks and gradients never touch the
        copy that serves predictions (possibly from another thread)."""
        if getattr(self, "_explain_model", None) is None:
            import copy

            model = copy.deepcopy(self.scorer.model).float().cpu()
            self._explain_model = model.to(memory_format=torch.contiguous_format).eval()
        return self._explain_model



class Ensemble(BaseDetector):
    """Several detectors judging the same images: P(fake) is the mean of their calibrated probabilities.

    Members may differ in backbone, preprocessing and runtime (checkpoint or ONNX); each scores its own view of
    the decoded image. The decision threshold is the one fitted on the ensemble's own validation scores when it
    is an ensemble run's (``fakeface calibrate RUN`` writes ``RUN/calibration.json``; see
    :meth:`use_run_calibration`), else the mean of the members' (each chosen on validation data by its own
    policy) - which only approximates their policy: the mean of two thresholds at 1 % FPR need not flag 1 % of
    real faces once the probabilities are averaged.
    """

    runtime = "ensemble"
    temperature = 1.0  # the members' probabilities are already calibrated

    def __init__(self, members: list[BaseDetector]):
        if len(members) < 2:
            raise ValueError("an ensemble needs at least two detectors")
        self._members = list(members)
        self.threshold = float(np.mean([m.threshold for m in members]))
        self.name = "ensemble(" + ", ".join(m.name for m in members) + ")"
        self.preprocess = members[0].preprocess
        policies = sorted({str(m.checkpoint.get("threshold_policy", "default")) for m in members})
        self.checkpoint = {"path": " + ".join(str(m.checkpoint["path"]) for m in members),
                           "threshold_policy": f"mean of the members' thresholds ({', '.join(policies)})"}

    def use_run_calibration(self, run_dir: str | os.PathLike) -> bool:
        """Judge at the threshold fitted on this ensemble's own validation scores (``run_dir/calibration.json``,
        written by :func:`fakeface.calibrate.calibrate_ensemble`) when it was fitted on these members as they
        are now; otherwise keep the mean of theirs, and say why in the policy. True when it was applied."""
        record = read_ensemble_calibration(run_dir)
        if record is None:
            return False
        if record.get("members") != calibration_fingerprint(self.members):
            path = Path(run_dir) / ENSEMBLE_CALIBRATION
            stale = (f"{path} was fitted on members since recalibrated, retrained or set to another test-time "
                     f"augmentation, so the mean of theirs is used: `fakeface calibrate --checkpoint {run_dir}` "
                     "refits it")
            if distributed.is_main():  # under torchrun, said once
                warnings.warn(stale, stacklevel=2)
            self.checkpoint["threshold_policy"] += f"; {stale}"
            return False
        self.threshold = record["threshold"]
        self.checkpoint["threshold_policy"] = f"{record['threshold_policy']} (fitted on the ensemble's valid scores)"
        return True

    @property
    def members(self) -> list[BaseDetector]:
        return self._members

    def combine(self, member_p: np.ndarray) -> np.ndarray:
        """(n_members, n_images) calibrated probabilities -> the ensemble's (n_images,)."""
        return np.asarray(member_p, dtype=np.float64).mean(axis=0)

    def predict(self, images: list[Image.Image]) -> np.ndarray:
        return self.combine([m.predict(images) for m in self.members])

    def describe(self) -> dict:
        return {"ensemble": f"mean of {len(self.members)} calibrated probabilities",
                "threshold": self.threshold, "threshold policy": self.checkpoint["threshold_policy"],
                "members": [m.describe() for m in self.members]}


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
                  on_progress=None, transform=None, draft: bool = False) -> Iterator[dict]:
    """Yield ``{"path", "p_fake", "pred", "error", "label"}`` per input, in input order.

    ``workers``: decoding threads (default: one per core but one; 0: decode in this thread, between batches).
    ``transform(img, index) -> img`` is applied to each decoded image first (robustness perturbations).
    ``draft=True`` decodes JPEGs at least twice the model's view at a reduced scale (see
    :func:`fakeface.images.load_image`): faster on large photos, within a grey level or so of the full decode;
    images smaller than that, and any image when ``transform`` is given, are decoded whole as usual.
    An :class:`Ensemble`'s rows add ``member_p_fake``: each member's calibrated P(fake), in member order.
    """
    if len(detector.members) > 1:
        streams = [predict_paths(m, paths, batch_size, workers, max_pixels, labels, None, transform, draft)
                   for m in detector.members]
        for rows in zip(*streams):
            row = dict(rows[0])
            if all(r["error"] is None for r in rows):
                member_p = [r["p_fake"] for r in rows]
                row["p_fake"] = float(detector.combine(np.array(member_p)[:, None])[0])
                row["pred"], row["member_p_fake"] = detector.verdict(row["p_fake"]), member_p
            else:
                row.update(p_fake=None, pred=None, error=next(r["error"] for r in rows if r["error"]))
            yield row
            if on_progress is not None:
                on_progress(1)
        return
    labels = labels or [UNLABELLED] * len(paths)
    ds = FaceDataset([Sample(p, y) for p, y in zip(paths, labels)], detector.preprocess, max_pixels=max_pixels,
                     transform=transform, draft=draft)
    workers = default_workers() if workers is None else workers
    for batch in decoded_batches(ds, batch_size, workers):
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


def decoded_batches(ds: FaceDataset, batch_size: int, workers: int, ahead: int | None = None) -> Iterator[dict]:
    """:func:`~fakeface.data.collate`'d batches of ``ds``, in order, decoded while the caller scores earlier ones.

    ``workers`` threads decode whole batches; at most ``ahead`` batches (default ``2 * workers``) are decoded or
    being decoded beyond the one the caller holds, so memory stays flat however many files there are.
    ``workers=0`` decodes each batch in the caller's thread when it is asked for.

    Threads, not processes: libjpeg-turbo (simplejpeg, Pillow) releases the GIL while it decodes, PyTorch while it
    resizes and computes, ONNX Runtime while it computes, so nothing waits on the GIL, and batches need no pickling
    or shared memory to reach the model. Decoding uses no parallel torch operator (see
    :func:`~fakeface.data.collate`): one would start its own OpenMP team in the decoding thread, beside the
    model's; the resize (:func:`~fakeface.preprocess.resize_pixels`) runs inline for one image.
    """
    starts = iter(range(0, len(ds), batch_size))

    def load(start: int) -> dict:
        return collate([ds[i] for i in range(start, min(start + batch_size, len(ds)))])

    if workers == 0:
        yield from map(load, starts)
        return
    ahead = ahead or 2 * workers
    pool = ThreadPoolExecutor(workers, thread_name_prefix="fakeface-decode")
    try:
        pending = deque(pool.submit(load, start) for start in islice(starts, ahead))
        while pending:
            batch = pending.popleft().result()
            pending.extend(pool.submit(load, start) for start in islice(starts, 1))  # keep `ahead` in flight
            yield batch
    finally:  # also when the caller stops early: drop what was not started, wait for what was
        pool.shutdown(wait=True, cancel_futures=True)


def predict_distributed(score: Callable[[list[str]], Iterable[dict]], paths: list[str]) -> Iterable[dict] | None:
    """Under torchrun, each process runs ``score`` (``paths -> rows``, e.g. :func:`predict_paths` with its
    detector) on its contiguous shard of ``paths``, and rank 0 gets every process's rows back in ``paths`` order -
    each input exactly once - while the others get ``None``. In one process: ``score(paths)``, streamed."""
    if not distributed.is_distributed():
        return score(paths)
    parts = distributed.gather_to_main(list(score(paths[distributed.shard(len(paths))])))
    return None if parts is None else (row for part in parts for row in part)


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
