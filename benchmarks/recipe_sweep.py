"""Many recipe variants x seeds on the sample, side by side: the exploration behind configs/sample-cpu.yaml.

    python benchmarks/recipe_sweep.py [--variants benchmarks/sweep_variants.yaml] [--seeds 0 1 2]
                                      [--jobs 4] [--workers 3] [--budget-min 8] [--out runs/sweep]
                                      [--doc docs/experiments/sweep.md]

Each variant is the base config (configs/sample-cpu.yaml) with a few keys changed. Each (variant, seed) run
trains on the train split (best epoch and threshold on the valid split, as always), then scores the valid and
test splits with and without flip test-time augmentation (the mean of the logits of the image and its mirror)
and the test split at JPEG quality 50 and at 0.5x down-and-up scaling. Variants are ranked by their mean valid
ROC-AUC: the test columns are reported, never used to choose. Runs go in parallel (``--jobs`` processes sharing
one GPU, or the CPU); no new run starts after ``--budget-min`` minutes, and whatever finished is tabulated.
Meant for a GPU, where a run takes about a minute; the chosen recipe is then measured on the CPU by
benchmarks/accuracy.py (docs/results.md). Numbers from a GPU are not bit-identical to a CPU's.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
import yaml

REPO = Path(__file__).resolve().parents[1]


def split_logits(scorer, preprocess, samples, workers: int, transform=None, flip: bool = False):
    """Logits of ``samples`` (and of their mirror images with ``flip``) and their labels (fake = 1), in order;
    unreadable files are left out."""
    from torch.utils.data import DataLoader

    from fakeface.data import FaceDataset, collate

    loader = DataLoader(FaceDataset(samples, preprocess, None, transform=transform), batch_size=50,
                        num_workers=workers, collate_fn=collate)
    plain, flipped, labels = [], [], []
    for batch in loader:
        plain.append(scorer.logits(batch["image"]).numpy())
        if flip:
            flipped.append(scorer.logits(torch.flip(batch["image"], dims=[3])).numpy())
        labels.append(batch["label"].numpy())
    empty = np.zeros(0, np.float32)
    plain, labels = (np.concatenate(x) if x else empty for x in (plain, labels))
    flipped = np.concatenate(flipped) if flipped else None
    return plain, flipped, (labels == 1).astype(int)  # fake = 1


def score_run(run_dir: Path, data: str, workers: int) -> dict:
    """Valid and test logits of best.pt, plain and with flip TTA, and test under two perturbations."""
    from sklearn.metrics import roc_auc_score

    from fakeface.augment import perturb
    from fakeface.calibrate import pick_threshold
    from fakeface.checkpoint import load_checkpoint, model_from_checkpoint
    from fakeface.data import discover
    from fakeface.devices import resolve_device
    from fakeface.scoring import Scorer

    ckpt = load_checkpoint(run_dir / "best.pt")
    model, preprocess = model_from_checkpoint(ckpt)
    scorer = Scorer(model, preprocess, resolve_device("auto"), "fp32")
    splits = discover(data).splits

    def logits(samples, transform=None):
        plain, flipped, labels = split_logits(scorer, preprocess, samples, workers, transform, flip=True)
        return plain, (plain + flipped) / 2, labels

    def sig(x):
        return 1 / (1 + np.exp(-x))

    device = torch.cuda.get_device_name() if torch.cuda.is_available() else "CPU"
    out = {"best_epoch": ckpt["best_epoch"], "device": device, "torch": torch.__version__,
           "train_seconds": float(sum(r["seconds"] for r in ckpt["history"]))}
    v_plain, v_tta, v_y = logits(splits["valid"])
    t_plain, t_tta, t_y = logits(splits["test"])
    for name, v, t in (("plain", v_plain, t_plain), ("tta", v_tta, t_tta)):
        thr = pick_threshold(v_y, sig(v), "balanced")  # chosen on valid, as calibrate does
        out[name] = {"valid_auc": float(roc_auc_score(v_y, v)), "valid_acc": float(((sig(v) >= thr) == v_y).mean()),
                     "test_auc": float(roc_auc_score(t_y, t)), "test_acc": float(((sig(t) >= thr) == t_y).mean())}
    for kind, level in (("jpeg", 50), ("resize", 0.5)):
        p, _, y = logits(splits["test"], lambda img, i, k=kind, lv=level: perturb(img, k, lv, seed=i))
        out[f"{kind}{level:g}_auc_change"] = float(roc_auc_score(y, p)) - out["plain"]["test_auc"]
    return out


def run_one(args) -> None:
    """Child process: train one (variant, seed) and score it; writes RUN_DIR/sweep.json."""
    from fakeface.train import load_config, train

    run_dir = Path(args.run_dir)
    spec = json.loads(Path(run_dir / "spec.json").read_text())
    cfg = load_config(spec["base"], {**spec["overrides"], "data": spec["data"], "out": str(run_dir),
                                     "seed": spec["seed"], "workers": args.workers})
    if not (run_dir / "sweep.json").is_file():
        train(cfg, resume=(run_dir / "last.pt").is_file())
        result = score_run(run_dir, spec["data"], args.workers)
        (run_dir / "sweep.json").write_text(json.dumps({**spec, **result}, indent=1))


def merge(base: dict, overrides: dict) -> dict:
    """``base`` with ``overrides`` laid over it, nested mappings (augment) merged key by key."""
    out = dict(base)
    for k, v in overrides.items():
        out[k] = merge(base[k], v) if isinstance(v, dict) and isinstance(base.get(k), dict) else v
    return out


def summarise(results: list[dict], variants: dict) -> list[list[str]]:
    rows = []
    for name in variants:
        rs = [r for r in results if r["variant"] == name]
        if not rs:
            continue

        def ms(get, digits=3, rs=rs):
            x = np.array([get(r) for r in rs])
            return f"{x.mean():.{digits}f} ± {x.std():.{digits}f}" if len(x) > 1 else f"{x[0]:.{digits}f}"

        rows.append([name, str(len(rs)), ms(lambda r: r["plain"]["valid_auc"]), ms(lambda r: r["tta"]["valid_auc"]),
                     ms(lambda r: r["plain"]["test_acc"]), ms(lambda r: r["plain"]["test_auc"]),
                     ms(lambda r: r["tta"]["test_acc"]), ms(lambda r: r["tta"]["test_auc"]),
                     ms(lambda r: r["jpeg50_auc_change"]), ms(lambda r: r["resize0.5_auc_change"]),
                     f"{np.mean([r['train_seconds'] for r in rs]):.0f}"])
    return sorted(rows, key=lambda row: -float(row[2].split()[0]))


HEADER = ["variant", "seeds", "valid AUC", "valid AUC (flip TTA)", "test acc", "test AUC", "test acc (TTA)",
          "test AUC (TTA)", "AUC change JPEG 50", "AUC change 0.5x", "train s"]


def launch(queue: list[Path], command, jobs: int, budget_min: float, kill_min: float | None = None,
           on_exit=None) -> list[str]:
    """Run ``command(run_dir)`` for each run folder of ``queue``, ``jobs`` at a time, each logging to
    ``run_dir/sweep.log``; none starts after ``budget_min`` minutes and those still going at ``kill_min`` are killed.
    ``on_exit(run_dir, returncode)`` is called as each ends. Returns the names of the runs that failed or were
    stopped."""
    queue = list(queue)
    start, running, failed = time.time(), {}, []
    env = {**os.environ, "OMP_NUM_THREADS": "2", "PYTHONUNBUFFERED": "1"}
    while queue or running:
        elapsed = (time.time() - start) / 60
        while queue and len(running) < jobs and elapsed < budget_min:
            run_dir = queue.pop(0)
            log = open(run_dir / "sweep.log", "a")
            running[run_dir] = (subprocess.Popen(command(run_dir), stdout=log, stderr=subprocess.STDOUT, env=env), log)
        if elapsed >= budget_min:
            queue.clear()
        for run_dir, (proc, log) in list(running.items()):
            if kill_min is not None and elapsed >= kill_min and proc.poll() is None:
                proc.kill()
            if proc.poll() is not None:
                log.close()
                del running[run_dir]
                if proc.returncode != 0:
                    failed.append(run_dir.name)
                print(f"[{elapsed:5.1f} min] {run_dir.name}: exit {proc.returncode}", flush=True)
                if on_exit is not None:
                    on_exit(run_dir, proc.returncode)
        time.sleep(1)
    return failed


def sweep_arguments(doc: str, base: str, variants: str, jobs: int, workers: int,
                    budget_min: float) -> argparse.ArgumentParser:
    """The options every sweep takes: base config, variants, data, seeds and how runs share the machine."""
    ap = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--base", default=str(REPO / base))
    ap.add_argument("--variants", default=str(REPO / variants))
    ap.add_argument("--data", default=str(REPO.parent / "shared/data/faces140k-sample"))
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--jobs", type=int, default=jobs, help="runs at a time")
    ap.add_argument("--workers", type=int, default=workers, help="loader processes per run")
    ap.add_argument("--budget-min", type=float, default=budget_min, help="start no run after this many minutes")
    ap.add_argument("--kill-min", type=float, default=None, help="stop runs still going after this many minutes")
    ap.add_argument("--only", nargs="*", help="variants to run (default: all)")
    return ap


def main() -> None:
    ap = sweep_arguments(__doc__, "configs/sample-cpu.yaml", "benchmarks/sweep_variants.yaml", jobs=4, workers=3,
                         budget_min=8.0)
    ap.add_argument("--out", default="runs/sweep")
    ap.add_argument("--doc", default=None, help="write the table here (markdown)")
    ap.add_argument("--results", nargs="+", help="only tabulate these saved sweep.json files into --doc")
    ap.add_argument("--run-dir", help=argparse.SUPPRESS)  # child mode
    args = ap.parse_args()
    if args.run_dir:
        return run_one(args)
    variants = yaml.safe_load(Path(args.variants).read_text())
    if args.results:
        results = [r for f in args.results for r in json.loads(Path(f).read_text())]
        names = [n for n in variants if not args.only or n in args.only]
        print(tabulate(results, variants, names) + "\n\n" + tta_effect(results))
        if args.doc:
            write_doc(Path(args.doc), results, variants, names, args.base)
        return

    base = yaml.safe_load(Path(args.base).read_text())
    command = "python benchmarks/recipe_sweep.py " + " ".join(sys.argv[1:])
    names = [n for n in variants if not args.only or n in args.only]
    out = Path(args.out)
    queue = []
    for name in names:  # variant-major: the first variants get all their seeds
        changed = variants[name] or {}
        merged = merge(base, changed)
        for seed in args.seeds:
            run_dir = out / f"{name}-s{seed}"
            run_dir.mkdir(parents=True, exist_ok=True)
            spec = {"variant": name, "seed": seed, "base": args.base, "data": args.data, "command": command,
                    "overrides": {k: merged[k] for k in changed}}
            (run_dir / "spec.json").write_text(json.dumps(spec))
            queue.append(run_dir)
    failed = launch(queue, lambda run_dir: [sys.executable, __file__, "--run-dir", str(run_dir), "--workers",
                                            str(args.workers)], args.jobs, args.budget_min, args.kill_min)
    results = [json.loads(p.read_text()) for p in sorted(out.glob("*/sweep.json"))
               if json.loads(p.read_text())["variant"] in names]
    (out / "sweep.json").write_text(json.dumps(results, indent=1))
    print(tabulate(results, variants, names))
    if failed:
        print("failed or stopped:", ", ".join(failed))
    if args.doc:
        write_doc(Path(args.doc), results, variants, names, args.base, failed)


def tta_effect(results: list[dict]) -> str:
    """How flip TTA moved each run's numbers, over every run of the sweep."""
    parts = []
    for key in ("valid_auc", "test_auc", "test_acc"):
        d = np.array([r["tta"][key] - r["plain"][key] for r in results])
        parts.append(f"{key.replace('_', ' ')} {d.mean():+.4f} (higher in {(d > 0).sum()}, lower in {(d < 0).sum()} "
                     f"of {len(d)} runs)")
    return "Flip TTA minus plain, per run: " + "; ".join(parts) + "."


def tabulate(results: list[dict], variants: dict, names: list[str]) -> str:
    rows = summarise(results, {n: variants[n] for n in names})
    lines = ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)] + ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def write_doc(path: Path, results: list[dict], variants: dict, names: list[str], base: str, failed=()) -> None:
    devices = sorted({f"{r.get('device', 'device not recorded')}, torch {r.get('torch', '?')}" for r in results})
    doc = [f"# Recipe sweep on the sample ({'; '.join(devices)})", "",
           "Runs made by " + ", then ".join(f"`{c}`" for c in dict.fromkeys(r.get("command", "?") for r in results))
           + f"; this page by `python benchmarks/recipe_sweep.py {' '.join(sys.argv[1:])}`.",
           "Base: " + os.path.relpath(base, REPO) + "; each variant changes the keys listed below it. Mean ± std over "
           "the seeds; ranked by valid ROC-AUC (chosen on valid, test only reported). Valid and test n = 200 each; "
           "accuracy at the balanced (equal-error) threshold picked on valid.", "",
           tabulate(results, variants, names), "", tta_effect(results), "", "Variants:", ""]
    doc += [f"- `{n}`: `{json.dumps(variants[n] or {})}`" for n in names if any(r["variant"] == n for r in results)]
    if failed:
        doc += ["", "Failed or stopped before the end: " + ", ".join(failed)]
    path.write_text("\n".join(doc) + "\n")


if __name__ == "__main__":
    main()
