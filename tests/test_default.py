"""The detector shipped in the package: present, small, loadable, above the accuracy floor on the sample's test
split (unless its card says it is a provisional stand-in), and made by benchmarks/make_default.py, which is
tested here by packaging a tiny run."""

from __future__ import annotations

import hashlib
import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from fakeface import hub
from fakeface.checkpoint import load_checkpoint
from fakeface.data import discover
from fakeface.detector import choose_backend, int8_runs_here, load_detector
from fakeface.hub import (
    FolderError,
    default_detector_dir,
    default_provisional,
    load_folder,
    read_config,
    source_digest,
)
from fakeface.metrics import compute_metrics
from fakeface.onnx_runtime import read_metadata
from fakeface.predict import predict_paths

REPO = Path(__file__).resolve().parents[1]


def _make_default():
    spec = importlib.util.spec_from_file_location("make_default", REPO / "benchmarks" / "make_default.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_default_detector_is_shipped_small_and_loads():
    folder = default_detector_dir()
    config = read_config(folder)
    assert config["release"]["name"] and config["release"]["version"]
    assert sum(p.stat().st_size for p in folder.rglob("*") if p.suffix in (".safetensors", ".onnx")) < 12e6
    for key in ("data", "config", "seed"):
        assert key in config["provenance"], key
    assert {"valid", "test"} <= set(config["metrics"])
    card = (folder / "README.md").read_text()
    front = yaml.safe_load(card.split("---\n")[1])
    assert front["pipeline_tag"] == "image-classification" and front["license"]
    assert ("provisional" in card.split("## Provenance")[0]) == default_provisional()
    ckpt = load_folder(folder)
    assert ckpt["threshold_policy"] != "default"  # calibrated
    floats = [t.dtype for t in ckpt["state_dict"].values() if t.dtype.is_floating_point]
    assert floats and set(floats) == {torch.float32}  # float16 on disk, float32 once loaded


def test_missing_default_is_one_clear_error(monkeypatch, tmp_path):
    monkeypatch.setattr(hub, "DEFAULT_DIR", tmp_path / "default")
    with pytest.raises(FolderError, match="default detector is not installed.*make_default.py"):
        load_detector(None)


@pytest.mark.skipif(default_provisional(), reason="the shipped default is a provisional stand-in (its card says "
                                                   "so): the floor applies to the recipe's weights")
def test_default_detector_scores_the_sample_above_the_floor(sample_root):
    samples = discover(sample_root).splits["test"]
    detector = load_detector(None, device="cpu")
    rows = [r for r in predict_paths(detector, [s.path for s in samples], batch_size=32, workers=0,
                                     labels=[s.label for s in samples]) if r["error"] is None]
    assert len(rows) == len(samples)
    m = compute_metrics([int(r["label"] == "fake") for r in rows], [r["p_fake"] for r in rows], detector.threshold)
    assert m["roc_auc"] >= 0.95


def test_make_default_packages_a_run(tiny_run, tmp_path, capsys):
    data, best = tiny_run
    expected = (REPO / "examples" / "expected.csv").read_bytes()
    rc = _make_default().main(["--from-run", str(best.parent), "--data", str(data), "--out", str(tmp_path / "out"),
                               "--work", str(tmp_path / "work"), "--name", "tiny-default", "--version", "9",
                               "--dtype", "float32"])  # a barely trained model's scores all lie within fp16's step
    assert rc == 0, capsys.readouterr().out
    config = read_config(tmp_path / "out")
    assert config["release"] == {"name": "tiny-default", "version": "9", "provisional": False}
    lines = sorted(f"{p.relative_to(data).as_posix()}\t{p.stat().st_size}" for p in (data / "train").rglob("*.jpg"))
    record = config["provenance"]["data"]
    assert record["train_files"] == len(lines)
    assert record["train_files_sha256"] == hashlib.sha256("\n".join(lines).encode()).hexdigest()
    assert config["provenance"]["seed"] == 0 and config["provenance"]["config"]["epochs"] == 1
    evaluated = json.loads((tmp_path / "work" / "package" / "eval-test" / "metrics.json").read_text())
    assert config["metrics"]["test"]["roc_auc"] == pytest.approx(evaluated["roc_auc"])
    assert config["threshold_policy"] == "balanced"  # calibrated on the valid split, the run left as it was
    assert load_checkpoint(best)["threshold_policy"] == "default"
    card = (tmp_path / "out" / "README.md").read_text()
    assert "## Provenance" in card and record["train_files_sha256"] in card and "provisional" not in card
    detector = load_detector(tmp_path / "out", device="cpu")
    p = [r["p_fake"] for r in predict_paths(detector, [str(next((data / "test").rglob("*.jpg")))], workers=0)]
    assert np.isfinite(p).all()
    assert (REPO / "examples" / "expected.csv").read_bytes() == expected  # only the shipped default writes it

    # --only-int8 remakes the int8 file alone, for these very weights and config, which stay as they were
    out = tmp_path / "out"
    kept = {p.name: p.read_bytes() for p in out.iterdir() if p.suffix != ".onnx"}
    (out / "model.int8.onnx").write_bytes(b"an int8 file of an older exporter")
    rc = _make_default().main(["--only-int8", "--out", str(out), "--data", str(data), "--max-accuracy-drop", "100"])
    assert rc == 0, capsys.readouterr().out
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.suffix != ".onnx"} == kept
    assert sorted(p.name for p in out.glob("*.onnx")) == ["model.int8.onnx"]  # no fp32 intermediate shipped
    meta = read_metadata(out / "model.int8.onnx")
    assert meta["source_sha256"] == source_digest(out / "model.safetensors") and meta["accuracy_guard"]["passed"]
    choice = choose_backend(out)  # used where it is exact (every CPU but those without VNNI for 8-bit weights)
    assert (choice.backend == "onnx-int8") is int8_runs_here(meta)[0]
    rc = _make_default().main(["--only-int8", "--out", str(out), "--data", str(data), "--max-accuracy-drop", "-1"])
    assert rc == 1 and not list(out.glob("*.onnx"))  # refused: the folder keeps no int8 file
