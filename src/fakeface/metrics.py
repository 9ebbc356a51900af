"""Detection metrics, computed by scikit-learn on collected probabilities.

Fake is the positive class everywhere (``FAKE == 1``): ``precision``, ``recall``, ``f1``, ROC and PR curves
are about detecting fakes. ``real_accuracy`` / ``fake_accuracy`` (CNNDetection's ``validate.py`` reports the
same pair) show whether a detector is good on both classes or only says "fake" a lot.

Every function returns plain Python numbers (JSON-serialisable). Metrics that are undefined for the data -
e.g. ROC-AUC when only one class is present, or precision when nothing is predicted fake - are ``None``.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence

import numpy as np
from sklearn.calibration import calibration_curve
from sklearn.metrics import (
    accuracy_score,
    average_precision_score,
    balanced_accuracy_score,
    confusion_matrix,
    f1_score,
    log_loss,
    precision_recall_fscore_support,
    precision_score,
    recall_score,
    roc_auc_score,
    roc_curve,
)

from fakeface import CLASS_NAMES, FAKE, REAL

LABELS = [REAL, FAKE]  # label order of every per-class array and of the confusion matrix
ECE_BINS = 15  # as in Guo et al. 2017, "On Calibration of Modern Neural Networks"


def check_scores(y_true, p_fake) -> tuple[np.ndarray, np.ndarray]:
    """Validate and convert inputs: ``y_true`` -> int array of 0/1, ``p_fake`` -> float array in [0, 1]."""
    y = np.asarray(y_true).ravel()
    p = np.asarray(p_fake, dtype=np.float64).ravel()
    if y.size == 0 and p.size == 0:
        raise ValueError("no predictions: y_true and p_fake are empty (need at least one image)")
    if y.shape != p.shape:
        raise ValueError(f"y_true has {y.size} labels but p_fake has {p.size} probabilities")
    if not np.isin(y, LABELS).all():
        bad = sorted({str(v) for v in y[~np.isin(y, LABELS)]})[:5]
        raise ValueError(f"y_true must hold 0 (real) or 1 (fake), got {', '.join(bad)}")
    if not (np.isfinite(p).all() and (p >= 0).all() and (p <= 1).all()):
        raise ValueError("p_fake must be probabilities in [0, 1] (no NaN or inf)")
    return y.astype(np.int64), p


def _num(x) -> float | None:
    """numpy scalar -> float; NaN (sklearn's "undefined" with ``zero_division=np.nan``) -> None."""
    if x is None:
        return None
    x = float(x)
    return None if np.isnan(x) else x


def _has_both_classes(y: np.ndarray) -> bool:
    return bool((y == REAL).any() and (y == FAKE).any())


def _roc(y: np.ndarray, p: np.ndarray):
    # drop_intermediate=False keeps every threshold, so "TPR at FPR <= x" reads an achievable operating point.
    return roc_curve(y, p, pos_label=FAKE, drop_intermediate=False)


def _eer_from_roc(fpr: np.ndarray, tpr: np.ndarray, thresholds: np.ndarray) -> tuple[float, float]:
    """Equal error rate: where the miss rate (FNR = 1 - TPR) equals the false alarm rate (FPR).

    Linearly interpolated between the two ROC points where FNR - FPR changes sign; the threshold returned
    is that of the nearer of those two points (thresholds[0], sklearn's +inf "predict nothing fake", is never
    returned).
    """
    gap = (1.0 - tpr) - fpr  # falls from +1 at (0, 0) to -1 at (1, 1)
    i = int(np.flatnonzero(gap <= 0)[0])  # first point at or past the crossing; i >= 1
    t = gap[i - 1] / (gap[i - 1] - gap[i])  # fraction of the way from point i-1 to point i
    eer = fpr[i - 1] + t * (fpr[i] - fpr[i - 1])
    j = i - 1 if (t < 0.5 and i - 1 >= 1) else i
    return float(eer), float(thresholds[j])


def _tpr_at_fpr(fpr: np.ndarray, tpr: np.ndarray, max_fpr: float) -> float:
    """Best TPR among thresholds whose FPR does not exceed ``max_fpr`` (no interpolation between points)."""
    return float(tpr[fpr <= max_fpr + 1e-12].max())  # fpr[0] == 0, so never empty


def reliability_curve(y_true, p_fake, n_bins: int = 10) -> dict:
    """Data for a reliability diagram: equal-width bins of P(fake), empty bins left out.

    Returns ``{"mean_predicted": [...], "fraction_fake": [...], "count": [...]}``, one entry per non-empty
    bin.
    """
    y, p = check_scores(y_true, p_fake)
    fraction_fake, mean_predicted = calibration_curve(y, p, n_bins=n_bins, strategy="uniform", pos_label=FAKE)
    # calibration_curve returns no counts; count with its binning (searchsorted on the inner edges), so the
    # non-empty bins line up with its output.
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    count = np.bincount(np.searchsorted(edges[1:-1], p), minlength=n_bins)
    count = count[count > 0]
    return {
        "mean_predicted": [float(v) for v in mean_predicted],
        "fraction_fake": [float(v) for v in fraction_fake],
        "count": [int(c) for c in count],
    }


def expected_calibration_error(y_true, p_fake, n_bins: int = ECE_BINS) -> float:
    """ECE of P(fake): sum over equal-width bins of (bin share of images) * |fraction fake - mean P(fake)|.

    scikit-learn has no ECE function; the per-bin values come from ``calibration_curve``. This is the
    calibration error of the fake probability itself (the reliability diagram's gap), not of the top-label
    confidence.
    """
    curve = reliability_curve(y_true, p_fake, n_bins=n_bins)
    count = np.asarray(curve["count"], dtype=np.float64)
    gap = np.abs(np.asarray(curve["fraction_fake"]) - np.asarray(curve["mean_predicted"]))
    return float((count * gap).sum() / count.sum())


def _balanced_accuracy(y: np.ndarray, pred: np.ndarray) -> float:
    # With one class in y_true sklearn warns and returns that class's recall, which is what we want.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return float(balanced_accuracy_score(y, pred))


def _eer(y: np.ndarray, p: np.ndarray) -> float | None:
    return _eer_from_roc(*_roc(y, p))[0] if _has_both_classes(y) else None


def _tpr_at(max_fpr: float) -> Callable:
    def metric(y, p, pred):
        if not _has_both_classes(y):
            return None
        fpr, tpr, _ = _roc(y, p)
        return _tpr_at_fpr(fpr, tpr, max_fpr)

    return metric


# Scalar metrics bootstrap_ci can resample: name -> f(y, p_fake, pred) -> float | None.
_RESAMPLABLE: dict[str, Callable[[np.ndarray, np.ndarray, np.ndarray], float | None]] = {
    "accuracy": lambda y, p, pred: float(accuracy_score(y, pred)),
    "balanced_accuracy": lambda y, p, pred: _balanced_accuracy(y, pred),
    "precision": lambda y, p, pred: _num(precision_score(y, pred, pos_label=FAKE, zero_division=np.nan)),
    "recall": lambda y, p, pred: _num(recall_score(y, pred, pos_label=FAKE, zero_division=np.nan)),
    "f1": lambda y, p, pred: _num(f1_score(y, pred, pos_label=FAKE, zero_division=np.nan)),
    "real_accuracy": lambda y, p, pred: _num(recall_score(y, pred, pos_label=REAL, zero_division=np.nan)),
    "fake_accuracy": lambda y, p, pred: _num(recall_score(y, pred, pos_label=FAKE, zero_division=np.nan)),
    "roc_auc": lambda y, p, pred: float(roc_auc_score(y, p)) if _has_both_classes(y) else None,
    "average_precision": lambda y, p, pred: (
        float(average_precision_score(y, p, pos_label=FAKE)) if _has_both_classes(y) else None
    ),
    "eer": lambda y, p, pred: _eer(y, p),
    "tpr_at_fpr_1": _tpr_at(0.01),
    "tpr_at_fpr_5": _tpr_at(0.05),
    "log_loss": lambda y, p, pred: float(log_loss(y, p, labels=LABELS)),
    "ece": lambda y, p, pred: expected_calibration_error(y, p),
}
BOOTSTRAP_METRICS = tuple(_RESAMPLABLE)


def compute_metrics(y_true, p_fake, threshold: float = 0.5) -> dict:
    """All detection metrics for labels ``y_true`` (1 = fake) and probabilities ``p_fake``.

    An image is predicted fake when ``p_fake >= threshold``. Precision / recall / F1 / ROC / PR treat fake as
    the positive class. Undefined values are ``None``: ROC-AUC, AP, EER and TPR@FPR with a single class,
    the accuracy of a class that is absent, precision when nothing is predicted fake. ``macro`` averages the
    defined per-class values. ``eer`` is interpolated between ROC points (see ``_eer_from_roc``);
    ``tpr_at_fpr_1`` / ``tpr_at_fpr_5`` are the best TPR at FPR <= 1 % / 5 %; ``ece`` uses 15 equal-width bins
    of P(fake).

    Raises:
        ValueError: empty input, mismatched lengths, labels other than 0/1 or probabilities outside [0, 1].
    """
    y, p = check_scores(y_true, p_fake)
    pred = (p >= threshold).astype(np.int64)
    both = _has_both_classes(y)

    # Per-class arrays in LABELS order; zero_division=nan marks undefined values (-> None) without warnings.
    precision, recall, f1, support = precision_recall_fscore_support(
        y, pred, labels=LABELS, zero_division=np.nan
    )
    macro_p, macro_r, macro_f1, _ = precision_recall_fscore_support(
        y, pred, labels=LABELS, average="macro", zero_division=np.nan
    )
    (tn, fp), (fn, tp) = confusion_matrix(y, pred, labels=LABELS).tolist()

    roc_auc = average_precision = eer = eer_threshold = tpr_1 = tpr_5 = None
    if both:
        roc_auc = float(roc_auc_score(y, p))
        average_precision = float(average_precision_score(y, p, pos_label=FAKE))
        fpr, tpr, thresholds = _roc(y, p)
        eer, eer_threshold = _eer_from_roc(fpr, tpr, thresholds)
        tpr_1, tpr_5 = _tpr_at_fpr(fpr, tpr, 0.01), _tpr_at_fpr(fpr, tpr, 0.05)

    return {
        "n": int(y.size),
        "n_real": int((y == REAL).sum()),
        "n_fake": int((y == FAKE).sum()),
        "threshold": float(threshold),
        "accuracy": float(accuracy_score(y, pred)),
        "precision": _num(precision[FAKE]),
        "recall": _num(recall[FAKE]),
        "f1": _num(f1[FAKE]),
        "roc_auc": roc_auc,
        "average_precision": average_precision,
        "eer": eer,
        "eer_threshold": eer_threshold,
        "log_loss": float(log_loss(y, p, labels=LABELS)),
        "balanced_accuracy": _balanced_accuracy(y, pred),
        "real_accuracy": _num(recall[REAL]),  # recall of the real class = share of reals predicted real
        "fake_accuracy": _num(recall[FAKE]),
        "tpr_at_fpr_1": tpr_1,
        "tpr_at_fpr_5": tpr_5,
        "ece": expected_calibration_error(y, p),
        "per_class": {
            name: {
                "precision": _num(precision[c]),
                "recall": _num(recall[c]),
                "f1": _num(f1[c]),
                "support": int(support[c]),
            }
            for c, name in zip(LABELS, CLASS_NAMES, strict=True)
        },
        "macro": {"precision": _num(macro_p), "recall": _num(macro_r), "f1": _num(macro_f1)},
        # rows = true class, columns = predicted class, both in (real, fake) order
        "confusion_matrix": {"labels": list(CLASS_NAMES), "matrix": [[tn, fp], [fn, tp]]},
    }


def bootstrap_ci(
    y_true,
    p_fake,
    threshold: float = 0.5,
    metrics: Sequence[str] = ("accuracy", "roc_auc"),
    n_boot: int = 1000,
    seed: int = 0,
    alpha: float = 0.05,
) -> dict[str, list[float] | None]:
    """Stratified percentile-bootstrap intervals: ``{metric: [low, high]}`` at confidence ``1 - alpha``.

    Reals and fakes are resampled separately (each keeps its count), so every resample has both classes when
    the data does and ROC-AUC stays defined. Resamples where a metric is undefined are skipped; a metric that
    is never defined (e.g. ROC-AUC with one class) gets ``None``. ``metrics`` are names from
    ``BOOTSTRAP_METRICS``.
    """
    unknown = [m for m in metrics if m not in _RESAMPLABLE]
    if unknown:
        raise ValueError(f"cannot bootstrap {unknown}; choose from {list(BOOTSTRAP_METRICS)}")
    if n_boot < 1:
        raise ValueError(f"n_boot must be >= 1, got {n_boot}")
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    y, p = check_scores(y_true, p_fake)

    rng = np.random.default_rng(seed)
    groups = [np.flatnonzero(y == c) for c in LABELS if (y == c).any()]
    values: dict[str, list[float]] = {m: [] for m in metrics}
    for _ in range(n_boot):
        idx = np.concatenate([rng.choice(g, size=g.size, replace=True) for g in groups])
        yb, pb = y[idx], p[idx]
        predb = (pb >= threshold).astype(np.int64)
        for m in metrics:
            v = _RESAMPLABLE[m](yb, pb, predb)
            if v is not None:
                values[m].append(v)

    quantiles = [100 * alpha / 2, 100 * (1 - alpha / 2)]
    return {m: ([float(q) for q in np.percentile(v, quantiles)] if v else None) for m, v in values.items()}
