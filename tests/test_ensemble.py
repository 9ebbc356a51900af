"""Ensembles of both backbones through predict / evaluate / serve, and metrics sliced by a metadata column."""

from __future__ import annotations

import csv
import io
import json

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from conftest import noise_image
from fakeface.detector import Ensemble, load_detector
from fakeface.evaluate import evaluate
from fakeface.predict import expand_inputs, predict_paths
from fakeface.serve import ServeConfig, create_app
from test_predict_evaluate import fakeface

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def pair(tiny_run, tiny_lite_run):
    return [tiny_run[1], tiny_lite_run]


def test_ensemble_is_the_mean_of_its_members(pair, tiny_run, tmp_path):
    data = tiny_run[0]
    res = fakeface("predict", "--checkpoint", pair[0], "--checkpoint", pair[1], data / "test", "--json",
                   "--precision", "fp32", "--workers", "0")
    rows = [json.loads(line) for line in res.stdout.splitlines()]
    paths = expand_inputs([data / "test"])
    assert [r["path"] for r in rows] == paths
    singles = [[r["p_fake"] for r in predict_paths(load_detector(c, precision="fp32"), paths, workers=0)]
               for c in pair]
    assert singles[0] != pytest.approx(singles[1])  # two different detectors
    np.testing.assert_allclose([r["p_fake"] for r in rows], np.mean(singles, axis=0), atol=1e-6)
    ensemble = load_detector(pair, precision="fp32")
    assert isinstance(ensemble, Ensemble) and len(ensemble.members) == 2
    assert all(r["pred"] == ("fake" if r["p_fake"] >= ensemble.threshold else "real") for r in rows)


def test_evaluate_reports_members_beside_the_ensemble(pair, tiny_run, tmp_path):
    data = tiny_run[0]
    metrics = evaluate(pair, data, tmp_path / "ens", n_boot=0, workers=0, precision="fp32")
    rows = metrics["ensemble"]["rows"]
    assert list(rows)[-1] == "ensemble" and len(rows) == 3
    for i, ckpt in enumerate(pair):
        alone = evaluate(ckpt, data, tmp_path / f"m{i}", n_boot=0, workers=0, precision="fp32")
        member = list(rows.values())[i]
        assert member["roc_auc"] == pytest.approx(alone["roc_auc"]) and member["accuracy"] == alone["accuracy"]
    best = max(r["roc_auc"] for r in list(rows.values())[:2])
    assert metrics["ensemble"]["beats_best_member"]["roc_auc"] == (metrics["roc_auc"] > best)
    assert "member 2: efficientnet_lite0" in (tmp_path / "ens" / "report.html").read_text()


def test_serve_an_ensemble(pair):
    app = create_app(ServeConfig(checkpoint=[str(c) for c in pair], precision="fp32"))
    buf = io.BytesIO()
    noise_image(7, 100).save(buf, format="JPEG")
    img = Image.open(io.BytesIO(buf.getvalue())).convert("RGB")
    with TestClient(app) as client:
        info = client.get("/v1/model").json()
        upload = {"file": ("f.jpg", buf.getvalue(), "image/jpeg")}
        body = client.post("/v1/predict?detect_faces=false", files=upload).json()
        refused = client.post("/v1/predict?explain=true&detect_faces=false", files=upload)
    assert [m["architecture"] for m in info["members"]] == ["inception_resnet_v1", "efficientnet_lite0"]
    expected = np.mean([load_detector(c, precision="fp32").predict([img])[0] for c in pair])
    assert body["p_fake"] == pytest.approx(expected, abs=1e-5)
    assert refused.status_code == 422 and refused.json()["error"]["code"] == "explain_unavailable"


def test_group_by_slices_every_metric(tiny_run, tmp_path):
    data, ckpt = tiny_run
    manifest = tmp_path / "manifest.csv"
    files = expand_inputs([data / "test"])
    with open(manifest, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path", "label", "split", "camera"])
        for i, path in enumerate(files):
            w.writerow([path, "fake" if "/fake/" in path else "real", "test", ["phone", "dslr", ""][i % 3]])
    res = fakeface("evaluate", "--checkpoint", ckpt, "--data", manifest, "--out", tmp_path / "ev",
                   "--group-by", "camera", "--bootstrap", "0", "--workers", "0")
    groups = json.loads((tmp_path / "ev" / "metrics.json").read_text())["groups"]
    assert groups["column"] == "camera" and set(groups["by_value"]) == {"phone", "dslr", "(missing)"}
    assert sum(g["n"] for g in groups["by_value"].values()) == len(files)
    preds = {r["path"]: float(r["p_fake"]) for r in csv.DictReader(open(tmp_path / "ev" / "predictions.csv"))}
    phone = [p for i, p in enumerate(files) if i % 3 == 0]
    acc = np.mean([(preds[p] >= 0.5) == ("/fake/" in p) for p in phone])
    assert groups["by_value"]["phone"]["accuracy"] == pytest.approx(acc)
    assert "camera=phone" in res.stdout
    bad = fakeface("evaluate", "--checkpoint", ckpt, "--data", manifest, "--out", tmp_path / "ev2",
                   "--group-by", "lens", check=False)
    assert bad.returncode == 2 and "no such metadata column" in bad.stderr and "camera" in bad.stderr
