"""``fakeface demo``: the whole job end to end - data, training, evaluation, report, prediction.

With no dataset on the machine the demo makes its own (:mod:`fakeface.synthetic`): natural-looking textures
as "real", and the same kind of images passed through a generator-like up-sampling path as "fake". It teaches
the cue GAN detectors learn - periodic up-sampling traces - but it is not face data, and its numbers say
nothing about real deepfakes. Point ``FAKEFACE_DEMO_DATA`` (or ``--data``) at a real dataset to use that.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

from .data import DataError, discover
from .evaluate import evaluate, headline
from .predict import Detector, predict_paths
from .train import TrainConfig, train


@dataclass(frozen=True)
class DemoPlan:
    """Sizes of one demo run; ``fast`` is the one the test suite runs."""

    n_train: int  # per class
    n_valid: int
    n_test: int
    size: int  # synthetic image side
    crop: int  # training crop (native resolution: resizing would blur the traces)
    epochs: int
    batch_size: int


FULL = DemoPlan(n_train=500, n_valid=100, n_test=100, size=128, crop=96, epochs=4, batch_size=32)
FAST = DemoPlan(n_train=200, n_valid=40, n_test=40, size=96, crop=80, epochs=3, batch_size=16)

SYNTHETIC_NOTE = (
    "The demo data is SYNTHETIC: 'real' images are generated textures with natural-image (1/f) statistics, "
    "'fake' images are the same kind of textures passed through a GAN-like up-sampling path, which leaves the "
    "periodic spectral traces that real detectors pick up. It shows the whole pipeline working, not how well "
    "a detector does on real faces."
)
REAL_DATA_HINT = "To train on real data:  fakeface train --data /path/to/real_vs_fake --out runs/140k"


def run_demo(out: str | os.PathLike = "demo-run", data: str | os.PathLike | None = None, fast: bool = False,
             epochs: int | None = None, seed: int = 0, say=print) -> dict:
    """Run the demo into ``out``; returns {"metrics", "report", "checkpoint", "predictions", "synthetic"}."""
    from .synthetic import make_demo_dataset

    t0 = time.perf_counter()
    out = Path(out)
    plan = FAST if fast else FULL
    data = data or os.environ.get("FAKEFACE_DEMO_DATA") or None
    synthetic = data is None
    if synthetic:
        data = out / "data"
        say(SYNTHETIC_NOTE)
        if not (data / "README.txt").is_file():
            say(f"[1/4] making the synthetic demo dataset in {data} ...")
            make_demo_dataset(data, n_train=plan.n_train, n_valid=plan.n_valid, n_test=plan.n_test,
                              size=plan.size, seed=seed)
        cfg = TrainConfig(data=str(data), out=str(out / "run"), epochs=plan.epochs if epochs is None else epochs,
                          batch_size=plan.batch_size, image_size=plan.crop, resize="native", eval_size=plan.size,
                          lr=1e-3, warmup_epochs=0.3, weight_decay=1e-4, model_kwargs={"dropout": 0.2},
                          seed=seed, augment={"hflip_p": 0.5})
        index = discover(data)
    else:
        say(f"[1/4] using the dataset at {data}")
        index = discover(data)
        if "test" not in index.splits:  # said now, not after training
            raise DataError(f"the demo evaluates on a test split, and {index.describe()} has none: use a dataset "
                            "with a test/ folder (or split column), or `fakeface data split` to make one")
        cfg = TrainConfig(data=str(data), out=str(out / "run"), epochs=plan.epochs if epochs is None else epochs,
                          batch_size=plan.batch_size, image_size=160, seed=seed,
                          limit_train=2 * plan.n_train, limit_valid=2 * plan.n_valid)
    say(f"      {index.describe()}")

    run_dir = out / "run"
    say(f"[2/4] training {cfg.model} for {cfg.epochs} epochs into {run_dir} ...")
    train(cfg, resume=(run_dir / "last.pt").is_file())
    checkpoint = run_dir / "best.pt"

    say("[3/4] evaluating best.pt on the test split ...")
    metrics = evaluate(checkpoint, data, out / "eval", split="test", n_boot=200,
                       limit=None if synthetic else 2 * plan.n_test, command=f"fakeface demo --out {out}")
    say("      " + headline(metrics))

    say("[4/4] predicting a few test images ...")
    test = index.splits["test"]
    picks = [s for s in test if s.label == 0][:3] + [s for s in test if s.label == 1][:3]
    detector = Detector(checkpoint)
    rows = list(predict_paths(detector, [s.path for s in picks], batch_size=8, workers=0,
                              labels=[s.label for s in picks]))
    for r in rows:
        verdict = f"P(fake) {r['p_fake']:.3f}  -> {r['pred']}" if r["error"] is None else f"unreadable: {r['error']}"
        say(f"      {Path(r['path']).name:<16} true {r['label']:<4}  {verdict}")

    report = out / "eval" / "report.html"
    minutes = (time.perf_counter() - t0) / 60
    say("")
    say(f"Demo finished in {minutes:.1f} min. Report: {report.resolve()}")
    if synthetic:
        say("Remember: synthetic data (see above) - the numbers show the pipeline works, not real-world accuracy.")
    say(REAL_DATA_HINT)
    return {"metrics": metrics, "report": report, "checkpoint": checkpoint, "predictions": rows,
            "synthetic": synthetic}
