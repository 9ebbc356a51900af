"""What a detector is: a model ready to score images, at the threshold its run chose.

* :class:`Detector` - a PyTorch checkpoint (GPUs, Grad-CAM, training's own validation);
* :class:`OnnxDetector` - an ONNX export run by ONNX Runtime on the CPU (:mod:`fakeface.onnx_runtime`);
* :class:`Ensemble` - several of them, P(fake) the mean of their calibrated probabilities.

:func:`load_detector` is the one way in: it resolves what was given (a checkpoint, a run folder, an ensemble run
folder, an ``.onnx`` file, several of them), chooses each model's backend (:func:`choose_backend`) and applies the
run's threshold. Thresholds are chosen by :mod:`fakeface.calibrate`, stored by :mod:`fakeface.checkpoint` (and
copied into an export's metadata), and applied here and nowhere else.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from . import CLASS_NAMES, distributed
from .checkpoint import (
    ENSEMBLE_CALIBRATION,
    FOLDER_WEIGHTS,
    calibration_fingerprint,
    checkpoint_file,
    expand_checkpoints,
    load_checkpoint,
    model_from_checkpoint,
    read_ensemble_calibration,
)
from .devices import int8_full_range_safe, resolve_device, resolve_precision
from .hub import exports_dir, resolve, source_digest
from .models import parse_tta
from .onnx_runtime import OnnxModelError, OnnxScorer, read_metadata, session, session_metadata
from .preprocess import Preprocess
from .scoring import Scorer, logits_of, p_fake


class BaseDetector:
    """What every backend shares: calibrated probabilities, verdicts and a description.

    Subclasses set ``checkpoint`` (a dict with at least "path"), ``preprocess``, ``threshold``, ``temperature``,
    ``name`` and ``scorer`` (``.logits((B,3,S,S) uint8) -> (B,)``, ``.device``, ``.precision``).
    """

    runtime = "pytorch"
    backend_choice: BackendChoice | None = None  # set by load_detector: which file runs, as which backend, why

    @property
    def members(self) -> list[BaseDetector]:
        """The single detectors behind this one: itself, or an ensemble's members."""
        return [self]

    @property
    def threshold_policy(self) -> str:
        return str(self.checkpoint.get("threshold_policy", "default"))

    def p_fake(self, logits: np.ndarray | torch.Tensor) -> np.ndarray:
        """Calibrated P(fake) of raw logits."""
        return p_fake(logits, self.temperature)

    def logits_of(self, p) -> np.ndarray:
        """The raw logits behind calibrated probabilities: the inverse of :meth:`p_fake`."""
        return logits_of(p, self.temperature)

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
    """A PyTorch checkpoint ready to score: ``Detector("runs/x/best.pt").predict([img])`` -> P(fake) per image."""

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


class OnnxDetector(BaseDetector):
    """An exported .onnx file ready to score, with :class:`Detector`'s interface.

    Everything (preprocessing, threshold, temperature, model name) comes from the file's metadata, so
    ``predict_paths(OnnxDetector("model.onnx"), paths)`` needs nothing else.
    """

    def __init__(self, path: str | os.PathLike, threads: int | None = None, spinning: bool = False):
        import onnxruntime as ort

        sess = session(path, threads, spinning)  # raises OnnxModelError for missing / corrupt files
        meta = session_metadata(sess, path)
        self.checkpoint = {**meta, "path": str(path)}
        self.preprocess = Preprocess.from_dict(meta["preprocess"])
        self.threshold, self.temperature = meta["threshold"], meta["temperature"]
        self.name = meta["model"]["name"]
        self.scorer = OnnxScorer(sess, self.preprocess.crop_size, meta.get("precision", "fp32"))
        self.runtime = f"onnxruntime {ort.__version__}, {self.scorer.threads} threads"


@dataclass(frozen=True)
class RunThreshold:
    """The threshold an ensemble is judged at, and in words why."""

    threshold: float
    policy: str
    record: dict | None  # the ensemble run's calibration.json when it applies, else None
    stale: bool = False  # the run has one, fitted on its members as they were before


def ensemble_threshold(members, run_dir: str | os.PathLike | None = None, warn: bool = False) -> RunThreshold:
    """The threshold of an ensemble of ``members`` (detectors or checkpoint dicts).

    An ensemble run's own threshold (``run_dir/calibration.json``, fitted by ``fakeface calibrate`` on the mean of
    the members' calibrated probabilities on validation data) when it was fitted on these members as they are now;
    else the mean of the members' thresholds, which only approximates their policy (the mean of two thresholds at
    1 % FPR need not flag 1 % of real faces once the probabilities are averaged). ``warn``: also say so when a
    run's threshold no longer fits its members.
    """
    def field(m, key, default):
        return float(m.get(key, default) if isinstance(m, dict) else getattr(m, key))

    def policy_of(m) -> str:
        return str((m if isinstance(m, dict) else m.checkpoint).get("threshold_policy", "default"))

    members = list(members)
    mean = float(np.mean([field(m, "threshold", 0.5) for m in members]))
    mean_policy = f"mean of the members' thresholds ({', '.join(sorted({policy_of(m) for m in members}))})"
    record = read_ensemble_calibration(run_dir) if run_dir is not None else None
    if record is None:
        return RunThreshold(mean, mean_policy, None)
    if record.get("members") != calibration_fingerprint(members):
        path = Path(run_dir) / ENSEMBLE_CALIBRATION
        stale = (f"{path} was fitted on members since recalibrated, retrained or set to another test-time "
                 f"augmentation, so the mean of theirs is used: `fakeface calibrate --checkpoint {run_dir}` refits it")
        if warn and distributed.is_main():  # under torchrun, said once
            warnings.warn(stale, stacklevel=3)
        return RunThreshold(mean, f"{mean_policy}; {stale}", None, stale=True)
    return RunThreshold(record["threshold"], f"{record['threshold_policy']} (fitted on the ensemble's valid scores)",
                        record)


class Ensemble(BaseDetector):
    """Several detectors judging the same images: P(fake) is the mean of their calibrated probabilities.

    Members may differ in backbone, preprocessing and runtime (checkpoint or ONNX); each scores its own view of
    the decoded image. ``run_dir``: the ensemble run folder they come from, whose own threshold applies
    (:func:`ensemble_threshold`).
    """

    runtime = "ensemble"
    temperature = 1.0  # the members' probabilities are already calibrated

    def __init__(self, members: list[BaseDetector], run_dir: str | os.PathLike | None = None):
        if len(members) < 2:
            raise ValueError("an ensemble needs at least two detectors")
        self._members = list(members)
        chosen = ensemble_threshold(self._members, run_dir, warn=True)
        self.threshold = chosen.threshold
        self.name = "ensemble(" + ", ".join(m.name for m in members) + ")"
        self.preprocess = members[0].preprocess
        self.checkpoint = {"path": " + ".join(str(m.checkpoint["path"]) for m in members),
                           "threshold_policy": chosen.policy}

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


# -- choosing a backend --------------------------------------------------------------------------------------------
BACKENDS = ("auto", "pytorch", "onnx", "onnx-int8")
AS_GIVEN = "as-given"  # a checkpoint with PyTorch, an export with ONNX Runtime: what evaluate and calibrate measure


@dataclass(frozen=True)
class BackendChoice:
    """What to load (a checkpoint or an export), as which backend, why, and whether that is worth telling: an
    export used or made, a backend asked for, or a fall-back - not PyTorch where nothing else was possible."""

    path: Path
    backend: str  # pytorch, onnx or onnx-int8
    reason: str
    notable: bool = True


def exports_beside(checkpoint: str | os.PathLike) -> tuple[list[tuple[Path, dict]], list[str]]:
    """The ONNX exports of this very checkpoint lying beside it, with their metadata, and why others were passed
    over. Candidates are ``<stem>.onnx`` and ``<stem>.*.onnx`` (``fakeface export``'s default names; for a model
    folder also those in its user-cache folder, :func:`fakeface.hub.exports_dir`) whose recorded SHA-256 is the
    checkpoint's (:func:`fakeface.hub.source_digest`, a folder's config.json included): an export older than the
    checkpoint (retrained, re-calibrated, its config edited) is stale and ignored.
    """
    ckpt = checkpoint_file(checkpoint)
    folders = [ckpt.parent] + ([exports_dir(ckpt)] if ckpt.name == FOLDER_WEIGHTS and ckpt.is_file() else [])
    candidates = sorted({p for folder in folders for pattern in (f"{ckpt.stem}.onnx", f"{ckpt.stem}.*.onnx")
                         for p in folder.glob(pattern)})
    if not candidates:
        return [], []
    digest = source_digest(ckpt)
    found, passed_over = [], []
    for path in candidates:
        try:
            meta = read_metadata(path)
        except OnnxModelError as e:
            passed_over.append(f"{path.name}: {e}")
            continue
        if meta.get("source_sha256") != digest:
            passed_over.append(f"{path.name}: not exported from this {ckpt.name} (made before it changed?)")
        else:
            found.append((path, meta))
    return found, passed_over


def int8_guard_verdict(meta: dict) -> tuple[bool, str]:
    """(passed, in words) of the int8 accuracy guard recorded in an int8 export's metadata."""
    guard = meta.get("accuracy_guard")
    if not isinstance(guard, dict) or not isinstance(guard.get("accuracy_drop"), (int, float)):
        return False, "no accuracy guard recorded (fakeface export --calibration-data checks one)"
    drop, limit = guard.get("accuracy_drop"), guard.get("max_accuracy_drop")
    words = f"accuracy drop {drop:.2f} points on {guard.get('n')} labelled images, limit {limit}"
    if guard.get("passed") is True:
        return True, f"passed its accuracy guard: {words}"
    return False, f"failed its accuracy guard: {words}"


def int8_runs_here(meta: dict) -> tuple[bool, str]:
    """(whether, why not) an int8 export's weights are exact on this CPU: 8-bit weights
    (``quantization.reduce_range`` false) need one where :func:`fakeface.devices.int8_full_range_safe`."""
    if (meta.get("quantization") or {}).get("reduce_range") is not False or int8_full_range_safe():
        return True, ""
    return False, ("its 8-bit weights saturate ONNX Runtime's int8 kernels on a CPU without AVX512-VNNI, like this "
                   "one (made on a VNNI CPU; `fakeface export --int8-weights 7` makes one for any CPU)")


def choose_backend(checkpoint: str | os.PathLike, backend: str = "auto", device: str = "auto",
                   precision: str = "auto", make_export: bool = False) -> BackendChoice:
    """Which model file runs for ``checkpoint``, and why.

    ``as-given`` runs a checkpoint with PyTorch and an export with ONNX Runtime (what evaluation measures).
    ``auto`` takes the fastest usable export of the checkpoint beside it (:func:`exports_beside`): int8 if its
    metadata says it passed its accuracy guard and its weights are exact on this CPU (:func:`int8_runs_here`),
    else fp32 ONNX, else the checkpoint with PyTorch
    (benchmarks/inference.py measures that order). With ``make_export``, a checkpoint without a usable export
    gets an fp32 one made beside it first (:func:`fakeface.export.export_beside`), or PyTorch with the reason when
    that is not possible. ``auto`` keeps PyTorch on a GPU and when a ``precision`` other than ``auto`` is asked
    for (a PyTorch setting). ``pytorch``, ``onnx`` and ``onnx-int8`` force a backend (an int8 export is then used
    whatever its guard says); a missing export is a ``ValueError`` naming the command that makes one. Given an
    ``.onnx`` file, ``auto`` runs it and a forced backend must match it.
    """
    if backend not in (*BACKENDS, AS_GIVEN):
        raise ValueError(f"backend must be one of {', '.join(BACKENDS)}; got {backend!r}")
    path = Path(checkpoint)
    if path.suffix.lower() == ".onnx" and backend == AS_GIVEN:
        return BackendChoice(path, "onnx", "an ONNX export was given", notable=False)
    if backend == AS_GIVEN:
        return BackendChoice(path, "pytorch", "a checkpoint was given", notable=False)
    if path.suffix.lower() == ".onnx":
        meta = read_metadata(path)
        kind = "onnx-int8" if meta.get("precision") == "int8" else "onnx"
        if backend not in ("auto", kind):
            raise ValueError(f"{path} is an {kind} export; --backend {backend} needs the checkpoint it came from")
        runs, why = int8_runs_here(meta)
        return BackendChoice(path, kind, "an ONNX export was given" + ("" if runs else f": warning, {why}"),
                             notable=not runs)
    if backend == "pytorch":
        return BackendChoice(path, "pytorch", "asked for")
    if backend == "auto":
        dev = resolve_device(device)
        if dev.type != "cpu":
            return BackendChoice(path, "pytorch", f"the model runs on {dev.type}; ONNX Runtime here is CPU-only",
                                 notable=False)
        if precision != "auto":
            return BackendChoice(path, "pytorch", f"precision {precision} was asked for")
    exports, passed_over = exports_beside(path)
    by_kind = {"onnx-int8": [], "onnx": []}
    for p, meta in exports:
        by_kind["onnx-int8" if meta.get("precision") == "int8" else "onnx"].append((p, meta))
    if backend != "auto":
        if not by_kind[backend]:
            flags = " --quantize int8 --calibration-data DATA" if backend == "onnx-int8" else ""
            raise ValueError(f"no {backend} export of {checkpoint_file(path)} beside it; make one with "
                             f"fakeface export --checkpoint {path}{flags}")
        p, meta = by_kind[backend][0]
        guard = f", {int8_guard_verdict(meta)[1]}" if backend == "onnx-int8" else ""
        runs, why = int8_runs_here(meta)
        return BackendChoice(p, backend, f"asked for: {p.name}{guard}" + ("" if runs else f"; warning: {why}"))
    for p, meta in by_kind["onnx-int8"]:
        passed, words = int8_guard_verdict(meta)
        runs, why = int8_runs_here(meta)
        if passed and runs:
            return BackendChoice(p, "onnx-int8", f"{p.name}, int8 export of this checkpoint, {words}")
        passed_over.append(f"{p.name}: {words if not passed else why}")
    ignored = f"; passed over {'; '.join(passed_over)}" if passed_over else ""
    if by_kind["onnx"]:
        p = by_kind["onnx"][0][0]
        # the checkpoint's own numbers, faster: worth a line only when an export was passed over
        return BackendChoice(p, "onnx", f"{p.name}, fp32 export of this checkpoint{ignored}", notable=bool(ignored))
    ckpt = checkpoint_file(path)
    if make_export:
        from .export import export_beside  # only here: loading a detector needs no exporter otherwise

        try:
            made = export_beside(ckpt)
        except (OSError, ValueError, RuntimeError) as e:  # read-only folder, full disk, an export that fails
            return BackendChoice(path, "pytorch", f"no ONNX export of {ckpt.name} could be made "
                                 f"({type(e).__name__}: {e}){ignored}")
        return BackendChoice(made, "onnx", f"made {made}, an ONNX export of {ckpt.name}, used from now on "
                             "(checked against PyTorch)")
    return BackendChoice(path, "pytorch", f"no usable export of {ckpt.name} beside it{ignored}", notable=bool(ignored))


# -- loading -------------------------------------------------------------------------------------------------------
# Each resolver maps what a user gave - a path, or None for "the default detector" - to what to load (paths, or
# detectors it built itself from a format of its own), or returns None to pass it on; a module with its own model
# format registers one here (RESOLVERS.append(f)). The model folder's: None -> the packaged default, hub ids.
Resolver = Callable[[Path | None], "list[Path | BaseDetector] | None"]
RESOLVERS: list[Resolver] = [resolve]


def resolve_sources(source) -> list[Path | BaseDetector]:
    """What ``load_detector`` was given, as paths: each registered resolver first, then the path itself."""
    given = list(source) if isinstance(source, (list, tuple)) else [source]
    out = []
    for item in given:
        item = None if item is None else Path(item)
        for resolver in RESOLVERS:
            found = resolver(item)
            if found is not None:
                out += list(found)
                break
        else:
            if item is None:
                raise ValueError("no detector given: name a checkpoint, run folder or .onnx file")
            out.append(item)
    return out


def load_detector(source=None, backend: str = "auto", device: str = "auto", precision: str = "auto", *,
                  tta: str | None = None, make_export: bool = False) -> BaseDetector:
    """A detector for ``source``, judged at its run's threshold.

    ``source``: a checkpoint, a run folder (its best.pt), a model folder (:mod:`fakeface.hub`; or a hub id with
    huggingface_hub installed), an ensemble run folder (``members: N`` in training: its members, judged at the
    threshold fitted on the ensemble's own valid scores when ``fakeface calibrate`` wrote one), an ``.onnx``
    export, or a list of these (an :class:`Ensemble`); ``None`` asks the registered resolvers for a default (the
    detector shipped in the package). ``backend``: see :func:`choose_backend` (``make_export``: make and keep an
    ONNX export on first use); each detector's ``backend_choice`` says what runs and why. An ONNX model runs on
    the CPU at the precision it was exported with: ``device`` must be ``auto`` or ``cpu`` and ``precision``
    ``auto`` or that precision. ``tta`` overrides a PyTorch checkpoint's test-time augmentation.
    """
    given = resolve_sources(source)
    detectors = []
    for item in given:
        if isinstance(item, BaseDetector):  # built by a resolver
            detectors.append(item)
            continue
        for path in expand_checkpoints([item]):
            choice = choose_backend(path, backend, device, precision, make_export)
            detector = _load_one(choice, device, precision, tta)
            detector.backend_choice = choice
            detectors.append(detector)
    if len(detectors) == 1:
        return detectors[0]
    # one ensemble run folder: judged at the threshold fitted on its own valid scores
    one_run = len(given) == 1 and isinstance(given[0], Path)
    return Ensemble(detectors, run_dir=given[0] if one_run else None)


def _load_one(choice: BackendChoice, device: str, precision: str, tta: str | None) -> BaseDetector:
    if choice.backend == "pytorch":
        return Detector(choice.path, device=device, precision=precision, tta=tta)
    if device not in ("auto", "cpu"):
        raise ValueError(f"an ONNX model runs on the CPU with ONNX Runtime; got device {device!r}")
    detector = OnnxDetector(choice.path)
    if precision not in ("auto", detector.scorer.precision):
        raise ValueError(f"{choice.path} is a {detector.scorer.precision} model; precision {precision!r} needs "
                         "another export (fp32 or quantize='int8')")
    return detector
