"""load_detector: what it accepts, which backend it chooses, and the threshold it applies."""

from __future__ import annotations

import errno
import shutil

import pytest

import fakeface.detector as detector_module
import fakeface.export as export_module
from fakeface.checkpoint import load_checkpoint
from fakeface.detector import RESOLVERS, Detector, choose_backend, load_detector


def test_resolvers_supply_a_default_and_their_own_detectors(tiny_run, monkeypatch):
    _, best = tiny_run
    assert load_detector(None, precision="fp32").checkpoint.get("path")  # the packaged default answers None
    monkeypatch.setattr(detector_module, "RESOLVERS", [])
    with pytest.raises(ValueError, match="no detector given"):
        load_detector(None)
    built = Detector(best, precision="fp32")
    monkeypatch.setattr(detector_module, "RESOLVERS", [
        lambda given: [best] if given is None else None,  # "the default detector"
        lambda given: [built] if given is not None and given.name == "packaged" else None,  # a format of its own
    ])
    default = load_detector(precision="fp32")
    assert default.checkpoint["path"] == str(best) and default.threshold == load_checkpoint(best)["threshold"]
    assert load_detector("packaged") is built
    assert len(RESOLVERS) == 1  # the module's own list (the model-folder resolver) is untouched outside this test


def test_a_first_use_export_that_cannot_be_made_falls_back_to_pytorch(tiny_run, tmp_path, monkeypatch):
    run = tmp_path / "run"
    run.mkdir()
    shutil.copy(tiny_run[1], run / "best.pt")

    def read_only(checkpoint):
        raise OSError(errno.EROFS, "Read-only file system", str(run / "best.onnx"))

    monkeypatch.setattr(export_module, "export_beside", read_only)
    choice = choose_backend(run, make_export=True)
    assert choice.backend == "pytorch" and "could be made" in choice.reason and "Read-only" in choice.reason
    assert choice.notable and not (run / "best.onnx").exists()
    assert choose_backend(run).backend == "pytorch"  # without make_export nothing is tried
