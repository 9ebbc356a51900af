"""Faces in ordinary photos: the sample's faces pasted into larger scenes must be found and cropped like FFHQ."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import noise_image
from fakeface.faces import FaceDetector, analyse, box_iou, crop_face, ffhq_crop_box


def scene_with_face(face: Image.Image, rng: random.Random, size=(640, 480)) -> tuple[Image.Image, tuple]:
    """A smooth random background with ``face`` (an FFHQ crop) pasted at a random place and scale."""
    bg = noise_image(rng.randrange(10**6), 16).resize(size, Image.Resampling.BICUBIC)
    side = rng.randint(140, 240)
    x, y = rng.randint(0, size[0] - side), rng.randint(0, size[1] - side)
    bg.paste(face.resize((side, side)), (x, y))
    return bg, (x, y, x + side, y + side)


def test_pasted_faces_are_found_and_cropped_like_ffhq(sample_root):
    faces = sorted((sample_root / "real_vs_fake" / "real-vs-fake" / "test" / "real").glob("*.jpg"))[:30]
    rng = random.Random(0)
    detector = FaceDetector()
    found, ious = 0, []
    for path in faces:
        scene, truth = scene_with_face(Image.open(path).convert("RGB"), rng)
        detected = detector.detect(scene)
        if detected:
            found += 1
            ious.append(box_iou(detected[0].crop, truth))  # the crop should recover the pasted FFHQ crop
    assert found / len(faces) >= 0.8, f"found {found} of {len(faces)}"
    assert np.median(ious) >= 0.7, ious


def test_tilted_faces_are_levelled_by_their_eyes(sample_root):
    faces = sorted((sample_root / "real_vs_fake" / "real-vs-fake" / "test" / "real").glob("*.jpg"))[:20]
    detector = FaceDetector()
    angles = {}
    for tilt in (-12, 12):
        found = []
        for path in faces:
            img = Image.open(path).convert("RGB").rotate(tilt, resample=Image.Resampling.BILINEAR)
            scene = Image.new("RGB", (512, 512), (90, 100, 110))
            scene.paste(img, (128, 128))
            detected = detector.detect(scene)
            if detected and detected[0].angle:
                found.append(detected[0].angle)
        assert len(found) >= 5, f"eyes found in only {len(found)} faces at tilt {tilt}"
        angles[tilt] = float(np.median(found))
    # PIL rotates counter-clockwise for a positive angle, which lowers the left-hand eye: the measured roll
    # is minus the tilt, and rotating by it (crop_face) levels the eyes again
    assert abs(angles[12] + 12) < 6 and abs(angles[-12] - 12) < 6, angles


def test_no_face_scores_the_whole_image_and_says_so():
    class Half:  # a stand-in detector: P(fake) = mean brightness
        threshold = 0.5

        def predict(self, images):
            return np.array([np.asarray(i).mean() / 255 for i in images])

        def verdict(self, p):
            return "fake" if p >= 0.5 else "real"

    blank = Image.new("RGB", (300, 200), (250, 250, 250))
    result = analyse(Half(), blank, FaceDetector())
    assert result["faces_found"] == 0 and result["faces"][0]["whole_image"] is True
    assert result["faces"][0]["box"] == [0, 0, 300, 200] and result["verdict"] == "fake"


def test_crop_box_and_padding():
    x0, y0, x1, y1 = ffhq_crop_box((100, 100, 200, 200))
    assert x1 - x0 == y1 - y0 == 153 and (y0 + y1) / 2 < 150  # wider than the box, centred a little higher
    from fakeface.faces import Face

    img = noise_image(0, 120)
    crop = crop_face(img, Face((0, 0, 100, 100), ffhq_crop_box((0, 0, 100, 100))))
    assert crop.size == (153, 153)  # reaches past the corner: reflected, not an error


@pytest.mark.slow
def test_predict_detect_faces_cli(sample_root, tiny_run, tmp_path):
    import json
    import subprocess
    import sys

    face = Image.open(next((sample_root / "real_vs_fake" / "real-vs-fake" / "test" / "real").glob("*.jpg")))
    scene, truth = scene_with_face(face.convert("RGB"), random.Random(3))
    scene.save(tmp_path / "photo.jpg")
    Image.new("RGB", (200, 200), (30, 30, 30)).save(tmp_path / "wall.jpg")
    res = subprocess.run([sys.executable, "-m", "fakeface", "predict", "--checkpoint", str(tiny_run[1]),
                          "--detect-faces", "--json", str(tmp_path / "photo.jpg"), str(tmp_path / "wall.jpg")],
                         capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    rows = {Path(r["path"]).name: r for r in map(json.loads, res.stdout.splitlines())}
    photo = rows["photo.jpg"]
    assert photo["faces_found"] >= 1 and not any(f["whole_image"] for f in photo["faces"])
    assert max(box_iou(f["crop"], truth) for f in photo["faces"]) >= 0.6
    assert rows["wall.jpg"]["faces_found"] == 0 and rows["wall.jpg"]["faces"][0]["whole_image"] is True
    assert rows["photo.jpg"]["p_fake"] == max(f["p_fake"] for f in rows["photo.jpg"]["faces"])
