"""Distil a teacher into one student per seed, side by side on one device, and compare them with the teacher.

    python benchmarks/distill_seeds.py --teacher RUN [RUN ...] --data DATA --out DIR [--seeds 0 1 2] [--jobs 3]
        [--budget-min 1.5] [--config configs/distill.yaml] [--extra-list FILE] [--workers N] [--device auto]
        [--export]

Trains ``fakeface.distill.distill`` students into DIR/seed0, DIR/seed1, ... in ``--jobs`` processes at once
(sharing the device and the cores: each gets cores // jobs loader workers), each stopping after the epoch that
spends ``--budget-min`` minutes of training. Then scores the teacher and every student on the data's valid
split, each at its own calibrated threshold, and writes DIR/distill.json: ROC-AUC, accuracy and images of each,
and the students' mean. Each student also gets DIR/seedS/weights.pt, a weights-only fp16 copy of its best.pt
(what ``fakeface.checkpoint.load_checkpoint`` and ``model_from_checkpoint`` read), small enough to bring back.
``--extra-list`` is a text file of unlabelled image paths the teacher scores for the students too.
The ONNX export after training is off unless ``--export``: it runs on the CPU, beside the other students.
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

from fakeface.hub import weights_copy
from fakeface.text import fmt


def valid_scores(detector_path, data: str) -> dict:
    """ROC-AUC and accuracy at the detector's own calibrated threshold on the data's valid split."""
    from fakeface.calibrate import validation_samples
    from fakeface.detector import load_detector
    from fakeface.evaluate import score_samples

    detector = load_detector(detector_path)
    first = detector.members[0].checkpoint
    samples = validation_samples({"path": first["path"]}, data)
    m = score_samples(detector, samples, workers=None)
    return {"roc_auc": m.get("roc_auc"), "accuracy": m.get("accuracy"), "threshold": float(detector.threshold),
            "n": len(samples)}


def train_one(args) -> None:
    """The child process: one student."""
    from fakeface.distill import distill

    overrides = {"seed": args.seed, "max_minutes": args.budget_min, "workers": args.workers, "device": args.device,
                 "export": "auto" if args.export else "none"}
    if args.extra_list:
        overrides["distill"] = {"extra_data": [args.extra_list]}
    distill(args.teacher if len(args.teacher) > 1 else args.teacher[0], args.data, args.out, args.config,
            **overrides)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--teacher", nargs="+", required=True, help="run folder(s) or checkpoint(s) of the teacher")
    ap.add_argument("--data", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--jobs", type=int, default=3, help="students trained at once")
    ap.add_argument("--budget-min", type=float, default=None, help="training minutes per student (after the epoch)")
    ap.add_argument("--config", default=str(Path(__file__).resolve().parents[1] / "configs" / "distill.yaml"))
    ap.add_argument("--extra-list", default=None, help="text file of unlabelled image paths")
    ap.add_argument("--workers", type=int, default=None, help="loader workers per student (default: cores // jobs)")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--export", action="store_true", help="write each student's ONNX export too")
    ap.add_argument("--seed", type=int, help=argparse.SUPPRESS)  # set in the child processes
    args = ap.parse_args()
    if args.seed is not None:
        return train_one(args)
    for path in [*args.teacher, args.data, args.config, *([args.extra_list] if args.extra_list else [])]:
        if not Path(path).exists():
            sys.exit(f"error: {path} does not exist")
    if args.jobs < 1 or args.budget_min is not None and args.budget_min <= 0:
        sys.exit("error: --jobs must be >= 1 and --budget-min > 0")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    workers = args.workers if args.workers is not None else max(1, (os.cpu_count() or 2) // args.jobs - 1)

    t0 = time.perf_counter()
    pending, running, failed = list(args.seeds), {}, []
    while pending or running:
        while pending and len(running) < args.jobs:
            seed = pending.pop(0)
            cmd = [sys.executable, __file__, "--teacher", *args.teacher, "--data", args.data, "--out",
                   str(out / f"seed{seed}"), "--config", args.config, "--seed", str(seed), "--workers", str(workers),
                   "--device", args.device, *(["--budget-min", str(args.budget_min)] if args.budget_min else []),
                   *(["--extra-list", args.extra_list] if args.extra_list else []),
                   *(["--export"] if args.export else [])]
            log = open(out / f"seed{seed}.log", "w")
            running[seed] = (subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT), log)
            print(f"seed {seed}: training -> {out / f'seed{seed}'} (log {log.name})", flush=True)
        for seed, (proc, log) in list(running.items()):
            if proc.poll() is not None:
                log.close()
                del running[seed]
                status = "done" if proc.returncode == 0 else f"FAILED (exit {proc.returncode}, see {log.name})"
                print(f"seed {seed}: {status} after {time.perf_counter() - t0:.0f}s", flush=True)
                if proc.returncode:
                    failed.append(seed)
        time.sleep(0.5)
    train_s = time.perf_counter() - t0

    teacher = args.teacher if len(args.teacher) > 1 else args.teacher[0]
    result = {"teacher": {"path": args.teacher, **valid_scores(teacher, args.data)}, "students": {},
              "train_seconds": round(train_s, 1), "budget_min": args.budget_min, "config": args.config,
              "failed_seeds": failed}
    print(f"{'':<10} {'valid ROC-AUC':>14} {'accuracy':>9} {'threshold':>10}")
    t = result["teacher"]
    print(f"{'teacher':<10} {fmt(t['roc_auc']):>14} {fmt(t['accuracy']):>9} {fmt(t['threshold']):>10}")
    for seed in args.seeds:
        run = out / f"seed{seed}"
        if seed in failed or not (run / "best.pt").is_file():
            continue
        weights = weights_copy(run / "best.pt", run / "weights.pt")
        ckpt = torch.load(run / "last.pt", map_location="cpu", weights_only=True)
        s = result["students"][seed] = {"path": str(run), "weights": str(weights),
                                        "weights_mb": round(weights.stat().st_size / 1e6, 2),
                                        "epochs": ckpt["epoch"], **valid_scores(run, args.data)}
        print(f"{'seed ' + str(seed):<10} {fmt(s['roc_auc']):>14} {fmt(s['accuracy']):>9} {fmt(s['threshold']):>10}")
    students = [s for s in result["students"].values() if s["roc_auc"] is not None]
    if students and t["roc_auc"] is not None:
        mean = {k: float(np.mean([s[k] for s in students])) for k in ("roc_auc", "accuracy")}
        result["students_mean"] = {**mean, "roc_auc_gap": t["roc_auc"] - mean["roc_auc"],
                                   "accuracy_gap": t["accuracy"] - mean["accuracy"]}
        print(f"{'mean':<10} {mean['roc_auc']:14.4f} {mean['accuracy']:9.4f}   "
              f"(teacher - students: ROC-AUC {result['students_mean']['roc_auc_gap']:+.4f}, "
              f"accuracy {result['students_mean']['accuracy_gap']:+.4f})")
    (out / "distill.json").write_text(json.dumps(result, indent=2))
    print(f"wrote {out / 'distill.json'}")
    if failed:
        sys.exit(1)


if __name__ == "__main__":
    main()
