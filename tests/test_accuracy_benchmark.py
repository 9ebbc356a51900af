"""benchmarks/accuracy.py writes docs/results.md from its own measurements: the doc matches metrics.json."""

from __future__ import annotations

import csv
import json
import subprocess
import sys

import pytest
import torch
import yaml

from conftest import REPO
from fakeface.benchmark import COLUMNS as BENCHMARK_COLUMNS

pytestmark = pytest.mark.slow


def test_results_doc_holds_the_measured_numbers(tiny_run, tmp_path):
    data, _ = tiny_run
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump({"epochs": 1, "batch_size": 8, "model": "efficientnet_lite0", "image_size": 64,
                                      "precision": "fp32", "workers": 0, "calibrate": "balanced", "tta": "flip",
                                      "export": "none"}))
    suite = tmp_path / "suite.yaml"
    suite.write_text(yaml.safe_dump({"name": "tiny", "labelled": {"tiny-test": {"data": str(data), "split": "test"}},
                                     "generators": {"tiny-fakes": {"fakes": str(data / "test" / "fake"),
                                                                   "reals": "tiny-test"}},
                                     "real": {"tiny-reals": {"images": str(data / "valid" / "real")}}}))
    doc, runs = tmp_path / "results.md", tmp_path / "runs"
    cmd = [sys.executable, str(REPO / "benchmarks" / "accuracy.py"), "--config", str(config), "--data", str(data),
           "--seeds", "0", "1", "--runs", str(runs), "--doc", str(doc), "--suite", str(suite), "--bootstrap", "50"]
    res = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-2000:]
    text = doc.read_text()
    wrong = []
    for seed in (0, 1):
        m = json.loads((runs / f"seed{seed}" / "eval-test" / "metrics.json").read_text())
        lo, hi = m["bootstrap"]["roc_auc"]
        assert f"| {seed} | {m['accuracy']:.4f} [" in text and f"{m['roc_auc']:.4f} [{lo:.3f}, {hi:.3f}]" in text
        best = torch.load(runs / f"seed{seed}" / "best.pt", map_location="cpu", weights_only=True)
        assert m["calibration"]["policy"] == "balanced" and best["tta"] == "flip"
        assert f"{m['threshold']:.4f} | balanced | flip | {best['calibration']['roc_auc']:.4f} |" in text
        val_auc = {r["epoch"]: r["val_auc"] for r in best["history"]}[best["epoch"]]
        assert f"| {best['epoch']} | {val_auc:.4f} |" in text  # the valid ROC-AUC that chose the epoch
        # the error analysis, recomputed here by brute force over every threshold of the predictions
        with open(runs / f"seed{seed}" / "eval-test" / "predictions.csv", newline="") as f:
            rows = list(csv.DictReader(f))
        fake = [r["label"] == "fake" for r in rows]
        p = [float(r["p_fake"]) for r in rows]
        hindsight = max(sum((pi >= t) == yi for pi, yi in zip(p, fake)) / len(rows) for t in [*p, float("inf")])
        n_err = sum(r["label"] != r["pred"] for r in rows)
        assert f"| {seed} | {m['accuracy']:.4f} | {n_err} | {hindsight:.4f} |" in text
        assert hindsight >= m["accuracy"]
        wrong.append({r["path"] for r in rows if r["label"] != r["pred"]})
    assert (f"every seed: {len(wrong[0] & wrong[1])}; for at least half of the seeds: {len(wrong[0] | wrong[1])}"
            in text)
    ens = json.loads((runs / "eval-ensemble" / "metrics.json").read_text())
    assert f"| ensemble | {ens['accuracy']:.4f} | {ens['roc_auc']:.4f}" in text
    assert "| jpeg | 50 |" in text and "| resize | 0.5 |" in text and "Command: `python benchmarks/accuracy.py" in text
    # the benchmark of each seed, spread across seeds, as benchmark.json has it
    results = [json.loads((runs / f"seed{s}" / "benchmark" / "benchmark.json").read_text()) for s in (0, 1)]
    caught = [r["sets"][1]["metrics"]["tpr_at_threshold"] for r in results]
    fpr = [r["sets"][2]["metrics"]["fpr_at_threshold"] for r in results]
    assert f"| tiny-fakes | generator | fakes caught at threshold | {sum(caught) / 2:.4f} |" in text
    assert f"| tiny-reals | real | {BENCHMARK_COLUMNS['fpr_at_threshold']} | {sum(fpr) / 2:.4f} |" in text
    readme = tmp_path / "README.md"
    readme.write_text("# x\n<!-- results:begin -->\n<!-- results:end -->\n")
    again = subprocess.run([sys.executable, str(REPO / "benchmarks" / "accuracy.py"), "--doc", str(doc), "--readme",
                            str(readme), "--readme-only"], capture_output=True, text=True, cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert f"| tiny-fakes fakes caught | {sum(caught) / 2:.3f} +- " in readme.read_text()
    # a second call reuses the finished runs (no retraining) and their evaluations, and writes the same tables
    before = (runs / "seed0" / "log.csv").read_text()
    scored = {p: p.stat().st_mtime_ns for p in runs.rglob("metrics.json") if p.parent.name.startswith("eval")}
    assert len(scored) == 3
    again = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path)
    assert again.returncode == 0 and again.stdout.count("reusing") == 5, again.stdout  # 3 evaluations, 2 benchmarks
    assert (runs / "seed0" / "log.csv").read_text() == before and doc.read_text() == text
    assert {p: p.stat().st_mtime_ns for p in scored} == scored
    # other settings score again
    other = subprocess.run([*cmd[:-1], "60"], capture_output=True, text=True, cwd=tmp_path)
    assert other.returncode == 0 and "reusing" not in other.stdout
    assert all(p.stat().st_mtime_ns > t for p, t in scored.items())


def test_an_ensemble_recipe_is_measured_as_one_detector_per_seed(tiny_run, tmp_path):
    """members: 2 - each seed's detector is two models; the doc scores the pair and lists each model beside it."""
    data, _ = tiny_run
    config = tmp_path / "pair.yaml"
    config.write_text(yaml.safe_dump({"epochs": 1, "batch_size": 8, "model": "efficientnet_lite0", "image_size": 64,
                                      "precision": "fp32", "workers": 0, "calibrate": "balanced", "members": 2,
                                      "export": "none"}))
    doc, runs = tmp_path / "results.md", tmp_path / "runs"
    cmd = [sys.executable, str(REPO / "benchmarks" / "accuracy.py"), "--config", str(config), "--data", str(data),
           "--seeds", "1", "--runs", str(runs), "--doc", str(doc), "--bootstrap", "20", "--suite", "none"]
    res = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-2000:]
    text = doc.read_text()
    run = runs / "seed1"
    models = [torch.load(run / f"member{k}" / "best.pt", map_location="cpu", weights_only=True) for k in (0, 1)]
    assert [b["train_config"]["seed"] for b in models] == [2, 3]
    m = json.loads((run / "eval-test" / "metrics.json").read_text())
    assert len(m["ensemble"]["rows"]) == 3  # the pair was scored as one detector, members beside it
    own = json.loads((run / "calibration.json").read_text())  # the pair's threshold, fitted on its valid scores
    assert m["threshold"] == own["threshold"] and "ensemble's valid scores" in m["calibration"]["policy"]
    valid = json.loads((run / "eval-valid" / "metrics.json").read_text())
    assert valid["images"]["split"] == "valid"
    minutes = sum(r["seconds"] for b in models for r in b["history"]) / 60
    assert f"| {valid['roc_auc']:.4f} | {minutes:.1f} |" in text  # the detector's valid ROC-AUC, both trainings
    assert f"| 1 | {m['accuracy']:.4f} [" in text and "1 / 1 |" in text
    for k, b in enumerate(models):
        assert f"| 1, member {k} | {b['temperature']:.3f} | {b['threshold']:.4f} | balanced |" in text
    assert f"| 1, ensemble | - | {own['threshold']:.4f} | balanced (fitted on the ensemble's valid scores) |" in text
    assert "ensemble of 2 models (`members: 2`" in text and "the run's calibration.json" in text


def test_a_generator_the_training_data_holds_is_not_called_unseen(tmp_path):
    """A generator set whose fakes share a folder with training images is labelled a held-out part of a trained-on
    generator in the doc's table and the README's lines; one whose folder training never used stays unseen."""
    import importlib.util

    from conftest import make_folder_dataset

    spec = importlib.util.spec_from_file_location("accuracy", REPO / "benchmarks" / "accuracy.py")
    accuracy = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(accuracy)
    data = make_folder_dataset(tmp_path / "data", per_class=4, size=32)
    other = make_folder_dataset(tmp_path / "other", per_class=4, size=32, splits=("gen",), class_dirs=("fake",))
    extra = sorted((other / "gen" / "fake").glob("*.jpg"))
    with open(tmp_path / "manifest.csv", "w", newline="") as f:  # training takes half of the other generator
        rows = [(str(p), p.parent.name, p.parent.parent.name) for p in sorted(data.rglob("*.jpg"))]
        csv.writer(f).writerows([("path", "label", "split"), *rows, *[(str(p), "fake", "train") for p in extra[:2]]])
    (tmp_path / "held-out.txt").write_text("".join(f"{p}\n" for p in extra[2:]))
    suite = tmp_path / "suite.yaml"
    suite.write_text(yaml.safe_dump({"labelled": {"lab": {"data": str(data), "split": "test"}}, "generators": {
        "seen": {"fakes": "held-out.txt", "reals": "lab"}, "unseen": {"fakes": str(data / "valid" / "fake"),
                                                                       "reals": "lab"}}}))
    assert accuracy.generators_in_training(str(tmp_path / "manifest.csv"), str(suite)) == {"seen"}
    assert accuracy.generators_in_training(str(data), str(suite)) == frozenset()
    result = {"sets": [{"name": n, "kind": "generator", "metrics": {"roc_auc": 0.9, "tpr_at_threshold": 0.8}}
                       for n in ("seen", "unseen")]}
    rows = accuracy.benchmark_spread([result, result], frozenset({"seen"}))
    assert {(r[0], r[1]) for r in rows} == {("seen", accuracy.TRAINED_GENERATOR), ("unseen", "generator")}
    table = accuracy.readme_table([], [], "c.yaml", 2, 10, tmp_path / "d.md", tmp_path / "README.md", rows)
    assert "unseen generator: unseen |" in table and "unseen generator: seen |" not in table
    assert "unseen fakes of a trained-on generator: seen |" in table
