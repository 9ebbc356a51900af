"""Decoding and resizing a face, ours against Pillow alone, side by side in one run.

    python benchmarks/decode.py [--images 200] [--rounds 5] [--sizes 160 224 384] [--data DIR]

On the test JPEGs of the 140k sample (--data, default ../shared/data/faces140k-sample; 256 px; seeded noise
JPEGs without it), one thread, milliseconds per image:

* decode: ``fakeface.images.load_pixels`` (what ``predict`` and ``evaluate`` decode with: simplejpeg for plain
  JPEGs) against Pillow's ``Image.open(...).convert("RGB")`` - both from the file's bytes in memory, both ending
  in a numpy array;
* resize: ``fakeface.preprocess.resize_pixels`` (PyTorch's uint8 anti-aliased kernels) against Pillow's
  ``Image.resize`` with the same filter, from the decoded pixels to each ``--sizes`` side;

and the largest and mean difference in grey levels between the two. Every measurement runs once per round,
interleaved with the others, and keeps its best round (the machine is shared: a busy round only ever adds time).
"""

from __future__ import annotations

import argparse
import io
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from fakeface.images import load_pixels
from fakeface.preprocess import _RESAMPLE, resize_pixels

SAMPLE = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "faces140k-sample"


def jpegs(data: Path, n: int) -> list[bytes]:
    files = sorted((data / "real_vs_fake" / "real-vs-fake" / "test").glob("*/*.jpg"))[:n]
    if files:
        return [f.read_bytes() for f in files]
    rng, out = np.random.default_rng(0), []
    for _ in range(n):
        buf = io.BytesIO()
        small = Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8))
        small.resize((256, 256), Image.Resampling.BICUBIC).save(buf, "JPEG", quality=75)
        out.append(buf.getvalue())
    return out


def ms_per_item(fn, items) -> float:
    t0 = time.perf_counter()
    for item in items:
        fn(item)
    return (time.perf_counter() - t0) / len(items) * 1e3


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=200)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--sizes", type=int, nargs="+", default=[160, 224, 384])
    ap.add_argument("--interpolation", default="bilinear", choices=["bilinear", "bicubic"])
    ap.add_argument("--data", type=Path, default=SAMPLE)
    args = ap.parse_args()
    torch.set_num_threads(1)

    blobs = jpegs(args.data, args.images)
    pixels = [load_pixels(b) for b in blobs]
    filt = _RESAMPLE[args.interpolation]
    pairs = {"decode": (load_pixels,
                        lambda b: np.asarray(Image.open(io.BytesIO(b)).convert("RGB")), blobs)}
    for s in args.sizes:
        pairs[f"resize to {s}"] = (lambda p, s=s: resize_pixels(p, (s, s), args.interpolation),
                                   lambda p, s=s: np.asarray(Image.fromarray(p).resize((s, s), filt)), pixels)
    best: dict[tuple[str, str], float] = {}
    for _ in range(args.rounds):
        for name, (ours, pillow, items) in pairs.items():
            for who, fn in (("ours", ours), ("pillow", pillow)):
                ms = ms_per_item(fn, items)
                best[name, who] = min(best.get((name, who), ms), ms)

    print(f"{len(blobs)} JPEGs of {pixels[0].shape[1]}x{pixels[0].shape[0]} px, {args.interpolation}, one thread, "
          f"ms per image, best of {args.rounds} interleaved rounds")
    print(f"{'step':<16}{'ours':>8}{'pillow':>8}{'pillow/ours':>13}{'max diff':>10}{'mean diff':>11}")
    for name, (ours, pillow, items) in pairs.items():
        diffs = [np.abs(ours(x).astype(int) - pillow(x).astype(int)) for x in items[:50]]
        a, b = best[name, "ours"], best[name, "pillow"]
        print(f"{name:<16}{a:>8.3f}{b:>8.3f}{b / a:>13.2f}{max(int(d.max()) for d in diffs):>10d}"
              f"{float(np.mean([d.mean() for d in diffs])):>11.4f}")


if __name__ == "__main__":
    main()
