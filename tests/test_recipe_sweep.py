"""benchmarks/recipe_sweep.py: variants merged over the base config, runs in parallel, a table of what they measured."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import yaml

from conftest import REPO

pytestmark = pytest.mark.slow
SWEEP = str(REPO / "benchmarks" / "recipe_sweep.py")


def test_sweep_tabulates_each_variant_and_names_the_failed(tiny_run, tmp_path):
    data, _ = tiny_run
    base, variants = tmp_path / "base.yaml", tmp_path / "variants.yaml"
    base.write_text(yaml.safe_dump({"epochs": 1, "batch_size": 8, "model": "efficientnet_lite0", "image_size": 64,
                                    "precision": "fp32", "export": "none",
                                    "augment": {"hflip_p": 0.5, "noise_std": [0.0, 0.02]}}))
    variants.write_text(yaml.safe_dump({"base": {}, "noisy": {"augment": {"noise_p": 0.5}}, "broken": {"lr": -1}},
                                       sort_keys=False))
    out, doc = tmp_path / "sweep", tmp_path / "sweep.md"
    res = subprocess.run([sys.executable, SWEEP, "--base", str(base), "--variants", str(variants), "--data", str(data),
                          "--seeds", "0", "--jobs", "2", "--workers", "0", "--out", str(out), "--doc", str(doc)],
                         capture_output=True, text=True, cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-2000:]
    text = doc.read_text()
    for name in ("base", "noisy"):
        r = json.loads((out / f"{name}-s0" / "sweep.json").read_text())
        assert f"| {name} | 1 | {r['plain']['valid_auc']:.3f} | {r['tta']['valid_auc']:.3f} | " \
               f"{r['plain']['test_acc']:.3f} | {r['plain']['test_auc']:.3f} |" in text
        assert 0 <= r["plain"]["test_acc"] <= 1 and -1 <= r["jpeg50_auc_change"] <= 1
    # augment is merged key by key: the variant keeps the base's flips and noise range
    spec = json.loads((out / "noisy-s0" / "spec.json").read_text())
    assert spec["overrides"]["augment"] == {"hflip_p": 0.5, "noise_std": [0.0, 0.02], "noise_p": 0.5}
    assert "Failed or stopped before the end: broken-s0" in text and "| broken |" not in text
    assert "lr" in (out / "broken-s0" / "sweep.log").read_text()  # the child's error is kept
    # the saved results tabulate to the same table
    again = tmp_path / "again.md"
    assert subprocess.run([sys.executable, SWEEP, "--variants", str(variants), "--base", str(base), "--results",
                           str(out / "sweep.json"), "--doc", str(again)], cwd=tmp_path).returncode == 0
    table = [line for line in text.splitlines() if line.startswith("| ")]
    assert table and table == [line for line in again.read_text().splitlines() if line.startswith("| ")]
