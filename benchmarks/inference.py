"""Inference images/s per backend, beside each model's FLOPs, the machine's matmul peak and `predict DIR`.

    python benchmarks/inference.py [--sizes 160 256] [--batch 32] [--reps 5] [--rounds 3] [--e2e-rounds 6]
                                   [--images 320] [--models inception_resnet_v1 efficientnet_lite0] [--compile]
                                   [--ort-spinning] [--data ../shared/data/faces140k-sample]

For each registry model (untrained weights: speed only) and input size, one batch of real faces (the sample's
test split; seeded random pixels without it) through each backend, beside this machine's fp32 matmul peak: the
faster of two libraries' square fp32 matmuls, 2048 and 4096, all threads, best of 3 each - torch.matmul (MKL)
and ONNX Runtime's MatMul (MLAS). One library alone can misjudge the machine: on an AMD EPYC (Zen 5, AVX-512)
MKL's sgemm reached 218 GFLOP/s and MLAS's 493, so a peak from MKL alone put ONNX Runtime fp32 at 209 % of it.

* PyTorch eager fp32, contiguous memory format;
* PyTorch fp32 channels_last, and bf16 autocast channels_last where ``cpu_has_fast_bf16()`` (AMX/AVX512-BF16);
* torch.compile of fp32 channels_last (only with --compile: minutes of compilation);
* ONNX Runtime fp32 and static int8 (QDQ, calibrated on 16 real faces) exported by ``fakeface.export``.

The machine is shared and its speed drifts by tens of percent within a minute, so every measurement runs once
per round (``--rounds``), the peak and all backends interleaved, and each keeps its best round: a busy machine
only ever takes time away, so the best round is the closest to what the hardware does, and peak and backends
are judged alike. Each row: images/s (``--reps`` timed batches after one warm-up batch, best round), CPU ms per
image (all threads), the model's GFLOP per image (``torch.utils.flop_counter.FlopCounterMode``, 2 FLOPs per
multiply-add), achieved GFLOP/s, the fp32 matmul peak of the same rounds and the fraction of it achieved
(bf16 and int8 can exceed 100 %: the peak is fp32's). Every backend gets the same threads
(``torch.get_num_threads()``, ONNX Runtime's intra-op threads included).

Then, per model and size, the fastest backend scores a folder of --images real JPEGs end to end through
``fakeface.predict.predict_paths`` as ``fakeface predict DIR`` calls it (decoding threads overlapped with the
model), interleaved round by round (``--e2e-rounds``) with that backend's model-only images/s; printed: both,
the ratio, CPU ms per image of both, and the ceiling: where the model keeps every core busy, end to end can reach
at most model CPU / (model CPU + one thread's decoding and preprocessing CPU) of the model-only rate, however the
work is overlapped; the last two columns are that decoding and preprocessing cost per image.
"""

from __future__ import annotations

import argparse
import resource
import shutil
import tempfile
import time
from functools import partial
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.flop_counter import FlopCounterMode

from fakeface.checkpoint import make_checkpoint, save_atomic
from fakeface.data import default_workers
from fakeface.detector import Detector, OnnxDetector
from fakeface.devices import cpu_has_fast_bf16
from fakeface.export import export_onnx
from fakeface.images import load_image, load_pixels
from fakeface.models import create_model, default_preprocess
from fakeface.predict import expand_inputs, predict_paths

SAMPLE = Path(__file__).resolve().parents[2] / "shared" / "data" / "faces140k-sample"


def best_gflops(run, n: int, reps: int) -> float:
    """Best GFLOP/s of ``reps`` calls of ``run()``, one n x n x n matmul each, after one warm-up call (thread pool,
    kernel selection)."""
    run()
    best = 0.0
    for _ in range(reps):
        t0 = time.perf_counter()
        run()
        best = max(best, 2 * n**3 / (time.perf_counter() - t0) / 1e9)
    return best


def torch_matmul_peak(sizes=(2048, 4096), reps: int = 3) -> float:
    """Best GFLOP/s of n x n fp32 ``torch.matmul`` on all of torch's threads."""
    return max(best_gflops(partial(torch.matmul, torch.randn(n, n), torch.randn(n, n)), n, reps) for n in sizes)


def ort_matmul_peak(sizes=(2048, 4096), reps: int = 3) -> float:
    """Best GFLOP/s of n x n fp32 ``MatMul`` in ONNX Runtime with as many intra-op threads as torch has."""
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = torch.get_num_threads()
    best = 0.0
    rng = np.random.default_rng(0)
    for n in sizes:
        b = numpy_helper.from_array(rng.standard_normal((n, n), dtype=np.float32), "b")
        graph = helper.make_graph([helper.make_node("MatMul", ["a", "b"], ["y"])], "matmul",
                                  [helper.make_tensor_value_info("a", TensorProto.FLOAT, [n, n])],
                                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, [n, n])], [b])
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
        session = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
        a = {"a": rng.standard_normal((n, n), dtype=np.float32)}
        best = max(best, best_gflops(partial(session.run, None, a), n, reps))
    return best


def matmul_peak() -> tuple[float, float, float]:
    """(peak, torch's, ONNX Runtime's) fp32 matmul GFLOP/s: the machine's peak is the faster library's."""
    torch_peak, ort_peak = torch_matmul_peak(), ort_matmul_peak()
    return max(torch_peak, ort_peak), torch_peak, ort_peak


def gflop_per_image(model: torch.nn.Module, size: int) -> float:
    with FlopCounterMode(display=False) as counter, torch.inference_mode():
        model(torch.zeros(1, 3, size, size))
    return counter.get_total_flops() / 1e9


def face_files(data: Path, n: int) -> list[Path]:
    """Up to n real faces of the sample's test split, real and fake alternating."""
    root = data / "real_vs_fake" / "real-vs-fake" / "test"
    real, fake = sorted((root / "real").glob("*.jpg")), sorted((root / "fake").glob("*.jpg"))
    mixed = [p for pair in zip(real, fake) for p in pair]
    return mixed[:n]


def make_folder(folder: Path, n: int, data: Path) -> Path:
    """n JPEG files: copies of the sample's test faces (repeated under new names if needed), or random 256 px."""
    folder.mkdir(parents=True)
    sources = face_files(data, n)
    rng = np.random.default_rng(0)
    for i in range(n):
        if sources:
            shutil.copyfile(sources[i % len(sources)], folder / f"{i:06d}.jpg")
        else:
            pixels = rng.integers(0, 256, (256, 256, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(folder / f"{i:06d}.jpg", quality=90)
    return folder


def cpu_seconds() -> float:
    """CPU time of this process so far, all threads."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def best_rounds(measures: dict, rounds: int) -> dict:
    """Run every ``measures[key]()`` (-> a tuple whose first item is a rate) once per round, interleaved, and keep
    each key's best round (highest rate)."""
    best = {}
    for _ in range(rounds):
        for key, measure in measures.items():
            result = measure()
            if key not in best or result[0] > best[key][0]:
                best[key] = result
    return best


def images_per_second(scorer, batch: torch.Tensor, reps: int) -> tuple[float, float]:
    """(images/s, CPU ms per image) of ``reps`` batches after one warm-up batch."""
    scorer.logits(batch)  # warm-up: oneDNN primitives, ORT's arena, torch.compile's graph
    t0, c0 = time.perf_counter(), cpu_seconds()
    for _ in range(reps):
        scorer.logits(batch)
    n = len(batch) * reps
    return n / (time.perf_counter() - t0), (cpu_seconds() - c0) / n * 1e3


def backends(ckpt: Path, onnx_path: Path, compile_too: bool, spinning_too: bool):
    """(name, detector factory) of every backend worth timing on this machine."""
    yield "pytorch fp32", lambda: Detector(ckpt, device="cpu", precision="fp32", channels_last=False)
    yield "pytorch fp32 channels_last", lambda: Detector(ckpt, device="cpu", precision="fp32")
    if cpu_has_fast_bf16():
        yield "pytorch bf16 channels_last", lambda: Detector(ckpt, device="cpu", precision="bf16")
    if compile_too:
        def compiled():
            det = Detector(ckpt, device="cpu", precision="fp32")
            det.scorer.model = torch.compile(det.scorer.model)
            return det
        yield "torch.compile fp32 channels_last", compiled
    fp32_path = onnx_path.with_name(f"{onnx_path.stem}.fp32.onnx")
    yield "onnxruntime fp32", lambda: OnnxDetector(fp32_path)
    yield "onnxruntime int8 (QDQ)", lambda: OnnxDetector(onnx_path)
    if spinning_too:
        yield "onnxruntime fp32, spinning", lambda: OnnxDetector(fp32_path, spinning=True)
        yield "onnxruntime int8 (QDQ), spinning", lambda: OnnxDetector(onnx_path, spinning=True)


def per_item_ms(fn, items: list, passes: int = 3) -> float:
    """Milliseconds per item of ``fn`` over ``items``, the best of ``passes`` passes (a shared machine only ever
    adds time)."""
    best = float("inf")
    for _ in range(passes):
        t0 = time.perf_counter()
        for item in items:
            fn(item)
        best = min(best, time.perf_counter() - t0)
    return best / len(items) * 1e3


def decode_costs(files: list[Path], preprocess, passes: int) -> tuple[float, float]:
    """(ms to decode, ms to preprocess into ``preprocess``'s view) per image on one thread, as the pipeline does
    both (``load_pixels``, ``eval_tensor``): the best of ``passes``."""
    decode_ms = min(per_item_ms(load_pixels, files) for _ in range(passes))
    pixels = [load_pixels(p) for p in files]
    return decode_ms, min(per_item_ms(preprocess.eval_tensor, pixels) for _ in range(passes))


def end_to_end(det, paths: list[str], batch: int, workers: int) -> tuple[float, float]:
    """(images/s, CPU ms per image) of ``predict_paths`` as ``fakeface predict DIR`` runs it (large JPEGs
    drafted): ``workers`` decoding threads beside the model, or 0: decoding in the model's thread between batches."""
    t0, c0 = time.perf_counter(), cpu_seconds()
    scored = sum(r["error"] is None for r in predict_paths(det, paths, batch_size=batch, workers=workers, draft=True))
    return scored / (time.perf_counter() - t0), (cpu_seconds() - c0) / scored * 1e3


def measure(name: str, size: int, args, tmp: Path, paths: list[str], calib: list[str]):
    """One model at one size: (backend rows, end-to-end rows), every measurement interleaved with the others."""
    torch.manual_seed(0)
    model = create_model(name).eval()
    gflop = gflop_per_image(model, size)
    pre = default_preprocess(name).replace(input_size=size, resize=size)
    ckpt = tmp / f"{name}-{size}.pt"
    save_atomic(make_checkpoint(model, name, {}, pre), ckpt)
    onnx_path = tmp / f"{name}-{size}.onnx"
    export_onnx(ckpt, onnx_path, quantize="int8", calibration_data=calib, check_images=calib)
    faces = torch.stack([pre.eval_tensor(load_image(p)) for p in paths[:args.batch]])
    measures, dets = {"peak": matmul_peak}, {}
    for backend, make in backends(ckpt, onnx_path, args.compile, args.ort_spinning):
        try:
            dets[backend] = make()
            dets[backend].scorer.logits(faces[:1])
        except Exception as e:  # e.g. torch.compile without a C++ compiler
            print(f"{name} {size} {backend} failed: {type(e).__name__}: {e}".splitlines()[0])
            continue
        measures[backend] = partial(images_per_second, dets[backend].scorer, faces, args.reps)
    best = best_rounds(measures, args.rounds)
    peaks = best.pop("peak")
    rows = [(name, size, backend, ips, cpu_ms, gflop, peaks) for backend, (ips, cpu_ms) in best.items()]

    # the fastest backend fakeface runs (ONNX Runtime's spinning threads only steal decoding's cores), model-only
    # and end to end in turns
    backend = max((b for b in best if "spinning" not in b), key=lambda b: best[b][0])
    det = dets[backend]
    decode_ms, pre_ms = decode_costs([Path(p) for p in paths[:64]], pre, args.e2e_rounds)
    measures = {"model": partial(images_per_second, det.scorer, faces, args.reps)}
    measures.update({w: partial(end_to_end, det, paths, args.batch, w) for w in (default_workers(), 0)})
    best = best_rounds(measures, args.e2e_rounds)
    ips, cpu_ms = best.pop("model")
    e2e_rows = [(name, size, backend, w, ips, cpu_ms, e2e, e2e_cpu_ms, decode_ms, pre_ms)
                for w, (e2e, e2e_cpu_ms) in best.items()]
    return rows, e2e_rows


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", default=["inception_resnet_v1", "efficientnet_lite0"])
    ap.add_argument("--sizes", type=int, nargs="+", default=[160, 256])
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--reps", type=int, default=5, help="timed batches per backend and round")
    ap.add_argument("--rounds", type=int, default=3, help="interleaved rounds; each measurement keeps its best")
    ap.add_argument("--e2e-rounds", type=int, default=6,
                    help="interleaved rounds of model-only and end to end (seconds each: more rounds, less noise)")
    ap.add_argument("--images", type=int, default=320, help="JPEGs in the end-to-end folder")
    ap.add_argument("--compile", action="store_true", help="also time torch.compile (slow to compile)")
    ap.add_argument("--ort-spinning", action="store_true",
                    help="also time ONNX Runtime with its idle threads spinning (its default; fakeface turns it off)")
    ap.add_argument("--data", type=Path, default=SAMPLE, help="the faces140k sample (random images without it)")
    args = ap.parse_args()

    import onnxruntime

    threads = torch.get_num_threads()
    print(f"torch {torch.__version__}, onnxruntime {onnxruntime.__version__}, {threads} threads, "
          f"AMX/AVX512-BF16: {cpu_has_fast_bf16()}")
    found = bool(face_files(args.data, 1))
    print(f"faces: {'the sample' if found else 'seeded random pixels (sample not found)'}; batch {args.batch}, "
          f"{args.reps} timed batches per backend and round, best of {args.rounds} interleaved rounds\n", flush=True)

    rows, end_to_end_rows = [], []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        folder = make_folder(tmp / "jpegs", args.images, args.data)
        paths = expand_inputs([folder])
        calib = expand_inputs([make_folder(tmp / "calibration", 16, args.data)])
        for name in args.models:
            for size in args.sizes:
                model_rows, e2e_rows = measure(name, size, args, tmp, paths, calib)
                rows += model_rows
                end_to_end_rows += e2e_rows
                print(f"measured {name} at {size} px", flush=True)

    print(f"\nfp32 matmul peak: GFLOP/s of the same rounds as the model's backends (best of {args.rounds}), the "
          "faster of torch.matmul and ONNX Runtime's MatMul (both in the last two columns)")
    print(f"{'model':<20} {'size':>4} {'backend':<34} {'img/s':>7} {'CPU ms/img':>10} {'GFLOP/img':>9} "
          f"{'GFLOP/s':>8} {'peak':>6} {'of peak':>7} {'torch':>6} {'ort':>6}")
    for name, size, backend, ips, cpu_ms, gflop, (peak, torch_peak, ort_peak) in rows:
        print(f"{name:<20} {size:>4} {backend:<34} {ips:7.1f} {cpu_ms:10.2f} {gflop:9.2f} "
              f"{ips * gflop:8.1f} {peak:6.1f} {ips * gflop / peak:7.1%} {torch_peak:6.1f} {ort_peak:6.1f}")

    print(f"\nend to end: predict_paths on a folder of {len(paths)} JPEGs, batch {args.batch}, the fastest backend "
          f"(threads: decoding threads, 0 = between batches); decode + preprocess: one thread, ms per image; "
          f"best of {args.e2e_rounds} interleaved rounds")
    print(f"{'model':<20} {'size':>4} {'backend':<24} {'threads':>7} {'model img/s':>11} {'e2e img/s':>9} "
          f"{'ratio':>6} {'ceiling':>7} {'model CPU ms/img':>16} {'e2e CPU ms/img':>14} {'decode':>6} "
          f"{'preprocess':>10}")
    for name, size, backend, w, ips, cpu_ms, e2e, e2e_cpu_ms, decode_ms, pre_ms in end_to_end_rows:
        ceiling = cpu_ms / (cpu_ms + decode_ms + pre_ms)
        print(f"{name:<20} {size:>4} {backend:<24} {w:>7} {ips:11.1f} {e2e:9.1f} {e2e / ips:6.2f} {ceiling:7.2f} "
              f"{cpu_ms:16.3f} {e2e_cpu_ms:14.3f} {decode_ms:6.3f} {pre_ms:10.3f}")


if __name__ == "__main__":
    main()
