"""Training images/s fed by the real data pipeline beside the same steps fed from memory: is the loader the
bottleneck?

    python benchmarks/train_throughput.py [--data ../shared/data/faces140k-sample] [--model inception_resnet_v1]
        [--image-size 160] [--batch 32] [--steps 30] [--warmup 3] [--workers N] [--device auto]
        [--precision auto] [--compile]

Runs ``fakeface.train.train_one_epoch`` - forward, backward, AdamW, exactly as ``fakeface train`` steps - twice
with one model: (a) fed by the training loader on the sample's train split (``FaceDataset`` decoding and
augmenting JPEGs in ``--workers`` processes, the loader ``fakeface train`` builds), and (b) fed by pre-made
uint8 tensors already in memory. For each it prints images/s and the fraction of step time spent blocked in
``next(loader)``. When (a) is well below (b) and its wait fraction is high, the GPU (or CPU) is starved: raise
``--workers``, train on smaller stored images, or use faster storage. The first ``--warmup`` steps of each
(worker start-up, ``--compile``'s compilation, cuDNN autotuning) are not timed.

On a shared small machine, only smoke-run it: ``--steps 2 --warmup 1 --batch 4 --image-size 80``.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import itertools
import time
from collections.abc import Iterator
from pathlib import Path

import torch
from torch import nn

from fakeface.augment import AugmentConfig
from fakeface.data import FaceDataset, default_workers, discover
from fakeface.devices import grad_scaler, resolve_device, resolve_precision
from fakeface.models import create_model
from fakeface.train import (
    TrainConfig,
    make_optimizer,
    make_train_loader,
    prepare_model,
    resolve_preprocess,
    train_one_epoch,
)


class Timed:
    """The next ``steps`` batches of ``batches``, adding up how long each ``next()`` blocks in ``wait``."""

    def __init__(self, batches: Iterator[dict], steps: int, batch_size: int):
        self.batches, self.steps, self.wait = batches, steps, 0.0
        self.sampler = range(steps * batch_size)  # train_one_epoch sizes its progress count by it

    def __iter__(self):
        for _ in range(self.steps):
            t0 = time.perf_counter()
            batch = next(self.batches)
            self.wait += time.perf_counter() - t0
            yield batch


def real_batches(cfg: TrainConfig, data: str, preprocess, device: torch.device) -> Iterator[dict]:
    """The training loader over the data's train split, epoch after epoch (re-shuffled as in training)."""
    samples = discover(data).splits["train"]
    ds = FaceDataset(samples, preprocess, AugmentConfig.from_dict(cfg.augment), seed=cfg.seed)
    loader = make_train_loader(ds, cfg, device)
    for epoch in itertools.count(1):
        ds.set_epoch(epoch)
        loader.sampler.set_epoch(epoch)
        yield from loader


def memory_batches(cfg: TrainConfig, size: int, device: torch.device, n: int = 4) -> Iterator[dict]:
    """``n`` pre-made batches of random uint8 images (pinned on CUDA, as the real loader's are), cycled."""
    g = torch.Generator().manual_seed(0)
    batches = []
    for _ in range(n):
        images = torch.randint(0, 256, (cfg.batch_size, 3, size, size), dtype=torch.uint8, generator=g)
        labels = torch.randint(0, 2, (cfg.batch_size,), generator=g).float()
        if device.type == "cuda":
            images, labels = images.pin_memory(), labels.pin_memory()
        batches.append({"image": images, "label": labels, "index": torch.arange(cfg.batch_size), "failures": []})
    return itertools.cycle(batches)


def measure(model, batches, cfg, preprocess, device, precision, steps: int, warmup: int) -> dict:
    """images/s and data-wait fraction of ``steps`` training steps after ``warmup`` untimed ones."""
    optimizer = make_optimizer(model, cfg)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    scaler = grad_scaler(device, precision)
    criterion = nn.BCEWithLogitsLoss()
    args = (criterion, optimizer, scheduler, scaler, device, precision, cfg, 0, preprocess)
    with contextlib.redirect_stderr(io.StringIO()):  # train_one_epoch's progress lines
        train_one_epoch(model, Timed(batches, warmup, cfg.batch_size), *args)
        timed = Timed(batches, steps, cfg.batch_size)
        t0 = time.perf_counter()
        result = train_one_epoch(model, timed, *args)  # calls loss.item() every step: the GPU is synchronised
        total = time.perf_counter() - t0
    return {"images_per_s": result["seen"] / total, "wait": timed.wait / total, "step_ms": 1000 * total / steps}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    shared = Path(__file__).resolve().parents[2] / "shared"
    ap.add_argument("--data", default=str(shared / "data" / "faces140k-sample"))
    ap.add_argument("--model", default="inception_resnet_v1")
    ap.add_argument("--image-size", type=int, default=None, help="training crop (default: the model's)")
    ap.add_argument("--batch", type=int, default=32, help="images per step (per GPU under torchrun)")
    ap.add_argument("--steps", type=int, default=30, help="timed steps per pipeline")
    ap.add_argument("--warmup", type=int, default=3, help="untimed steps first (workers, compilation)")
    ap.add_argument("--workers", type=int, default=None, help=f"loader processes (default here: {default_workers()})")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--precision", default="auto")
    ap.add_argument("--compile", action="store_true", help="torch.compile the model (as train --compile)")
    args = ap.parse_args()

    cfg = TrainConfig(model=args.model, image_size=args.image_size, batch_size=args.batch, workers=args.workers,
                      device=args.device, precision=args.precision, compile=args.compile, log_every=10**9)
    device = resolve_device(cfg.device)
    precision = resolve_precision(cfg.precision, device, cfg.model)
    preprocess = resolve_preprocess(cfg)
    torch.manual_seed(cfg.seed)
    model = create_model(cfg.model).to(device).to(memory_format=torch.channels_last)
    model = prepare_model(model, cfg, device)
    workers = default_workers() if cfg.workers is None else cfg.workers
    print(f"torch {torch.__version__}; {cfg.model}, {preprocess.input_size} px, batch {cfg.batch_size}, {device} "
          f"{precision}, compile {'on' if cfg.compile else 'off'}; {args.steps} timed steps after {args.warmup}; "
          f"data {args.data}")
    print(f"{'fed by':<32} {'img/s':>8} {'data wait':>10} {'ms/step':>8}")
    rows = {}
    for name, batches in (
        (f"real loader, {workers} workers", real_batches(cfg, args.data, preprocess, device)),
        ("in memory, uint8 tensors", memory_batches(cfg, preprocess.input_size, device)),
    ):
        r = rows[name] = measure(model, batches, cfg, preprocess, device, precision, args.steps, args.warmup)
        print(f"{name:<32} {r['images_per_s']:8.1f} {r['wait']:10.0%} {r['step_ms']:8.1f}", flush=True)
    real, memory = rows.values()
    print(f"real loader / memory: {real['images_per_s'] / memory['images_per_s']:.2f}x "
          f"({'the loader is a bottleneck' if real['wait'] > 0.1 else 'the loader keeps up'})")


if __name__ == "__main__":
    main()
