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
import errno
import hmac
import logging
import os
import sys
import tempfile
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
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from . import __version__
from .detector import Detector, load_detector, resolve_sources
from .explain import explain_image, png_bytes
from .faces import NO_FACE, FaceDetector, FaceDetectorError, analyse, crop_face
from .images import DEFAULT_MAX_PIXELS, ImageLoadError, load_image

log = logging.getLogger("fakeface.serve")

# Whether the API and the page find and align faces unless told: on, since an upload that already is an aligned
# face is then scored as it is, a face in a larger photo can only be scored once it is cut out (at some cost in
# ROC-AUC: benchmarks/face_detection.py, docs/experiments/face-detection/), and an image without a face gets
# no_face rather than a guess
DETECT_FACES_DEFAULT = True


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
    backend: str = "auto"  # as predict --backend
    face_weights: str | None = None  # the MTCNN weights file; None: the package's


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


class ErrorBody(BaseModel):
    code: str = Field(description="Stable machine-readable error code, e.g. upload_too_large")
    message: str = Field(description="What went wrong, in words")


class ErrorResponse(BaseModel):
    error: ErrorBody


class FaceResult(BaseModel):
    box: list[int] = Field(description="The face box (x0, y0, x1, y1) in image pixels; the whole image if it was "
                                       "scored whole")
    crop: list[int] = Field(description="Bounds (x0, y0, x1, y1) of the aligned square that was scored (may reach "
                                        "past the image)")
    quad: list[list[float]] | None = Field(None, description="Corners (x, y) of the aligned square: top-left, "
                                           "bottom-left, bottom-right, top-right of the face")
    landmarks: list[list[float]] | None = Field(None, description="(x, y) of the left eye, right eye, nose, left "
                                                "and right mouth corner")
    score: float | None = Field(None, description="The face detector's confidence that this is a face, 0-1")
    p_fake: float = Field(description="Calibrated probability that the face is generated")
    verdict: str = Field(description="fake or real, at the detector's threshold")
    whole_image: bool = Field(description="True when the whole image was scored as one face crop")
    realigned: bool = Field(False, description="True when the face was cut out of the image and resampled; False "
                            "when the image already was the aligned face (within the face detector's landmark "
                            "noise) and was scored as it is, or when it was scored whole")
    heatmap_png_base64: str | None = Field(None, description="Grad-CAM heatmap (PNG, base64), with explain=true")


class ImageSize(BaseModel):
    width: int
    height: int


class PredictResponse(BaseModel):
    verdict: str = Field(description="The image's verdict: its most suspicious face's (fake or real), or no_face "
                                     "when faces were searched for and none was found (nothing scored)")
    p_fake: float | None = Field(description="The most suspicious face's calibrated P(fake); null when no face "
                                             "was found")
    threshold: float
    faces: list[FaceResult]
    faces_found: int
    face_detection: str
    image: ImageSize
    timing_ms: dict[str, float]
    model: str


class ModelPreprocess(BaseModel):
    input_size: int = Field(description="Side of the square crop the model scores, in pixels")
    training_crop_size: int = Field(description="Side of the square crops it was trained on")
    resize: int | None = Field(description="Shorter side before cropping; null: native resolution")
    mean: list[float]
    std: list[float]


class ModelRelease(BaseModel):
    name: str | None = Field(None, description="The released detector's name, e.g. fakeface-default")
    version: str | None = None
    provisional: bool = Field(False, description="A stand-in until the project's recipe is released: see note")
    note: str | None = Field(None, description="What a user of this release should know")


class ModelInfo(BaseModel):
    architecture: str
    input_size: int = Field(description="Side of the square crop the model scores (= preprocess.input_size)")
    preprocess: ModelPreprocess
    threshold: float
    threshold_policy: str
    temperature: float
    backend: str = Field(description="pytorch, onnx or onnx-int8 (an ensemble: its members', comma-separated)")
    calibration: dict | None
    training: dict
    members: list[dict] | None
    version: str
    max_upload_bytes: int
    positive_class: str
    release: ModelRelease | None = Field(description="The release this detector belongs to; null for a run's own "
                                                     "checkpoint")
    data_kind: str | None = Field(description="What it was trained on when that is not faces: synthetic (the "
                                              "training demo's textures: not a face detector); null otherwise")


ERRORS = {status: {"model": ErrorResponse, "description": what} for status, what in (
    (400, "Empty or unreadable image, or more than one file"),
    (401, "Missing or wrong API key (when the server has one)"),
    (413, "Upload or image too large"),
    (415, "Not an image in a readable format"),
    (422, "Invalid request (no `file` field, bad query value, heatmap unavailable)"),
    (503, "Face detection asked for, but this server cannot build its face detector "
          "(face_detector_unavailable); requests without detect_faces still work"),
)}

_explain_lock = threading.Lock()


def explain_locked(detector, img):
    """Grad-CAM hooks live on one shared copy of the model: one explanation at a time."""
    with _explain_lock:
        return explain_image(detector, img)


def _best_epoch_metrics(ckpt: dict) -> dict:
    """The validation metrics of the epoch a checkpoint was selected at (empty for an export or an ensemble)."""
    history = ckpt.get("history") or []
    best = next((r for r in history if r.get("epoch") == ckpt.get("best_epoch")), history[-1] if history else None)
    if not best:
        return {}
    return {k: best.get(k) for k in ("epoch", "val_loss", "val_acc", "val_auc")}


# -- the handlers: the app's state is on request.app.state (config, detector, batchers, faces) -------------------
async def on_api_error(request: Request, exc: ApiError):
    return error_response(exc.status, exc.code, exc.message)


async def on_validation_error(request: Request, exc: RequestValidationError):
    first = exc.errors()[0] if exc.errors() else {}
    if tuple(first.get("loc", ())) == ("body", "file"):  # missing, a text field, or not multipart at all
        return error_response(422, "invalid_request", "send one image as the file field `file` of a "
                              "multipart/form-data body (curl -F file=@face.jpg)")
    where = ".".join(str(p) for p in first.get("loc", ()))
    return error_response(422, "invalid_request", f"{where}: {first.get('msg', 'invalid request')}")


async def on_http_error(request: Request, exc: StarletteHTTPException):
    limit = request.app.state.config.max_upload_bytes
    if exc.status_code == 413:  # FastAPI's body limit, counting a body sent without a length
        return error_response(413, "upload_too_large", f"upload exceeds the limit of {limit:,} bytes")
    if exc.status_code == 400 and "Too many files" in str(exc.detail):
        return error_response(400, "one_file_per_request", "send one image per request (one `file` field)")
    response = error_response(exc.status_code, "http_error", str(exc.detail))
    response.headers.update(exc.headers or {})
    if exc.status_code == 405:  # GET and HEAD are separate routes (one operation id each): allow both
        methods = {m for r in request.app.routes if getattr(r, "path", None) == request.url.path
                   for m in getattr(r, "methods", None) or ()}
        response.headers["Allow"] = ", ".join(sorted(methods))
    return response


async def on_internal_error(request: Request, exc: Exception):  # logged with its traceback by uvicorn
    return error_response(500, "internal_error", f"the server failed on this request ({type(exc).__name__}); "
                          "it is logged")


async def check_key_and_length(request: Request, call_next):
    """On /v1/*: the API key when the server has one, and a declared body length within the upload limit
    (answered before reading any of the body)."""
    config = request.app.state.config
    if request.url.path.startswith("/v1/"):
        if config.api_key is not None:
            header = request.headers.get("authorization", "")
            token = header[7:] if header.lower().startswith("bearer ") else ""
            if not hmac.compare_digest(token.encode(), config.api_key.encode()):
                return error_response(401, "unauthorized", "missing or wrong API key (Authorization: Bearer KEY)")
        length = request.headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > config.max_upload_bytes + MULTIPART_OVERHEAD:
            return error_response(413, "upload_too_large",
                                  f"upload is {int(length):,} bytes; the limit is {config.max_upload_bytes:,}")
    return await call_next(request)


async def healthz(request: Request) -> dict:
    return {"status": "ok" if getattr(request.app.state, "detector", None) is not None else "starting"}


async def model_info(request: Request) -> ModelInfo:
    state = request.app.state
    detector, config = state.detector, state.config
    pre = detector.preprocess
    return ModelInfo(
        architecture=detector.name, input_size=pre.crop_size,
        preprocess=ModelPreprocess(input_size=pre.crop_size, training_crop_size=pre.input_size, resize=pre.resize,
                                   mean=list(pre.mean), std=list(pre.std)),
        threshold=detector.threshold, threshold_policy=detector.threshold_policy, temperature=detector.temperature,
        backend=", ".join(m.backend_choice.backend if m.backend_choice else "pytorch" for m in detector.members),
        calibration=detector.checkpoint.get("calibration"), training=_best_epoch_metrics(detector.checkpoint),
        members=[{"architecture": m.name, "checkpoint": Path(str(m.checkpoint["path"])).name,
                  "threshold": m.threshold} for m in detector.members] if len(detector.members) > 1 else None,
        version=__version__, max_upload_bytes=config.max_upload_bytes, positive_class="fake",
        release=_release(detector.checkpoint.get("release")), data_kind=detector.checkpoint.get("data_kind"))


def _release(release) -> ModelRelease | None:
    """A checkpoint's ``release`` record as the API shows it (a version written as a number read as text)."""
    if not isinstance(release, dict):
        return None
    return ModelRelease(name=_text(release.get("name")), version=_text(release.get("version")),
                        provisional=bool(release.get("provisional")), note=_text(release.get("note")))


def _text(value) -> str | None:
    return None if value is None else str(value)


class _FaceDetectorSlot:
    """The face detector, built on the first request that asks for faces (a server that is never asked needs
    none, and one whose weights are missing still scores face crops). A detector that cannot be built is said
    once in the log and answered with 503 ``face_detector_unavailable`` from then on."""

    def __init__(self, weights: str | None):
        self.weights, self.detector, self.error = weights, None, None
        self.lock = threading.Lock()

    def get(self) -> FaceDetector:
        with self.lock:
            if self.detector is None and self.error is None:
                try:
                    self.detector = FaceDetector(self.weights)
                except FaceDetectorError as e:
                    self.error = str(e)
                    log.error("%s; requests with detect_faces=true are answered 503", e)
        if self.error is not None:
            raise ApiError(503, "face_detector_unavailable", "face detection is unavailable on this server (its face "
                           "detector could not be loaded; the server log says why): send detect_faces=false to "
                           "score the image as one face crop")
        return self.detector


class _BatchedDetector:
    """The served detector seen through the micro-batchers, for :func:`fakeface.faces.analyse` in a worker
    thread: each member's crops go to its batcher on the event loop, so concurrent requests share model calls."""

    def __init__(self, detector, batchers, loop: asyncio.AbstractEventLoop):
        self.detector, self.batchers, self.loop = detector, batchers, loop
        self.verdict = detector.verdict

    def predict(self, crops) -> np.ndarray:
        member_p = []
        for member, batcher in zip(self.detector.members, self.batchers):
            futures = [asyncio.run_coroutine_threadsafe(batcher.submit(member.preprocess.eval_tensor(c)), self.loop)
                       for c in crops]
            member_p.append(member.p_fake(np.array([f.result() for f in futures])))
        return member_p[0] if len(member_p) == 1 else self.detector.combine(np.array(member_p))


class _RecordingFaceDetector:
    """A face detector that keeps what it found, so a heatmap can be drawn on each face's own crop."""

    def __init__(self, face_detector: FaceDetector):
        self.face_detector, self.faces = face_detector, []

    def detect(self, img):
        self.faces = self.face_detector.detect(img)
        return self.faces


def _decode_error(e: ImageLoadError) -> ApiError:
    reason = str(e)
    if reason.startswith("not an image"):
        return ApiError(415, "not_an_image", "the upload is not an image in a format we can read")
    if reason.startswith("image too large"):
        return ApiError(413, "image_too_large", reason)
    return ApiError(400, "unreadable_image", reason)


async def predict(request: Request,
                  file: UploadFile = File(..., description="An image (JPEG, PNG, WebP, ...)"),
                  detect_faces: bool = Query(DETECT_FACES_DEFAULT, description="Find faces, align each like the "
                                             "training faces and score each (for ordinary photos; already-cropped "
                                             "faces need not). No face found: verdict no_face, nothing scored"),
                  whole_image_if_no_face: bool = Query(False, description="With detect_faces: when no face is found, "
                                                       "score the whole image as one face crop instead of no_face"),
                  explain: bool = Query(False, description="Add a Grad-CAM heatmap (PNG, base64) per face")):
    t0 = time.perf_counter()
    state = request.app.state
    config, detector = state.config, state.detector
    data = await file.read(config.max_upload_bytes + 1)
    if len(data) > config.max_upload_bytes:
        raise ApiError(413, "upload_too_large", f"upload exceeds the limit of {config.max_upload_bytes:,} bytes")
    if not data:
        raise ApiError(400, "empty_upload", "the uploaded file is empty")
    try:
        img = await run_in_threadpool(load_image, data, config.max_pixels)
    except ImageLoadError as e:
        raise _decode_error(e) from None
    explainer = state.explainer() if explain else None
    if explain and explainer is None:
        raise ApiError(422, "explain_unavailable", "heatmaps need a single PyTorch checkpoint, not an ONNX model "
                       "or an ensemble")
    if config.keep_uploads:
        keep = Path(config.keep_uploads)
        keep.mkdir(parents=True, exist_ok=True)
        (keep / f"{uuid.uuid4().hex}.bin").write_bytes(data)
    decoded = time.perf_counter()
    faces = _RecordingFaceDetector(await run_in_threadpool(state.faces.get)) if detect_faces else None
    batched = _BatchedDetector(detector, state.batchers, asyncio.get_running_loop())
    result = await run_in_threadpool(analyse, batched, img, faces, whole_image_if_no_face)
    rows = [dict(row) for row in result["faces"]]
    if explain:
        crops = [crop_face(img, f) for f in faces.faces] if faces and faces.faces else [img]
        for row, crop in zip(rows, crops):
            heat, _ = await run_in_threadpool(explain_locked, explainer, crop)
            row["heatmap_png_base64"] = base64.b64encode(png_bytes(heat)).decode("ascii")
    done = time.perf_counter()
    found = result["faces_found"]
    if not detect_faces:
        note = "off: the whole image was scored as one face crop"
    elif found:
        note = f"{found} face(s) found; the image verdict is the most suspicious face's"
    elif result["verdict"] == NO_FACE:
        note = "no face found"
    else:
        note = "no face found: the whole image was scored instead"
    return {
        "verdict": result["verdict"], "p_fake": result["p_fake"], "threshold": detector.threshold, "faces": rows,
        "faces_found": found, "face_detection": note, "image": {"width": img.width, "height": img.height},
        "timing_ms": {"decode": round((decoded - t0) * 1000, 2), "total": round((done - t0) * 1000, 2)},
        "model": detector.name,
    }


async def index() -> str:
    page = resources.files("fakeface").joinpath("static/index.html").read_text(encoding="utf-8")
    return page.replace("data-detect-faces-default", "checked" if DETECT_FACES_DEFAULT else "", 1)


def load_served_detector(config: ServeConfig):
    """The detector ``serve`` runs: chosen as ``predict --backend auto`` chooses (an export of a checkpoint made
    and kept on first use on a CPU), at the run's threshold."""
    return load_detector(config.checkpoint, config.backend, config.device, config.precision, make_export=True)


def _explainer(app: FastAPI, config: ServeConfig):
    """A function giving the PyTorch detector heatmaps are drawn with, loaded on the first request that asks:
    the served one when it is PyTorch, else its checkpoint's; None for an ensemble or an ONNX file."""
    cache: list = []

    def get():
        if not cache:
            detector = app.state.detector
            if hasattr(detector, "explain_model"):
                cache.append(detector)
            else:
                choice = detector.backend_choice
                given = [config.checkpoint] if isinstance(config.checkpoint, str) else list(config.checkpoint)
                single = len(detector.members) == 1 and len(given) == 1 and choice is not None
                source = Path(given[0]) if single else None
                cache.append(Detector(source, device="cpu", precision="fp32")
                             if source is not None and source.suffix.lower() != ".onnx" else None)
        return cache[0]

    return get


def create_app(config: ServeConfig, detector=None) -> FastAPI:
    """The API and web page; ``detector``: the one :func:`load_served_detector` already loaded for
    ``config`` (else it is loaded when the app starts)."""

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        state = app.state
        state.detector = detector if detector is not None else load_served_detector(config)
        state.faces = _FaceDetectorSlot(config.face_weights)
        # Requests run side by side in the thread pool, so when PyTorch runs only their face finding (the model is
        # an ONNX export with threads of its own) it gets one thread a request: more would only contend.
        torch_threads = torch.get_num_threads()
        if all(m.backend_choice is not None and m.backend_choice.backend.startswith("onnx")
               for m in state.detector.members):
            torch.set_num_threads(1)
        # one micro-batcher per model: an ensemble's members batch (and may preprocess) independently
        state.batchers = [MicroBatcher(m.scorer.logits, config.max_batch, config.max_wait_ms)
                          for m in state.detector.members]
        for b in state.batchers:
            b.start()
        state.batcher = state.batchers[0]  # visible to tests and metrics
        state.explainer = _explainer(app, config)
        log.info("serving %s (%s)", config.checkpoint, state.detector.name)
        yield
        for b in state.batchers:
            await b.stop()
        state.detector = None
        torch.set_num_threads(torch_threads)

    app = FastAPI(title="fakeface", version=__version__, lifespan=lifespan,
                  description="Tells real face photos from generated (GAN / deepfake) ones. "
                              "Fake is the positive class: P(fake) = probability the image is generated.")
    app.state.config, app.state.detector = config, None
    if config.cors_origins:
        from fastapi.middleware.cors import CORSMiddleware

        app.add_middleware(CORSMiddleware, allow_origins=config.cors_origins, allow_methods=["GET", "POST"],
                           allow_headers=["Authorization", "Content-Type"])
    app.add_exception_handler(ApiError, on_api_error)
    app.add_exception_handler(RequestValidationError, on_validation_error)
    app.add_exception_handler(StarletteHTTPException, on_http_error)
    app.add_exception_handler(Exception, on_internal_error)
    app.middleware("http")(check_key_and_length)
    # GET in the schema; HEAD answered too, outside it, so that each operation id is used once
    for path, handler, model in (("/healthz", healthz, None), ("/v1/model", model_info, ModelInfo)):
        app.add_api_route(path, handler, methods=["GET"], response_model=model,
                          responses={401: ERRORS[401]} if path.startswith("/v1/") else None)
        app.add_api_route(path, handler, methods=["HEAD"], include_in_schema=False)
    # the route's own body limit counts a body sent without a length; one declared too long the middleware
    # answers first (FastAPI's app-wide limit would replace the JSON error with plain text)
    app.add_api_route("/v1/predict", predict, methods=["POST"], response_model=PredictResponse, responses=ERRORS,
                      response_model_exclude_unset=True,  # heatmaps only when asked for; a null p_fake stays
                      max_body_size=config.max_upload_bytes + MULTIPART_OVERHEAD, form_limits={"max_files": 1})
    app.add_api_route("/", index, methods=["GET"], response_class=HTMLResponse, include_in_schema=False)
    return app


def is_loopback(host: str) -> bool:
    import ipaddress

    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _check_port_free(host: str, port: int) -> None:
    """ValueError when ``host:port`` cannot be bound (another server on it), as uvicorn would bind it."""
    import socket

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as e:
            if e.errno == errno.EADDRINUSE:
                raise ValueError(f"port {port} on {host} is already in use: stop what runs there or choose "
                                 "another --port") from None
            raise ValueError(f"cannot listen on {host}:{port}: {e.strerror or e}") from None


def _check_keep_uploads(folder: str) -> None:
    """ValueError unless ``folder`` exists or can be made and takes a file: found at start-up, not on each upload."""
    try:
        Path(folder).mkdir(parents=True, exist_ok=True)
        tempfile.TemporaryFile(dir=folder).close()
    except OSError as e:
        raise ValueError(f"--keep-uploads {folder}: cannot write there ({e.strerror or e})") from None


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
    if config.max_batch < 1 or config.max_wait_ms < 0:
        raise ValueError(f"a micro-batch needs at least 1 image and a wait of 0 ms or more, got {config.max_batch} "
                         f"and {config.max_wait_ms} ms")
    if config.keep_uploads:
        _check_keep_uploads(config.keep_uploads)
    for path in resolve_sources(config.checkpoint):  # hub ids and the default resolved, as load_detector does
        if isinstance(path, Path) and not path.exists():
            raise FileNotFoundError(f"checkpoint not found: {path}")
    _check_port_free(host, port)  # before loading: uvicorn would print its start-up lines, then fail
    detector = load_served_detector(config)  # a bad checkpoint is one line here, not a failed start-up
    for member in detector.members:
        choice = member.backend_choice
        if choice is not None and (choice.notable or config.backend != "auto"):
            print(f"backend: {choice.backend} ({choice.reason})", file=sys.stderr, flush=True)
    uvicorn.run(create_app(config, detector), host=host, port=port,
                log_level=os.environ.get("FAKEFACE_LOG_LEVEL", "info"))
