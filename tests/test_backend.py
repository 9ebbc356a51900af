"""predict --backend: auto runs the fastest export of the checkpoint lying beside it that passed its guard."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest

from fakeface import detector
from fakeface.checkpoint import load_checkpoint, save_atomic
from fakeface.detector import choose_backend
from fakeface.export import check_int8_accuracy, export_onnx, update_metadata, weights_7bit
from fakeface.files import file_sha256
from fakeface.onnx_runtime import read_metadata

FAILED_GUARD = {"passed": False, "accuracy_drop": 3.0, "max_accuracy_drop": 0.5, "roc_auc_drop": None, "n": 16}


def labelled(folder):
    paths = sorted(folder.glob("*/*.jpg"))
    return paths, [int(p.parent.name == "fake") for p in paths]


@pytest.fixture(scope="module")
def exports(tiny_run, tmp_path_factory):
    """tiny_run's checkpoint beside its int8 export (guard passed) and that export's fp32 model; plus the int8
    export as it was before its guard ran, kept under another name."""
    data, best = tiny_run
    src = tmp_path_factory.mktemp("exports")
    shutil.copy(best, src / "best.pt")
    calibration, _ = labelled(data / "train")
    export_onnx(src / "best.pt", src / "best.int8.onnx", quantize="int8", calibration_data=calibration)
    shutil.copy(src / "best.int8.onnx", src / "unguarded.onnx")
    cmp = check_int8_accuracy(src / "best.int8.fp32.onnx", src / "best.int8.onnx", *labelled(data / "valid"),
                              max_accuracy_drop=100)
    assert cmp["passed"] and cmp["n"] == 16
    return src


def run_folder(exports, tmp_path, int8: str | None = "passed", fp32: bool = True):
    """A run folder with best.pt and, as asked, its fp32 export and an int8 export whose guard passed, failed
    or was never run."""
    run = tmp_path / "run"
    run.mkdir(parents=True)
    shutil.copy(exports / "best.pt", run / "best.pt")
    if fp32:
        shutil.copy(exports / "best.int8.fp32.onnx", run / "best.int8.fp32.onnx")
    if int8 is not None:
        shutil.copy(exports / ("unguarded.onnx" if int8 == "missing" else "best.int8.onnx"), run / "best.int8.onnx")
    if int8 == "failed":
        update_metadata(run / "best.int8.onnx", accuracy_guard=FAILED_GUARD)
    return run


def test_exports_record_their_checkpoint_and_the_int8_guard(exports):
    digest = file_sha256(exports / "best.pt")
    fp32, int8 = read_metadata(exports / "best.int8.fp32.onnx"), read_metadata(exports / "best.int8.onnx")
    assert fp32["source_sha256"] == int8["source_sha256"] == digest
    assert "accuracy_guard" not in fp32 and "accuracy_guard" not in read_metadata(exports / "unguarded.onnx")
    guard = int8["accuracy_guard"]
    assert guard["passed"] is True and guard["n"] == 16 and guard["max_accuracy_drop"] == 100
    assert guard["accuracy_drop"] <= 100
    assert int8["threshold"] == fp32["threshold"] and int8["precision"] == "int8"  # the rest is untouched


def test_auto_takes_the_int8_export_that_passed_its_guard(exports, tmp_path):
    run = run_folder(exports, tmp_path)
    for given in (run, run / "best.pt"):  # a run folder means its best.pt
        choice = choose_backend(given)
        assert choice.backend == "onnx-int8" and choice.path == run / "best.int8.onnx"
        assert "passed its accuracy guard" in choice.reason


@pytest.mark.parametrize("int8, why", [("failed", "failed its accuracy guard"), ("missing", "no accuracy guard")])
def test_auto_passes_over_an_int8_export_without_a_passed_guard(exports, tmp_path, int8, why):
    run = run_folder(exports, tmp_path, int8=int8)
    choice = choose_backend(run)
    assert choice.backend == "onnx" and choice.path == run / "best.int8.fp32.onnx"
    assert why in choice.reason
    (run / "best.int8.fp32.onnx").unlink()
    choice = choose_backend(run)
    assert choice.backend == "pytorch" and choice.path == run and why in choice.reason


def test_auto_ignores_exports_of_an_older_checkpoint(exports, tmp_path):
    run = run_folder(exports, tmp_path)
    state = load_checkpoint(run / "best.pt")
    state.pop("path")
    state["threshold"] = 0.7  # re-calibrated after the export: the exports would judge with the old threshold
    save_atomic(state, run / "best.pt")
    choice = choose_backend(run)
    assert choice.backend == "pytorch" and "not exported from this best.pt" in choice.reason


def test_auto_without_exports_and_for_pytorch_settings(exports, tmp_path):
    run = run_folder(exports, tmp_path, int8=None, fp32=False)
    assert choose_backend(run).backend == "pytorch"
    run2 = run_folder(exports, tmp_path / "2")
    choice = choose_backend(run2, precision="bf16")  # a PyTorch precision was asked for
    assert choice.backend == "pytorch" and "bf16" in choice.reason


def test_forced_backends(exports, tmp_path):
    run = run_folder(exports, tmp_path, int8="failed")
    assert choose_backend(run, "pytorch").backend == "pytorch"
    assert choose_backend(run, "onnx").path == run / "best.int8.fp32.onnx"
    forced = choose_backend(run, "onnx-int8")  # the user's call, whatever the guard said; the reason says it
    assert forced.path == run / "best.int8.onnx" and "failed its accuracy guard" in forced.reason
    with pytest.raises(ValueError, match="backend must be one of"):
        choose_backend(run, "tensorrt")

    bare = run_folder(exports, tmp_path / "bare", int8=None, fp32=False)
    with pytest.raises(ValueError, match="no onnx-int8 export .* fakeface export .*--quantize int8"):
        choose_backend(bare, "onnx-int8")
    with pytest.raises(ValueError, match="no onnx export"):
        choose_backend(bare, "onnx")


def test_8bit_int8_weights_run_as_int8_only_on_a_cpu_that_keeps_them_exact(exports, tmp_path, monkeypatch):
    run = run_folder(exports, tmp_path)
    int8 = run / "best.int8.onnx"
    assert read_metadata(int8)["quantization"]["reduce_range"] == weights_7bit()  # what this CPU's exports get
    update_metadata(int8, quantization={**read_metadata(int8)["quantization"], "reduce_range": False})
    monkeypatch.setattr(detector, "int8_full_range_safe", lambda: True)  # AVX512-VNNI
    assert choose_backend(run).backend == "onnx-int8"

    monkeypatch.setattr(detector, "int8_full_range_safe", lambda: False)  # AVX2 alone: the products saturate
    choice = choose_backend(run)
    assert choice.backend == "onnx" and choice.path == run / "best.int8.fp32.onnx" and choice.notable
    assert "best.int8.onnx: its 8-bit weights saturate" in choice.reason
    forced = choose_backend(run, "onnx-int8")  # the user's call; the reason warns
    assert forced.backend == "onnx-int8" and "warning: its 8-bit weights saturate" in forced.reason
    given = choose_backend(int8)
    assert given.backend == "onnx-int8" and given.notable and "8-bit weights saturate" in given.reason
    assert not choose_backend(run / "best.int8.fp32.onnx").notable  # fp32 runs anywhere

    update_metadata(int8, quantization={**read_metadata(int8)["quantization"], "reduce_range": True})
    assert choose_backend(run).backend == "onnx-int8"  # 7-bit weights are exact on any CPU


def test_an_onnx_file_given_is_run_as_it_is(exports, tmp_path):
    run = run_folder(exports, tmp_path)
    assert choose_backend(run / "best.int8.onnx").backend == "onnx-int8"
    assert choose_backend(run / "best.int8.fp32.onnx", "onnx").backend == "onnx"
    with pytest.raises(ValueError, match="needs the checkpoint"):
        choose_backend(run / "best.int8.onnx", "pytorch")


def fakeface(*args):
    return subprocess.run([sys.executable, "-m", "fakeface", *map(str, args)], capture_output=True, text=True)


@pytest.mark.slow
def test_export_then_predict_auto_runs_int8_with_pytorchs_verdicts(tiny_run, tmp_path):
    data, best = tiny_run
    run = tmp_path / "run"
    run.mkdir()
    shutil.copy(best, run / "best.pt")
    # no --out: the exports go beside the checkpoint, where predict looks
    res = fakeface("export", "--checkpoint", run, "--quantize", "int8", "--calibration-data", data,
                   "--calibration-images", "16", "--max-accuracy-drop", "100")
    assert res.returncode == 0, res.stderr
    assert (run / "best.int8.onnx").is_file() and (run / "best.int8.fp32.onnx").is_file()
    assert read_metadata(run / "best.int8.onnx")["accuracy_guard"]["passed"] is True

    rows = {}
    for backend in ("auto", "pytorch"):
        res = fakeface("predict", "--checkpoint", run, data / "test", "--json", "--backend", backend)
        assert res.returncode == 0, res.stderr
        rows[backend] = [json.loads(line) for line in res.stdout.splitlines()]
        rows[backend + " stderr"] = res.stderr
    assert "backend: onnx-int8 (best.int8.onnx" in rows["auto stderr"]
    assert "backend: pytorch (asked for)" in rows["pytorch stderr"]

    threshold, band = load_checkpoint(run)["threshold"], 0.01
    assert [r["path"] for r in rows["auto"]] == [r["path"] for r in rows["pytorch"]] and len(rows["auto"]) == 16
    for int8, torch_row in zip(rows["auto"], rows["pytorch"]):
        assert abs(int8["p_fake"] - torch_row["p_fake"]) <= band
        if abs(torch_row["p_fake"] - threshold) > band:  # outside the band around the threshold
            assert int8["pred"] == torch_row["pred"], torch_row["path"]
