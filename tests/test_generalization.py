"""The levers of benchmarks/generalization_sweep.py: input filters and the patch model (through checkpoints and ONNX),
fakes made from reals, the fixed data parts, the pre-registered choice, weights-only copies and scoring."""

from __future__ import annotations

import json
import random
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch
import yaml
from PIL import Image, ImageFilter

from conftest import REPO, make_folder_dataset, noise_image
from fakeface import FAKE, REAL
from fakeface.augment import AugmentConfig
from fakeface.checkpoint import load_checkpoint, make_checkpoint, model_from_checkpoint, save_atomic
from fakeface.data import FaceDataset, Sample
from fakeface.export import INPUT_NAME, OUTPUT_NAME, export_onnx
from fakeface.models import WeightsError, create_model, load_trunk_weights
from fakeface.models.efficientnet_lite import EfficientNetLite
from fakeface.models.filters import NPR, HighPass
from fakeface.preprocess import TF_LITE_MEAN, TF_LITE_STD, Normalize, Preprocess
from fakeface.synthfake import synth_fake
from fakeface.train import TrainConfig

sys.path.insert(0, str(REPO / "benchmarks"))
import generalization_sweep as gs  # noqa: E402

SWEEP = str(REPO / "benchmarks" / "generalization_sweep.py")
PRE = Preprocess(input_size=64, eval_size=64, resize=64, mean=TF_LITE_MEAN, std=TF_LITE_STD)


def _trained_looking(model: torch.nn.Module, size: int = 64) -> torch.nn.Module:
    """Batch-norm statistics of real activations and a non-zero head: a fresh model's features vanish, which would
    hide a filter that is not applied."""
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.02)
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.reset_running_stats()
                m.momentum = None  # a plain average over the batches below
        model.train()(torch.randn(4, 3, size, size, generator=g))
    return model.eval()


@pytest.mark.parametrize("name,kwargs", [
    ("efficientnet_lite0", {"input_filter": "npr"}),
    ("efficientnet_lite0", {"input_filter": "highpass"}),
    ("efficientnet_lite0", {"patch_stages": 3}),
    ("efficientnet_lite0", {"patch_stages": 2, "input_filter": "npr"}),
])
def test_filtered_and_patch_models_round_trip_through_checkpoint_and_onnx(name, kwargs, tmp_path):
    model = _trained_looking(create_model(name, **kwargs))
    path = tmp_path / "m.pt"
    save_atomic(make_checkpoint(model, name, kwargs, PRE), path)
    rebuilt, pre = model_from_checkpoint(load_checkpoint(path))
    pixels = torch.from_numpy(np.stack([np.asarray(noise_image(i, 64)) for i in range(3)]).transpose(0, 3, 1, 2))
    x = Normalize(pre)(pixels)
    with torch.no_grad():
        want, got = model(x), rebuilt(x)
        plain = create_model(name, **{k: v for k, v in kwargs.items() if k != "input_filter"})
        plain.load_state_dict(model.state_dict())
        unfiltered = plain.eval()(x)
    assert torch.allclose(want, got, atol=1e-5)
    if "input_filter" in kwargs:  # the filter is applied, and the weights alone are the unfiltered model's
        assert not torch.allclose(want, unfiltered, atol=1e-3)
    export_onnx(path, tmp_path / "m.onnx")
    session = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
    onnx_logits = session.run([OUTPUT_NAME], {INPUT_NAME: pixels.numpy().astype(np.float32)})[0]
    assert np.allclose(onnx_logits, want.squeeze(1).numpy(), atol=1e-4)


def test_inception_resnet_takes_an_input_filter_and_keeps_its_keys(tmp_path):
    model = _trained_looking(create_model("inception_resnet_v1", input_filter="npr"), 96)
    assert set(model.state_dict()) == set(create_model("inception_resnet_v1").state_dict())
    save_atomic(make_checkpoint(model, "inception_resnet_v1", {"input_filter": "npr"}, PRE), tmp_path / "m.pt")
    rebuilt, _ = model_from_checkpoint(load_checkpoint(tmp_path / "m.pt"))
    x = torch.randn(2, 3, 96, 96)
    with torch.no_grad():
        assert torch.allclose(model(x), rebuilt(x), atol=1e-5)


def test_no_filter_builds_todays_model_and_a_bad_filter_is_refused():
    assert type(create_model("efficientnet_lite0")) is EfficientNetLite
    assert type(create_model("efficientnet_lite0", input_filter="none")) is EfficientNetLite
    with pytest.raises(ValueError, match="unknown input_filter 'srm'"):
        create_model("efficientnet_lite0", input_filter="srm")
    with pytest.raises(ValueError, match="patch_stages"):
        create_model("efficientnet_lite0", patch_stages=7)


def test_filters_remove_what_they_should():
    cells = torch.randn(2, 3, 8, 8).repeat_interleave(2, 2).repeat_interleave(2, 3)  # constant on 2x2 cells
    assert NPR()(cells).abs().max() == 0
    assert NPR()(torch.randn(2, 3, 16, 16)).abs().max() > 0
    flat = torch.full((1, 3, 20, 20), 0.7)
    assert HighPass()(flat).abs().max() < 1e-5
    assert HighPass()(torch.randn(1, 3, 20, 20)).abs().mean() > 0.1


def test_patch_model_loads_the_published_trunk_it_keeps(tmp_path):
    full = create_model("efficientnet_lite0")
    torch.save(full.state_dict(), tmp_path / "published.pt")
    patch = create_model("efficientnet_lite0", patch_stages=3)
    load_trunk_weights(patch, "efficientnet_lite0", tmp_path / "published.pt")
    key = "_blocks.4._project_conv.weight"
    assert torch.equal(patch.state_dict()[key], full.state_dict()[key])
    assert "_blocks.5._project_conv.weight" not in patch.state_dict()
    # the full model still refuses a file with keys it does not have
    state = {**full.state_dict(), "_blocks.99.x": torch.zeros(1)}
    torch.save(state, tmp_path / "odd.pt")
    with pytest.raises(WeightsError, match="_blocks.99.x"):
        load_trunk_weights(full, "efficientnet_lite0", tmp_path / "odd.pt")


# -- fakes made from reals ------------------------------------------------------------------------------------
def test_synth_fake_is_seeded_same_size_and_changes_the_image():
    img = noise_image(3, 96).filter(ImageFilter.GaussianBlur(2))
    a, b = synth_fake(img, random.Random(1)), synth_fake(img, random.Random(1))
    c = synth_fake(img, random.Random(2))
    assert a.size == img.size and a.mode == "RGB"
    assert np.array_equal(np.asarray(a), np.asarray(b))
    assert not np.array_equal(np.asarray(a), np.asarray(c))
    assert not np.array_equal(np.asarray(a), np.asarray(img))
    odd = synth_fake(noise_image(4, 75), random.Random(0))  # a side the down-sampling factor does not divide
    assert odd.size == (75, 75)


def _items(folder, augment):
    samples = [Sample(str(p), REAL) for p in sorted((folder / "train" / "real").glob("*.jpg"))]
    samples += [Sample(str(p), FAKE) for p in sorted((folder / "train" / "fake").glob("*.jpg"))]
    ds = FaceDataset(samples, PRE, augment, seed=5)
    return samples, [ds[i] for i in range(len(samples))]


def test_only_training_reals_become_fakes(folder_dataset):
    samples, items = _items(folder_dataset, AugmentConfig(synth_fake_p=1.0))
    assert all(it["label"] == FAKE for it in items)  # every real turned, every fake stayed
    _, again = _items(folder_dataset, AugmentConfig(synth_fake_p=1.0))
    assert all(torch.equal(a["image"], b["image"]) for a, b in zip(items, again))  # seeded by the dataset
    _, evaluated = _items(folder_dataset, None)  # evaluation views never change a label
    assert [it["label"] for it in evaluated] == [s.label for s in samples]
    _, off = _items(folder_dataset, AugmentConfig())
    _, zero = _items(folder_dataset, AugmentConfig(synth_fake_p=0.0))
    assert [it["label"] for it in off] == [s.label for s in samples]
    assert all(torch.equal(a["image"], b["image"]) for a, b in zip(off, zero))
    with pytest.raises(ValueError, match="synth_fake_p"):
        AugmentConfig(synth_fake_p=1.5)


# -- data parts, thresholds, the rule -------------------------------------------------------------------------
def test_hash_parts_are_stable_disjoint_and_near_their_fractions(tmp_path):
    names = [f"{i:016x}.jpg" for i in range(3000)]
    parts = [gs.hash_part(n, gs.STYLEGAN2_PARTS) for n in names]
    assert parts == [gs.hash_part("/elsewhere/" + n, gs.STYLEGAN2_PARTS) for n in reversed(names)][::-1]
    share = {p: parts.count(p) / len(parts) for p, _ in gs.STYLEGAN2_PARTS}
    assert abs(share["train"] - 0.4) < 0.04 and abs(share["select"] - 0.3) < 0.04
    for kind, n in (("stylegan2/fake", 10), ("unsplash/real", 8)):
        (tmp_path / kind).mkdir(parents=True)
        for i in range(n):
            noise_image(i, 16).save(tmp_path / kind / f"{kind[0]}{i}.jpg")
    found = gs.cross_parts(tmp_path)
    assert set(found) == {"stylegan2_train", "stylegan2_select", "stylegan2_report", "unsplash_select",
                          "unsplash_report"}
    for kind, n in (("stylegan2", 10), ("unsplash", 8)):
        lists = [set(v) for k, v in found.items() if k.startswith(kind)]
        assert sum(map(len, lists)) == n and len(set().union(*lists)) == n


def test_reals_threshold_flags_at_most_the_target_of_each_source():
    a, b = np.linspace(-3, 1, 100), np.linspace(-1, 2, 50)
    t = gs.reals_threshold([a, b], 0.02)
    assert (a >= t).mean() <= 0.02 and (b >= t).mean() <= 0.02
    lower = np.nextafter(t, -np.inf)  # the lowest such: one step lower flags too many in one source
    assert max((a >= lower).mean(), (b >= lower).mean()) > 0.02
    ties = np.array([0.1, 0.2, 0.3, 0.3])
    assert (ties >= gs.reals_threshold([ties], 0.02)).mean() == 0


def _result(variant, seed, valid_auc, sg2_auc, fpr, flops, trains_on=()):
    return {"variant": variant, "seed": seed, "trains_on": list(trains_on), "flops": flops,
            "valid": {"auc": valid_auc, "acc_balanced": 0.9, "acc_reals": 0.9},
            "stylegan2_select": {"auc": sg2_auc, "caught_balanced": 0.6, "caught_reals": 0.7},
            "unsplash_select": {"fpr_balanced": fpr, "fpr_reals": 0.02}}


def test_the_rule_picks_by_the_numbers_it_was_written_for():
    rows = []
    for s in range(3):
        rows += [_result("base", s, 0.97, 0.90, 0.02, 5e8),
                 _result("flags-reals", s, 0.98, 0.99, 0.05, 5e8),  # best score, too many Unsplash reals flagged
                 _result("worse-in-domain", s, 0.95, 0.98, 0.01, 5e8),  # valid below base - 0.01
                 _result("good", s, 0.975, 0.95, 0.02, 5e8),
                 _result("good-cheap", s, 0.9745, 0.9502, 0.02, 1e8),  # within 0.001 of good: fewer FLOPs wins
                 _result("trained-on-sg2", s, 0.99, 0.999, 0.0, 1e8, ["stylegan2"])]
    rows += [_result("unfinished", 0, 0.99, 0.999, 0.0, 1e8)]
    chosen = gs.choose(rows, n_seeds=3)
    assert chosen["variant"] == "good-cheap" and not chosen["fallback"] and chosen["policy"] == "reals"
    assert set(chosen["kept"]) == {"base", "good", "good-cheap"}
    # no variant meets the FPR condition: the fallback drops it, keeping the valid floor
    worse = [dict(r, unsplash_select={"fpr_balanced": 0.2, "fpr_reals": 0.02}) for r in rows]
    fallback = gs.choose(worse, n_seeds=3)
    assert fallback["fallback"] and fallback["variant"] == "flags-reals"
    assert gs.choose(rows[-1:], n_seeds=3) is None
    # the same recipe by another code path (report_only in the variants file) is measured, never chosen
    same = [dict(r, variant="good-cheap-other-path") for r in rows if r["variant"] == "good-cheap"]
    for r in same:
        r["valid"] = dict(r["valid"], auc=0.976)
    variants = {"good-cheap-other-path": {"report_only": True, "gpu_augment": True}, "good": {}}
    skipped = gs.choose(rows + same, n_seeds=3, report_only=gs.report_only_variants(variants))
    assert gs.choose(rows + same, n_seeds=3)["variant"] == "good-cheap-other-path"
    assert skipped["variant"] == "good-cheap" and "good-cheap-other-path" not in skipped["kept"]


def test_every_shipped_variant_is_a_train_config_the_sweep_can_run():
    base = yaml.safe_load((REPO / "configs" / "experiments" / "generalization-base.yaml").read_text())
    variants = yaml.safe_load((REPO / "benchmarks" / "generalization_variants.yaml").read_text())
    for name, variant in variants.items():
        recipe, sources = gs.variant_recipe(base, variant)
        TrainConfig.from_dict(recipe)  # a key the sweep reads (sources, report_only) would be refused here
        assert sources == (["stylegan2"] if name == "plus-stylegan2" else [])
    assert gs.report_only_variants(variants) == {"gpu-augment"}


# -- scoring runs made elsewhere ----------------------------------------------------------------------------------
@pytest.mark.slow
def test_score_runs_scores_and_packs_a_checkpoint(tmp_path):
    data = make_folder_dataset(tmp_path / "ds", per_class=4, size=64)
    for kind in ("stylegan2/fake", "unsplash/real"):
        (tmp_path / "cross" / kind).mkdir(parents=True)
        for i in range(12):
            Image.fromarray(np.asarray(noise_image(50 + i, 64))).save(tmp_path / "cross" / kind / f"{kind[0]}{i}.jpg")
    run = tmp_path / "student"
    model = _trained_looking(create_model("efficientnet_lite0", patch_stages=2))
    save_atomic(make_checkpoint(model, "efficientnet_lite0", {"patch_stages": 2}, PRE), run / "best.pt")
    res = subprocess.run([sys.executable, SWEEP, "--score-runs", str(run), "--data", str(data), "--cross",
                          str(tmp_path / "cross"), "--results-dir", str(tmp_path / "res"), "--workers", "0",
                          "--pack-prefix", "student-weights"], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr[-2000:]
    scored = json.loads((tmp_path / "res" / "scored.json").read_text())[0]
    assert scored["variant"] == "student" and 0 <= scored["stylegan2_select"]["auc"] <= 1
    assert 0 <= scored["unsplash_report"]["fpr_reals"] <= 1 and scored["flops"] > 0
    assert (scored["unsplash_select"]["fpr_reals"] <= gs.REALS_FPR and scored["valid"]["fpr_reals"] <= gs.REALS_FPR)
    with tarfile.open(tmp_path / "res" / "student-weights-1.tar") as tar:
        assert tar.getnames() == ["scored.json", "student-0.pt"]
        tar.extractall(tmp_path / "unpacked", filter="data")
    model_from_checkpoint(load_checkpoint(tmp_path / "unpacked" / "student-0.pt"))
    assert "| student | 1 |" in res.stdout

    # runs of two recipes named one by one, tabulated side by side in a doc that says how it was made
    cmd = [sys.executable, SWEEP, "--score-runs", str(run), str(run / "best.pt"), "--data", str(data), "--cross",
           str(tmp_path / "cross"), "--results-dir", str(tmp_path / "two"), "--workers", "0", "--limit-score", "4"]
    res = subprocess.run([*cmd, "--variant", "student", "teacher", "--doc", str(tmp_path / "two.md")],
                         capture_output=True, text=True)
    assert res.returncode == 0, res.stderr[-2000:]
    doc = (tmp_path / "two.md").read_text()
    assert "| student | 1 |" in doc and "| teacher | 1 |" in doc
    assert "Made by `python benchmarks/generalization_sweep.py --score-runs" in doc
    assert [r["variant"] for r in json.loads((tmp_path / "two" / "scored.json").read_text())] == ["student", "teacher"]
    bad = subprocess.run([*cmd, "--variant", "a", "b", "c"], capture_output=True, text=True)
    assert bad.returncode != 0 and "one name for all runs or one per run (2), got 3" in bad.stderr


def test_the_stylegan2_manifest_adds_training_fakes_and_keeps_the_splits(folder_dataset, tmp_path):
    from fakeface.data import discover

    extra = []
    for i in range(3):
        extra.append(tmp_path / f"sg2-{i}.jpg")
        noise_image(90 + i, 32).save(extra[-1])
    before = discover(folder_dataset).counts()
    after = discover(gs.write_manifest(tmp_path / "m" / "manifest.csv", str(folder_dataset), [str(p) for p in extra]))
    assert after.counts()["train"] == {"real": before["train"]["real"], "fake": before["train"]["fake"] + 3}
    assert after.counts()["valid"] == before["valid"] and after.counts()["test"] == before["test"]
    assert {str(p) for p in extra} <= {s.path for s in after.splits["train"]}


def test_committed_parts_are_what_the_sweep_writes_and_held_out_means_held_out(sample_root, tmp_path):
    """configs/data/ holds the parts as list files and the manifest the shipped default trains on: written again
    from ../shared they are the same bytes, and the held-out suite names no image that manifest trains on."""
    from fakeface.benchmark import read_suite
    from fakeface.data import discover

    committed = REPO / "configs" / "data"
    written = gs.write_parts(tmp_path / "data", str(sample_root), sample_root.parent / "cross-generator")
    assert sorted(p.name for p in written) == sorted(p.name for p in committed.iterdir())

    def named(folder: Path, name: str) -> list:  # relative to another folder each, so compare what they name
        if name.endswith(".txt"):
            return [(folder / x).resolve() for x in (folder / name).read_text().splitlines()[1:]]
        return [(split, Path(s.path).resolve(), s.label) for split, ss in discover(folder / name).splits.items()
                for s in ss]

    for path in written:
        assert named(path.parent, path.name) == named(committed, path.name), path.name
    trained = {p for split, p, _ in named(committed, "faces140k-plus-stylegan2.csv") if split == "train"}
    suite = read_suite(REPO / "configs" / "benchmarks" / "shared-heldout.yaml")
    scored = {Path(s.path).resolve() for bset in suite.sets for s in bset.samples}
    assert len(scored) > 800 and not scored & trained
    generator = next(s for s in suite.sets if s.kind == "generator")
    assert sum(s.label == FAKE for s in generator.samples) == len(
        (committed / "stylegan2-report.txt").read_text().splitlines()) - 1
