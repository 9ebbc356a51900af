"""Which int8 quantization of a detector is fastest at equal accuracy: the shipped one against its alternatives.

    python benchmarks/int8_variants.py [--checkpoint src/fakeface/default] [--data ../shared/data/faces140k-sample]
                                       [--calibration-images 300] [--histogram-images 100] [--rounds 3]
                                       [--only NAME ...] [--doc docs/experiments/int8-variants.md]

The checkpoint is exported to ONNX fp32 once; each variant quantizes that file (``fakeface.export.quantize_int8``)
on a seeded sample of the data's train split and is judged as ``fakeface export``'s accuracy guard judges it: on
the valid split, at the checkpoint's own threshold and temperature (accuracy drop in points, ROC-AUC drop, share
of verdicts unchanged, largest change of P(fake)). Speed is model-only images/s of one batch of 32 valid faces on
all of torch's threads, every variant and fp32 interleaved round by round, each keeping its best round (a shared
machine only ever takes time away), printed as a ratio to fp32 measured in the same rounds.
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch

from fakeface.checkpoint import load_checkpoint, model_from_checkpoint
from fakeface.data import discover
from fakeface.export import ImageCalibrationReader, export_onnx, quantize_int8, weights_7bit
from fakeface.images import load_image
from fakeface.metrics import compute_metrics
from fakeface.scoring import p_fake
from fakeface.text import md_table

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO.parent / "shared" / "data" / "faces140k-sample"
BATCH = 32
# Calibration batches: the histogram calibrators stack batches into one array, so every batch must be this size.
CALIBRATION_BATCH = 20

# name -> (quantize_int8 settings, calibrated on the histogram budget of images rather than the full one). An
# export gets 7- or 8-bit weights as its CPU allows (weights_7bit): the next two rows are both, and each later one
# changes one setting of what this CPU ships.
VARIANTS = {
    "shipped: QDQ, per-channel, MinMax": ({}, False),
    "7-bit weights (reduce_range)": ({"reduce_range": True}, False),
    "8-bit weights": ({"reduce_range": False}, False),
    "per-tensor weights": ({"per_channel": False}, False),
    "QOperator": ({"quant_format": "qoperator"}, False),
    "int8 activations (s8s8)": ({"activations": "int8"}, False),
    "ReLU6 quantized on its own": ({"fuse_relu6": False}, False),
    "depthwise convolutions fp32": ({"keep_fp32": ["depthwise"]}, False),
    "first and last convolutions fp32": ({"keep_fp32": ["first-conv", "last-conv"]}, False),
    "MinMax, fewer images": ({}, True),
    "Percentile 99.999": ({"calibration": "percentile"}, True),
    "Entropy": ({"calibration": "entropy"}, True),
}


def session(path: Path) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads, opts.inter_op_num_threads = torch.get_num_threads(), 1
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def logits(sess: ort.InferenceSession, pixels: np.ndarray) -> np.ndarray:
    return np.concatenate([sess.run(None, {"pixels": pixels[i:i + BATCH]})[0] for i in range(0, len(pixels), BATCH)])


def images_per_s(sess: ort.InferenceSession, batch: np.ndarray, reps: int = 4) -> float:
    sess.run(None, {"pixels": batch})  # warm-up: thread pool, kernel selection
    t0 = time.perf_counter()
    for _ in range(reps):
        sess.run(None, {"pixels": batch})
    return reps * len(batch) / (time.perf_counter() - t0)


def guard_numbers(y: np.ndarray, p32: np.ndarray, p8: np.ndarray, threshold: float) -> dict:
    """What the accuracy guard compares, both models at the checkpoint's threshold (drops in points)."""
    m32, m8 = compute_metrics(y, p32, threshold), compute_metrics(y, p8, threshold)
    return {"accuracy_drop": 100 * (m32["accuracy"] - m8["accuracy"]),
            "roc_auc_drop": m32["roc_auc"] - m8["roc_auc"],
            "agreement": float(((p32 >= threshold) == (p8 >= threshold)).mean()),
            "max_abs_diff_p": float(np.abs(p32 - p8).max())}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--checkpoint", default=str(REPO / "src" / "fakeface" / "default"))
    ap.add_argument("--data", default=str(SAMPLE))
    ap.add_argument("--calibration-images", type=int, default=300, help="fakeface export's default")
    ap.add_argument("--histogram-images", type=int, default=100, help="for the variants marked so (memory)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--only", nargs="+", choices=list(VARIANTS), help="these variants only")
    ap.add_argument("--doc", type=Path, help="write the table and the command here (markdown)")
    args = ap.parse_args(argv)
    for n in (args.calibration_images, args.histogram_images):
        if n < CALIBRATION_BATCH or n % CALIBRATION_BATCH:
            ap.error(f"calibration image counts must be multiples of {CALIBRATION_BATCH}")

    ckpt = load_checkpoint(args.checkpoint)
    _, pre = model_from_checkpoint(ckpt)
    threshold, temperature = float(ckpt.get("threshold", 0.5)), float(ckpt.get("temperature", 1.0))
    splits = discover(args.data).splits
    train = sorted((s for s in splits["train"] if s.label >= 0), key=lambda s: s.path)
    random.Random(0).shuffle(train)
    valid = splits["valid"]
    pixels = torch.stack([pre.eval_tensor(load_image(s.path)) for s in valid]).numpy().astype(np.float32)
    y = np.array([s.label for s in valid])
    batch = pixels[:BATCH]

    names = args.only or list(VARIANTS)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        export_onnx(args.checkpoint, tmp / "fp32.onnx")
        sessions = {"fp32": session(tmp / "fp32.onnx")}
        p32 = p_fake(logits(sessions["fp32"], pixels), temperature)
        rows = {}
        for i, name in enumerate(names):
            settings, histogram = VARIANTS[name]
            n = args.histogram_images if histogram else args.calibration_images
            reader = ImageCalibrationReader([s.path for s in train[:n]], pre, CALIBRATION_BATCH)
            path = tmp / f"v{i}.onnx"
            quantize_int8(tmp / "fp32.onnx", path, reader, **settings)
            sessions[name] = session(path)
            p8 = p_fake(logits(sessions[name], pixels), temperature)
            rows[name] = {"calibration_images": reader.used, **guard_numbers(y, p32, p8, threshold)}
            print(f"quantized: {name} ({reader.used} images)", file=sys.stderr, flush=True)

        best = dict.fromkeys(sessions, 0.0)
        for _ in range(args.rounds):  # interleaved: every variant and fp32 once per round
            for name, sess in sessions.items():
                best[name] = max(best[name], images_per_s(sess, batch))

    header = ["variant", "calibration images", "accuracy drop (points)", "ROC-AUC drop", "verdicts unchanged",
              "max |dP|", "images/s", "x fp32"]
    table = [["fp32 (ONNX Runtime)", "-", "-", "-", "-", "-", f"{best['fp32']:.1f}", "1.00"]]
    for name, r in rows.items():
        table.append([name, str(r["calibration_images"]), f"{r['accuracy_drop']:.1f}", f"{r['roc_auc_drop']:.4f}",
                      f"{r['agreement']:.3f}", f"{r['max_abs_diff_p']:.3f}", f"{best[name]:.1f}",
                      f"{best[name] / best['fp32']:.2f}"])
    text = md_table(header, table)
    command = "python benchmarks/int8_variants.py " + " ".join(argv if argv is not None else sys.argv[1:])
    shipped = "7-bit weights (no AVX512-VNNI)" if weights_7bit() else "8-bit weights (AVX512-VNNI)"
    intro = (f"{ckpt['model']['name']} at {pre.crop_size} px, threshold {threshold:.3f}; accuracy guard on the valid "
             f"split ({len(valid)} images, {int(y.sum())} fake); speed: batch {BATCH}, "
             f"{torch.get_num_threads()} threads, best of {args.rounds} interleaved rounds. An export made on this "
             f"CPU gets {shipped}.")
    print(intro + "\n\n" + text)
    if args.doc:
        args.doc.write_text(f"# int8 quantization variants\n\n`{command.strip()}`\n\n{intro}\n\n{text}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
