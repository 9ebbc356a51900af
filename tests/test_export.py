"""ONNX export: checked against PyTorch on real faces, self-describing, int8, and a drop-in Detector."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch

from fakeface.checkpoint import make_checkpoint, save_atomic
from fakeface.detector import Detector, OnnxDetector, load_detector
from fakeface.export import DEFAULT_TOLERANCE, ExportMismatchError, compare_on_split, export_onnx
from fakeface.images import load_image
from fakeface.models import create_model
from fakeface.onnx_runtime import OnnxModelError, read_metadata
from fakeface.predict import predict_paths
from fakeface.preprocess import IMAGENET_MEAN, IMAGENET_STD, Normalize, Preprocess

# Not the model's defaults, so a value read back from the file cannot be a default in disguise: an 88 px
# evaluation crop of an 80 px training crop, ImageNet normalisation.
PRE = Preprocess(input_size=80, eval_size=88, resize=88, mean=IMAGENET_MEAN, std=IMAGENET_STD)
TEMPERATURE = 0.8


@pytest.fixture(scope="module")
def faces(sample_root):
    """Real 140k faces: 8 + 8 test images to check on, 8 + 8 train images to calibrate int8 with."""
    root = sample_root / "real_vs_fake" / "real-vs-fake"
    pick = lambda split, cls, a, b: sorted((root / split / cls).glob("*.jpg"))[a:b]  # noqa: E731
    return {
        "check": pick("test", "real", 0, 8) + pick("test", "fake", 0, 8),
        "labels": [0] * 8 + [1] * 8,
        "calib": pick("train", "real", 100, 108) + pick("train", "fake", 100, 108),
        "bn": pick("train", "real", 0, 8) + pick("train", "fake", 0, 8),  # BatchNorm statistics, see checkpoint
    }


@pytest.fixture(scope="module")
def checkpoint(faces, tmp_path_factory):
    """An untrained Inception-ResNet-V1 whose BatchNorm statistics were measured on real faces.

    Trained-for-a-step models score every face within ~0.01 of each other; with real BatchNorm statistics the
    random head spreads P(fake) over ~0.2-0.9, so tolerances and verdicts mean something. The threshold is the
    median P(fake) of the check images, so half of them are called fake.
    """
    torch.manual_seed(0)
    model = create_model("inception_resnet_v1")
    for m in model.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.reset_running_stats()
            m.momentum = None  # cumulative average over the batches below
    normalize = Normalize(PRE)
    with torch.no_grad():
        model.train()
        model.dropout.eval()
        model(normalize(torch.stack([PRE.eval_tensor(load_image(p)) for p in faces["bn"]])))
        model.eval()
        logits = model(normalize(torch.stack([PRE.eval_tensor(load_image(p)) for p in faces["check"]])))[:, 0]
    threshold = float(torch.sigmoid(logits.median() / TEMPERATURE))
    ckpt = make_checkpoint(model, "inception_resnet_v1", {}, PRE, epoch=3)
    ckpt.update(threshold=threshold, threshold_policy="fixed", temperature=TEMPERATURE)
    path = tmp_path_factory.mktemp("ckpt") / "best.pt"
    save_atomic(ckpt, path)
    return path


@pytest.fixture(scope="module")
def exported(checkpoint, faces, tmp_path_factory):
    """One int8 export (which writes and checks the fp32 model first): model.onnx + model.fp32.onnx."""
    out = tmp_path_factory.mktemp("onnx") / "model.onnx"
    report = export_onnx(checkpoint, out, quantize="int8", calibration_data=faces["calib"],
                         check_images=faces["check"])
    return {"report": report, "int8": out, "fp32": out.with_name("model.fp32.onnx")}


def test_fp32_export_matches_pytorch_on_real_faces(exported, checkpoint, faces):
    report = exported["report"]
    assert report["fp32"]["path"] == str(exported["fp32"]) and report["checked_on"] == "16 images"
    assert 0 <= report["fp32"]["max_abs_diff_p"] <= DEFAULT_TOLERANCE
    onnx.checker.check_model(str(exported["fp32"]), full_check=True)

    graph = onnx.load(str(exported["fp32"])).graph
    (inp,), (out,) = graph.input, graph.output
    dims = [d.dim_param or d.dim_value for d in inp.type.tensor_type.shape.dim]
    assert (inp.name, out.name) == ("pixels", "logit")
    assert dims == ["batch", 3, 88, 88]  # the checkpoint's eval crop, batch dynamic
    assert inp.type.tensor_type.elem_type == onnx.TensorProto.FLOAT

    # Independently of the export's own check: same images, Detector (PyTorch fp32) vs OnnxDetector.
    images = [load_image(p) for p in faces["check"]]
    p_torch = Detector(checkpoint, device="cpu", precision="fp32").predict(images)
    onnx_det = OnnxDetector(exported["fp32"])
    p_onnx = onnx_det.predict(images)
    assert np.abs(p_onnx - p_torch).max() <= DEFAULT_TOLERANCE
    assert p_torch.std() > 0.05  # a test of real spread, not of sixteen equal numbers
    # dynamic batch: one image, and an odd batch, give the same numbers as the batch of 16
    assert onnx_det.predict(images[:1]) == pytest.approx(p_onnx[:1], abs=1e-5)
    assert onnx_det.predict(images[3:6]) == pytest.approx(p_onnx[3:6], abs=1e-5)


def test_metadata_makes_the_onnx_file_self_describing(exported, checkpoint):
    ckpt = torch.load(checkpoint, weights_only=True)
    meta = read_metadata(exported["fp32"])
    assert meta["preprocess"] == ckpt["preprocess"] == PRE.to_dict()
    assert meta["threshold"] == ckpt["threshold"] and meta["temperature"] == TEMPERATURE
    assert meta["threshold_policy"] == "fixed" and meta["model"]["name"] == "inception_resnet_v1"
    assert meta["fakeface_version"] == ckpt["fakeface_version"] and meta["precision"] == "fp32"
    assert meta["epoch"] == 3

    det = OnnxDetector(exported["fp32"])
    assert det.preprocess == PRE and det.threshold == ckpt["threshold"] and det.temperature == TEMPERATURE
    assert det.name == "inception_resnet_v1" and det.checkpoint["path"] == str(exported["fp32"])
    assert det.checkpoint["threshold_policy"] == "fixed" and det.checkpoint["model"]["name"] == det.name
    assert set(Detector(checkpoint, device="cpu").describe()) <= set(det.describe())
    assert det.scorer.device == torch.device("cpu") and det.scorer.precision == "fp32"
    assert det.p_fake(np.array([0.0, 0.8]))[1] == pytest.approx(1 / (1 + np.exp(-1)))  # sigmoid(logit / T)
    assert det.verdict(det.threshold) == "fake" and det.verdict(det.threshold - 1e-9) == "real"


def test_predict_paths_gives_the_detectors_verdicts(exported, checkpoint, faces, tmp_path):
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8 not a jpeg")
    paths = [str(p) for p in faces["check"]] + [str(broken), str(tmp_path / "missing.jpg")]
    torch_rows = list(predict_paths(Detector(checkpoint, device="cpu", precision="fp32"), paths, 8, workers=0))
    onnx_rows = list(predict_paths(load_detector(exported["fp32"]), paths, 8, workers=0))
    assert [r["path"] for r in onnx_rows] == paths
    assert [r["error"] for r in onnx_rows] == [r["error"] for r in torch_rows]
    assert onnx_rows[-2]["error"] and onnx_rows[-1]["error"]

    threshold = read_metadata(exported["fp32"])["threshold"]
    verdicts = {r["pred"] for r in torch_rows[:16]}
    assert verdicts == {"real", "fake"}  # the threshold splits the images, so verdicts are a real test
    for t, o in zip(torch_rows[:16], onnx_rows[:16]):
        assert abs(o["p_fake"] - t["p_fake"]) <= DEFAULT_TOLERANCE
        if abs(t["p_fake"] - threshold) > DEFAULT_TOLERANCE:  # outside the band around the threshold
            assert o["pred"] == t["pred"], t["path"]


def test_int8_export_is_smaller_and_tracks_fp32(exported, faces):
    report = exported["report"]["int8"]
    assert exported["report"]["precision"] == "int8" and report["path"] == str(exported["int8"])
    assert report["calibration_images"] == 16 and report["format"] == "QDQ" and report["per_channel"]
    assert np.isfinite(report["max_abs_diff_p_vs_fp32"])
    assert exported["int8"].stat().st_size < 0.5 * exported["fp32"].stat().st_size
    onnx.checker.check_model(str(exported["int8"]), full_check=True)
    ops = {n.op_type for n in onnx.load(str(exported["int8"])).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops

    int8 = load_detector(exported["int8"])
    assert int8.scorer.precision == "int8" and read_metadata(exported["int8"])["quantization"]["method"] == "static"
    images = [load_image(p) for p in faces["check"]]
    p8, p32 = int8.predict(images), OnnxDetector(exported["fp32"]).predict(images)
    assert np.isfinite(p8).all() and ((p8 >= 0) & (p8 <= 1)).all()
    assert np.corrcoef(p8, p32)[0, 1] > 0.9  # an untrained model: only that int8 follows fp32, not accuracy

    cmp = compare_on_split(exported["fp32"], exported["int8"], faces["check"], faces["labels"])
    assert cmp["n"] == 16 and cmp["skipped"] == 0
    for name in ("fp32", "int8"):
        assert 0 <= cmp[name]["accuracy"] <= 1 and 0 <= cmp[name]["roc_auc"] <= 1
    assert cmp["accuracy_drop"] == pytest.approx(cmp["fp32"]["accuracy"] - cmp["int8"]["accuracy"])
    assert cmp["max_abs_diff_p"] == pytest.approx(np.abs(p8 - p32).max(), abs=1e-6)


def test_fp32_export_alone_and_a_mismatch_writes_nothing(checkpoint, tmp_path, monkeypatch):
    out = tmp_path / "fp32.onnx"
    report = export_onnx(checkpoint, out)  # no check images: a seeded random batch
    assert report["precision"] == "fp32" and report["int8"] is None and "random" in report["checked_on"]
    assert report["fp32"]["max_abs_diff_p"] <= DEFAULT_TOLERANCE
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fp32.onnx"]  # no temporary files left behind

    # A graph that computes something else must be refused: pretend PyTorch says otherwise.
    import fakeface.export as export

    real = export._torch_logits
    monkeypatch.setattr(export, "_torch_logits", lambda *a, **k: real(*a, **k) + 0.1)
    with pytest.raises(ExportMismatchError, match="differ by"):
        export_onnx(checkpoint, tmp_path / "wrong.onnx")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fp32.onnx"]


def test_bad_arguments_and_files_are_clear_errors(exported, checkpoint, tmp_path):
    with pytest.raises(ValueError, match="quantize"):
        export_onnx(checkpoint, tmp_path / "m.onnx", quantize="dynamic")
    with pytest.raises(ValueError, match="calibration_data"):
        export_onnx(checkpoint, tmp_path / "m.onnx", quantize="int8")

    corrupt = tmp_path / "corrupt.onnx"
    corrupt.write_bytes(b"\x08\x07 this is not a protobuf" * 20)
    with pytest.raises(OnnxModelError, match="cannot load ONNX model .*corrupt.onnx"):
        OnnxDetector(corrupt)
    with pytest.raises(ValueError, match="corrupt.onnx"):  # OnnxModelError is a ValueError: one line in the CLI
        load_detector(corrupt)
    with pytest.raises(OnnxModelError, match="not found"):
        load_detector(tmp_path / "missing.onnx")

    # A valid ONNX model that is not ours: no metadata to predict with.
    node = onnx.helper.make_node("Identity", ["pixels"], ["logit"])
    x = onnx.helper.make_tensor_value_info("pixels", onnx.TensorProto.FLOAT, [1])
    y = onnx.helper.make_tensor_value_info("logit", onnx.TensorProto.FLOAT, [1])
    foreign = tmp_path / "foreign.onnx"
    onnx.save(onnx.helper.make_model(onnx.helper.make_graph([node], "g", [x], [y])), str(foreign))
    with pytest.raises(OnnxModelError, match="not a fakeface export"):
        OnnxDetector(foreign)

    assert isinstance(load_detector(checkpoint, device="cpu"), Detector)
    with pytest.raises(ValueError, match="CPU"):
        load_detector(exported["fp32"], device="cuda")
    with pytest.raises(ValueError, match="int8 model"):
        load_detector(exported["int8"], precision="fp32")
