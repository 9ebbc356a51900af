"""Peak memory of `fakeface predict` on a small and a 10x larger folder, side by side in one run.

    python benchmarks/predict_memory.py [--small 400] [--large 4000] [--size 96]

Builds folders of symbolic links to generated JPEGs, scores each with `fakeface predict --csv` in its own
process, and prints each run's peak resident memory (the largest process: the predictor or a loader worker)
and the large/small ratio. Streaming prediction keeps the ratio near 1.0: memory must not grow with the
number of images (a list of decoded images would grow ~10x).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from fakeface.checkpoint import make_checkpoint, save_atomic
from fakeface.models import create_model, default_preprocess

MEASURE = """
import resource, subprocess, sys
subprocess.run(sys.argv[1:], check=True, stdout=subprocess.DEVNULL)
print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
"""


def build_folder(root: Path, n: int, sources: list[Path]) -> Path:
    root.mkdir(parents=True)
    for i in range(n):
        sub = root / f"{i // 1000:03d}"
        sub.mkdir(exist_ok=True)
        os.symlink(sources[i % len(sources)], sub / f"{i:06d}.jpg")
    return root


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--small", type=int, default=400)
    ap.add_argument("--large", type=int, default=4000)
    ap.add_argument("--size", type=int, default=96, help="model input size of the throw-away checkpoint")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        rng = np.random.default_rng(0)
        sources = []
        for i in range(64):
            path = tmp / f"src{i}.jpg"
            Image.fromarray(rng.integers(0, 256, (256, 256, 3), dtype=np.uint8)).save(path, quality=90)
            sources.append(path)
        name = "inception_resnet_v1"
        pre = default_preprocess(name).replace(input_size=args.size, resize=args.size)
        ckpt = tmp / "model.pt"
        save_atomic(make_checkpoint(create_model(name), name, {}, pre), ckpt)
        results = {}
        for label, n in (("small", args.small), ("large", args.large)):
            folder = build_folder(tmp / label, n, sources)
            cmd = [sys.executable, "-m", "fakeface", "predict", "--checkpoint", str(ckpt), str(folder),
                   "--csv", str(tmp / f"{label}.csv"), "--json"]
            t0 = time.perf_counter()
            out = subprocess.run([sys.executable, "-c", MEASURE, *cmd], check=True, capture_output=True, text=True)
            seconds = time.perf_counter() - t0
            rss = int(out.stdout.strip().splitlines()[-1]) / 2**10
            results[label] = rss
            print(f"{label:>5}: {n:>6} images  peak RSS {rss:7.1f} MiB  {n / seconds:6.1f} img/s end to end")
        print(f"ratio large/small peak RSS: {results['large'] / results['small']:.2f} "
              f"for {args.large / args.small:.0f}x the images (flat memory: close to 1.0)")


if __name__ == "__main__":
    main()
