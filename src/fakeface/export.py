"""ONNX export: a checkpoint becomes one self-describing ``.onnx`` file (fp32, or int8 that passed its guard).

:func:`export_onnx` wraps the checkpoint's model with its normalisation, so the graph takes (B, 3, S, S) float32
pixels on the 0-255 scale (S = the checkpoint's ``preprocess.crop_size``) and returns the logit (B,). The
preprocessing, threshold, threshold policy, temperature and model name travel in the model's ``metadata_props``
(JSON strings; read back by :mod:`fakeface.onnx_runtime`). Every export is checked the way timm's
``onnx_export()`` does it: ``onnx.checker``, then ONNX Runtime against PyTorch fp32 on the images given (real
ones where there are any, seeded noise otherwise - the report's ``checked_on`` says which).

``quantize="int8"`` adds static int8 quantization (QDQ, per-channel weights) calibrated on real images;
:func:`check_int8_accuracy` (the int8 accuracy guard) compares it with fp32 on labelled images and records the
verdict in its metadata. Dynamic int8 quantization is not offered: it runs slower than fp32 on CPUs
(convolutions re-quantize their activations at every call).

Every export records the SHA-256 of the checkpoint it was made from, so
:func:`fakeface.detector.choose_backend` can tell the exports of a checkpoint lying beside it (``best.onnx``,
``best.int8.onnx``) from stale ones. :func:`export_run` is the library side of ``fakeface export``;
:func:`export_beside` makes the fp32 export ``predict`` and ``serve`` keep on first use.
"""

from __future__ import annotations

import json
import os
import random
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import torch
from torch import nn

from . import __version__
from .checkpoint import (
    FOLDER_WEIGHTS,
    checkpoint_file,
    ensemble_members,
    load_checkpoint,
    model_from_checkpoint,
    validation_samples,
)
from .data import DataError, FaceDataset, Sample, decoded_batches, discover
from .devices import int8_full_range_safe
from .files import atomic_path, file_sha256, temp_path_beside
from .hub import exports_dir, source_digest
from .images import ImageLoadError, load_image
from .onnx_runtime import (
    FORMAT,
    INPUT_NAME,
    OUTPUT_NAME,
    OnnxModelError,
    OnnxScorer,
    decode_metadata,
    run_logits,
    session,
    session_metadata,
)
from .preprocess import Normalize, Preprocess
from .scoring import p_fake
from .text import fmt

__all__ = ["OnnxModelError", "export_onnx", "export_run", "export_beside", "check_int8_accuracy",
           "compare_on_split", "update_metadata", "file_sha256"]

DEFAULT_OPSET = 17
# Max |P_onnx - P_torch| an fp32 export may show. Float reordering (BatchNorm folded into Conv, other conv
# algorithms) moves P(fake) by about 1e-6; a real export bug moves it by far more (swapped colour channels: 0.8).
# 1e-3 leaves room for a calibrated temperature as low as 0.01 (which scales logit noise by 100) and is still far
# too small to flip a verdict not already on the threshold.
DEFAULT_TOLERANCE = 1e-3
N_CHECK_IMAGES = 16  # real images an export is compared with PyTorch on, when there are any
INT8_CALIBRATION_IMAGES = 300  # int8 calibration: a seeded sample of the training images; a few hundred suffice
# The int8 accuracy guard after training: a seeded sample of the validation images, so a large split does not
# add minutes to the end of every run (`fakeface export` guards on the whole split it is given).
INT8_GUARD_IMAGES = 1000


class ExportMismatchError(RuntimeError):
    """The exported graph does not compute what the PyTorch model computes."""


class Int8Refused(ValueError):
    """The int8 model lost more accuracy than allowed (or could not be checked) and was removed."""

    exit_code = 1


class _ExportWrapper(nn.Module):
    """(B, 3, S, S) float32 pixels on 0-255 -> (B,) logits: normalisation and model in one graph."""

    def __init__(self, model: nn.Module, preprocess: Preprocess):
        super().__init__()
        self.normalize = Normalize(preprocess)
        self.model = model

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.model(self.normalize(pixels))[:, 0]  # (B, 1) -> (B,)


# -- metadata ------------------------------------------------------------------------------------------------------
def _metadata(ckpt: dict, precision: str, **extra) -> dict[str, str]:
    """What the .onnx file needs to predict on its own; every value a JSON string (ONNX metadata is str -> str)."""
    meta = {
        "format": FORMAT,
        "fakeface_version": __version__,
        "precision": precision,
        "model": ckpt["model"],
        "preprocess": ckpt["preprocess"],
        "threshold": float(ckpt.get("threshold", 0.5)),
        "threshold_policy": ckpt.get("threshold_policy", "default"),
        "temperature": float(ckpt.get("temperature", 1.0)),
        "tta": ckpt.get("tta"),  # informative: the graph itself averages the image and its mirror
        "epoch": ckpt.get("epoch"),
        "calibration": ckpt.get("calibration"),
        "source_checkpoint": Path(ckpt["path"]).name if "path" in ckpt else None,
        "release": ckpt.get("release"),  # the name and version users are shown (a model folder's)
        "data_kind": ckpt.get("data_kind"),  # "synthetic" for the training demo's
        "input": INPUT_NAME,
        "output": OUTPUT_NAME,
        **extra,
    }
    return {k: json.dumps(v) for k, v in meta.items() if v is not None}


def _write_metadata(path: Path, props: dict[str, str]) -> None:
    import onnx

    model = onnx.load(str(path))
    onnx.helper.set_model_props(model, props)
    onnx.save(model, str(path))


def update_metadata(path: str | os.PathLike, **fields) -> None:
    """Add or replace fields of an export's fakeface metadata; the file is replaced atomically."""
    import onnx

    path = Path(path)
    model = onnx.load(str(path))
    props = {p.key: p.value for p in model.metadata_props}
    decode_metadata(props, path)  # refuses files that are not ours
    props.update({k: json.dumps(v) for k, v in fields.items()})
    onnx.helper.set_model_props(model, props)
    with atomic_path(path) as tmp:
        onnx.save(model, str(tmp))


# -- images --------------------------------------------------------------------------------------------------------
def _decode(paths: Sequence[str | os.PathLike], preprocess: Preprocess) -> tuple[np.ndarray, list[str]]:
    """Image files -> (N, 3, S, S) float32 pixels of their evaluation view, and the reasons of skipped files."""
    views, skipped = [], []
    for p in paths:
        try:
            views.append(preprocess.eval_tensor(load_image(p)))
        except ImageLoadError as e:
            skipped.append(f"{p}: {e}")
    s = preprocess.crop_size
    pixels = torch.stack(views).numpy() if views else np.zeros((0, 3, s, s), np.uint8)
    return pixels.astype(np.float32), skipped


def _check_batch(check_images, preprocess: Preprocess, seed: int = 0, n_random: int = 8) -> tuple[np.ndarray, str]:
    """The pixels an export is compared with PyTorch on, and what they are in words: the check images that can
    be read, else seeded noise (saying why), since the comparison needs some input either way."""
    why = ""
    if check_images:
        pixels, skipped = _decode(check_images, preprocess)
        if len(pixels):
            return pixels, f"{len(pixels)} images"
        why = f" (none of the {len(check_images)} check images could be read, e.g. {skipped[0]})"
    s = preprocess.crop_size
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n_random, 3, s, s)).astype(np.float32), f"{n_random} seeded random-noise images{why}"


class ImageCalibrationReader:
    """onnxruntime's CalibrationDataReader over image files: decoded lazily, ``batch_size`` at a time.

    Unreadable files are skipped and listed in ``skipped``; ``used`` counts the images fed.
    """

    def __init__(self, paths: Sequence[str | os.PathLike], preprocess: Preprocess, batch_size: int = 16):
        self.paths, self.preprocess, self.batch_size = list(paths), preprocess, batch_size
        self.used, self.skipped = 0, []
        self._batches = self._iter()

    def _iter(self) -> Iterator[dict]:
        for i in range(0, len(self.paths), self.batch_size):
            pixels, skipped = _decode(self.paths[i:i + self.batch_size], self.preprocess)
            self.skipped += skipped
            if len(pixels):
                self.used += len(pixels)
                yield {INPUT_NAME: pixels}

    def get_next(self) -> dict | None:
        return next(self._batches, None)

    def rewind(self) -> None:
        self.used, self.skipped = 0, []
        self._batches = self._iter()


# -- export ----------------------------------------------------------------------------------------------------------
def _export_fp32(model: nn.Module, preprocess: Preprocess, path: Path, opset: int) -> None:
    wrapper = _ExportWrapper(model, preprocess).eval()
    s = preprocess.crop_size
    example = torch.randint(0, 256, (2, 3, s, s), generator=torch.Generator().manual_seed(0)).float()
    with warnings.catch_warnings(), torch.inference_mode():
        # The TorchScript exporter is deprecated in favour of dynamo=True, which needs onnxscript and opset >= 18
        # and is an order of magnitude slower to export; its deprecation warning is silenced for this one call.
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(
            wrapper, (example,), str(path), input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
            dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}}, opset_version=opset,
            do_constant_folding=True, dynamo=False,
        )


def _torch_logits(model: nn.Module, preprocess: Preprocess, pixels: np.ndarray, batch_size: int = 32) -> np.ndarray:
    wrapper = _ExportWrapper(model, preprocess).eval()
    with torch.inference_mode():
        out = [wrapper(torch.from_numpy(pixels[i:i + batch_size])).numpy() for i in range(0, len(pixels), batch_size)]
    return np.concatenate(out).astype(np.float64)


def _head_nodes(path: Path) -> list[str]:
    """Names of the nodes after the last global pooling: the classifier head, kept in fp32.

    Quantized, the logit itself would be uint8 over the calibration range: clipped beyond the most extreme
    calibration image and coarse in between. The head is
    a tiny share of the network's multiply-adds, so it costs nothing to keep exact.
    """
    import onnx

    nodes = list(onnx.load(str(path), load_external_data=False).graph.node)
    pools = [i for i, n in enumerate(nodes) if n.op_type in ("GlobalAveragePool", "GlobalMaxPool", "ReduceMean")]
    if pools:
        return [n.name for n in nodes[pools[-1] + 1:]]
    outputs = {o.name for o in onnx.load(str(path), load_external_data=False).graph.output}
    return [n.name for n in nodes if outputs & set(n.output)]


# Parts of the graph that quantize_int8(keep_fp32=...) can leave in fp32, beside the head.
KEEPABLE = ("depthwise", "first-conv", "last-conv")


def _kept_nodes(path: Path, keep: Sequence[str]) -> list[str]:
    """Names of the nodes ``keep`` asks to leave in fp32 (see :data:`KEEPABLE`)."""
    import onnx

    unknown = set(keep) - set(KEEPABLE)
    if unknown:
        raise ValueError(f"keep_fp32 can hold {', '.join(KEEPABLE)}; got {', '.join(sorted(unknown))}")
    if not keep:  # what every export asks: no second read of the graph
        return []
    convs = [n for n in onnx.load(str(path), load_external_data=False).graph.node if n.op_type == "Conv"]
    names = []
    if "depthwise" in keep:
        names += [n.name for n in convs if any(a.name == "group" and a.i > 1 for a in n.attribute)]
    if "first-conv" in keep:
        names += [convs[0].name]
    if "last-conv" in keep:
        names += [convs[-1].name]
    return names


def weights_7bit() -> bool:
    """Whether an int8 export made here gets 7-bit weights (ORT's ``reduce_range``): on every CPU but those where
    8-bit weights are exact (:func:`fakeface.devices.int8_full_range_safe`). 8-bit weights follow fp32 more
    closely, and the accuracy guard measures them on the CPU that will usually run them; an export carried to a
    CPU without VNNI falls back to fp32 there (:func:`fakeface.detector.int8_runs_here`)."""
    return not int8_full_range_safe()


def quantize_int8(fp32_path: Path, out_path: Path, reader: ImageCalibrationReader, per_channel: bool = True,
                  reduce_range: bool | None = None, quant_format: str = "qdq", calibration: str = "minmax",
                  activations: str = "uint8", keep_fp32: Sequence[str] = (), fuse_relu6: bool = True) -> None:
    """Static int8 quantization of an fp32 export, calibrated on ``reader``'s images; the classifier head stays
    fp32. The defaults are what ``fakeface export`` ships; the others exist for ``benchmarks/int8_variants.py``.

    Args:
        reduce_range: 7-bit int8 weights; None: :func:`weights_7bit` for this CPU.
        quant_format: "qdq" or "qoperator". calibration: "minmax", "percentile" (99.999) or "entropy" (the
            histogram methods keep every calibration activation in memory: about 80 MB per 256 px image for
            EfficientNet-Lite0, so a hundred images, not hundreds). activations: "uint8" or "int8".
        keep_fp32: parts also left in fp32 (:data:`KEEPABLE`). fuse_relu6: let a ReLU6 (Clip) share its
            convolution's output quantization instead of being quantized on its own.
    """
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    formats = {"qdq": QuantFormat.QDQ, "qoperator": QuantFormat.QOperator}
    methods = {"minmax": CalibrationMethod.MinMax, "percentile": CalibrationMethod.Percentile,
               "entropy": CalibrationMethod.Entropy}
    types = {"uint8": QuantType.QUInt8, "int8": QuantType.QInt8}
    for name, value, allowed in (("quant_format", quant_format, formats), ("calibration", calibration, methods),
                                 ("activations", activations, types)):
        if value not in allowed:
            raise ValueError(f"{name} must be one of {', '.join(allowed)}, got {value!r}")
    with temp_path_beside(out_path) as prepared:
        # Shape inference and ORT's graph optimisations (e.g. folding the head's BatchNorm into its MatMul) first,
        # as ORT's quantization guide recommends: fewer, larger ops to quantize.
        quant_pre_process(str(fp32_path), str(prepared))
        quantize_static(
            str(prepared), str(out_path), reader,
            quant_format=formats[quant_format],  # QDQ: what ORT's CPU kernels are optimised for since 1.11
            # uint8 activations x int8 weights: ORT's recommendation for x86 (weights_7bit says which range).
            activation_type=types[activations], weight_type=QuantType.QInt8,
            reduce_range=weights_7bit() if reduce_range is None else reduce_range,
            # Per output channel: after BatchNorm folding the conv channels' weight ranges differ a lot.
            per_channel=per_channel,
            # MinMax keeps only each tensor's per-batch min and max (ReduceMin/ReduceMax outputs), so memory stays
            # small for a few hundred images. (CalibMaxIntermediateOutputs would drop batches: ORT clears them
            # without merging their ranges.)
            calibrate_method=methods[calibration],
            nodes_to_exclude=_head_nodes(prepared) + _kept_nodes(prepared, keep_fp32),
            extra_options={"CalibPercentile": 99.999, "QDQKeepRemovableActivations": not fuse_relu6},
        )


def export_onnx(
    checkpoint: str | os.PathLike,
    out_path: str | os.PathLike,
    opset: int = DEFAULT_OPSET,
    quantize: str | None = None,
    calibration_data: Sequence[str | os.PathLike] | None = None,
    tolerance: float = DEFAULT_TOLERANCE,
    check_images: Sequence[str | os.PathLike] | None = None,
    per_channel: bool = True,
    reduce_range: bool | None = None,
    calibration_batch_size: int = 16,
) -> dict:
    """Export a checkpoint to ONNX (fp32, or int8 with ``quantize="int8"``), check it, return a report.

    The graph takes ``pixels`` (B, 3, S, S) float32 on 0-255 (S = the checkpoint's ``preprocess.crop_size``;
    B dynamic), normalises them and returns ``logit`` (B,); P(fake) = sigmoid(logit / temperature). The
    checkpoint's preprocessing, threshold and temperature are stored as metadata. Files are written atomically
    and only once every check passed.

    Args:
        checkpoint: checkpoint file or run folder.
        out_path: the .onnx file to write. With ``quantize="int8"`` it receives the int8 model and the fp32
            model it was made from is kept beside it as ``<stem>.fp32.onnx``.
        opset: ONNX opset of the fp32 export (>= 13 for per-channel int8).
        quantize: ``None`` (fp32) or ``"int8"`` (static QDQ quantization).
        calibration_data: image files for int8 calibration (a few hundred of the training distribution).
        tolerance: max |P(fake) ONNX - P(fake) PyTorch fp32| allowed for the fp32 export.
        check_images: image files to compare on; ``None``: a seeded batch of random pixels.
        per_channel, reduce_range: int8 weight quantization per output channel; 7-bit weights (None:
            :func:`weights_7bit` for this CPU; the metadata records which, and ``predict`` runs an export with
            8-bit weights only on a CPU where they are exact).
        calibration_batch_size: images per calibration batch (bounds calibration memory).

    Returns:
        ``{"path", "precision", "opset", "input_shape", "checked_on", "fp32": {"path", "max_abs_diff_p",
        "tolerance"}, "int8": {"path", "max_abs_diff_p_vs_fp32", "calibration_images", ...} | None}``.

    Raises:
        ExportMismatchError: ONNX Runtime and PyTorch disagree by more than ``tolerance``.
        ValueError: bad arguments, unusable calibration or check images.
    """
    import onnx

    if quantize not in (None, "int8"):
        raise ValueError(f"quantize must be None or 'int8', got {quantize!r} (dynamic int8 is slower than fp32)")
    if quantize and not calibration_data:
        raise ValueError("int8 quantization needs calibration_data: a list of image files")
    if quantize and opset < 13:
        raise ValueError("per-channel int8 quantization needs opset >= 13")
    out_path = Path(out_path)
    if out_path.suffix != ".onnx":
        raise ValueError(f"out_path should end in .onnx, got {out_path}")
    ckpt = load_checkpoint(checkpoint)
    model, preprocess = model_from_checkpoint(ckpt)
    temperature = float(ckpt.get("temperature", 1.0))
    source = {"opset": opset, "source_sha256": source_digest(checkpoint_file(ckpt["path"]))}
    fp32_path = out_path.with_name(f"{out_path.stem}.fp32.onnx") if quantize else out_path
    s = preprocess.crop_size
    report = {"path": str(out_path), "precision": quantize or "fp32", "opset": opset, "input_shape": ["B", 3, s, s],
              "checkpoint": ckpt["path"], "int8": None}
    # both files appear together, and only once every check passed
    with atomic_path(fp32_path) as tmp_fp32, (atomic_path(out_path) if quantize else nullcontext()) as tmp_int8:
        _export_fp32(model, preprocess, tmp_fp32, opset)
        _write_metadata(tmp_fp32, _metadata(ckpt, "fp32", **source))
        onnx.checker.check_model(str(tmp_fp32), full_check=True)

        pixels, report["checked_on"] = _check_batch(check_images, preprocess)
        p_onnx = p_fake(run_logits(session(tmp_fp32), pixels), temperature)
        p_torch = p_fake(_torch_logits(model, preprocess, pixels), temperature)
        diff = float(np.abs(p_onnx - p_torch).max())
        report["fp32"] = {"path": str(fp32_path), "max_abs_diff_p": diff, "tolerance": tolerance}
        if not diff <= tolerance:  # also catches NaN
            raise ExportMismatchError(f"ONNX Runtime and PyTorch differ by {diff:.3g} in P(fake) on "
                                      f"{report['checked_on']} (tolerance {tolerance:g}); nothing was written")
        report["fp32"]["size_mb"] = round(tmp_fp32.stat().st_size / 1e6, 1)
        if not quantize:
            return report

        reader = ImageCalibrationReader(calibration_data, preprocess, calibration_batch_size)
        reduce_range = weights_7bit() if reduce_range is None else reduce_range
        try:
            quantize_int8(tmp_fp32, tmp_int8, reader, per_channel, reduce_range)
        except Exception:
            if reader.used or len(reader.skipped) < len(reader.paths):
                raise
            # else every image was unreadable (ORT says "No data is collected."): said below, in our words
        if reader.used == 0:
            raise ValueError(f"none of the {len(reader.paths)} calibration images could be read"
                             + (f": {reader.skipped[0]}" if reader.skipped else ""))
        quant = {"method": "static", "format": "QDQ", "calibration": "minmax", "calibration_images": reader.used,
                 "per_channel": per_channel, "reduce_range": reduce_range}
        _write_metadata(tmp_int8, _metadata(ckpt, "int8", **source, quantization=quant))
        onnx.checker.check_model(str(tmp_int8), full_check=True)
        p_int8 = p_fake(run_logits(session(tmp_int8), pixels), temperature)
        report["int8"] = {"path": str(out_path), **quant, "skipped_calibration_images": reader.skipped,
                          "max_abs_diff_p_vs_fp32": float(np.abs(p_int8 - p_onnx).max()),
                          "size_mb": round(tmp_int8.stat().st_size / 1e6, 1)}
    return report


def _p_fake_of_export(path: str | os.PathLike, samples: list[Sample], batch_size: int, workers: int) -> tuple:
    """(P(fake) per sample - NaN where unreadable -, the export's metadata) of an export on labelled samples."""
    sess = session(path)
    meta = session_metadata(sess, path)
    preprocess = Preprocess.from_dict(meta["preprocess"])
    scorer = OnnxScorer(sess, preprocess.crop_size, meta.get("precision", "fp32"))
    scores = scorer.score_batches(decoded_batches(FaceDataset(samples, preprocess), batch_size, workers))
    p = np.full(len(samples), np.nan)
    p[scores.index] = p_fake(scores.logit, meta["temperature"])
    return p, meta


def compare_on_split(fp32_path: str | os.PathLike, int8_path: str | os.PathLike, paths: Sequence[str | os.PathLike],
                     labels: Sequence[int], batch_size: int = 32, workers: int | None = 0) -> dict:
    """Accuracy and ROC-AUC of an fp32 and an int8 export on the same labelled images (1 = fake).

    Each model is judged at its own threshold and temperature (an export copies both from its checkpoint).
    Returns ``{"n", "skipped", "fp32": {"accuracy", "roc_auc", "threshold"}, "int8": {...}, "accuracy_drop",
    "roc_auc_drop", "agreement", "max_abs_diff_p"}``; ROC-AUC (and its drop) is ``None`` with one class only.
    """
    from .metrics import compute_metrics

    if len(paths) != len(labels):
        raise ValueError(f"{len(paths)} paths but {len(labels)} labels")
    if not set(labels) <= {0, 1}:
        raise ValueError("labels must be 0 (real) or 1 (fake)")
    samples = [Sample(str(p), int(y)) for p, y in zip(paths, labels)]
    probs, thresholds = {}, {}
    for name, path in (("fp32", fp32_path), ("int8", int8_path)):
        probs[name], meta = _p_fake_of_export(path, samples, batch_size, workers or 0)
        thresholds[name] = meta["threshold"]
    ok = ~(np.isnan(probs["fp32"]) | np.isnan(probs["int8"]))
    if not ok.any():
        raise ValueError(f"none of the {len(paths)} images could be read")
    y = np.asarray(labels)[ok]
    out, pred = {"n": int(ok.sum()), "skipped": int((~ok).sum())}, {}
    for name, threshold in thresholds.items():
        m = compute_metrics(y, probs[name][ok], threshold)
        out[name] = {"accuracy": m["accuracy"], "roc_auc": m["roc_auc"], "threshold": threshold}
        pred[name] = probs[name][ok] >= threshold
    out["accuracy_drop"] = out["fp32"]["accuracy"] - out["int8"]["accuracy"]
    auc32, auc8 = out["fp32"]["roc_auc"], out["int8"]["roc_auc"]
    out["roc_auc_drop"] = None if auc32 is None or auc8 is None else auc32 - auc8
    out["agreement"] = float((pred["fp32"] == pred["int8"]).mean())
    out["max_abs_diff_p"] = float(np.abs(probs["fp32"][ok] - probs["int8"][ok]).max())
    return out


def check_int8_accuracy(fp32_path: str | os.PathLike, int8_path: str | os.PathLike,
                        paths: Sequence[str | os.PathLike], labels: Sequence[int],
                        max_accuracy_drop: float = 0.5) -> dict:
    """The int8 export's accuracy guard: :func:`compare_on_split`, with the verdict written into the int8 file.

    Passed when accuracy drops by at most ``max_accuracy_drop`` points (percent). The file's metadata gets
    ``accuracy_guard`` = ``{"passed", "accuracy_drop", "max_accuracy_drop", "roc_auc_drop", "n"}`` (drops in
    points), which :func:`fakeface.detector.choose_backend` requires before it picks the int8 model by itself. Returns
    :func:`compare_on_split`'s dict plus ``passed``.
    """
    cmp = compare_on_split(fp32_path, int8_path, paths, labels)
    drop = 100 * cmp["accuracy_drop"]
    passed = bool(drop <= max_accuracy_drop)
    auc_drop = None if cmp["roc_auc_drop"] is None else 100 * cmp["roc_auc_drop"]
    update_metadata(int8_path, accuracy_guard={"passed": passed, "accuracy_drop": drop, "n": cmp["n"],
                                               "max_accuracy_drop": max_accuracy_drop, "roc_auc_drop": auc_drop})
    return {**cmp, "passed": passed}




def default_export_path(checkpoint: str | os.PathLike, quantize: str | None = None) -> Path:
    """Where an export goes when no path is given: beside the checkpoint, where ``predict --backend auto`` looks;
    a model folder's in the user cache (:func:`fakeface.hub.exports_dir`), since the folder may be read-only."""
    ckpt = checkpoint_file(checkpoint)
    name = f"{ckpt.stem}.int8.onnx" if quantize else f"{ckpt.stem}.onnx"
    return exports_dir(ckpt) / name if ckpt.name == FOLDER_WEIGHTS else ckpt.with_name(name)


def export_beside(checkpoint: str | os.PathLike, calibration: Sequence[str | os.PathLike] | None = None,
                  guard: Sequence[Sample] | None = None, max_accuracy_drop: float = 0.5,
                  say: Callable[[str], None] = lambda line: None,
                  warn: Callable[[str], None] = lambda line: None) -> Path:
    """Make the fp32 export of a checkpoint beside it (``best.onnx`` for ``best.pt``; a model folder's in the user
    cache) and return its path: what ``predict`` and ``serve`` do on a checkpoint's first use on a CPU, so that it
    runs with ONNX Runtime from then on. With ``calibration`` images and labelled ``guard`` samples (what training
    does) the int8 export too, kept only where it passes the accuracy guard: :class:`Int8Refused` otherwise, its
    fp32 model kept. Checked against PyTorch on the run's validation images where they can be read (seeded noise
    otherwise) and written atomically, so two processes doing it at once leave whole files.
    """
    ckpt = load_checkpoint(checkpoint)
    quantize = "int8" if calibration else None
    path = default_export_path(checkpoint, quantize)
    report = export_onnx(ckpt["path"], path, quantize=quantize, calibration_data=calibration,
                         check_images=_run_check_images(ckpt)[0])
    if quantize:
        _guard_int8(report, list(guard or []), max_accuracy_drop, say, warn)
    return path


def _sample(samples: list, n: int, seed: int = 0) -> list:
    """A seeded sample of at most ``n`` of ``samples``, in their order."""
    if len(samples) <= n:
        return list(samples)
    keep = set(random.Random(seed).sample(range(len(samples)), n))
    return [s for i, s in enumerate(samples) if i in keep]


def _run_check_images(ckpt: dict) -> tuple[list[str] | None, str]:
    """Real images to compare an export with PyTorch on: some of the run's validation split, when it can be
    found; else (None, why) and the export is checked on seeded noise."""
    try:
        samples = validation_samples(ckpt, ckpt.get("data"))
    except (DataError, OSError, TypeError):
        return None, "no validation split of the run found"
    if not samples:
        return None, "the run's validation split is empty"
    return [s.path for s in _sample(samples, N_CHECK_IMAGES)], "the run's validation split"


def int8_samples(pool: list[Sample], checked: list[Sample], n_calibration: int = INT8_CALIBRATION_IMAGES,
                 n_guard: int | None = INT8_GUARD_IMAGES) -> tuple[list[str], list[Sample]]:
    """(calibration image paths, labelled images for the accuracy guard): seeded samples of at most
    ``n_calibration`` of ``pool``'s labelled images and ``n_guard`` of ``checked`` (all of them with None)."""
    calibration = [s.path for s in _sample([s for s in pool if s.label >= 0], n_calibration)]
    return calibration, list(checked) if n_guard is None else _sample(checked, n_guard)


def int8_data(calibration_data: str | os.PathLike, n_images: int = INT8_CALIBRATION_IMAGES
              ) -> tuple[list[str], list[Sample], str]:
    """From a dataset for int8: (calibration images, labelled images for the accuracy guard, the guard split's
    name). Calibration: a seeded sample of ``n_images`` of its train split (else its first split); the guard
    needs a valid (or test) split - never the images calibrated on - and takes all of it."""
    index = discover(calibration_data)
    pool = index.splits.get("train") or next(iter(index.splits.values()))
    name = "valid" if index.splits.get("valid") else "test"
    if not index.splits.get(name):
        raise ValueError("the calibration data needs a valid (or test) split to check int8 accuracy on")
    calibration, checked = int8_samples(pool, index.splits[name], n_images, n_guard=None)
    return calibration, checked, name


def export_run(checkpoint: str | os.PathLike, out: str | os.PathLike | None = None, quantize: str | None = None,
               calibration_data: str | os.PathLike | None = None, calibration_images: int = INT8_CALIBRATION_IMAGES,
               max_accuracy_drop: float = 0.5, say: Callable[[str], None] = print,
               warn: Callable[[str], None] = print, reduce_range: bool | None = None) -> list[dict]:
    """The library side of ``fakeface export``: export a checkpoint, a run folder or each member of an ensemble
    run (beside its checkpoint unless ``out``), and for int8 run the accuracy guard.

    Each export is compared with PyTorch on real images where there are any: ``calibration_data``'s valid (or
    test) split, else the run's own validation split; seeded noise otherwise - its report's ``checked_on`` says
    which. ``say`` gets one line per result as it comes, ``warn`` skipped files. An int8 model that loses more
    than ``max_accuracy_drop`` accuracy points, or whose accuracy cannot be checked, is removed and
    :class:`Int8Refused` raised (its fp32 model stays). ``reduce_range``: see :func:`export_onnx`. Returns each
    export's report (``int8`` reports add
    ``accuracy_check``: :func:`check_int8_accuracy`'s result).
    """
    if quantize not in (None, "int8"):
        raise ValueError(f"--quantize takes int8, got {quantize!r}")
    if quantize and calibration_data is None:
        raise ValueError("--quantize int8 needs --calibration-data PATH (real images, a few hundred)")
    targets = ensemble_members(checkpoint) or [checkpoint]
    if len(targets) > 1 and out is not None:
        raise ValueError(f"{checkpoint} is an ensemble: each member's export goes beside its checkpoint (drop --out)")
    calibration, checked, split = None, None, None
    if calibration_data is not None:
        calibration, checked, split = int8_data(calibration_data, calibration_images)
    reports = []
    for target in targets:
        if checked is not None:
            check_images = [s.path for s in _sample(checked, N_CHECK_IMAGES)]
            source = f"the {split} split of {calibration_data}"
        else:
            check_images, source = _run_check_images(load_checkpoint(target))
        path = Path(out) if out is not None else default_export_path(target, quantize)
        report = export_onnx(target, path, quantize=quantize, calibration_data=calibration, check_images=check_images,
                             reduce_range=reduce_range)
        report["checked_on"] += f" ({source})" if "noise" in report["checked_on"] else f" of {source}"
        reports.append(report)
        say(f"fp32: {report['fp32']['path']}  max |dP| vs PyTorch {report['fp32']['max_abs_diff_p']:.2e} "
            f"(on {report['checked_on']})")
        if quantize is None:
            continue
        int8 = report["int8"]
        bits = "7-bit weights" if int8["reduce_range"] else "8-bit weights (runs as int8 on VNNI CPUs only)"
        say(f"int8: {int8['path']} ({bits})  max |dP| vs fp32 {int8['max_abs_diff_p_vs_fp32']:.3f}")
        if int8["skipped_calibration_images"]:
            warn(f"skipped {len(int8['skipped_calibration_images'])} unreadable calibration image(s), "
                 f"e.g. {int8['skipped_calibration_images'][0]}")
        report["accuracy_check"] = _guard_int8(report, checked, max_accuracy_drop, say, warn)
    return reports


def _guard_int8(report: dict, checked: list[Sample], max_accuracy_drop: float, say, warn) -> dict:
    """Run the int8 accuracy guard on an export's report; remove the int8 file unless it passed."""
    int8_path, fp32_path = Path(report["int8"]["path"]), report["fp32"]["path"]
    try:
        cmp = check_int8_accuracy(fp32_path, int8_path, [s.path for s in checked], [s.label for s in checked],
                                  max_accuracy_drop)
    except ValueError as e:  # e.g. no image of the split could be read: int8 unchecked, so not kept
        int8_path.unlink(missing_ok=True)
        raise ValueError(f"int8 accuracy could not be checked ({e}): int8 model removed; use the fp32 model "
                         f"{fp32_path}") from None
    if cmp["skipped"]:
        warn(f"skipped {cmp['skipped']} unreadable image(s) of the accuracy check")
    drop = 100 * cmp["accuracy_drop"]
    auc = fmt(None if cmp["roc_auc_drop"] is None else -cmp["roc_auc_drop"], signed=True)
    say(f"on {cmp['n']} labelled images: accuracy {cmp['fp32']['accuracy']:.4f} -> {cmp['int8']['accuracy']:.4f} "
        f"({-drop:+.2f} points), ROC-AUC change {auc}")
    if not cmp["passed"]:
        int8_path.unlink(missing_ok=True)
        raise Int8Refused(f"int8 loses {drop:.2f} accuracy points (> {max_accuracy_drop}): refused and removed; "
                          f"use the fp32 model {fp32_path}")
    return cmp
