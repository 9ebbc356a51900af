"""`fakeface export` and the ONNX backend through the command line."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from fakeface.export import weights_7bit
from fakeface.onnx_runtime import read_metadata

pytestmark = pytest.mark.slow


def fakeface(*args):
    return subprocess.run([sys.executable, "-m", "fakeface", *map(str, args)], capture_output=True, text=True)


def test_export_int8_with_accuracy_guard_then_predict_and_evaluate_with_onnx(tiny_run, tmp_path):
    data, best = tiny_run
    out = tmp_path / "m.onnx"
    res = fakeface("export", "--checkpoint", best, "--out", out, "--quantize", "int8",
                   "--calibration-data", data, "--calibration-images", "16", "--max-accuracy-drop", "100")
    assert res.returncode == 0, res.stderr
    assert "int8:" in res.stdout and "accuracy" in res.stdout and out.is_file()
    assert (tmp_path / "m.fp32.onnx").is_file()
    bits = read_metadata(out)["quantization"]["reduce_range"]
    assert bits == weights_7bit() and ("7-bit weights" if bits else "8-bit weights") in res.stdout

    pred = fakeface("predict", "--checkpoint", tmp_path / "m.fp32.onnx", data / "test" / "fake", "--json")
    assert pred.returncode == 0, pred.stderr
    rows = [json.loads(line) for line in pred.stdout.splitlines()]
    assert len(rows) == 8 and all(0 <= r["p_fake"] <= 1 for r in rows)

    ev = fakeface("evaluate", "--checkpoint", tmp_path / "m.fp32.onnx", "--data", data, "--out", tmp_path / "ev",
                  "--bootstrap", "0")
    assert ev.returncode == 0, ev.stderr
    assert json.loads((tmp_path / "ev" / "metrics.json").read_text())["n"] == 16

    # a guard no model can pass: the int8 file is refused and removed
    out2 = tmp_path / "strict.onnx"
    strict = fakeface("export", "--checkpoint", best, "--out", out2, "--quantize", "int8",
                      "--calibration-data", data, "--calibration-images", "16", "--max-accuracy-drop", "-1")
    assert strict.returncode == 1 and "refused" in strict.stderr and not out2.exists()

    # the weights' range asked for whatever this CPU is
    other = "8" if weights_7bit() else "7"
    out3 = tmp_path / "other.onnx"
    res = fakeface("export", "--checkpoint", best, "--out", out3, "--quantize", "int8", "--int8-weights", other,
                   "--calibration-data", data, "--calibration-images", "16", "--max-accuracy-drop", "100")
    assert res.returncode == 0, res.stderr
    assert read_metadata(out3)["quantization"]["reduce_range"] is (other == "7")


def test_export_refuses_an_unknown_int8_weight_range(tmp_path):
    res = fakeface("export", "--checkpoint", tmp_path / "x.pt", "--quantize", "int8", "--int8-weights", "4")
    assert res.returncode == 2 and "--int8-weights takes auto, 7 or 8" in res.stderr


def test_export_int8_without_calibration_data_is_a_usage_error(tmp_path):
    res = fakeface("export", "--checkpoint", tmp_path / "x.pt", "--out", tmp_path / "m.onnx", "--quantize", "int8")
    assert res.returncode == 2 and "--calibration-data" in res.stderr
