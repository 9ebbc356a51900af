"""The REST API and web page: ``create_app(checkpoint)`` builds the FastAPI app that ``fakeface serve`` runs.

The model is loaded once: by ``serve`` before uvicorn starts (so a bad checkpoint is one line, not a failed
start-up), or in the app's lifespan when ``create_app`` is given none. Uploads are decoded in a worker thread,
and inference runs off the event loop in a :class:`MicroBatcher`, which groups concurrent requests into one
batch (waiting at most ``max_wait_ms`` for company), so throughput under load approaches batch throughput.
Uploads are not stored unless ``keep_uploads`` names a folder: the request body is read up to the upload limit
(FastAPI's ``max_body_size``, also for bodies sent without a length), Starlette keeps the first megabyte of a
file in memory and the rest in an anonymous temporary file, gone with the request; no log line contains image
bytes.

Errors always have the shape ``{"error": {"code": str, "message": str}}``.
"""

from __future__ import annotations

import asyncio
import base64
import hmac
import logging
import os
import threading
import time
import uuid
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import numpy as np
import torch
from fastapi import FastAPI, File, Query, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from . import __version__
from .explain import explain_image, png_bytes
from .faces import FaceDetector, crop_face
from .images import DEFAULT_MAX_PIXELS, ImageLoadError, load_image

log = logging.getLogger("fakeface.serve")


@dataclass
class ServeConfig:
    checkpoint: str | list[str]  # several: an ensemble
    api_key: str | None = None
    max_upload_bytes: int = 10 * 1024 * 1024
    max_pixels: int = DEFAULT_MAX_PIXELS
    keep_uploads: str | None = None
    cors_origins: list[str] = field(default_factory=list)
    max_batch: int = 32
    max_wait_ms: float = 20.0
    device: str = "auto"
    precision: str = "auto"


MULTIPART_OVERHEAD = 64 * 1024  # a request's body may exceed the upload limit by this much (boundaries, headers)


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str):
        self.status, self.code, self.message = status, code, message


def error_response(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status)


class MicroBatcher:
    """Collects single-image requests into batches for one model call at a time, off the event loop."""

    def __init__(self, score_batch, max_batch: int, max_wait_ms: float):
        self.score_batch, self.max_batch, self.max_wait = score_batch, max_batch, max_wait_ms / 1000
        self.queue: asyncio.Queue = asyncio.Queue()
        self.task: asyncio.Task | None = None
        self.batches = 0

    def start(self) -> None:
        self.task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            try:
                await self.task
            except asyncio.CancelledError:
                pass

    async def submit(self, image: torch.Tensor) -> float:
        future = asyncio.get_running_loop().create_future()
        await self.queue.put((image, future))
        return await future

    async def _run(self) -> None:
        while True:
            items = [await self.queue.get()]
            deadline = time.monotonic() + self.max_wait
            while len(items) < self.max_batch:
                timeout = deadline - time.monotonic()
                if timeout <= 0:
                    break
                try:
                    items.append(await asyncio.wait_for(self.queue.get(), timeout))
                except asyncio.TimeoutError:
                    break
            # group by shape: every image of one model has the same eval size, but be safe
            try:
                batch = torch.stack([image for image, _ in items])
                logits = await run_in_threadpool(self.score_batch, batch)
                self.batches += 1
                for (_, future), logit in zip(items, logits.tolist()):
                    if not future.done():
                        future.set_result(float(logit))
            except Exception as e:  # a model failure answers every waiting request, and the loop goes on
                for _, future in items:
                    if not future.done():
                        future.set_exception(e)


_explain_lock = threading.Lock()


def explain_locked(detector, img):
    """Grad-CAM hooks live on one shared copy of the model: one explanation at a time."""
    with _explain_lock:
        return explain_image(detector, img)


def _headline(ckpt: dict) -> dict:
    history = ckpt.get("history") or []
    best = next((r for r in history if r.get("epoch") == ckpt.get("best_epoch")), history[-1] if history else None)
    if not best:
        return {}
    return {k: best.get(k) for k in ("epoch", "val_loss", "val_acc", "val_auc")}


def create_app(config: ServeConfig, detector=None) -> FastAPI:
    """The API and web page for one checkpoint; ``detector``: the one :func:`~fakeface.export.load_detector`
    already loaded from it (else it is loaded when the app starts)."""
    from .export import load_detector

    state: dict = {}

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        nonlocal detector
        if detector is None:
            detector = load_detector(config.checkpoint, device=config.device, precision=config.precision)
        state["faces"] = FaceDetector()
        # one micro-batcher per model: an ensemble's members batch (and may preprocess) independently
        batchers = [MicroBatcher(m.scorer.logits, config.max_batch, config.max_wait_ms) for m in detector.members]
        for b in batchers:
            b.start()
        state.update(detector=detector, batchers=batchers)
        app.state.batcher = batchers[0]  # visible to tests and metrics
        log.info("serving %s (%s)", config.checkpoint, detector.name)
        yield
        for b in batchers:
            await b.stop()
        state.clear()

    body_limit = config.max_upload_bytes + MULTIPART_OVERHEAD
    app = FastAPI(title="fakeface", version=__version__, lifespan=lifespan,
                  description="Tells real face photos from generated (GAN / deepfake) ones. "
                              "Fake is the positive class: P(fake) = probability the image is generated.")
    if config.cors_origins:
        from fastapi.middleware.cors import CORSMiddleware

        app.add_middleware(CORSMiddleware, allow_origins=config.cors_origins, allow_methods=["GET", "POST"],
                           allow_headers=["Authorization", "Content-Type"])

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError):
        return error_response(exc.status, exc.code, exc.message)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError):
        first = exc.errors()[0] if exc.errors() else {}
        if tuple(first.get("loc", ())) == ("body", "file"):  # missing, a text field, or not multipart at all
            return error_response(422, "invalid_request", "send one image as the file field `file` of a "
                                  "multipart/form-data body (curl -F file=@face.jpg)")
        where = ".".join(str(p) for p in first.get("loc", ()))
        return error_response(422, "invalid_request", f"{where}: {first.get('msg', 'invalid request')}")

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException):
        if exc.status_code == 413:  # FastAPI's body limit, counting a body sent without a length
            return error_response(413, "upload_too_large",
                                  f"upload exceeds the limit of {config.max_upload_bytes:,} bytes")
        if exc.status_code == 400 and "Too many files" in str(exc.detail):
            return error_response(400, "one_file_per_request", "send one image per request (one `file` field)")
        response = error_response(exc.status_code, "http_error", str(exc.detail))
        response.headers.update(exc.headers or {})  # e.g. Allow on a 405
        return response

    @app.exception_handler(Exception)
    async def _internal_error(request: Request, exc: Exception):  # logged with its traceback by uvicorn
        return error_response(500, "internal_error", f"the server failed on this request ({type(exc).__name__}); "
                              "it is logged")

    @app.middleware("http")
    async def guard(request: Request, call_next):
        if request.url.path.startswith("/v1/"):
            if config.api_key is not None:
                header = request.headers.get("authorization", "")
                token = header[7:] if header.lower().startswith("bearer ") else ""
                if not hmac.compare_digest(token.encode(), config.api_key.encode()):
                    return error_response(401, "unauthorized", "missing or wrong API key (Authorization: Bearer KEY)")
            length = request.headers.get("content-length")  # said up front: answered before reading any of it
            if length is not None and length.isdigit() and int(length) > body_limit:
                return error_response(413, "upload_too_large",
                                      f"upload is {int(length):,} bytes; the limit is {config.max_upload_bytes:,}")
        return await call_next(request)

    @app.api_route("/healthz", methods=["GET", "HEAD"])
    async def healthz():
        return {"status": "ok" if "detector" in state else "starting"}

    @app.api_route("/v1/model", methods=["GET", "HEAD"])
    async def model_info():
        detector = state["detector"]
        ckpt = detector.checkpoint
        return {
            "architecture": detector.name,
            "input_size": detector.preprocess.crop_size,
            "preprocess": detector.preprocess.to_dict(),
            "threshold": detector.threshold,
            "threshold_policy": ckpt.get("threshold_policy", "default"),
            "temperature": detector.temperature,
            "calibration": ckpt.get("calibration"),
            "training": _headline(ckpt),
            "members": [{"architecture": m.name, "checkpoint": Path(str(m.checkpoint["path"])).name,
                         "threshold": m.threshold} for m in detector.members] if len(detector.members) > 1 else None,
            "version": __version__,
            "max_upload_bytes": config.max_upload_bytes,
            "positive_class": "fake",
        }

    # the route's own body limit counts a body sent without a length; one declared too long the guard answers
    # first (FastAPI's app-wide limit would replace the JSON error with plain text)
    @app.post("/v1/predict", max_body_size=body_limit, form_limits={"max_files": 1})
    async def predict(file: UploadFile = File(..., description="An image (JPEG, PNG, WebP, ...)"),
                      detect_faces: bool = Query(False, description="Find faces and score each (for ordinary "
                                                 "photos; already-cropped faces need not)"),
                      explain: bool = Query(False, description="Add a Grad-CAM heatmap (PNG, base64) per face")):
        t0 = time.perf_counter()
        detector, batchers = state["detector"], state["batchers"]
        data = await file.read(config.max_upload_bytes + 1)
        if len(data) > config.max_upload_bytes:
            raise ApiError(413, "upload_too_large", f"upload exceeds the limit of {config.max_upload_bytes:,} bytes")
        if not data:
            raise ApiError(400, "empty_upload", "the uploaded file is empty")
        try:
            img = await run_in_threadpool(load_image, data, config.max_pixels)
        except ImageLoadError as e:
            reason = str(e)
            if reason.startswith("not an image"):
                raise ApiError(415, "not_an_image", "the upload is not an image in a format we can read") from None
            if reason.startswith("image too large"):
                raise ApiError(413, "image_too_large", reason) from None
            raise ApiError(400, "unreadable_image", reason) from None
        if explain and not hasattr(detector, "explain_model"):
            raise ApiError(422, "explain_unavailable",
                           "heatmaps need a single PyTorch checkpoint, not an ONNX model or an ensemble")
        if config.keep_uploads:
            keep = Path(config.keep_uploads)
            keep.mkdir(parents=True, exist_ok=True)
            (keep / f"{uuid.uuid4().hex}.bin").write_bytes(data)
        decoded = time.perf_counter()
        faces = await run_in_threadpool(state["faces"].detect, img) if detect_faces else []
        crops = [crop_face(img, f) for f in faces] or [img]
        member_p = []
        for member, batcher in zip(detector.members, batchers):
            tensors = [await run_in_threadpool(member.preprocess.eval_tensor, c) for c in crops]
            logits = await asyncio.gather(*(batcher.submit(t) for t in tensors))
            member_p.append(member.p_fake(np.array(logits)))
        probs = member_p[0] if len(member_p) == 1 else detector.combine(np.array(member_p))
        rows = []
        for i, p in enumerate(probs.tolist()):
            box = list(faces[i].box) if faces else [0, 0, img.width, img.height]
            row = {"box": box, "p_fake": p, "verdict": detector.verdict(p), "whole_image": not faces}
            if explain:
                heat, _ = await run_in_threadpool(explain_locked, detector, crops[i])
                row["heatmap_png_base64"] = base64.b64encode(png_bytes(heat)).decode("ascii")
            rows.append(row)
        top = max(rows, key=lambda r: r["p_fake"])
        done = time.perf_counter()
        if not detect_faces:
            note = "off: the whole image was scored as one face crop"
        elif faces:
            note = f"{len(faces)} face(s) found; the image verdict is the most suspicious face's"
        else:
            note = "no face found: the whole image was scored instead"
        return {
            "verdict": top["verdict"],
            "p_fake": top["p_fake"],
            "threshold": detector.threshold,
            "faces": rows,
            "faces_found": len(faces),
            "face_detection": note,
            "image": {"width": img.width, "height": img.height},
            "timing_ms": {"decode": round((decoded - t0) * 1000, 2), "total": round((done - t0) * 1000, 2)},
            "model": detector.name,
        }

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def index():
        return resources.files("fakeface").joinpath("static/index.html").read_text(encoding="utf-8")

    return app


def is_loopback(host: str) -> bool:
    import ipaddress

    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def serve(config: ServeConfig, host: str = "127.0.0.1", port: int = 8000, insecure: bool = False) -> None:
    """Run the app under uvicorn. A non-loopback address needs an API key, or ``insecure`` said explicitly."""
    import uvicorn

    if not is_loopback(host) and config.api_key is None and not insecure:
        raise ValueError(f"binding {host} exposes the API beyond this machine: set --api-key (or FAKEFACE_API_KEY), "
                         "or pass --insecure to do it without one")
    if not 0 <= port <= 65535:
        raise ValueError(f"port must be 0-65535, got {port}")
    if config.max_upload_bytes <= 0:
        raise ValueError(f"the upload limit must be positive, got {config.max_upload_bytes:,} bytes")
    for path in [config.checkpoint] if isinstance(config.checkpoint, str) else config.checkpoint:
        if not Path(path).exists():
            raise FileNotFoundError(f"checkpoint not found: {path}")
    from .export import load_detector

    detector = load_detector(config.checkpoint, device=config.device, precision=config.precision)  # errors: here
    uvicorn.run(create_app(config, detector), host=host, port=port,
                log_level=os.environ.get("FAKEFACE_LOG_LEVEL", "info"))
