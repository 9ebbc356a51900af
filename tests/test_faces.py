"""Faces in ordinary photos: MTCNN finds the sample's faces pasted into scenes and aligns them like FFHQ."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors import safe_open
from safetensors.torch import save_file

from conftest import REPO
from fakeface.faces import (
    NO_FACE,
    FaceDetector,
    FaceDetectorError,
    align,
    analyse,
    crop_face,
    default_weights,
    warp_square,
)
from fakeface.models.mtcnn import NETS, ONet, PNet, RNet


def benchmark():
    """benchmarks/face_detection.py, whose scenes (a face pasted at a known place, scale and roll) tests reuse."""
    spec = importlib.util.spec_from_file_location("face_detection", REPO / "benchmarks" / "face_detection.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_shipped_weights_fit_our_nets_exactly():
    with safe_open(default_weights(), framework="pt") as f:
        shipped = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
        meta = f.metadata()
    ours = {f"{name}.{k}": tuple(v.shape) for name, net in zip(NETS, (PNet(), RNet(), ONet()))
            for k, v in net.state_dict().items()}
    assert shipped == ours
    assert "facenet-pytorch" in meta["source"] and "MIT" in meta["license"]


@pytest.fixture(scope="module")
def finder() -> FaceDetector:
    return FaceDetector()


def test_pasted_faces_are_found_with_their_eyes_where_they_were(sample_root, finder):
    bench = benchmark()
    test = sample_root / "real_vs_fake" / "real-vs-fake" / "test"
    paths = sorted((test / "real").glob("*.jpg"))[:8] + sorted((test / "fake").glob("*.jpg"))[:8]
    pool = sorted((sample_root / "real_vs_fake" / "real-vs-fake" / "train").glob("*/*.jpg"))[:40]
    found, errors = 0, []
    for i, path in enumerate(paths):
        face = Image.open(path).convert("RGB")
        eyes = np.asarray(finder.detect(face)[0].landmarks[:2])  # in the aligned face as it is
        scene, affine = bench.make_scene(face, i, pool)  # at a random place, side and roll (up to 30 degrees)
        hit = bench.match(finder.detect(scene), bench.apply(affine, bench.SQUARE))
        if hit is None:
            continue
        found += 1
        # the eyes, pasted into the scene, then cut out again with the square built from the detected face
        again = bench.quad_to_face(hit.quad, bench.apply(affine, eyes))
        errors.extend(np.hypot(*(again - eyes).T))
        assert crop_face(scene, hit).size == (256, 256)
    assert found >= len(paths) - 1, f"found {found} of {len(paths)}"
    assert np.median(errors) < 5 and max(errors) < 16, np.round(errors, 1)  # pixels of the 256 px face


def test_a_face_is_levelled_by_its_eyes(sample_root, finder):
    face = Image.open(next((sample_root / "real_vs_fake" / "real-vs-fake" / "test" / "real").glob("*.jpg")))
    scene = Image.new("RGB", (640, 640), (90, 100, 110))
    scene.paste(face.convert("RGB").rotate(20, resample=Image.Resampling.BILINEAR, expand=True), (150, 150))
    (hit,) = finder.detect(scene)
    assert abs(hit.angle + 20) < 5, hit.angle  # PIL turns counter-clockwise; the square turns with the face
    level = finder.detect(crop_face(scene, hit))
    assert level and abs(level[0].angle) < 5


@pytest.mark.parametrize("quad", [[[20, 10], [5, 150], [145, 165], [160, 25]],  # turned, inside the image
                                  [[-30, -20], [-30, 120], [110, 120], [110, -20]]])  # reaching past two edges
def test_the_square_is_cut_as_pillows_quad_transform_cuts_it(sample_root, quad):
    """warp_square is Pillow's QUAD transform (FFHQ's own code) made fast: the same pixels within the rounding of
    fixed-point interpolation weights, black outside the image as in Pillow."""
    face = Image.open(next((sample_root / "real_vs_fake" / "real-vs-fake" / "test" / "fake").glob("*.jpg")))
    img = face.convert("RGB").crop((40, 40, 216, 216))
    quad = np.asarray(quad, dtype=np.float64)
    ref = np.asarray(img.transform((400, 400), Image.Transform.QUAD, quad.flatten(), Image.Resampling.BILINEAR),
                     dtype=np.int16)
    ours = warp_square(np.asarray(img), quad, 400).astype(np.int16)
    assert ours.shape == ref.shape
    inside = (ref > 0).all(axis=2) & (ours > 0).all(axis=2)
    diff = np.abs(ours - ref)[inside]
    assert diff.mean() < 1 and np.percentile(diff, 99) <= 2, (diff.mean(), np.percentile(diff, 99))
    # what lies outside the image is black in both: they agree on where the image ends, to a pixel
    assert np.mean((ref == 0).all(axis=2) != (ours == 0).all(axis=2)) < 0.01


def test_realigning_an_aligned_ffhq_face_gives_it_back(sample_root, finder):
    square = np.array([[0, 0], [0, 256], [256, 256], [256, 0]])
    test = sample_root / "real_vs_fake" / "real-vs-fake" / "test"
    corner_errors, diffs, shifted_diffs = [], [], []
    for path in sorted((test / "real").glob("*.jpg"))[:6] + sorted((test / "fake").glob("*.jpg"))[:6]:
        img = Image.open(path).convert("RGB")
        face = finder.detect(img)[0]
        corner_errors.append(np.abs(face.quad - square).max())
        again = np.asarray(align(img, face.quad), dtype=np.float32)[32:-32, 32:-32]
        orig = np.asarray(img, dtype=np.float32)
        diffs.append(np.abs(again - orig[32:-32, 32:-32]).mean())
        shifted_diffs.append(np.abs(orig[40:-24, 32:-32] - orig[32:-32, 32:-32]).mean())  # 8 px (3 %) lower
    assert np.median(corner_errors) < 8 and max(corner_errors) < 20, np.round(corner_errors, 1)
    # nearer the original than the original is to itself moved down by 8 px
    assert np.median(diffs) < np.median(shifted_diffs), (diffs, shifted_diffs)


def test_an_image_that_already_is_the_aligned_face_is_scored_as_it_is(sample_root, tiny_run, finder):
    """Re-sampling an aligned face only blurs it, so within the landmarks' noise of its frame it is kept; turned or
    cut tighter, it is cut out again."""
    from fakeface.detector import Detector

    detector = Detector(tiny_run[1], device="cpu")
    path = next((sample_root / "real_vs_fake" / "real-vs-fake" / "test" / "fake").glob("*.jpg"))
    img = Image.open(path).convert("RGB")
    face = finder.detect(img)[0]
    assert face.frames(*img.size) and np.array_equal(np.asarray(crop_face(img, face)), np.asarray(img))
    (row,) = analyse(detector, img, finder)["faces"]
    assert row["realigned"] is False and row["crop"] == [0, 0, 256, 256]
    assert row["quad"] == [[0, 0], [0, 256], [256, 256], [256, 0]]
    assert row["p_fake"] == pytest.approx(float(detector.predict([img])[0]), abs=1e-6)
    big = img.resize((512, 512), Image.Resampling.BICUBIC)  # the same face at twice the side: kept, resized back
    big_face = finder.detect(big)[0]
    assert big_face.frames(*big.size) and crop_face(big, big_face).size == (256, 256)
    for changed in (img.rotate(12, Image.Resampling.BILINEAR), img.crop((24, 24, 232, 232))):
        moved = finder.detect(changed)[0]
        assert not moved.frames(*changed.size), moved.frame_error(*changed.size)
        (row,) = analyse(detector, changed, finder)["faces"]
        assert row["realigned"] is True and row["crop"] == list(moved.crop)
        assert np.array_equal(np.asarray(crop_face(changed, moved)), np.asarray(align(changed, moved.quad)))


def test_a_tight_face_crop_is_framed_like_ffhq_with_the_missing_margin_filled(sample_root, finder):
    square = np.array([[0, 0], [0, 256], [256, 256], [256, 0]])
    test = sample_root / "real_vs_fake" / "real-vs-fake" / "test"
    found, corner_errors = 0, []
    for path in sorted((test / "real").glob("*.jpg"))[:4] + sorted((test / "fake").glob("*.jpg"))[:4]:
        orig = Image.open(path).convert("RGB")
        tight = orig.crop((48, 40, 208, 216))  # like a photo cropped to the face: FFHQ's square reaches past it
        faces = finder.detect(tight)
        if not faces:
            continue
        found += 1
        corner_errors.append(np.abs(faces[0].quad + [48, 40] - square).max())
        again = np.asarray(crop_face(tight, faces[0]), dtype=np.float32)
        o = np.asarray(orig, dtype=np.float32)
        assert again.shape == (256, 256, 3)
        centre = np.abs(again[64:192, 64:192] - o[64:192, 64:192]).mean()
        assert centre < np.abs(o[72:200, 64:192] - o[64:192, 64:192]).mean()  # nearer than the original 8 px lower
    assert found >= 6 and np.median(corner_errors) < 10, (found, np.round(corner_errors, 1))


def test_an_image_without_a_face_says_no_face(tiny_run, finder):
    from fakeface.detector import Detector

    detector = Detector(tiny_run[1], device="cpu")
    for blank in (Image.new("RGB", (300, 200), (250, 250, 250)), Image.new("L", (5, 3000), 40)):
        result = analyse(detector, blank, finder)
        assert result == {"faces": [], "p_fake": None, "verdict": NO_FACE, "faces_found": 0}
    blank = Image.new("RGB", (300, 200), (250, 250, 250))
    p = float(detector.predict([blank])[0])
    for whole in (analyse(detector, blank, finder, whole_image_if_none=True), analyse(detector, blank, None)):
        assert whole["faces_found"] == 0 and whole["verdict"] == detector.verdict(p)
        assert whole["faces"] == [{"box": [0, 0, 300, 200], "crop": [0, 0, 300, 200], "p_fake": pytest.approx(p),
                                   "verdict": detector.verdict(p), "whole_image": True, "realigned": False}]


def test_faces_are_scored_aligned_and_described(sample_root, tiny_run, finder):
    from fakeface.detector import Detector

    detector = Detector(tiny_run[1], device="cpu")
    face = Image.open(next((sample_root / "real_vs_fake" / "real-vs-fake" / "test" / "fake").glob("*.jpg")))
    scene = Image.new("RGB", (700, 500), (200, 190, 180))
    scene.paste(face.convert("RGB").resize((180, 180)), (400, 120))
    result = analyse(detector, scene, finder)
    (row,) = result["faces"]
    assert result["faces_found"] == 1 and row["whole_image"] is False
    hit = finder.detect(scene)[0]
    assert row["p_fake"] == pytest.approx(float(detector.predict([crop_face(scene, hit)])[0]), abs=1e-6)
    assert result["p_fake"] == row["p_fake"] and result["verdict"] == detector.verdict(row["p_fake"])
    x0, y0, x1, y1 = row["crop"]
    assert abs(x0 - 400) < 15 and abs(y0 - 120) < 15 and abs(x1 - 580) < 15 and abs(y1 - 300) < 15
    assert len(row["landmarks"]) == 5 and len(row["quad"]) == 4 and 0.9 <= row["score"] <= 1


def test_a_detector_that_cannot_be_built_is_one_clear_error(tmp_path):
    broken = tmp_path / "broken.safetensors"
    broken.write_bytes(b"\x00not a safetensors file" * 10)
    partial = tmp_path / "pnet_only.safetensors"
    save_file({f"pnet.{k}": v for k, v in PNet().state_dict().items()}, partial)
    wrong = tmp_path / "wrong_shape.safetensors"
    with safe_open(default_weights(), framework="pt") as f:
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    tensors["onet.dense6_3.weight"] = torch.zeros(8, 256)
    save_file(tensors, wrong)
    for path, says in ((tmp_path / "missing.safetensors", "missing"), (broken, "cannot be read"),
                       (partial, "does not fit rnet"), (wrong, "wrong shape ['dense6_3.weight']")):
        with pytest.raises(FaceDetectorError) as e:
            FaceDetector(weights=path)
        assert isinstance(e.value, ValueError) and says in str(e.value) and str(path) in str(e.value)
        assert "\n" not in str(e.value) and e.value.__cause__ is None


def test_predict_faces_gives_a_row_per_image_and_says_no_face(sample_root, tiny_run, tmp_path, monkeypatch):
    import io
    import json

    from fakeface.detector import Detector
    from fakeface.predict import PredictionWriter, predict_faces

    detector = Detector(tiny_run[1], device="cpu")
    face = Image.open(next((sample_root / "real_vs_fake" / "real-vs-fake" / "test" / "real").glob("*.jpg")))
    scene = Image.new("RGB", (640, 480), (200, 190, 180))
    scene.paste(face.convert("RGB").resize((200, 200)), (300, 140))
    scene.save(tmp_path / "scene.png")
    Image.new("RGB", (300, 200), (250, 250, 250)).save(tmp_path / "blank.png")
    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not a jpeg" * 10)
    monkeypatch.chdir(tmp_path)  # short paths: one table line per row
    paths = ["scene.png", "blank.png", "broken.jpg"]

    scene_row, blank_row, broken_row = predict_faces(detector, paths)
    assert scene_row["faces_found"] == 1 and scene_row["error"] is None
    (f,) = scene_row["faces"]
    assert set(f) >= {"box", "crop", "quad", "landmarks", "score"} and f["whole_image"] is False
    assert scene_row["p_fake"] == f["p_fake"] and scene_row["pred"] == detector.verdict(f["p_fake"])
    assert blank_row == {"path": paths[1], "label": None, "p_fake": None, "pred": NO_FACE, "error": None,
                         "faces": [], "faces_found": 0}
    assert broken_row["error"] and broken_row["p_fake"] is None and broken_row["pred"] is None

    whole = list(predict_faces(detector, paths[1:2], whole_image_if_none=True))[0]
    p = float(detector.predict([Image.open(paths[1]).convert("RGB")])[0])
    assert whole["p_fake"] == pytest.approx(p) and whole["pred"] == detector.verdict(p)
    assert whole["faces_found"] == 0 and whole["faces"][0]["whole_image"] is True

    # every way of writing the rows says "no face" and prints no probability for it
    rows = [scene_row, blank_row, broken_row]
    for json_lines, table_limit in ((True, 1000), (False, 1000), (False, 0)):
        out = io.StringIO()
        with PredictionWriter(json_lines, tmp_path / "rows.csv", faces=True, n_rows=3, table_limit=table_limit,
                              out=out) as writer:
            for row in rows:
                writer.write(row)
        assert (writer.scored, writer.no_face, writer.failed) == (1, 1, 1)
        text = out.getvalue()
        if json_lines:
            blank = json.loads(text.splitlines()[1])
            assert blank["pred"] == NO_FACE and blank["p_fake"] is None and blank["faces"] == []
        else:
            (line,) = [ln for ln in text.splitlines() if "blank.png" in ln]
            assert "no face" in line and "None" not in line and "0." not in line
    assert (tmp_path / "rows.csv").read_text().splitlines()[2] == f"blank.png,,{NO_FACE},,0,[]"


def test_predict_faces_without_its_weights_is_one_clear_error_before_any_image(tiny_run, tmp_path):
    from fakeface.detector import Detector
    from fakeface.predict import predict_faces

    missing = tmp_path / "missing.safetensors"
    with pytest.raises(FaceDetectorError, match="missing"):
        predict_faces(Detector(tiny_run[1], device="cpu"), [str(tmp_path / "never-read.jpg")], face_weights=missing)
