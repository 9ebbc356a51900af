"""Plots and a one-page HTML report, drawn from files so any past run can be re-plotted.

Inputs are the files other modules write: a run's epoch log ``log.csv``, ``predictions.csv`` and
``metrics.json`` (the dict from :func:`fakeface.metrics.compute_metrics`, plus any extra sections).
Figures are made and saved by :mod:`fakeface.figures` (the Agg canvas: no pyplot, no display needed).

Numbers in the report are written by :func:`format_number`: ints as-is, floats with 4 decimals (scientific
notation below 1e-3 or from 1e6 on), ``None`` as "n/a".
"""

from __future__ import annotations

import base64
import csv
import html
import io
import json
import math
import mimetypes
import numbers
import os
import shlex
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timezone
from itertools import zip_longest
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from sklearn.metrics import (
    average_precision_score,
    confusion_matrix,
    precision_recall_curve,
    roc_auc_score,
    roc_curve,
)

from fakeface import CLASS_NAMES, FAKE, REAL, __version__
from fakeface.figures import COLORS, new_figure, save_figure
from fakeface.files import write_text_atomic
from fakeface.images import ImageLoadError, load_image
from fakeface.metrics import LABELS, check_scores, expected_calibration_error, reliability_curve

MISTAKE_COLOR = "#c0392b"
PREDICTION_COLUMNS = ("path", "label", "p_fake", "pred")

# File name of each plot inside a run / evaluation folder; the report's captions use PLOT_TITLES.
PLOT_FILES = {
    "loss": "loss.png",
    "accuracy": "accuracy.png",
    "roc": "roc.png",
    "pr": "pr.png",
    "confusion": "confusion.png",
    "score_histogram": "score_histogram.png",
    "reliability": "reliability.png",
    "examples": "examples.png",
    "robustness": "robustness.png",
}
PLOT_TITLES = {
    "loss": "Training and validation loss",
    "accuracy": "Accuracy and validation ROC-AUC",
    "roc": "ROC curve",
    "pr": "Precision-recall curve",
    "confusion": "Confusion matrix",
    "score_histogram": "P(fake) by true class",
    "reliability": "Reliability diagram",
    "examples": "Examples (most confident mistakes first)",
    "robustness": "Robustness: ROC-AUC and accuracy under each perturbation",
}

# Headline table: key in the metrics dict -> (display name, what it means). Fake is the positive class.
HEADLINE = {
    "n": ("images", "labelled images evaluated"),
    "accuracy": ("accuracy", "share of all images classified correctly"),
    "balanced_accuracy": ("balanced accuracy", "mean of real and fake accuracy"),
    "real_accuracy": ("real accuracy", "share of real images predicted real"),
    "fake_accuracy": ("fake accuracy", "share of fake images predicted fake (= recall)"),
    "precision": ("precision", "share of images flagged fake that are fake"),
    "recall": ("recall", "share of fake images flagged fake"),
    "f1": ("F1", "harmonic mean of precision and recall"),
    "roc_auc": ("ROC-AUC", "chance that a fake scores higher than a real (threshold-free)"),
    "average_precision": ("average precision", "area under the precision-recall curve"),
    "eer": ("EER", "error rate where false-positive rate equals false-negative rate"),
    "tpr_at_fpr_1": ("TPR @ 1% FPR", "share of fakes caught when at most 1% of reals are flagged"),
    "tpr_at_fpr_5": ("TPR @ 5% FPR", "share of fakes caught when at most 5% of reals are flagged"),
    "log_loss": ("log loss", "mean negative log-likelihood of the true class (lower is better)"),
    "ece": ("ECE", "expected calibration error of P(fake), 15 bins (lower is better)"),
    "threshold": ("threshold", "an image is predicted fake when P(fake) >= threshold"),
}


# --------------------------------------------------------------------------------------------------- files


# the columns of a run's log.csv, one row per epoch
LOG_COLUMNS = ("epoch", "train_loss", "train_acc", "val_loss", "val_acc", "val_auc", "lr", "seconds",
               "images_per_s")


def write_epoch_log(path: str | os.PathLike, history: list[dict]) -> Path:
    """A run's per-epoch history as ``log.csv`` (empty cells for metrics not computed), written atomically."""
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=LOG_COLUMNS, extrasaction="ignore", lineterminator="\r\n")
    w.writeheader()
    for row in history:
        w.writerow({k: ("" if row.get(k) is None else row.get(k)) for k in LOG_COLUMNS})
    return write_text_atomic(path, buf.getvalue())


def _parse_cell(value: str | None) -> float | str | None:
    """CSV cell -> float, or None for empty / NaN; non-numeric text is kept as it is."""
    if value is None or value.strip() == "":
        return None
    try:
        x = float(value)
    except ValueError:
        return value
    return None if math.isnan(x) else x


def read_epoch_log(path: str | os.PathLike) -> list[dict]:
    """Rows of a training run's ``log.csv``: ``epoch`` as int, other columns float or None (empty / NaN)."""
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        if "epoch" not in (reader.fieldnames or ()):
            raise ValueError(f"{path}: not an epoch log (no 'epoch' column in {reader.fieldnames})")
        rows = []
        for row in reader:
            parsed = {k: _parse_cell(v) for k, v in row.items() if k is not None}
            if isinstance(parsed["epoch"], float):
                parsed["epoch"] = int(parsed["epoch"])
            rows.append(parsed)
    return rows


def _class_name(value, column: str, where: str) -> str | None:
    """'real' / 'fake' / 0 / 1 -> class name; empty or None -> None."""
    if value is None or (isinstance(value, str) and value.strip() == ""):
        return None
    if isinstance(value, str) and value.strip() in CLASS_NAMES:
        return value.strip()
    if isinstance(value, numbers.Integral) and int(value) in LABELS:
        return CLASS_NAMES[int(value)]
    raise ValueError(f"{where}: {column} must be 'real', 'fake' or empty, got {value!r}")


def read_predictions(path: str | os.PathLike) -> list[dict]:
    """Rows of ``predictions.csv`` as ``{"path": str, "label": "real" | "fake" | None, "p_fake": float,
    "pred": "real" | "fake"}``."""
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        missing = [c for c in PREDICTION_COLUMNS if c not in (reader.fieldnames or ())]
        if missing:
            raise ValueError(f"{path}: missing column(s) {missing}; expected {list(PREDICTION_COLUMNS)}")
        rows = []
        for line, row in enumerate(reader, start=2):
            where = f"{path}:{line}"
            try:
                p_fake = float(row["p_fake"])
            except (TypeError, ValueError):
                raise ValueError(f"{where}: p_fake must be a number, got {row['p_fake']!r}") from None
            pred = _class_name(row["pred"], "pred", where)
            if pred is None:
                raise ValueError(f"{where}: pred is empty")
            rows.append(
                {
                    "path": row["path"],
                    "label": _class_name(row["label"], "label", where),
                    "p_fake": p_fake,
                    "pred": pred,
                }
            )
    return rows


def write_predictions(path: str | os.PathLike, rows: Iterable[dict]) -> Path:
    """Write ``predictions.csv`` atomically (temporary file, then ``os.replace``).

    Rows need keys path, label (None or "" when unknown), p_fake and pred; labels may also be 0 / 1. Other
    keys are ignored. P(fake) is written with full precision (``repr``), so metrics recomputed from the file
    match.
    """
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(PREDICTION_COLUMNS)
    for i, row in enumerate(rows):
        where = f"prediction row {i}"
        pred = _class_name(row["pred"], "pred", where)
        if pred is None:
            raise ValueError(f"{where}: pred is empty")
        label = _class_name(row.get("label"), "label", where)
        writer.writerow([str(row["path"]), label or "", repr(float(row["p_fake"])), pred])
    return write_text_atomic(path, buf.getvalue())


def _labelled(rows: Iterable[dict]) -> tuple[np.ndarray, np.ndarray]:
    """(y_true, p_fake) of the prediction rows whose label is known."""
    known = [r for r in rows if r.get("label") in CLASS_NAMES]
    y = np.array([FAKE if r["label"] == "fake" else REAL for r in known], dtype=np.int64)
    p = np.array([float(r["p_fake"]) for r in known], dtype=np.float64)
    return y, p


# --------------------------------------------------------------------------------------------------- plots


def _note(ax, text: str) -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, color="0.35", wrap=True)


def _curve_figure(rows: list[dict], series: Sequence[tuple[str, str]], ylabel: str, title: str) -> Figure:
    fig = new_figure()
    ax = fig.add_subplot()
    marker = "o" if len(rows) <= 30 else None
    drawn = 0
    for column, label in series:
        points = [(r["epoch"], r[column]) for r in rows if isinstance(r.get(column), float)]
        if points:
            xs, ys = zip(*points, strict=True)
            ax.plot(xs, ys, marker=marker, markersize=4, label=label)
            drawn += 1
    if drawn:
        ax.legend()
    else:
        _note(ax, "nothing logged")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set(xlabel="epoch", ylabel=ylabel, title=title)
    ax.grid(alpha=0.3)
    return fig


def plot_training_curves(log_csv: str | os.PathLike, out_dir: str | os.PathLike) -> list[Path]:
    """From a run's ``log.csv``: ``loss.png`` (train and val loss) and ``accuracy.png`` (train and val
    accuracy, val ROC-AUC). Epochs without a value (e.g. no validation) are left out of that series."""
    rows = read_epoch_log(log_csv)
    if not rows:
        raise ValueError(f"{log_csv} has no epochs yet")
    out_dir = Path(out_dir)
    loss = _curve_figure(rows, [("train_loss", "train"), ("val_loss", "validation")], "loss", "Loss")
    acc = _curve_figure(
        rows,
        [("train_acc", "train accuracy"), ("val_acc", "val accuracy"), ("val_auc", "val ROC-AUC")],
        "accuracy / ROC-AUC",
        "Accuracy and ROC-AUC",
    )
    return [save_figure(loss, out_dir / PLOT_FILES["loss"]), save_figure(acc, out_dir / PLOT_FILES["accuracy"])]


def plot_roc(y_true, p_fake, path: str | os.PathLike) -> Path:
    """ROC curve of fake detection with its AUC in the legend and the chance diagonal."""
    y, p = check_scores(y_true, p_fake)
    fig = new_figure(5.5, 5.0)
    ax = fig.add_subplot()
    ax.plot([0, 1], [0, 1], linestyle="--", color="0.6", label="chance (AUC = 0.5)")
    if (y == REAL).any() and (y == FAKE).any():
        fpr, tpr, _ = roc_curve(y, p, pos_label=FAKE)
        ax.plot(fpr, tpr, color=COLORS["fake"], lw=2, label=f"detector (AUC = {roc_auc_score(y, p):.3f})")
    else:
        _note(ax, "ROC undefined: only one class present")
    ax.set(
        xlabel="false positive rate (reals flagged fake)",
        ylabel="true positive rate (fakes caught)",
        title="ROC curve (fake = positive)",
        xlim=(0, 1),
        ylim=(0, 1.01),
    )
    ax.set_aspect("equal")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    return save_figure(fig, path)


def plot_pr(y_true, p_fake, path: str | os.PathLike) -> Path:
    """Precision-recall curve of fake detection with average precision (AP) and the chance level."""
    y, p = check_scores(y_true, p_fake)
    fig = new_figure(5.5, 5.0)
    ax = fig.add_subplot()
    if (y == REAL).any() and (y == FAKE).any():
        share = float((y == FAKE).mean())
        ax.axhline(share, linestyle="--", color="0.6", label=f"chance (share of fakes = {share:.2f})")
        precision, recall, _ = precision_recall_curve(y, p, pos_label=FAKE)
        ap = average_precision_score(y, p, pos_label=FAKE)
        label = f"detector (AP = {ap:.3f})"
        ax.step(recall, precision, where="post", color=COLORS["fake"], lw=2, label=label)
        ax.legend(loc="lower left")
    else:
        _note(ax, "precision-recall undefined: only one class present")
    ax.set(
        xlabel="recall (share of fakes caught)",
        ylabel="precision (share of flagged that are fake)",
        title="Precision-recall (fake = positive)",
        xlim=(0, 1),
        ylim=(0, 1.01),
    )
    ax.set_aspect("equal")
    ax.grid(alpha=0.3)
    return save_figure(fig, path)


def plot_confusion(matrix, path: str | os.PathLike) -> Path:
    """2x2 confusion matrix (rows = true, columns = predicted, real then fake) with counts and row %.

    ``matrix`` is ``[[tn, fp], [fn, tp]]`` or the ``confusion_matrix`` entry of the metrics dict.
    """
    if isinstance(matrix, Mapping):
        matrix = matrix["matrix"]
    counts = np.asarray(matrix, dtype=np.int64)
    if counts.shape != (2, 2):
        raise ValueError(f"expected a 2x2 confusion matrix, got shape {counts.shape}")
    row_sums = counts.sum(axis=1, keepdims=True)
    row_pct = np.divide(100.0 * counts, row_sums, out=np.zeros((2, 2)), where=row_sums > 0)

    fig = new_figure(4.8, 4.4)
    ax = fig.add_subplot()
    ax.imshow(row_pct, cmap="Blues", vmin=0, vmax=100)  # shaded by row %, so class imbalance doesn't dominate
    for i in range(2):
        for j in range(2):
            ax.text(
                j,
                i,
                f"{counts[i, j]}\n{row_pct[i, j]:.1f}% of row",
                ha="center",
                va="center",
                fontsize=11,
                color="white" if row_pct[i, j] > 55 else "black",
            )
    ax.set_xticks([0, 1], labels=list(CLASS_NAMES))
    ax.set_yticks([0, 1], labels=list(CLASS_NAMES))
    ax.set(xlabel="predicted", ylabel="true", title="Confusion matrix")
    return save_figure(fig, path)


def plot_score_histogram(y_true, p_fake, threshold: float, path: str | os.PathLike) -> Path:
    """Histogram of P(fake) for each true class, with the decision threshold."""
    y, p = check_scores(y_true, p_fake)
    fig = new_figure()
    ax = fig.add_subplot()
    bins = np.linspace(0.0, 1.0, 26)
    for c, name in zip(LABELS, CLASS_NAMES, strict=True):
        scores = p[y == c]
        ax.hist(
            scores,
            bins=bins,
            alpha=0.5,
            color=COLORS[name],
            edgecolor=COLORS[name],
            label=f"true {name} (n = {scores.size})",
        )
    ax.axvline(threshold, color="black", linestyle="--", label=f"threshold = {threshold:.2f}")
    ax.set(xlabel="P(fake)", ylabel="images", title="Scores by true class", xlim=(0, 1))
    ax.grid(alpha=0.3)
    ax.legend()
    return save_figure(fig, path)


def plot_reliability(y_true, p_fake, path: str | os.PathLike, p_fake_after=None) -> Path:
    """Reliability diagram (10 bins) with ECE in the legend; the lower panel counts images per bin.

    ``p_fake_after`` (e.g. temperature-scaled probabilities) adds an "after calibration" series.
    """
    y, p = check_scores(y_true, p_fake)
    series = [("model", p, COLORS["fake"])]
    if p_fake_after is not None:
        series.append(("after calibration", check_scores(y, p_fake_after)[1], COLORS["real"]))

    fig = new_figure(5.5, 6.0)
    ax, counts_ax = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    ax.plot([0, 1], [0, 1], linestyle="--", color="0.6", label="perfectly calibrated")
    bins = np.linspace(0.0, 1.0, 11)
    for name, probs, color in series:
        curve = reliability_curve(y, probs, n_bins=10)
        ece = expected_calibration_error(y, probs)
        label = f"{name} (ECE = {ece:.3f})"
        ax.plot(curve["mean_predicted"], curve["fraction_fake"], marker="o", color=color, label=label)
        counts_ax.hist(probs, bins=bins, histtype="step", lw=1.5, color=color, label=name)
    ax.set(ylabel="share actually fake", title="Reliability diagram", xlim=(0, 1), ylim=(0, 1))
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left")
    counts_ax.set(xlabel="predicted P(fake)", ylabel="images")
    counts_ax.grid(alpha=0.3)
    return save_figure(fig, path)


def plot_evaluation(y_true, p_fake, threshold: float, out_dir: str | os.PathLike) -> dict[str, Path]:
    """All evaluation plots (ROC, PR, confusion, score histogram, reliability) into ``out_dir``, by name."""
    y, p = check_scores(y_true, p_fake)
    out_dir = Path(out_dir)
    matrix = confusion_matrix(y, (p >= threshold).astype(np.int64), labels=LABELS)
    return {
        "roc": plot_roc(y, p, out_dir / PLOT_FILES["roc"]),
        "pr": plot_pr(y, p, out_dir / PLOT_FILES["pr"]),
        "confusion": plot_confusion(matrix, out_dir / PLOT_FILES["confusion"]),
        "score_histogram": plot_score_histogram(y, p, threshold, out_dir / PLOT_FILES["score_histogram"]),
        "reliability": plot_reliability(y, p, out_dir / PLOT_FILES["reliability"]),
    }


def plot_robustness(rows: Sequence[Mapping], clean: Mapping, path: str | os.PathLike) -> Path:
    """ROC-AUC and accuracy against perturbation level, one panel per perturbation kind; the clean score dashed.

    ``rows`` are ``{"perturbation", "level", "roc_auc", "accuracy"}`` dicts as evaluate writes them.
    """
    kinds = list(dict.fromkeys(r["perturbation"] for r in rows))
    fig = new_figure(width=max(4.0, 3.6 * len(kinds)), height=3.8)
    axes = fig.subplots(1, max(1, len(kinds)), squeeze=False)[0]
    for ax, kind in zip(axes, kinds, strict=False):
        sel = [r for r in rows if r["perturbation"] == kind]
        levels = [r["level"] for r in sel]
        for key, color in (("roc_auc", COLORS["fake"]), ("accuracy", COLORS["real"])):
            values = [np.nan if r.get(key) is None else r[key] for r in sel]
            ax.plot(levels, values, marker="o", color=color, label=key.replace("_", "-"))
            if clean.get(key) is not None:
                ax.axhline(clean[key], color=color, linestyle="--", alpha=0.6)
        ax.set(title=kind, xlabel="level", ylabel="score", ylim=(0.0, 1.02))
        ax.grid(alpha=0.3)
        ax.legend(title="dashed: clean")
    if not kinds:
        _note(axes[0], "no perturbations")
    return save_figure(fig, path)


def select_examples(rows: Iterable[dict], n: int = 16) -> list[dict]:
    """Pick up to ``n`` prediction rows worth looking at.

    First the most confident mistakes (up to half of ``n``, ranked by ``|p_fake - 0.5|``), then the most
    confident correct ones, alternating real and fake; further mistakes fill any places left. Rows without a
    label are never picked.
    """
    labelled = [r for r in rows if r.get("label") in CLASS_NAMES]

    def confidence(row: dict) -> float:
        return abs(float(row["p_fake"]) - 0.5)

    wrong = sorted((r for r in labelled if r["pred"] != r["label"]), key=confidence, reverse=True)
    right = {
        name: sorted((r for r in labelled if r["pred"] == r["label"] == name), key=confidence, reverse=True)
        for name in CLASS_NAMES
    }
    n_wrong = min(len(wrong), (n + 1) // 2)
    picked = wrong[:n_wrong]
    alternating = [r for pair in zip_longest(right["real"], right["fake"]) for r in pair if r is not None]
    picked += alternating[: n - len(picked)]
    picked += wrong[n_wrong : n_wrong + n - len(picked)]
    return picked


def plot_examples(rows: Sequence[dict], path: str | os.PathLike, cols: int = 4) -> Path:
    """Grid of images titled with true class, prediction and P(fake).

    Mistakes are titled in red; a file that fails to load shows as a grey "unreadable" tile.
    """
    rows = list(rows)
    cols = max(1, min(cols, len(rows)))
    n_rows = max(1, math.ceil(len(rows) / cols))
    fig = new_figure(2.6 * cols, 2.8 * n_rows + 0.4)
    axes = fig.subplots(n_rows, cols, squeeze=False)
    for ax in axes.flat:
        ax.set_axis_off()
    for ax, row in zip(axes.flat, rows, strict=False):  # grid may have spare axes
        try:
            img = load_image(row["path"])
            img.thumbnail((256, 256))  # a grid tile needs no more; keeps the figure small
            ax.imshow(np.asarray(img))
        except ImageLoadError:
            ax.imshow(np.full((8, 8, 3), 0.8))
            _note(ax, "unreadable")
        label = row.get("label") or "?"
        mistake = row.get("label") in CLASS_NAMES and row["pred"] != row["label"]
        ax.set_title(
            f"true: {label}   pred: {row['pred']}\nP(fake) = {float(row['p_fake']):.2f}",
            fontsize=9,
            color=MISTAKE_COLOR if mistake else "black",
        )
    if not rows:
        _note(axes[0, 0], "no examples")
    fig.suptitle("Examples (mistakes in red)")
    return save_figure(fig, path)


# -------------------------------------------------------------------------------------------------- report


def format_number(value) -> str:
    """How the report writes a value: None -> "n/a", bools "true"/"false", ints as-is, floats with 4 decimals
    ("0.9123"; scientific "1.235e-05" when 0 < |x| < 1e-3 or |x| >= 1e6), NaN / inf as "nan" / "inf"."""
    if value is None:
        return "n/a"
    if isinstance(value, (bool, np.bool_)):
        return "true" if value else "false"
    if isinstance(value, numbers.Integral):
        return str(int(value))
    if isinstance(value, numbers.Real):
        x = float(value)
        if not math.isfinite(x):
            return str(x)
        return f"{x:.4f}" if x == 0 or 1e-3 <= abs(x) < 1e6 else f"{x:.3e}"
    return str(value)


def _esc(value) -> str:
    return html.escape(str(value), quote=True)


def _is_scalar(value) -> bool:
    return value is None or isinstance(value, (str, numbers.Number, np.bool_))


def _cell(value) -> str:
    """Any value as HTML: scalars formatted, dicts and lists as (nested) tables, everything escaped."""
    if isinstance(value, np.ndarray):
        value = value.tolist()
    if _is_scalar(value):
        return _esc(format_number(value))
    if isinstance(value, Mapping):
        if set(value) == {"labels", "matrix"}:
            return _confusion_table(value)
        if value and all(isinstance(v, Mapping) and all(map(_is_scalar, v.values())) for v in value.values()):
            return _grid_table(value)
        return _kv_table(value)
    if isinstance(value, (list, tuple)):
        if all(map(_is_scalar, value)):
            return "[" + ", ".join(_esc(format_number(v)) for v in value) + "]"
        if all(isinstance(v, Mapping) for v in value):
            return _grid_table(dict(enumerate(value)), index_header="#")
        return "<ol>" + "".join(f"<li>{_cell(v)}</li>" for v in value) + "</ol>"
    return _esc(value)


def _kv_table(mapping: Mapping) -> str:
    body = "".join(f"<tr><th>{_esc(k)}</th><td>{_cell(v)}</td></tr>" for k, v in mapping.items())
    return f'<table class="kv">{body}</table>'


def _grid_table(rows: Mapping, index_header: str = "") -> str:
    """A mapping of records (e.g. per_class) as one table: a row per key, a column per field."""
    columns = list(dict.fromkeys(c for record in rows.values() for c in record))
    head = f"<tr><th>{_esc(index_header)}</th>" + "".join(f"<th>{_esc(c)}</th>" for c in columns) + "</tr>"
    body = "".join(
        f"<tr><th>{_esc(key)}</th>"
        + "".join(f"<td>{_cell(record[c]) if c in record else ''}</td>" for c in columns)
        + "</tr>"
        for key, record in rows.items()
    )
    return f'<table class="grid"><thead>{head}</thead><tbody>{body}</tbody></table>'


def _confusion_table(cm: Mapping) -> str:
    labels = list(cm["labels"])
    head = "<tr><th>true \\ predicted</th>" + "".join(f"<th>{_esc(n)}</th>" for n in labels) + "</tr>"
    body = "".join(
        f"<tr><th>{_esc(name)}</th>" + "".join(f"<td>{_cell(v)}</td>" for v in row) + "</tr>"
        for name, row in zip(labels, cm["matrix"], strict=True)
    )
    return f'<table class="grid"><thead>{head}</thead><tbody>{body}</tbody></table>'


def _headline_table(metrics: Mapping) -> str:
    intervals = metrics.get("bootstrap") if isinstance(metrics.get("bootstrap"), Mapping) else {}
    has_ci = any(isinstance(v, (list, tuple)) and len(v) == 2 for v in intervals.values())
    ci_head = "<th>bootstrap interval</th>" if has_ci else ""
    head = f"<tr><th>metric</th><th>value</th>{ci_head}<th>meaning</th></tr>"
    body = ""
    for key, (name, meaning) in HEADLINE.items():
        if key not in metrics:
            continue
        ci = intervals.get(key)
        ci_cell = f"<td>{_cell(ci) if isinstance(ci, (list, tuple)) else ''}</td>" if has_ci else ""
        body += (
            f'<tr><th title="{_esc(key)}">{_esc(name)}</th><td class="num">{_cell(metrics[key])}</td>'
            f'{ci_cell}<td class="meaning">{_esc(meaning)}</td></tr>'
        )
    return f'<table class="grid headline"><thead>{head}</thead><tbody>{body}</tbody></table>'


def _all_metrics(metrics: Mapping) -> str:
    """Every entry of the metrics dict: top-level scalars in one table, each nested section under a
    heading."""
    scalars = {k: v for k, v in metrics.items() if _is_scalar(v)}
    parts = [_kv_table(scalars)] if scalars else []
    for key, value in metrics.items():
        if key not in scalars:
            parts.append(f"<h3>{_esc(key)}</h3>{_cell(value)}")
    return "".join(parts)


def _figures(plots: Mapping[str, str | os.PathLike]) -> str:
    parts = []
    for name, path in plots.items():
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"plot {name!r} not found: {path}")
        mime = mimetypes.guess_type(path.name)[0] or "image/png"
        data = base64.b64encode(path.read_bytes()).decode("ascii")
        caption = PLOT_TITLES.get(name, name)
        parts.append(
            f'<figure><img src="data:{mime};base64,{data}" alt="{_esc(caption)}">'
            f"<figcaption>{_esc(caption)}</figcaption></figure>"
        )
    return f'<div class="plots">{"".join(parts)}</div>'


_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif;
       color: #222; background: #fafafa; max-width: 1150px; margin: 2rem auto; padding: 0 1.5rem;
       line-height: 1.45; }
h1 { font-weight: 600; margin-bottom: 0.2rem; }
h2 { font-weight: 600; border-bottom: 1px solid #ddd; padding-bottom: 0.3rem; margin-top: 2.2rem; }
h3 { font-weight: 600; font-size: 1rem; margin: 1.4rem 0 0.4rem; }
.sub { color: #666; margin-top: 0; }
table { border-collapse: collapse; background: #fff; margin: 0.3rem 0; font-size: 0.93rem; }
th, td { border: 1px solid #e2e2e2; padding: 0.3rem 0.7rem; text-align: left; vertical-align: top; }
th { background: #f3f4f6; font-weight: 600; }
td { font-variant-numeric: tabular-nums; }
.meaning { color: #555; }
table table { margin: 0; }
.plots { display: flex; flex-wrap: wrap; gap: 1rem; }
figure { background: #fff; border: 1px solid #e2e2e2; margin: 0; padding: 0.5rem; max-width: 100%; }
figure img { max-width: 100%; height: auto; display: block; }
figcaption { color: #555; font-size: 0.9rem; text-align: center; margin-top: 0.3rem; }
pre { background: #fff; border: 1px solid #e2e2e2; padding: 0.8rem; overflow-x: auto; white-space: pre-wrap; }
"""


def _benchmark_tables(out_dir: str | os.PathLike) -> str:
    """The table of each benchmark beside this report: in its folder, a sub-folder, or (for an evaluation folder
    inside a run) the run folder's ``benchmark/``."""
    from .benchmark import benchmark_rows, find_benchmarks  # benchmark loads detectors; training imports this module

    out_dir = Path(out_dir)
    in_run = any((out_dir.parent / name).is_file() for name in ("config.yaml", "ensemble.yaml"))  # train wrote it
    run_dir = out_dir.parent if in_run else None
    found = dict(find_benchmarks(out_dir) + ([] if run_dir is None else find_benchmarks(run_dir / "benchmark")))
    return "".join(
        f"<h2>Benchmark {_esc(r['suite_name'])}</h2><p class=\"sub\">{_esc(path)}: detector "
        f"{_esc(r['detector']['name'])} at its threshold {format_number(r['detector']['threshold'])}; "
        f"{_esc(r['interval']['method'])} {float(r['interval']['confidence']):.0%} intervals</p>"
        f"{_grid_table(benchmark_rows(r), index_header='set')}\n" for path, r in found.items())


def write_report(
    out_dir: str | os.PathLike,
    metrics: Mapping,
    plots: Mapping[str, str | os.PathLike],
    description: Mapping,
    command: str,
    title: str = "fakeface evaluation report",
) -> Path:
    """Write ``out_dir/report.html``: one self-contained page (inline CSS, PNGs as data URIs, no links).

    It shows the headline metrics (with 95 % intervals when ``metrics["bootstrap"]`` maps names to
    ``[low, high]``), the plots, ``description`` (model / data facts) as a table, every entry of ``metrics``
    (unknown sections rendered generically) and the command. Numbers are written by :func:`format_number`.
    """
    generated = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    banner = ""
    if metrics.get("data_kind") == "synthetic":  # the training demo's detector: said before anything else
        note = metrics.get("data_note") or "SYNTHETIC DATA: this detector was trained on generated textures, not faces."
        banner = ('<p style="background:#fde68a;border:2px solid #b45309;padding:0.8rem;font-weight:600">'
                  f"{_esc(note)}</p>\n")
        title = title if title.startswith("SYNTHETIC DATA") else f"SYNTHETIC DATA - {title}"
    page = f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{_esc(title)}</title>
<style>{_CSS}</style>
</head>
<body>
{banner}<h1>{_esc(title)}</h1>
<p class="sub">Generated {_esc(generated)} by fakeface {_esc(__version__)}. Fake is the positive class.</p>
<h2>Headline metrics</h2>
{_headline_table(metrics)}
{_benchmark_tables(out_dir)}<h2>Model and data</h2>
{_kv_table(description) if description else "<p>No description given.</p>"}
<h2>Plots</h2>
{_figures(plots) if plots else "<p>No plots.</p>"}
<h2>All metrics</h2>
{_all_metrics(metrics)}
<h2>Command</h2>
<pre>{_esc(command)}</pre>
</body>
</html>
"""
    return write_text_atomic(Path(out_dir) / "report.html", page)


def redraw_run(run_dir: str | os.PathLike) -> list[Path]:
    """Re-draw a run folder's plots from its files (``fakeface report RUN_DIR``).

    ``log.csv`` -> loss.png and accuracy.png. ``predictions.csv`` + ``metrics.json`` -> ROC, PR, confusion,
    score histogram and reliability plots from the labelled predictions, and ``report.html`` (which also
    embeds an existing examples.png). Returns the paths written.

    Raises:
        FileNotFoundError: ``run_dir`` has neither ``log.csv`` nor ``predictions.csv``.
    """
    run_dir = Path(run_dir)
    log_csv, predictions_csv = run_dir / "log.csv", run_dir / "predictions.csv"
    metrics_json = run_dir / "metrics.json"
    if not (log_csv.is_file() or predictions_csv.is_file()):
        raise FileNotFoundError(
            f"nothing to re-plot in {run_dir}: no log.csv (written by training) or predictions.csv "
            "(written by evaluation)"
        )
    written: list[Path] = []
    epochs = 0
    if log_csv.is_file():
        epochs = len(read_epoch_log(log_csv))
        written += plot_training_curves(log_csv, run_dir)
    if not (predictions_csv.is_file() and metrics_json.is_file()):
        return written

    metrics = json.loads(metrics_json.read_text(encoding="utf-8"))
    rows = read_predictions(predictions_csv)
    y, p = _labelled(rows)
    curves = [run_dir / PLOT_FILES[name] for name in ("loss", "accuracy")]
    plots = {name: path for name, path in zip(("loss", "accuracy"), curves, strict=True) if path.is_file()}
    if y.size:
        threshold = metrics.get("threshold")
        evaluation = plot_evaluation(y, p, 0.5 if threshold is None else float(threshold), run_dir)
        plots.update(evaluation)
        written += evaluation.values()
    if (run_dir / PLOT_FILES["examples"]).is_file():
        plots["examples"] = run_dir / PLOT_FILES["examples"]
    description = {
        "run folder": str(run_dir),
        "epochs logged": epochs,
        "predictions": f"{len(rows)} images, {y.size} with a known label",
    }
    command = f"fakeface report {shlex.quote(str(run_dir))}"
    run_json = run_dir / "run.json"  # written by evaluate: keep its model/data description and command
    if run_json.is_file():
        saved = json.loads(run_json.read_text(encoding="utf-8"))
        description = {**saved.get("description", {}), **description}
        command = f"{saved.get('command', '')}\n(re-drawn by: {command})".lstrip()
    written.append(write_report(run_dir, metrics, plots, description, command))
    return written
