"""Which training recipe catches generators it never saw: variants x seeds, chosen by a rule fixed beforehand.

    python benchmarks/generalization_sweep.py [--base configs/experiments/generalization-base.yaml]
        [--variants benchmarks/generalization_variants.yaml] [--data ../shared/data/faces140k-sample]
        [--cross ../shared/data/cross-generator] [--seeds 0 1 2] [--jobs 8] [--workers 2] [--budget-min 4.5]
        [--kill-min 5.7] [--out runs/generalization] [--doc docs/experiments/generalization.md]
        [--results-dir DIR] [--override JSON] [--only NAME ...]
    python benchmarks/generalization_sweep.py --score-runs RUN [RUN ...] [--variant NAME] [--results-dir DIR]
        [--pack-prefix NAME]
    python benchmarks/generalization_sweep.py --write-parts configs/data

Leave-one-generator-out: every variant trains on the 140k sample (StyleGAN faces; one variant also on a
"train" part of cross-generator/stylegan2) and is scored on parts nobody trains on. The data's parts are fixed
here by a hash of each file name (:func:`hash_part`): cross-generator/stylegan2/fake into train 40 % / select
30 % / report 30 %, cross-generator/unsplash/real into select 50 % / report 50 %. The choice of recipe reads
only the valid split and the select parts, by :data:`RULE` (:func:`choose`), written before any run; the chosen
variant's test split and report parts are then reported over its seeds. Two thresholds are measured: balanced
on valid (today's policy) and one fitted on reals alone (:data:`REALS_FPR` on each real source of the select
side). Every run also keeps ``weights.pt``, an fp16 weights-only copy of best.pt that
``fakeface.checkpoint.load_checkpoint`` still reads; the chosen variant's are packed into tars of at most 16 MiB.
``--score-runs`` scores runs made elsewhere (e.g. distilled students) the same way. Runs in parallel through
benchmarks/recipe_sweep.py's :func:`launch`.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import math
import os
import sys
import tarfile
import time
from pathlib import Path

import numpy as np
import torch
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from recipe_sweep import launch, merge, split_logits, sweep_arguments  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"
STYLEGAN2_PARTS = (("train", 0.4), ("select", 0.3), ("report", 0.3))
UNSPLASH_PARTS = (("select", 0.5), ("report", 0.5))
REALS_FPR = 0.02  # the reals-only threshold: at most this share of each real source's select side flagged
TAR_LIMIT = 16 * 1024 * 1024
# variant keys read by the sweep, not by TrainConfig: more training sources; a variant measured beside the
# others that is the same recipe (e.g. another code path) and so never a candidate of the rule
SWEEP_KEYS = ("sources", "report_only")

RULE = ("Among variants with every seed finished that train on the 140k sample alone: keep those whose mean "
        "Unsplash-select false-positive rate at the balanced-on-valid threshold is <= 0.03 and whose mean valid "
        "ROC-AUC is >= the base variant's - 0.01; choose the highest mean over seeds of (valid ROC-AUC + "
        "StyleGAN2-select ROC-AUC) / 2; within 0.001 of the best, the fewest FLOPs per image. If none is kept, "
        "the same without the false-positive condition (marked 'fallback'). Threshold policy: reals-only if its "
        "mean StyleGAN2-select caught rate is higher than balanced's while its mean Unsplash-select FPR is <= 0.03 "
        "and its mean valid accuracy >= balanced's - 0.02, else balanced.")
RULE_FPR, RULE_VALID_DROP, RULE_TIE = 0.03, 0.01, 0.001


# -- data parts -----------------------------------------------------------------------------------------------
def hash_part(name: str, parts) -> str:
    """The part (by cumulative fraction) a file name falls in: stable across machines, runs and file order."""
    u = int.from_bytes(hashlib.sha256(Path(name).name.encode()).digest()[:8], "big") / 2**64
    total = 0.0
    for part, fraction in parts:
        total += fraction
        if u < total:
            return part
    return parts[-1][0]


def cross_parts(cross: Path) -> dict[str, list[str]]:
    """{"stylegan2_train": [...], "stylegan2_select": ..., "stylegan2_report", "unsplash_select", "unsplash_report"}."""
    from fakeface.images import is_image_file

    out: dict[str, list[str]] = {}
    for kind, folder, parts in (("stylegan2", cross / "stylegan2" / "fake", STYLEGAN2_PARTS),
                                ("unsplash", cross / "unsplash" / "real", UNSPLASH_PARTS)):
        files = sorted(p for p in folder.iterdir() if is_image_file(p.name)) if folder.is_dir() else []
        if not files:
            raise SystemExit(f"no images in {folder}: --cross must name the cross-generator folder")
        for part, _ in parts:
            out[f"{kind}_{part}"] = []
        for p in files:
            out[f"{kind}_{hash_part(p.name, parts)}"].append(str(p))
    return out


def write_manifest(path: Path, data: str, extra_fakes: list[str], relative: bool = False) -> Path:
    """A fakeface manifest (path,label,split): the data's splits, plus ``extra_fakes`` in train; with
    ``relative`` the paths are relative to the manifest (a manifest to commit beside the repository's data)."""
    from fakeface import CLASS_NAMES
    from fakeface.data import discover

    rows = [(s.path, CLASS_NAMES[s.label], split) for split, ss in discover(data).splits.items() for s in ss]
    rows += [(p, "fake", "train") for p in extra_fakes]
    if relative:
        rows = [(os.path.relpath(p, path.parent.resolve()), label, split) for p, label, split in rows]
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        csv.writer(f).writerows([("path", "label", "split"), *rows])
    return path


def write_parts(folder: Path, data: str, cross: Path) -> list[Path]:
    """The parts as files to commit (paths relative to ``folder``): a list file of each part (benchmark suites
    read them: ``fakes:`` / ``images:``) and the manifest of the data plus the StyleGAN2 train part."""
    parts = cross_parts(cross)
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for name, files in parts.items():
        path = folder / f"{name.replace('_', '-')}.txt"
        path.write_text(f"# {name.replace('_', ' ')} part of {os.path.relpath(Path(files[0]).parent, folder.resolve())}"
                        f", by benchmarks/generalization_sweep.py's hash_part ({len(files)} images)\n"
                        + "".join(os.path.relpath(f, folder.resolve()) + "\n" for f in files))
        written.append(path)
    manifest = folder / "faces140k-plus-stylegan2.csv"
    written.append(write_manifest(manifest, data, parts["stylegan2_train"], relative=True))
    return written


# -- one run --------------------------------------------------------------------------------------------------
def flops_per_image(model: torch.nn.Module, size: int) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model.eval()(torch.zeros(1, 3, size, size))
    return float(counter.get_total_flops())


def reals_threshold(real_logit_sets: list[np.ndarray], fpr: float) -> float:
    """The lowest logit threshold (fake when logit >= it) flagging at most ``fpr`` of every given set of reals."""
    out = -math.inf
    for logits in real_logit_sets:
        s = np.sort(np.asarray(logits, np.float64))[::-1]
        k = int(math.floor(fpr * len(s)))
        if k < len(s):
            out = max(out, float(np.nextafter(s[k], math.inf)))
    return out


def score_checkpoint(path: Path, data: str, parts: dict[str, list[str]], workers: int,
                     limit: int | None = None) -> dict:
    """Everything the rule and the report read, for one checkpoint (see the module docstring)."""
    from sklearn.metrics import average_precision_score, roc_auc_score

    from fakeface import FAKE, REAL
    from fakeface.augment import perturb
    from fakeface.calibrate import pick_threshold
    from fakeface.checkpoint import load_checkpoint, model_from_checkpoint
    from fakeface.data import Sample, discover
    from fakeface.devices import resolve_device
    from fakeface.scoring import Scorer

    ckpt = load_checkpoint(path)
    model, preprocess = model_from_checkpoint(ckpt)
    flops = flops_per_image(model, preprocess.crop_size)
    scorer = Scorer(model, preprocess, resolve_device("auto"), "fp32")
    splits = discover(data).splits

    def cut(samples):
        return samples if limit is None else samples[:: max(1, len(samples) // limit)][:limit]

    def logits(samples, transform=None):
        plain, _, y = split_logits(scorer, preprocess, cut(samples), workers, transform)
        return plain.astype(np.float64), y  # float64: thresholds one step above a score must stay above it

    sets = {"valid": logits(splits["valid"]), "test": logits(splits["test"])}
    for name, label in (("stylegan2_select", FAKE), ("stylegan2_report", FAKE), ("unsplash_select", REAL),
                        ("unsplash_report", REAL)):
        sets[name] = logits([Sample(p, label) for p in parts[name]])
    for name, kind, level in (("jpeg50", "jpeg", 50), ("halfsize", "resize", 0.5)):
        sets[f"test_{name}"] = logits(splits["test"], lambda img, i, k=kind, lv=level: perturb(img, k, lv, i))

    def reals(name):
        x, y = sets[name]
        return x[y == 0]

    v_x, v_y = sets["valid"]
    t = pick_threshold(v_y, 1 / (1 + np.exp(-v_x)), "balanced")  # as calibrate picks it, on P(fake)
    thresholds = {"balanced": float(np.log(t / (1 - t))) if 0 < t < 1 else (math.inf if t >= 1 else -math.inf),
                  "reals": reals_threshold([reals("valid"), sets["unsplash_select"][0]], REALS_FPR)}

    def pair(fakes, reals_of):  # a generator's fakes against the reals of a split
        fx = sets[fakes][0]
        rx = reals(reals_of)
        return np.concatenate([fx, rx]), np.concatenate([np.ones(len(fx)), np.zeros(len(rx))])

    out = {"best_epoch": ckpt.get("best_epoch"), "flops": flops,
           "params": int(sum(p.numel() for p in model.parameters())),
           "train_seconds": float(sum(r["seconds"] for r in ckpt.get("history", []))),
           "device": torch.cuda.get_device_name() if torch.cuda.is_available() else "CPU", "torch": torch.__version__,
           "thresholds": {k: float(v) for k, v in thresholds.items()},
           "n": {k: int(len(v[0])) for k, v in sets.items()}}
    for name, (x, y) in {"valid": sets["valid"], "test": sets["test"],
                         "stylegan2_select": pair("stylegan2_select", "valid"),
                         "stylegan2_report": pair("stylegan2_report", "test")}.items():
        m = {"auc": float(roc_auc_score(y, x)), "ap": float(average_precision_score(y, x))}
        for policy, t in thresholds.items():
            m[f"acc_{policy}"] = float(((x >= t) == (y == 1)).mean())
            m[f"caught_{policy}"] = float((x[y == 1] >= t).mean())
            m[f"fpr_{policy}"] = float((x[y == 0] >= t).mean())
        out[name] = m
    for name in ("unsplash_select", "unsplash_report"):
        x = sets[name][0]
        out[name] = {f"fpr_{policy}": float((x >= t).mean()) for policy, t in thresholds.items()}
    for kind in ("jpeg50", "halfsize"):
        x, y = sets[f"test_{kind}"]
        out[f"test_{kind}_auc_change"] = float(roc_auc_score(y, x)) - out["test"]["auc"]
    return out


def run_one(args) -> None:
    """Child process: train one (variant, seed), keep weights.pt, score it into RUN_DIR/result.json."""
    from fakeface.hub import weights_copy
    from fakeface.train import TrainConfig, train

    run_dir = Path(args.run_dir)
    spec = json.loads((run_dir / "spec.json").read_text())
    if (run_dir / "result.json").is_file():
        return
    cfg = TrainConfig.from_dict({**spec["config"], "data": spec["data"], "out": str(run_dir), "seed": spec["seed"],
                                 "workers": args.workers})
    train(cfg, resume=(run_dir / "last.pt").is_file())
    weights_copy(run_dir / "best.pt", run_dir / "weights.pt")
    result = score_checkpoint(run_dir / "best.pt", spec["score_data"], spec["parts"], args.workers, spec["limit"])
    (run_dir / "last.pt").unlink(missing_ok=True)  # optimizer state: not needed once scored
    meta = {k: v for k, v in spec.items() if k not in ("parts", "config", "recipe")}
    (run_dir / "result.json").write_text(json.dumps({**meta, **result}, indent=1))


# -- choosing and reporting -----------------------------------------------------------------------------------
def _get(r: dict, key: str) -> float:
    d = r
    for part in key.split("."):
        d = d[part]
    return float(d)


def _mean(rs: list[dict], key: str) -> float:
    return float(np.mean([_get(r, key) for r in rs]))


def selection_score(r: dict) -> float:
    return (r["valid"]["auc"] + r["stylegan2_select"]["auc"]) / 2


def choose(results: list[dict], n_seeds: int, base: str = "base", report_only=()) -> dict | None:
    """:data:`RULE` over ``results`` (one dict per finished run: variant, trains_on, valid, stylegan2_select,
    unsplash_select, flops); the variants named in ``report_only`` are not candidates. Reads nothing from the test
    split or the report parts."""
    by = {}
    for r in results:
        by.setdefault(r["variant"], []).append(r)
    complete = {v: rs for v, rs in by.items() if len({r["seed"] for r in rs}) >= n_seeds
                and not rs[0].get("trains_on") and v not in report_only}
    if not complete:
        return None
    floor = _mean(by[base], "valid.auc") - RULE_VALID_DROP if base in by else -math.inf
    stats = {v: {"score": float(np.mean([selection_score(r) for r in rs])), "valid_auc": _mean(rs, "valid.auc"),
                 "fpr": _mean(rs, "unsplash_select.fpr_balanced"), "flops": _mean(rs, "flops")}
             for v, rs in complete.items()}
    fallback = False
    kept = [v for v, s in stats.items() if s["fpr"] <= RULE_FPR and s["valid_auc"] >= floor]
    if not kept:
        fallback, kept = True, [v for v, s in stats.items() if s["valid_auc"] >= floor] or list(stats)
    best = max(stats[v]["score"] for v in kept)
    tied = [v for v in kept if stats[v]["score"] >= best - RULE_TIE]
    variant = min(tied, key=lambda v: (stats[v]["flops"], -stats[v]["score"]))
    rs = complete[variant]
    reals_better = (_mean(rs, "stylegan2_select.caught_reals") > _mean(rs, "stylegan2_select.caught_balanced")
                    and _mean(rs, "unsplash_select.fpr_reals") <= RULE_FPR
                    and _mean(rs, "valid.acc_reals") >= _mean(rs, "valid.acc_balanced") - 0.02)
    return {"variant": variant, "fallback": fallback, "policy": "reals" if reals_better else "balanced",
            "kept": sorted(kept), "stats": stats}


COLUMNS_SELECT = [("valid AUC", "valid.auc"), ("SG2-select AUC", "stylegan2_select.auc"),
                  ("SG2-select caught (bal)", "stylegan2_select.caught_balanced"),
                  ("SG2-select caught (reals)", "stylegan2_select.caught_reals"),
                  ("Unsplash-select FPR (bal)", "unsplash_select.fpr_balanced"),
                  ("valid acc (bal)", "valid.acc_balanced")]
COLUMNS_REPORT = [("test acc (bal)", "test.acc_balanced"), ("test AUC", "test.auc"),
                  ("SG2-report AUC", "stylegan2_report.auc"), ("SG2-report AP", "stylegan2_report.ap"),
                  ("SG2-report caught (bal)", "stylegan2_report.caught_balanced"),
                  ("SG2-report caught (reals)", "stylegan2_report.caught_reals"),
                  ("Unsplash-report FPR (bal)", "unsplash_report.fpr_balanced"),
                  ("Unsplash-report FPR (reals)", "unsplash_report.fpr_reals"),
                  ("AUC change JPEG 50", "test_jpeg50_auc_change"), ("AUC change 0.5x", "test_halfsize_auc_change")]


def variant_recipe(base: dict, variant: dict | None) -> tuple[dict, list[str]]:
    """(the train config of ``variant`` laid over ``base``, the extra training sources it names)."""
    changed = dict(variant or {})
    sweep_keys = {k: changed.pop(k) for k in SWEEP_KEYS if k in changed}
    return merge(base, changed), sweep_keys.get("sources") or []


def report_only_variants(variants: dict) -> set[str]:
    """The variants measured beside the others but never chosen (``report_only: true`` in the variants file)."""
    return {n for n, v in variants.items() if (v or {}).get("report_only")}


def _ms(rs: list[dict], key: str) -> str:
    x = np.array([_get(r, key) for r in rs])
    return f"{x.mean():.3f} ± {x.std():.3f}" if len(x) > 1 else f"{x[0]:.3f}"


def tables(results: list[dict], names: list[str], report_only=()) -> str:
    by = {n: [r for r in results if r["variant"] == n] for n in names}
    by = {n: rs for n, rs in by.items() if rs}
    order = sorted(by, key=lambda n: -np.mean([selection_score(r) for r in by[n]]))
    parts = []
    for title, cols, extra in (
            ("What the choice reads (valid split, select parts)", COLUMNS_SELECT, True),
            ("Reported only, never used to choose (test split, report parts)", COLUMNS_REPORT, False)):
        header = ["variant", "seeds"] + (["score"] if extra else []) + [c for c, _ in cols] + (
            ["GFLOPs", "train s"] if extra else [])
        lines = [f"### {title}", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        for n in order:
            rs = by[n]
            mark = (" (trains on StyleGAN2)" if rs[0].get("trains_on")
                    else " (reported only)" if n in report_only else "")
            row = [n + mark, str(len(rs))]
            if extra:
                s = np.array([selection_score(r) for r in rs])
                row.append(f"{s.mean():.3f} ± {s.std():.3f}" if len(s) > 1 else f"{s[0]:.3f}")
            row += [_ms(rs, k) for _, k in cols]
            if extra:
                row += [f"{_mean(rs, 'flops') / 1e9:.2f}", f"{_mean(rs, 'train_seconds'):.0f}"]
            lines.append("| " + " | ".join(row) + " |")
        parts.append("\n".join(lines))
    return "\n\n".join(parts)


def doc_intro(title: str, results: list[dict], command: str) -> list[str]:
    """A doc's title (with the devices that scored), the command that made it and how to read its tables."""
    devices = sorted({f"{r.get('device', '?')}, torch {r.get('torch', '?')}" for r in results}) or ["no run finished"]
    n = results[0]["n"] if results else {}
    return [f"# {title} ({'; '.join(devices)})", "",
            f"Made by `{command}`.", "",
            "Trained on the 140k sample (one variant also on a StyleGAN2 train part); StyleGAN2 (cross-generator) "
            "is the generator held out. Parts by a hash of each file name: StyleGAN2 train/select/report 40/30/30 %, "
            "Unsplash select/report 50/50 %. SG2-select is scored against the valid split's reals, SG2-report "
            "against the test split's. Thresholds: 'bal' = balanced (equal error) on valid; 'reals' = the lowest "
            f"that flags at most {REALS_FPR:.0%} of the valid reals and of the Unsplash-select reals. "
            "score = (valid AUC + SG2-select AUC) / 2. Mean ± std over seeds." + (
                f" Images: {json.dumps(n)}." if n else ""), ""]


def write_doc(path: Path, results: list[dict], variants: dict, names: list[str], chosen: dict | None,
              command: str, failed=()) -> None:
    doc = doc_intro("Generalization sweep: leave one generator out", results, command) + [
        f"Rule, fixed before the runs: {RULE}", "", tables(results, names, report_only_variants(variants)), ""]
    if chosen:
        fallback = " (fallback: no variant met the FPR condition)" if chosen["fallback"] else ""
        doc += [f"**Chosen: `{chosen['variant']}`**{fallback}, threshold policy `{chosen['policy']}`; kept by the "
                f"rule: {', '.join(chosen['kept'])}.", ""]
    else:
        doc += ["No variant finished every seed: nothing chosen.", ""]
    doc += ["Variants:", ""] + [f"- `{v}`: `{json.dumps(variants[v] or {})}`" for v in names
                                 if any(r["variant"] == v for r in results)]
    if failed:
        doc += ["", "Failed or stopped before the end: " + ", ".join(failed)]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(doc) + "\n")


def pack(weights: list[tuple[str, Path]], out_dir: Path, prefix: str) -> list[str]:
    """Tar ``(name, file)`` pairs, in order, as ``prefix-1.tar``, ``prefix-2.tar``, ... each under 16 MiB."""
    out_dir.mkdir(parents=True, exist_ok=True)
    groups, size = [[]], 0
    for name, path in weights:
        n = path.stat().st_size + 4096
        if groups[-1] and size + n > TAR_LIMIT - 65536:
            groups.append([])
            size = 0
        groups[-1].append((name, path))
        size += n
    names = []
    for i, group in enumerate(g for g in groups if g):
        target = out_dir / f"{prefix}-{i + 1}.tar"
        with tarfile.open(target, "w") as tar:
            for name, path in group:
                tar.add(path, arcname=name)
        names.append(target.name)
    return names


def _load_results(out: Path, names) -> list[dict]:
    found = [json.loads(p.read_text()) for p in sorted(out.glob("*/result.json"))]
    return [r for r in found if r["variant"] in names]


def score_runs(args) -> None:
    """--score-runs: score checkpoints or run folders made elsewhere; results.json and optional tars."""
    from fakeface.hub import weights_copy

    parts = cross_parts(Path(args.cross))
    out = Path(args.results_dir)
    out.mkdir(parents=True, exist_ok=True)
    names = args.variant or []
    if len(names) not in (0, 1, len(args.score_runs)):
        raise SystemExit(f"error: --variant takes one name for all runs or one per run ({len(args.score_runs)}), "
                         f"got {len(names)}")
    results, weights = [], []
    for i, run in enumerate(args.score_runs):
        run = Path(run)
        ckpt = run / "best.pt" if run.is_dir() else run
        try:
            r = score_checkpoint(ckpt, args.data, parts, args.workers, args.limit_score)
        except Exception as e:  # one broken run must not lose the others' numbers
            print(f"{run}: not scored ({type(e).__name__}: {e})", flush=True)
            continue
        name = (names[i] if len(names) > 1 else names[0]) if names else (run.name if run.is_dir() else run.stem)
        results.append({"variant": name, "seed": sum(r["variant"] == name for r in results), "path": str(run), **r})
        small = ckpt.with_name("weights.pt") if ckpt.name != "weights.pt" else ckpt
        if not small.is_file():
            weights_copy(ckpt, small)
        weights.append((f"{name}-{i}.pt", small))
        (out / "scored.json").write_text(json.dumps(results, indent=1))
    table = tables(results, list(dict.fromkeys(r["variant"] for r in results)))
    print(table)
    if args.doc:
        command = "python benchmarks/generalization_sweep.py " + " ".join(sys.argv[1:])
        runs = [f"- `{r['variant']}` {r['seed']}: `{r['path']}`" for r in results]
        Path(args.doc).parent.mkdir(parents=True, exist_ok=True)
        Path(args.doc).write_text("\n".join(doc_intro("Scored runs: leave one generator out", results, command)
                                            + [table, "", "Runs:", "", *runs]) + "\n")
        print(f"wrote {args.doc}")
    if args.pack_prefix and weights:  # the scores travel in the first tar: one file fewer to bring back
        print("packed:", ", ".join(pack([("scored.json", out / "scored.json"), *weights], out, args.pack_prefix)))


def main() -> None:
    ap = sweep_arguments(__doc__, "configs/experiments/generalization-base.yaml",
                         "benchmarks/generalization_variants.yaml", jobs=8, workers=2, budget_min=4.5)
    ap.add_argument("--cross", default=str(SHARED / "cross-generator"))
    ap.add_argument("--override", default=None, help="JSON laid over every variant's config (tiny test runs)")
    ap.add_argument("--limit-score", type=int, default=None, help="score at most this many images of each set")
    ap.add_argument("--out", default="runs/generalization", help="the run folders")
    ap.add_argument("--results-dir", default=None, help="sweep.json, chosen.json, the doc and tars (default: --out)")
    ap.add_argument("--doc", default=None, help="also write the markdown here")
    ap.add_argument("--pack-prefix", default=None, help="tar the chosen (or scored) weights as PREFIX-N.tar")
    ap.add_argument("--score-runs", nargs="+", help="score these runs or checkpoints instead of sweeping")
    ap.add_argument("--variant", nargs="+", default=None,
                    help="with --score-runs: one name for all (seeds of one recipe), or one per run")
    ap.add_argument("--write-parts", metavar="DIR", help="write the parts' list files and the manifest with the "
                    "StyleGAN2 train part into DIR (paths relative to it), and stop")
    ap.add_argument("--run-dir", help=argparse.SUPPRESS)  # child mode
    args = ap.parse_args()
    if args.run_dir:
        return run_one(args)
    if args.write_parts:
        for path in write_parts(Path(args.write_parts), args.data, Path(args.cross)):
            print(f"wrote {path}")
        return
    args.results_dir = args.results_dir or args.out
    if args.score_runs:
        return score_runs(args)

    variants = yaml.safe_load(Path(args.variants).read_text())
    base = yaml.safe_load(Path(args.base).read_text())
    names = [n for n in variants if not args.only or n in args.only]
    if not names:
        raise SystemExit(f"no variant of {args.variants} is named by --only {' '.join(args.only or [])}")
    override = json.loads(args.override) if args.override else {}
    out, res_dir = Path(args.out), Path(args.results_dir)
    out.mkdir(parents=True, exist_ok=True)
    res_dir.mkdir(parents=True, exist_ok=True)
    parts = cross_parts(Path(args.cross))
    command = "python benchmarks/generalization_sweep.py " + " ".join(sys.argv[1:])
    queue = []
    for name in names:  # variant-major: the first variants get all their seeds
        recipe, sources = variant_recipe(base, variants[name])
        data = args.data
        if "stylegan2" in sources:
            data = str(write_manifest(out / "manifest-stylegan2.csv", args.data, parts["stylegan2_train"]))
        config = merge(recipe, override)
        for seed in args.seeds:
            run_dir = out / f"{name}-s{seed}"
            run_dir.mkdir(parents=True, exist_ok=True)
            spec = {"variant": name, "seed": seed, "data": data, "score_data": args.data, "command": command,
                    "trains_on": sources, "overrides": variants[name] or {}, "config": config, "recipe": recipe,
                    "parts": parts, "limit": args.limit_score}
            (run_dir / "spec.json").write_text(json.dumps(spec))
            queue.append(run_dir)

    def report(failed=()) -> dict | None:
        results = _load_results(out, names)
        chosen = choose(results, len(args.seeds), base=names[0] if "base" not in names else "base",
                        report_only=report_only_variants(variants))
        (res_dir / "sweep.json").write_text(json.dumps(results, indent=1))
        for doc in {res_dir / "generalization.md", *([Path(args.doc)] if args.doc else [])}:
            write_doc(doc, results, variants, names, chosen, command, failed)
        return chosen

    def on_exit(run_dir, code):
        try:
            if code != 0:
                print(f"--- {run_dir.name} failed; the end of its log:\n" +
                      "\n".join((run_dir / "sweep.log").read_text(errors="replace").splitlines()[-15:]), flush=True)
            report()
        except Exception as e:  # a report that fails now must not stop the runs still going
            print(f"could not tabulate after {run_dir.name}: {type(e).__name__}: {e}", flush=True)

    t0 = time.time()
    failed = launch(queue, lambda run_dir: [sys.executable, __file__, "--run-dir", str(run_dir), "--workers",
                                            str(args.workers)], args.jobs, args.budget_min, args.kill_min, on_exit)
    chosen = report(failed)
    results = _load_results(out, names)
    print(tables(results, names, report_only_variants(variants)))
    print(f"sweep: {len(results)} runs in {(time.time() - t0) / 60:.1f} min; failed or stopped: "
          f"{', '.join(failed) or 'none'}")
    if not chosen:
        print("nothing chosen: no variant finished every seed")
        return
    runs = sorted((r for r in results if r["variant"] == chosen["variant"]), key=lambda r: r["seed"])
    # the recipe as a config file takes it, without --override's test-size settings
    config = json.loads((out / f"{chosen['variant']}-s{runs[0]['seed']}" / "spec.json").read_text())["recipe"]
    if chosen["policy"] == "reals":  # calibrate's fpr policy reads the valid reals alone: the nearest it has
        config = {**config, "calibrate": f"fpr={REALS_FPR}"}
    summary = {key: _ms(runs, key) for _, key in COLUMNS_SELECT + COLUMNS_REPORT}
    record = {"rule": RULE, **chosen, "config": config, "config_yaml": yaml.safe_dump(config, sort_keys=False),
              "summary": summary, "runs": runs,
              "run_dirs": [str(out / f"{r['variant']}-s{r['seed']}") for r in runs]}
    (res_dir / "chosen.json").write_text(json.dumps(record, indent=1))  # first: packing can still fail
    if args.pack_prefix:
        record["tars"] = pack([(f"{r['variant']}-s{r['seed']}.pt", out / f"{r['variant']}-s{r['seed']}" / "weights.pt")
                               for r in runs], res_dir, args.pack_prefix)
        (res_dir / "chosen.json").write_text(json.dumps(record, indent=1))
    print(f"chosen: {chosen['variant']} (policy {chosen['policy']}{', fallback' if chosen['fallback'] else ''}); "
          + "; ".join(f"{k} {v}" for k, v in summary.items()))
    print("chosen runs:", " ".join(record["run_dirs"]))


if __name__ == "__main__":
    main()
