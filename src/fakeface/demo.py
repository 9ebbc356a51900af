"""``make demo`` / ``fakeface demo``: the shipped default detector scoring the example faces in ``examples/``
(:func:`run_examples_demo`), and ``fakeface demo --train``: the whole training job end to end on synthetic data
(:func:`run_demo`).

The training demo makes its own data when there is none on the machine (:mod:`fakeface.synthetic`):
natural-looking textures as "real", and the same kind of images passed through a generator-like up-sampling
path as "fake". It teaches the cue GAN detectors learn - periodic up-sampling traces - but it is not face data,
and its numbers say nothing about real deepfakes; every file it writes says so (``"data_kind": "synthetic"``).
Point ``FAKEFACE_DEMO_DATA`` (or ``--data``) at a real dataset to use that.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from . import CLASS_NAMES
from .checkpoint import load_checkpoint, save_atomic
from .data import DataError, discover
from .detector import Detector
from .evaluate import evaluate, headline
from .predict import predict_paths
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
    real_size: int  # training size on a real dataset (--data)
    export: str  # what training exports beside best.pt (TrainConfig.export)


FULL = DemoPlan(n_train=500, n_valid=100, n_test=100, size=128, crop=96, epochs=4, batch_size=32, real_size=160,
                export="auto")
# the exports have tests of their own: the suite's demo skips them and trains real faces small
FAST = DemoPlan(n_train=200, n_valid=40, n_test=40, size=96, crop=80, epochs=3, batch_size=16, real_size=96,
                export="none")

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
                          seed=seed, augment={"hflip_p": 0.5}, export=plan.export)
        index = discover(data)
    else:
        say(f"[1/4] using the dataset at {data}")
        index = discover(data)
        if "test" not in index.splits:  # said now, not after training
            raise DataError(f"the demo evaluates on a test split, and {index.describe()} has none: use a dataset "
                            "with a test/ folder (or split column), or `fakeface data split` to make one")
        cfg = TrainConfig(data=str(data), out=str(out / "run"), epochs=plan.epochs if epochs is None else epochs,
                          batch_size=plan.batch_size, image_size=plan.real_size, seed=seed,
                          limit_train=2 * plan.n_train, limit_valid=2 * plan.n_valid, export=plan.export)
    say(f"      {index.describe()}")

    run_dir = out / "run"
    say(f"[2/4] training {cfg.model} for {cfg.epochs} epochs into {run_dir} ...")
    train(cfg, resume=(run_dir / "last.pt").is_file())
    checkpoint = run_dir / "best.pt"

    say("[3/4] evaluating best.pt on the test split ...")
    if synthetic:
        mark_synthetic_checkpoints(run_dir)
    metrics = evaluate(checkpoint, data, out / "eval", split="test", n_boot=200,
                       limit=None if synthetic else 2 * plan.n_test, command=f"fakeface demo --train --out {out}")
    if synthetic:
        mark_synthetic_evaluation(out / "eval")
        metrics = {"data_kind": DATA_KIND_SYNTHETIC, **metrics}
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


# -- what the training demo writes says "synthetic data" where a reader looks first --------------------------------
DATA_KIND_SYNTHETIC = "synthetic"
SYNTHETIC_BANNER = ("SYNTHETIC DATA: this detector was trained and tested on generated textures, not on faces. "
                    "Its numbers show that the pipeline works, not how well it finds generated faces.")


def mark_synthetic_checkpoints(run_dir: str | os.PathLike) -> None:
    """Add ``"data_kind": "synthetic"`` to a run's best.pt and last.pt, so that whatever reads them (card, server,
    page, export) can say so."""
    for name in ("best.pt", "last.pt"):
        path = Path(run_dir) / name
        if path.is_file():
            ckpt = load_checkpoint(path)
            if ckpt.get("data_kind") != DATA_KIND_SYNTHETIC:
                ckpt.pop("path")
                save_atomic({"data_kind": DATA_KIND_SYNTHETIC, **ckpt}, path)


def mark_synthetic_evaluation(eval_dir: str | os.PathLike) -> None:
    """Put ``"data_kind": "synthetic"`` first in an evaluation's metrics.json and run.json, and a banner at the
    top of its report.html."""
    eval_dir = Path(eval_dir)
    for name in ("run.json", "metrics.json"):  # metrics.json last: its presence means a whole evaluation
        path = eval_dir / name
        record = json.loads(path.read_text())
        path.write_text(json.dumps({"data_kind": DATA_KIND_SYNTHETIC, "data_note": SYNTHETIC_BANNER,
                                    **record}, indent=2))
    report = eval_dir / "report.html"
    html = report.read_text(encoding="utf-8")
    banner = (f'<p style="background:#fde68a;border:2px solid #b45309;padding:0.8rem;font-weight:600">'
              f"{SYNTHETIC_BANNER}</p>")
    if banner not in html:
        report.write_text(html.replace("<h1>", banner + "\n<h1>", 1).replace(
            "<title>", "<title>SYNTHETIC DATA - ", 1), encoding="utf-8")


# -- the default detector on the example faces -----------------------------------------------------------------
EXAMPLES_DIR = Path(__file__).resolve().parents[2] / "examples"  # in a source checkout, beside src/
LABELS, EXPECTED, VERDICTS = "labels.csv", "expected.csv", "verdicts.csv"
VERDICT_COLUMNS = ["file", "label", "p_fake", "verdict"]


def read_examples(folder: str | os.PathLike | None = None) -> list[tuple[Path, str]]:
    """(image path, true label) of each example listed in ``folder/labels.csv`` (default: ``examples/``)."""
    folder = Path(folder) if folder is not None else EXAMPLES_DIR
    try:
        with open(folder / LABELS, newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
    except FileNotFoundError:
        raise DataError(f"no example images at {folder} (it has no {LABELS}): run the demo from a source checkout, "
                        "or give a folder of images with a labels.csv (file,label)") from None
    if not rows or not {"file", "label"} <= set(rows[0]):
        raise DataError(f"{folder / LABELS} must have the columns file,label and at least one row")
    bad = [r["label"] for r in rows if r["label"] not in CLASS_NAMES]
    if bad:
        raise DataError(f"{folder / LABELS}: label must be real or fake, got {bad[0]!r}")
    return [(folder / r["file"], r["label"]) for r in rows]


def score_examples(detector, examples: list[tuple[Path, str]]) -> list[dict]:
    """One row per example: ``{"file", "label", "p_fake", "verdict", "error", "path"}`` (verdict None when the
    image could not be read)."""
    rows = predict_paths(detector, [str(p) for p, _ in examples], batch_size=16, workers=0)
    return [{"file": path.name, "label": label, "p_fake": r["p_fake"], "verdict": r["pred"], "error": r["error"],
             "path": str(path)} for (path, label), r in zip(examples, rows)]


def write_verdicts(rows: list[dict], path: str | os.PathLike) -> Path:
    """The verdicts as CSV (file,label,p_fake,verdict; P(fake) to 3 decimals): what examples/expected.csv holds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(VERDICT_COLUMNS)
        for r in rows:
            writer.writerow([r["file"], r["label"], "" if r["p_fake"] is None else f"{r['p_fake']:.3f}",
                             r["verdict"] or f"unreadable: {r['error']}"])
    return path


README_BEGIN, README_END = "<!-- demo:begin -->", "<!-- demo:end -->"


def read_verdicts(path: str | os.PathLike) -> list[dict]:
    """What :func:`write_verdicts` wrote (examples/expected.csv), as CSV rows."""
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def verdicts_markdown(rows: list[dict]) -> str:
    """The README's demo table, from examples/expected.csv's rows (what the shipped default says of each example)."""
    lines = ["| image | true | P(fake) | verdict |", "|---|---|---|---|"]
    for r in rows:
        mark = "" if r["verdict"] == r["label"] else " (wrong)"
        lines.append(f"| {r['file']} | {r['label']} | {r['p_fake'] or '-'} | {r['verdict']}{mark} |")
    right = sum(r["verdict"] == r["label"] for r in rows)
    return "\n".join(lines) + f"\n\n{right} of {len(rows)} right."


def readme_demo_block(readme: str) -> str:
    """The text between the README's demo markers."""
    if readme.count(README_BEGIN) != 1 or readme.count(README_END) != 1:
        raise ValueError(f"the README needs one {README_BEGIN} and one {README_END} line")
    return readme.split(README_BEGIN, 1)[1].split(README_END, 1)[0].strip()


def write_readme_demo_block(readme_path: str | os.PathLike, rows: list[dict]) -> None:
    """Replace the README's demo table with ``rows``' (make_default.py, after it writes expected.csv)."""
    path = Path(readme_path)
    text = path.read_text(encoding="utf-8")
    readme_demo_block(text)  # the markers are there, once each
    head, rest = text.split(README_BEGIN, 1)
    tail = rest.split(README_END, 1)[1]
    path.write_text(f"{head}{README_BEGIN}\n{verdicts_markdown(rows)}\n{README_END}{tail}", encoding="utf-8")


def verdict_table(rows: list[dict], threshold: float) -> list[str]:
    """The printed table: file, true label, P(fake), verdict, and whether it is right."""
    lines = [f"{'image':<32} {'true':<5} {'P(fake)':>8}  verdict (threshold {threshold:.3f})"]
    for r in rows:
        if r["verdict"] is None:
            lines.append(f"{r['file']:<32} {r['label']:<5} {'-':>8}  unreadable: {r['error']}")
        else:
            mark = "right" if r["verdict"] == r["label"] else "WRONG"
            lines.append(f"{r['file']:<32} {r['label']:<5} {r['p_fake']:>8.3f}  {r['verdict']:<5} {mark}")
    return lines


def fakeface_executable() -> str:
    """The ``fakeface`` command of this Python's environment, as a path a user can type."""
    beside = Path(sys.executable).parent / "fakeface"
    found = str(beside) if beside.is_file() else shutil.which("fakeface")
    if found is None:
        return f"{sys.executable} -m fakeface"
    try:
        return os.path.relpath(found) if not os.path.relpath(found).startswith("../..") else found
    except ValueError:  # another drive (Windows)
        return found


def run_examples_demo(out: str | os.PathLike = "demo-run", checkpoint: str | os.PathLike | None = None,
                      examples: str | os.PathLike | None = None, say=print) -> dict:
    """Score the example images with a detector (default: the one shipped in the package), print a table of
    verdicts, write ``out/report.html`` with a Grad-CAM heatmap of each and ``out/verdicts.csv``, and say how
    to start the web page. Returns {"rows", "metrics", "report", "verdicts", "release"}."""
    from .detector import load_detector
    from .explain import explain_image
    from .hub import default_detector_dir, is_model_folder, read_config, release_line
    from .images import load_image
    from .metrics import compute_metrics
    from .report import write_report

    t0 = time.perf_counter()
    out = Path(out)
    source = default_detector_dir() if checkpoint is None else Path(checkpoint)
    release = release_line(source) if is_model_folder(source) else str(source)
    detector = load_detector(source, backend="as-given", device="cpu")  # PyTorch: Grad-CAM needs its gradients
    items = read_examples(examples)
    say(f"Detector: {release}")
    note = read_config(source).get("release", {}).get("note") if is_model_folder(source) else None
    if note:
        say(f"Note: this detector is {note}: its verdicts are a stand-in, not the project's accuracy.")
    say(f"Scoring {len(items)} example faces from {Path(items[0][0]).parent} ...")
    rows = score_examples(detector, items)
    for line in verdict_table(rows, detector.threshold):
        say("  " + line)

    heat_dir = out / "gradcam"
    heat_dir.mkdir(parents=True, exist_ok=True)
    plots = {}
    explainer = detector.members[0]  # an ensemble's heatmap is its first member's
    for r in rows:
        if r["verdict"] is None:
            continue
        heat, _ = explain_image(explainer, load_image(r["path"]))
        png = heat_dir / (Path(r["file"]).stem + ".png")
        heat.save(png)
        plots[f"{r['file']}: true {r['label']}, P(fake) {r['p_fake']:.3f} -> {r['verdict']}"] = png
    scored = [r for r in rows if r["verdict"] is not None]
    metrics = compute_metrics([int(r["label"] == "fake") for r in scored], [r["p_fake"] for r in scored],
                              detector.threshold)
    folder = Path(items[0][0]).parent
    description = {"detector": release, **detector.describe(),
                   "data": f"{len(rows)} example images in {folder} (their sources and licences: its NOTICE)",
                   "heatmaps": "Grad-CAM: red regions pushed the score towards fake"}
    report = write_report(out, metrics, plots, description, "make demo",
                          title="fakeface demo: the default detector on example faces")
    verdicts = write_verdicts(rows, out / VERDICTS)
    right = sum(r["verdict"] == r["label"] for r in scored)
    exe = fakeface_executable()
    say("")
    say(f"{right} of {len(scored)} right in {time.perf_counter() - t0:.0f} s. Report with Grad-CAM heatmaps: "
        f"{report.resolve()}")
    say(f"Score your own photo:   {exe} predict photo.jpg")
    say(f"Start the web page:     {exe} serve     (then open http://127.0.0.1:8000)")
    if Path(exe).parent.name == "bin" and (Path(exe).parent / "activate").is_file():
        say(f"Or put fakeface on PATH first: source {Path(exe).parent / 'activate'}")
    return {"rows": rows, "metrics": metrics, "report": report, "verdicts": verdicts, "release": release}


if __name__ == "__main__":  # `make demo`: python -m fakeface.demo [OUT]
    try:
        run_examples_demo(sys.argv[1] if len(sys.argv) > 1 else "demo-run")
    except (DataError, ValueError, OSError) as e:
        sys.exit(f"error: {e}")
