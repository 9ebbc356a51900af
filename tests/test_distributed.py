"""Distributed training and prediction: real torchrun launches of two CPU processes (gloo) on tiny data, the
process-group helpers in two real processes, torch.compile and persistent loader workers."""

from __future__ import annotations

import csv
import json
import os
import shutil
import socket
import subprocess
import sys

import numpy as np
import pytest
import torch
import yaml
from torch import nn
from torch.utils.data import DataLoader

from conftest import make_folder_dataset
from fakeface import distributed, models
from fakeface.augment import AugmentConfig
from fakeface.checkpoint import load_checkpoint, model_from_checkpoint
from fakeface.data import FaceDataset, class_counts, collate, discover
from fakeface.predict import predict_distributed
from fakeface.preprocess import Preprocess
from fakeface.scoring import Scores
from fakeface.train import EpochSampler, TrainConfig, prepare_model, train, validate

TORCHRUN_VARS = ("WORLD_SIZE", "RANK", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


def clean_env() -> dict:
    """This environment without any process-group variables, one thread per process (2 cores, 2 processes)."""
    env = {k: v for k, v in os.environ.items() if k not in TORCHRUN_VARS}
    env["OMP_NUM_THREADS"] = "1"
    return env


def torchrun(*args: str, nproc: int = 2) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
           "-m", "fakeface", *args]
    return subprocess.run(cmd, capture_output=True, text=True, env=clean_env(), timeout=300)


def fakeface(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "fakeface", *args], capture_output=True, text=True,
                          env=clean_env(), timeout=300)


# -- helpers, one process -------------------------------------------------------------------------------------
@pytest.mark.parametrize("world", [1, 2, 3, 4])
def test_shards_cover_every_index_once_in_order(world):
    for n in range(12):
        parts = [range(n)[distributed.shard(n, r, world)] for r in range(world)]
        assert [i for p in parts for i in p] == list(range(n))
        assert max(map(len, parts)) - min(map(len, parts)) <= 1


def test_scores_merge_puts_shards_back_in_dataset_order():
    whole = Scores(np.arange(7), np.array([0, 1, 1, 0, 1, 0, 0]), np.linspace(-2, 2, 7), [(2, "bad"), (5, "worse")])
    keep = np.isin(whole.index, [0, 1, 3, 4, 6])  # 2 and 5 failed
    idx, lab, lg = whole.index[keep], whole.label[keep], whole.logit[keep]
    shard_b = Scores(idx[2:], lab[2:], lg[2:], [(5, "worse")])  # uneven: 3 and 2 images, given out of order
    shard_a = Scores(idx[:2], lab[:2], lg[:2], [(2, "bad")])
    merged = Scores.merge([shard_b, shard_a])
    assert merged.index.tolist() == idx.tolist()
    assert np.array_equal(merged.label, lab) and np.array_equal(merged.logit, lg)
    assert merged.failures == whole.failures


def test_epoch_sampler_keeps_the_one_process_order_and_splits_it():
    ds = list(range(11))
    for epoch in (1, 2):
        # what training shuffled with before the loader was made once per run
        before = DataLoader(ds, batch_size=None, shuffle=True, generator=torch.Generator().manual_seed(7 + epoch))
        one = EpochSampler(ds, num_replicas=1, rank=0, seed=7, drop_last=True)
        one.set_epoch(epoch)
        assert list(one) == [int(i) for i in before]
        shards = []
        for rank in (0, 1):
            sampler = EpochSampler(ds, num_replicas=2, rank=rank, seed=7, drop_last=True)
            sampler.set_epoch(epoch)
            shards.append(list(sampler))
        assert len(shards[0]) == len(shards[1]) == 5  # the same number of steps on each process
        assert sorted(shards[0] + shards[1]) == sorted(list(one)[:10])  # disjoint, the epoch's order, tail dropped


def test_one_process_needs_no_process_group(monkeypatch):
    for var in TORCHRUN_VARS:
        monkeypatch.delenv(var, raising=False)
    assert distributed.world_size() == 1 and distributed.is_main() and not distributed.is_distributed()
    assert distributed.init_from_env(torch.device("cpu")) == torch.device("cpu")
    assert distributed.all_gather_object({"a": 1}) == [{"a": 1}] == distributed.gather_to_main({"a": 1})
    assert distributed.any_rank(True, torch.device("cpu")) and not distributed.any_rank(False, torch.device("cpu"))
    seen = []
    rows = predict_distributed(lambda paths: (seen.append(p) or {"path": p} for p in paths), ["a", "b"])
    assert seen == []  # one process streams: nothing is scored before it is read
    assert [r["path"] for r in rows] == ["a", "b"] == seen


def _helpers_in_a_process_group(rank: int, world: int, port: int, out_dir: str) -> None:
    os.environ.update(WORLD_SIZE=str(world), RANK=str(rank), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    with distributed.process_group(torch.device("cpu")) as device:
        mine = list(range(10))[distributed.shard(10)]  # uneven: 3, 3, 4
        rows = predict_distributed(lambda paths: [{"path": p, "by": rank} for p in paths], list("abcdefg"))
        result = {
            "device": str(device), "rank": distributed.rank(), "world": distributed.world_size(),
            "gathered": distributed.all_gather_object(mine),
            "to_main": distributed.gather_to_main(mine),
            "any_last": distributed.any_rank(rank == world - 1, device),
            "any_none": distributed.any_rank(False, device),
            "rows": None if rows is None else list(rows),
        }
        distributed.barrier()
    result["left"] = not torch.distributed.is_initialized()
    with open(os.path.join(out_dir, f"{rank}.json"), "w") as f:
        json.dump(result, f)


def test_gather_helpers_in_three_real_processes(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    torch.multiprocessing.spawn(_helpers_in_a_process_group, args=(3, port, str(tmp_path)), nprocs=3)
    results = [json.loads((tmp_path / f"{r}.json").read_text()) for r in range(3)]
    for r, res in enumerate(results):
        assert (res["device"], res["rank"], res["world"], res["left"]) == ("cpu", r, 3, True)
        assert res["gathered"] == [[0, 1, 2], [3, 4, 5], [6, 7, 8, 9]]
        assert res["any_last"] is True and res["any_none"] is False
    assert results[0]["to_main"] == [[0, 1, 2], [3, 4, 5], [6, 7, 8, 9]]
    assert results[1]["to_main"] is None and results[2]["to_main"] is None
    # every input once, in input order, on rank 0; each scored by the process whose shard it is in
    assert [(r["path"], r["by"]) for r in results[0]["rows"]] == list(zip("abcdefg", [0, 0, 1, 1, 2, 2, 2]))
    assert results[1]["rows"] is None


def test_persistent_loader_workers_follow_set_epoch(tmp_path):
    """Persistent workers keep their copy of the dataset: each epoch must still get its own augmentation."""
    data = make_folder_dataset(tmp_path / "ds", per_class=2, size=64, splits=("train",))
    samples = discover(data).splits["train"]
    ds = FaceDataset(samples, Preprocess(input_size=48, resize=56), AugmentConfig(), seed=3)
    expected = {}
    for epoch in (1, 2):
        ds.set_epoch(epoch)
        expected[epoch] = torch.stack([ds[i]["image"] for i in range(len(ds))])
    assert not torch.equal(expected[1], expected[2])  # random crops and flips differ by epoch
    loader = DataLoader(ds, batch_size=2, num_workers=1, persistent_workers=True, collate_fn=collate)
    for epoch in (1, 2):
        ds.set_epoch(epoch)
        got = torch.cat([b["image"] for b in loader])
        assert torch.equal(got, expected[epoch]), f"epoch {epoch}"


# -- torch.compile ----------------------------------------------------------------------------------------------
class TinyNet(nn.Module):
    """Small enough to compile on a CPU in seconds (Inception-ResNet-V1 takes minutes)."""

    def __init__(self):
        super().__init__()
        self.trunk = nn.Sequential(nn.Conv2d(3, 8, 3, stride=2), nn.BatchNorm2d(8), nn.ReLU(),
                                   nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.head = nn.Linear(8, 1)

    def forward(self, x):
        return self.head(self.trunk(x))


@pytest.mark.slow
def test_compile_trains_on_cpu_and_saves_the_plain_model(tmp_path, monkeypatch):
    entry = models.ModelEntry("tiny_test", TinyNet, Preprocess(input_size=32, resize=40), ("head",), "a test net")
    monkeypatch.setitem(models._REGISTRY, "tiny_test", entry)
    cfg = TrainConfig(model="tiny_test", compile=True, channels_last=False)
    compiled = prepare_model(TinyNet(), cfg, torch.device("cpu"))
    assert isinstance(compiled, torch._dynamo.eval_frame.OptimizedModule)

    data = make_folder_dataset(tmp_path / "ds", per_class=6, size=48)
    run = train(TrainConfig(data=str(data), out=str(tmp_path / "run"), model="tiny_test", compile=True, epochs=1,
                            batch_size=4, precision="fp32", workers=0, channels_last=False))
    ckpt = load_checkpoint(run / "last.pt")
    assert ckpt["train_config"]["compile"] is True and ckpt["history"][0]["train_loss"] > 0
    assert not [k for k in ckpt["state_dict"] if "_orig_mod" in k]  # unwrapped before saving
    model, _ = model_from_checkpoint(ckpt)  # loads into the plain model, key for key
    assert torch.equal(model.state_dict()["head.weight"], ckpt["state_dict"]["head.weight"])


# -- torchrun: training -----------------------------------------------------------------------------------------
TRAIN = ["--image-size", "80", "--batch-size", "4", "--precision", "fp32", "--workers", "0", "--lr", "3e-4",
         "--seed", "1"]


@pytest.fixture(scope="module")
def ddp_run(tmp_path_factory):
    """Two processes train one epoch, then two more resume it to epoch 2.

    The data has a broken training file, and a validation split of 17 images (shards of 8 and 9, one
    unreadable) whose "fake" half has no fake cue, so that its ROC-AUC is neither 0 nor 1.
    """
    root = tmp_path_factory.mktemp("ddp")
    data = make_folder_dataset(root / "ds", per_class=8, size=96, splits=("train",))
    plain = make_folder_dataset(root / "plain", per_class=8, size=96, splits=("valid",), class_dirs=("real", "other"))
    shutil.move(plain / "valid", data / "valid")
    (data / "valid" / "other").rename(data / "valid" / "fake")
    (data / "train" / "fake" / "broken.jpg").write_bytes(b"")
    (data / "valid" / "real" / "trunc.jpg").write_bytes((data / "valid" / "real" / "000.jpg").read_bytes()[:300])
    run = root / "run"
    first = torchrun("train", "--data", str(data), "--out", str(run), "--epochs", "1", *TRAIN)
    assert first.returncode == 0, first.stderr
    after_first = load_checkpoint(run / "last.pt")
    resumed = torchrun("train", "--out", str(run), "--resume", "--epochs", "2")
    assert resumed.returncode == 0, resumed.stderr
    return {"data": data, "run": run, "first": first, "resumed": resumed, "after_first": after_first}


@pytest.mark.slow
def test_torchrun_writes_one_run_folder_from_rank_0(ddp_run):
    run, first = ddp_run["run"], ddp_run["first"]
    assert sorted(p.name for p in run.iterdir()) == ["best.int8.fp32.onnx", "best.int8.onnx", "best.pt", "config.yaml",
                                                     "last.pt", "log.csv", "train.log"]  # exported once, by rank 0
    with open(run / "log.csv") as f:
        assert [r["epoch"] for r in csv.DictReader(f)] == ["1", "2"]
    # Only rank 0 talks: one summary line per epoch on the console and in train.log, one final line.
    assert first.stderr.count("epoch 1/1  train loss") == 1
    assert first.stdout.count("best checkpoint:") == 1
    text = (run / "train.log").read_text()
    assert text.count("epoch 1/1  train loss") == 1 and text.count("epoch 2/2  train loss") == 1
    resolved = yaml.safe_load((run / "config.yaml").read_text())["resolved"]
    assert (resolved["world_size"], resolved["global_batch_size"]) == (2, 8)

    last = load_checkpoint(run / "last.pt")
    assert last["world_size"] == 2
    assert not [k for k in last["state_dict"] if k.startswith("module.")]  # the unwrapped model's weights
    # Both broken files were seen - the training one by whichever process had it - and named once.
    assert sorted(os.path.basename(p) for p in last["skipped"]) == ["broken.jpg", "trunc.jpg"]
    assert text.count("broken.jpg: empty file") == 1


@pytest.mark.slow
def test_torchrun_resume_continues_at_epoch_2(ddp_run):
    before, resumed = ddp_run["after_first"], ddp_run["resumed"]
    assert before["epoch"] == 1 and [r["epoch"] for r in before["history"]] == [1]
    assert resumed.stderr.count("resumed") == 1  # rank 0 says it, once
    assert "epoch 2/2  train loss" in resumed.stderr and "epoch 1/" not in resumed.stderr
    after = load_checkpoint(ddp_run["run"] / "last.pt")
    assert after["epoch"] == 2 and [r["epoch"] for r in after["history"]] == [1, 2]
    assert after["history"][0] == before["history"][0]
    # the resumed processes trained on from the saved weights
    w = "conv2d_1a.conv.weight"
    assert not torch.equal(after["state_dict"][w], before["state_dict"][w])


@pytest.mark.slow
def test_torchrun_validation_metrics_are_those_of_the_whole_split(ddp_run):
    """The logged metrics equal one process scoring the whole validation split with the saved weights."""
    data, run = ddp_run["data"], ddp_run["run"]
    index = discover(data)
    counts = class_counts(index.splits["train"])
    criterion = nn.BCEWithLogitsLoss(pos_weight=torch.tensor(counts["real"] / counts["fake"]))
    for name in ("best.pt", "last.pt"):
        ckpt = load_checkpoint(run / name)
        model, pre = model_from_checkpoint(ckpt)
        loader = DataLoader(FaceDataset(index.splits["valid"], pre), batch_size=8, collate_fn=collate)
        single = validate(model, loader, criterion, torch.device("cpu"), "fp32", TrainConfig(), pre)
        logged = next(r for r in ckpt["history"] if r["epoch"] == ckpt["epoch"])
        assert len(single.pop("failed")) == 1
        assert 0 < single["auc"] < 1
        assert logged["val_loss"] == pytest.approx(single["loss"], abs=1e-4)
        assert logged["val_acc"] == pytest.approx(single["acc"], abs=1e-4)
        assert logged["val_auc"] == pytest.approx(single["auc"], abs=1e-4)


# -- torchrun: predict ------------------------------------------------------------------------------------------
def read_rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.mark.slow
def test_torchrun_predict_writes_every_row_once_in_order(tiny_run, tmp_path):
    data, ckpt = tiny_run
    images = tmp_path / "images"
    shutil.copytree(data / "test", images)
    (images / "fake" / "unreadable.jpg").write_bytes(b"not an image")  # 17 inputs: shards of 8 and 9
    common = ["--checkpoint", str(ckpt), "--distributed", "--workers", "0", "--device", "cpu", "--precision", "fp32",
              "--batch-size", "4", str(images)]
    dist_run = torchrun("predict", *common, "--csv", str(tmp_path / "dist.csv"))
    assert dist_run.returncode == 0, dist_run.stderr
    single = fakeface("predict", *common, "--csv", str(tmp_path / "single.csv"))  # no torchrun: one process
    assert single.returncode == 0, single.stderr
    assert dist_run.stderr.count("16 scored, 1 unreadable") == 1  # rank 0 alone reports

    got, want = read_rows(tmp_path / "dist.csv"), read_rows(tmp_path / "single.csv")
    assert len(want) == 17
    assert [r["path"] for r in got] == [r["path"] for r in want]  # each input once, in the same order
    for g, w in zip(got, want):
        assert (g["pred"], g["error"]) == (w["pred"], w["error"])
        if w["error"]:
            assert g["path"].endswith("unreadable.jpg") and g["p_fake"] == ""
        else:
            assert float(g["p_fake"]) == pytest.approx(float(w["p_fake"]), abs=1e-5)
