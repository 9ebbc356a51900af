"""`fakeface predict DIR` end to end, this checkout against an earlier commit, side by side in one run.

    python benchmarks/predict_versions.py [--base 6858274] [--checkpoint runs/x/best.pt] [--data DIR] [--rounds 3]

Checks that a change (a refactor, a new default) did not make prediction slower: each round runs the same
command once per version and backend, alternating, each in a fresh process (import, load, decode, score, write
CSV), and keeps every wall time; it prints the median images/s of each and the ratio this checkout / base. The
base's source comes from ``git worktree`` (removed afterwards); both run in this interpreter's environment.
Backends: ``pytorch`` (the checkpoint) and ``onnx`` (an fp32 export of it, made once with this checkout and
given to both as a file).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SAMPLE_TEST = REPO.parent / "shared" / "data" / "faces140k-sample" / "real_vs_fake" / "real-vs-fake" / "test"


def predict_seconds(src: Path, source: Path, data: Path, backend: str, out: Path) -> float:
    env = {**os.environ, "PYTHONPATH": str(src)}
    t0 = time.perf_counter()
    res = subprocess.run([sys.executable, "-m", "fakeface", "predict", "--checkpoint", str(source), str(data),
                          "--backend", backend, "--csv", str(out)], capture_output=True, text=True, env=env)
    if res.returncode:
        sys.exit(f"error: predict with {src} failed:\n{res.stderr.strip()[-2000:]}")
    return time.perf_counter() - t0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--base", default="6858274", help="the commit to compare with")
    ap.add_argument("--checkpoint", type=Path, required=True, help="a best.pt both versions can load")
    ap.add_argument("--data", type=Path, default=SAMPLE_TEST, help="a folder of images")
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args(argv)
    n_images = sum(1 for p in args.data.rglob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    if not n_images:
        sys.exit(f"error: no images under {args.data}")
    with tempfile.TemporaryDirectory(prefix="fakeface-versions-") as tmp:
        tmp = Path(tmp)
        base = tmp / "base"
        subprocess.run(["git", "-C", str(REPO), "worktree", "add", "-q", "--detach", str(base), args.base], check=True)
        try:
            sys.path.insert(0, str(REPO / "src"))
            from fakeface.export import export_onnx

            onnx = tmp / "model.onnx"
            export_onnx(args.checkpoint, onnx)
            sources = {"pytorch": args.checkpoint, "onnx": onnx}
            versions = {"base": base / "src", "this": REPO / "src"}
            times: dict[tuple[str, str], list[float]] = {}
            for r in range(args.rounds):
                for backend, source in sources.items():
                    for name, src in versions.items():
                        seconds = predict_seconds(src, source, args.data, backend, tmp / f"{name}.csv")
                        times.setdefault((name, backend), []).append(seconds)
                print(f"round {r + 1}/{args.rounds} done", flush=True)
        finally:
            subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(base)], check=False)
    base_rev = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", args.base], capture_output=True,
                              text=True).stdout.strip()
    head_rev = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True).stdout.strip()
    print(f"predict on {n_images} images ({args.data}), {args.rounds} rounds, {os.cpu_count()} cores; "
          f"base {base_rev}, this checkout {head_rev}")
    print("| backend | base images/s | this images/s | this / base |")
    print("|---|---|---|---|")
    for backend in sources:
        rates = {name: n_images / statistics.median(times[(name, backend)]) for name in versions}
        print(f"| {backend} | {rates['base']:.1f} | {rates['this']:.1f} | {rates['this'] / rates['base']:.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
