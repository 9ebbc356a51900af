"""Finding faces in ordinary photos and cropping them the way the training data (FFHQ) was cropped.

Detector: OpenCV's Haar frontal-face cascade ``alt2``, whose model ships inside the ``opencv-python-headless``
wheel (4.x; the 5.x wheels ship no cascades), so nothing is downloaded at run time. Chosen on evidence from
``benchmarks/face_detection.py`` (the sample's 200 test faces pasted into 640x480 scenes): alt2 found 95.5 % with
0.01 false detections per scene at 74 ms, the default cascade 94.0 % with 0.04 at 58 ms - a false face is a false
verdict, so alt2. It adds one wheel; mediapipe would pull jax and an old numpy, facenet-pytorch's MTCNN pins
torch < 2.3.

Crop: FFHQ's crops are centred a little above the middle of the face and about 1.5x as wide as the Haar box.
``CROP_SCALE`` and ``CROP_SHIFT`` were measured by running the cascade on 300 FFHQ images of the sample
(256 px crops, 281 found): 256 / mean box width = 1.53, crop centre 0.075 box widths above the box centre.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

CROP_SCALE = 1.53  # FFHQ crop side / Haar (alt2) face-box width, measured on the sample's FFHQ crops
CROP_SHIFT = 0.075  # crop centre above the box centre, in box widths, measured likewise
CASCADE = "haarcascade_frontalface_alt2.xml"


@dataclass(frozen=True)
class Face:
    box: tuple[int, int, int, int]  # (x0, y0, x1, y1) of the detector's face box, in image pixels
    crop: tuple[int, int, int, int]  # the FFHQ-like square crop around it (may extend past the image)
    angle: float = 0.0  # roll in degrees from the eyes (FFHQ crops have level eyes); 0 when eyes were not found


class FaceDetector:
    """Haar cascade face detector. ``detect(img)`` -> faces, largest first."""

    def __init__(self, min_size_fraction: float = 0.08, scale_factor: float = 1.1, min_neighbors: int = 5,
                 max_side: int = 1024):
        try:
            import cv2
        except ImportError:
            raise RuntimeError("face detection needs OpenCV: pip install 'opencv-python-headless<5'") from None
        path = cv2.data.haarcascades + CASCADE
        self.cascade = cv2.CascadeClassifier(path)
        if self.cascade.empty():
            raise RuntimeError(f"OpenCV's face cascade is missing ({path}): opencv-python-headless 5.x ships none, "
                               "install 'opencv-python-headless<5'")
        self.eyes = cv2.CascadeClassifier(cv2.data.haarcascades + "haarcascade_eye.xml")
        self.min_size_fraction, self.scale_factor, self.min_neighbors = min_size_fraction, scale_factor, min_neighbors
        self.max_side = max_side  # detect on a down-scaled copy of big photos: faster, same boxes

    def detect(self, img: Image.Image) -> list[Face]:
        scale = min(1.0, self.max_side / max(img.size))
        small = img if scale == 1.0 else img.resize([max(1, round(n * scale)) for n in img.size])
        gray = np.asarray(small.convert("L"))
        side = max(24, int(min(gray.shape) * self.min_size_fraction))
        boxes = self.cascade.detectMultiScale(gray, scaleFactor=self.scale_factor, minNeighbors=self.min_neighbors,
                                              minSize=(side, side))
        faces = []
        for x, y, w, h in sorted((tuple(int(v) for v in b) for b in boxes), key=lambda b: -b[2] * b[3]):
            angle = self.eye_angle(gray[y: y + h // 2 + h // 8, x: x + w], w)
            x, y, w, h = (round(v / scale) for v in (x, y, w, h))
            faces.append(Face((x, y, x + w, y + h), ffhq_crop_box((x, y, x + w, y + h)), angle))
        return faces

    def eye_angle(self, upper_face: np.ndarray, face_width: int) -> float:
        """Roll of the face from its two eyes (degrees, positive = the right-hand eye lower); 0 if unsure."""
        side = max(8, face_width // 8)
        eyes = self.eyes.detectMultiScale(upper_face, scaleFactor=1.1, minNeighbors=5, minSize=(side, side))
        if len(eyes) < 2:
            return 0.0
        # the two largest, one on each half of the face
        centres = sorted(((ex + ew / 2, ey + eh / 2, ew * eh) for ex, ey, ew, eh in eyes), key=lambda e: -e[2])[:2]
        (x1, y1, _), (x2, y2, _) = sorted(centres)
        if x2 - x1 < face_width * 0.25:
            return 0.0
        angle = float(np.degrees(np.arctan2(y2 - y1, x2 - x1)))
        return angle if abs(angle) <= 30 else 0.0


def ffhq_crop_box(box: tuple[int, int, int, int]) -> tuple[int, int, int, int]:
    """The square FFHQ-like crop around a Haar face box."""
    x0, y0, x1, y1 = box
    w = x1 - x0
    side = round(w * CROP_SCALE)
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2 - CROP_SHIFT * w
    left, top = round(cx - side / 2), round(cy - side / 2)
    return left, top, left + side, top + side


def box_iou(a, b) -> float:
    """Intersection over union of two (x0, y0, x1, y1) boxes."""
    ix = max(0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def crop_face(img: Image.Image, face: Face) -> Image.Image:
    """Cut the crop out, eyes levelled (rotated about the crop's centre by the face's roll); parts beyond the
    image are filled by edge reflection, as FFHQ's aligner pads."""
    x0, y0, x1, y1 = face.crop
    if face.angle:
        cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
        img = img.rotate(face.angle, resample=Image.Resampling.BILINEAR, center=(cx, cy))
    pad = max(0, -x0, -y0, x1 - img.width, y1 - img.height)
    if pad == 0:
        return img.crop(face.crop)
    arr = np.pad(np.asarray(img), ((pad, pad), (pad, pad), (0, 0)), mode="reflect")
    return Image.fromarray(arr).crop((x0 + pad, y0 + pad, x1 + pad, y1 + pad))


def analyse(detector, img: Image.Image, face_detector: FaceDetector | None) -> dict:
    """Score every face in ``img`` (or the whole image when no face is found or detection is off).

    Returns ``{"faces": [{"box", "crop", "p_fake", "verdict", "whole_image"}], "p_fake", "verdict",
    "faces_found"}``; the image-level verdict is the most suspicious face's.
    """
    faces = face_detector.detect(img) if face_detector is not None else []
    crops = [crop_face(img, f) for f in faces] or [img]
    probs = detector.predict(crops)
    if faces:
        rows = [{"box": list(f.box), "crop": list(f.crop), "p_fake": float(p), "verdict": detector.verdict(p),
                 "whole_image": False} for f, p in zip(faces, probs)]
    else:
        rows = [{"box": [0, 0, img.width, img.height], "crop": [0, 0, img.width, img.height],
                 "p_fake": float(probs[0]), "verdict": detector.verdict(probs[0]), "whole_image": True}]
    top = max(rows, key=lambda r: r["p_fake"])
    return {"faces": rows, "p_fake": top["p_fake"], "verdict": top["verdict"], "faces_found": len(faces)}
