"""How well faces in ordinary photos are found and aligned, and what that does to a detector's verdicts.

    python benchmarks/face_detection.py [--checkpoint runs/x/best.pt] [--n 100] [--out DIR]

Four measurements, each printed (and written to DIR/face_detection.{json,md} with --out):

1. The sample's aligned test faces as they are: how often MTCNN finds them, and how far the FFHQ square
   built from its landmarks lies from the image's own frame (the data's alignment) - raw (the FFHQ recipe on
   MTCNN's points) and as ``fakeface.faces`` uses it (with its scale/shift correction); how many lie within
   ``FRAME_TOLERANCE`` of their frame (so detect-and-align scores them as they are), and with ``--checkpoint``
   the ROC-AUC that gives beside cutting every one out again.
2. The same faces pasted into made-up scenes (seeded: a random scene size, a background that is a blurred
   mosaic of other images or smooth noise, the face at a random scale, place and roll, JPEG-encoded): how
   many are found, false faces per scene, and the alignment error - where the eyes of the original aligned
   face land in the re-aligned face, in pixels of the 256 px face (MTCNN's eyes on the original are the
   reference points; the error is the re-alignment's, not MTCNN's).
3. With ``--checkpoint`` (anything ``fakeface.detector.load_detector`` takes): the detector's ROC-AUC on the
   aligned faces scored directly vs found, aligned and scored from their scenes, on the faces found.
4. The Unsplash real photos (tight, unaligned face crops): how often a face is found, how near a face's square
   comes to the photo's frame, and with a checkpoint the share called fake when each photo is scored whole vs
   through detect-and-align.
"""

from __future__ import annotations

import argparse
import io
import json
import statistics
import sys
import time
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from fakeface.faces import FACE_SIZE, FRAME_TOLERANCE, FaceDetector, align, crop_face, ffhq_quad

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
SQUARE = np.array([[0, 0], [0, FACE_SIZE], [FACE_SIZE, FACE_SIZE], [FACE_SIZE, 0]], dtype=np.float64)


def background(rng: np.random.Generator, size: tuple[int, int], pool: list[Path]) -> Image.Image:
    """A scene's background: a blurred mosaic of the outer margins of other photos (hair, clothes, walls: the
    pool holds only face photos, whose centres would plant faces), or smooth noise."""
    w, h = size
    if pool and rng.random() < 0.5:
        tiles = []
        for _ in range(16):
            src = np.asarray(Image.open(pool[rng.integers(len(pool))]).convert("RGB").resize((256, 256)))
            t = int(rng.integers(0, 256 - 48))
            edge = [src[:48, t:t + 48], src[-48:, t:t + 48], src[t:t + 48, :48], src[t:t + 48, -48:]]
            tiles.append(edge[rng.integers(4)])
        mosaic = np.concatenate([np.concatenate(tiles[r * 4:(r + 1) * 4], 1) for r in range(4)], 0)
        img = cv2.resize(mosaic, size, interpolation=cv2.INTER_CUBIC)
        return Image.fromarray(cv2.GaussianBlur(img, (0, 0), rng.uniform(1, 6)))
    coarse = rng.integers(0, 256, (rng.integers(3, 12), rng.integers(3, 12), 3)).astype(np.uint8)
    img = cv2.resize(coarse, size, interpolation=cv2.INTER_CUBIC).astype(np.int16)
    img += rng.integers(-12, 13, img.shape, dtype=np.int16)  # sensor-like grain
    return Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))


def paste(face: Image.Image, scene: Image.Image, rng: np.random.Generator, min_side: int = 128,
          max_roll: float = 30.0) -> tuple[Image.Image, np.ndarray]:
    """``face`` (an aligned FFHQ_SIZE square) pasted into ``scene`` at a random side, roll and place.

    Returns the new scene and the 2x3 affine map from the face's pixels to the scene's.
    """
    w, h = scene.size
    roll = np.radians(rng.uniform(-max_roll, max_roll))
    reach = abs(np.cos(roll)) + abs(np.sin(roll))  # the rotated square's extent per unit side
    side = float(np.exp(rng.uniform(np.log(min_side), np.log(max(min_side, 0.8 * min(w, h) / reach)))))
    half = side * reach / 2
    centre = np.array([rng.uniform(half, w - half), rng.uniform(half, h - half)])
    k = side / face.width
    rot = np.array([[np.cos(roll), -np.sin(roll)], [np.sin(roll), np.cos(roll)]])
    affine = np.hstack([k * rot, (centre - k * rot @ np.array(face.size) / 2)[:, None]])
    # shrink with a proper filter first, then rotate and place (warpAffine only interpolates)
    small = face.resize((max(1, round(side)),) * 2, Image.Resampling.LANCZOS)
    m = affine.copy()
    m[:, :2] = rot * (side / small.width)
    m[:, 2] = centre - m[:, :2] @ np.array(small.size) / 2
    warped = cv2.warpAffine(np.asarray(small), m, scene.size, flags=cv2.INTER_LINEAR)
    alpha = cv2.warpAffine(np.full(small.size[::-1], 255, np.uint8), m, scene.size, flags=cv2.INTER_LINEAR)
    a = alpha[..., None].astype(np.float32) / 255
    out = np.asarray(scene, dtype=np.float32) * (1 - a) + warped.astype(np.float32) * a
    return Image.fromarray(np.rint(out).astype(np.uint8)), affine


def apply(affine: np.ndarray, points: np.ndarray) -> np.ndarray:
    return np.asarray(points, dtype=np.float64) @ affine[:, :2].T + affine[:, 2]


def quad_to_face(quad: np.ndarray, points: np.ndarray, size: int = FACE_SIZE) -> np.ndarray:
    """Where image ``points`` land in the ``size`` px face cut from ``quad`` (corners TL, BL, BR, TR)."""
    origin, ex, ey = quad[0], (quad[3] - quad[0]) / size, (quad[1] - quad[0]) / size
    return (np.asarray(points, dtype=np.float64) - origin) @ np.linalg.inv(np.stack([ex, ey], 1)).T


def jpeg(img: Image.Image, quality: int) -> Image.Image:
    if not quality:
        return img
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=quality)
    return Image.open(io.BytesIO(buf.getvalue())).convert("RGB")


def make_scene(face: Image.Image, seed: int, pool: list[Path], jpeg_quality: int = 90):
    """One seeded scene holding ``face``: (scene, face-to-scene affine)."""
    rng = np.random.default_rng(seed)
    w = int(rng.integers(512, 1025))
    h = int(w * rng.choice([0.75, 2 / 3, 1.0, 4 / 3]))
    scene, affine = paste(face, background(rng, (w, h), pool), rng)
    return jpeg(scene, jpeg_quality), affine


def match(faces, truth_quad: np.ndarray):
    """The detected face that is the pasted one (centre within 20 % of its side, side within 0.7-1.4x), or None."""
    centre, side = truth_quad.mean(0), np.hypot(*(truth_quad[3] - truth_quad[0]))
    best = None
    for f in faces:
        dist = np.hypot(*(f.quad.mean(0) - centre))
        ratio = np.hypot(*(f.quad[3] - f.quad[0])) / side
        if dist < 0.2 * side and 0.7 < ratio < 1.4 and (best is None or dist < best[0]):
            best = (dist, f)
    return None if best is None else best[1]


def quad_offsets(quads: list[np.ndarray]) -> tuple[float, list[float], float]:
    """Mean side / FACE_SIZE, mean centre shift (x, y as fractions of FACE_SIZE) and the median worst-corner
    error in pixels, of squares that should be the face image's own frame."""
    sides = [np.hypot(*(q[3] - q[0])) for q in quads]
    shift = np.mean([q.mean(0) - FACE_SIZE / 2 for q in quads], axis=0) / FACE_SIZE
    corner = [np.abs(q - SQUARE).max() for q in quads]
    return float(np.mean(sides) / FACE_SIZE), [float(shift[0]), float(shift[1])], float(np.median(corner))


def auc(labels, scores) -> float | None:
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(labels, scores)) if len(set(labels)) == 2 else None


def percentile(values, q) -> float | None:
    return float(np.percentile(values, q)) if len(values) else None


def run(args) -> dict:
    test = Path(args.data) / "real_vs_fake" / "real-vs-fake" / args.split
    paths = sorted((test / "real").glob("*.jpg"))[: args.n] + sorted((test / "fake").glob("*.jpg"))[: args.n]
    if not paths:
        sys.exit(f"no images under {test}/real or {test}/fake")
    labels = [int(p.parent.name == "fake") for p in paths]
    train = Path(args.data) / "real_vs_fake" / "real-vs-fake" / "train"
    pool = sorted(train.glob("*/*.jpg"))[:200] + sorted(Path(args.unsplash).glob("*.jpg"))[:200]
    finder = FaceDetector()
    model = None
    if args.checkpoint:
        from fakeface.detector import load_detector

        model = load_detector(args.checkpoint, device=args.device)
    faces = [Image.open(p).convert("RGB") for p in paths]
    result: dict = {"split": args.split, "faces": len(paths), "seed": args.seed, "jpeg_quality": args.jpeg_quality,
                    "checkpoint": args.checkpoint}

    # 1. the aligned faces themselves
    own = [finder.detect(f) for f in faces]
    eyes = [d[0].landmarks[:2] if d else None for d in own]  # reference eye points in each aligned face
    found = [d[0] for d in own if d]
    raw_side, raw_shift, _ = quad_offsets([ffhq_quad(np.asarray(f.landmarks)) for f in found])
    used_side, used_shift, used_corner = quad_offsets([f.quad for f in found])
    frame_errors = [f.frame_error(FACE_SIZE, FACE_SIZE) for f in found]
    result["aligned"] = {"found": len(found) / len(paths), "raw_side": raw_side, "raw_shift": raw_shift,
                         "used_side": used_side, "used_shift": used_shift, "used_corner": used_corner,
                         "as_is": float(np.mean([e <= FRAME_TOLERANCE for e in frame_errors])),
                         "frame_err_p99": percentile(frame_errors, 99)}

    if args.aligned_only:
        return result
    direct = None
    if model is not None:
        direct = np.concatenate([model.predict(faces[i:i + 64]) for i in range(0, len(faces), 64)])
        # what the detect-and-align path gives an upload that is itself an aligned face, and what cutting every
        # such face out again would give instead (the cost of re-sampling it)
        kept = [i for i, d in enumerate(own) if d]
        as_is = [float(model.predict([crop_face(faces[i], own[i][0])])[0]) for i in kept]
        realigned = [float(model.predict([align(faces[i], own[i][0].quad)])[0]) for i in kept]
        result["aligned"].update(roc_auc_through_detect=auc([labels[i] for i in kept], as_is),
                                 roc_auc_all_realigned=auc([labels[i] for i in kept], realigned))

    # 2. the same faces in scenes
    errs, hits, false, sides, times, scene_p, direct_p, hit_labels = [], [], 0, [], [], [], [], []
    for i, (face, eye) in enumerate(zip(faces, eyes)):
        scene, affine = make_scene(face, args.seed * 100_003 + i, pool, args.jpeg_quality)
        truth = apply(affine, SQUARE)
        t0 = time.perf_counter()
        detected = finder.detect(scene)
        hit = match(detected, truth)
        crop = crop_face(scene, hit) if hit is not None else None
        times.append(time.perf_counter() - t0)
        false += len(detected) - (hit is not None)
        sides.append(float(np.hypot(*(truth[3] - truth[0]))))
        hits.append(hit is not None)
        if hit is None:
            continue
        if eye is not None:  # the original's eyes, pasted, then cut out again with the detected square
            again = quad_to_face(hit.quad, apply(affine, np.asarray(eye)))
            errs.extend(np.hypot(*(again - np.asarray(eye)).T).tolist())
        if model is not None:
            scene_p.append(float(model.predict([crop])[0]))
            direct_p.append(float(direct[i]))
            hit_labels.append(labels[i])
    small = [h for h, s in zip(hits, sides) if s < 192]
    result["scenes"] = {
        "found": float(np.mean(hits)), "found_face_side_lt_192px": float(np.mean(small)) if small else None,
        "false_faces_per_scene": false / len(paths),
        "eye_err_px_median": percentile(errs, 50), "eye_err_px_p90": percentile(errs, 90),
        "ms_per_scene_median": 1000 * statistics.median(times)}

    # 3. verdicts
    if model is not None:
        a_direct, a_scene = auc(hit_labels, direct_p), auc(hit_labels, scene_p)
        result["verdicts"] = {
            "roc_auc_direct_all": auc(labels, direct.tolist()), "roc_auc_direct_found": a_direct,
            "roc_auc_through_scenes_found": a_scene,
            "roc_auc_change": None if a_direct is None or a_scene is None else a_scene - a_direct,
            "verdicts_changed": float(np.mean([model.verdict(a) != model.verdict(b)
                                               for a, b in zip(direct_p, scene_p)])) if scene_p else None}

    # 4. Unsplash
    photos = sorted(Path(args.unsplash).glob("*.jpg"))[: args.unsplash_n]
    if photos:
        found_u, whole_fake, face_fake, frame_errors = 0, [], [], []
        for p in photos:
            img = Image.open(p).convert("RGB")
            detected = finder.detect(img)
            found_u += bool(detected)
            frame_errors.extend(f.frame_error(*img.size) for f in detected)
            if model is not None:
                whole_fake.append(model.verdict(float(model.predict([img])[0])) == "fake")
                if detected:
                    probs = model.predict([crop_face(img, f) for f in detected])
                    face_fake.append(model.verdict(float(max(probs))) == "fake")
        result["unsplash"] = {"photos": len(photos), "found": found_u / len(photos),
                              "as_is": float(np.mean([e <= FRAME_TOLERANCE for e in frame_errors])),
                              "frame_err_min": min(frame_errors, default=None)}
        if model is not None:
            result["unsplash"].update(fake_share_whole=float(np.mean(whole_fake)),
                                      fake_share_faces_found=float(np.mean(face_fake)) if face_fake else None)
    return result


ROWS = [  # (section, key, label, format)
    ("aligned", "found", "aligned faces: found", "{:.1%}"),
    ("aligned", "raw_side", "aligned faces: raw FFHQ square on MTCNN's points, side / 256", "{:.3f}"),
    ("aligned", "raw_shift", "aligned faces: raw square's centre shift x, y (of its side)", "{:+.4f}, {:+.4f}"),
    ("aligned", "used_side", "aligned faces: the square used, side / 256", "{:.3f}"),
    ("aligned", "used_shift", "aligned faces: the square used, centre shift x, y", "{:+.4f}, {:+.4f}"),
    ("aligned", "used_corner", "aligned faces: the square used, median worst-corner error (px of 256)", "{:.1f}"),
    ("aligned", "frame_err_p99", "aligned faces: the square's worst corner off the image's frame, 99th percentile "
     "(of the side)", "{:.3f}"),
    ("aligned", "as_is", "aligned faces: framed within FRAME_TOLERANCE, so scored as they are", "{:.1%}"),
    ("aligned", "roc_auc_through_detect", "ROC-AUC, aligned faces through detect-and-align", "{:.4f}"),
    ("aligned", "roc_auc_all_realigned", "ROC-AUC, aligned faces all cut out again (re-sampled)", "{:.4f}"),
    ("scenes", "found", "scenes: pasted face found", "{:.1%}"),
    ("scenes", "found_face_side_lt_192px", "scenes: found, pasted side < 192 px", "{:.1%}"),
    ("scenes", "false_faces_per_scene", "scenes: false faces per scene", "{:.3f}"),
    ("scenes", "eye_err_px_median", "scenes: eye error in the re-aligned face, median (px of 256)", "{:.1f}"),
    ("scenes", "eye_err_px_p90", "scenes: eye error, 90th percentile (px of 256)", "{:.1f}"),
    ("scenes", "ms_per_scene_median", "scenes: ms per scene (detect + align), median", "{:.0f}"),
    ("verdicts", "roc_auc_direct_all", "ROC-AUC, aligned faces scored directly (all)", "{:.4f}"),
    ("verdicts", "roc_auc_direct_found", "ROC-AUC, scored directly (the faces found in scenes)", "{:.4f}"),
    ("verdicts", "roc_auc_through_scenes_found", "ROC-AUC, through detect-and-align in scenes", "{:.4f}"),
    ("verdicts", "roc_auc_change", "ROC-AUC change", "{:+.4f}"),
    ("verdicts", "verdicts_changed", "verdicts changed", "{:.1%}"),
    ("unsplash", "found", "Unsplash photos: a face found", "{:.1%}"),
    ("unsplash", "as_is", "Unsplash faces framed within FRAME_TOLERANCE (scored as they are)", "{:.1%}"),
    ("unsplash", "frame_err_min", "Unsplash faces: nearest square to the photo's frame (of the side)", "{:.3f}"),
    ("unsplash", "fake_share_whole", "Unsplash: called fake, scored whole", "{:.1%}"),
    ("unsplash", "fake_share_faces_found", "Unsplash: called fake, through detect-and-align", "{:.1%}"),
]


def markdown(r: dict) -> str:
    lines = [f"# Face detection ({r['faces']} {r['split']} faces, seed {r['seed']}, JPEG {r['jpeg_quality']})", "",
             "| measurement | value |", "|---|---|"]
    for section, key, label, fmt in ROWS:
        if key in r.get(section, {}):
            value = r[section][key]
            text = "-" if value is None else fmt.format(*value) if isinstance(value, list) else fmt.format(value)
            lines.append(f"| {label} | {text} |")
    if r.get("checkpoint"):
        lines += ["", f"Detector: `{r['checkpoint']}`."]
    return "\n".join(lines) + "\n"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", nargs="+", help="a detector to measure the verdict change with")
    ap.add_argument("--device", default="auto", help="where the checkpoint runs: auto, cpu, cuda or mps")
    ap.add_argument("--data", default=str(SHARED / "faces140k-sample"))
    ap.add_argument("--split", default="test", choices=("train", "valid", "test"))
    ap.add_argument("--n", type=int, default=100, help="faces per class")
    ap.add_argument("--unsplash", default=str(SHARED / "cross-generator" / "unsplash" / "real"))
    ap.add_argument("--unsplash-n", type=int, default=600, help="at most this many Unsplash photos (0: none)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--jpeg-quality", type=int, default=90, help="scenes are JPEG-encoded at this quality (0: not)")
    ap.add_argument("--aligned-only", action="store_true",
                    help="measure the aligned faces only (step 1: how fakeface.faces' square correction is fitted)")
    ap.add_argument("--out", type=Path, help="write face_detection.json and face_detection.md into this folder")
    args = ap.parse_args(argv)
    if args.n < 1 or args.unsplash_n < 0 or not 0 <= args.jpeg_quality <= 100:
        ap.error("--n must be >= 1, --unsplash-n >= 0 and --jpeg-quality 0-100")
    if args.checkpoint and len(args.checkpoint) == 1:
        args.checkpoint = args.checkpoint[0]
    result = run(args)
    print(markdown(result), end="")
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "face_detection.json").write_text(json.dumps(result, indent=2) + "\n")
        (args.out / "face_detection.md").write_text(markdown(result))
        print(f"wrote {args.out / 'face_detection.json'} and face_detection.md")


if __name__ == "__main__":
    main()
