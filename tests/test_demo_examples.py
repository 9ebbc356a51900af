"""`make demo`: the example images are few, small and documented; the demo's steps, run into a temporary folder,
score them with the shipped default as examples/expected.csv (written when the default was made) says, write
the Grad-CAM report and say how to go on; the training demo's files say "synthetic data"."""

from __future__ import annotations

import csv
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from fakeface.data import DataError
from fakeface.demo import (
    DATA_KIND_SYNTHETIC,
    EXAMPLES_DIR,
    SYNTHETIC_BANNER,
    mark_synthetic_checkpoints,
    mark_synthetic_evaluation,
    read_examples,
    read_verdicts,
    readme_demo_block,
    run_examples_demo,
    verdicts_markdown,
)

REPO = Path(__file__).resolve().parents[1]


def _csv(path: Path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def test_examples_are_few_small_labelled_and_noticed():
    files = [p for p in EXAMPLES_DIR.iterdir() if p.is_file()]
    assert len(files) <= 16 and sum(p.stat().st_size for p in files) < 400_000
    labelled = _csv(EXAMPLES_DIR / "labels.csv")
    images = sorted(p.name for p in files if p.suffix == ".jpg")
    assert sorted(r["file"] for r in labelled) == images
    assert {r["label"] for r in labelled} == {"real", "fake"}
    notice = (EXAMPLES_DIR / "NOTICE").read_text()
    for r in labelled:
        assert r["source"] and r["licence"]
        assert r["file"].split("-")[0] + "-*.jpg" in notice  # every source named in the NOTICE
        with Image.open(EXAMPLES_DIR / r["file"]) as img:
            assert img.size == (256, 256)


def test_demo_scores_the_examples_as_expected(tmp_path):
    lines: list[str] = []
    result = run_examples_demo(tmp_path / "demo", say=lines.append)
    expected = {r["file"]: r for r in _csv(EXAMPLES_DIR / "expected.csv")}
    got = _csv(result["verdicts"])
    assert [r["file"] for r in got] == list(expected)
    threshold = float(json.loads((REPO / "src/fakeface/default/config.json").read_text())["threshold"])
    for r in got:
        want = expected[r["file"]]
        assert r["label"] == want["label"]
        assert float(r["p_fake"]) == pytest.approx(float(want["p_fake"]), abs=0.002)
        if abs(float(want["p_fake"]) - threshold) > 0.002:  # a verdict on the threshold may round either way
            assert r["verdict"] == want["verdict"], r["file"]
    html = result["report"].read_text()
    assert html.count("<figure>") == len(got)  # a Grad-CAM heatmap per example
    assert len(list((tmp_path / "demo" / "gradcam").glob("*.png"))) == len(got)
    text = "\n".join(lines)
    assert result["release"] in text and "fakeface-default" in text
    assert "serve" in text and str(result["report"].resolve()) in text
    assert all(r["file"] in text for r in got)


def test_readme_shows_what_the_default_says_of_the_examples():
    expected = read_verdicts(EXAMPLES_DIR / "expected.csv")
    shown = readme_demo_block((REPO / "README.md").read_text())
    assert shown == verdicts_markdown(expected)
    assert all(f"| {r['file']} | {r['label']} | {r['p_fake']} | {r['verdict']}" in shown for r in expected)


def test_readme_python_example_runs_as_written():
    code = re.search(r"From Python.*?```python\n(.*?)```", (REPO / "README.md").read_text(), re.S)[1]
    res = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    lines = res.stdout.splitlines()
    expected = {r["file"]: r["verdict"] for r in _csv(EXAMPLES_DIR / "expected.csv")}
    scored = {Path(line.split()[0]).name: line.split() for line in lines[:2]}
    assert {name: row[2] for name, row in scored.items()} == {n: expected[n] for n in scored} and len(scored) == 2
    assert lines[2].startswith("README.md None None ") and "not an image" in lines[2]
    face = lines[3].split(" ", 2)
    assert face[0].endswith("stylegan2-002668d6c15f2c68.jpg") and face[1] == "1" and "'fake'" in face[2]


def test_demo_refuses_a_folder_without_labels(tmp_path):
    with pytest.raises(DataError, match="no example images"):
        read_examples(tmp_path)
    (tmp_path / "labels.csv").write_text("file,label\nx.jpg,maybe\n")
    with pytest.raises(DataError, match="real or fake"):
        read_examples(tmp_path)


def test_training_demo_files_say_synthetic(tiny_run, tmp_path):
    from fakeface.checkpoint import load_checkpoint
    from fakeface.evaluate import evaluate

    data, best = tiny_run
    run = tmp_path / "run"
    run.mkdir()
    shutil.copy(best, run / "best.pt")
    mark_synthetic_checkpoints(run)
    assert load_checkpoint(run / "best.pt")["data_kind"] == DATA_KIND_SYNTHETIC
    evaluate(run / "best.pt", data, tmp_path / "eval", n_boot=0, workers=0)
    mark_synthetic_evaluation(tmp_path / "eval")
    for name in ("metrics.json", "run.json"):
        record = json.loads((tmp_path / "eval" / name).read_text())
        assert next(iter(record)) == "data_kind" and record["data_kind"] == DATA_KIND_SYNTHETIC
    html = (tmp_path / "eval" / "report.html").read_text()
    assert html.index(SYNTHETIC_BANNER) < html.index("<h1>") and "<title>SYNTHETIC DATA" in html
