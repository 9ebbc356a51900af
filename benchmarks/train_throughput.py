"""Training images/s fed by the real data pipeline beside the same steps fed from memory: is the loader the
bottleneck?

    python benchmarks/train_throughput.py [--data ../shared/data/faces140k-sample] [--model inception_resnet_v1]
        [--image-size 160 | --size 160] [--batch 32] [--steps 30] [--warmup 3] [--workers N] [--device auto]
        [--precision auto] [--compile] [--gpu-augment] [--config TRAIN_CONFIG] [--cpu-images 64]

Runs ``fakeface.train.train_one_epoch`` - forward, backward, AdamW, exactly as ``fakeface train`` steps - with
one model, fed (a) by the training loader on the sample's train split (``FaceDataset`` decoding and augmenting
JPEGs in ``--workers`` processes, the loader ``fakeface train`` builds), with ``--gpu-augment`` also (a') by the
uint8 loader (``fakeface.loader``: decode only, at the stored size) whose batches ``fakeface.batch_augment``
augments on the device, and (b) by pre-made uint8 tensors already in memory. For each it prints images/s, the
fraction of step time spent blocked in ``next(loader)`` and the ratio to (b). When a loader is well below (b)
and its wait fraction is high, the GPU (or CPU) is starved: raise ``--workers``, augment on the device, train on
smaller stored images, or use faster storage. The first ``--warmup`` steps of each (worker start-up,
``--compile``'s compilation, cuDNN autotuning) are not timed. It also prints the loader's CPU time per image for
both paths (one process, ``--cpu-images`` images each), and the device augmentation's when it runs on the CPU.
``--config`` takes the augmentation (and resize) of a train config; without it, the default (flips).

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
from fakeface.batch_augment import BatchAugment
from fakeface.data import FaceDataset, default_workers, discover
from fakeface.devices import grad_scaler, resolve_device, resolve_precision
from fakeface.loader import StoredSizeDataset, stored_size
from fakeface.models import create_model
from fakeface.train import (
    TrainConfig,
    load_config,
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


def train_dataset(cfg: TrainConfig, data: str, preprocess, uint8: bool):
    """The training split as ``fakeface train`` loads it: per-image augmentation, or ``uint8`` at the stored size
    for the device to augment."""
    samples = discover(data).splits["train"]
    augment = AugmentConfig.from_dict(cfg.augment)
    if uint8:
        return StoredSizeDataset(samples, stored_size(samples), augment, seed=cfg.seed)
    return FaceDataset(samples, preprocess, augment, seed=cfg.seed)


def real_batches(cfg: TrainConfig, ds, device: torch.device) -> Iterator[dict]:
    """The training loader over ``ds``, epoch after epoch (re-shuffled as in training)."""
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


def measure(model, batches, cfg, preprocess, device, precision, steps: int, warmup: int,
            batch_augment: BatchAugment | None = None) -> dict:
    """images/s and data-wait fraction of ``steps`` training steps after ``warmup`` untimed ones."""
    optimizer = make_optimizer(model, cfg)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    scaler = grad_scaler(device, precision)
    criterion = nn.BCEWithLogitsLoss()
    args = (criterion, optimizer, scheduler, scaler, device, precision, cfg, 0, preprocess)
    with contextlib.redirect_stderr(io.StringIO()):  # train_one_epoch's progress lines
        train_one_epoch(model, Timed(batches, warmup, cfg.batch_size), *args, batch_augment=batch_augment)
        timed = Timed(batches, steps, cfg.batch_size)
        t0 = time.perf_counter()
        # calls loss.item() every step: the GPU is synchronised
        result = train_one_epoch(model, timed, *args, batch_augment=batch_augment)
        total = time.perf_counter() - t0
    return {"images_per_s": result["seen"] / total, "wait": timed.wait / total, "step_ms": 1000 * total / steps}


def cpu_ms_per_image(ds, n: int) -> float:
    """CPU milliseconds one loader process spends per item of ``ds`` (decoding and whatever augmentation it does)."""
    ds.set_epoch(1)
    t0 = time.process_time()
    for i in range(min(n, len(ds))):
        ds[i]
    return 1000 * (time.process_time() - t0) / min(n, len(ds))


def batch_augment_cpu_ms(ds, augment: BatchAugment, batch: int) -> float:
    """CPU milliseconds per image of the device augmentation run on the CPU, over one batch of ``ds``."""
    images = torch.stack([ds[i]["image"] for i in range(min(batch, len(ds)))])
    augment(images)  # first call: allocations
    t0 = time.process_time()
    augment(images, step=1)
    return 1000 * (time.process_time() - t0) / len(images)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    shared = Path(__file__).resolve().parents[2] / "shared"
    ap.add_argument("--data", default=str(shared / "data" / "faces140k-sample"))
    ap.add_argument("--model", default="inception_resnet_v1")
    ap.add_argument("--image-size", "--size", type=int, default=None, help="training crop (default: the model's)")
    ap.add_argument("--batch", type=int, default=32, help="images per step (per GPU under torchrun)")
    ap.add_argument("--steps", type=int, default=30, help="timed steps per pipeline")
    ap.add_argument("--warmup", type=int, default=3, help="untimed steps first (workers, compilation)")
    ap.add_argument("--workers", type=int, default=None, help=f"loader processes (default here: {default_workers()})")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--precision", default="auto")
    ap.add_argument("--compile", action="store_true", help="torch.compile the model (as train --compile)")
    ap.add_argument("--gpu-augment", action="store_true",
                    help="also feed from the uint8 loader, augmenting the batches on the device")
    ap.add_argument("--config", default=None, help="a train config whose augment (and resize) to use")
    ap.add_argument("--cpu-images", type=int, default=64, help="images for the loader CPU-time measure (0: skip)")
    args = ap.parse_args()

    base = load_config(args.config, {}) if args.config else TrainConfig()
    cfg = TrainConfig(model=args.model, image_size=args.image_size, batch_size=args.batch, workers=args.workers,
                      device=args.device, precision=args.precision, compile=args.compile, log_every=10**9,
                      augment=base.augment, resize=base.resize if args.config else None)
    device = resolve_device(cfg.device)
    precision = resolve_precision(cfg.precision, device, cfg.model)
    preprocess = resolve_preprocess(cfg)
    torch.manual_seed(cfg.seed)
    model = create_model(cfg.model).to(device).to(memory_format=torch.channels_last)
    model = prepare_model(model, cfg, device)
    workers = default_workers() if cfg.workers is None else cfg.workers
    print(f"torch {torch.__version__}; {cfg.model}, {preprocess.input_size} px, batch {cfg.batch_size}, {device} "
          f"{precision}, compile {'on' if cfg.compile else 'off'}; {args.steps} timed steps after {args.warmup}; "
          f"data {args.data}; augment {cfg.augment or 'default (flips)'}")
    per_image = train_dataset(cfg, args.data, preprocess, uint8=False)
    uint8 = train_dataset(cfg, args.data, preprocess, uint8=True)
    augment = BatchAugment(preprocess, AugmentConfig.from_dict(cfg.augment), cfg.seed)
    cpu_line = None
    if args.cpu_images:
        before, after = cpu_ms_per_image(per_image, args.cpu_images), cpu_ms_per_image(uint8, args.cpu_images)
        on_cpu = batch_augment_cpu_ms(uint8, augment, min(cfg.batch_size, 32))
        cpu_line = (f"loader CPU-ms per image: per-image path {before:.2f}, uint8 path {after:.2f} "
                    f"({before / max(after, 1e-9):.1f}x less; stored size {uint8.size[1]}x{uint8.size[0]}); "
                    f"the batch augmentation run on a CPU would add {on_cpu:.2f}")
        print(cpu_line, flush=True)
    print(f"{'fed by':<44} {'img/s':>8} {'data wait':>10} {'ms/step':>8} {'/memory':>8}")
    memory = measure(model, memory_batches(cfg, preprocess.input_size, device), cfg, preprocess, device, precision,
                     args.steps, args.warmup)
    feeds = [(f"real loader, per-image, {workers} workers", per_image, None)]
    if args.gpu_augment:
        feeds.append((f"real loader, uint8 + {device.type} augment, {workers} workers", uint8, augment))
    rows = {}
    for name, ds, batch_augment in feeds:
        batches = real_batches(cfg, ds, device)
        r = rows[name] = measure(model, batches, cfg, preprocess, device, precision, args.steps, args.warmup,
                                 batch_augment)
        batches.close()  # its workers end before the next loader's start
        print(f"{name:<44} {r['images_per_s']:8.1f} {r['wait']:10.0%} {r['step_ms']:8.1f} "
              f"{r['images_per_s'] / memory['images_per_s']:7.2f}x", flush=True)
    print(f"{'in memory, uint8 tensors':<44} {memory['images_per_s']:8.1f} {memory['wait']:10.0%} "
          f"{memory['step_ms']:8.1f} {1:7.2f}x")
    if cpu_line:  # again, so that the last lines of the output hold every number
        print(cpu_line)
    print("; ".join(f"{name.split(',')[1].strip()}: {r['images_per_s'] / memory['images_per_s']:.2f}x memory-fed, "
                    f"{'the loader is a bottleneck' if r['wait'] > 0.1 else 'the loader keeps up'}"
                    for name, r in rows.items()))


if __name__ == "__main__":
    main()
