"""Progress lines: the remaining time covers the work that follows the loop (validation after an epoch)."""

from __future__ import annotations

import fakeface.progress as progress_module
from fakeface.progress import Progress, progress_callback


def test_eta_includes_the_validation_after_the_epoch(monkeypatch, capsys):
    clock = iter([0.0, 10.0, 10.0])  # start, then two reads at 10 s: 10 of 40 images in 10 s
    monkeypatch.setattr(progress_module.time, "perf_counter", lambda: next(clock))
    bar = Progress(40, "epoch 1/1", every=1, after_items=30, after_cost=1 / 3)
    bar.update(10, "loss 0.5")
    # 30 training images left at 1 s each, then 30 validation images at a third of that
    assert bar.eta() == 30 + 10
    assert "epoch 1/1 10/40 loss 0.5 eta 40s" in capsys.readouterr().err


def test_short_or_piped_runs_get_no_progress():
    callback, close = progress_callback(10, "scoring")  # stderr is not a terminal under pytest
    assert callback is None
    close()
