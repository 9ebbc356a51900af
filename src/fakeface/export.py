"""ONNX export and ONNX Runtime inference: a checkpoint becomes one self-describing ``.onnx`` file.

:func:`export_onnx` wraps the checkpoint's model with its normalisation, so the graph takes (B, 3, S, S) float32
pixels on the 0-255 scale (S = the checkpoint's ``preprocess.crop_size``) and returns the logit (B,). The
preprocessing, threshold, threshold policy, temperature and model name travel in the model's ``metadata_props``
(JSON strings), so :class:`OnnxDetector` needs nothing but the ``.onnx`` file. Every export is checked the way
timm's ``onnx_export()`` does it: ``onnx.checker``, then ONNX Runtime against PyTorch fp32 on real images.

``quantize="int8"`` adds static int8 quantization (QDQ, per-channel weights) calibrated on real images;
:func:`check_int8_accuracy` compares it with fp32 on labelled images and records the verdict in its metadata.
Dynamic int8 quantization is not offered: on our CPUs it ran ~8x slower than fp32.

Every export records the SHA-256 of the checkpoint it was made from, so :func:`choose_backend` can tell the
exports of a checkpoint lying beside it (``best.onnx``, ``best.int8.onnx``) from stale ones.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from . import __version__
from .checkpoint import checkpoint_file, expand_checkpoints, load_checkpoint, model_from_checkpoint
from .images import ImageLoadError, load_image
from .inference import Scorer
from .predict import BaseDetector
from .preprocess import Normalize, Preprocess
from .runtime import resolve_device

FORMAT = "fakeface-onnx"
INPUT_NAME, OUTPUT_NAME = "pixels", "logit"
DEFAULT_OPSET = 17
# Max |P_onnx - P_torch| an fp32 export may show. Float reordering (BatchNorm folded into Conv, other conv
# algorithms) moved P(fake) by 1-2e-6 (Inception-ResNet-V1 at 88 and 160 px, real faces); a real export bug moves
# it by far more (swapped colour channels: 0.83). 1e-3 leaves room for a calibrated temperature as low as 0.01
# (which scales logit noise by 100) and is still far too small to flip a verdict not already on the threshold.
DEFAULT_TOLERANCE = 1e-3


class OnnxModelError(ValueError):
    """A file that is not a usable fakeface ONNX export (missing, corrupt, or without our metadata)."""


class ExportMismatchError(RuntimeError):
    """The exported graph does not compute what the PyTorch model computes."""


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
        "input": INPUT_NAME,
        "output": OUTPUT_NAME,
        **extra,
    }
    return {k: json.dumps(v) for k, v in meta.items() if v is not None}


def _decode_metadata(props: dict[str, str], path: str | os.PathLike) -> dict:
    if Path(path).is_file() and Path(path).stat().st_size == 0:  # onnx reads an empty file as an empty model
        raise OnnxModelError(f"cannot read ONNX model {path}: empty file (0 bytes)")
    if props.get("format") != json.dumps(FORMAT):
        raise OnnxModelError(f"{path} is an ONNX model but not a fakeface export (no fakeface metadata); "
                             "export one with fakeface.export.export_onnx")
    try:
        meta = {k: json.loads(v) for k, v in props.items()}
        meta["preprocess"] = Preprocess.from_dict(meta["preprocess"]).to_dict()  # validates it
        meta["threshold"], meta["temperature"] = float(meta["threshold"]), float(meta["temperature"])
        if not isinstance(meta["model"].get("name"), str):
            raise ValueError("no model name")
    except (AttributeError, KeyError, TypeError, ValueError) as e:
        raise OnnxModelError(f"{path}: damaged fakeface metadata ({type(e).__name__}: {e})") from None
    return meta


def read_metadata(path: str | os.PathLike) -> dict:
    """The decoded fakeface metadata of an exported .onnx file (preprocess, threshold, temperature, model, ...)."""
    import onnx

    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as e:
        raise OnnxModelError(f"cannot read ONNX model {path}: {e}") from e
    return _decode_metadata({p.key: p.value for p in model.metadata_props}, path)


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
    _decode_metadata(props, path)  # refuses files that are not ours
    props.update({k: json.dumps(v) for k, v in fields.items()})
    onnx.helper.set_model_props(model, props)
    tmp = _tmp_beside(path, "meta")
    try:
        onnx.save(model, str(tmp))
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def file_sha256(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


# -- ONNX Runtime --------------------------------------------------------------------------------------------------
def _session(path: str | os.PathLike, threads: int | None = None, spinning: bool = False):
    """A CPU InferenceSession with all graph optimisations and ``threads`` intra-op threads.

    ``threads=None`` uses ``torch.get_num_threads()``: one per physical core unless ``OMP_NUM_THREADS`` says
    otherwise - the same budget the PyTorch path gets, so the two compare fairly on a shared machine.
    ``spinning=False`` lets idle intra-op threads sleep instead of spinning (ORT's default): prediction decodes
    images on the same cores while the model runs, and spinning cost efficientnet_lite0 int8 about 1.5 of its
    5 CPU-ms per image (2-core machine, benchmarks/inference.py --ort-spinning compares the two).
    """
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.intra_op_num_threads = threads or torch.get_num_threads()
    opts.inter_op_num_threads = 1  # one chain of convolutions: nothing to run in parallel between operators
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
    path = Path(path)
    if not path.is_file():
        raise OnnxModelError(f"ONNX model not found: {path}")
    try:
        return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    except Exception as e:  # onnxruntime raises InvalidProtobuf, Fail, ... from its C++ side
        raise OnnxModelError(f"cannot load ONNX model {path}: {e}") from e


def _run_logits(session, pixels: np.ndarray, batch_size: int = 32) -> np.ndarray:
    """(N, 3, S, S) float32 pixels -> (N,) float64 logits, ``batch_size`` at a time."""
    out = [session.run([OUTPUT_NAME], {INPUT_NAME: pixels[i:i + batch_size]})[0]
           for i in range(0, len(pixels), batch_size)]
    return np.concatenate(out).astype(np.float64) if out else np.zeros(0)


def _sigmoid(logits: np.ndarray, temperature: float) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.asarray(logits, dtype=np.float64) / temperature))


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
    if check_images:
        pixels, skipped = _decode(check_images, preprocess)
        if not len(pixels):
            raise ValueError(f"none of the {len(check_images)} check images could be read: {skipped[0]}")
        return pixels, f"{len(pixels)} images"
    s = preprocess.crop_size
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n_random, 3, s, s)).astype(np.float32), f"{n_random} seeded random images"


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


# -- export --------------------------------------------------------------------------------------------------------
def _tmp_beside(path: Path, tag: str) -> Path:
    return path.with_name(f".{path.name}.{tag}.tmp{os.getpid()}")


def _export_fp32(model: nn.Module, preprocess: Preprocess, path: Path, opset: int) -> None:
    wrapper = _ExportWrapper(model, preprocess).eval()
    s = preprocess.crop_size
    example = torch.randint(0, 256, (2, 3, s, s), generator=torch.Generator().manual_seed(0)).float()
    with warnings.catch_warnings(), torch.inference_mode():
        # The TorchScript exporter is deprecated since torch 2.9 in favour of dynamo=True, which needs onnxscript
        # and opset >= 18 and took ~20x longer here (20-30 s vs 1-2 s per export). Its deprecation warnings are
        # silenced for this one call; revisit when torch removes it.
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
    calibration image (P(fake) 0.92 came back as 0.72 with 16 images) and coarse in between. The head is
    ~1M multiply-adds of the network's billions, so it costs nothing to keep exact.
    """
    import onnx

    nodes = list(onnx.load(str(path), load_external_data=False).graph.node)
    pools = [i for i, n in enumerate(nodes) if n.op_type in ("GlobalAveragePool", "GlobalMaxPool", "ReduceMean")]
    if pools:
        return [n.name for n in nodes[pools[-1] + 1:]]
    outputs = {o.name for o in onnx.load(str(path), load_external_data=False).graph.output}
    return [n.name for n in nodes if outputs & set(n.output)]


def _quantize_int8(fp32_path: Path, out_path: Path, reader: ImageCalibrationReader, per_channel: bool,
                   reduce_range: bool) -> None:
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    prepared = _tmp_beside(out_path, "prep")
    try:
        # Shape inference and ORT's graph optimisations (e.g. folding the head's BatchNorm into its MatMul) first,
        # as ORT's quantization guide recommends: fewer, larger ops to quantize.
        quant_pre_process(str(fp32_path), str(prepared))
        quantize_static(
            str(prepared), str(out_path), reader,
            quant_format=QuantFormat.QDQ,  # what ORT's CPU kernels are optimised for since 1.11
            # uint8 activations x int8 weights: ORT's recommendation for x86; reduce_range=True (7-bit weights)
            # only for CPUs without VNNI, where u8 x s8 products can saturate.
            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, reduce_range=reduce_range,
            # Per output channel: after BatchNorm folding the conv channels' weight ranges differ a lot.
            per_channel=per_channel,
            # MinMax keeps only each tensor's per-batch min and max (ReduceMin/ReduceMax outputs), so memory stays
            # small for a few hundred images. (CalibMaxIntermediateOutputs would drop batches: ORT clears them
            # without merging their ranges.)
            calibrate_method=CalibrationMethod.MinMax,
            nodes_to_exclude=_head_nodes(prepared),
        )
    finally:
        prepared.unlink(missing_ok=True)


def export_onnx(
    checkpoint: str | os.PathLike,
    out_path: str | os.PathLike,
    opset: int = DEFAULT_OPSET,
    quantize: str | None = None,
    calibration_data: Sequence[str | os.PathLike] | None = None,
    tolerance: float = DEFAULT_TOLERANCE,
    check_images: Sequence[str | os.PathLike] | None = None,
    per_channel: bool = True,
    reduce_range: bool = False,
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
        per_channel, reduce_range: int8 weight quantization per output channel; 7-bit weights (non-VNNI CPUs).
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
        raise ValueError(f"quantize must be None or 'int8', got {quantize!r} (dynamic int8 is slower here)")
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
    source = {"opset": opset, "source_sha256": file_sha256(ckpt["path"])}
    fp32_path = out_path.with_name(f"{out_path.stem}.fp32.onnx") if quantize else out_path
    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp_fp32, tmp_int8 = _tmp_beside(fp32_path, "fp32"), _tmp_beside(out_path, "int8")
    s = preprocess.crop_size
    report = {"path": str(out_path), "precision": quantize or "fp32", "opset": opset, "input_shape": ["B", 3, s, s],
              "checkpoint": ckpt["path"], "int8": None}
    try:
        _export_fp32(model, preprocess, tmp_fp32, opset)
        _write_metadata(tmp_fp32, _metadata(ckpt, "fp32", **source))
        onnx.checker.check_model(str(tmp_fp32), full_check=True)

        pixels, report["checked_on"] = _check_batch(check_images, preprocess)
        fp32_session = _session(tmp_fp32)
        p_onnx = _sigmoid(_run_logits(fp32_session, pixels), temperature)
        p_torch = _sigmoid(_torch_logits(model, preprocess, pixels), temperature)
        diff = float(np.abs(p_onnx - p_torch).max())
        report["fp32"] = {"path": str(fp32_path), "max_abs_diff_p": diff, "tolerance": tolerance}
        if not diff <= tolerance:  # also catches NaN
            raise ExportMismatchError(f"ONNX Runtime and PyTorch differ by {diff:.3g} in P(fake) on "
                                      f"{report['checked_on']} (tolerance {tolerance:g}); nothing was written")

        if quantize:
            reader = ImageCalibrationReader(calibration_data, preprocess, calibration_batch_size)
            try:
                _quantize_int8(tmp_fp32, tmp_int8, reader, per_channel, reduce_range)
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
            p_int8 = _sigmoid(_run_logits(_session(tmp_int8), pixels), temperature)
            report["int8"] = {"path": str(out_path), **quant, "skipped_calibration_images": reader.skipped,
                              "max_abs_diff_p_vs_fp32": float(np.abs(p_int8 - p_onnx).max()),
                              "size_mb": round(tmp_int8.stat().st_size / 1e6, 1)}
        report["fp32"]["size_mb"] = round(tmp_fp32.stat().st_size / 1e6, 1)
        os.replace(tmp_fp32, fp32_path)
        if quantize:
            os.replace(tmp_int8, out_path)
    finally:
        tmp_fp32.unlink(missing_ok=True)
        tmp_int8.unlink(missing_ok=True)
    return report


# -- inference -----------------------------------------------------------------------------------------------------
class OnnxScorer:
    """An ONNX Runtime session with :class:`fakeface.inference.Scorer`'s interface: (B,3,S,S) uint8 -> (B,) logits."""

    def __init__(self, session, crop_size: int, precision: str):
        self.session, self.crop_size = session, crop_size
        self.device, self.precision = torch.device("cpu"), precision
        self.threads = session.get_session_options().intra_op_num_threads

    def logits(self, images: torch.Tensor) -> torch.Tensor:
        if images.ndim != 4 or tuple(images.shape[1:]) != (3, self.crop_size, self.crop_size):
            raise ValueError(f"expected images (B, 3, {self.crop_size}, {self.crop_size}), got {tuple(images.shape)}")
        if images.shape[0] == 0:
            return torch.zeros(0)
        pixels = images.detach().cpu().numpy().astype(np.float32)  # uint8 or float, 0-255
        return torch.from_numpy(self.session.run([OUTPUT_NAME], {INPUT_NAME: pixels})[0]).float()

    # Scorer.score_batches only calls self.logits: the same loop serves both runtimes.
    score_batches = Scorer.score_batches


class OnnxDetector(BaseDetector):
    """An exported .onnx file ready to score, with :class:`fakeface.predict.Detector`'s interface.

    Everything (preprocessing, threshold, temperature, model name) comes from the file's metadata, so
    ``predict_paths(OnnxDetector("model.onnx"), paths)`` needs nothing else.
    """

    def __init__(self, path: str | os.PathLike, threads: int | None = None, spinning: bool = False):
        import onnxruntime as ort

        session = _session(path, threads, spinning)  # raises OnnxModelError for missing / corrupt files
        meta = _decode_metadata(session.get_modelmeta().custom_metadata_map, path)
        self.checkpoint = {**meta, "path": str(path)}
        self.preprocess = Preprocess.from_dict(meta["preprocess"])
        self.threshold, self.temperature = meta["threshold"], meta["temperature"]
        self.name = meta["model"]["name"]
        self.scorer = OnnxScorer(session, self.preprocess.crop_size, meta.get("precision", "fp32"))
        self.runtime = f"onnxruntime {ort.__version__}, {self.scorer.threads} threads"


def load_detector(path, device: str = "auto", precision: str = "auto"):
    """A detector for a checkpoint, a ``.onnx`` file, or a list of them (an :class:`~fakeface.predict.Ensemble`);
    an ensemble run folder (``members: N`` in training) stands for its members, judged at the threshold fitted
    on the ensemble's own valid scores when ``fakeface calibrate`` wrote one (``RUN/calibration.json``).

    An :class:`OnnxDetector` for a ``.onnx`` file, a :class:`fakeface.predict.Detector` for anything else.
    An ONNX model runs on the CPU at the precision it was exported with: ``device`` must be ``auto`` or ``cpu``
    and ``precision`` ``auto`` or that precision.
    """
    given = list(path) if isinstance(path, (list, tuple)) else [path]
    paths = expand_checkpoints(given)
    if len(paths) > 1:
        from .predict import Ensemble

        ensemble = Ensemble([load_detector(p, device, precision) for p in paths])
        if len(given) == 1:  # one ensemble run: judged at the threshold fitted on its own valid scores
            ensemble.use_run_calibration(given[0])
        return ensemble
    path = paths[0]
    if Path(path).suffix.lower() != ".onnx":
        from .predict import Detector

        return Detector(path, device=device, precision=precision)
    if device not in ("auto", "cpu"):
        raise ValueError(f"an ONNX model runs on the CPU with ONNX Runtime; got device {device!r}")
    detector = OnnxDetector(path)
    if precision not in ("auto", detector.scorer.precision):
        raise ValueError(f"{path} is a {detector.scorer.precision} model; precision {precision!r} needs another "
                         "export (fp32 or quantize='int8')")
    return detector


def compare_on_split(fp32_path: str | os.PathLike, int8_path: str | os.PathLike, paths: Sequence[str | os.PathLike],
                     labels: Sequence[int], batch_size: int = 32, workers: int | None = 0) -> dict:
    """Accuracy and ROC-AUC of an fp32 and an int8 export on the same labelled images (1 = fake).

    Each model is judged at its own threshold and temperature (an export copies both from its checkpoint).
    Returns ``{"n", "skipped", "fp32": {"accuracy", "roc_auc", "threshold"}, "int8": {...}, "accuracy_drop",
    "roc_auc_drop", "agreement", "max_abs_diff_p"}``; ROC-AUC (and its drop) is ``None`` with one class only.
    """
    from .metrics import compute_metrics
    from .predict import predict_paths

    if len(paths) != len(labels):
        raise ValueError(f"{len(paths)} paths but {len(labels)} labels")
    if not set(labels) <= {0, 1}:
        raise ValueError("labels must be 0 (real) or 1 (fake)")
    detectors = {"fp32": OnnxDetector(fp32_path), "int8": OnnxDetector(int8_path)}
    probs = {}
    for name, det in detectors.items():
        rows = predict_paths(det, [str(p) for p in paths], batch_size=batch_size, workers=workers)
        probs[name] = np.array([np.nan if r["p_fake"] is None else r["p_fake"] for r in rows])
    ok = ~(np.isnan(probs["fp32"]) | np.isnan(probs["int8"]))
    if not ok.any():
        raise ValueError(f"none of the {len(paths)} images could be read")
    y = np.asarray(labels)[ok]
    out, pred = {"n": int(ok.sum()), "skipped": int((~ok).sum())}, {}
    for name, det in detectors.items():
        m = compute_metrics(y, probs[name][ok], det.threshold)
        out[name] = {"accuracy": m["accuracy"], "roc_auc": m["roc_auc"], "threshold": det.threshold}
        pred[name] = probs[name][ok] >= det.threshold
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
    points), which :func:`choose_backend` requires before it picks the int8 model by itself. Returns
    :func:`compare_on_split`'s dict plus ``passed``.
    """
    cmp = compare_on_split(fp32_path, int8_path, paths, labels)
    drop = 100 * cmp["accuracy_drop"]
    passed = bool(drop <= max_accuracy_drop)
    auc_drop = None if cmp["roc_auc_drop"] is None else 100 * cmp["roc_auc_drop"]
    update_metadata(int8_path, accuracy_guard={"passed": passed, "accuracy_drop": drop, "n": cmp["n"],
                                               "max_accuracy_drop": max_accuracy_drop, "roc_auc_drop": auc_drop})
    return {**cmp, "passed": passed}


# -- choosing a backend --------------------------------------------------------------------------------------------
BACKENDS = ("auto", "pytorch", "onnx", "onnx-int8")


@dataclass(frozen=True)
class BackendChoice:
    """What to load (a checkpoint or an export, for :func:`load_detector`), as which backend, and why."""

    path: Path
    backend: str  # pytorch, onnx or onnx-int8
    reason: str


def exports_beside(checkpoint: str | os.PathLike) -> tuple[list[tuple[Path, dict]], list[str]]:
    """The ONNX exports of this very checkpoint lying beside it, with their metadata, and why others were passed
    over. Candidates are ``<stem>.onnx`` and ``<stem>.*.onnx`` (``fakeface export``'s default names) whose
    recorded SHA-256 is the checkpoint file's: an export older than the checkpoint (retrained, re-calibrated)
    is stale and ignored.
    """
    ckpt = checkpoint_file(checkpoint)
    candidates = sorted({*ckpt.parent.glob(f"{ckpt.stem}.onnx"), *ckpt.parent.glob(f"{ckpt.stem}.*.onnx")})
    if not candidates:
        return [], []
    digest = file_sha256(ckpt)
    found, passed_over = [], []
    for path in candidates:
        try:
            meta = read_metadata(path)
        except OnnxModelError as e:
            passed_over.append(f"{path.name}: {e}")
            continue
        if meta.get("source_sha256") != digest:
            passed_over.append(f"{path.name}: not exported from this {ckpt.name} (made before it changed?)")
        else:
            found.append((path, meta))
    return found, passed_over


def _guard(meta: dict) -> tuple[bool, str]:
    """(passed, in words) of an int8 export's recorded accuracy guard."""
    guard = meta.get("accuracy_guard")
    if not isinstance(guard, dict) or not isinstance(guard.get("accuracy_drop"), (int, float)):
        return False, "no accuracy guard recorded (fakeface export --calibration-data checks one)"
    drop, limit = guard.get("accuracy_drop"), guard.get("max_accuracy_drop")
    words = f"accuracy drop {drop:.2f} points on {guard.get('n')} labelled images, limit {limit}"
    if guard.get("passed") is True:
        return True, f"passed its accuracy guard: {words}"
    return False, f"failed its accuracy guard: {words}"


def choose_backend(checkpoint: str | os.PathLike, backend: str = "auto", device: str = "auto",
                   precision: str = "auto") -> BackendChoice:
    """Which model file ``fakeface predict`` runs for ``checkpoint``, and why.

    ``auto`` takes the fastest usable export of the checkpoint beside it (:func:`exports_beside`): int8 if its
    metadata says it passed its accuracy guard, else fp32 ONNX, else the checkpoint with PyTorch. That order is
    benchmarks/inference.py's on our 2-core AMX CPU at 160 px, batch 32 (images/s, Inception-ResNet-V1 /
    EfficientNet-Lite0): ONNX Runtime int8 43 / 117, ONNX Runtime fp32 15.7 / 74, PyTorch bf16 channels_last
    13.4 / 28.5. ``auto`` keeps PyTorch on a GPU and when a ``precision`` other than ``auto`` is asked for (a
    PyTorch setting). ``pytorch``, ``onnx`` and ``onnx-int8`` force a backend (an int8 export is then used
    whatever its guard says); a missing export is a ``ValueError`` naming the command that makes one. Given an
    ``.onnx`` file, ``auto`` runs it and a forced backend must match it.
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(BACKENDS)}; got {backend!r}")
    path = Path(checkpoint)
    if path.suffix.lower() == ".onnx":
        kind = "onnx-int8" if read_metadata(path).get("precision") == "int8" else "onnx"
        if backend not in ("auto", kind):
            raise ValueError(f"{path} is an {kind} export; --backend {backend} needs the checkpoint it came from")
        return BackendChoice(path, kind, "an ONNX export was given")
    if backend == "pytorch":
        return BackendChoice(path, "pytorch", "asked for")
    if backend == "auto":
        dev = resolve_device(device)
        if dev.type != "cpu":
            return BackendChoice(path, "pytorch", f"the model runs on {dev.type}; ONNX Runtime here is CPU-only")
        if precision != "auto":
            return BackendChoice(path, "pytorch", f"precision {precision} was asked for")
    exports, passed_over = exports_beside(path)
    by_kind = {"onnx-int8": [], "onnx": []}
    for p, meta in exports:
        by_kind["onnx-int8" if meta.get("precision") == "int8" else "onnx"].append((p, meta))
    if backend != "auto":
        if not by_kind[backend]:
            flags = " --quantize int8 --calibration-data DATA" if backend == "onnx-int8" else ""
            raise ValueError(f"no {backend} export of {checkpoint_file(path)} beside it; make one with "
                             f"fakeface export --checkpoint {path}{flags}")
        p, meta = by_kind[backend][0]
        guard = f", {_guard(meta)[1]}" if backend == "onnx-int8" else ""
        return BackendChoice(p, backend, f"asked for: {p.name}{guard}")
    for p, meta in by_kind["onnx-int8"]:
        passed, words = _guard(meta)
        if passed:
            return BackendChoice(p, "onnx-int8", f"{p.name}, int8 export of this checkpoint, {words}")
        passed_over.append(f"{p.name}: {words}")
    ignored = f"; passed over {'; '.join(passed_over)}" if passed_over else ""
    if by_kind["onnx"]:
        p = by_kind["onnx"][0][0]
        return BackendChoice(p, "onnx", f"{p.name}, fp32 export of this checkpoint{ignored}")
    return BackendChoice(path, "pytorch", f"no usable export of {checkpoint_file(path).name} beside it{ignored}")
