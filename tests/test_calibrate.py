"""Temperature scaling and threshold policies, and the calibrate command on a real checkpoint."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from sklearn.metrics import roc_curve

from conftest import make_folder_dataset
from fakeface.calibrate import fit_temperature, parse_policy, pick_threshold, validation_samples
from fakeface.checkpoint import load_checkpoint
from fakeface.data import DataError
from fakeface.train import TrainConfig, train


def test_fit_temperature_recovers_the_true_temperature():
    rng = np.random.default_rng(0)
    logits = rng.normal(0, 4, 20_000)
    labels = (rng.random(20_000) < 1 / (1 + np.exp(-logits / 2.5))).astype(int)  # true T = 2.5
    assert fit_temperature(logits, labels) == pytest.approx(2.5, rel=0.05)


@pytest.fixture
def scores():
    rng = np.random.default_rng(1)
    y = np.r_[np.zeros(500, int), np.ones(500, int)]
    p = 1 / (1 + np.exp(-(rng.normal(0, 1, 1000) + 2 * y - 1)))
    return y, p


def test_balanced_policy_equalises_errors(scores):
    y, p = scores
    t = pick_threshold(y, p, "balanced")
    fpr = np.mean(p[y == 0] >= t)
    fnr = np.mean(p[y == 1] < t)
    assert abs(fpr - fnr) < 0.02


@pytest.mark.parametrize("target", [0.01, 0.05, 0.2])
def test_fpr_policy_flags_at_most_that_share_of_real_faces(scores, target):
    y, p = scores
    t = pick_threshold(y, p, f"fpr={target}")
    assert np.mean(p[y == 0] >= t) <= target
    # and it is the lowest such threshold: one step lower breaks the bound
    fpr, _, thr = roc_curve(y, p, drop_intermediate=False)
    lower = thr[thr < t]
    if len(lower):
        assert np.mean(p[y == 0] >= lower.max()) > target


def test_policies_parse_and_refuse_nonsense(scores):
    y, p = scores
    assert pick_threshold(y, p, "0.7") == 0.7
    assert parse_policy("FPR=0.01") == ("fpr", 0.01)
    for bad in ("fpr=2", "1.5", "strict"):
        with pytest.raises(ValueError):
            parse_policy(bad)
    with pytest.raises(DataError, match="both real and fake"):
        pick_threshold(np.zeros(10, int), np.linspace(0, 1, 10), "balanced")


@pytest.mark.slow
def test_calibrate_command_writes_threshold_and_temperature(tmp_path):
    data = make_folder_dataset(tmp_path / "ds", per_class=8, size=96, splits=("train", "test"))  # no valid split
    run = train(TrainConfig(data=str(data), out=str(tmp_path / "run"), epochs=1, batch_size=8, image_size=80,
                            precision="fp32", workers=0, val_fraction=0.25, export="none"))
    held_out = {s.path for s in validation_samples(load_checkpoint(run / "best.pt"), data)}
    assert held_out and all("/test/" not in p for p in held_out)  # the run's own split, never test

    out = tmp_path / "calibrated.pt"
    res = subprocess.run([sys.executable, "-m", "fakeface", "calibrate", "--checkpoint", str(run / "best.pt"),
                          "--data", str(data), "--policy", "fpr=0.25", "--out", str(out)],
                         capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    ckpt = load_checkpoint(out)
    assert ckpt["threshold_policy"] == "fpr=0.25" and ckpt["temperature"] > 0
    assert ckpt["calibration"]["n_valid"] == len(held_out)
    assert load_checkpoint(run / "best.pt")["threshold_policy"] == "default"  # --out leaves the source alone

    ev = subprocess.run([sys.executable, "-m", "fakeface", "evaluate", "--checkpoint", str(out), "--data",
                         str(data), "--out", str(tmp_path / "ev"), "--bootstrap", "0"], capture_output=True, text=True)
    assert ev.returncode == 0, ev.stderr
    metrics = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    assert metrics["threshold"] == pytest.approx(ckpt["threshold"])
    assert metrics["calibration"]["temperature"] == pytest.approx(ckpt["temperature"])


def test_calibrating_without_a_validation_split_refuses(tmp_path):
    data = make_folder_dataset(tmp_path / "ds", per_class=2, size=96, splits=("test",))
    with pytest.raises(DataError, match="test split is never used"):
        validation_samples({"path": str(tmp_path / "x.pt")}, data)
