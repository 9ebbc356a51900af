"""fakeface.metrics: agreement with scikit-learn, fake as the positive class, undefined cases, bootstrap."""

import json
import warnings

import numpy as np
import pytest
from sklearn import metrics as skm
from sklearn.calibration import calibration_curve

from fakeface import CLASS_NAMES, FAKE, REAL
from fakeface.metrics import (
    BOOTSTRAP_METRICS,
    bootstrap_ci,
    compute_metrics,
    expected_calibration_error,
    reliability_curve,
)


def scores(n=400, seed=0, separation=0.3, fake_share=0.5):
    """Labels and noisy but informative P(fake) scores."""
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < fake_share).astype(int)
    p = np.clip(rng.normal(0.5 + separation * (y - 0.5), 0.2), 0.0, 1.0)
    return y, p


def scalar_leaves(tree):
    if isinstance(tree, dict):
        for v in tree.values():
            yield from scalar_leaves(v)
    elif isinstance(tree, list):
        for v in tree:
            yield from scalar_leaves(v)
    else:
        yield tree


@pytest.mark.parametrize("threshold", [0.5, 0.3, 0.62])
def test_metrics_equal_sklearn(threshold):
    y, p = scores(seed=1, fake_share=0.4)
    pred = (p >= threshold).astype(int)
    m = compute_metrics(y, p, threshold=threshold)

    assert m["n"] == len(y) and m["n_fake"] == y.sum() and m["n_real"] == (1 - y).sum()
    assert m["threshold"] == threshold
    assert m["accuracy"] == pytest.approx(skm.accuracy_score(y, pred))
    assert m["precision"] == pytest.approx(skm.precision_score(y, pred))
    assert m["recall"] == pytest.approx(skm.recall_score(y, pred))
    assert m["f1"] == pytest.approx(skm.f1_score(y, pred))
    assert m["roc_auc"] == pytest.approx(skm.roc_auc_score(y, p))
    assert m["average_precision"] == pytest.approx(skm.average_precision_score(y, p))
    assert m["log_loss"] == pytest.approx(skm.log_loss(y, p))
    assert m["balanced_accuracy"] == pytest.approx(skm.balanced_accuracy_score(y, pred))
    assert m["confusion_matrix"]["matrix"] == skm.confusion_matrix(y, pred).tolist()
    assert m["confusion_matrix"]["labels"] == list(CLASS_NAMES)

    report = skm.classification_report(y, pred, target_names=list(CLASS_NAMES), output_dict=True)
    for name in CLASS_NAMES:
        for key in ("precision", "recall", "f1"):
            assert m["per_class"][name][key] == pytest.approx(
                report[name][f"{key}-score" if key == "f1" else key]
            )
        assert m["per_class"][name]["support"] == report[name]["support"]
    for key in ("precision", "recall", "f1"):
        assert m["macro"][key] == pytest.approx(report["macro avg"][f"{key}-score" if key == "f1" else key])

    # TPR at a fixed FPR: an achievable ROC point, and no point with FPR <= 5% does better
    fpr, tpr, _ = skm.roc_curve(y, p, drop_intermediate=False)
    assert m["tpr_at_fpr_5"] == pytest.approx(tpr[fpr <= 0.05].max())
    assert m["tpr_at_fpr_1"] <= m["tpr_at_fpr_5"]


def test_result_is_plain_json():
    y, p = scores(seed=2)
    m = compute_metrics(y, p.astype(np.float32))
    assert json.loads(json.dumps(m)) == m
    assert all(v is None or type(v) in (int, float, str, bool) for v in scalar_leaves(m))


def test_fake_is_the_positive_class():
    # Fakes are all caught (scores 0.8-0.99); reals are a coin flip (half above the threshold).
    y = np.array([FAKE] * 40 + [REAL] * 60)
    p = np.concatenate([np.linspace(0.8, 0.99, 40), np.linspace(0.05, 0.95, 60)])
    m = compute_metrics(y, p)
    (tn, fp), (fn, tp) = m["confusion_matrix"]["matrix"]

    # Confusion cells in [[tn, fp], [fn, tp]] order: row 0 = true real, column 1 = predicted fake.
    assert (tn, fp, fn, tp) == (
        int(((y == REAL) & (p < 0.5)).sum()),
        int(((y == REAL) & (p >= 0.5)).sum()),
        int(((y == FAKE) & (p < 0.5)).sum()),
        int(((y == FAKE) & (p >= 0.5)).sum()),
    )
    assert fn == 0 and fp > 0 and tn > 0
    # Fake-positive meaning: every fake is caught (recall 1), but the flags include reals (precision < 1).
    assert m["recall"] == 1.0 == m["fake_accuracy"]
    assert m["precision"] == pytest.approx(tp / (tp + fp)) and m["precision"] < 1.0
    assert m["real_accuracy"] == pytest.approx(tn / (tn + fp)) and m["real_accuracy"] < 1.0
    assert m["per_class"]["fake"]["recall"] == m["recall"]
    assert m["per_class"]["real"]["recall"] == m["real_accuracy"]

    # Swapping the roles of the classes swaps the headline (fake) numbers with the per_class "real" entries.
    s = compute_metrics(1 - y, 1 - p, threshold=0.5 + 1e-9)  # keep the same images on each side of 0.5
    assert s["precision"] == pytest.approx(m["per_class"]["real"]["precision"])
    assert s["recall"] == pytest.approx(m["per_class"]["real"]["recall"])
    assert s["f1"] == pytest.approx(m["per_class"]["real"]["f1"])
    assert s["real_accuracy"] == pytest.approx(m["fake_accuracy"])
    assert s["fake_accuracy"] == pytest.approx(m["real_accuracy"])
    assert s["per_class"]["real"]["precision"] == pytest.approx(m["precision"])
    assert s["confusion_matrix"]["matrix"] == [[tp, fn], [fp, tn]]
    assert s["roc_auc"] == pytest.approx(m["roc_auc"])


@pytest.mark.parametrize("label", [REAL, FAKE])
def test_one_class_gives_none_without_warnings(label):
    y = np.full(20, label)
    p = np.linspace(0.1, 0.9, 20)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # neither an exception nor warning spam
        m = compute_metrics(y, p)
        ci = bootstrap_ci(y, p, metrics=("accuracy", "roc_auc"), n_boot=20)
    for key in ("roc_auc", "average_precision", "eer", "eer_threshold", "tpr_at_fpr_1", "tpr_at_fpr_5"):
        assert m[key] is None, key
    missing = "fake_accuracy" if label == REAL else "real_accuracy"
    present = "real_accuracy" if label == REAL else "fake_accuracy"
    assert m[missing] is None
    assert m[present] == pytest.approx(np.mean((p >= 0.5) == label))
    assert m["accuracy"] == pytest.approx(m[present])
    assert m["log_loss"] > 0 and m["ece"] >= 0
    assert ci["roc_auc"] is None and ci["accuracy"] is not None


def test_undefined_precision_is_none():
    m = compute_metrics([0, 1, 0, 1], [0.1, 0.2, 0.3, 0.4])  # nothing predicted fake
    assert m["precision"] is None and m["recall"] == 0.0 and m["real_accuracy"] == 1.0


@pytest.mark.parametrize("bad", [([], []), (np.array([]), np.array([]))])
def test_empty_input_raises(bad):
    with pytest.raises(ValueError, match="empty"):
        compute_metrics(*bad)


@pytest.mark.parametrize(
    "y, p",
    [([0, 1], [0.2]), ([0, 2], [0.2, 0.3]), ([0, 1], [0.2, 1.5]), ([0, 1], [0.2, float("nan")])],
)
def test_invalid_input_raises(y, p):
    with pytest.raises(ValueError):
        compute_metrics(y, p)


def test_eer():
    y, _ = scores(n=2000, seed=3)
    perfect = np.where(y == FAKE, 0.7, 0.3) + np.random.default_rng(0).uniform(-0.1, 0.1, y.size)
    m = compute_metrics(y, perfect)
    assert m["eer"] == pytest.approx(0.0, abs=1e-9)
    assert 0.3 < m["eer_threshold"] <= 0.8  # a threshold between the classes (the lowest fake score)

    random = compute_metrics(y, np.random.default_rng(1).random(y.size))
    assert random["eer"] == pytest.approx(0.5, abs=0.05)

    # EER is where the false positive and false negative rates meet: check against the ROC curve.
    y, p = scores(n=1000, seed=4)
    m = compute_metrics(y, p)
    fpr, tpr, _ = skm.roc_curve(y, p)
    fnr = 1 - tpr
    i = np.argmin(np.abs(fnr - fpr))
    assert m["eer"] == pytest.approx((fnr[i] + fpr[i]) / 2, abs=0.02)
    at = compute_metrics(y, p, threshold=m["eer_threshold"])
    assert 1 - at["fake_accuracy"] == pytest.approx(m["eer"], abs=0.02)
    assert 1 - at["real_accuracy"] == pytest.approx(m["eer"], abs=0.02)


def test_reliability_curve_and_ece():
    y, p = scores(seed=5)
    p[:5] = [0.0, 0.1, 0.5, 0.9, 1.0]  # values on bin edges
    curve = reliability_curve(y, p, n_bins=10)
    frac, mean = calibration_curve(y, p, n_bins=10)
    assert curve["fraction_fake"] == pytest.approx(frac.tolist())
    assert curve["mean_predicted"] == pytest.approx(mean.tolist())
    assert len(curve["count"]) == len(frac) and sum(curve["count"]) == len(y)
    assert all(c > 0 for c in curve["count"])

    # ECE: 0 when each bin's mean P(fake) equals its share of fakes; large for confidently wrong scores.
    calibrated_y = np.array([0] * 8 + [1] * 2 + [0] * 2 + [1] * 8)
    calibrated_p = np.array([0.2] * 10 + [0.8] * 10)
    assert expected_calibration_error(calibrated_y, calibrated_p) == pytest.approx(0.0, abs=1e-12)
    assert expected_calibration_error([0, 1], [0.95, 0.05]) == pytest.approx(0.95)
    assert compute_metrics(y, p)["ece"] == pytest.approx(expected_calibration_error(y, p, n_bins=15))


def test_bootstrap_contains_estimate_and_narrows():
    small_y, small_p = scores(n=100, seed=6)
    large_y, large_p = scores(n=1600, seed=6)
    small = bootstrap_ci(small_y, small_p, metrics=("accuracy", "roc_auc"), n_boot=200)
    large = bootstrap_ci(large_y, large_p, metrics=("accuracy", "roc_auc"), n_boot=200)
    for (y, p), ci in (((small_y, small_p), small), ((large_y, large_p), large)):
        m = compute_metrics(y, p)
        for key, (low, high) in ci.items():
            assert low <= m[key] <= high, key
            assert low < high
    for key in ("accuracy", "roc_auc"):
        assert large[key][1] - large[key][0] < 0.6 * (small[key][1] - small[key][0])

    assert bootstrap_ci(small_y, small_p, n_boot=50, seed=1) == bootstrap_ci(
        small_y, small_p, n_boot=50, seed=1
    )
    assert set(bootstrap_ci(small_y, small_p, metrics=BOOTSTRAP_METRICS, n_boot=5)) == set(BOOTSTRAP_METRICS)
    with pytest.raises(ValueError, match="cannot bootstrap"):
        bootstrap_ci(small_y, small_p, metrics=("per_class",))
