"""int8 quantization settings (fakeface.export.quantize_int8) and benchmarks/int8_variants.py, on a tiny Lite0."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import onnx
import pytest

from conftest import REPO, make_folder_dataset
from fakeface import export
from fakeface.checkpoint import load_checkpoint, model_from_checkpoint
from fakeface.export import ImageCalibrationReader, export_onnx, quantize_int8, weights_7bit

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def fp32(tiny_lite_run, tmp_path_factory):
    path = tmp_path_factory.mktemp("int8") / "fp32.onnx"
    export_onnx(tiny_lite_run, path)
    return path


def quantized(fp32, tiny_run, tiny_lite_run, name, **settings):
    data, _ = tiny_run
    _, pre = model_from_checkpoint(load_checkpoint(tiny_lite_run))
    reader = ImageCalibrationReader(sorted((data / "train").rglob("*.jpg")), pre, batch_size=8)
    out = fp32.with_name(f"{name}.onnx")
    quantize_int8(fp32, out, reader, **settings)
    return onnx.load(str(out)).graph


def float_weight_convs(graph) -> set[str]:
    """Conv nodes whose weights are plain float initializers (not the output of a DequantizeLinear)."""
    floats = {i.name for i in graph.initializer if i.data_type == onnx.TensorProto.FLOAT}
    return {n.name for n in graph.node if n.op_type == "Conv" and n.input[1] in floats}


def largest_int8_weight(graph) -> int:
    return max(int(np.abs(onnx.numpy_helper.to_array(i).astype(np.int16)).max()) for i in graph.initializer
               if i.data_type == onnx.TensorProto.INT8)


def test_settings_change_the_graph_as_named(fp32, tiny_run, tiny_lite_run, monkeypatch):
    shipped = quantized(fp32, tiny_run, tiny_lite_run, "shipped")
    assert not float_weight_convs(shipped)  # every convolution quantized
    assert "QLinearConv" not in {n.op_type for n in shipped.node}
    assert largest_int8_weight(quantized(fp32, tiny_run, tiny_lite_run, "7bit", reduce_range=True)) <= 64
    assert largest_int8_weight(quantized(fp32, tiny_run, tiny_lite_run, "8bit", reduce_range=False)) > 64
    assert (largest_int8_weight(shipped) <= 64) == weights_7bit()  # what this CPU's exports get

    monkeypatch.setattr(export, "int8_full_range_safe", lambda: False)  # a CPU without AVX512-VNNI
    assert largest_int8_weight(quantized(fp32, tiny_run, tiny_lite_run, "avx2")) <= 64

    depthwise = {n.name for n in shipped.node if n.op_type == "Conv"
                 and any(a.name == "group" and a.i > 1 for a in n.attribute)}
    kept = quantized(fp32, tiny_run, tiny_lite_run, "dw", keep_fp32=["depthwise"])
    assert depthwise and float_weight_convs(kept) == depthwise

    ends = quantized(fp32, tiny_run, tiny_lite_run, "ends", keep_fp32=["first-conv", "last-conv"])
    convs = [n.name for n in shipped.node if n.op_type == "Conv"]
    assert float_weight_convs(ends) == {convs[0], convs[-1]}

    qop = quantized(fp32, tiny_run, tiny_lite_run, "qop", quant_format="qoperator")
    assert "QLinearConv" in {n.op_type for n in qop.node}


@pytest.mark.parametrize("settings, match", [({"keep_fp32": ["stem"]}, "keep_fp32 can hold"),
                                             ({"calibration": "kl"}, "calibration must be one of"),
                                             ({"quant_format": "qd"}, "quant_format must be one of"),
                                             ({"activations": "uint4"}, "activations must be one of")])
def test_unknown_settings_are_refused(fp32, tiny_run, tiny_lite_run, settings, match):
    with pytest.raises(ValueError, match=match):
        quantized(fp32, tiny_run, tiny_lite_run, "bad", **settings)


def test_script_tabulates_each_variant_beside_fp32(tiny_lite_run, tmp_path):
    data = make_folder_dataset(tmp_path / "ds", per_class=10, size=72, splits=("train", "valid"))
    doc = tmp_path / "int8.md"
    same = ["shipped: QDQ, per-channel, MinMax", "MinMax, fewer images"]
    res = subprocess.run([sys.executable, str(REPO / "benchmarks" / "int8_variants.py"), "--checkpoint",
                          str(tiny_lite_run), "--data", str(data), "--calibration-images", "20",
                          "--histogram-images", "20", "--rounds", "1", "--only", *same, "per-tensor weights",
                          "--doc", str(doc)], capture_output=True, text=True, cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-2000:]
    rows = {cells[0]: cells[1:] for cells in
            ([c.strip() for c in line.strip("|").split("|")] for line in doc.read_text().splitlines()
             if line.startswith("| ") and not line.startswith("| variant"))}
    assert set(rows) == {"fp32 (ONNX Runtime)", *same, "per-tensor weights"}
    assert rows["fp32 (ONNX Runtime)"][-1] == "1.00"
    fp32_rate = float(rows["fp32 (ONNX Runtime)"][-2])
    for name in [*same, "per-tensor weights"]:
        images, acc_drop, auc_drop, unchanged, max_dp, rate, ratio = rows[name]
        assert images == "20" and 0 <= float(unchanged) <= 1 and 0 <= float(max_dp) <= 1
        assert float(ratio) == pytest.approx(float(rate) / fp32_rate, abs=0.006)
    # the same settings on the same 20 images quantize alike: the guard's numbers agree
    assert rows[same[0]][:5] == rows[same[1]][:5]
    assert "python benchmarks/int8_variants.py" in doc.read_text()
