"""`fakeface card`: a model card whose numbers are the run's own files."""

from __future__ import annotations

import json

import pytest

from fakeface.evaluate import evaluate
from test_predict_evaluate import fakeface

pytestmark = pytest.mark.slow


def test_card_reports_what_was_measured(tiny_run, tmp_path):
    data, ckpt = tiny_run
    run_dir = ckpt.parent
    ev = tmp_path / "eval-test"
    evaluate(ckpt, data, ev, n_boot=200, workers=0, perturb={"jpeg": [50]})
    metrics = json.loads((ev / "metrics.json").read_text())
    res = fakeface("card", run_dir, "--eval", ev, "--out", tmp_path / "MODEL_CARD.md")
    assert res.stdout.strip() == str(tmp_path / "MODEL_CARD.md")
    card = (tmp_path / "MODEL_CARD.md").read_text()
    lo, hi = metrics["bootstrap"]["roc_auc"]
    assert f"| ROC-AUC | {metrics['roc_auc']:.4f} [{lo:.3f}, {hi:.3f}] |" in card
    assert f"| accuracy | {metrics['accuracy']:.4f}" in card
    assert "inception_resnet_v1 (" in card and "random initialisation" in card
    assert "| jpeg | 50 |" in card and "Measured: the worst ROC-AUC under re-compression" in card
    assert "| train | 8 | 8 |" in card  # split sizes read from the data
    assert "not calibrated" in card and "Ethical considerations" in card and "Generators not seen" in card


def test_card_without_evaluations_says_how_to_measure(tiny_run, tmp_path):
    _, ckpt = tiny_run
    res = fakeface("card", ckpt.parent, "--out", tmp_path / "card.md")
    card = (tmp_path / "card.md").read_text()
    assert res.returncode == 0 and "Not evaluated yet: `fakeface evaluate" in card and "Not measured" in card
    bad = fakeface("card", ckpt.parent, "--eval", tmp_path / "nowhere", check=False)
    assert bad.returncode == 2 and "no metrics.json" in bad.stderr


def test_card_of_a_synthetic_detector_says_so_first(tiny_run, tmp_path):
    from fakeface.checkpoint import load_checkpoint, save_atomic

    _, ckpt = tiny_run
    record = {k: v for k, v in load_checkpoint(ckpt).items() if k != "path"}
    save_atomic({**record, "data_kind": "synthetic"}, tmp_path / "run" / "best.pt")
    card = fakeface("card", tmp_path / "run", "--out", tmp_path / "card.md")
    text = (tmp_path / "card.md").read_text()
    assert card.returncode == 0 and text.startswith("**SYNTHETIC DATA") and "- Labels: " in text
    plain = (tmp_path / "plain.md")
    fakeface("card", ckpt.parent, "--out", plain)
    assert "SYNTHETIC" not in plain.read_text() and "- Labels: folder names" in plain.read_text()
