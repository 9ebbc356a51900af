"""Training: ``train(config)`` runs (or resumes) one run folder; the CLI is a thin layer over it.

A run folder holds ``config.yaml`` (the resolved config), ``last.pt`` and ``best.pt`` (atomic, self-describing
checkpoints), ``log.csv`` (one row per epoch, re-written from the checkpoint's history so it never disagrees
with it), ``train.log`` (messages, every skipped file) and, when the data had no validation split,
``split.csv`` (which file went where). ``--resume`` after a kill - even ``kill -9`` mid-epoch - continues
from the last finished epoch with the same numbering, history and random streams. With ``members: N`` the
folder holds an ensemble instead: ``ensemble.yaml`` and N such run folders, ``member0`` ... (``train_members``).

Under ``torchrun --nproc_per_node N -m fakeface train ...`` the N processes train one model with
DistributedDataParallel: each takes its share of every epoch's shuffled images (``batch_size`` images per step
and process, so N x ``batch_size`` per optimizer step), validation is scored in shards and gathered, so its
metrics - and best-epoch and early-stopping decisions - are those of one process over the whole split, and
rank 0 alone writes the run folder.
"""

from __future__ import annotations

import logging
import math
import os
import random
import shutil
import signal
import sys
import time
import typing
from dataclasses import asdict, dataclass, field, fields, replace
from functools import partial
from pathlib import Path

import numpy as np
import torch
import yaml
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler, Subset

from . import CLASS_NAMES, distributed
from .augment import AugmentConfig, mix_batch
from .checkpoint import (
    CheckpointError,
    load_checkpoint,
    make_checkpoint,
    read_ensemble_calibration,
    save_atomic,
    unwrap_model,
)
from .data import (
    DataError,
    FaceDataset,
    class_counts,
    collate,
    default_workers,
    discover,
    read_split_csv,
    require_both_classes,
    split_off_validation,
    write_split_csv,
)
from .devices import autocast, grad_scaler, resolve_device, resolve_precision
from .files import atomic_path
from .images import DEFAULT_MAX_PIXELS, ImageLoadError, load_image
from .models import create_model, default_preprocess, get_entry, load_trunk_weights, parse_tta, pretrained_weights
from .preprocess import Normalize, Preprocess
from .progress import Progress
from .report import write_epoch_log
from .scoring import Scorer, Scores
from .text import fmt

log = logging.getLogger("fakeface")

MONITORS = {"val_auc": max, "val_acc": max, "val_loss": min}
ENSEMBLE_CONFIG = "ensemble.yaml"  # an ensemble run's own config, beside its member folders


_TYPE_NAMES = {int: "a whole number", float: "a number", str: "text", bool: "true or false", dict: "a mapping",
               type(None): "left out"}


def _is_a(value, kind: type) -> bool:
    if kind is type(None):
        return value is None
    if isinstance(value, bool):  # a bool is an int to Python, not to a config
        return kind is bool
    return isinstance(value, int if kind is int else (int, float) if kind is float else kind)


@dataclass
class TrainConfig:
    """Everything a training run depends on. Defaults <- ``--config`` YAML <- command-line flags."""

    data: str | None = None
    out: str = "runs/fakeface"
    model: str = "inception_resnet_v1"
    model_kwargs: dict = field(default_factory=dict)
    init_weights: str | None = None  # a published backbone file (facenet's VGGFace2 / CASIA-WebFace .pt)
    init: str | None = None  # a fakeface checkpoint to fine-tune: its model, weights and preprocessing are kept
    pretrained: bool = False  # start from the registry's installable published weights (fakeface[pretrained])
    old_data: str | None = None  # with init: the data the detector was trained on (default: as its checkpoint says)
    epochs: int = 10
    batch_size: int = 32  # per process: torchrun with N processes steps on N x batch_size images
    lr: float = 1e-3
    min_lr: float = 1e-6
    weight_decay: float = 0.05
    backbone_lr_scale: float = 1.0  # the trunk learns at lr * this (the new head at lr)
    freeze_epochs: float = 0.0  # train the head alone this long first (a pretrained trunk is not disturbed)
    warmup_epochs: float = 1.0
    schedule: str = "cosine"  # cosine | step | constant (after warm-up)
    step_epochs: int = 5  # step schedule: multiply lr by step_gamma every step_epochs
    step_gamma: float = 0.1
    label_smoothing: float = 0.0
    ema_decay: float | None = None  # average the weights over steps (e.g. 0.99); the average is validated and saved
    balance: bool = True  # weight the fake-class loss by n_real / n_fake
    image_size: int | None = None  # training crop; None: the model's default
    resize: int | str | None = None  # shorter side before cropping; "native" keeps resolution; None: = image size
    eval_size: int | None = None  # evaluation centre crop; None: = image size
    interpolation: str | None = None  # resampling filter (bilinear | bicubic | nearest | lanczos); None: the model's
    augment: dict = field(default_factory=dict)  # AugmentConfig fields
    workers: int | None = None  # loader processes; None: one per spare core
    seed: int = 0
    device: str = "auto"
    precision: str = "auto"  # auto | fp32 | bf16 | fp16
    channels_last: bool = True
    compile: bool = False  # torch.compile the model: minutes of compilation first, faster steps after (GPUs)
    sync_bn: bool = False  # torchrun on GPUs: BatchNorm statistics over all processes' batches (SyncBatchNorm)
    val_fraction: float = 0.1  # used only when the data has no validation split
    monitor: str = "val_auc"
    patience: int | None = None  # early stopping: epochs without improvement
    limit_train: int | None = None  # use a seeded subset (quick runs)
    limit_valid: int | None = None
    max_pixels: int = DEFAULT_MAX_PIXELS
    log_every: int = 20  # batches between plain progress lines when output is not a terminal
    calibrate: str | None = None  # threshold policy applied to best.pt after training (see fakeface.calibrate)
    tta: str | None = None  # test-time augmentation (flip) set in best.pt after training, before calibrating;
    #                         the best epoch is still chosen without it
    members: int = 1  # > 1: an ensemble - this many models of the recipe, seeds seed * members + k, in out/memberK
    gpu_augment: bool | str = "auto"  # augment uint8 batches on the device (true | false | auto: on CUDA)
    distill: dict | None = None  # a teacher's soft targets in the loss (fakeface.distill.DistillConfig fields)
    export: str = "auto"  # auto: write the ONNX export (and int8 where its guard passes) beside best.pt | none
    max_minutes: float | None = None  # stop after the epoch that spends this much training time

    def __post_init__(self):
        self._check_types()
        if self.monitor not in MONITORS:
            raise ValueError(f"monitor must be one of {sorted(MONITORS)}, got {self.monitor!r}")
        if self.schedule not in ("cosine", "step", "constant"):
            raise ValueError(f"schedule must be cosine, step or constant, got {self.schedule!r}")
        if self.epochs < 1 or self.lr <= 0:
            raise ValueError("epochs must be >= 1 and lr > 0")
        if self.batch_size < 2:
            raise ValueError(f"batch_size must be >= 2 (batch norm cannot learn from 1 image), got {self.batch_size}")
        for name in ("image_size", "eval_size", "patience", "limit_train", "limit_valid"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1 (or left out), got {getattr(self, name)}")
        if self.workers is not None and self.workers < 0:
            raise ValueError(f"workers must be >= 0, got {self.workers}")
        if self.calibrate is not None:
            from .calibrate import parse_policy

            parse_policy(self.calibrate)  # now, not after hours of training
        if not 0 <= self.label_smoothing < 0.5:
            raise ValueError("label_smoothing must be in [0, 0.5)")
        if not isinstance(self.members, int) or self.members < 1:
            raise ValueError(f"members must be a whole number >= 1, got {self.members!r}")
        if self.ema_decay is not None and not 0 < self.ema_decay < 1:
            raise ValueError(f"ema_decay must be in (0, 1) or None, got {self.ema_decay!r}")
        AugmentConfig.from_dict(self.augment)  # validates the keys now, not mid-run
        if self.gpu_augment not in (True, False, "auto"):
            raise ValueError(f"gpu_augment must be true, false or auto, got {self.gpu_augment!r}")
        if self.export not in ("auto", "none"):
            raise ValueError(f"export must be auto or none, got {self.export!r}")
        if self.max_minutes is not None and self.max_minutes <= 0:
            raise ValueError(f"max_minutes must be > 0 (or left out), got {self.max_minutes}")
        if self.distill is not None:
            from .distill import DistillConfig

            DistillConfig.from_dict(self.distill)
        self.tta = parse_tta(self.tta)
        if self.interpolation is not None:
            Preprocess(interpolation=self.interpolation)  # likewise: an unknown filter fails here

    def _check_types(self) -> None:
        """Each setting of the type its field says (a YAML file can hold anything); a number written as text
        for a float setting (PyYAML reads ``1e-3`` as text) is read as the number."""
        hints = typing.get_type_hints(type(self))
        for f in fields(self):
            value, kinds = getattr(self, f.name), typing.get_args(hints[f.name]) or (hints[f.name],)
            if float in kinds and isinstance(value, str):
                try:
                    value = float(value)
                except ValueError:
                    pass
            elif str in kinds and int not in kinds and _is_a(value, float):  # e.g. a fixed threshold as calibrate
                value = str(value)
            if not any(_is_a(value, kind) for kind in kinds):
                names = " or ".join(_TYPE_NAMES.get(k, k.__name__) for k in kinds)
                raise ValueError(f"{f.name} must be {names}, got {value!r}")
            if isinstance(value, float) and not math.isfinite(value):
                raise ValueError(f"{f.name} must be a finite number, got {value!r}")
            setattr(self, f.name, value)

    @classmethod
    def from_dict(cls, d: dict) -> TrainConfig:
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown config keys: {sorted(unknown)}")
        return cls(**d)

    def to_dict(self) -> dict:
        return asdict(self)


def load_config(path: str | os.PathLike | None, overrides: dict) -> TrainConfig:
    """Defaults, then the YAML file, then the non-None ``overrides`` (the command-line flags)."""
    d: dict = {}
    if path:
        try:
            with open(path, encoding="utf-8") as f:
                d = yaml.safe_load(f) or {}
        except (yaml.YAMLError, UnicodeDecodeError) as e:
            reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise ValueError(f"{path} is not a YAML config file ({reason})") from None
        if not isinstance(d, dict):
            raise ValueError(f"{path}: a config file must be a mapping of option: value")
    d.pop("resolved", None)  # a run's own config.yaml records what its settings resolved to
    d.update({k: v for k, v in overrides.items() if v is not None})
    return TrainConfig.from_dict(d)


def saved_config(run_dir: str | os.PathLike) -> Path | None:
    """The config a run folder was started with (an ensemble's ensemble.yaml, else config.yaml), if any: what
    ``--resume`` continues from when no --config is given, so it keeps the run's epochs and settings."""
    for name in (ENSEMBLE_CONFIG, "config.yaml"):
        if (Path(run_dir) / name).is_file():
            return Path(run_dir) / name
    return None


def resolve_preprocess(cfg: TrainConfig) -> Preprocess:
    """The model's default preprocessing with this run's sizes."""
    pre = default_preprocess(cfg.model)
    size = cfg.image_size or pre.input_size
    if cfg.resize == "native":
        resize = None
    elif cfg.resize is not None:
        resize = int(cfg.resize)
    else:
        resize = size if cfg.image_size else pre.resize
    return Preprocess.from_dict({**pre.to_dict(), "input_size": size, "resize": resize,
                                 "eval_size": cfg.eval_size or pre.eval_size,
                                 "interpolation": cfg.interpolation or pre.interpolation})


# -- optimisation ---------------------------------------------------------------------------------------------
def make_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    """AdamW over four groups: trunk / head x decay / no decay (biases and normalisation weights).

    The groups are named so the schedule can give the trunk its own learning rate (``group_lr_factor``).
    """
    head = get_entry(cfg.model).head_prefixes
    groups = {(part, decay): [] for part in ("trunk", "head") for decay in (True, False)}
    for name, p in unwrap_model(model).named_parameters():
        if p.requires_grad:
            groups["head" if name.startswith(head) else "trunk", p.ndim > 1].append(p)
    return torch.optim.AdamW(
        [{"params": ps, "name": part, "weight_decay": cfg.weight_decay if decay else 0.0}
         for (part, decay), ps in groups.items() if ps], lr=cfg.lr)


def group_lr_factor(part: str, step: int, steps_per_epoch: int, cfg: TrainConfig) -> float:
    """The head follows the schedule; the trunk is frozen for ``freeze_epochs``, then scaled."""
    if part == "trunk":
        if step < cfg.freeze_epochs * steps_per_epoch:
            return 0.0
        return cfg.backbone_lr_scale * lr_factor(step, steps_per_epoch, cfg)
    return lr_factor(step, steps_per_epoch, cfg)


def lr_factor(step: int, steps_per_epoch: int, cfg: TrainConfig) -> float:
    """Linear warm-up, then cosine to ``min_lr``, step decay, or constant. ``step`` counts optimizer steps."""
    warmup = cfg.warmup_epochs * steps_per_epoch
    if step < warmup:
        return (step + 1) / warmup
    total = cfg.epochs * steps_per_epoch
    if cfg.schedule == "cosine":
        t = min(1.0, (step - warmup) / max(1.0, total - warmup))
        floor = cfg.min_lr / cfg.lr
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * t))
    if cfg.schedule == "step":
        return cfg.step_gamma ** (step // (cfg.step_epochs * steps_per_epoch))
    return 1.0


# -- the run --------------------------------------------------------------------------------------------------
def _subset(samples, limit, seed):
    if limit is None or limit >= len(samples):
        return samples
    return sorted(random.Random(seed).sample(samples, limit), key=lambda s: s.path)


class EpochSampler(DistributedSampler):
    """A shuffled DistributedSampler (tail dropped) whose permutation for (seed, epoch) is the one fakeface's
    single-process loader always had - ``DataLoader(shuffle=True, generator=g)``, which draws a worker seed from
    ``g`` before its ``randperm`` - so that one-process runs, their resumes and the numbers measured with them
    stay what they were."""

    def __iter__(self):
        g = torch.Generator().manual_seed(self.seed + self.epoch)
        torch.empty((), dtype=torch.int64).random_(generator=g)  # the loader's worker-seed draw
        order = torch.randperm(len(self.dataset), generator=g).tolist()[:self.total_size]
        return iter(order[self.rank:self.total_size:self.num_replicas])


def _worker_init(worker_id: int) -> None:
    """A termination sent to the whole process group (a scheduler, systemd, ``kill -TERM -PGID``) ends a loader
    worker quietly, as Ctrl-C does, so that the main process stops the run and says how to resume: killed
    outright, the worker would be reported as a crash in the middle of that."""
    signal.signal(signal.SIGTERM, signal.default_int_handler)


def make_train_loader(ds: FaceDataset, cfg: TrainConfig, device: torch.device) -> DataLoader:
    """Made once per run; ``loader.sampler.set_epoch(epoch)`` shuffles it anew before each epoch.

    The order is a function of (seed, epoch) alone - a resumed run sees the batches the lost epochs had - and
    under torchrun each process gets every world_size-th image of it (``len(ds) // world_size`` each, the
    remainder dropped, so that every process runs the same number of steps). The loader has its own
    generator: starting workers must not draw from the global RNG that dropout uses.
    """
    workers = default_workers() if cfg.workers is None else cfg.workers
    sampler = EpochSampler(ds, num_replicas=distributed.world_size(), rank=distributed.rank(),
                           seed=cfg.seed * 100_003, drop_last=True)
    return DataLoader(ds, batch_size=cfg.batch_size, sampler=sampler, num_workers=workers, collate_fn=collate,
                      pin_memory=device.type == "cuda", drop_last=len(sampler) > cfg.batch_size,
                      persistent_workers=workers > 0, prefetch_factor=4 if workers else None,
                      worker_init_fn=_worker_init, generator=torch.Generator().manual_seed(cfg.seed))


def _valid_loader(ds: FaceDataset, cfg: TrainConfig, device: torch.device) -> DataLoader:
    """In dataset order; under torchrun this process's contiguous shard (:func:`validate` gathers them)."""
    workers = default_workers() if cfg.workers is None else cfg.workers
    part = Subset(ds, range(len(ds))[distributed.shard(len(ds))])
    return DataLoader(part, batch_size=cfg.batch_size, num_workers=workers, collate_fn=collate,
                      pin_memory=device.type == "cuda", prefetch_factor=4 if workers else None,
                      worker_init_fn=_worker_init, generator=torch.Generator().manual_seed(cfg.seed))


def prepare_model(model: nn.Module, cfg: TrainConfig, device: torch.device) -> nn.Module:
    """SyncBatchNorm (``sync_bn``), then ``torch.compile`` (``compile``), then DistributedDataParallel when
    several processes train (nanoGPT's order). :func:`~fakeface.checkpoint.unwrap_model` gives the plain model
    back: its parameters are the ones trained, and its state_dict is what checkpoints store."""
    if cfg.sync_bn and distributed.is_distributed():
        if device.type != "cuda":
            raise ValueError("--sync-bn needs CUDA: PyTorch's SyncBatchNorm does not run on the CPU")
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    if cfg.compile:
        model = torch.compile(model)
    if distributed.is_distributed():
        model = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    return model


def _probe(samples, max_pixels, n=32) -> None:
    """Stop at once, with one line, when the data is unusable - not after an epoch of errors."""
    probe = random.Random(0).sample(samples, min(n, len(samples)))
    errors = []
    for s in probe:
        try:
            load_image(s.path, max_pixels)
            return
        except ImageLoadError as e:
            errors.append(f"{s.path}: {e}")
    raise DataError(f"none of {len(probe)} sampled training images could be read, e.g. {errors[0]}")


def _setup_logging(run_dir: Path, main: bool = True) -> logging.Handler | None:
    if not main:  # other torchrun processes stay quiet: rank 0 logs the run, whose numbers are everyone's
        log.setLevel(logging.ERROR)
        return None
    handler = logging.FileHandler(run_dir / "train.log")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    log.addHandler(handler)
    if not any(isinstance(h, logging.StreamHandler) and not isinstance(h, logging.FileHandler)
               for h in log.handlers):
        console = logging.StreamHandler(sys.stderr)
        console.setFormatter(logging.Formatter("%(message)s"))
        log.addHandler(console)
    log.setLevel(logging.INFO)
    return handler


def train(cfg: TrainConfig, resume: bool = False) -> Path:
    """Train (or, with ``resume``, continue) the run in ``cfg.out``. Returns the run folder.

    Under torchrun (``WORLD_SIZE`` > 1) every process calls this; they join one process group, train one
    model, and only rank 0 writes into ``cfg.out`` (which every process must be able to read, for ``resume``).
    """
    run_dir = Path(cfg.out)
    last_path = run_dir / "last.pt"
    ensemble_config = run_dir / ENSEMBLE_CONFIG
    if resume and not last_path.is_file() and ensemble_config.is_file():
        with open(ensemble_config) as f:
            cfg = _resumed(TrainConfig.from_dict(yaml.safe_load(f)), cfg)
    if cfg.members > 1:
        return train_members(cfg, resume)
    state = None
    if resume:
        if not last_path.is_file():
            raise FileNotFoundError(f"nothing to resume: {last_path} does not exist")
        state = load_checkpoint(last_path)
        cfg = _resumed(TrainConfig.from_dict(state["train_config"]), cfg)
    elif last_path.exists() or ensemble_config.exists():
        raise FileExistsError(f"{run_dir} already holds a run: pass --resume to continue it, or another --out")
    if not cfg.data:
        raise DataError("no training data given (--data PATH)")
    main = distributed.is_main()
    if main:
        run_dir.mkdir(parents=True, exist_ok=True)
        for tmp in run_dir.glob(".*.pt.tmp*"):  # half-written checkpoints of a run killed while saving
            tmp.unlink(missing_ok=True)
    handler = _setup_logging(run_dir, main)
    try:
        with distributed.process_group(resolve_device(cfg.device)) as device:
            data = _train(cfg, run_dir, state, device)
        best_path = run_dir / "best.pt"
        if main and (cfg.calibrate or cfg.tta) and not _post_training_done(cfg, state, best_path):
            # a best.pt calibrated before (e.g. by `fakeface calibrate`) whose test-time augmentation changes is
            # refitted by its own policy: its threshold was picked on scores it no longer gives
            policy = cfg.calibrate or _fitted_policy(load_checkpoint(best_path))
            if policy:
                from .calibrate import calibrate

                r = calibrate(best_path, cfg.data, policy, workers=cfg.workers, tta=cfg.tta or "none")
                log.info("calibrated best.pt on the validation split: temperature %.3f, threshold %.4f (%s), "
                         "test-time augmentation %s", r["temperature"], r["threshold"], r["policy"],
                         r["tta"] or "none")
            else:
                best = {k: v for k, v in load_checkpoint(best_path).items() if k != "path"}
                save_atomic({**best, "tta": cfg.tta}, best_path)
                log.info("best.pt scores with %s test-time augmentation", cfg.tta)
        if main and cfg.export == "auto":
            export_beside(best_path, data)
        return run_dir
    finally:
        if handler is not None:
            log.removeHandler(handler)
            handler.close()


def export_beside(best_path: Path, data: RunData) -> None:
    """The ONNX export of ``best_path`` beside it, int8 where its accuracy guard passes on the validation images
    (fp32 beside it either way), so that ``predict`` and ``serve`` are fast without an export step. Skipped when
    an export of this very file is already there; a failure is a warning, never a failed training."""
    from .detector import exports_beside
    from .export import Int8Refused, int8_samples
    from .export import export_beside as export

    try:
        if exports_beside(best_path)[0]:
            return
        calibration, guard = int8_samples(data.train, data.valid)
        made = export(best_path, calibration, guard, say=log.info, warn=log.warning)
        log.info("exported %s (int8, passed its accuracy guard on %d validation images) and its fp32 model", made,
                 len(guard))
    except Int8Refused as e:
        log.info("exported the fp32 model only: %s", e)
    except Exception as e:  # the trained run is what matters; the export can be made again with `fakeface export`
        log.warning("no ONNX export written beside %s (%s: %s); `fakeface export --checkpoint %s` makes one",
                    best_path, type(e).__name__, e, best_path)


def _resumed(saved: TrainConfig, cfg: TrainConfig) -> TrainConfig:
    """The config a resumed run continues with: only how long to train may change; everything else is the run's
    own."""
    saved.epochs, saved.patience = cfg.epochs, cfg.patience if cfg.patience is not None else saved.patience
    saved.workers, saved.log_every, saved.compile = cfg.workers, cfg.log_every, cfg.compile  # speed only
    saved.calibrate = cfg.calibrate or saved.calibrate  # applied to best.pt after training, not part of it
    saved.tta = cfg.tta or saved.tta  # likewise
    return saved


def train_members(cfg: TrainConfig, resume: bool = False) -> Path:
    """An ensemble run: ``cfg.members`` models of one recipe, trained one after another into ``out/member0``,
    ``out/member1``, ... with seeds ``seed * members + k`` (ensemble runs with different seeds share no member).
    Each member is an ordinary run, calibrated on its own; ``predict``, ``evaluate`` and ``serve`` given the
    folder average their calibrated probabilities, judged at the threshold that ``calibrate`` then picks on the
    ensemble's own validation scores (``calibration.json``). Members share one validation split: when the data has none,
    the first member's held-out images (its ``split.csv``) are the others' too. ``resume`` continues the member
    that was interrupted and starts those not yet begun."""
    run_dir = Path(cfg.out)
    if (run_dir / "last.pt").exists():
        raise FileExistsError(f"{run_dir} holds a one-model run: an ensemble needs another --out")
    if any(run_dir.glob("member*/last.pt")) and not resume:
        raise FileExistsError(f"{run_dir} already holds a run: pass --resume to continue it, or another --out")
    if distributed.is_main():
        run_dir.mkdir(parents=True, exist_ok=True)
        with open(run_dir / ENSEMBLE_CONFIG, "w") as f:
            yaml.safe_dump(cfg.to_dict(), f, sort_keys=False)
    for k in range(cfg.members):
        member_dir = run_dir / f"member{k}"
        split = run_dir / "member0" / "split.csv"
        if k and split.is_file() and not (member_dir / "last.pt").exists():
            member_dir.mkdir(exist_ok=True)  # every process copies (atomically): none may look before it is there
            with atomic_path(member_dir / "split.csv") as tmp:
                shutil.copyfile(split, tmp)
        member = replace(cfg, out=str(member_dir), seed=cfg.seed * cfg.members + k, members=1)
        print(f"ensemble member {k + 1} of {cfg.members}: {member_dir} (seed {member.seed})", file=sys.stderr,
              flush=True)
        train(member, resume=(member_dir / "last.pt").is_file())
    if distributed.is_main():
        _fit_ensemble_threshold(run_dir, cfg)
    return run_dir


def _fit_ensemble_threshold(run_dir: Path, cfg: TrainConfig) -> None:
    """Fit ``run_dir/calibration.json`` by ``cfg.calibrate`` unless it already fits the members as they are; with
    no policy asked for, a threshold fitted before (e.g. by ``fakeface calibrate``) that no longer fits them (a
    member's test-time augmentation changed) is refitted by its own policy."""
    from .calibrate import calibrate_ensemble, ensemble_calibrated

    try:
        fitted = read_ensemble_calibration(run_dir)
    except CheckpointError:
        fitted = None
    policy = cfg.calibrate or (fitted or {}).get("threshold_policy")
    if policy and not ensemble_calibrated(run_dir, policy):  # scored as predict scores by default, like members
        r = calibrate_ensemble(run_dir, cfg.data, policy, workers=cfg.workers)
        print(f"ensemble threshold {r['threshold']:.4f} ({policy}) fitted on its {r['n_valid']} validation "
              f"scores (the mean of the members': {r['mean_of_members']:.4f}): {r['path']}", file=sys.stderr,
              flush=True)


def _fitted_policy(ckpt: dict) -> str | None:
    """The threshold policy a checkpoint was calibrated by, or None if it never was."""
    policy = ckpt.get("threshold_policy")
    return None if policy in (None, "default") else policy


def _post_training_done(cfg: TrainConfig, state: dict | None, best_path: Path) -> bool:
    """A finished run resumed again trains nothing: its best.pt keeps the calibration it has when the policy and
    test-time augmentation asked for are the ones it holds (refitting would rewrite the file with a temperature a
    rounding away from the last, and re-score the valid split)."""
    if state is None or state["epoch"] < cfg.epochs:
        return False
    best = load_checkpoint(best_path)
    return best.get("tta") == cfg.tta and (cfg.calibrate is None or best.get("threshold_policy") == cfg.calibrate)


@dataclass
class RunData:
    """The images of one run: its splits, what selection is made on, and where the data came from."""

    root: Path
    train: list
    valid: list
    counts: dict[str, int]  # training images per class
    monitor: str


@dataclass
class RunParts:
    """What the epoch loop works with, made once per run (and restored from ``last.pt`` on resume)."""

    model: nn.Module  # what is trained (possibly compiled / under DDP)
    kept: nn.Module  # what validation scores and checkpoints hold: the model, or its weight average (EMA)
    ema: object | None
    preprocess: Preprocess
    precision: str
    train_ds: object
    valid_ds: FaceDataset
    train_loader: DataLoader
    valid_loader: DataLoader
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler
    criterion: nn.Module
    batch_augment: object | None = None  # on-device augmentation of uint8 batches (fakeface.batch_augment)
    distiller: object | None = None  # a teacher's soft targets in the loss (fakeface.distill)
    history: list[dict] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)
    start_epoch: int = 0


def _train(cfg: TrainConfig, run_dir: Path, state: dict | None, device: torch.device) -> RunData:
    """One run, top to bottom: its data, its model, what it resumes from, then its epochs."""
    torch.manual_seed(cfg.seed)
    random.seed(cfg.seed)
    data = load_run_data(cfg, run_dir)
    model, preprocess = build_model(cfg, state, device)
    precision = resolve_precision(cfg.precision, device, cfg.model)  # of the model trained: --init may replace it
    parts = make_run_parts(cfg, data, model, preprocess, precision, state, device)
    if state is not None:
        restore(parts, state, run_dir, cfg)
    if distributed.is_main():
        _write_resolved_config(run_dir, cfg, parts, data.monitor, device)
    log.info("model %s, %s, precision %s, input %d px%s", cfg.model, device, precision, preprocess.input_size,
             f", {distributed.world_size()} processes x batch {cfg.batch_size}" if distributed.world_size() > 1
             else "")
    run_epochs(cfg, run_dir, data, parts, device)
    return data


def load_run_data(cfg: TrainConfig, run_dir: Path) -> RunData:
    """The training and validation images. The split is fixed at the first start and re-read on resume, so it
    cannot drift."""
    main = distributed.is_main()
    index = discover(cfg.data)
    for note in index.notes:
        log.info("data: %s", note)
    split_file = run_dir / "split.csv"
    recorded = split_file.is_file()
    distributed.barrier()  # every process has looked before rank 0 writes one
    if recorded:
        splits = read_split_csv(split_file)
        train_s, valid_s = splits.get("train", []), splits.get("valid", [])
    elif "valid" in index.splits:
        train_s, valid_s = index.splits.get("train", []), index.splits["valid"]
    else:
        if "train" not in index.splits:
            raise DataError(f"no training split in {index.describe()}")
        # seeded: every process holds out the same images, and rank 0 records them
        train_s, valid_s = split_off_validation(index.splits["train"], cfg.val_fraction, cfg.seed)
        if main:
            write_split_csv(split_file, {"train": train_s, "valid": valid_s})
        log.info("no validation split in the data: held out %d images (seed %d), recorded in %s",
                 len(valid_s), cfg.seed, split_file)
    train_s = _subset(train_s, cfg.limit_train, cfg.seed)
    valid_s = _subset(valid_s, cfg.limit_valid, cfg.seed)
    require_both_classes(train_s, "the training split")
    if not valid_s:
        raise DataError("the validation split is empty")
    _probe(train_s, cfg.max_pixels)
    counts = class_counts(train_s)
    log.info("data: %s", index.describe())
    log.info("training on %d real + %d fake, validating on %d real + %d fake", counts["real"], counts["fake"],
             *class_counts(valid_s).values())
    monitor = cfg.monitor
    if min(class_counts(valid_s).values()) == 0 and monitor == "val_auc":
        log.warning("the validation split has one class only: ROC-AUC is undefined, selecting on val_loss")
        monitor = "val_loss"
    return RunData(index.root, train_s, valid_s, counts, monitor)


def build_model(cfg: TrainConfig, state: dict | None, device: torch.device) -> tuple[nn.Module, Preprocess]:
    """The model and its preprocessing, defined once here and stored in every checkpoint: fresh, from
    published or backbone weights, from a fakeface checkpoint (``init``), or as ``state`` (resume) left it.
    Fine-tuning (``init``) sets ``cfg.model``, ``cfg.model_kwargs`` and ``cfg.tta`` to the checkpoint's."""
    if cfg.init:
        if cfg.init_weights or cfg.pretrained:
            raise ValueError("--init (a fakeface checkpoint) excludes --init-weights and --pretrained")
        base = load_checkpoint(cfg.init)
        # Fine-tuning keeps the detector's architecture and its preprocessing, whatever the flags say, and its
        # test-time augmentation unless the config names one.
        cfg.model, cfg.model_kwargs = base["model"]["name"], dict(base["model"]["kwargs"])
        cfg.tta = cfg.tta or base.get("tta")
        preprocess = Preprocess.from_dict(base["preprocess"])
    else:
        preprocess = resolve_preprocess(cfg)
    model = create_model(cfg.model, **cfg.model_kwargs)
    if cfg.init and state is None:
        model.load_state_dict(base["state_dict"])
        log.info("fine-tuning %s (epoch %s of its run)", cfg.init, base.get("epoch"))
    if cfg.init_weights and state is None:
        load_trunk_weights(model, cfg.model, cfg.init_weights)
        log.info("loaded backbone weights from %s", cfg.init_weights)
    elif cfg.pretrained and state is None and not cfg.init:
        path = pretrained_weights(cfg.model)
        load_trunk_weights(model, cfg.model, path)
        log.info("loaded the published %s weights from %s", cfg.model, path)
    if state is not None:  # with EMA, state_dict is the average and train_state_dict the weights being trained
        model.load_state_dict(state.get("train_state_dict", state["state_dict"]))
    model.to(device)
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    return prepare_model(model, cfg, device), preprocess


def make_run_parts(cfg: TrainConfig, data: RunData, model: nn.Module, preprocess: Preprocess, precision: str,
                   state: dict | None, device: torch.device) -> RunParts:
    """Optimiser, weight average, datasets and loaders, schedule, gradient scaler and loss of a run."""
    optimizer = make_optimizer(model, cfg)
    ema = make_ema(model, cfg, state)
    augment = AugmentConfig.from_dict(cfg.augment)
    train_s, distiller = data.train, None
    if cfg.distill:
        from .distill import make_distiller

        distiller, extra = make_distiller(cfg.distill, device, precision)
        train_s = train_s + extra  # unlabelled: scored by the teacher alone
    batch_augment = None
    if use_batch_augment(cfg, augment, device):
        from .batch_augment import BatchAugment
        from .loader import StoredSizeDataset, stored_size

        size = stored_size(train_s, cfg.max_pixels)
        train_ds = StoredSizeDataset(train_s, size, augment, seed=cfg.seed, max_pixels=cfg.max_pixels)
        batch_augment = BatchAugment(preprocess, augment, cfg.seed)
        log.info("augmenting on %s: %dx%d px uint8 batches from the loader", device, size[1], size[0])
    else:
        train_ds = FaceDataset(train_s, preprocess, augment, seed=cfg.seed, max_pixels=cfg.max_pixels)
    valid_ds = FaceDataset(data.valid, preprocess, None, max_pixels=cfg.max_pixels)
    train_loader, valid_loader = make_train_loader(train_ds, cfg, device), _valid_loader(valid_ds, cfg, device)
    steps_per_epoch = math.ceil(len(train_loader.sampler) / cfg.batch_size)  # this process's share
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, [
        partial(group_lr_factor, g["name"], steps_per_epoch=steps_per_epoch, cfg=cfg) for g in optimizer.param_groups])
    counts = data.counts
    pos_weight = torch.tensor(counts["real"] / counts["fake"] if cfg.balance else 1.0, device=device)
    return RunParts(model=model, kept=model if ema is None else ema.module, ema=ema, preprocess=preprocess,
                    precision=precision, train_ds=train_ds, valid_ds=valid_ds, train_loader=train_loader,
                    valid_loader=valid_loader, optimizer=optimizer, scheduler=scheduler,
                    scaler=grad_scaler(device, precision), criterion=nn.BCEWithLogitsLoss(pos_weight=pos_weight),
                    batch_augment=batch_augment, distiller=distiller)


def use_batch_augment(cfg: TrainConfig, augment: AugmentConfig, device: torch.device) -> bool:
    """Whether training images are augmented as whole batches on the device (``gpu_augment``; auto: on CUDA)
    rather than one by one in the loader workers; augmentations only the per-image path has keep it."""
    wanted = cfg.gpu_augment is True or (cfg.gpu_augment == "auto" and device.type == "cuda")
    if not wanted:
        return False
    from .batch_augment import unsupported_keys

    missing = unsupported_keys(augment)
    if missing:
        log.info("gpu_augment: %s only in the per-image path, so images are augmented in the loader workers",
                 ", ".join(missing))
        return False
    return True


def restore(parts: RunParts, state: dict, run_dir: Path, cfg: TrainConfig) -> None:
    """Continue where ``state`` (``last.pt``) stopped: optimiser, schedule, scaler, history and skipped files."""
    parts.optimizer.load_state_dict(state["optimizer"])
    parts.scheduler.load_state_dict(state["scheduler"])
    parts.scaler.load_state_dict(state["scaler"])
    parts.history, parts.skipped, parts.start_epoch = state["history"], state.get("skipped", {}), state["epoch"]
    if distributed.is_main():
        _repair_best(run_dir, state)
    log.info("resumed %s at epoch %d of %d", run_dir, parts.start_epoch, cfg.epochs)
    world = distributed.world_size()
    if state.get("world_size", 1) != world:
        log.warning("resumed with %d process(es) where the run had %d: the batches per step and the learning "
                    "rate schedule's steps change", world, state.get("world_size", 1))


def _write_resolved_config(run_dir: Path, cfg: TrainConfig, parts: RunParts, monitor: str,
                           device: torch.device) -> None:
    world = distributed.world_size()
    resolved = {**cfg.to_dict(), "resolved": {
        "device": str(device), "precision": parts.precision, "preprocess": parts.preprocess.to_dict(),
        "monitor": monitor, "world_size": world, "global_batch_size": world * cfg.batch_size,
        "gpu_augment": parts.batch_augment is not None}}
    with open(run_dir / "config.yaml", "w") as f:
        yaml.safe_dump(resolved, f, sort_keys=False)


def run_epochs(cfg: TrainConfig, run_dir: Path, data: RunData, parts: RunParts, device: torch.device) -> None:
    """Train and validate epoch after epoch, saving last.pt (and best.pt when the monitor improved) after each,
    until ``epochs``, early stopping (``patience``) or the time budget (``max_minutes``)."""
    monitor, history, skipped = data.monitor, parts.history, parts.skipped
    better = MONITORS[monitor]
    best = _best_so_far(history, monitor)
    stale = 0 if best is None else parts.start_epoch - best["epoch"]
    started = time.perf_counter()
    for epoch in range(parts.start_epoch + 1, cfg.epochs + 1):
        if cfg.patience is not None and stale >= cfg.patience:
            log.info("early stopping: %s has not improved for %d epochs", monitor, stale)
            break
        if cfg.max_minutes is not None and time.perf_counter() - started >= 60 * cfg.max_minutes:
            log.info("stopping: the time budget of %g minutes is spent", cfg.max_minutes)
            break
        row, seconds = _one_epoch(cfg, parts, epoch, device)
        history.append(row)
        improved = row[monitor] is not None and (
            best is None or (row[monitor] != best[monitor] and better(row[monitor], best[monitor]) == row[monitor]))
        if improved:
            best, stale = row, 0
        else:
            stale += 1
        if distributed.is_main():
            _save_epoch(cfg, run_dir, data, parts, epoch, best, improved)
        log.info("epoch %d/%d  train loss %.4f acc %.4f | val loss %.4f acc %.4f auc %s | %.0fs, %.1f img/s%s",
                 epoch, cfg.epochs, row["train_loss"], row["train_acc"], row["val_loss"], row["val_acc"],
                 fmt(row["val_auc"]), seconds, row["images_per_s"], "  * best" if improved else "")
    if skipped:
        log.warning("%d unreadable file(s) were skipped; listed in %s", len(skipped), run_dir / "train.log")
    log.info("done: best epoch %s (%s %s) -> %s", best["epoch"] if best else "-", monitor,
             best[monitor] if best else "-", run_dir / "best.pt")


def _one_epoch(cfg: TrainConfig, parts: RunParts, epoch: int, device: torch.device) -> tuple[dict, float]:
    """Train one epoch and validate: its log row, and how long both took."""
    torch.manual_seed(cfg.seed * 1_000 + epoch)  # dropout etc.: the same stream when an epoch is re-run
    parts.train_ds.set_epoch(epoch)  # augmentation
    parts.train_loader.sampler.set_epoch(epoch)  # order
    t0 = time.perf_counter()
    tr = train_one_epoch(parts.model, parts.train_loader, parts.criterion, parts.optimizer, parts.scheduler,
                         parts.scaler, device, parts.precision, cfg, epoch, parts.preprocess, parts.ema,
                         batch_augment=parts.batch_augment, distiller=parts.distiller,
                         validation_images=len(parts.valid_loader.dataset))
    va = validate(parts.kept, parts.valid_loader, parts.criterion, device, parts.precision, cfg, parts.preprocess)
    for ds, fails in ((parts.train_ds, tr.pop("failed")), (parts.valid_ds, va.pop("failed"))):
        for idx, reason in fails:
            path = ds.samples[idx].path
            if path not in parts.skipped:
                parts.skipped[path] = reason
                log.warning("skipped %s: %s", path, reason)
    if tr["seen"] == 0:
        raise DataError(f"no training image could be read in epoch {epoch} ({len(parts.skipped)} files failed)")
    seconds = time.perf_counter() - t0
    row = {"epoch": epoch, "train_loss": tr["loss"], "train_acc": tr["acc"], "val_loss": va["loss"],
           "val_acc": va["acc"], "val_auc": va["auc"], "lr": max(g["lr"] for g in parts.optimizer.param_groups),
           "seconds": round(seconds, 2), "images_per_s": round(tr["images_per_s"], 2)}
    if "distill_loss" in tr:
        row["distill_loss"] = tr["distill_loss"]
    return row, seconds


def _save_epoch(cfg: TrainConfig, run_dir: Path, data: RunData, parts: RunParts, epoch: int, best: dict,
                improved: bool) -> None:
    """last.pt, best.pt when the epoch improved on the monitor, and log.csv (rank 0 only)."""
    ema = parts.ema
    averaged = {} if ema is None else {"train_state_dict": unwrap_model(parts.model).state_dict(),
                                       "ema_steps": int(ema.n_averaged)}
    ckpt = make_checkpoint(
        parts.kept, cfg.model, cfg.model_kwargs, parts.preprocess, **averaged,
        optimizer=parts.optimizer.state_dict(), scheduler=parts.scheduler.state_dict(),
        scaler=parts.scaler.state_dict(), epoch=epoch, history=parts.history, best_epoch=best["epoch"],
        monitor=data.monitor, skipped=parts.skipped, train_config=cfg.to_dict(), data=str(data.root),
        classes=list(CLASS_NAMES), world_size=distributed.world_size(),
        rng={"torch": torch.get_rng_state(), "python": random.getstate()},
    )
    save_atomic(ckpt, run_dir / "last.pt")  # last first: see _repair_best
    if improved:
        save_atomic(ckpt, run_dir / "best.pt")
    write_epoch_log(run_dir / "log.csv", parts.history)


def make_ema(model: nn.Module, cfg: TrainConfig, state: dict | None):
    """With ``cfg.ema_decay``: an exponential moving average of the model's weights and BatchNorm statistics
    (``torch.optim.swa_utils.AveragedModel``), updated after every optimiser step, restored from ``state`` on
    resume. It is what validation scores and what checkpoints store as the model. None without ``ema_decay``."""
    if cfg.ema_decay is None:
        return None
    from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

    ema = AveragedModel(unwrap_model(model), multi_avg_fn=get_ema_multi_avg_fn(cfg.ema_decay), use_buffers=True)
    if state is not None:
        if "train_state_dict" not in state:
            raise ValueError("this run was trained without ema_decay: resume it without, or start a new run")
        ema.module.load_state_dict(state["state_dict"])
        ema.n_averaged.fill_(state["ema_steps"])
    return ema


def _best_so_far(history: list[dict], monitor: str) -> dict | None:
    rows = [r for r in history if r.get(monitor) is not None]
    return MONITORS[monitor](rows, key=lambda r: r[monitor]) if rows else None


def _repair_best(run_dir: Path, state: dict) -> None:
    """A kill between writing last.pt and best.pt leaves best.pt one epoch behind: last.pt is then the best."""
    best_path = run_dir / "best.pt"
    if state.get("best_epoch") == state["epoch"]:
        best_epoch = None
        if best_path.is_file():
            best_epoch = torch.load(best_path, map_location="cpu", weights_only=True).get("epoch")
        if best_epoch != state["epoch"]:
            save_atomic({k: v for k, v in state.items() if k != "path"}, best_path)


def train_one_epoch(model, loader, criterion, optimizer, scheduler, scaler, device, precision, cfg, epoch,
                    preprocess, ema=None, batch_augment=None, distiller=None, validation_images: int = 0) -> dict:
    """One pass over ``loader``. ``batch_augment`` (:class:`fakeface.batch_augment.BatchAugment`) turns the
    loader's stored-size uint8 batches into augmented training crops on the device; ``distiller``
    (:class:`fakeface.distill.Distiller`) makes the loss one against a teacher's soft targets too.
    ``validation_images``: what the validation ending the epoch scores, so the remaining time includes it."""
    model.train()
    normalize = Normalize(preprocess).to(device)
    progress = Progress(len(loader.sampler), f"epoch {epoch}/{cfg.epochs}", cfg.log_every, distributed.is_main(),
                        after_items=validation_images)
    total_loss, correct, seen, failed, soft_loss = 0.0, 0, 0, [], 0.0
    aug = AugmentConfig.from_dict(cfg.augment)
    t0 = time.perf_counter()
    try:
        for step, batch in enumerate(loader):
            failed += batch["failures"]
            n = len(batch["index"])
            # BatchNorm cannot train on one image, and broken files can shrink a batch below two. Under DDP every
            # process must run the same number of backward passes (each waits in the others' gradient
            # all-reduce), so when any process is short, all of them skip this step together.
            if distributed.any_rank(n < 2, device):
                progress.update(n + len(batch["failures"]), "")
                continue
            pixels = batch["image"].to(device, non_blocking=True)
            if batch_augment is not None:
                pixels = batch_augment(pixels, epoch, step, distributed.rank())
            y = batch["label"].to(device, non_blocking=True)
            # Mixed as pixels, so that a distillation teacher scores the very image the student sees. Seeded by
            # (seed, epoch, step, rank): a resumed epoch mixes its batches as the first attempt did.
            pixels, y = mix_batch(pixels, y, aug, np.random.default_rng((cfg.seed, epoch, step, distributed.rank())))
            x = normalize(pixels)
            if cfg.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            target = y * (1 - cfg.label_smoothing) + 0.5 * cfg.label_smoothing
            with autocast(device, precision):
                logits = model(x).squeeze(1)
            if distiller is None:
                loss = criterion(logits.float(), target)
            else:
                loss, soft = distiller.loss(logits.float(), target, y, pixels, criterion.pos_weight)
                soft_loss += soft * n
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            scheduler.step()
            if ema is not None:
                ema.update_parameters(unwrap_model(model))
            total_loss += loss.item() * n
            correct += ((logits.detach() >= 0).float() == (y >= 0.5).float()).sum().item()  # mixed: the larger share
            seen += n
            rate = seen / (time.perf_counter() - t0)
            progress.update(n + len(batch["failures"]), f"loss {total_loss / seen:.4f} {rate:.1f} img/s")
    finally:
        progress.close()
    elapsed = time.perf_counter() - t0
    # Sums over every process: the epoch's numbers are over all the images trained on, the same on each rank.
    parts = distributed.all_gather_object({"loss": total_loss, "correct": correct, "seen": seen, "failed": failed,
                                           "soft": soft_loss})
    total_loss, correct, seen, soft_loss = (sum(p[k] for p in parts) for k in ("loss", "correct", "seen", "soft"))
    failed = [f for p in parts for f in p["failed"]]
    out = {"loss": total_loss / max(seen, 1), "acc": correct / max(seen, 1), "seen": seen,
           "images_per_s": seen / max(elapsed, 1e-9), "failed": failed}
    if distiller is not None:
        out["distill_loss"] = soft_loss / max(seen, 1)
    return out


def validate(model, loader, criterion, device, precision, cfg, preprocess) -> dict:
    """Loss, accuracy and ROC-AUC on the loader's images. Under torchrun each process scores its shard and the
    scores of all are gathered and put back in dataset order first, so every process computes the numbers one
    process would compute on the whole split (not a mean of per-shard metrics)."""
    from sklearn.metrics import roc_auc_score

    # The plain model: DDP's forward syncs buffers with the other processes, whose shards may be one batch
    # shorter. Also uncompiled: eval mode would cost a second compilation for little. With rank 0's BatchNorm
    # statistics everywhere: that is the model rank 0 saves.
    plain = unwrap_model(model)
    distributed.broadcast_buffers(plain)
    scores = Scorer(plain, preprocess, device, precision, cfg.channels_last).score_batches(loader)
    model.train()
    scores = Scores.merge(distributed.all_gather_object(scores))
    if len(scores.index) == 0:
        raise DataError("no validation image could be read")
    logits, labels = torch.from_numpy(scores.logit).float(), torch.from_numpy(scores.label).float()
    loss = nn.functional.binary_cross_entropy_with_logits(logits, labels, pos_weight=criterion.pos_weight.cpu())
    auc = float(roc_auc_score(scores.label, scores.logit)) if len(np.unique(scores.label)) == 2 else None
    acc = float(((scores.logit >= 0) == (scores.label == 1)).mean())
    return {"loss": float(loss), "acc": acc, "auc": auc, "failed": scores.failures}
