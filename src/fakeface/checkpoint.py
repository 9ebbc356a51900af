"""Self-describing checkpoints, written atomically and read with ``weights_only=True``.

A checkpoint is a plain dict of named keys: the model's registry name and arguments, its weights, the
preprocessing it was trained with, the decision threshold (and calibration), and - for training checkpoints -
optimizer, scheduler, scaler, epoch, RNG state and metric history. ``predict``, ``evaluate``, ``serve`` and
``export`` need nothing but its path.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import torch
from torch import nn

from . import __version__
from .data import DataError, discover, read_split_csv
from .files import atomic_path
from .models import create_model, with_tta
from .preprocess import Preprocess

FORMAT = "fakeface-checkpoint"
FORMAT_VERSION = 1
ENSEMBLE_CALIBRATION = "calibration.json"  # an ensemble run's own threshold, fitted on its valid scores
FOLDER_CONFIG, FOLDER_WEIGHTS = "config.json", "model.safetensors"  # a model folder's files (fakeface.hub)


class CheckpointError(ValueError):
    """A file that is not a usable fakeface checkpoint."""


def unwrap_model(model: nn.Module) -> nn.Module:
    """Strip DistributedDataParallel's ``.module`` and torch.compile's ``._orig_mod``."""
    while True:
        if hasattr(model, "module") and isinstance(model.module, nn.Module):
            model = model.module
        elif hasattr(model, "_orig_mod"):
            model = model._orig_mod
        else:
            return model


def save_atomic(obj: dict, path: str | os.PathLike) -> None:
    """``torch.save`` ``obj`` to ``path`` atomically and flushed to disk: a reader - or a run resumed after
    ``kill -9`` - sees the old file or the new one, never half of one."""
    with atomic_path(path, fsync=True) as tmp:
        torch.save(obj, tmp)


def make_checkpoint(model: nn.Module, model_name: str, model_kwargs: dict, preprocess: Preprocess,
                    **extra) -> dict:
    """The inference part of a checkpoint; training adds optimizer state and history via ``extra``."""
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "fakeface_version": __version__,
        "model": {"name": model_name, "kwargs": dict(model_kwargs)},
        "state_dict": unwrap_model(model).state_dict(),
        "preprocess": preprocess.to_dict(),
        "threshold": 0.5,
        "threshold_policy": "default",
        "temperature": 1.0,
        **extra,
    }


def ensemble_members(path: str | os.PathLike) -> list[Path]:
    """The member run folders of an ensemble run (``train`` with ``members: N`` writes member0 ... memberN-1);
    [] for anything else."""
    path = Path(path)
    if not path.is_dir() or (path / "best.pt").is_file() or (path / "last.pt").is_file():
        return []
    found = [p for p in path.glob("member*") if p.name[6:].isdigit() and p.is_dir()]
    return sorted(found, key=lambda p: int(p.name[6:]))


def calibration_fingerprint(members) -> list[list]:
    """The (temperature, threshold, test-time augmentation) of each member - checkpoint dicts or detectors - that
    an ensemble threshold is fitted on top of: recalibrating or retraining a member, or changing how it scores
    (``tta``), changes it."""
    def fields(m) -> tuple:
        d = m if isinstance(m, dict) else {**m.checkpoint, "temperature": m.temperature, "threshold": m.threshold}
        return float(d.get("temperature", 1.0)), float(d.get("threshold", 0.5)), d.get("tta")

    return [[round(t, 6), round(th, 6), tta] for t, th, tta in map(fields, members)]


def read_ensemble_calibration(run_dir: str | os.PathLike) -> dict | None:
    """An ensemble run's own threshold record (``run_dir/calibration.json``), or None when it has none; a file
    without a threshold in [0, 1] and its policy raises :class:`CheckpointError`."""
    path = Path(run_dir) / ENSEMBLE_CALIBRATION
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text())
        record["threshold"], record["threshold_policy"] = float(record["threshold"]), str(record["threshold_policy"])
        if not 0 <= record["threshold"] <= 1:
            raise ValueError(f"threshold {record['threshold']} is not in [0, 1]")
    except (OSError, ValueError, TypeError, KeyError) as e:
        raise CheckpointError(f"cannot read the ensemble threshold {path} ({type(e).__name__}: {e}): "
                              f"`fakeface calibrate --checkpoint {run_dir}` writes it again") from None
    return record


def expand_checkpoints(paths) -> list[Path]:
    """Checkpoint paths with every ensemble run folder replaced by its members, in order."""
    return [m for p in paths for m in (ensemble_members(p) or [Path(p)])]


def checkpoint_file(path: str | os.PathLike) -> Path:
    """The checkpoint file ``path`` names: itself, a run folder's best.pt (else last.pt), or a model folder's
    model.safetensors (its exports are told apart by that file's SHA-256)."""
    path = Path(path)
    if path.is_dir():
        for name in ("best.pt", "last.pt"):
            if (path / name).is_file():
                return path / name
        members = ensemble_members(path)
        if members:
            raise CheckpointError(f"{path} is an ensemble of {len(members)} models; this command takes one of "
                                  f"them: {', '.join(str(m) for m in members)}")
        if (path / FOLDER_CONFIG).is_file():  # a model folder (fakeface.hub): its weights file stands for it
            return path / FOLDER_WEIGHTS
        raise CheckpointError(f"{path} is a folder without best.pt, last.pt or a model folder's {FOLDER_CONFIG}")
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    return path


def load_checkpoint(path: str | os.PathLike) -> dict:
    """Read a checkpoint safely (``weights_only=True``) and check it is ours; a model folder (or its
    model.safetensors) is read by :func:`fakeface.hub.load_folder` into the same dict."""
    path = checkpoint_file(path)
    if path.name == FOLDER_WEIGHTS:
        from .hub import load_folder  # the folder format is built on this module

        return load_folder(path.parent)
    if path.suffix.lower() == ".onnx":
        raise CheckpointError(f"{path} is an ONNX export: this needs the PyTorch checkpoint (.pt) it was exported from")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise CheckpointError(f"checkpoint not found: {path}") from None
    except Exception as e:  # torch's advice to load the file unsafely must not reach the user; its reason may
        what = "an empty file" if path.is_file() and path.stat().st_size == 0 else type(e).__name__
        unsafe = re.search(r"Unsupported global: GLOBAL (\S+)", str(e))
        if unsafe:  # a pickle that holds more than tensors and plain values
            raise CheckpointError(f"cannot read checkpoint {path} safely: it holds a {unsafe[1]} object, which a "
                                  "fakeface checkpoint never does") from e
        raise CheckpointError(f"cannot read checkpoint {path}: not a PyTorch checkpoint, or a truncated or damaged "
                              f"one ({what})") from e
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a fakeface checkpoint (a facenet weights file goes to --init-weights)")
    ckpt["path"] = str(path)
    return ckpt


def model_from_checkpoint(ckpt: dict) -> tuple[nn.Module, Preprocess]:
    """Rebuild the model (eval mode, on CPU) and its preprocessing from a loaded checkpoint; with the checkpoint's
    test-time augmentation (``"tta": "flip"``, set by ``fakeface calibrate --tta``) it scores through it."""
    model = create_model(ckpt["model"]["name"], **ckpt["model"]["kwargs"])
    model.load_state_dict(ckpt["state_dict"])
    return with_tta(model, ckpt.get("tta")).eval(), Preprocess.from_dict(ckpt["preprocess"])


def validation_samples(ckpt: dict, data: str | os.PathLike | None):
    """The split the threshold may be chosen on: the data's 'valid' split, or the run's own held-out split."""
    split_csv = Path(ckpt["path"]).parent / "split.csv"
    if data is not None:
        index = discover(data)
        if "valid" in index.splits:
            return index.splits["valid"]
    if split_csv.is_file():
        return read_split_csv(split_csv).get("valid", [])
    raise DataError("no validation split to calibrate on (the test split is never used): give --data with a "
                    "valid/ split, or a checkpoint whose run folder holds split.csv")
