"""Training throughput per precision / memory format, measured side by side in one run.

    python benchmarks/train_step.py [--sizes 160 256] [--batch 32] [--steps 6] [--model inception_resnet_v1]
                                    [--rss-data ../shared/data/faces140k-sample]

Prints images/s of full training steps (forward, backward, AdamW) at each size for fp32 / bf16 autocast,
contiguous / channels_last, and each one's ratio to fp32 contiguous; the first-step time (kernel set-up); and
the peak resident memory of a real `fakeface train` run on the sample (batch 32, 160 px), which must stay
under 4 GiB. The fastest choice that trains as well as fp32 is what `--precision auto` picks on this CPU.
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from fakeface.devices import autocast, cpu_has_fast_bf16
from fakeface.models import create_model


def time_steps(model_name: str, size: int, batch: int, steps: int, precision: str, channels_last: bool):
    torch.manual_seed(0)
    model = create_model(model_name).train()
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    model = model.to(memory_format=fmt)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    x = torch.randn(batch, 3, size, size).contiguous(memory_format=fmt)
    y = (torch.rand(batch) > 0.5).float()
    device = torch.device("cpu")

    def step():
        with autocast(device, precision):
            logits = model(x).squeeze(1)
        loss = torch.nn.functional.binary_cross_entropy_with_logits(logits.float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    t0 = time.perf_counter()
    step()
    first = time.perf_counter() - t0
    step()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    return batch * steps / (time.perf_counter() - t0), first


def peak_rss_of_training(data: str) -> float:
    """Peak RSS (GiB) of a short real training run, loader workers included."""
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "fakeface", "train", "--data", data, "--out", f"{tmp}/run", "--epochs", "1",
               "--batch-size", "32", "--image-size", "160", "--limit-train", "320", "--limit-valid", "64"]
        subprocess.run(cmd, check=True, capture_output=True)
    kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss  # largest single child process
    return kib / 2**20


def accuracy_by_precision(epochs: int = 3) -> None:
    """Train the same run (synthetic demo data, same seed) in fp32 and in bf16; print validation AUC of each."""
    from fakeface.demo import FAST
    from fakeface.synthetic import make_demo_dataset
    from fakeface.train import TrainConfig, train

    with tempfile.TemporaryDirectory() as tmp:
        make_demo_dataset(f"{tmp}/data", n_train=FAST.n_train, n_valid=FAST.n_valid, n_test=FAST.n_test,
                          size=FAST.size, seed=0)
        for precision in ("fp32", "bf16"):
            t0 = time.perf_counter()
            cfg = TrainConfig(data=f"{tmp}/data", out=f"{tmp}/{precision}", epochs=epochs, batch_size=FAST.batch_size,
                              image_size=FAST.crop, resize="native", eval_size=FAST.size, lr=1e-3, warmup_epochs=0.3,
                              weight_decay=1e-4, model_kwargs={"dropout": 0.2}, precision=precision, seed=0)
            run = train(cfg)
            rows = torch.load(run / "last.pt", map_location="cpu", weights_only=True)["history"]
            aucs = " ".join(f"{r['val_auc']:.3f}" for r in rows)
            print(f"{precision}: validation ROC-AUC per epoch {aucs}  ({time.perf_counter() - t0:.0f} s)", flush=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="inception_resnet_v1")
    ap.add_argument("--sizes", type=int, nargs="+", default=[160, 256])
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--steps", type=int, default=6)
    shared = Path(__file__).resolve().parents[2] / "shared"
    ap.add_argument("--rss-data", default=str(shared / "data" / "faces140k-sample"))
    ap.add_argument("--accuracy", action="store_true",
                    help="also train the fast demo run in fp32 and bf16 and compare validation ROC-AUC")
    args = ap.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, AMX/AVX512-BF16: {cpu_has_fast_bf16()}")
    print(f"{args.model}, batch {args.batch}, {args.steps} timed steps after 2 warm-up steps")
    print(f"{'size':>5} {'precision':>9} {'memory format':>14} {'img/s':>8} {'vs fp32':>8} {'1st step s':>10}")
    for size in args.sizes:
        base = None
        for precision in ("fp32", "bf16"):
            for cl in (False, True):
                ips, first = time_steps(args.model, size, args.batch, args.steps, precision, cl)
                base = base or ips
                fmt = "channels_last" if cl else "contiguous"
                print(f"{size:>5} {precision:>9} {fmt:>14} {ips:8.1f} {ips / base:7.2f}x {first:10.1f}", flush=True)
    if args.accuracy:
        accuracy_by_precision()
    if Path(args.rss_data).exists():
        rss = peak_rss_of_training(args.rss_data)
        print(f"peak RSS of `fakeface train` (batch 32, 160 px): {rss:.2f} GiB (target < 4 GiB): "
              f"{'OK' if rss < 4 else 'OVER'}")
    else:
        print(f"skipped the memory check: {args.rss_data} not found")


if __name__ == "__main__":
    main()
