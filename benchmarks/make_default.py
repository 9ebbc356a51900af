"""Make the detector shipped in the package (src/fakeface/default/): the one committed command.

    python benchmarks/make_default.py [--config configs/default.yaml]
                                      [--data configs/data/faces140k-plus-stylegan2.csv]
                                      [--suite configs/benchmarks/shared-heldout.yaml]
                                      [--seed 0] [--from-run RUN] [--out src/fakeface/default]
    python benchmarks/make_default.py --only-int8 [--out src/fakeface/default]

Trains the recipe in ``--config`` on the data's train split with ``--seed`` (or, with ``--from-run``, takes a
run trained elsewhere, e.g. on a GPU), calibrates it on the valid split (the config's ``calibrate`` policy,
unless the run already is), evaluates it on valid and test, and writes the model folder (:mod:`fakeface.hub`:
weights-only safetensors, config.json, the card) with - beside the weights - the data (a SHA-256 of the sorted
training file names and sizes), the config, the seed and the metrics. It then checks that the folder scores
the test split as the checkpoint did, and writes what the new detector says of each example image
(examples/expected.csv, which the demo's test compares against). Rerunning it reproduces the metrics within
noise (the seed fixes the initialisation and the batches; CPU kernels may differ in the last bits).

``--epochs`` and ``--limit-train`` shorten training for a provisional stand-in, which the card then calls
provisional ("trained N seconds on M images").
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))  # this checkout's fakeface, also where another is installed

from fakeface import __version__  # noqa: E402
from fakeface.benchmark import run as run_benchmark  # noqa: E402
from fakeface.calibrate import calibrate, calibrate_ensemble, ensemble_calibrated  # noqa: E402
from fakeface.card import write_card  # noqa: E402
from fakeface.checkpoint import FOLDER_WEIGHTS, checkpoint_file, ensemble_members, load_checkpoint, save_atomic  # noqa: E402
from fakeface.data import discover  # noqa: E402
from fakeface.detector import load_detector  # noqa: E402
from fakeface.evaluate import evaluate, headline  # noqa: E402
from fakeface.export import Int8Refused, export_run  # noqa: E402
from fakeface.hub import DEFAULT_DIR, inference_part, save_folder  # noqa: E402
from fakeface.metrics import compute_metrics  # noqa: E402
from fakeface.predict import predict_paths  # noqa: E402
from fakeface.train import load_config, train  # noqa: E402

MAX_MB = 12.0  # the shipped weights' size limit (issue 26)
LICENSE = "cc-by-nc-sa-4.0"  # trained on FFHQ (CC BY-NC-SA 4.0) and generated faces (CC BY-NC 4.0)


def data_record(data: Path) -> dict:
    """What the detector was trained on: the data's root, the training split's size, and a SHA-256 of the
    sorted ``relative/path<TAB>size`` lines of its files (the same list hashes the same wherever it lies)."""
    index = discover(data)
    train_split = index.splits.get("train", [])
    names = [Path(s.path).relative_to(index.root).as_posix() if Path(s.path).is_relative_to(index.root)
             else Path(s.path).name for s in train_split]
    lines = sorted(f"{name}\t{Path(s.path).stat().st_size}" for name, s in zip(names, train_split))
    description = index.describe().replace(str(index.root), shown(index.root))
    return {"root": shown(data), "description": description, "train_files": len(lines),
            "train_files_sha256": hashlib.sha256("\n".join(lines).encode()).hexdigest()}


def shown(path: Path) -> str:
    """A path as the card shows it: relative to the repository when it lies beside it (no machine's own paths)."""
    path = Path(path).resolve()
    return os.path.relpath(path, REPO) if path.is_relative_to(REPO.parent) else str(path)


def portable(ckpt: dict) -> dict:
    """A checkpoint's data and training-config paths as :func:`shown` writes them."""
    config = dict(ckpt.get("train_config") or {})
    for key in ("data", "out", "init", "init_weights", "old_data"):
        if config.get(key):
            config[key] = shown(config[key])
    return {"train_config": config, **({"data": shown(ckpt["data"])} if ckpt.get("data") else {})}


def inference_copy(run: Path, work: Path) -> Path:
    """The run's inference checkpoint(s) copied into ``work`` (no optimizer state): calibration writes there,
    never into the run it was given."""
    shutil.rmtree(work, ignore_errors=True)
    members = ensemble_members(run)
    for src, dst in [(checkpoint_file(m), work / m.name / "best.pt") for m in members] or [
            (checkpoint_file(run), work / "best.pt")]:
        ckpt = load_checkpoint(src)
        save_atomic({**inference_part(ckpt), **portable(ckpt)}, dst)
    if members and (run / "calibration.json").is_file():
        shutil.copy(run / "calibration.json", work / "calibration.json")
    return work


def ensure_calibrated(work: Path, data: Path, policy: str, tta: str | None, say) -> None:
    """Calibrate what is not yet (a run trained with ``calibrate:`` already is, and keeps its fit)."""
    members = ensemble_members(work)
    for best in [m / "best.pt" for m in members] or [work / "best.pt"]:
        if load_checkpoint(best).get("threshold_policy", "default") == "default":
            r = calibrate(best, data, policy, workers=0, tta=tta)
            say(f"calibrated {best}: temperature {r['temperature']:.3f}, threshold {r['threshold']:.4f} ({policy})")
    if members and not ensemble_calibrated(work, None):
        r = calibrate_ensemble(work, data, policy, workers=0)
        say(f"ensemble threshold {r['threshold']:.4f} ({policy})")


def compare_folder(folder: Path, checkpoint: Path, data: Path) -> dict:
    """The folder's test-split ROC-AUC and accuracy beside the checkpoint's (float16 weights may move them)."""
    samples = discover(data).splits["test"]
    out = {}
    for name, det in (("checkpoint", load_detector(checkpoint, "as-given", "cpu")),
                      ("folder", load_detector(folder, "as-given", "cpu"))):
        rows = [r for r in predict_paths(det, [s.path for s in samples], batch_size=32, workers=0,
                                         labels=[s.label for s in samples]) if r["error"] is None]
        m = compute_metrics([int(r["label"] == "fake") for r in rows], [r["p_fake"] for r in rows], det.threshold)
        out[name] = {"roc_auc": m["roc_auc"], "accuracy": m["accuracy"], "p": [r["p_fake"] for r in rows]}
    out["max_abs_diff_p"] = float(np.max(np.abs(np.subtract(out["folder"].pop("p"), out["checkpoint"].pop("p")))))
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", type=Path, default=REPO / "configs" / "default.yaml")
    ap.add_argument("--data", type=Path, default=REPO / "configs" / "data" / "faces140k-plus-stylegan2.csv",
                    help="the training data (with --from-run: the data the run was trained on); its valid split "
                         "calibrates, its valid and test splits are evaluated. The default: the 140k sample with "
                         "the StyleGAN2 train part beside its training split")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--from-run", type=Path, help="package this run (a run folder or best.pt) instead of training")
    ap.add_argument("--out", type=Path, default=DEFAULT_DIR, help="the model folder to write (replaced whole)")
    ap.add_argument("--work", type=Path, default=REPO / "runs" / "make-default", help="scratch folder (emptied)")
    ap.add_argument("--name", default="fakeface-default")
    ap.add_argument("--version", default=__version__)
    ap.add_argument("--dtype", choices=["float16", "float32"], default="float16")
    ap.add_argument("--epochs", type=int, help="override the config's epochs (a provisional stand-in)")
    ap.add_argument("--limit-train", type=int, help="train on this many images (a provisional stand-in)")
    ap.add_argument("--provisional", action="store_true", help="mark the card provisional (implied by the two above)")
    ap.add_argument("--suite", type=Path, default=REPO / "configs" / "benchmarks" / "shared-heldout.yaml",
                    help="the benchmark suite whose table goes into the card (give 'none' to skip); it must name "
                         "no image the data trains on")
    ap.add_argument("--int8", action=argparse.BooleanOptionalAction, default=True,
                    help="ship the int8 ONNX export in the folder where it passes its accuracy guard")
    ap.add_argument("--max-accuracy-drop", type=float, default=0.5, help="the int8 accuracy guard's limit (points)")
    ap.add_argument("--only-int8", action="store_true",
                    help="remake only the int8 export of the folder at --out (after a change of the exporter); its "
                         "weights, card and metrics stay")
    ap.add_argument("--examples", type=Path, default=REPO / "examples",
                    help="write what the detector says of these into their expected.csv (only with the default --out)")
    args = ap.parse_args(argv)
    if args.suite is not None and args.suite.name == "none":
        args.suite = None
    say = print
    t0 = time.perf_counter()
    if args.only_int8:
        for old in args.out.glob("*.onnx"):
            old.unlink()
        return 0 if ship_int8(args.out, args.data, say, args.max_accuracy_drop) else 1
    work = args.work.resolve()
    cfg = load_config(args.config, {"data": str(args.data), "out": str(work / "run"), "seed": args.seed,
                                    "epochs": args.epochs, "limit_train": args.limit_train, "workers": 0})
    provisional = args.provisional or args.epochs is not None or args.limit_train is not None
    if args.from_run is not None:
        run = args.from_run
        ckpt = load_checkpoint(checkpoint_file(ensemble_members(run)[0] if ensemble_members(run) else run))
        seed = (ckpt.get("train_config") or {}).get("seed")
        say(f"packaging the run {run}")
    else:
        shutil.rmtree(work / "run", ignore_errors=True)
        say(f"training {cfg.model} ({args.config}) on {args.data} with seed {args.seed} into {work / 'run'}")
        run = train(cfg)
        seed = args.seed
        ckpt = load_checkpoint(checkpoint_file(ensemble_members(run)[0] if ensemble_members(run) else run))
    train_config = portable(ckpt)["train_config"]
    trained_s = sum(r.get("seconds") or 0 for r in ckpt.get("history") or [])  # the epochs' own time
    package = inference_copy(run, work / "package")
    ensure_calibrated(package, args.data, cfg.calibrate or "balanced", train_config.get("tta", cfg.tta), say)

    metrics = {}
    for split in ("valid", "test"):
        m = evaluate(package, args.data, package / f"eval-{split}", split=split, workers=0, n_boot=200,
                     command=f"python benchmarks/make_default.py (evaluation of the {split} split)")
        metrics[split] = {k: m[k] for k in ("roc_auc", "accuracy", "average_precision", "ece") if k in m}
        metrics[split].update(data=args.data.name, images=m["images"]["scored"])
        say(f"{split}: {headline(m)}")

    bench = None
    if args.suite is not None:  # the card and config.json carry the cross-generator table
        result = run_benchmark(package, args.suite, package / "benchmark", workers=0, n_boot=200)
        bench = {s["name"]: {k: v for k, v in s["metrics"].items() if v is not None} for s in result["sets"]}
        say(f"benchmarked on {args.suite}: {', '.join(benchmark_line(s) for s in result['sets'])}")

    data = data_record(args.data)
    n_train = int(train_config.get("limit_train") or data["train_files"])
    release = {"name": args.name, "version": args.version, "provisional": provisional}
    if provisional:
        release["note"] = f"provisional: trained {trained_s:.0f} seconds on {n_train} images"
    provenance = {"data": data, "trained_on": train_config.get("data"), "config": train_config, "seed": seed,
                  "trained_seconds": round(trained_s, 1),
                  "command": " ".join(["python", "benchmarks/make_default.py", *(argv or sys.argv[1:])]),
                  "from_run": None if args.from_run is None else shown(args.from_run)}
    body = card_body(release, provenance, metrics, write_card(package, package / "MODEL_CARD.md",
                                                              [package / "eval-valid", package / "eval-test"]))
    folder = save_folder(package, args.out, dtype=args.dtype, name=args.name, version=args.version, card=body,
                         license=LICENSE, extra={"release": release, "provenance": provenance, "metrics": metrics,
                                **({"benchmark": bench} if bench else {})})
    check = compare_folder(folder, package, args.data)
    int8 = ship_int8(folder, args.data, say, args.max_accuracy_drop) if args.int8 else None
    size_mb = sum(p.stat().st_size for p in folder.rglob("*") if p.suffix in (".safetensors", ".onnx")) / 1e6
    say(f"wrote {folder}: weights {size_mb:.1f} MB ({args.dtype}{' and its int8 ONNX export' if int8 else ''}); "
        f"test ROC-AUC {check['folder']['roc_auc']:.4f} "
        f"(checkpoint {check['checkpoint']['roc_auc']:.4f}), largest P(fake) change {check['max_abs_diff_p']:.4f}")
    shipped = args.out.resolve() == DEFAULT_DIR
    if size_mb > MAX_MB:
        say(f"{'error' if shipped else 'note'}: the weights are {size_mb:.1f} MB, over the {MAX_MB} MB the package "
            "may ship")
        if shipped:
            return 1
    if (check["checkpoint"]["roc_auc"] or 0) - (check["folder"]["roc_auc"] or 0) > 0.005:
        say(f"error: {args.dtype} weights lose ROC-AUC on the test split: rerun with --dtype float32")
        return 1
    if shipped:
        from fakeface.demo import read_examples, read_verdicts, score_examples, write_readme_demo_block, write_verdicts

        detector = load_detector(folder, "as-given", "cpu")
        expected = write_verdicts(score_examples(detector, read_examples(args.examples)),
                                  args.examples / "expected.csv")
        write_readme_demo_block(REPO / "README.md", read_verdicts(expected))
        say(f"wrote {expected} and its table in README.md")
    say(f"done in {time.perf_counter() - t0:.0f} s")
    return 0


def ship_int8(folder: Path, data: Path, say, max_accuracy_drop: float = 0.5) -> Path | None:
    """The folder's int8 ONNX export, beside its weights, where ``predict``/``serve`` take it without an export
    step of their own (the fastest backend on a CPU); kept only where it passes the int8 accuracy guard on the
    data's valid split. Its fp32 intermediate is not shipped: first use makes one in the user cache if needed."""
    out = folder / f"{FOLDER_WEIGHTS.rsplit('.', 1)[0]}.int8.onnx"
    try:
        export_run(folder, out, quantize="int8", calibration_data=data, max_accuracy_drop=max_accuracy_drop,
                   say=say, warn=say)  # the guard's verdict goes into its metadata
    except Int8Refused as e:
        say(f"no int8 model shipped: {e}")
        return None
    finally:
        for extra in folder.glob("*.fp32.onnx"):
            extra.unlink()
    return out


def benchmark_line(s: dict) -> str:
    """One set's headline: ROC-AUC and share caught where it has fakes, else its false-positive rate."""
    m = s["metrics"]
    if m.get("roc_auc") is not None:
        return f"{s['name']} ROC-AUC {m['roc_auc']:.3f}, caught {m['tpr_at_threshold']:.3f}"
    return f"{s['name']} false-positive rate {m['fpr_at_threshold']:.3f}"


def card_body(release: dict, provenance: dict, metrics: dict, card_path: Path) -> str:
    """The folder's README.md body: the release and provenance first, then the run's model card."""
    head = [f"# {release['name']} {release['version']}", ""]
    if release.get("provisional"):
        head += [f"**{release['note']}.** A stand-in so that the package works; its numbers are not the "
                 "project's. `python benchmarks/make_default.py` with the chosen recipe replaces it.", ""]
    data = provenance["data"]
    head += ["The real-vs-generated face detector shipped inside the fakeface package: what `fakeface predict`, "
             "`serve`, `explain`, `evaluate` and `benchmark` use without `--checkpoint`.", "",
             "Intended use: aligned face photos like FFHQ (one face, centred, eyes level). Known failures: face "
             "swaps and face edits (trained on whole generated faces only), generators other than those of its "
             "training data (below), photos that are not aligned face crops, heavy re-compression.", "",
             "## Provenance", "",
             f"- Made by: `{provenance['command']}`" + (f" from the run {provenance['from_run']}"
                                                        if provenance["from_run"] else ""),
             f"- Data: {data['description']}",
             f"- Training files: {data['train_files']}; SHA-256 of the sorted file names and sizes: "
             f"`{data['train_files_sha256']}`",
             f"- Seed: {provenance['seed']}; config: in config.json (`provenance.config`)", "",
             "| split | ROC-AUC | accuracy | images |", "|---|---|---|---|"]
    head += [f"| {s} | {m.get('roc_auc', float('nan')):.4f} | {m.get('accuracy', float('nan')):.4f} | "
             f"{m.get('images')} |" for s, m in metrics.items() if s in ("valid", "test")]
    # the card names the run's own files (config, log), which the folder does not ship: it points at the run
    run = provenance["from_run"] or provenance["config"].get("out") or "the training run"
    card = card_path.read_text(encoding="utf-8").replace(f"`fakeface card {card_path.parent}`", "`fakeface card`")
    card = card.replace(str(card_path.parent), run)
    card = card.replace("# Model card", "## Model card", 1)
    return "\n".join(head) + "\n\n" + card.replace("\n## ", "\n### ").replace("\n### Model card", "\n## Model card")


if __name__ == "__main__":
    raise SystemExit(main())
