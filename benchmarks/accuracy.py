"""The shipped recipe, measured: train it with several seeds, evaluate, write docs/results.md.

    python benchmarks/accuracy.py [--config configs/sample-cpu.yaml] [--data ../shared/data/faces140k-sample]
                                  [--seeds 0 1 2] [--runs runs/accuracy] [--doc docs/results.md]
                                  [--readme README.md]
    python benchmarks/accuracy.py --readme README.md --readme-only   # README's table from the existing doc

For each seed: ``fakeface train`` with the config (the train split; best epoch and threshold chosen on the
valid split), then ``fakeface evaluate`` on the test split with bootstrap intervals and the robustness
perturbations; with ``members: N`` in the config a seed's detector is N models, scored together as one (and on
the valid split too). Then the seeds' ensemble. docs/results.md gets every table - metrics, spread across seeds,
robustness, calibration, ensemble - with training time, machine, versions and this command. Every number in
the docs comes from here; nothing is typed by hand. A run folder that already holds a finished run is
not retrained (delete it to retrain), and its evaluation is reused while the checkpoint, data and settings are
the same; an interrupted run is resumed. ``--readme`` rewrites the results table between the README's
``<!-- results:begin -->`` / ``<!-- results:end -->`` markers from the same numbers; ``--readme-only`` does just
that from the tables of the doc ``--doc`` names, without training.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
import yaml
from sklearn.metrics import roc_curve

from fakeface import FAKE, __version__
from fakeface.benchmark import COLUMNS as BENCHMARK_MEASURES
from fakeface.benchmark import read_suite
from fakeface.benchmark import run as run_benchmark
from fakeface.card import fmt, md_table, with_ci
from fakeface.checkpoint import ENSEMBLE_CALIBRATION, checkpoint_file, expand_checkpoints
from fakeface.data import discover
from fakeface.evaluate import evaluate
from fakeface.files import file_sha256
from fakeface.report import read_predictions
from fakeface.train import load_config, train

REPO = Path(__file__).resolve().parents[1]
PERTURB = {"jpeg": [90, 70, 50], "blur": [1, 2], "resize": [0.5, 0.75], "noise": [0.02]}
README_BEGIN, README_END = "<!-- results:begin -->", "<!-- results:end -->"
SPREAD_HEADER = ["metric", "mean", "std", "min", "max"]
ROBUSTNESS_HEADER = ["perturbation", "level", "accuracy", "ROC-AUC", "change (mean)", "change (worst)"]
BENCHMARK_HEADER = ["set", "kind", "measure", "mean", "std", "min", "max"]
TRAINED_GENERATOR = "generator, held-out part"  # the doc's kind for a generator the training data also holds


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def git_commit() -> str:
    res = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    return res.stdout.strip() or "unknown"


def train_seed(config: str, data: str, seed: int, run_dir: Path, overrides: dict) -> float:
    """Train one seed, or resume it (a finished run trains no further); returns its training seconds (an
    ensemble's: all its members')."""
    cfg = load_config(config, {"data": data, "out": str(run_dir), "seed": seed, **overrides})
    train(cfg, resume=(run_dir / "last.pt").is_file() or any(run_dir.glob("member*/last.pt")))
    seconds = 0.0
    for model_dir in expand_checkpoints([run_dir]):
        history = torch.load(model_dir / "last.pt", map_location="cpu", weights_only=True)["history"]
        seconds += sum(r["seconds"] for r in history)
    return seconds


def evaluate_once(checkpoints: list[Path], data: str, out: Path, n_boot: int, perturb: dict | None,
                  command: str, split: str = "test") -> dict:
    """``evaluate``, or its saved metrics when the same checkpoints (by content) were already scored the same way:
    rewriting the doc after an interrupted or parallel run re-scores nothing. Run folders stand for their
    best.pt, ensemble run folders for their members' (and, one alone, for its own threshold)."""
    files = [checkpoint_file(c) for c in expand_checkpoints(checkpoints)]
    key = {"checkpoints": [file_sha256(c) for c in files], "data": str(Path(data).resolve()),
           "bootstrap": n_boot, "perturb": perturb, **({"split": split} if split != "test" else {})}
    own = Path(checkpoints[0]) / ENSEMBLE_CALIBRATION  # an ensemble run's own threshold: applied to one run alone
    if len(checkpoints) == 1 and own.is_file():
        record = json.loads(own.read_text())
        key["ensemble_threshold"] = [record.get("threshold"), record.get("threshold_policy")]
    stamp = out / "accuracy-benchmark.json"
    if stamp.is_file() and (out / "metrics.json").is_file() and json.loads(stamp.read_text()) == key:
        print(f"reusing {out / 'metrics.json'} (same checkpoints, data and settings)", flush=True)
        return json.loads((out / "metrics.json").read_text())
    m = evaluate(list(checkpoints) if len(checkpoints) > 1 else checkpoints[0], data, out, split=split, n_boot=n_boot,
                 perturb=perturb, command=command)
    stamp.write_text(json.dumps(key))
    return m


def benchmark_once(run_dir: Path, suite: Path, n_boot: int) -> dict:
    """The shared suite scored by one seed's detector (``fakeface benchmark``), or its saved result when the same
    checkpoints were already scored on the same suite."""
    files = [checkpoint_file(c) for c in expand_checkpoints([run_dir])]
    key = {"checkpoints": [file_sha256(c) for c in files], "suite": str(suite.resolve()), "bootstrap": n_boot}
    out = run_dir / "benchmark"
    stamp = out / "accuracy-benchmark.json"
    if stamp.is_file() and (out / "benchmark.json").is_file() and json.loads(stamp.read_text()) == key:
        print(f"reusing {out / 'benchmark.json'} (same checkpoints and suite)", flush=True)
        return json.loads((out / "benchmark.json").read_text())
    result = run_benchmark([run_dir], suite, out, n_boot=n_boot)
    stamp.write_text(json.dumps(key))
    return result


def benchmark_spread(results: list[dict], trained_on: frozenset[str] = frozenset()) -> list[list[str]]:
    """Each set's measures across seeds: mean, std, min, max. A generator set named in ``trained_on`` is of kind
    ``TRAINED_GENERATOR``: held-out images of a generator the training data holds, not an unseen one."""
    rows = []
    for i, first in enumerate(results[0]["sets"]):
        kind = TRAINED_GENERATOR if first["name"] in trained_on else first["kind"]
        for key, value in first["metrics"].items():
            values = [r["sets"][i]["metrics"][key] for r in results if r["sets"][i]["metrics"][key] is not None]
            if value is None or not values:
                continue
            rows.append([first["name"], kind, BENCHMARK_MEASURES.get(key, key), fmt(float(np.mean(values))),
                         fmt(float(np.std(values))), fmt(min(values)), fmt(max(values))])
    return rows


def generators_in_training(data: str, suite: str) -> frozenset[str]:
    """The suite's generator sets whose fakes lie in a folder the training split also takes images from."""
    folders = {Path(s.path).resolve().parent for s in discover(data).splits.get("train", [])}
    return frozenset(b.name for b in read_suite(suite).sets if b.kind == "generator" and any(
        Path(s.path).resolve().parent in folders for s in b.samples if s.label == FAKE))


def shown(path: str) -> str:
    """A path as the doc shows it: relative to the repository when inside it or beside it, as ../shared is (no
    machine's own paths)."""
    resolved = Path(path).resolve()
    return os.path.relpath(resolved, REPO) if resolved.is_relative_to(REPO.parent) else str(path)


def where_the_errors_are(eval_dirs: list[Path]) -> tuple[list[tuple[int, float]], dict[str, int]]:
    """Per run: its errors and the accuracy of the best threshold on the scored split in hindsight (an upper bound
    for any threshold policy: near the accuracy, it is the ranking that limits accuracy, not the threshold); and
    how many images all, at least half, or any of the runs got wrong (stable hard images or seed noise)."""
    per_run, wrong = [], {}
    for d in eval_dirs:
        rows = read_predictions(d / "predictions.csv")
        y = np.array([r["label"] == "fake" for r in rows])
        fpr, tpr, _ = roc_curve(y, [r["p_fake"] for r in rows], drop_intermediate=False)
        best = float(np.max(tpr * y.sum() + (1 - fpr) * (~y).sum()) / len(rows))
        errors = {r["path"] for r in rows if r["label"] != r["pred"]}
        per_run.append((len(errors), best))
        for path in errors:
            wrong[path] = wrong.get(path, 0) + 1
    counts = {"all": sum(c == len(eval_dirs) for c in wrong.values()),
              "half": sum(2 * c >= len(eval_dirs) for c in wrong.values()), "any": len(wrong)}
    return per_run, counts


def write_doc(path: Path, args, cfg: dict, seeds: list[dict], ensemble: dict | None, command: str,
              benchmarks: list[dict] | None = None) -> str:
    """Write the doc; return the README's results table made from the same numbers."""
    keys = ("accuracy", "roc_auc", "average_precision", "eer", "tpr_at_fpr_1", "ece")

    def each(s: dict, get) -> str:  # one value per model of the seed's detector
        return " / ".join(str(get(b)) for b in s["models"])

    def val_auc(b: dict) -> str:
        return fmt(next(r["val_auc"] for r in b["history"] if r["epoch"] == b["epoch"]))

    per_seed = [[s["seed"], with_ci(s["m"], "accuracy"), with_ci(s["m"], "roc_auc"), fmt(s["m"]["eer"]),
                 fmt(s["m"]["tpr_at_fpr_1"]), fmt(s["m"]["tpr_at_fpr_5"]), fmt(s["m"]["ece"]),
                 each(s, lambda b: b["epoch"]), each(s, val_auc), fmt(s["valid_auc"]), f"{s['seconds'] / 60:.1f}"]
                for s in seeds]
    spread = []
    for key in keys:
        values = [s["m"][key] for s in seeds if s["m"][key] is not None]
        if values:
            spread.append([key, fmt(float(np.mean(values))), fmt(float(np.std(values))), fmt(min(values)),
                           fmt(max(values))])
    robustness = []
    for i, row in enumerate(seeds[0]["m"].get("robustness", [])):
        aucs = [s["m"]["robustness"][i]["roc_auc"] for s in seeds]
        changes = [s["m"]["robustness"][i]["roc_auc_change"] for s in seeds]
        accs = [s["m"]["robustness"][i]["accuracy"] for s in seeds]
        robustness.append([row["perturbation"], f"{row['level']:g}", fmt(float(np.mean(accs))),
                           fmt(float(np.mean(aucs))), f"{np.mean(changes):+.4f}", f"{min(changes):+.4f}"])
    calibration = []
    for s in seeds:
        single = len(s["models"]) == 1
        for k, b in enumerate(s["models"]):
            c = b.get("calibration") or {}
            calibration.append([s["seed"] if single else f"{s['seed']}, member {k}", fmt(b["temperature"], 3),
                                fmt(b["threshold"]), b.get("threshold_policy", "default"), b.get("tta") or "none",
                                fmt(c.get("roc_auc")), fmt(s["m"]["calibration"]["ece_uncalibrated"]) if single else
                                "-", fmt(s["m"]["calibration"]["ece_calibrated"]) if single else "-"])
        if not single:  # the detector's own threshold, when the run has one (calibration.json)
            calibration.append([f"{s['seed']}, ensemble", "-", fmt(s["m"]["threshold"]),
                                s["m"]["calibration"]["policy"], "-", fmt(s["valid_auc"]), "-", "-"])
    members = len(seeds[0]["models"])
    judged = ("a threshold picked by the same policy\non those mean probabilities for the valid split (the run's "
              "calibration.json)" if "ensemble's valid scores" in seeds[0]["m"]["calibration"]["policy"] else
              "the mean of their thresholds")
    ensemble_note = "" if members == 1 else f"""
Each seed's detector is an ensemble of {members} models (`members: {members}`; model k of seed s trained with seed
s x {members} + k): P(fake) is the mean of their calibrated probabilities, judged at {judged}.
Columns with one value per model list them in member order.
"""
    per_run, wrong = where_the_errors_are([s["eval_dir"] for s in seeds])
    errors = [[s["seed"], fmt(s["m"]["accuracy"]), n_err, fmt(best)] for s, (n_err, best) in zip(seeds, per_run)]
    n = seeds[0]["m"]["n"]
    text = f"""# Results on the 140k sample

Written by `benchmarks/accuracy.py`; every number below was printed by it, none typed by hand.
Recipe: `{args.config}` (trained on the train split of `{shown(args.data)}`, best epoch and decision threshold
chosen on its valid split, scored here on its test split of {n} images). Intervals are bootstrap 95 % intervals
({args.bootstrap} resamples of the test split).
{ensemble_note}
## Test split, per seed

Valid ROC-AUC, best epoch: the best epoch's on the valid split (what chose it); detector: the whole detector's
as it predicts (calibrated, with its test-time augmentation). Training minutes are wall-clock sums of the
epochs: on a shared machine they include time lost to other processes, so the fastest seed is the closest to
this machine alone.

{md_table(["seed", "accuracy", "ROC-AUC", "EER", "TPR @ 1 % FPR", "TPR @ 5 % FPR", "ECE", "best epoch",
        "valid ROC-AUC, best epoch", "valid ROC-AUC, detector", "training min"], per_seed)}

## Spread across {len(seeds)} seeds

{md_table(SPREAD_HEADER, spread)}

## Robustness (mean over seeds; both classes perturbed alike)

Change = ROC-AUC under the perturbation minus the clean ROC-AUC (worst seed in the last column).

{md_table(ROBUSTNESS_HEADER, robustness)}

## Calibration (temperature and threshold fitted on the valid split)

Per model. Valid ROC-AUC as calibrated: of the scores the threshold was fitted on, with the test-time
augmentation the model uses (the per-seed table's best-epoch valid ROC-AUC is without it).

{md_table(["seed", "temperature", "threshold", "policy", "test-time augmentation", "valid ROC-AUC as calibrated",
           "test ECE before", "test ECE after"], calibration)}

## Where the errors are

Best accuracy in hindsight: at the threshold that would have been best on the test split itself - an upper
bound for any threshold policy, not a usable threshold. Close to the accuracy, it is the ranking (ROC-AUC), not
the threshold, that limits accuracy.

{md_table(["seed", "accuracy", "errors", "best accuracy in hindsight"], errors)}

Test images wrong for every seed: {wrong["all"]}; for at least half of the seeds: {wrong["half"]}; for any seed:
{wrong["any"]} (of {n}).
"""
    trained_on = generators_in_training(args.data, args.suite) if benchmarks else frozenset()
    bench = benchmark_spread(benchmarks, trained_on) if benchmarks else []
    if bench:
        unseen = [r["name"] for r in benchmarks[0]["sets"] if r["kind"] == "generator" and r["name"] not in trained_on]
        generators = "".join(
            ([f"\n- {', '.join(unseen)}: fakes of a generator the training data does not hold."] if unseen else []) +
            ([f"\n- {', '.join(sorted(trained_on))} (kind `{TRAINED_GENERATOR}`): fakes the detector never saw of a "
              "generator whose other images it trained on - not an unseen generator."] if trained_on else []))
        text += f"""
## Cross-generator benchmark (`{shown(args.suite)}`, {len(benchmarks)} seeds)

`fakeface benchmark` with each seed's detector at its own threshold (chosen on the valid split). Generator sets
are scored against the test split's reals; real-only sets are photos from elsewhere. Each seed's full table,
with intervals, is its run's `benchmark/benchmark.md`.
{generators}

{md_table(BENCHMARK_HEADER, bench)}
"""
    if ensemble is not None:
        rows = [[name, fmt(r["accuracy"]), fmt(r["roc_auc"]), fmt(r["eer"]), fmt(r["ece"])]
                for name, r in ensemble["ensemble"]["rows"].items()]
        beats = ensemble["ensemble"]["beats_best_member"]
        text += f"""
## Ensemble of every seed's models (mean of calibrated probabilities)

{md_table(["model", "accuracy", "ROC-AUC", "EER", "ECE"], rows)}

Beats its best member: accuracy {beats["accuracy"]}, ROC-AUC {beats["roc_auc"]}.
"""
    text += f"""
## Setup

- Machine: {cpu_name()}, {os.cpu_count()} cores, {torch.get_num_threads()} torch threads, no GPU
- Versions: fakeface {__version__} (commit {git_commit()}), torch {torch.__version__}, \
Python {platform.python_version()}
- Config as run:

```yaml
{yaml.safe_dump(cfg, sort_keys=False).strip()}
```

- Command: `{command}`
"""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return readme_table(spread, robustness, args.config, len(seeds), n, path, Path(args.readme or "README.md"), bench)


def readme_table(spread: list[list[str]], robustness: list[list[str]], config: str, n_seeds: int, n_images: int,
                 doc: Path, readme: Path, bench: list[list[str]] | None = None) -> str:
    """The README's few headline lines, from the doc's spread, robustness and benchmark rows (as the doc prints
    them)."""
    by_metric = {row[0]: [float(v) for v in row[1:]] for row in spread}
    rows = []
    for key, name in (("accuracy", "accuracy"), ("roc_auc", "ROC-AUC"), ("tpr_at_fpr_1", "fakes caught at 1 % FPR")):
        if key in by_metric:
            mean, std, low, high = by_metric[key]
            rows.append([name, f"{mean:.3f} +- {std:.3f}", f"{low:.3f} - {high:.3f}"])
    for perturbation, level, name in (("jpeg", "50", "ROC-AUC change at JPEG quality 50"),
                                      ("resize", "0.5", "ROC-AUC change at 0.5x resize")):
        row = next((r for r in robustness if r[0] == perturbation and r[1] == level), None)
        if row is not None:
            rows.append([name, f"{float(row[4]):+.3f}", f"worst seed {float(row[5]):+.3f}"])
    for kind, measure, name in (("generator", "ROC-AUC", "ROC-AUC on an unseen generator: {}"),
                                ("generator", BENCHMARK_MEASURES["tpr_at_threshold"], "{} fakes caught"),
                                (TRAINED_GENERATOR, "ROC-AUC", "ROC-AUC on unseen fakes of a trained-on generator: {}"),
                                (TRAINED_GENERATOR, BENCHMARK_MEASURES["tpr_at_threshold"], "{} fakes caught"),
                                ("real", BENCHMARK_MEASURES["fpr_at_threshold"], "{} reals flagged fake")):
        for row in (r for r in bench or [] if r[1] == kind and r[2] == measure):
            mean, std, low, high = (float(v) for v in row[3:])
            rows.append([name.format(row[0]), f"{mean:.3f} +- {std:.3f}", f"{low:.3f} - {high:.3f}"])
    link = os.path.relpath(doc.resolve(), readme.resolve().parent)
    return (f"`{config}` on the test split ({n_images} images), {n_seeds} seeds; written by "
            f"`python benchmarks/accuracy.py`, every table in [{link}]({link}).\n\n"
            + md_table([f"test split, {n_seeds} seeds", "mean +- std", "range"], rows))


def doc_tables(doc: Path) -> tuple[list[list[str]], list[list[str]], str, int, int, list[list[str]]]:
    """Read back what :func:`write_doc` wrote: (spread rows, robustness rows, config, seeds, test images,
    benchmark rows)."""
    text = doc.read_text()

    def table(header: list[str]) -> list[list[str]]:
        marker = "| " + " | ".join(header) + " |\n"
        rows = []
        for line in text.split(marker, 1)[1].splitlines()[1:] if marker in text else []:  # [1:]: the |---| line
            if not line.startswith("|"):
                break
            rows.append([c.strip() for c in line.strip().strip("|").split("|")])
        return rows

    spread, robustness = table(SPREAD_HEADER), table(ROBUSTNESS_HEADER)
    if not spread:
        raise SystemExit(f"{doc} has no spread table: was it written by benchmarks/accuracy.py?")
    config = re.search(r"Recipe: `([^`]+)`", text)
    images = re.search(r"test split of (\d+) images", text)
    seeds = re.search(r"## Spread across (\d+) seeds", text)
    return (spread, robustness, config.group(1) if config else "?", int(seeds.group(1)) if seeds else 0,
            int(images.group(1)) if images else 0, table(BENCHMARK_HEADER))


def rewrite_readme(readme: Path, table: str) -> None:
    """Replace what lies between the README's results markers with ``table``."""
    text = readme.read_text()
    if text.count(README_BEGIN) != 1 or text.count(README_END) != 1 or \
            text.index(README_BEGIN) > text.index(README_END):
        raise SystemExit(f"{readme} needs one {README_BEGIN} line before one {README_END} line")
    head, rest = text.split(README_BEGIN, 1)
    _, tail = rest.split(README_END, 1)
    readme.write_text(f"{head}{README_BEGIN}\n{table}\n{README_END}{tail}")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default="configs/sample-cpu.yaml")
    ap.add_argument("--data", default=str(REPO.parent / "shared" / "data" / "faces140k-sample"))
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--runs", default="runs/accuracy")
    ap.add_argument("--doc", default="docs/results.md")
    ap.add_argument("--epochs", type=int, help="override the config (quick checks only)")
    ap.add_argument("--bootstrap", type=int, default=1000)
    ap.add_argument("--suite", default=str(REPO / "configs" / "benchmarks" / "shared.yaml"),
                    help="the benchmark suite each seed's detector is scored on ('none': no benchmark)")
    ap.add_argument("--readme", help="also rewrite this README's results table (between its markers)")
    ap.add_argument("--readme-only", action="store_true",
                    help="only rewrite --readme's table from the tables already in --doc (no training)")
    args = ap.parse_args()
    if args.readme_only:
        if not args.readme:
            ap.error("--readme-only needs --readme")
        spread, robustness, config, n_seeds, n_images, bench = doc_tables(Path(args.doc))
        rewrite_readme(Path(args.readme), readme_table(spread, robustness, config, n_seeds, n_images, Path(args.doc),
                                                       Path(args.readme), bench))
        print(f"rewrote the results table in {args.readme} from {args.doc}")
        return
    command = " ".join(shlex.quote(a) for a in ["python", "benchmarks/accuracy.py", *sys.argv[1:]])
    overrides = {"epochs": args.epochs} if args.epochs else {}
    seeds = []
    for seed in args.seeds:
        run_dir = Path(args.runs) / f"seed{seed}"
        t0 = time.perf_counter()
        seconds = train_seed(args.config, args.data, seed, run_dir, overrides)
        m = evaluate_once([run_dir], args.data, run_dir / "eval-test", args.bootstrap, PERTURB, command)
        models = [torch.load(checkpoint_file(d), map_location="cpu", weights_only=True)
                  for d in expand_checkpoints([run_dir])]
        if len(models) > 1:  # the ensemble as it predicts, on the split its members were selected on
            valid = evaluate_once([run_dir], args.data, run_dir / "eval-valid", 0, None, command, split="valid")
            valid_auc = valid["roc_auc"]
        else:
            valid_auc = (models[0].get("calibration") or {}).get("roc_auc")
        seeds.append({"seed": seed, "m": m, "seconds": seconds, "models": models, "valid_auc": valid_auc,
                      "eval_dir": run_dir / "eval-test"})
        print(f"seed {seed}: accuracy {with_ci(m, 'accuracy')}  ROC-AUC {with_ci(m, 'roc_auc')}  "
              f"(training {seconds / 60:.1f} min, {time.perf_counter() - t0:.0f} s in all)", flush=True)
    benchmarks = []
    if args.suite != "none":
        for seed in args.seeds:
            result = benchmark_once(Path(args.runs) / f"seed{seed}", Path(args.suite), args.bootstrap)
            benchmarks.append(result)
            print(f"seed {seed} benchmark: " + ", ".join(
                f"{r['name']} " + ", ".join(f"{k} {v:.3f}" for k, v in r["metrics"].items() if v is not None)
                for r in result["sets"]), flush=True)
    ensemble = None
    if len(seeds) > 1:
        ensemble = evaluate_once([Path(args.runs) / f"seed{s}" for s in args.seeds], args.data,
                                 Path(args.runs) / "eval-ensemble", args.bootstrap, None, command)
        print(f"ensemble: accuracy {with_ci(ensemble, 'accuracy')}  ROC-AUC {with_ci(ensemble, 'roc_auc')}")
    cfg = load_config(args.config, overrides).to_dict()
    cfg.pop("data"), cfg.pop("out"), cfg.pop("seed")
    table = write_doc(Path(args.doc), args, cfg, seeds, ensemble, command, benchmarks)
    print(f"wrote {args.doc}")
    if args.readme:
        rewrite_readme(Path(args.readme), table)
        print(f"rewrote the results table in {args.readme}")


if __name__ == "__main__":
    main()
