"""Real training runs on CPU, tiny: checkpoints, logs, preprocessing round-trip, resume after kill -9."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from conftest import make_folder_dataset
from fakeface.checkpoint import load_checkpoint, model_from_checkpoint
from fakeface.train import TrainConfig, load_config, train

pytestmark = pytest.mark.slow

# No ONNX export beside best.pt: tests of that export train their own; an int8 export of an Inception-ResNet-V1 at
# every training test cost time and hundreds of MB of temporary disk each.
TINY = dict(epochs=2, batch_size=8, image_size=80, precision="fp32", workers=0, lr=3e-4, warmup_epochs=0.5,
            export="none")


def read_log(run):
    with open(run / "log.csv") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return make_folder_dataset(tmp_path_factory.mktemp("data") / "ds", per_class=8, size=96)


def test_tiny_run_writes_checkpoints_logs_and_config(dataset, tmp_path):
    run = train(TrainConfig(data=str(dataset), out=str(tmp_path / "run"), resize=104, interpolation="bicubic",
                            **TINY))
    assert {"last.pt", "best.pt", "log.csv", "config.yaml", "train.log"} <= {p.name for p in run.iterdir()}
    rows = read_log(run)
    assert [r["epoch"] for r in rows] == ["1", "2"]
    assert all(float(r["train_loss"]) > 0 and 0 <= float(r["val_auc"]) <= 1 for r in rows)

    last, best = load_checkpoint(run / "last.pt"), load_checkpoint(run / "best.pt")
    assert last["epoch"] == 2 and len(last["history"]) == 2
    # best.pt is the epoch with the best validation AUC, not simply the last one
    aucs = [float(r["val_auc"]) for r in rows]
    assert best["epoch"] == 1 + aucs.index(max(aucs))
    assert {"optimizer", "scheduler", "scaler", "rng", "history", "preprocess", "model"} <= set(last)

    # The preprocessing the run trained with travels in the checkpoint and comes back unchanged.
    model, pre = model_from_checkpoint(best)
    assert (pre.input_size, pre.resize, pre.interpolation, pre.mean) == (80, 104, "bicubic", (127.5,) * 3)
    resolved = yaml.safe_load((run / "config.yaml").read_text())
    assert resolved["resolved"]["preprocess"] == pre.to_dict() == best["preprocess"]
    assert torch.equal(model.state_dict()["logits.weight"], best["state_dict"]["logits.weight"])


def test_existing_run_is_not_overwritten(dataset, tmp_path):
    cfg = TrainConfig(data=str(dataset), out=str(tmp_path / "run"), **{**TINY, "epochs": 1})
    train(cfg)
    with pytest.raises(FileExistsError, match="--resume"):
        train(cfg)


def test_config_file_then_flags(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("epochs: 7\nlr: 0.01\naugment: {jpeg_p: 0.5}\n")
    cfg = load_config(path, {"lr": 0.002, "batch_size": None})
    assert (cfg.epochs, cfg.lr, cfg.batch_size, cfg.augment) == (7, 0.002, 32, {"jpeg_p": 0.5})
    path.write_text("epochz: 7\n")
    with pytest.raises(ValueError, match="epochz"):
        load_config(path, {})
    path.write_text("augment: {jpg_p: 1}\n")
    with pytest.raises(ValueError, match="jpg_p"):
        load_config(path, {})
    path.write_text("interpolation: cubic\n")  # a typo in the resampling filter fails when read, not mid-run
    with pytest.raises(ValueError, match="interpolation must be one of"):
        load_config(path, {})


def _cli(*args):
    return [sys.executable, "-m", "fakeface", "train", *args]


def test_resume_after_sigkill_mid_epoch(dataset, tmp_path):
    run = tmp_path / "run"
    (tmp_path / "no-export.yaml").write_text("export: none\n")
    # the smaller backbone: three processes write a checkpoint with optimizer state every epoch
    common = ["--data", str(dataset), "--out", str(run), "--epochs", "3", "--batch-size", "4", "--model",
              "efficientnet_lite0", "--image-size", "64", "--precision", "fp32", "--workers", "0", "--seed", "5",
              "--config", str(tmp_path / "no-export.yaml")]
    proc = subprocess.Popen(_cli(*common), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if (run / "log.csv").exists() and len(read_log(run)) >= 1:
            break
        time.sleep(0.05)
    assert proc.poll() is None, proc.stderr.read()
    os.kill(proc.pid, signal.SIGKILL)  # epoch 2 is in progress
    proc.wait()
    before = load_checkpoint(run / "last.pt")
    assert before["epoch"] == 1

    (run / ".last.pt.tmp99999").write_bytes(b"half a checkpoint")  # as a kill during a save leaves one
    # no --epochs: the run's own 3, not the default 10
    done = subprocess.run(_cli("--out", str(run), "--resume"), capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert not (run / ".last.pt.tmp99999").exists()
    assert "resumed" in done.stderr
    after = load_checkpoint(run / "last.pt")
    assert after["epoch"] == 3
    assert [r["epoch"] for r in after["history"]] == [1, 2, 3]
    assert after["history"][0] == before["history"][0]  # history kept, numbering continued
    assert [r["epoch"] for r in read_log(run)] == ["1", "2", "3"]

    # The resumed run is the run that was never interrupted: same data order, augmentation and dropout.
    straight = tmp_path / "straight"
    ok = subprocess.run(_cli(*[a if a != str(run) else str(straight) for a in common]), capture_output=True,
                        text=True)
    assert ok.returncode == 0, ok.stderr
    ref = load_checkpoint(straight / "last.pt")["history"]
    for a, b in zip(after["history"], ref):
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-3)


def test_ema_is_what_validation_scores_and_checkpoints_hold(dataset, tmp_path):
    from fakeface.data import discover
    from fakeface.detector import Detector
    from fakeface.evaluate import score_samples

    run = train(TrainConfig(data=str(dataset), out=str(tmp_path / "ema"), ema_decay=0.5, **TINY))
    best = load_checkpoint(run / "best.pt")
    steps = 2 * 2  # 16 training images, batch 8, 2 epochs
    assert best["ema_steps"] == steps // 2 * best["epoch"]
    trained, averaged = best["train_state_dict"], best["state_dict"]
    assert trained.keys() == averaged.keys()
    assert not torch.equal(trained["logits.weight"], averaged["logits.weight"])  # the average, not the weights
    # the epoch was chosen on the averaged weights: scoring best.pt's model reproduces the logged valid ROC-AUC
    valid = discover(str(dataset)).splits["valid"]
    auc = score_samples(Detector(run / "best.pt", device="cpu", precision="fp32"), valid, workers=0)["roc_auc"]
    assert auc == pytest.approx(best["history"][best["epoch"] - 1]["val_auc"], abs=1e-6)
    with pytest.raises(ValueError, match="ema_decay"):
        TrainConfig(ema_decay=1.0)


def test_resume_keeps_the_average_going(dataset, tmp_path, monkeypatch):
    import fakeface.train as train_module

    cfg = dict(data=str(dataset), ema_decay=0.5, **{**TINY, "epochs": 3})
    straight = train(TrainConfig(out=str(tmp_path / "straight"), **cfg))

    def stop_after_epoch_1(path, history, write=train_module.write_epoch_log):
        write(path, history)
        if len(history) == 1:
            raise KeyboardInterrupt  # as a kill would, once epoch 1's checkpoints are written

    monkeypatch.setattr(train_module, "write_epoch_log", stop_after_epoch_1)
    run = tmp_path / "stopped"
    with pytest.raises(KeyboardInterrupt):
        train(TrainConfig(out=str(run), **cfg))
    assert load_checkpoint(run / "last.pt")["epoch"] == 1
    train(TrainConfig(out=str(run), **cfg), resume=True)
    a, b = load_checkpoint(run / "last.pt"), load_checkpoint(straight / "last.pt")
    assert a["ema_steps"] == b["ema_steps"] == 6
    for key in ("state_dict", "train_state_dict"):
        assert torch.allclose(a[key]["logits.weight"], b[key]["logits.weight"], atol=1e-5)


def test_resume_without_a_run_is_a_clear_error(tmp_path):
    res = subprocess.run(_cli("--out", str(tmp_path / "nothing"), "--resume"), capture_output=True, text=True)
    assert res.returncode == 2
    assert "nothing to resume" in res.stderr and "Traceback" not in res.stderr


def test_unusable_data_stops_at_once_with_one_line(tmp_path):
    root = tmp_path / "broken"
    for split in ("train", "valid"):
        for cls in ("real", "fake"):
            (root / split / cls).mkdir(parents=True)
            for i in range(3):
                (root / split / cls / f"{i}.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    res = subprocess.run(_cli("--data", str(root), "--out", str(tmp_path / "r"), "--workers", "0"),
                         capture_output=True, text=True)
    assert res.returncode == 2
    assert "could be read" in res.stderr and "Traceback" not in res.stderr
    assert len([line for line in res.stderr.splitlines() if line.startswith("error:")]) == 1


def test_broken_files_are_skipped_counted_and_named(dataset, tmp_path):
    import shutil

    ds = tmp_path / "ds"
    shutil.copytree(dataset, ds)
    (ds / "train" / "fake" / "broken.jpg").write_bytes(b"")
    (ds / "valid" / "real" / "trunc.jpg").write_bytes((ds / "valid" / "real" / "000.jpg").read_bytes()[:200])
    run = train(TrainConfig(data=str(ds), out=str(tmp_path / "run"), **{**TINY, "epochs": 1}))
    text = (run / "train.log").read_text()
    assert "broken.jpg: empty file" in text and "trunc.jpg" in text
    assert len(load_checkpoint(run / "last.pt")["skipped"]) == 2


def test_fine_tune_keeps_model_and_preprocessing(dataset, tmp_path):
    base = train(TrainConfig(data=str(dataset), out=str(tmp_path / "base"), resize=96, tta="flip",
                             **{**TINY, "epochs": 1}))
    base_ckpt = load_checkpoint(base / "best.pt")
    assert base_ckpt["tta"] == "flip"
    # a different image size on the command line must not change the fine-tuned detector's preprocessing
    tuned = train(TrainConfig(data=str(dataset), out=str(tmp_path / "tuned"), init=str(base / "best.pt"),
                              **{**TINY, "epochs": 1, "image_size": 96}))
    ckpt = load_checkpoint(tuned / "last.pt")
    assert ckpt["preprocess"] == base_ckpt["preprocess"]
    assert ckpt["model"] == base_ckpt["model"]
    assert load_checkpoint(tuned / "best.pt")["tta"] == "flip"  # and so does its test-time augmentation
    assert "fine-tuning" in (tuned / "train.log").read_text()
    # it started from the base weights: one short epoch at a small lr keeps them close, unlike a fresh init
    w0, w1 = base_ckpt["state_dict"]["conv2d_1a.conv.weight"], ckpt["state_dict"]["conv2d_1a.conv.weight"]
    fresh = load_checkpoint(train(TrainConfig(data=str(dataset), out=str(tmp_path / "fresh"),
                                              **{**TINY, "epochs": 1, "seed": 9})) / "last.pt")
    assert (w1 - w0).abs().mean() < (fresh["state_dict"]["conv2d_1a.conv.weight"] - w0).abs().mean() / 5


def test_fine_tune_scores_the_old_test_split_so_forgetting_is_visible(dataset, tmp_path):
    from fakeface.evaluate import evaluate, fine_tune_report

    base = train(TrainConfig(data=str(dataset), out=str(tmp_path / "base"), **{**TINY, "epochs": 1}))
    new = make_folder_dataset(tmp_path / "new", per_class=6, size=112)  # "a new generator"
    tuned = train(TrainConfig(data=str(new), out=str(tmp_path / "tuned"), init=str(base / "best.pt"),
                              **{**TINY, "epochs": 1}))
    # what `fakeface train --init` runs after training (the command, not train(), calls it)
    returned = fine_tune_report(base / "best.pt", tuned / "best.pt", None, new, tuned / "fine_tune.json", workers=0)
    report = json.loads((tuned / "fine_tune.json").read_text())
    assert report == json.loads(json.dumps(returned))
    rows = {r["split"]: r for r in report["rows"]}
    assert set(rows) == {"old test", "new test"} and report["old_data"] == str(Path(dataset).resolve())
    for split, data in (("old test", dataset), ("new test", new)):
        for which, ckpt in (("before", base / "best.pt"), ("after", tuned / "best.pt")):
            m = evaluate(ckpt, data, tmp_path / f"ev-{split}-{which}".replace(" ", ""), n_boot=0, workers=0)
            assert rows[split][which]["accuracy"] == pytest.approx(m["accuracy"]), (split, which)
        assert rows[split]["change"]["accuracy"] == pytest.approx(
            rows[split]["after"]["accuracy"] - rows[split]["before"]["accuracy"])
    assert rows["old test"]["summary"].startswith("accuracy ") and "ROC-AUC" in rows["old test"]["summary"]


@pytest.mark.parametrize("name", ["sample-cpu.yaml", "140k-gpu.yaml", "140k-gpu-vggface2.yaml"])
def test_shipped_configs_are_valid(name):
    """Every key of a shipped config is a TrainConfig field with a valid value (a typo fails here, not mid-run)."""
    path = Path(__file__).resolve().parents[1] / "configs" / name
    cfg = load_config(path, {"data": "somewhere"})
    raw = yaml.safe_load(path.read_text())
    assert {k: getattr(cfg, k) for k in raw} == raw


def test_init_resolves_precision_from_the_checkpoints_model(tiny_run, tiny_lite_run, tmp_path, monkeypatch):
    """Fine-tuning an EfficientNet-Lite0 checkpoint on a bf16-capable CPU keeps fp32, as `auto` does for Lite0:
    the precision is resolved for the model trained, not for the default model --init replaces."""
    import fakeface.devices as devices

    monkeypatch.setattr(devices, "cpu_has_fast_bf16", lambda: True)  # a CPU where auto picks bf16 for IRV1
    assert devices.resolve_precision("auto", torch.device("cpu"), "inception_resnet_v1") == "bf16"
    data, _ = tiny_run
    run = train(TrainConfig(data=str(data), out=str(tmp_path / "tuned"), init=str(tiny_lite_run),
                            **{**TINY, "epochs": 1, "precision": "auto"}))
    resolved = yaml.safe_load((run / "config.yaml").read_text())["resolved"]
    assert yaml.safe_load((run / "config.yaml").read_text())["model"] == "efficientnet_lite0"
    assert resolved["precision"] == "fp32"
