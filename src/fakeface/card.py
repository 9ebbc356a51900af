"""``fakeface card RUN_DIR``: a model card (MODEL_CARD.md) written from what the run folder records.

Every number comes from a file: the checkpoint (model, preprocessing, history, threshold, calibration), the
run's config.yaml, and the ``metrics.json`` of each evaluation (``fakeface evaluate --out RUN_DIR/eval-...``).
Where something was not measured the card says so, and names the command that would measure it.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from . import __version__
from .benchmark import benchmark_table_markdown, find_benchmarks
from .checkpoint import ENSEMBLE_CALIBRATION, CheckpointError, ensemble_members, load_checkpoint
from .data import DataError, class_counts, discover
from .detector import ensemble_threshold
from .files import write_text_atomic
from .models import create_model
from .text import fmt, md_table, with_ci

__all__ = ["write_card", "read_evaluation", "fmt", "md_table", "with_ci"]  # benchmarks/accuracy.py imports all five


def find_evaluations(run_dir: Path) -> list[Path]:
    """metrics.json of the run folder itself and of its sub-folders (one level), sorted."""
    found = [run_dir / "metrics.json"] if (run_dir / "metrics.json").is_file() else []
    return found + sorted(p for p in run_dir.glob("*/metrics.json"))


def read_evaluation(path: Path) -> dict:
    """An evaluation's metrics.json; ValueError naming the file when it is not one."""
    try:
        m = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as e:
        raise ValueError(f"{path}: not a metrics.json written by fakeface evaluate ({e})") from None
    if not isinstance(m, dict) or "accuracy" not in m:
        raise ValueError(f"{path}: not a metrics.json written by fakeface evaluate (no accuracy in it)")
    return m


def _data_section(ckpt: dict) -> str:
    root = ckpt.get("data")
    lines = [f"- Data: `{root}`"]
    try:
        index = discover(root)
    except (DataError, TypeError, OSError):
        return "\n".join(lines + ["- Split sizes: not available (the data is not at this path on this machine)."])
    rows = [[split, class_counts(s)["real"], class_counts(s)["fake"]] for split, s in sorted(index.splits.items())]
    lines.append(f"- Layout: {index.layout}")
    lines.append(f"- Labels: {index.labels}")
    skipped = len(ckpt.get("skipped") or {})
    lines.append(f"- Unreadable files skipped in training: {skipped}")
    return "\n".join(lines) + "\n\n" + md_table(["split", "real", "fake"], rows)


def _evaluation_section(path: Path, m: dict) -> str:
    imgs = m.get("images", {})
    out = [f"### `{path.parent.name}` ({imgs.get('split', '?')} split, {m.get('n')} images, "
           f"{imgs.get('skipped', 0)} unreadable)", ""]
    rows = [[name, with_ci(m, key)] for name, key in (
        ("accuracy", "accuracy"), ("ROC-AUC", "roc_auc"), ("average precision", "average_precision"),
        ("precision (fake)", "precision"), ("recall (fake)", "recall"), ("F1", "f1"), ("equal error rate", "eer"),
        ("TPR at 1 % FPR", "tpr_at_fpr_1"), ("TPR at 5 % FPR", "tpr_at_fpr_5"),
        ("expected calibration error", "ece"))]
    out.append(md_table(["metric", "value [bootstrap 95 % interval]"], rows))
    if m.get("robustness"):
        out += ["", "Robustness (both classes perturbed alike):", "",
                md_table(["perturbation", "level", "accuracy", "ROC-AUC", "ROC-AUC change"],
                         [[r["perturbation"], f"{r['level']:g}", fmt(r["accuracy"]), fmt(r["roc_auc"]),
                           fmt(r["roc_auc_change"])] for r in m["robustness"]])]
    if m.get("groups"):
        g = m["groups"]
        out += ["", f"By `{g['column']}`:", "",
                md_table(["value", "n", "accuracy", "real accuracy", "fake accuracy", "ROC-AUC"],
                         [[k, v["n"], fmt(v["accuracy"]), fmt(v["real_accuracy"]), fmt(v["fake_accuracy"]),
                           fmt(v["roc_auc"])] for k, v in g["by_value"].items()])]
    return "\n".join(out)


def benchmark_section(run_dir: Path) -> str:
    """The table of each benchmark run into the run folder (``fakeface benchmark --out RUN/benchmark``), if any."""
    return "".join(f"\n\n### Benchmark `{r['suite_name']}` (`{p}`)\n\n{benchmark_table_markdown(r)}"
                   for p, r in find_benchmarks(run_dir))


def _limits(evaluations: list[tuple[Path, dict]]) -> str:
    rob = [r for _, m in evaluations for r in m.get("robustness", [])]
    compression = [r for r in rob if r["perturbation"] in ("jpeg", "resize")]
    if compression:
        worst = min(compression, key=lambda r: r["roc_auc"] if r["roc_auc"] is not None else 1.0)
        heavy = (f"Measured: the worst ROC-AUC under re-compression or rescaling was {fmt(worst['roc_auc'])} "
                 f"({worst['perturbation']}={worst['level']:g}, change {fmt(worst['roc_auc_change'])}).")
    else:
        heavy = ("Not measured for this run: `fakeface evaluate ... --perturb jpeg=90,70,50 --perturb "
                 "resize=0.5,0.75` measures it.")
    widths = [m["bootstrap"]["roc_auc"][1] - m["bootstrap"]["roc_auc"][0] for _, m in evaluations
              if m.get("bootstrap", {}).get("roc_auc")]
    small = (f" The test sets here are small: the ROC-AUC interval is {max(widths):.3f} wide."
             if widths else "")
    return f"""- **Generators not seen in training.** A detector learns the traces of the generators in its training
  data (here: StyleGAN faces against FFHQ photos, if trained on the 140k set). Images from other generators
  (diffusion models, newer GANs, face swaps) may pass as real. Fine-tune on them (`fakeface train --init`),
  which re-scores the old test split so forgetting is visible.
- **Non-face images and uncropped photos.** It was trained on aligned face crops; anything else is out of
  distribution. For ordinary photos use `--detect-faces`, which crops faces like the training data.
- **Heavy compression and rescaling** remove the traces it relies on. {heavy}
- **Small evaluation sets** give wide intervals; compare models by their intervals, not single numbers.{small}
- **Probabilities** are calibrated on the validation split only; another distribution needs re-calibration."""


ETHICS = """- A verdict is evidence, not proof: never act against a person on this score alone. Both errors harm
  people - a real photo flagged as fake discredits its owner; a fake passed as real lends it credibility.
  Choose the threshold policy for the cost of each (`fakeface calibrate --policy fpr=0.01` caps the share of
  real faces flagged).
- Error rates can differ between groups of people (age, skin tone, gender) and image sources. Measure it on
  labelled data with `fakeface evaluate --group-by COLUMN` before deployment; this card reports only what was
  measured.
- Face images are personal data: the server keeps no upload unless `--keep-uploads` is set.
- Detectors and generators co-evolve; re-evaluate on current generators regularly."""


def _ensemble_threshold(run_dir: Path, members: list[dict]) -> str:
    """The threshold an ensemble run is judged at (:func:`fakeface.detector.ensemble_threshold`), in words."""
    try:
        chosen = ensemble_threshold(members, run_dir)
    except CheckpointError:  # a calibration.json that cannot be read: predict refuses it, the card says so
        chosen = None
    if chosen is not None and chosen.record is not None:
        r = chosen.record
        return (f"{fmt(r['threshold'])} ({r.get('threshold_policy')}, fitted on the ensemble's own scores of "
                f"{r.get('n_valid')} validation images: FPR {fmt(r.get('fpr'))}, TPR {fmt(r.get('tpr'))})")
    mean = f"{fmt(ensemble_threshold(members).threshold)} (the mean of the members')"
    if chosen is not None and not chosen.stale:
        return mean
    return (f"{mean}; {run_dir / ENSEMBLE_CALIBRATION} no longer fits the members or cannot be read: "
            "`fakeface calibrate` refits it")


def write_card(run_dir: str | os.PathLike, out: str | os.PathLike | None = None,
               evaluations: list[str | os.PathLike] | None = None) -> Path:
    """Write ``MODEL_CARD.md`` for the run in ``run_dir`` (its best.pt) and return its path. For an ensemble run
    (``members: N``) the card describes the members side by side (values joined by " / ") and the rule that
    combines them; the recipe and data are the first member's, which all share."""
    run_dir = Path(run_dir)
    members = [load_checkpoint(m) for m in ensemble_members(run_dir)] or [load_checkpoint(run_dir)]
    ckpt = members[0]

    def each(get, digits: int | None = None) -> str:
        values = [get(m) for m in members]
        return " / ".join(str(v) if digits is None or v is None else fmt(v, digits) for v in values)

    paths = [Path(p) / "metrics.json" if Path(p).is_dir() else Path(p) for p in evaluations or []]
    for p in paths:
        if not p.is_file():
            raise FileNotFoundError(f"no metrics.json at {p} (write one with fakeface evaluate --out)")
    evals = [(p, read_evaluation(p)) for p in paths]  # asked for by name: one that cannot be read is an error
    for p in [] if paths else find_evaluations(run_dir):  # found in the run folder: one that cannot be read is skipped
        try:
            evals.append((p, read_evaluation(p)))
        except ValueError as e:
            print(f"card: skipped {e}", file=sys.stderr)
    name, pre, cfg = ckpt["model"]["name"], ckpt["preprocess"], ckpt.get("train_config") or {}
    model = create_model(name, **ckpt["model"]["kwargs"])
    n_params = sum(p.numel() for p in model.parameters())

    def best_row(m: dict) -> dict:
        return next((r for r in m.get("history") or [] if r.get("epoch") == m.get("best_epoch")), {})

    start = ("ImageNet weights (--pretrained)" if cfg.get("pretrained") else
             f"weights file {cfg['init_weights']}" if cfg.get("init_weights") else
             f"fine-tuned from {cfg['init']}" if cfg.get("init") else "random initialisation")
    calib = ckpt.get("calibration") or {}
    ensemble = len(members) > 1
    seeds = each(lambda m: (m.get("train_config") or {}).get("seed"))
    details = [
        *([["ensemble", f"{len(members)} models of this recipe (seeds {seeds}); P(fake) is the mean of their "
                        "calibrated probabilities"]] if ensemble else []),
        ["architecture", f"{name} ({n_params:,} parameters)"], ["started from", start],
        ["input", f"{pre['input_size']} px training crops, {pre.get('eval_size') or pre['input_size']} px at "
                  f"evaluation, resize {pre.get('resize') or 'none (native resolution)'}"],
        ["normalisation", f"(x - {pre['mean']}) / {pre['std']} on 0-255 pixels"],
        ["output", "P(fake) = sigmoid(logit / T); fake is the positive class"],
        ["test-time augmentation", "flip: the logit is the mean of the image's and its mirror's" if ckpt.get("tta")
         == "flip" else "none"],
        ["trained", f"{each(lambda m: len(m.get('history') or []))} epochs; best epoch "
                    f"{each(lambda m: m.get('best_epoch'))} by {ckpt.get('monitor')}"
                    + (f" (val ROC-AUC {each(lambda m: best_row(m).get('val_auc'), 4)}, val accuracy "
                       f"{each(lambda m: best_row(m).get('val_acc'), 4)})" if best_row(ckpt) else "")],
        ["checkpoint", " / ".join(f"`{m['path']}`" for m in members)], ["fakeface", __version__],
    ]
    recipe = {k: cfg.get(k) for k in ("epochs", "batch_size", "lr", "backbone_lr_scale", "freeze_epochs",
                                      "weight_decay", "label_smoothing", "schedule", "precision", "seed") if k in cfg}
    augment = ", ".join(f"{k}={v}" for k, v in (cfg.get("augment") or {}).items() if k.endswith("_p")) or "defaults"
    threshold = [*([["ensemble threshold", _ensemble_threshold(run_dir, members)]] if ensemble else []),
        ["threshold", each(lambda m: m.get("threshold"), 4)], ["policy", ckpt.get("threshold_policy", "default")],
        ["temperature", each(lambda m: m.get("temperature"), 3)],
        ["fitted on", f"{calib['n_valid']} validation images (never the test split)" if calib else
         "not calibrated: `fakeface calibrate --checkpoint ... --policy balanced`"],
    ]
    if calib:
        def ece(m: dict) -> str:
            c = m.get("calibration")
            return f"{fmt(c['ece_before'])} -> {fmt(c['ece_after'])}" if c else "n/a"

        threshold.append(["validation ECE before -> after", each(ece)])
    evaluation = ("\n\n".join(_evaluation_section(p, m) for p, m in evals) if evals else
                  "Not evaluated yet: `fakeface evaluate --checkpoint RUN/best.pt --data DATA --out RUN/eval-test`.")
    synthetic = ("**SYNTHETIC DATA: this detector was trained on generated textures, not on faces; its numbers show "
                 "that the pipeline works, not how well it finds generated faces.**\n\n"
                 if ckpt.get("data_kind") == "synthetic" else "")
    text = f"""{synthetic}# Model card: {name} real-vs-generated face detector

Written by `fakeface card {run_dir}` from the run's files; every number below was measured, none typed.

## Model details

{md_table(["", ""], details)}

## Intended use

Scoring aligned face crops (or photos, with face detection) for signs of being generated by a GAN, to help
trust-and-safety reviewers prioritise. Out of scope: deciding on its own whether a person or their photo is
genuine, identity verification, and non-face images.

## Training data

{_data_section(ckpt)}

## Training procedure

- {", ".join(f"{k} {v}" for k, v in recipe.items())}
- Augmentation probabilities: {augment}
- Config: {each(lambda m: f"`{Path(m['path']).parent / 'config.yaml'}`")}; per-epoch log: \
{each(lambda m: f"`{Path(m['path']).parent / 'log.csv'}`")}

## Decision threshold and calibration

{md_table(["", ""], threshold)}

## Evaluation

{evaluation}{benchmark_section(run_dir)}

## Known limits

{_limits(evals)}

## Ethical considerations

{ETHICS}
"""
    target = Path(out) if out is not None else run_dir / "MODEL_CARD.md"
    return write_text_atomic(target, text)
