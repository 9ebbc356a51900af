"""Load test of `fakeface serve` on 127.0.0.1, beside the offline batch throughput of the same model.

    python benchmarks/serve_load.py --checkpoint runs/x/best.pt [--requests 2000] [--concurrency 16]
                                    [--detect-faces on|off] [--payload faces|scenes]

Without --checkpoint it makes a throw-away 160 px checkpoint (untrained weights: speed only). Starts the server
on a free loopback port, sends a bounded number of real multipart uploads (sample JPEGs when ../shared is
present - the aligned faces, or with --payload scenes each pasted into a photo-sized scene - generated ones
otherwise) from a thread pool, and prints throughput, p50/p95/p99 latency, the error
count (must be 0), and served images/s divided by the offline batch-32 images/s of the same checkpoint
measured in this run (the model alone: with --detect-faces on, the API's default, each request also finds and
aligns its faces, which the offline figure leaves out). The loop is bounded in count and time and stops by itself.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import http.client
import io
import json
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np
import torch
from PIL import Image

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "faces140k-sample"


def payloads(n: int = 32, scenes: bool = False) -> list[bytes]:
    """``n`` uploads: the sample's aligned test faces, or (``scenes``) each pasted into a photo-sized scene as
    benchmarks/face_detection.py makes them, so that the face must be found and cut out."""
    files = sorted((SHARED / "real_vs_fake" / "real-vs-fake" / "test").glob("*/*.jpg"))[:n]
    if files and scenes:
        from face_detection import make_scene  # beside this script

        out = []
        for i, f in enumerate(files):
            buf = io.BytesIO()
            make_scene(Image.open(f).convert("RGB"), i, files)[0].save(buf, "JPEG", quality=90)
            out.append(buf.getvalue())
        return out
    if files:
        return [f.read_bytes() for f in files]
    rng = np.random.default_rng(0)
    out = []
    for _ in range(n):
        buf = io.BytesIO()
        Image.fromarray(rng.integers(0, 256, (256, 256, 3), dtype=np.uint8)).save(buf, "JPEG", quality=75)
        out.append(buf.getvalue())
    return out


def post(port: int, data: bytes, detect_faces: str = "on") -> tuple[int, float]:
    boundary = "loadtestboundary"
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"f.jpg\"\r\n"
            "Content-Type: image/jpeg\r\n\r\n").encode() + data + f"\r\n--{boundary}--\r\n".encode()
    t0 = time.perf_counter()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    url = f"/v1/predict?detect_faces={'true' if detect_faces == 'on' else 'false'}"
    conn.request("POST", url, body, {"Content-Type": f"multipart/form-data; boundary={boundary}"})
    status = conn.getresponse().status
    conn.close()
    return status, time.perf_counter() - t0


def offline_throughput(checkpoint: str, batch: int = 32, rounds: int = 4) -> float:
    """Batch throughput of the detector ``serve`` runs for ``checkpoint`` (the export it made, on a CPU)."""
    from fakeface.detector import load_detector

    det = load_detector(checkpoint)
    s = det.preprocess.crop_size
    x = torch.randint(0, 256, (batch, 3, s, s), dtype=torch.uint8)
    det.scorer.logits(x)  # warm-up
    t0 = time.perf_counter()
    for _ in range(rounds):
        det.scorer.logits(x)
    return batch * rounds / (time.perf_counter() - t0)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint")
    ap.add_argument("--requests", type=int, default=2000)
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--max-seconds", type=float, default=900)
    ap.add_argument("--max-wait-ms", type=float, default=20.0, help="passed to fakeface serve")
    ap.add_argument("--max-batch", type=int, default=32, help="passed to fakeface serve")
    ap.add_argument("--detect-faces", choices=["on", "off"], default="on",
                    help="the API's face finding for every request (on: the API's default)")
    ap.add_argument("--payload", choices=["faces", "scenes"], default="faces",
                    help="upload the sample's aligned test faces, or each pasted into a larger photo-like scene")
    args = ap.parse_args()
    tmp = tempfile.TemporaryDirectory()
    ckpt = args.checkpoint
    if ckpt is None:
        from fakeface.checkpoint import make_checkpoint, save_atomic
        from fakeface.models import create_model, default_preprocess

        ckpt = f"{tmp.name}/model.pt"
        save_atomic(make_checkpoint(create_model("inception_resnet_v1"), "inception_resnet_v1", {},
                                    default_preprocess("inception_resnet_v1")), ckpt)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen([sys.executable, "-m", "fakeface", "serve", "--checkpoint", ckpt, "--port", str(port),
                               "--max-wait-ms", str(args.max_wait_ms), "--max-batch", str(args.max_batch)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(600):
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2)
                break
            except OSError:
                time.sleep(0.2)
        data = payloads(scenes=args.payload == "scenes")
        post(port, data[0], args.detect_faces)  # warm-up
        backend = json.load(urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/model", timeout=10))["backend"]
        latencies, errors = [], 0
        deadline = time.perf_counter() + args.max_seconds
        t0 = time.perf_counter()
        with concurrent.futures.ThreadPoolExecutor(args.concurrency) as pool:
            futures = [pool.submit(post, port, data[i % len(data)], args.detect_faces) for i in range(args.requests)]
            for f in concurrent.futures.as_completed(futures):
                status, seconds = f.result()
                latencies.append(seconds)
                errors += status != 200
                if time.perf_counter() > deadline:
                    for g in futures:
                        g.cancel()
                    break
        wall = time.perf_counter() - t0
    finally:
        server.terminate()
        server.wait(timeout=30)
    served = len(latencies) / wall
    p50, p95, p99 = np.percentile(latencies, [50, 95, 99]) * 1000
    offline = offline_throughput(ckpt)
    print(f"{len(latencies)} requests at concurrency {args.concurrency} ({backend}, face finding "
          f"{args.detect_faces}, {args.payload}): {served:.1f} img/s, "
          f"p50 {p50:.0f} ms, p95 {p95:.0f} ms, p99 {p99:.0f} ms, errors {errors}")
    print(f"offline batch-32 throughput of the same model: {offline:.1f} img/s; served/offline = "
          f"{served / offline:.2f}")


if __name__ == "__main__":
    main()
