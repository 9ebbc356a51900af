"""Bad input at every entry point answered with one clear line (exit code 2), skipping only what is broken -
the cases an adversarial pass over the CLI found answered with a traceback, a misleading message or silence."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import make_folder_dataset
from fakeface import FAKE, REAL
from fakeface.calibrate import parse_policy
from fakeface.checkpoint import CheckpointError, load_checkpoint
from fakeface.data import discover
from fakeface.evaluate import parse_perturbations
from fakeface.images import ImageLoadError, load_image
from fakeface.train import TrainConfig, load_config


def fakeface(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "fakeface", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, timeout=600)


def one_line_error(res, *needles):
    """Exit code 2, no traceback, one `error:` line, the last, that says each of ``needles``."""
    lines = res.stderr.strip().splitlines()
    assert res.returncode == 2, (res.returncode, res.stderr)
    assert "Traceback" not in res.stderr and lines and lines[-1].startswith("error:"), res.stderr
    assert sum(line.startswith("error:") for line in lines) == 1, res.stderr
    for needle in needles:
        assert needle in lines[-1], (needle, res.stderr)


@pytest.mark.parametrize("settings,message", [
    ({"epochs": "abc"}, "epochs must be a whole number, got 'abc'"),
    ({"batch_size": "8"}, "batch_size must be a whole number"),
    ({"augment": 5}, "augment must be a mapping"),
    ({"pretrained": "yes"}, "pretrained must be true or false"),
    ({"epochs": True}, "epochs must be a whole number"),
    ({"batch_size": 1}, "batch_size must be >= 2"),
    ({"patience": 0}, "patience must be >= 1"),
    ({"image_size": 0}, "image_size must be >= 1"),
    ({"workers": -1}, "workers must be >= 0"),
    ({"calibrate": "foo"}, "threshold policy must be"),
    ({"lr": "nan"}, "lr must be a finite number"),
])
def test_training_settings_are_checked_before_training(settings, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        TrainConfig(**settings)


def test_a_float_written_as_yaml_text_is_read_as_the_number(tmp_path):
    (tmp_path / "c.yaml").write_text("lr: 1e-3\nresize: native\ncalibrate: 0.5\n")  # PyYAML reads 1e-3 as text
    cfg = load_config(tmp_path / "c.yaml", {})
    assert cfg.lr == 0.001 and cfg.resize == "native" and cfg.calibrate == "0.5"  # a fixed threshold policy


@pytest.mark.parametrize("content", [b"{{{ : bad", b"\xff\xd8\xff\xe0 a JPEG, not YAML"])
def test_a_config_that_is_not_yaml_names_the_file(tmp_path, content):
    (tmp_path / "c.yaml").write_bytes(content)
    with pytest.raises(ValueError, match=r"c\.yaml is not a YAML config file"):
        load_config(tmp_path / "c.yaml", {})


def test_parsers_of_options_say_what_a_level_or_policy_means():
    with pytest.raises(ValueError, match="JPEG qualities, from 1 to 100"):
        parse_perturbations(["jpeg=500"])
    with pytest.raises(ValueError, match="down-scaling factors"):
        parse_perturbations(["resize=0"])
    with pytest.raises(ValueError, match="blur sigmas"):
        parse_perturbations(["blur=-1"])
    assert parse_perturbations(["jpeg=90,50", "resize=0.5", "noise=0.02"]) == {
        "jpeg": [90, 50], "resize": [0.5], "noise": [0.02]}
    with pytest.raises(ValueError, match=r"a number 0 < fpr < 1 \(e\.g\. fpr=0\.01\), got 'fpr=abc'"):
        parse_policy("fpr=abc")


def test_files_that_are_not_checkpoints_or_images_say_what_they_are(tmp_path):
    (tmp_path / "empty.pt").write_bytes(b"")
    (tmp_path / "text.pt").write_text("hello")
    (tmp_path / "model.onnx").write_bytes(b"\x08\x07")
    with pytest.raises(CheckpointError, match=r"not a PyTorch checkpoint, or a truncated or damaged one \(an empty"):
        load_checkpoint(tmp_path / "empty.pt")
    with pytest.raises(CheckpointError, match="not a PyTorch checkpoint") as e:
        load_checkpoint(tmp_path / "text.pt")
    assert "weights_only" not in str(e.value)  # torch's advice to load unsafely must not reach the user
    with pytest.raises(CheckpointError, match="is an ONNX export: this needs the PyTorch checkpoint"):
        load_checkpoint(tmp_path / "model.onnx")
    with pytest.raises(CheckpointError, match="checkpoint not found"):
        load_checkpoint(tmp_path / "missing.pt")
    torch.save({"state_dict": {}, "extra": Path("x")}, tmp_path / "object.pt")  # a pickle of more than tensors
    with pytest.raises(CheckpointError, match=r"safely: it holds a pathlib\.\w*Path object"):
        load_checkpoint(tmp_path / "object.pt")
    with pytest.raises(ImageLoadError, match="a folder, not an image file"):
        load_image(tmp_path)


def test_manifest_rows_of_an_unknown_split_are_skipped_and_said(tmp_path):
    data = make_folder_dataset(tmp_path / "ds", per_class=2, splits=("train",))
    rows = ["path,label,split"] + [f"{p.relative_to(tmp_path)},{p.parent.name},{split}"
                                   for p, split in zip(sorted(data.rglob("*.jpg")), ["train", "tst", "valid", "tst"])]
    (tmp_path / "m.csv").write_text("\n".join(rows) + "\n")
    index = discover(tmp_path / "m.csv")
    assert {k: [Path(s.path).name for s in v] for k, v in index.splits.items()} == {"train": ["000.jpg"],
                                                                                   "valid": ["000.jpg"]}
    assert [s.label for s in index.splits["train"] + index.splits["valid"]] == [FAKE, REAL]  # not in training
    assert index.notes == ["m.csv: skipped 2 row(s) whose split is none of train/valid/test ('tst' x2)"]


@pytest.mark.slow
def test_cli_options_and_outputs_it_cannot_use(tiny_run, tmp_path):
    data, ckpt = tiny_run
    test = data / "test"
    one_line_error(fakeface("predict", "--checkpoint", ckpt, test, "--device", "foo"), "unknown device 'foo'")
    for bad in (["--batch-size", "0"], ["--workers", "-1"]):
        res = fakeface("predict", "--checkpoint", ckpt, test, *bad)
        assert res.returncode == 2 and "Traceback" not in res.stderr and bad[0] in res.stderr, res.stderr
    (tmp_path / "folder").mkdir()
    one_line_error(fakeface("predict", "--checkpoint", ckpt, test, "--csv", tmp_path / "folder", "--workers", "0"),
                   "Is a directory", str(tmp_path / "folder"))
    image = next(test.rglob("*.jpg"))
    one_line_error(fakeface("explain", "--checkpoint", ckpt, image, "--out", tmp_path / "heat.txt"),
                   "name an image file to write")
    one_line_error(fakeface("explain", "--checkpoint", ckpt, tmp_path / "folder"), "a folder, not an image file")
    one_line_error(fakeface("card", ckpt.parent, "--out", tmp_path / "folder"), "Is a directory")
    one_line_error(fakeface("calibrate", "--checkpoint", ckpt, "--data", data, "--out", tmp_path / "folder",
                            "--workers", "0"), f"Is a directory: {tmp_path / 'folder'}")  # the target, not a temp file
    # refused before anything is read: an empty dataset is not reached
    (tmp_path / "empty").mkdir()
    for cmd in (["calibrate", "--checkpoint", ckpt, "--data", tmp_path / "empty"], ["card", tmp_path / "empty"],
                ["predict", "--checkpoint", tmp_path / "empty", test]):
        one_line_error(fakeface(*cmd, "--csv" if cmd[0] == "predict" else "--out", tmp_path / "folder"),
                       f"Is a directory: {tmp_path / 'folder'}")
    one_line_error(fakeface("train", "--data", data, "--out", tmp_path / "run", "--batch-size", "1"),
                   "batch_size must be >= 2")
    assert not (tmp_path / "run" / "best.pt").exists()


@pytest.mark.slow
def test_card_names_an_evaluation_it_cannot_read_and_skips_a_broken_one_it_found(tiny_run, tmp_path):
    data, ckpt = tiny_run
    run = tmp_path / "run"
    shutil.copytree(ckpt.parent, run)
    assert fakeface("evaluate", "--checkpoint", run, "--data", data, "--out", run / "eval-good",
                    "--workers", "0").returncode == 0
    (run / "eval-broken").mkdir()
    (run / "eval-broken" / "metrics.json").write_text("{not json")
    res = fakeface("card", run)
    assert res.returncode == 0, res.stderr
    assert "skipped" in res.stderr and "eval-broken" in res.stderr
    assert "eval-good" in (run / "MODEL_CARD.md").read_text()
    (tmp_path / "list.json").write_text(json.dumps([1, 2]))
    one_line_error(fakeface("card", run, "--eval", tmp_path / "list.json"), "list.json: not a metrics.json")


@pytest.mark.slow
def test_int8_export_without_readable_images_keeps_nothing_unchecked(tiny_run, tmp_path):
    _, ckpt = tiny_run
    broken = tmp_path / "broken"
    for split in ("train", "valid"):
        for cls in ("real", "fake"):
            (broken / split / cls).mkdir(parents=True)
            (broken / split / cls / "a.jpg").write_bytes(b"")
            (broken / split / cls / "b.jpg").write_text("not a picture")
    res = fakeface("export", "--checkpoint", ckpt, "--out", tmp_path / "m.onnx", "--quantize", "int8",
                   "--calibration-data", broken)
    one_line_error(res, "none of the 4 calibration images could be read")
    assert not list(tmp_path.glob("*.onnx"))

    good = make_folder_dataset(tmp_path / "good", per_class=4, size=96, splits=("train",))
    shutil.copytree(broken / "valid", good / "valid")  # calibrates fine, then nothing to check accuracy on
    res = fakeface("export", "--checkpoint", ckpt, "--out", tmp_path / "m.onnx", "--quantize", "int8",
                   "--calibration-data", good)
    assert "int8 accuracy could not be checked" in res.stderr and "int8 model removed" in res.stderr
    one_line_error(res)
    assert not (tmp_path / "m.onnx").exists() and (tmp_path / "m.fp32.onnx").is_file()


@pytest.mark.slow
def test_calibrate_and_evaluate_name_what_they_skipped(tiny_run, tmp_path):
    data, ckpt = tiny_run
    messy = tmp_path / "ds"
    shutil.copytree(data, messy)
    (messy / "valid" / "real" / "broken.jpg").write_text("not a picture")
    res = fakeface("calibrate", "--checkpoint", ckpt, "--data", messy, "--out", tmp_path / "c.pt", "--workers", "0")
    assert res.returncode == 0, res.stderr
    assert "skipped 1 unreadable validation image(s)" in res.stderr and "broken.jpg" in res.stderr
    assert load_checkpoint(tmp_path / "c.pt")["calibration"]["skipped"] == 1

    rows = ["path,label"] + [f"{p},{p.parent.name}" for p in sorted((data / "test").rglob("*.jpg"))]
    (tmp_path / "m.csv").write_text("\n".join(rows + [",real", "x.jpg,maybe"]) + "\n")
    res = fakeface("evaluate", "--checkpoint", ckpt, "--data", tmp_path / "m.csv", "--split", "train",
                   "--out", tmp_path / "eval", "--workers", "0")
    assert res.returncode == 0, res.stderr
    assert "m.csv: skipped 2 row(s) with a missing path or an unreadable label" in res.stderr
    notes = json.loads((tmp_path / "eval" / "metrics.json").read_text())["images"]["data_notes"]
    assert notes == ["m.csv: skipped 2 row(s) with a missing path or an unreadable label"]


def test_a_validation_split_too_small_to_make_says_why(tmp_path):
    from fakeface.data import Sample, split_off_validation

    samples = [Sample(f"{i}.jpg", i % 2) for i in range(16)]
    with pytest.raises(ValueError, match="a fraction of 0.1 is under 2 images; give the data a valid/ split"):
        split_off_validation(samples, 0.1, seed=0)
    with pytest.raises(ValueError, match="need at least 2 of each class"):
        split_off_validation(samples[:3], 0.5, seed=0)


def test_demo_refuses_what_it_cannot_finish_before_training(tmp_path):
    from fakeface.data import DataError
    from fakeface.demo import run_demo

    no_test = make_folder_dataset(tmp_path / "ds", per_class=4, splits=("train", "valid"))
    with pytest.raises(DataError, match="the demo evaluates on a test split"):
        run_demo(tmp_path / "out", data=no_test, fast=True, epochs=1, say=lambda *a: None)
    with pytest.raises(ValueError, match="epochs must be >= 1"):
        run_demo(tmp_path / "out", data=make_folder_dataset(tmp_path / "full", per_class=4), fast=True, epochs=0,
                 say=lambda *a: None)
    assert not (tmp_path / "out" / "run" / "last.pt").exists()


@pytest.mark.slow
def test_demo_on_real_data_names_a_broken_test_image_and_finishes(tmp_path):
    from fakeface.demo import run_demo

    data = make_folder_dataset(tmp_path / "ds", per_class=4, size=96)
    (data / "test" / "real" / "000.jpg").write_text("not a picture")  # one of the images step 4 predicts
    lines = []
    result = run_demo(tmp_path / "out", data=data, fast=True, epochs=1, say=lines.append)
    assert any("000.jpg" in line and "unreadable: not an image" in line for line in lines), lines
    assert result["report"].is_file() and len(result["predictions"]) == 6


def test_data_tools_say_what_they_left_out_and_where_they_cannot_write(tmp_path):
    data = make_folder_dataset(tmp_path / "ds", per_class=6, size=64, splits=("",))
    (data / "real" / "broken.jpg").write_text("not a picture")
    res = fakeface("data", "split", data, "--out", tmp_path / "split")
    assert res.returncode == 0, res.stderr
    assert f"left out {data / 'real' / 'broken.jpg'}: not an image" in res.stderr
    (tmp_path / "afile").write_text("")
    one_line_error(fakeface("data", "split", data, "--out", tmp_path / "afile"), "is a file")
    one_line_error(fakeface("data", "split", data, "--out", tmp_path / "afile" / "sub"),
                   f"{tmp_path / 'afile'} is a file, not a folder")

    broken = tmp_path / "broken"
    for cls in ("real", "fake"):
        (broken / cls).mkdir(parents=True)
        (broken / cls / "a.jpg").write_bytes(b"")
    res = fakeface("data", "check", broken)
    assert res.returncode == 1 and "has no readable image (2 listed)" in res.stdout + res.stderr
