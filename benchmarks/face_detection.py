"""Which face detector: detection rate, crop accuracy and speed on the sample's faces pasted into scenes.

    python benchmarks/face_detection.py [--n 100] [--data ../shared/data/faces140k-sample]

Pastes real (FFHQ) and fake (StyleGAN) test faces of the sample, at random sizes and places, into 640x480
scenes, and for each OpenCV cascade that ships in the opencv-python-headless 4.x wheel prints the share of
faces found, the median IoU of our FFHQ-like crop with the pasted crop, false detections per scene, and
milliseconds per scene - measured side by side in one run. `fakeface.faces` uses the winner.
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from fakeface.faces import box_iou, ffhq_crop_box


def scene(face: Image.Image, rng: random.Random):
    bg_small = np.asarray(Image.fromarray(np.uint8(rng.random() * 255 * np.ones((4, 4, 3)))))
    noise = np.random.default_rng(rng.randrange(10**6)).integers(0, 256, (12, 16, 3), dtype=np.uint8)
    bg = Image.fromarray(((noise.astype(int) + bg_small.mean()) // 2).astype(np.uint8)).resize(
        (640, 480), Image.Resampling.BICUBIC)
    side = rng.randint(100, 260)
    x, y = rng.randint(0, 640 - side), rng.randint(0, 480 - side)
    bg.paste(face.resize((side, side)), (x, y))
    return bg, (x, y, x + side, y + side)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=100, help="faces per class")
    ap.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared/data/faces140k-sample"))
    args = ap.parse_args()
    test = Path(args.data) / "real_vs_fake" / "real-vs-fake" / "test"
    paths = sorted((test / "real").glob("*.jpg"))[: args.n] + sorted((test / "fake").glob("*.jpg"))[: args.n]
    rng = random.Random(0)
    scenes = [scene(Image.open(p).convert("RGB"), rng) for p in paths]
    print(f"{len(scenes)} scenes (640x480), faces 100-260 px; OpenCV {cv2.__version__}")
    print(f"{'cascade':<36} {'found':>6} {'median IoU':>10} {'false/scene':>11} {'ms/scene':>9}")
    for name in ("haarcascade_frontalface_default.xml", "haarcascade_frontalface_alt.xml",
                 "haarcascade_frontalface_alt2.xml"):
        cascade = cv2.CascadeClassifier(cv2.data.haarcascades + name)
        found, ious, false = 0, [], 0
        t0 = time.perf_counter()
        for img, truth in scenes:
            gray = np.asarray(img.convert("L"))
            boxes = cascade.detectMultiScale(gray, scaleFactor=1.1, minNeighbors=5, minSize=(38, 38))
            crops = [ffhq_crop_box((x, y, x + w, y + h)) for x, y, w, h in boxes]
            hits = [box_iou(c, truth) for c in crops]
            if hits and max(hits) >= 0.5:
                found += 1
                ious.append(max(hits))
            false += sum(h < 0.5 for h in hits)
        ms = (time.perf_counter() - t0) / len(scenes) * 1000
        med = statistics.median(ious) if ious else float("nan")
        print(f"{name:<36} {found / len(scenes):6.1%} {med:10.3f} {false / len(scenes):11.2f} {ms:9.1f}")


if __name__ == "__main__":
    main()
