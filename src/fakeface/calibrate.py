"""Calibrated probabilities and a decision threshold chosen by policy, on the validation split only.

Temperature scaling (Guo et al., "On Calibration of Modern Neural Networks", 2017) fits one scalar T so that
P(fake) = sigmoid(logit / T) minimises the validation log loss; it changes no verdict ordering, only how far
the probabilities can be trusted. The threshold then follows a policy:

* ``balanced`` - the equal error rate point: as many real faces flagged as fakes missed;
* ``fpr=0.01`` - the lowest threshold that flags at most 1 % of real faces (trust-and-safety teams that must
  not accuse real people);
* a number - a fixed threshold.

Both are written into the checkpoint, and every later consumer (predict, evaluate, serve, export) reads them.
An ensemble run's members are calibrated each on its own; then the ensemble's threshold is picked by the same
policy on its own validation scores (the mean of the members' calibrated probabilities) and written beside them
(:func:`calibrate_ensemble`).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
from scipy.optimize import minimize_scalar
from sklearn.metrics import log_loss, roc_auc_score, roc_curve

from .checkpoint import (
    ENSEMBLE_CALIBRATION,
    CheckpointError,
    calibration_fingerprint,
    checkpoint_file,
    ensemble_members,
    load_checkpoint,
    save_atomic,
    validation_samples,
)
from .data import DataError
from .detector import Detector, ensemble_threshold, load_detector
from .files import write_text_atomic
from .hub import is_model_folder, save_folder
from .metrics import expected_calibration_error
from .predict import predict_paths
from .scoring import p_fake

__all__ = ["calibrate", "calibrate_ensemble", "ensemble_calibrated", "fit_temperature", "parse_policy",
           "pick_threshold", "validation_samples"]


def fit_temperature(logits: np.ndarray, labels: np.ndarray) -> float:
    """The T > 0 minimising the log loss of sigmoid(logits / T) (searched on log T in [1/20, 20])."""
    logits, labels = np.asarray(logits, np.float64), np.asarray(labels, np.int64)

    def nll(log_t: float) -> float:
        return log_loss(labels, np.clip(p_fake(logits, np.exp(log_t)), 1e-12, 1 - 1e-12), labels=[0, 1])

    res = minimize_scalar(nll, bounds=(np.log(0.05), np.log(20.0)), method="bounded")
    return float(np.exp(res.x))


def parse_policy(policy: str) -> tuple[str, float | None]:
    """``balanced`` | ``fpr=X`` (0 < X < 1) | a fixed threshold in [0, 1]."""
    policy = policy.strip().lower()
    if policy == "balanced":
        return "balanced", None
    if policy.startswith("fpr="):
        try:
            value = float(policy[4:])
        except ValueError:
            value = float("nan")
        if not 0 < value < 1:  # also NaN and text
            raise ValueError(f"fpr policy needs a number 0 < fpr < 1 (e.g. fpr=0.01), got {policy!r}")
        return "fpr", value
    try:
        value = float(policy)
    except ValueError:
        raise ValueError(f"threshold policy must be 'balanced', 'fpr=X' or a number, got {policy!r}") from None
    if not 0 <= value <= 1:
        raise ValueError(f"a fixed threshold must be in [0, 1], got {value}")
    return "fixed", value


def pick_threshold(labels: np.ndarray, p_fake: np.ndarray, policy: str) -> float:
    """The decision threshold (predict fake when P(fake) >= threshold) that ``policy`` asks for."""
    kind, value = parse_policy(policy)
    if kind == "fixed":
        return float(value)
    labels = np.asarray(labels)
    if len(np.unique(labels)) < 2:
        raise DataError("a threshold policy needs both real and fake images in the validation split")
    fpr, tpr, thresholds = roc_curve(labels, p_fake, drop_intermediate=False)
    thresholds = np.minimum(thresholds, 1.0)  # sklearn's first threshold is +inf
    if kind == "balanced":
        i = int(np.argmin(np.abs((1 - tpr) - fpr)))
        return float(thresholds[i])
    ok = np.flatnonzero(fpr <= value)  # fpr grows as the threshold falls: take the lowest allowed
    return float(thresholds[ok[-1]])


def calibrate(checkpoint: str | os.PathLike, data: str | os.PathLike | None = None, policy: str = "balanced",
              out: str | os.PathLike | None = None, batch_size: int = 64, workers: int | None = None,
              device: str = "auto", precision: str = "auto", tta: str | None = None) -> dict:
    """Fit T and the threshold on the validation split; write them into ``out`` (default: in place).

    ``tta`` (``flip`` or ``none``) changes the checkpoint's test-time augmentation first, so that T and the
    threshold are fitted on the scores it will give (``None`` keeps the checkpoint's)."""
    parse_policy(policy)
    detector = Detector(checkpoint, device=device, precision=precision, tta=tta)
    samples = validation_samples(detector.checkpoint, data)
    rows = list(predict_paths(detector, [s.path for s in samples], batch_size, workers,
                              labels=[s.label for s in samples]))
    scored = [r for r in rows if r["error"] is None]
    if not scored:
        raise DataError("no validation image could be read")
    y = np.array([int(r["label"] == "fake") for r in scored])
    logits = detector.logits_of([r["p_fake"] for r in scored])  # undoing whatever temperature it had
    temperature = fit_temperature(logits, y)
    p_raw, p_cal = p_fake(logits), p_fake(logits, temperature)
    threshold = pick_threshold(y, p_cal, policy)

    state = load_checkpoint(checkpoint)
    src = Path(state.pop("path"))
    state.update(temperature=temperature, threshold=threshold, threshold_policy=policy,
                 tta=detector.checkpoint.get("tta"))
    result = {"temperature": temperature, "threshold": threshold, "policy": policy, "tta": state["tta"],
              "n_valid": len(scored), "skipped": len(rows) - len(scored),
              "roc_auc": float(roc_auc_score(y, logits)) if len(set(y)) == 2 else None,
              "ece_before": expected_calibration_error(y, p_raw), "ece_after": expected_calibration_error(y, p_cal),
              "log_loss_before": float(log_loss(y, p_raw, labels=[0, 1])),
              "log_loss_after": float(log_loss(y, p_cal, labels=[0, 1]))}
    state["calibration"] = result
    target = Path(out) if out is not None else src
    if is_model_folder(src) and target == src:
        raise ValueError(f"{src} is a model folder, which calibrate does not rewrite in place (it may be the one "
                         "inside the package): give --out, a new folder or a .pt file")
    if not is_model_folder(src) or target.suffix == ".pt":
        save_atomic(state, target)
    else:  # a model folder's calibration makes a model folder, under the release name it had
        release = state.get("release") or {}
        save_folder(state, target, name=release.get("name"), version=release.get("version"))
    result["checkpoint"] = str(target)
    result["skipped_files"] = [f"{r['path']}: {r['error']}" for r in rows if r["error"] is not None]
    return result


def calibrate_ensemble(run_dir: str | os.PathLike, data: str | os.PathLike | None = None, policy: str = "balanced",
                       batch_size: int = 64, workers: int | None = None, device: str = "auto",
                       precision: str = "auto") -> dict:
    """Pick an ensemble run's threshold on its own validation scores (the mean of its members' calibrated
    probabilities, as it predicts) and write it to ``run_dir/calibration.json``, with the members' (temperature,
    threshold) it was fitted on top of. Calibrate the members first: their temperatures make the probabilities
    that are averaged."""
    parse_policy(policy)
    run_dir = Path(run_dir)
    members = ensemble_members(run_dir)
    if not members:
        raise DataError(f"{run_dir} is not an ensemble run (no member0, member1, ... folders)")
    detector = load_detector([checkpoint_file(m) for m in members], "as-given", device, precision)
    samples = validation_samples(detector.members[0].checkpoint, data)
    rows = [r for r in predict_paths(detector, [s.path for s in samples], batch_size, workers,
                                     labels=[s.label for s in samples]) if r["error"] is None]
    if not rows:
        raise DataError("no validation image could be read")
    y = np.array([int(r["label"] == "fake") for r in rows])
    p = np.array([r["p_fake"] for r in rows])
    threshold = pick_threshold(y, p, policy)
    flagged = p >= threshold
    record = {"threshold": threshold, "threshold_policy": policy, "n_valid": len(rows),
              "roc_auc": float(roc_auc_score(y, p)) if len(set(y)) == 2 else None,
              "fpr": float(flagged[y == 0].mean()) if (y == 0).any() else None,
              "tpr": float(flagged[y == 1].mean()) if (y == 1).any() else None,
              "mean_of_members": ensemble_threshold(detector.members).threshold,
              "members": calibration_fingerprint(detector.members)}
    write_text_atomic(run_dir / ENSEMBLE_CALIBRATION, json.dumps(record, indent=2) + "\n")
    return {**record, "path": str(run_dir / ENSEMBLE_CALIBRATION)}


def ensemble_calibrated(run_dir: str | os.PathLike, policy: str | None) -> bool:
    """Whether ``run_dir/calibration.json`` holds a threshold fitted on the members as they are now (and by
    ``policy``, unless None)."""
    try:
        chosen = ensemble_threshold([load_checkpoint(m) for m in ensemble_members(run_dir)], run_dir)
    except CheckpointError:
        return False
    return chosen.record is not None and policy in (None, chosen.record.get("threshold_policy"))
