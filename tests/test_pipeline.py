"""The prediction pipeline: threads decode ahead of the model, boundedly, without changing a single row."""

from __future__ import annotations

import io
import shutil
import threading
import time

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from fakeface.data import FaceDataset, Sample, collate, decoded_batches
from fakeface.detector import Detector
from fakeface.images import load_image
from fakeface.predict import expand_inputs, predict_paths
from fakeface.preprocess import Preprocess


@pytest.fixture(scope="module")
def detector(tiny_run):
    return Detector(tiny_run[1], device="cpu", precision="fp32")


@pytest.fixture
def inbox(tiny_run, sample_root, tmp_path):
    """Faces of two sizes (96 px noise, 256 px real), a grey PNG, a corrupt JPEG and a text file, nested."""
    data, _ = tiny_run
    d = tmp_path / "inbox"
    shutil.copytree(data / "test", d / "small")
    faces = sorted((sample_root / "real_vs_fake" / "real-vs-fake" / "test" / "fake").glob("*.jpg"))[:5]
    (d / "faces").mkdir()
    for p in faces:
        shutil.copy(p, d / "faces" / p.name)
    Image.open(faces[0]).convert("L").save(d / "faces" / "grey.png")
    (d / "small" / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0garbage" * 10)
    (d / "notes.txt").write_text("not an image")
    return d


def old_predict_paths(detector, paths, batch_size):
    """predict_paths as it was before threads: a DataLoader decoding in this process, same batches."""
    ds = FaceDataset([Sample(p, -1) for p in paths], detector.preprocess)
    for batch in DataLoader(ds, batch_size=batch_size, num_workers=0, collate_fn=collate):
        rows = {}
        if len(batch["index"]):
            probs = detector.p_fake(detector.scorer.logits(batch["image"]).numpy())
            for i, p in zip(batch["index"].tolist(), probs):
                rows[i] = {"p_fake": float(p), "pred": detector.verdict(p), "error": None}
        for i, reason in batch["failures"]:
            rows[i] = {"p_fake": None, "pred": None, "error": reason}
        for i in sorted(rows):
            yield {"path": ds.samples[i].path, "label": None, **rows[i]}


def test_threaded_rows_are_the_single_threaded_rows(detector, inbox):
    paths = expand_inputs([inbox]) + [str(inbox / "missing.jpg")]
    expected = list(old_predict_paths(detector, paths, batch_size=3))  # failures land in different batches
    assert [r["path"] for r in expected] == paths
    assert ["not an image" in (r["error"] or "") for r in expected].count(True) == 1
    assert ["corrupt" in (r["error"] or "") for r in expected].count(True) == 1
    assert "cannot read file" in expected[-1]["error"]
    assert len({round(r["p_fake"], 6) for r in expected if r["p_fake"] is not None}) > 10  # distinct scores
    for workers, draft in ((0, False), (1, False), (3, False), (2, True)):
        rows = list(predict_paths(detector, paths, batch_size=3, workers=workers, draft=draft))
        assert [r["path"] for r in rows] == paths, workers
        assert [r["error"] for r in rows] == [r["error"] for r in expected]
        assert all(r["label"] is None for r in rows)
        for got, want in zip(rows, expected):
            # with draft (what `fakeface predict` does) the 256 px JPEGs are decoded at 128 px for the 80 px
            # view; the 96 px ones and the PNG are not >= 2x the view, and must not change at all
            if want["p_fake"] is not None and not (draft and got["path"].endswith(".jpg") and "faces" in got["path"]):
                assert got["p_fake"] == pytest.approx(want["p_fake"], abs=1e-6)
                assert got["pred"] == want["pred"]


def test_an_error_while_decoding_reaches_the_caller(detector, inbox):
    def broken(img, index):
        raise RuntimeError(f"transform failed on {index}")

    with pytest.raises(RuntimeError, match="transform failed"):
        list(predict_paths(detector, expand_inputs([inbox]), batch_size=4, workers=2, transform=broken))
    assert not [t for t in threading.enumerate() if t.name.startswith("fakeface-decode")]


class CountingDataset:
    """Tiny items; records, for every item decoded, the batch the consumer last asked for at that moment."""

    def __init__(self, n: int):
        self.n, self.holding, self.log = n, -1, []
        self.lock = threading.Lock()

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        with self.lock:
            self.log.append((i, self.holding))
        return {"index": i, "label": -1, "image": torch.zeros(3, 4, 4, dtype=torch.uint8), "error": None}


@pytest.mark.parametrize("workers, ahead", [(1, 2), (3, 3)])
def test_decoding_never_runs_more_than_ahead_batches_ahead(workers, ahead):
    ds, batch = CountingDataset(200), 4
    batches, indices = decoded_batches(ds, batch, workers, ahead), []
    for k in range(len(ds) // batch + 1):
        ds.holding = k  # done with batch k - 1, asking for batch k
        b = next(batches, None)
        if b is None:
            break
        indices += b["index"].tolist()
        time.sleep(0.01)  # a slow model: an unbounded producer would race to the end meanwhile
    assert indices == list(range(200))
    # item i belongs to batch i // batch; from asking for batch k until asking for k + 1, only batches up to
    # k + ahead may be decoded
    furthest = max(i // batch - held for i, held in ds.log)
    assert furthest == ahead  # never further, and it did run ahead that far


def test_stopping_early_stops_the_decoding_threads():
    ds = CountingDataset(1000)
    batches = decoded_batches(ds, 4, workers=2, ahead=2)
    next(batches)
    batches.close()
    decoded = len(ds.log)
    assert decoded <= 4 * (1 + 2)
    time.sleep(0.05)
    assert len(ds.log) == decoded
    assert not [t for t in threading.enumerate() if t.name.startswith("fakeface-decode")]


# -- JPEG draft decoding -------------------------------------------------------------------------------------------
def jpeg_bytes(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=90)
    return buf.getvalue()


@pytest.fixture(scope="module")
def big_face(sample_root) -> bytes:
    """A real face as a 1024 px JPEG (FFHQ's original size)."""
    face = sorted((sample_root / "real_vs_fake" / "real-vs-fake" / "test" / "real").glob("*.jpg"))[0]
    return jpeg_bytes(Image.open(face).convert("RGB").resize((1024, 1024), Image.Resampling.LANCZOS))


def test_draft_decodes_large_jpegs_at_a_reduced_scale_never_below_the_view(big_face):
    pre = Preprocess(input_size=160, resize=160)
    assert pre.min_decode_side == 160 and Preprocess(resize=None).min_decode_side is None
    assert load_image(big_face).size == (1024, 1024)
    assert load_image(big_face, min_side=160).size == (256, 256)  # 1/4: 1/8 would be 128 < 160
    assert load_image(big_face, min_side=300).size == (512, 512)
    assert load_image(big_face, min_side=600).size == (1024, 1024)  # < 2x: whole
    png = io.BytesIO()
    Image.open(io.BytesIO(big_face)).save(png, "PNG")
    assert load_image(png.getvalue(), min_side=160).size == (1024, 1024)  # only JPEGs have DCT scaling

    full = pre.eval_tensor(load_image(big_face)).float()
    drafted = pre.eval_tensor(load_image(big_face, min_side=pre.min_decode_side)).float()
    assert full.shape == drafted.shape == (3, 160, 160)
    assert 0 < (full - drafted).abs().mean() < 2  # a slightly different low-pass, the same picture


def test_draft_only_for_the_plain_evaluation_view(tmp_path, big_face):
    pre = Preprocess(input_size=160, resize=160)
    samples = [Sample("x.jpg", -1)]
    assert FaceDataset(samples, pre, draft=True).min_side == 160
    assert FaceDataset(samples, pre).min_side is None
    assert FaceDataset(samples, pre, draft=True, transform=lambda img, i: img).min_side is None


def test_draft_in_predict_paths_changes_large_jpegs_only_slightly(detector, big_face, tmp_path):
    (tmp_path / "big.jpg").write_bytes(big_face)
    paths = [str(tmp_path / "big.jpg")]
    exact = next(predict_paths(detector, paths, workers=0))
    fast = next(predict_paths(detector, paths, workers=0, draft=True))
    assert exact["error"] is None and fast["error"] is None
    assert abs(fast["p_fake"] - exact["p_fake"]) < 0.05
    assert np.isfinite(fast["p_fake"])
