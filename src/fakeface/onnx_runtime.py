"""Running a fakeface ONNX export with ONNX Runtime: sessions, and the metadata that makes the file self-describing.

An export's graph takes ``pixels`` (B, 3, S, S) float32 on 0-255 and returns ``logit`` (B,); the preprocessing,
threshold, temperature and model name travel as JSON strings in its ``metadata_props`` (written by
:mod:`fakeface.export`), so a session and :func:`read_metadata` need nothing but the file.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import torch

from .preprocess import Preprocess
from .scoring import Scorer

FORMAT = "fakeface-onnx"
INPUT_NAME, OUTPUT_NAME = "pixels", "logit"


class OnnxModelError(ValueError):
    """A file that is not a usable fakeface ONNX export (missing, corrupt, or without our metadata)."""


def decode_metadata(props: dict[str, str], path: str | os.PathLike) -> dict:
    """An export's ``metadata_props`` (str -> JSON str) decoded and checked; :class:`OnnxModelError` if not ours."""
    if Path(path).is_file() and Path(path).stat().st_size == 0:  # onnx reads an empty file as an empty model
        raise OnnxModelError(f"cannot read ONNX model {path}: empty file (0 bytes)")
    if props.get("format") != json.dumps(FORMAT):
        raise OnnxModelError(f"{path} is an ONNX model but not a fakeface export (no fakeface metadata); "
                             "export one with fakeface export")
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

    if not Path(path).is_file():
        raise OnnxModelError(f"ONNX model not found: {path}")
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as e:
        raise OnnxModelError(f"cannot read ONNX model {path}: {e}") from e
    return decode_metadata({p.key: p.value for p in model.metadata_props}, path)


def session(path: str | os.PathLike, threads: int | None = None, spinning: bool = False):
    """A CPU InferenceSession with all graph optimisations and ``threads`` intra-op threads.

    ``threads=None`` uses ``torch.get_num_threads()`` (one per physical core unless ``OMP_NUM_THREADS`` says
    otherwise), the budget the PyTorch path gets, so the two compare fairly. ``spinning=False`` lets idle
    intra-op threads sleep instead of spinning: prediction decodes images on the same cores while the model runs,
    and spinning threads would take those cores from the decoders (benchmarks/inference.py --ort-spinning).
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


def session_metadata(sess, path: str | os.PathLike) -> dict:
    """The decoded fakeface metadata of an open session's model."""
    return decode_metadata(sess.get_modelmeta().custom_metadata_map, path)


def run_logits(sess, pixels: np.ndarray, batch_size: int = 32) -> np.ndarray:
    """(N, 3, S, S) float32 pixels -> (N,) float64 logits, ``batch_size`` at a time."""
    out = [sess.run([OUTPUT_NAME], {INPUT_NAME: pixels[i:i + batch_size]})[0]
           for i in range(0, len(pixels), batch_size)]
    return np.concatenate(out).astype(np.float64) if out else np.zeros(0)


class OnnxScorer:
    """An ONNX Runtime session with :class:`fakeface.scoring.Scorer`'s interface: (B,3,S,S) uint8 -> (B,) logits."""

    def __init__(self, sess, crop_size: int, precision: str):
        self.session, self.crop_size = sess, crop_size
        self.device, self.precision = torch.device("cpu"), precision
        self.threads = sess.get_session_options().intra_op_num_threads

    def logits(self, images: torch.Tensor) -> torch.Tensor:
        if images.ndim != 4 or tuple(images.shape[1:]) != (3, self.crop_size, self.crop_size):
            raise ValueError(f"expected images (B, 3, {self.crop_size}, {self.crop_size}), got {tuple(images.shape)}")
        if images.shape[0] == 0:
            return torch.zeros(0)
        pixels = images.detach().cpu().numpy().astype(np.float32)  # uint8 or float, 0-255
        return torch.from_numpy(self.session.run([OUTPUT_NAME], {INPUT_NAME: pixels})[0]).float()

    # Scorer.score_batches only calls self.logits: the same loop serves both runtimes.
    score_batches = Scorer.score_batches
