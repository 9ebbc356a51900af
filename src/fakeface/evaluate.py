"""Scoring a labelled split and writing metrics.json, predictions.csv, plots and report.html."""

from __future__ import annotations

import json
import os
import shlex
import sys
from pathlib import Path

import numpy as np

from .augment import PERTURBATIONS
from .augment import perturb as perturb_image
from .data import DataError, discover
from .detector import load_detector
from .files import write_text_atomic
from .metrics import bootstrap_ci, compute_metrics, expected_calibration_error
from .predict import predict_paths
from .report import (
    PLOT_FILES,
    plot_evaluation,
    plot_examples,
    plot_reliability,
    plot_robustness,
    plot_training_curves,
    select_examples,
    write_epoch_log,
    write_predictions,
    write_report,
)
from .scoring import p_fake
from .text import fmt


def evaluate(checkpoint: str | os.PathLike, data: str | os.PathLike, out: str | os.PathLike,
             split: str = "test", batch_size: int = 64, workers: int | None = None, device: str = "auto",
             precision: str = "auto", limit: int | None = None, n_boot: int = 1000,
             perturb: dict[str, list[float]] | None = None, group_by: str | None = None,
             command: str | None = None, progress=None, on_start=None) -> dict:
    """Score ``split`` of ``data`` with ``checkpoint``; write everything into ``out``; return the metrics.

    ``checkpoint`` may be a list: an ensemble, whose metrics add an ``ensemble`` table (each member alone and
    the ensemble, on the same images). ``perturb`` ({"jpeg": [90, 70, 50], "blur": [1, 2], ...}) re-scores the
    split once per level, both classes alike, and adds a ``robustness`` table and plot. ``group_by`` (a metadata
    column of a CSV manifest) adds a ``groups`` table: every metric per value of that column.
    ``on_start(n_images)`` is called once the split is known, then ``progress(n)`` as images are scored.
    """
    out = Path(out)
    # the model itself, not an export of it: an evaluation measures what was trained
    detector = load_detector(checkpoint, "as-given", device, precision)
    index = discover(data)
    if split not in index.splits:
        notes = "".join(f"; {note}" for note in index.notes)
        raise DataError(f"no {split!r} split in {index.describe()}{notes}; choose --split from {sorted(index.splits)}")
    samples = index.splits[split]
    if limit is not None:
        samples = samples[:limit]
    if group_by is not None:
        columns = sorted({c for s in samples for c in s.meta})
        if group_by not in columns:
            raise DataError(f"--group-by {group_by!r}: the {split} split has no such metadata column "
                            f"(it has: {', '.join(columns) or 'none - metadata comes from a CSV manifest'})")
    out.mkdir(parents=True, exist_ok=True)
    for name in EVALUATION_FILES:  # an earlier evaluation's results must not mix with this one's
        (out / name).unlink(missing_ok=True)

    if on_start is not None:
        on_start(len(samples))
    rows = list(predict_paths(detector, [s.path for s in samples], batch_size, workers,
                              labels=[s.label for s in samples], on_progress=progress))
    scored = [r for r in rows if r["error"] is None]
    skipped = [{"path": r["path"], "reason": r["error"]} for r in rows if r["error"] is not None]
    if not scored:
        raise DataError(f"none of the {len(rows)} images of the {split} split could be read, "
                        f"e.g. {skipped[0]['path']}: {skipped[0]['reason']}")
    y = np.array([int(r["label"] == "fake") for r in scored])  # fake = 1, the positive class
    p = np.array([r["p_fake"] for r in scored])

    metrics = compute_metrics(y, p, detector.threshold)
    metrics["bootstrap"] = bootstrap_ci(y, p, detector.threshold, n_boot=n_boot) if n_boot else {}
    metrics["images"] = {"scored": len(scored), "skipped": len(skipped), "split": split,
                         "data_notes": index.notes}  # e.g. manifest rows that were not images at all
    p_uncalibrated = None
    if detector.temperature != 1.0:  # the same logits without temperature scaling, for before/after
        p_uncalibrated = p_fake(detector.logits_of(p))
    metrics["calibration"] = {
        "temperature": detector.temperature, "policy": detector.checkpoint.get("threshold_policy", "default"),
        "ece_uncalibrated": expected_calibration_error(y, p if p_uncalibrated is None else p_uncalibrated),
        "ece_calibrated": metrics["ece"], "fitted_on": detector.checkpoint.get("calibration", {}).get("n_valid"),
    }
    metrics["skipped"] = skipped
    if len(detector.members) > 1:
        member_p = np.array([r["member_p_fake"] for r in scored]).T  # (members, images)
        metrics["ensemble"] = ensemble_table(detector, y, member_p, metrics)
    if group_by is not None:
        meta = {s.path: s.meta.get(group_by) for s in samples}
        metrics["groups"] = group_table(y, p, [meta[r["path"]] for r in scored], detector.threshold, group_by)
    if perturb:
        metrics["robustness"] = robustness(detector, samples, perturb, metrics, batch_size, workers)
    write_predictions(out / "predictions.csv", scored)

    plots = {}
    history = detector.checkpoint.get("history")
    if history:  # the training curves travel in the checkpoint, so any evaluation can show them
        write_epoch_log(out / "log.csv", history)
        plots.update(zip(("loss", "accuracy"), plot_training_curves(out / "log.csv", out)))
    plots.update(plot_evaluation(y, p, detector.threshold, out))
    if p_uncalibrated is not None:
        plots["reliability"] = plot_reliability(y, p_uncalibrated, out / PLOT_FILES["reliability"], p_fake_after=p)
    if perturb:
        plots["robustness"] = plot_robustness(metrics["robustness"], metrics, out / PLOT_FILES["robustness"])
    plots["examples"] = plot_examples(select_examples(scored, n=16), out / PLOT_FILES["examples"])

    description = {**detector.describe(), "data": index.describe(), "split": split,
                   "positive class": "fake (label 1)"}
    command = command or " ".join(shlex.quote(a) for a in ["fakeface", *sys.argv[1:]])
    (out / "run.json").write_text(json.dumps({"description": description, "command": command}, indent=2,
                                             default=str))
    write_report(out, metrics, plots, description, command)
    write_text_atomic(out / "metrics.json", json.dumps(metrics, indent=2))  # last: it means a whole evaluation
    return metrics


# what an evaluation writes into --out and removes first (log.csv is left: --out may be the run's own folder)
EVALUATION_FILES = ("metrics.json", "predictions.csv", "run.json", "report.html", *PLOT_FILES.values())


def ensemble_table(detector, y: np.ndarray, member_p: np.ndarray, ensemble: dict) -> dict:
    """Each member alone and the ensemble on the same images: does the ensemble beat its best member?"""
    keys = ("accuracy", "roc_auc", "average_precision", "eer", "ece", "tpr_at_fpr_1")
    rows = {}
    for i, (member, p) in enumerate(zip(detector.members, member_p)):
        m = compute_metrics(y, p, member.threshold)
        rows[f"member {i + 1}: {member.name}"] = {"checkpoint": str(member.checkpoint["path"]),
                                                   **{k: m[k] for k in keys}}
    rows["ensemble"] = {"checkpoint": "mean of the members", **{k: ensemble[k] for k in keys}}
    best = {k: max((r[k] for r in list(rows.values())[:-1] if r[k] is not None), default=None)
            for k in ("accuracy", "roc_auc")}
    return {"rows": rows, "beats_best_member": {
        k: None if best[k] is None or ensemble[k] is None else bool(ensemble[k] > best[k]) for k in best}}


def group_table(y: np.ndarray, p: np.ndarray, groups: list, threshold: float, column: str) -> dict:
    """Every headline metric per value of a metadata column (missing values form the group "(missing)")."""
    names = np.array(["(missing)" if g in (None, "") else str(g) for g in groups])
    table = {}
    for name in sorted(set(names.tolist())):
        mask = names == name
        m = compute_metrics(y[mask], p[mask], threshold)
        keys = ("accuracy", "real_accuracy", "fake_accuracy", "roc_auc", "precision", "recall", "f1", "ece")
        table[name] = {"n": int(mask.sum()), "real": int((y[mask] == 0).sum()), "fake": int((y[mask] == 1).sum()),
                       **{k: m[k] for k in keys}}
    return {"column": column, "by_value": table}


def score_samples(detector, samples, batch_size: int = 32, workers: int | None = None, transform=None) -> dict:
    """:func:`compute_metrics` of ``detector`` on labelled ``samples`` at its threshold (unreadable files left out)."""
    scored = [r for r in predict_paths(detector, [s.path for s in samples], batch_size, workers,
                                       labels=[s.label for s in samples], transform=transform)
              if r["error"] is None]
    y = np.array([int(r["label"] == "fake") for r in scored])
    return compute_metrics(y, np.array([r["p_fake"] for r in scored]), detector.threshold)


def fine_tune_report(base: str | os.PathLike, tuned: str | os.PathLike, old_data: str | os.PathLike | None,
                     new_data: str | os.PathLike, out: str | os.PathLike, workers: int | None = None) -> dict:
    """Score the detector before and after fine-tuning on the old data's test split and the new data's.

    Forgetting shows as a drop on the old split; learning as a gain on the new. ``old_data`` defaults to the
    data the base checkpoint was trained on. Writes ``out`` (JSON) and returns it.
    """
    from .checkpoint import load_checkpoint

    old_data = old_data or load_checkpoint(base).get("data")
    splits = {}
    for name, data in (("old test", old_data), ("new test", new_data)):
        try:
            index = discover(data) if data else None
        except DataError:
            index = None
        if index is not None and "test" in index.splits:
            splits[name] = index.splits["test"]
    rows = []
    for name, samples in splits.items():
        row = {"split": name, "n": len(samples)}
        for which, ckpt in (("before", base), ("after", tuned)):
            detector = load_detector(ckpt, "as-given")
            m = score_samples(detector, samples, workers=workers)
            row[which] = {k: m[k] for k in ("accuracy", "roc_auc", "eer")}
        change = {k: None if row["after"][k] is None or row["before"][k] is None else row["after"][k] - row["before"][k]
                  for k in ("accuracy", "roc_auc")}
        row["change"] = change
        row["summary"] = (f"accuracy {row['before']['accuracy']:.4f} -> {row['after']['accuracy']:.4f}, "
                          f"ROC-AUC {fmt(row['before']['roc_auc'])} -> {fmt(row['after']['roc_auc'])} "
                          f"(n={len(samples)})")
        rows.append(row)
    missing = [n for n in ("old test", "new test") if n not in splits]
    report = {"base": str(base), "fine_tuned": str(tuned), "old_data": str(old_data), "new_data": str(new_data),
              "rows": rows, "not_scored": [f"{n}: no test split found" for n in missing]}
    write_text_atomic(out, json.dumps(report, indent=2))
    return report


def parse_perturbations(specs: list[str]) -> dict[str, list[float]]:
    """["jpeg=90,70,50", "blur=1,2"] -> {"jpeg": [90, 70, 50], "blur": [1, 2]}."""
    out: dict[str, list[float]] = {}
    for spec in specs:
        kind, sep, levels = spec.partition("=")
        kind = kind.strip().lower()
        if not sep or kind not in PERTURBATIONS or not levels.strip():
            raise ValueError(f"--perturb takes KIND=LEVEL[,LEVEL...] with KIND in {', '.join(PERTURBATIONS)}; "
                             f"got {spec!r}")
        try:
            values = [float(v) for v in levels.split(",")]
        except ValueError:
            raise ValueError(f"--perturb levels must be numbers, got {spec!r}") from None
        low, high, meaning = LEVEL_RANGES[kind]
        if not all(low <= v <= high for v in values):
            raise ValueError(f"--perturb {kind} levels are {meaning}, from {low:g} to {high:g}; got {spec!r}")
        out.setdefault(kind, []).extend(values)
    return out


# what a level means for each perturbation, and the levels that mean something
LEVEL_RANGES = {"jpeg": (1, 100, "JPEG qualities"), "blur": (0, 50, "Gaussian blur sigmas in pixels"),
                "resize": (0.01, 1, "down-scaling factors (then back up)"),
                "noise": (0, 1, "noise standard deviations (pixels in 0-1)")}


def robustness(detector, samples, perturb: dict[str, list[float]], clean: dict, batch_size: int,
               workers: int | None) -> list[dict]:
    """One row per (perturbation, level): accuracy, ROC-AUC, AP, EER and the change from the clean split."""
    rows = []
    for kind, levels in perturb.items():
        for level in levels:
            # seeded by image index, so noise is the same on every run
            def transform(img, index, kind=kind, level=level):
                return perturb_image(img, kind, level, seed=index)

            m = score_samples(detector, samples, batch_size, workers, transform)
            row = {"perturbation": kind, "level": level, "n": m["n"]}
            for key in ("accuracy", "roc_auc", "average_precision", "eer"):
                row[key] = m[key]
                row[f"{key}_change"] = None if m[key] is None or clean[key] is None else m[key] - clean[key]
            rows.append(row)
    return rows


def headline(metrics: dict) -> str:
    """One line of the numbers people look at first."""
    def f(key):
        return fmt(metrics.get(key))

    ci = metrics.get("bootstrap", {}).get("roc_auc")
    auc = f("roc_auc") + (f" [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else "")
    return (f"accuracy {f('accuracy')}  ROC-AUC {auc}  precision {f('precision')}  recall {f('recall')}  "
            f"F1 {f('f1')}  EER {f('eer')}  (n={metrics['n']}, fake = positive, threshold {metrics['threshold']:.3f})")

