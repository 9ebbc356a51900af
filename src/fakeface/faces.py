"""Finding faces in ordinary photos and aligning them the way the training data (FFHQ) was aligned.

Detector: MTCNN (:mod:`fakeface.models.mtcnn`) with facenet-pytorch's published weights, shipped as
``weights/mtcnn.safetensors`` (see ``weights/mtcnn-NOTICE.txt``). It gives each face its eyes, nose and mouth
corners.

Alignment: FFHQ's own recipe (``recreate_aligned_images`` in NVlabs/ffhq-dataset, also how the StyleGAN fakes of
the 140k set are framed): the eye centres and the mouth centre define a rotated square (:func:`ffhq_quad`), which
is cut out with FFHQ's reflect-blur padding and resampled to the side the detectors were trained on (256 px for
the 140k set). MTCNN's eye and mouth-corner points sit where FFHQ's dlib points do (their means on the sample's
aligned faces nearly give back FFHQ's square), but the square built per face from them is on average 2.4 %
larger and a little higher than the data's (the recipe takes the larger of two noisy lengths): ``QUAD_SCALE`` and
``QUAD_DOWN`` undo that, measured by ``benchmarks/face_detection.py --aligned-only --split train --n 650``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import cached_property
from importlib import resources

import cv2
import numpy as np
from PIL import Image

from .models.mtcnn import MTCNN, MTCNNWeightsError

FACE_SIZE = 256  # side of the 140k set's aligned faces, the crop a detector trained on it expects
NO_FACE = "no_face"  # the verdict of an image in which no face was found
# MTCNN's FFHQ square vs the data's own, on the sample's 1,300 aligned train faces: side 1.024x, centre 0.0068 of
# the face's side higher (0.0011 to the left: left as is)
QUAD_SCALE = 1 / 1.024
QUAD_DOWN = 0.0068 / 1.024  # as a fraction of the uncorrected square's side
# An image whose own frame lies this close to the face's square (worst corner, as a fraction of the image's side)
# already is an aligned face and is scored as it is: re-sampling it costs the shipped detector ROC-AUC. MTCNN's
# square lies within it on 99.1 % of the sample's aligned train faces (benchmarks/face_detection.py --aligned-only
# --split train --n 650) and on none of the Unsplash face crops (nearest 0.082; the same script, test split).
FRAME_TOLERANCE = 0.08


class FaceDetectorError(ValueError):
    """The face detector cannot be built (its weights file is missing or broken)."""


def default_weights() -> str:
    """The MTCNN weights file shipped inside the package."""
    return os.fspath(resources.files("fakeface") / "weights" / "mtcnn.safetensors")


@dataclass(frozen=True)
class Face:
    """One face found in an image, in that image's pixel coordinates."""

    box: tuple[int, int, int, int]  # (x0, y0, x1, y1): the detector's face box
    score: float  # the detector's confidence that this is a face, 0-1
    landmarks: tuple[tuple[float, float], ...]  # (x, y) of left eye, right eye, nose, left and right mouth corner
    size: int = FACE_SIZE  # side of the aligned face crop_face cuts out

    @cached_property
    def quad(self) -> np.ndarray:
        """(4, 2) corners of FFHQ's aligned square: top-left, bottom-left, bottom-right, top-right of the face."""
        quad = ffhq_quad(np.asarray(self.landmarks))
        centre, down = quad.mean(0), quad[1] - quad[0]  # down: the face's downward side
        return centre + down * QUAD_DOWN + (quad - centre) * QUAD_SCALE

    @property
    def crop(self) -> tuple[int, int, int, int]:
        """(x0, y0, x1, y1): the axis-aligned bounds of :attr:`quad` (may extend past the image)."""
        lo, hi = np.floor(self.quad.min(0)), np.ceil(self.quad.max(0))
        return int(lo[0]), int(lo[1]), int(hi[0]), int(hi[1])

    @property
    def angle(self) -> float:
        """Roll in degrees (positive: the face's top edge turns clockwise in the image)."""
        dx, dy = self.quad[3] - self.quad[0]
        return float(np.degrees(np.arctan2(dy, dx)))

    def frame_error(self, width: int, height: int) -> float:
        """How far the image's own frame lies from :attr:`quad`: the worst corner's distance over the longer side."""
        frame = np.array([[0, 0], [0, height], [width, height], [width, 0]], dtype=np.float64)
        return float(np.abs(self.quad - frame).max() / max(width, height))

    def frames(self, width: int, height: int) -> bool:
        """Whether a ``width`` x ``height`` image already is this face's aligned square (see FRAME_TOLERANCE)."""
        return self.frame_error(width, height) <= FRAME_TOLERANCE

    def to_dict(self, image_size: tuple[int, int] | None = None) -> dict:
        """The face as JSON; with ``image_size`` (width, height), ``crop``/``quad`` say what was scored: the image's
        own frame when it already is the aligned face (``realigned`` False), else the square cut out of it."""
        crop, quad, realigned = list(self.crop), self.quad, True
        if image_size is not None and self.frames(*image_size):
            (w, h), realigned = image_size, False
            crop, quad = [0, 0, w, h], np.array([[0, 0], [0, h], [w, h], [w, 0]], dtype=np.float64)
        return {"box": list(self.box), "crop": crop, "score": round(self.score, 4),
                "landmarks": [[round(x, 1), round(y, 1)] for x, y in self.landmarks],
                "quad": [[round(float(x), 1), round(float(y), 1)] for x, y in quad], "realigned": realigned}


class FaceDetector:
    """MTCNN faces, largest first. ``detect(img)`` -> list of :class:`Face`.

    Args:
        weights: the MTCNN safetensors file (default: the one in the package).
        min_face: the smallest face box searched for, in pixels of the image after the ``max_side`` reduction
            (a smaller face has too little detail to be scored at 256 px, and searching for it doubles the cost).
        min_score: O-Net confidence a face needs (a false face is a false verdict, so above MTCNN's 0.7).
        max_side: big photos are searched on a copy this large (faster, the same faces); alignment uses the
            original pixels.
        size: side of the aligned faces.

    Raises:
        FaceDetectorError: the weights file is missing or broken.
    """

    def __init__(self, weights: str | os.PathLike | None = None, min_face: int = 40, min_score: float = 0.9,
                 max_side: int = 1024, size: int = FACE_SIZE):
        if not 0 <= min_score <= 1 or max_side < 12 or size < 16:
            raise ValueError(f"need 0 <= min_score <= 1, max_side >= 12 and size >= 16; got {min_score}, {max_side}, "
                             f"{size}")
        try:
            self.mtcnn = MTCNN(weights or default_weights(), min_face=min_face)
        except MTCNNWeightsError as e:
            raise FaceDetectorError(f"face detection is unavailable: {e}") from None
        self.min_score, self.max_side, self.size = min_score, max_side, size

    def detect(self, img: Image.Image) -> list[Face]:
        """The faces in ``img`` (any PIL mode), largest first; an empty list when there is none."""
        scale = min(1.0, self.max_side / max(img.size))
        small = img.convert("RGB")
        if scale < 1.0:
            small = small.resize([max(1, round(n * scale)) for n in img.size], Image.Resampling.BILINEAR,
                                 reducing_gap=2.0)
        boxes, scores, landmarks = self.mtcnn.detect(np.asarray(small))
        faces = []
        for box, score, points in zip(boxes / scale, scores, landmarks / scale):
            if score >= self.min_score:
                faces.append(Face(tuple(int(round(v)) for v in box), float(score),
                                  tuple((float(x), float(y)) for x, y in points), self.size))
        return sorted(faces, key=lambda f: -(f.box[2] - f.box[0]) * (f.box[3] - f.box[1]))


def ffhq_quad(landmarks: np.ndarray) -> np.ndarray:
    """FFHQ's aligned square, (4, 2) corners top-left, bottom-left, bottom-right, top-right, from the five
    landmarks (eyes, nose, mouth corners), as NVlabs/ffhq-dataset computes it from dlib's eyes and mouth."""
    lm = np.asarray(landmarks, dtype=np.float64)
    eye_left, eye_right, mouth_left, mouth_right = lm[0], lm[1], lm[3], lm[4]
    eye_avg = (eye_left + eye_right) * 0.5
    eye_to_eye = eye_right - eye_left
    eye_to_mouth = (mouth_left + mouth_right) * 0.5 - eye_avg
    x = eye_to_eye - np.flipud(eye_to_mouth) * [-1, 1]
    x /= np.hypot(*x)
    x *= max(np.hypot(*eye_to_eye) * 2.0, np.hypot(*eye_to_mouth) * 1.8)
    y = np.flipud(x) * [-1, 1]
    c = eye_avg + eye_to_mouth * 0.1
    return np.stack([c - x - y, c - x + y, c + x + y, c + x - y])


def align(img: Image.Image, quad: np.ndarray, size: int = FACE_SIZE) -> Image.Image:
    """Cut the square ``quad`` out of ``img`` as a ``size`` px image, FFHQ's way: shrink a big source first, pad
    past the image's edge by reflection blurred towards the median colour, resample at 2x or 4x and reduce."""
    img, quad = img.convert("RGB"), np.array(quad, dtype=np.float64)
    qsize = np.hypot(*(quad[3] - quad[0]))
    shrink = int(np.floor(qsize / size * 0.5))
    if shrink > 1:
        img = img.resize((int(np.rint(img.width / shrink)), int(np.rint(img.height / shrink))),
                         Image.Resampling.LANCZOS)
        quad /= shrink
        qsize /= shrink
    border = max(int(np.rint(qsize * 0.1)), 3)
    lo, hi = np.floor(quad.min(0)).astype(int), np.ceil(quad.max(0)).astype(int)
    crop = (max(lo[0] - border, 0), max(lo[1] - border, 0), min(hi[0] + border, img.width),
            min(hi[1] + border, img.height))
    if crop[2] <= crop[0] or crop[3] <= crop[1]:  # the square lies wholly outside the image
        crop = (0, 0, img.width, img.height)
    if crop[2] - crop[0] < img.width or crop[3] - crop[1] < img.height:
        img = img.crop(crop)
        quad -= crop[0:2]
    pad = (max(border - lo[0] + crop[0], 0), max(border - lo[1] + crop[1], 0),
           max(hi[0] - crop[0] - img.width + border, 0), max(hi[1] - crop[1] - img.height + border, 0))
    if max(pad) > border - 4:
        pad = np.maximum(pad, max(1, int(np.rint(qsize * 0.3))))
        arr = np.pad(np.float32(img), ((pad[1], pad[3]), (pad[0], pad[2]), (0, 0)), "reflect")
        h, w, _ = arr.shape
        yy, xx, _ = np.ogrid[:h, :w, :1]
        mask = np.maximum(1.0 - np.minimum(np.float32(xx) / pad[0], np.float32(w - 1 - xx) / pad[2]),
                          1.0 - np.minimum(np.float32(yy) / pad[1], np.float32(h - 1 - yy) / pad[3]))
        blur = qsize * 0.02
        arr += (cv2.GaussianBlur(arr, (0, 0), blur, borderType=cv2.BORDER_REFLECT) - arr) * np.clip(
            mask * 3.0 + 1.0, 0.0, 1.0)
        arr += (np.median(arr, axis=(0, 1)) - arr) * np.clip(mask, 0.0, 1.0)
        img = Image.fromarray(np.uint8(np.clip(np.rint(arr), 0, 255)), "RGB")
        quad += pad[:2]
    # FFHQ warps to 4x the output and reduces with Lanczos, so the bilinear warp never shrinks; a square at most
    # twice the output's side needs only 2x, a quarter of the pixels, for the same face within a grey level
    factor = 2 if qsize <= 2 * size else 4
    big = Image.fromarray(warp_square(np.asarray(img), quad + 0.5, factor * size), "RGB")
    return big.resize((size, size), Image.Resampling.LANCZOS)


def warp_square(rgb: np.ndarray, quad: np.ndarray, side: int) -> np.ndarray:
    """Pillow's ``Image.transform(QUAD, BILINEAR)`` of a parallelogram ``quad`` (corners top-left, bottom-left,
    bottom-right, top-right, in Pillow's coordinates where pixel i spans [i, i + 1]) as one affine warp in OpenCV,
    which is an order of magnitude faster and within one grey level of it on average (its interpolation weights
    are fixed point); outside the image is black, as in Pillow."""
    quad = np.asarray(quad, dtype=np.float64)
    across, down = (quad[3] - quad[0]) / side, (quad[1] - quad[0]) / side
    # output pixel (u, v) samples Pillow's point quad[0] + across (u + 0.5) + down (v + 0.5); OpenCV's pixel
    # centres are at whole numbers, half a pixel from Pillow's
    origin = quad[0] + (across + down) * 0.5 - 0.5
    matrix = np.array([[across[0], down[0], origin[0]], [across[1], down[1], origin[1]]])
    return cv2.warpAffine(np.ascontiguousarray(rgb), matrix, (side, side),
                          flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP, borderMode=cv2.BORDER_CONSTANT)


def crop_face(img: Image.Image, face: Face) -> Image.Image:
    """The face aligned like FFHQ, ``face.size`` px square: ``img`` itself (resized if need be) when it already is
    the aligned face (:meth:`Face.frames`), else cut out by :func:`align`."""
    if face.frames(*img.size):
        img = img.convert("RGB")
        return img if img.size == (face.size, face.size) else img.resize((face.size,) * 2, Image.Resampling.LANCZOS)
    return align(img, face.quad, face.size)


def analyse(detector, img: Image.Image, face_detector: FaceDetector | None, whole_image_if_none: bool = False
            ) -> dict:
    """Score every face in ``img``; with ``face_detector=None`` score the whole image as one face crop.

    Returns ``{"faces": [...], "p_fake", "verdict", "faces_found"}``; each face row has ``box``, ``crop``,
    ``quad``, ``landmarks``, ``score``, ``realigned`` (see :meth:`Face.to_dict`), ``p_fake``, ``verdict`` and
    ``whole_image`` (``False``), and the image-level answer is the most suspicious face's. No face found:
    ``faces`` is empty, ``p_fake`` is ``None`` and ``verdict`` is :data:`NO_FACE` - unless
    ``whole_image_if_none``, when the whole image is scored instead. A whole-image row has ``box`` and ``crop``
    = the image and ``whole_image`` ``True``.
    """
    faces = face_detector.detect(img) if face_detector is not None else []
    if face_detector is not None and not faces and not whole_image_if_none:
        return {"faces": [], "p_fake": None, "verdict": NO_FACE, "faces_found": 0}
    crops = [crop_face(img, f) for f in faces] or [img]
    probs = detector.predict(crops)
    if faces:
        rows = [{**f.to_dict(img.size), "p_fake": float(p), "verdict": detector.verdict(p), "whole_image": False}
                for f, p in zip(faces, probs)]
    else:
        whole = [0, 0, img.width, img.height]
        rows = [{"box": whole, "crop": whole, "p_fake": float(probs[0]), "verdict": detector.verdict(probs[0]),
                 "whole_image": True, "realigned": False}]
    top = max(rows, key=lambda r: r["p_fake"])
    return {"faces": rows, "p_fake": top["p_fake"], "verdict": top["verdict"], "faces_found": len(faces)}
