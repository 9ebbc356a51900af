"""Distillation: one small student trained on a teacher detector's probabilities as well as on the labels.

A train config's ``distill:`` section (:class:`DistillConfig`) names the teacher - anything
:func:`fakeface.detector.load_detector` takes: a run folder, checkpoint(s), an ensemble run - and how much its
soft targets weigh. Every training batch, after augmentation, is scored by the teacher too - mixed by MixUp or
CutMix when the config mixes, so the student learns the teacher's function on images between the training ones
("function matching", Beyer et al. 2022) - in eval mode, without gradients, resized on the device to the size
the teacher scores at, normalised as its preprocessing says, with its own test-time augmentation and
calibration. The loss is

    (1 - alpha) * BCE(student, label-smoothed label) + alpha * BCE(student / T, sigmoid(teacher logit / T))

where the teacher's logit is that of its calibrated P(fake) (an ensemble's: the mean of its members'). Images
of ``extra_data`` (folders, or text files listing image paths) have no label: only the teacher's term counts
for them. The result is an ordinary run folder; :func:`distill` makes one.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import torch
import yaml
from torch.nn import functional as F

from .data import UNLABELLED, DataError, Sample, read_path_list
from .devices import autocast
from .images import is_image_file
from .preprocess import Normalize
from .scoring import p_fake_tensor


@dataclass
class DistillConfig:
    """The ``distill:`` section of a train config."""

    teacher: str | list[str] | None = None
    alpha: float = 0.5  # weight of the teacher's soft targets; 1 - alpha goes to the labels
    temperature: float = 1.0  # both logits divided by it in the soft term
    extra_data: str | list[str] | None = None  # unlabelled images: folders, or .txt files of image paths

    def __post_init__(self):
        if not self.teacher:
            raise ValueError("distill needs a teacher: a run folder, checkpoint(s) or an ensemble run")
        if not 0 <= self.alpha <= 1:
            raise ValueError(f"distill alpha must be in [0, 1], got {self.alpha!r}")
        if not self.temperature > 0:
            raise ValueError(f"distill temperature must be > 0, got {self.temperature!r}")

    @classmethod
    def from_dict(cls, d: dict) -> DistillConfig:
        if not isinstance(d, dict):
            raise ValueError(f"distill must be a mapping of option: value, got {d!r}")
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown distill keys: {sorted(unknown)} (known: {sorted(known)})")
        return cls(**{k: float(v) if k in ("alpha", "temperature") and isinstance(v, (int, str)) else v
                      for k, v in d.items()})

    @property
    def teachers(self) -> list[str]:
        return [self.teacher] if isinstance(self.teacher, (str, os.PathLike)) else [str(t) for t in self.teacher]

    def to_dict(self) -> dict:
        return asdict(self)


def unlabelled_samples(sources: str | list[str] | None) -> list[Sample]:
    """Images with no label from folders (walked, sorted) and ``.txt`` files (one image path a line, relative
    to the file's folder unless absolute; blank lines and ``#`` comments skipped)."""
    if not sources:
        return []
    out: list[Sample] = []
    for source in [sources] if isinstance(sources, (str, os.PathLike)) else sources:
        path = Path(source).expanduser()
        if path.is_dir():
            files = sorted(p for p in path.rglob("*") if p.is_file() and not p.name.startswith(".")
                           and is_image_file(p.name))
        elif path.is_file() and path.suffix.lower() == ".txt":
            files = read_path_list(path)
        else:
            raise DataError(f"distill extra_data {path}: not a folder or a .txt list of image paths")
        if not files:
            raise DataError(f"distill extra_data {path} holds no images")
        out += [Sample(str(p), UNLABELLED) for p in files]
    return out


class Teacher:
    """A detector's calibrated P(fake) for training batches on the training device: (B, 3, S, S) uint8 at any
    S -> (B,) float, each member seeing the batch at the size it scores at, through its own test-time
    augmentation; an ensemble's is the mean of its members' calibrated probabilities."""

    def __init__(self, paths: list[str], device: torch.device, precision: str = "fp32"):
        from .detector import load_detector

        detector = load_detector(paths if len(paths) > 1 else paths[0], backend="pytorch", device=str(device))
        self.members = []
        for m in detector.members:
            model = getattr(m.scorer, "model", None)
            if model is None:
                raise ValueError(f"the teacher {m.checkpoint['path']} is an ONNX export: give its checkpoint")
            model.eval().requires_grad_(False)
            self.members.append((model, Normalize(m.preprocess).to(device), m.preprocess.crop_size,
                                 float(m.temperature)))
        self.device, self.precision = device, precision
        self.name = detector.name

    @torch.no_grad()
    def probs(self, pixels: torch.Tensor) -> torch.Tensor:
        x = pixels.float()
        out = []
        for model, normalize, size, temperature in self.members:
            xi = x if x.shape[-1] == size else F.interpolate(x, size=(size, size), mode="bilinear",
                                                             antialias=True, align_corners=False).clamp_(0, 255)
            xi = normalize(xi).contiguous(memory_format=torch.channels_last)
            with autocast(self.device, self.precision):
                logits = model(xi).float().squeeze(1)
            out.append(p_fake_tensor(logits, temperature))
        return torch.stack(out).mean(0)


class Distiller:
    """The distillation loss of a batch (see the module's docstring)."""

    def __init__(self, teacher: Teacher, alpha: float, temperature: float):
        self.teacher, self.alpha, self.temperature = teacher, alpha, temperature

    def loss(self, logits: torch.Tensor, target: torch.Tensor, label: torch.Tensor, pixels: torch.Tensor,
             pos_weight: torch.Tensor | None = None) -> tuple[torch.Tensor, float]:
        """(loss to back-propagate, the soft term's value). ``label`` < 0 marks images without a label."""
        t = self.temperature
        p = self.teacher.probs(pixels).clamp(1e-6, 1 - 1e-6)
        soft_target = torch.sigmoid(torch.logit(p) / t)
        soft = F.binary_cross_entropy_with_logits(logits / t, soft_target)
        # the labels' term over the labelled images alone, without asking the device which those are
        labelled = (label >= 0).float()
        hard = F.binary_cross_entropy_with_logits(logits, target.clamp(0, 1), pos_weight=pos_weight, reduction="none")
        hard = (hard * labelled).sum() / labelled.sum().clamp(min=1)
        return (1 - self.alpha) * hard + self.alpha * soft, float(soft.detach())


def make_distiller(section: dict, device: torch.device, precision: str) -> tuple[Distiller, list[Sample]]:
    """The loss of a config's ``distill:`` section, and its unlabelled extra training images."""
    import logging

    cfg = DistillConfig.from_dict(section)
    teacher = Teacher(cfg.teachers, device, precision)
    extra = unlabelled_samples(cfg.extra_data)
    logging.getLogger("fakeface").info(
        "distilling %s (%d model(s)): alpha %g, temperature %g%s", teacher.name, len(teacher.members), cfg.alpha,
        cfg.temperature, f", {len(extra)} unlabelled extra images" if extra else "")
    return Distiller(teacher, cfg.alpha, cfg.temperature), extra


def distill(teacher: str | os.PathLike | list, data: str | os.PathLike, out: str | os.PathLike,
            config: str | os.PathLike | None = None, **overrides) -> Path:
    """Train a student into the run folder ``out`` on ``data`` against ``teacher`` (a run folder, checkpoint(s)
    or an ensemble run). ``config``: a train config (its ``distill:`` section gives alpha, temperature and
    extra_data); ``overrides``: TrainConfig fields. Returns the run folder, an ordinary one."""
    from .train import load_config, train

    teachers = [str(t) for t in teacher] if isinstance(teacher, (list, tuple)) else str(teacher)
    section = {}
    try:  # the config's own distill settings, given the teacher; a bad file is load_config's to explain
        with open(config or os.devnull, encoding="utf-8") as f:
            section = (yaml.safe_load(f) or {}).get("distill") or {}
    except (OSError, ValueError, AttributeError, yaml.YAMLError):
        pass
    section = {**(section if isinstance(section, dict) else {}), **(overrides.pop("distill", None) or {})}
    return train(load_config(config, {**overrides, "data": str(data), "out": str(out),
                                      "distill": {**section, "teacher": teachers}}))
