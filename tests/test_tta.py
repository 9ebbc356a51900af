"""Flip test-time augmentation: the wrapper's maths, and every consumer of a checkpoint that asks for it."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image
from sklearn.metrics import roc_auc_score
from torch import nn

from conftest import make_folder_dataset
from fakeface.calibrate import calibrate, fit_temperature, validation_samples
from fakeface.checkpoint import load_checkpoint, make_checkpoint, save_atomic
from fakeface.data import discover
from fakeface.detector import Detector
from fakeface.explain import grad_cam
from fakeface.images import load_image
from fakeface.models import create_model, with_tta
from fakeface.preprocess import TF_LITE_MEAN, TF_LITE_STD, Normalize, Preprocess
from fakeface.train import TrainConfig, train

PRE = Preprocess(input_size=128, eval_size=128, resize=128, mean=TF_LITE_MEAN, std=TF_LITE_STD)


def test_flip_tta_averages_the_image_and_its_mirror():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.Flatten(), nn.Linear(4 * 16 * 16, 1))
    x = torch.randn(3, 3, 16, 16)
    with torch.no_grad():
        plain, mirror, tta = model(x), model(x.flip(3)), with_tta(model, "flip")(x)
        assert not torch.allclose(plain, mirror, atol=1e-4)  # the network itself is not mirror-symmetric
        assert torch.allclose(tta, (plain + mirror) / 2, atol=1e-5)
        assert torch.allclose(with_tta(model, "flip")(x.flip(3)), tta, atol=1e-5)  # the detector is
    assert with_tta(model, None) is model and with_tta(model, "none") is model
    with pytest.raises(ValueError, match="flip"):
        with_tta(model, "rotate")
    with pytest.raises(ValueError, match="flip"):
        TrainConfig(tta="rotate")  # a config typo fails when read


@pytest.fixture(scope="module")
def checkpoint(sample_root, tmp_path_factory):
    """EfficientNet-Lite0's ImageNet trunk with a logistic-regression head fitted on 120 training faces at 128 px:
    weak but real scores, so that temperatures and thresholds mean something. A plain checkpoint."""
    from sklearn.linear_model import LogisticRegression

    from fakeface.models import load_trunk_weights, pretrained_weights

    model = create_model("efficientnet_lite0").eval()
    load_trunk_weights(model, "efficientnet_lite0", pretrained_weights("efficientnet_lite0"))
    root = sample_root / "real_vs_fake" / "real-vs-fake" / "train"
    faces = sorted((root / "real").glob("*.jpg"))[:60] + sorted((root / "fake").glob("*.jpg"))[:60]
    with torch.no_grad():
        x = Normalize(PRE)(torch.stack([PRE.eval_tensor(load_image(p)) for p in faces]))
        features = model.avgpool(model.forward_features(x)).flatten(1).numpy()
    head = LogisticRegression(C=0.05, max_iter=2000).fit(features, [0] * 60 + [1] * 60)
    model._fc.weight.data = torch.tensor(head.coef_, dtype=torch.float32)
    model._fc.bias.data = torch.tensor(head.intercept_, dtype=torch.float32)
    path = tmp_path_factory.mktemp("ckpt") / "plain.pt"
    save_atomic(make_checkpoint(model, "efficientnet_lite0", {}, PRE), path)
    return path


@pytest.fixture(scope="module")
def flipped(checkpoint, sample_root, tmp_path_factory):
    """The same weights calibrated with flip TTA on the sample's valid split, written to a new file."""
    out = tmp_path_factory.mktemp("ckpt") / "flip.pt"
    result = calibrate(checkpoint, sample_root, "balanced", out=out, workers=0, tta="flip")
    return out, result


def _mirror_logits(ckpt_path, images):
    """Logits of the plain model on each evaluation view and on its mirror, computed here by hand."""
    ckpt = load_checkpoint(ckpt_path)
    model = create_model("efficientnet_lite0").eval()
    model.load_state_dict(ckpt["state_dict"])
    x = Normalize(PRE)(torch.stack([PRE.eval_tensor(img) for img in images]))
    with torch.no_grad():
        return model(x)[:, 0].double().numpy(), model(x.flip(3))[:, 0].double().numpy()


def test_calibration_fits_on_the_augmented_scores(checkpoint, flipped, sample_root):
    out, result = flipped
    ckpt = load_checkpoint(out)
    assert ckpt["tta"] == "flip" and result["tta"] == "flip" and load_checkpoint(checkpoint).get("tta") is None
    samples = validation_samples(ckpt, sample_root)
    plain, mirror = _mirror_logits(out, [load_image(s.path) for s in samples])
    y = np.array([s.label for s in samples])
    assert ckpt["temperature"] == pytest.approx(fit_temperature((plain + mirror) / 2, y), rel=1e-3)
    assert result["roc_auc"] == pytest.approx(roc_auc_score(y, (plain + mirror) / 2), abs=1e-4)
    assert ckpt["temperature"] != pytest.approx(fit_temperature(plain, y), rel=1e-3)


def test_detector_scores_with_the_checkpoints_tta_unless_told(flipped, sample_root):
    out, _ = flipped
    paths = [s.path for s in discover(sample_root).splits["test"]][::25]
    images = [load_image(p) for p in paths]
    plain, mirror = _mirror_logits(out, images)
    t = load_checkpoint(out)["temperature"]
    sigmoid = lambda z: 1 / (1 + np.exp(-z / t))  # noqa: E731
    detector = Detector(out, precision="fp32")
    assert detector.describe()["test-time augmentation"] == "flip"
    np.testing.assert_allclose(detector.predict(images), sigmoid((plain + mirror) / 2), atol=1e-5)
    np.testing.assert_allclose(Detector(out, precision="fp32", tta="none").predict(images), sigmoid(plain), atol=1e-5)


def test_onnx_export_carries_the_flip_in_its_graph(flipped, sample_root, tmp_path):
    from fakeface.detector import OnnxDetector
    from fakeface.export import export_onnx
    from fakeface.onnx_runtime import read_metadata

    out, _ = flipped
    paths = [s.path for s in discover(sample_root).splits["test"]][::20]
    calibration = [s.path for s in discover(sample_root).splits["train"]][::80]
    report = export_onnx(out, tmp_path / "m.onnx", quantize="int8", calibration_data=calibration, check_images=paths)
    assert report["fp32"]["max_abs_diff_p"] <= report["fp32"]["tolerance"]  # against the PyTorch TTA detector
    images = [load_image(p) for p in paths]
    mirrors = [img.transpose(Image.Transpose.FLIP_LEFT_RIGHT) for img in images]
    p_torch = Detector(out, precision="fp32").predict(images)
    for onnx_file, tolerance in ((tmp_path / "m.fp32.onnx", 1e-4), (tmp_path / "m.onnx", 0.1)):
        assert read_metadata(onnx_file)["tta"] == "flip"
        onnx_detector = OnnxDetector(onnx_file)
        p = onnx_detector.predict(images)
        np.testing.assert_allclose(onnx_detector.predict(mirrors), p, atol=1e-5)  # the file alone is mirror-invariant
        np.testing.assert_allclose(p, p_torch, atol=tolerance)


def test_grad_cam_of_a_flip_detector_is_mirror_symmetric(checkpoint, flipped, sample_root):
    out, _ = flipped
    path = sorted((sample_root / "real_vs_fake" / "real-vs-fake" / "test" / "fake").glob("*.jpg"))[0]
    img = load_image(path).resize((128, 128))  # the evaluation view is the image itself: mirrors stay exact
    mirror = img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    for ckpt, symmetric in ((out, True), (checkpoint, False)):
        model = Detector(ckpt, precision="fp32").explain_model()
        (cam, logit), (cam_m, logit_m) = grad_cam(model, PRE, img), grad_cam(model, PRE, mirror)
        assert cam.shape == (4, 4) and cam.max() == pytest.approx(1.0)
        same = np.allclose(cam_m, cam[:, ::-1], atol=1e-4) and logit == pytest.approx(logit_m, abs=1e-5)
        assert same == symmetric, ckpt


def test_cli_sets_and_refuses_tta(checkpoint, tmp_path):
    data = make_folder_dataset(tmp_path / "ds", per_class=4, splits=("valid",))
    cli = [sys.executable, "-m", "fakeface", "calibrate", "--checkpoint", str(checkpoint), "--data", str(data),
           "--workers", "0"]
    ok = subprocess.run([*cli, "--tta", "flip", "--out", str(tmp_path / "c.pt")], capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    assert "test-time augmentation flip" in ok.stdout and load_checkpoint(tmp_path / "c.pt")["tta"] == "flip"
    off = subprocess.run([*cli[:5], str(tmp_path / "c.pt"), *cli[6:], "--tta", "none"], capture_output=True, text=True)
    assert off.returncode == 0 and load_checkpoint(tmp_path / "c.pt")["tta"] is None, off.stderr
    bad = subprocess.run([*cli, "--tta", "rotate"], capture_output=True, text=True)
    assert bad.returncode != 0 and "test-time augmentation must be one of flip" in bad.stderr
    assert "Traceback" not in bad.stderr


@pytest.mark.slow
def test_training_sets_tta_before_calibrating_and_a_finished_run_keeps_it(tmp_path):
    data = make_folder_dataset(tmp_path / "ds", per_class=8, size=72)
    cfg = TrainConfig(data=str(data), out=str(tmp_path / "run"), model="efficientnet_lite0", image_size=64,
                      epochs=1, batch_size=8, precision="fp32", workers=0, calibrate="balanced", tta="flip")
    run = train(cfg)
    best = load_checkpoint(run / "best.pt")
    assert best["tta"] == "flip" and best["calibration"]["tta"] == "flip" and best["threshold_policy"] == "balanced"
    assert "test-time augmentation flip" in (run / "train.log").read_text()
    before = (run / "best.pt").read_bytes()
    train(cfg, resume=True)  # finished, same policy and TTA: nothing is re-fitted or rewritten
    assert (run / "best.pt").read_bytes() == before
    subprocess.run([sys.executable, "-m", "fakeface", "card", str(run)], check=True, capture_output=True)
    assert "| test-time augmentation | flip: the logit is the mean" in (run / "MODEL_CARD.md").read_text()
