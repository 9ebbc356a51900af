"""Ensemble runs (``members: N``): trained as N ordinary runs in one folder, used as one detector everywhere."""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import sys
import warnings

import numpy as np
import pytest
import torch
import yaml
from fastapi.testclient import TestClient

from conftest import make_folder_dataset, noise_image
from fakeface.calibrate import calibrate, pick_threshold
from fakeface.card import write_card
from fakeface.checkpoint import CheckpointError, ensemble_members, load_checkpoint, save_atomic
from fakeface.detector import Ensemble, load_detector
from fakeface.evaluate import evaluate
from fakeface.predict import predict_paths
from fakeface.serve import ServeConfig, create_app
from fakeface.train import TrainConfig, train

pytestmark = pytest.mark.slow

TINY = dict(epochs=1, batch_size=8, model="efficientnet_lite0", image_size=64, precision="fp32", workers=0,
            calibrate="balanced")


def fakeface(*args):
    return subprocess.run([sys.executable, "-m", "fakeface", *map(str, args)], capture_output=True, text=True)


@pytest.fixture(scope="module")
def pair_run(tiny_run, tmp_path_factory):
    data, _ = tiny_run
    out = tmp_path_factory.mktemp("members") / "run"
    train(TrainConfig(data=str(data), out=str(out), seed=3, members=2, **TINY))
    return data, out


def test_members_are_ordinary_runs_with_their_own_seeds(pair_run):
    data, out = pair_run
    members = ensemble_members(out)
    assert [m.name for m in members] == ["member0", "member1"]
    ckpts = [load_checkpoint(m) for m in members]
    assert [c["train_config"]["seed"] for c in ckpts] == [6, 7]  # seed x members + k: no two runs share one
    assert all(c["threshold_policy"] == "balanced" and c["train_config"]["members"] == 1 for c in ckpts)
    assert not torch.equal(ckpts[0]["state_dict"]["_fc.weight"], ckpts[1]["state_dict"]["_fc.weight"])
    assert yaml.safe_load((out / "ensemble.yaml").read_text())["members"] == 2


def test_the_folder_is_one_detector_for_predict_evaluate_and_serve(pair_run, tmp_path):
    data, out = pair_run
    members = ensemble_members(out)
    detector = load_detector(out, precision="fp32")
    assert isinstance(detector, Ensemble) and len(detector.members) == 2
    paths = sorted(str(p) for p in (data / "test").rglob("*.jpg"))
    singles = [[r["p_fake"] for r in predict_paths(load_detector(m, precision="fp32"), paths, workers=0)]
               for m in members]
    res = fakeface("predict", "--checkpoint", out, *paths, "--json", "--precision", "fp32", "--workers", "0")
    assert res.returncode == 0, res.stderr
    rows = [json.loads(line) for line in res.stdout.splitlines()]
    np.testing.assert_allclose([r["p_fake"] for r in rows], np.mean(singles, axis=0), atol=1e-6)
    assert res.stderr.count("backend:") == 2  # one backend choice per member
    own = json.loads((out / "calibration.json").read_text())
    assert f"threshold {own['threshold']:.3f} (balanced (fitted on the ensemble's valid scores))" in res.stderr
    assert [r["pred"] for r in rows] == ["fake" if r["p_fake"] >= own["threshold"] else "real" for r in rows]

    metrics = evaluate(out, data, tmp_path / "ev", n_boot=0, workers=0, precision="fp32")
    assert len(metrics["ensemble"]["rows"]) == 3
    assert metrics["threshold"] == own["threshold"]
    assert "fitted on the ensemble's valid scores" in metrics["calibration"]["policy"]

    with TestClient(create_app(ServeConfig(checkpoint=str(out), precision="fp32"))) as client:
        info = client.get("/v1/model").json()
        assert len(info["members"]) == 2 and info["threshold"] == own["threshold"]
        buf = io.BytesIO()
        noise_image(5, 96).save(buf, format="JPEG")
        r = client.post("/v1/predict?detect_faces=false", files={"file": ("x.jpg", buf.getvalue(), "image/jpeg")})
        assert r.status_code == 200 and 0 <= r.json()["p_fake"] <= 1


def test_single_model_commands_name_the_members(pair_run):
    _, out = pair_run
    with pytest.raises(CheckpointError, match="ensemble of 2 models.*member0.*member1"):
        load_checkpoint(out)
    for args in (["export", "--checkpoint", out, "--out", out / "x.onnx"],
                 ["calibrate", "--checkpoint", out, "--out", out / "x.pt"]):
        res = fakeface(*args)
        assert res.returncode == 2 and "is an ensemble" in res.stderr and "Traceback" not in res.stderr, args
    assert not (out / "x.onnx").exists() and not (out / "x.pt").exists()


def test_export_and_card_cover_every_member(pair_run, tmp_path):
    data, run = pair_run
    out = tmp_path / "run"
    shutil.copytree(run, out)
    res = fakeface("export", "--checkpoint", out)
    assert res.returncode == 0, res.stderr
    assert all((m / "best.onnx").is_file() for m in ensemble_members(out))
    # predict --backend auto now finds each member's export
    backends = [m.backend_choice.backend for m in load_detector(out).members]
    assert all(b.startswith("onnx") for b in backends), backends
    res = fakeface("predict", "--checkpoint", out, data / "test", "--workers", "0")
    # an int8 model is news on stderr; an fp32 export gives the checkpoint's own numbers, quietly
    assert res.returncode == 0 and res.stderr.count("backend: onnx") == backends.count("onnx-int8"), res.stderr
    assert "recalibrated" not in res.stderr  # the exports carry the calibration the ensemble threshold was fitted on
    assert "fitted on the ensemble's valid scores" in res.stderr

    card = write_card(out).read_text()
    members = [load_checkpoint(m) for m in ensemble_members(out)]
    assert "2 models of this recipe (seeds 6 / 7)" in card
    assert f"| threshold | {members[0]['threshold']:.4f} / {members[1]['threshold']:.4f} |" in card
    own = json.loads((out / "calibration.json").read_text())
    assert f"| ensemble threshold | {own['threshold']:.4f} (balanced, fitted on the ensemble's own scores" in card

    calibrate(out / "member1" / "best.pt", data, "0.123")  # the ensemble threshold no longer fits its members
    mean = np.mean([m["threshold"] for m in map(load_checkpoint, ensemble_members(out))])
    assert f"| ensemble threshold | {mean:.4f} (the mean of the members'); {out / 'calibration.json'} no longer fits" \
        in write_card(out).read_text()


def valid_scores(data, run):
    """(labels, each member's calibrated P(fake)) on the valid split, member by member, as one model each."""
    paths = sorted(str(p) for p in (data / "valid").rglob("*.jpg"))
    y = np.array([int("/fake/" in p) for p in paths])
    # with PyTorch, as calibration scores: a tiny model's near-equal scores are ordered differently by its int8 export
    return y, np.array([[r["p_fake"] for r in predict_paths(load_detector(m, backend="pytorch"), paths, workers=0)]
                        for m in ensemble_members(run)])


def test_the_ensemble_threshold_is_fitted_on_its_own_valid_scores(pair_run, tmp_path):
    """Training fits the ensemble's threshold on the mean of its members' valid probabilities; a member
    recalibrated later makes it stale (the mean of theirs is used, with a warning) until `calibrate RUN` refits
    every member and then it, by the policy asked for."""
    data, run = pair_run
    own = json.loads((run / "calibration.json").read_text())
    y, member_p = valid_scores(data, run)
    p = member_p.mean(axis=0)
    assert own["threshold"] == pytest.approx(pick_threshold(y, p, "balanced"), abs=1e-6)
    assert own["n_valid"] == len(y) and own["threshold_policy"] == "balanced"
    detector = load_detector(run, precision="fp32")
    assert detector.threshold == own["threshold"]
    assert "ensemble's valid scores" in detector.describe()["threshold policy"]
    several = load_detector(ensemble_members(run), precision="fp32")  # members given one by one: no run of theirs
    assert several.threshold == pytest.approx(np.mean([m.threshold for m in several.members]))

    out = tmp_path / "run"
    shutil.copytree(run, out)
    calibrate(out / "member0" / "best.pt", data, "0.123")  # a fixed threshold: surely another
    with pytest.warns(UserWarning, match="recalibrated, retrained"):
        stale = load_detector(out, precision="fp32")
    assert stale.threshold == pytest.approx(np.mean([m.threshold for m in stale.members]))
    with warnings.catch_warnings(), pytest.MonkeyPatch.context() as env:
        warnings.simplefilter("error")
        env.setenv("RANK", "1")  # another torchrun process: rank 0 alone says it
        other = load_detector(out, precision="fp32")
    assert other.threshold == stale.threshold and "recalibrated, retrained" in other.describe()["threshold policy"]

    res = fakeface("calibrate", "--checkpoint", out, "--data", data, "--policy", "fpr=0.25", "--workers", "0")
    assert res.returncode == 0, res.stderr
    assert res.stdout.count("written to") == 3 and "ensemble: threshold" in res.stdout
    refit = json.loads((out / "calibration.json").read_text())
    y, member_p = valid_scores(data, out)
    p = member_p.mean(axis=0)
    assert refit["threshold_policy"] == "fpr=0.25"
    assert refit["fpr"] == pytest.approx((p[y == 0] >= refit["threshold"]).mean())
    assert refit["fpr"] <= 0.25 and refit["threshold"] == pytest.approx(pick_threshold(y, p, "fpr=0.25"), abs=1e-6)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert load_detector(out, precision="fp32").threshold == refit["threshold"]

    for broken in ("{not json", json.dumps({**refit, "threshold": float("nan")}), json.dumps({"threshold": 0.5})):
        (out / "calibration.json").write_text(broken)
        res = fakeface("predict", "--checkpoint", out, data / "test", "--workers", "0")
        assert res.returncode == 2 and "cannot read the ensemble threshold" in res.stderr, broken
        assert "Traceback" not in res.stderr

    # scoring differently (test-time augmentation) makes it stale too, though temperature and threshold stay
    (out / "calibration.json").write_text(json.dumps(refit))
    member = load_checkpoint(out / "member1")
    member["tta"] = None if member.get("tta") else "flip"
    save_atomic({k: v for k, v in member.items() if k != "path"}, out / "member1" / "best.pt")
    with pytest.warns(UserWarning, match="recalibrated, retrained"):
        load_detector(out, precision="fp32")


def test_a_threshold_fitted_by_calibrate_is_refitted_when_training_changes_the_tta(tiny_run, tmp_path):
    """A run trained without `calibrate:`, calibrated afterwards by `fakeface calibrate`, then resumed with another
    test-time augmentation: each member's threshold and the ensemble's are refitted by the policy they were fitted
    by, on the scores the new augmentation gives (not left at thresholds picked on other scores)."""
    data, _ = tiny_run
    out = tmp_path / "run"
    cfg = {**TINY, "calibrate": None}
    train(TrainConfig(data=str(data), out=str(out), members=2, **cfg))
    assert not (out / "calibration.json").exists()
    res = fakeface("calibrate", "--checkpoint", out, "--data", data, "--policy", "fpr=0.25", "--workers", "0")
    assert res.returncode == 0, res.stderr
    before = json.loads((out / "calibration.json").read_text())

    train(TrainConfig(data=str(data), out=str(out), members=2, tta="flip", **cfg), resume=True)
    for member in ensemble_members(out):
        ckpt = load_checkpoint(member)
        assert ckpt["tta"] == "flip" and ckpt["calibration"]["tta"] == "flip"
        assert ckpt["threshold_policy"] == "fpr=0.25"
    refit = json.loads((out / "calibration.json").read_text())
    assert refit["threshold_policy"] == "fpr=0.25" and refit["members"] != before["members"]
    y, member_p = valid_scores(data, out)  # now with flips, as the members score
    assert refit["threshold"] == pytest.approx(pick_threshold(y, member_p.mean(axis=0), "fpr=0.25"), abs=1e-6)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # not stale
        assert load_detector(out, precision="fp32").threshold == refit["threshold"]


def test_interrupted_ensemble_resumes_where_it_stopped(tiny_run, tmp_path):
    """The first member finished, the second never started (the run was stopped between them): --resume trains
    the second only, with the first member's held-out split when the data has no valid split."""
    data = make_folder_dataset(tmp_path / "ds", per_class=10, size=96, splits=("train",))
    out = tmp_path / "run"
    cfg = dict(data=str(data), out=str(out), members=2, **TINY)
    train(TrainConfig(**cfg))
    first = load_checkpoint(out / "member0" / "last.pt")
    shutil.rmtree(out / "member1")
    with pytest.raises(FileExistsError, match="--resume"):
        train(TrainConfig(**cfg))
    res = fakeface("train", "--out", out, "--resume", "--workers", "0")  # no config: ensemble.yaml says it all
    assert res.returncode == 0, res.stderr
    again = load_checkpoint(out / "member0" / "last.pt")  # finished: not trained again
    assert again["history"] == first["history"]
    assert all(torch.equal(again["state_dict"][k], v) for k, v in first["state_dict"].items())
    assert load_checkpoint(out / "member1")["epoch"] == 1
    assert (out / "member1" / "split.csv").read_text() == (out / "member0" / "split.csv").read_text()
    assert "the ensemble: " in res.stdout and res.stdout.count("best checkpoint:") == 2


@pytest.mark.parametrize("members", [0, 1.5, "two"])
def test_members_must_be_a_whole_number(members):
    with pytest.raises(ValueError, match="members"):
        TrainConfig(members=members)


def test_an_ensemble_never_lands_in_a_one_model_run(tiny_run, pair_run):
    data, best = tiny_run
    with pytest.raises(FileExistsError, match="one-model run"):
        train(TrainConfig(data=str(data), out=str(best.parent), members=2, **TINY))
    with pytest.raises(FileExistsError, match="--resume"):  # nor a one-model run in an ensemble's folder
        train(TrainConfig(data=str(data), out=str(pair_run[1]), **TINY))
