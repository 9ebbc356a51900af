"""Grad-CAM: the maths on a model whose answer is known, and the CLI / API on a trained checkpoint."""

from __future__ import annotations

import base64
import io
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from conftest import noise_image
from fakeface.explain import grad_cam, overlay
from fakeface.preprocess import Preprocess


class HalfFeatures(nn.Module):
    """Channel 0 sees only the left half of the image, channel 1 only the right half."""

    def forward(self, x):
        bright = x.mean(dim=1, keepdim=True) + 2.0  # (B, 1, H, W), positive
        left = torch.zeros_like(bright)
        left[..., : x.shape[-1] // 2] = 1
        return torch.cat([bright * left, bright * (1 - left)], dim=1)  # (B, 2, H, W)


class LeftHalfModel(nn.Module):
    """Its logit only reads channel 0, so Grad-CAM must light up the left half and nothing else."""

    def __init__(self):
        super().__init__()
        self.features = HalfFeatures()
        self.scale = nn.Parameter(torch.ones(1))

    def feature_layer(self):
        return self.features

    def forward(self, x):
        return (self.features(x)[:, 0].mean(dim=(1, 2)) * self.scale).unsqueeze(1)


def test_grad_cam_points_at_what_drives_the_score():
    pre = Preprocess(input_size=32, resize=32)
    cam, logit = grad_cam(LeftHalfModel(), pre, noise_image(0, 32))
    assert cam.shape == (32, 32) and np.isfinite(logit)
    assert cam[:, :16].min() > 0.2 and cam[:, 16:].max() == 0
    assert cam.max() == pytest.approx(1.0)


def test_overlay_keeps_the_image_size():
    img = noise_image(1, 50)
    out = overlay(img, np.random.default_rng(0).random((3, 3)))
    assert out.size == (50, 50) and out.mode == "RGB"
    assert not np.array_equal(np.asarray(out), np.asarray(img))


@pytest.mark.slow
def test_explain_cli_and_api(tiny_run, tmp_path):
    from fastapi.testclient import TestClient

    from fakeface.serve import ServeConfig, create_app

    data, best = tiny_run
    image = data / "test" / "fake" / "000.jpg"
    res = subprocess.run([sys.executable, "-m", "fakeface", "explain", str(image), "--checkpoint",
                          str(best), "--out", str(tmp_path / "h.png")], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert "P(fake)" in res.stdout
    with Image.open(tmp_path / "h.png") as im:
        assert im.format == "PNG" and im.size == (80, 80)  # the evaluation view the score was computed on

    app = create_app(ServeConfig(checkpoint=str(best), precision="fp32"))
    with TestClient(app) as c:
        plain = c.post("/v1/predict?detect_faces=false", files={"file": ("a.jpg", image.read_bytes())}).json()
        r = c.post("/v1/predict?explain=true&detect_faces=false", files={"file": ("a.jpg", image.read_bytes())})
        assert r.status_code == 200, r.text
        face = r.json()["faces"][0]
        png = Image.open(io.BytesIO(base64.b64decode(face["heatmap_png_base64"])))
        assert png.format == "PNG" and png.size == (80, 80)
        assert face["p_fake"] == pytest.approx(plain["faces"][0]["p_fake"], abs=1e-5)
        assert "heatmap_png_base64" not in plain["faces"][0]
        assert c.post("/v1/predict?explain=maybe", files={"file": ("a.jpg", image.read_bytes())}).status_code == 422
