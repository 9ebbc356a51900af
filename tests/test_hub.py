"""The publishable model folder: it round-trips a checkpoint (same probabilities in float32, close in float16),
keeps an ensemble's threshold, carries a card with model-hub front matter, and a broken folder is one clear
error."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from fakeface.checkpoint import load_checkpoint, model_from_checkpoint
from fakeface.detector import Detector, load_detector
from fakeface.hub import FolderError, load_folder, read_config, save_folder, weights_copy
from fakeface.predict import predict_paths

REPO = Path(__file__).resolve().parents[1]


def _probs(detector, data) -> np.ndarray:
    paths = sorted(str(p) for p in (data / "test").rglob("*.jpg"))
    return np.array([r["p_fake"] for r in predict_paths(detector, paths, batch_size=8, workers=0)])


@pytest.mark.parametrize("dtype, tol", [("float32", 1e-6), ("float16", 2e-2)])
def test_folder_round_trips_probabilities(tiny_run, tmp_path, dtype, tol):
    data, best = tiny_run
    folder = save_folder(best, tmp_path / "model", dtype=dtype, name="tiny", version="1.2")
    assert {p.name for p in folder.iterdir()} == {"model.safetensors", "config.json", "README.md"}
    ckpt, original = load_folder(folder), load_checkpoint(best)
    for key in ("model", "preprocess", "threshold", "temperature", "threshold_policy", "history"):
        assert ckpt[key] == original[key], key
    assert "optimizer" not in ckpt and ckpt["release"] == {"name": "tiny", "version": "1.2"}
    assert all(v.dtype == original["state_dict"][k].dtype for k, v in ckpt["state_dict"].items())
    model_from_checkpoint(ckpt)  # the dict works where a loaded .pt does
    p_folder, p_pt = _probs(load_detector(folder, "as-given", "cpu"), data), _probs(Detector(best, device="cpu"), data)
    assert np.abs(p_folder - p_pt).max() <= tol
    assert (folder / "model.safetensors").stat().st_size < best.stat().st_size  # no optimizer state


def test_weights_copy_is_a_smaller_checkpoint_that_predicts_alike(tiny_run, tmp_path):
    data, best = tiny_run
    small = weights_copy(best, tmp_path / "weights.pt")
    ckpt, original = load_checkpoint(small), load_checkpoint(best)
    for key in ("model", "preprocess", "threshold", "temperature", "threshold_policy", "history", "train_config"):
        assert ckpt[key] == original[key], key
    assert {"optimizer", "rng"} <= set(original) and not {"optimizer", "rng"} & set(ckpt)
    assert all(v.dtype == torch.float16 for v in ckpt["state_dict"].values() if v.is_floating_point())
    assert small.stat().st_size < best.stat().st_size / 2.5
    p_small, p_pt = _probs(Detector(small, device="cpu"), data), _probs(Detector(best, device="cpu"), data)
    assert np.abs(p_small - p_pt).max() <= 2e-2


def test_folder_card_has_hub_front_matter(tiny_run, tmp_path):
    _, best = tiny_run
    folder = save_folder(best, tmp_path / "m", license="mit", extra={"metrics": {"test": {"roc_auc": 0.9,
                                                                                          "accuracy": 0.8}}})
    text = (folder / "README.md").read_text()
    assert text.startswith("---\n")
    front = yaml.safe_load(text.split("---\n")[1])
    assert front["license"] == "mit" and front["pipeline_tag"] == "image-classification"
    assert front["model-index"][0]["results"][0]["metrics"][0] == {"type": "roc_auc", "value": 0.9}
    assert read_config(folder)["metrics"]["test"]["accuracy"] == 0.8


def test_ensemble_folder_keeps_members_and_threshold(tiny_run, tiny_lite_run, tmp_path):
    data, best = tiny_run
    run = tmp_path / "ens"
    for k, src in enumerate((best, tiny_lite_run)):
        (run / f"member{k}").mkdir(parents=True)
        shutil.copy(src, run / f"member{k}" / "best.pt")
    from fakeface.calibrate import calibrate_ensemble

    record = calibrate_ensemble(run, data, "balanced", workers=0)
    folder = save_folder(run, tmp_path / "ens-folder", dtype="float32")
    assert read_config(folder)["members"] == ["member0", "member1"]
    with pytest.raises(FolderError, match="ensemble of 2 models"):
        load_folder(folder)
    det = load_detector(folder, "as-given", "cpu")
    assert det.threshold == pytest.approx(record["threshold"])
    assert np.abs(_probs(det, data) - _probs(load_detector(run, "as-given", "cpu"), data)).max() < 1e-6


def test_broken_folders_are_one_clear_error(tiny_run, tmp_path):
    _, best = tiny_run
    with pytest.raises(FolderError, match="model folder not found"):
        load_folder(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FolderError, match="has no config.json"):
        load_folder(tmp_path / "empty")
    folder = save_folder(best, tmp_path / "m")
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    with pytest.raises(FolderError, match="checksum"):
        load_folder(folder)
    config = json.loads((folder / "config.json").read_text())
    config["weights"].pop("sha256")
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(FolderError, match="not a safetensors file"):
        load_folder(folder)
    weights.unlink()
    with pytest.raises(FolderError, match="cannot read the weights"):
        load_folder(folder)
    (folder / "config.json").write_text("{not json")
    with pytest.raises(FolderError, match="damaged"):
        load_folder(folder)
    (folder / "config.json").write_text(json.dumps({"format": "something else"}))
    with pytest.raises(FolderError, match="not a fakeface model folder"):
        load_folder(folder)
    with pytest.raises(ValueError, match="dtype"):
        save_folder(best, tmp_path / "x", dtype="int4")


def test_hub_id_loads_from_the_local_cache_offline(tiny_run, tmp_path):
    """A published folder is found by its id in huggingface_hub's cache, laid out as a download leaves it;
    offline (HF_HUB_OFFLINE=1) nothing is fetched, and an id not in the cache is one clear error."""
    pytest.importorskip("huggingface_hub")
    _, best = tiny_run
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "cache" / "models--someone--tiny-detector"
    save_folder(best, repo / "snapshots" / commit, name="tiny-detector", version="3")
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(tmp_path / "cache"),
           "PYTHONPATH": os.pathsep.join([str(REPO / "src"), os.environ.get("PYTHONPATH", "")])}
    code = ("import sys; from fakeface.detector import load_detector; from fakeface.hub import FolderError\n"
            "try:\n    d = load_detector(sys.argv[1], device='cpu')\nexcept FolderError as e:\n    sys.exit(str(e))\n"
            "print(d.checkpoint['release']['name'], d.checkpoint['path'])")
    ok = subprocess.run([sys.executable, "-c", code, "someone/tiny-detector"], env=env, capture_output=True,
                        text=True, timeout=300)
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.split() == ["tiny-detector", str(repo / "snapshots" / commit)]
    missing = subprocess.run([sys.executable, "-c", code, "someone/not-cached"], env=env, capture_output=True,
                             text=True, timeout=300)
    assert missing.returncode == 1 and "not a local file or folder, and the model hub did not give it" in missing.stderr
    assert "Traceback" not in missing.stderr


def test_every_loader_takes_a_folder(tiny_run, tmp_path):
    """load_checkpoint, Detector and the ONNX exporter read a model folder as they read a .pt file."""
    from fakeface.export import export_onnx

    data, best = tiny_run
    folder = save_folder(best, tmp_path / "model", dtype="float32")
    assert load_checkpoint(folder)["path"] == str(folder)
    assert load_checkpoint(folder / "model.safetensors")["release"]["name"] == "model"
    p_pt = _probs(Detector(best, device="cpu"), data)
    assert np.abs(_probs(Detector(folder, device="cpu"), data) - p_pt).max() <= 1e-6
    report = export_onnx(folder, tmp_path / "folder.onnx")
    assert report["fp32"]["max_abs_diff_p"] <= report["fp32"]["tolerance"]
    assert np.abs(_probs(load_detector(tmp_path / "folder.onnx"), data) - p_pt).max() <= 1e-3


def test_first_use_export_of_a_read_only_folder_goes_to_the_user_cache(tiny_run, tmp_path, user_cache):
    """A model folder that cannot be written (the default inside an installed package) gets its ONNX export in
    the user cache, keyed by its weights, and found there from then on; an unwritable cache means PyTorch, with
    the reason."""
    from fakeface.detector import choose_backend
    from fakeface.hub import exports_dir

    data, best = tiny_run
    folder = save_folder(best, tmp_path / "ro", dtype="float32")
    folder.chmod(0o555)
    try:
        made = load_detector(folder, make_export=True)
        assert made.runtime.startswith("onnxruntime") and made.backend_choice.path.is_relative_to(user_cache)
        assert made.backend_choice.path.parent == exports_dir(folder / "model.safetensors")
        assert sorted(p.name for p in folder.iterdir()) == ["README.md", "config.json", "model.safetensors"]
        again = choose_backend(folder)
        assert again.backend == "onnx" and again.path == made.backend_choice.path
        p_pt = _probs(Detector(folder, device="cpu"), data)
        assert np.abs(_probs(made, data) - p_pt).max() <= 1e-3
    finally:
        folder.chmod(0o755)
    other = save_folder(best, tmp_path / "other", dtype="float16")  # other weights: no export yet
    blocked = tmp_path / "blocked"
    blocked.write_text("a file where the cache folder would be")
    old = os.environ["XDG_CACHE_HOME"]
    os.environ["XDG_CACHE_HOME"] = str(blocked)
    try:
        choice = choose_backend(other, make_export=True)
    finally:
        os.environ["XDG_CACHE_HOME"] = old
    assert choice.backend == "pytorch" and "could be made" in choice.reason


def test_an_edited_config_is_not_served_by_an_export_of_the_old_one(tiny_run, tmp_path, user_cache):
    """A folder's threshold, temperature and preprocessing live in config.json and an export carries them: the
    export made before an edit is stale, and a config.json that cannot be read is refused, not scored around."""
    _, best = tiny_run
    folder = save_folder(best, tmp_path / "m", dtype="float32")
    first = load_detector(folder, make_export=True)
    assert first.backend_choice.backend == "onnx" and first.threshold != 0.25
    config = json.loads((folder / "config.json").read_text())
    config["threshold"] = 0.25
    (folder / "config.json").write_text(json.dumps(config))
    edited = load_detector(folder, make_export=True)
    assert edited.threshold == 0.25 and edited.backend_choice.backend == "onnx"
    assert edited.backend_choice.path != first.backend_choice.path and first.backend_choice.path.exists()
    (folder / "config.json").write_text("{not json")
    with pytest.raises(FolderError, match="damaged"):
        load_detector(folder, make_export=True)
