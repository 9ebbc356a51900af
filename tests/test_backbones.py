"""The second backbone is first-class: export (fp32 and int8), explain and predict work with efficientnet_lite0."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from fakeface.detector import load_detector
from fakeface.explain import explain_image
from fakeface.export import export_onnx
from fakeface.predict import expand_inputs, predict_paths

pytestmark = pytest.mark.slow


def test_efficientnet_lite0_exports_and_agrees_with_pytorch(tiny_run, tiny_lite_run, tmp_path):
    images = expand_inputs([tiny_run[0] / "test"])
    report = export_onnx(tiny_lite_run, tmp_path / "lite.onnx", check_images=images)
    assert report["fp32"]["max_abs_diff_p"] < 1e-3
    torch_rows = list(predict_paths(load_detector(tiny_lite_run, precision="fp32"), images, workers=0))
    onnx_rows = list(predict_paths(load_detector(tmp_path / "lite.onnx"), images, workers=0))
    np.testing.assert_allclose([r["p_fake"] for r in onnx_rows], [r["p_fake"] for r in torch_rows], atol=1e-3)
    int8 = export_onnx(tiny_lite_run, tmp_path / "lite8.onnx", quantize="int8",
                       calibration_data=expand_inputs([tiny_run[0] / "train"]), check_images=images)
    assert int8["int8"] is not None and load_detector(tmp_path / "lite8.onnx").scorer.precision == "int8"


def test_efficientnet_lite0_grad_cam(tiny_run, tiny_lite_run):
    detector = load_detector(tiny_lite_run, precision="fp32")
    img = Image.open(expand_inputs([tiny_run[0] / "test" / "fake"])[0]).convert("RGB")
    overlay, p = explain_image(detector, img)
    assert overlay.size[0] == detector.preprocess.crop_size and 0 <= p <= 1
    assert p == pytest.approx(float(detector.predict([img])[0]), abs=1e-5)
