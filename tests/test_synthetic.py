"""The synthetic demo dataset: layout on disk, determinism, and that it teaches the up-sampling cue only."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from fakeface import CLASS_NAMES, FAKE, REAL
from fakeface.synthetic import make_demo_dataset, make_demo_image

SPLITS = ("train", "valid", "test")


def _files(root, split, cls):
    return sorted((root / split / cls).glob("*.jpg"))


def _load(root, split):
    """(images as float arrays, labels) of one split, read back from the JPEG files."""
    images, labels = [], []
    for label, cls in ((REAL, "real"), (FAKE, "fake")):
        for path in _files(root, split, cls):
            with Image.open(path) as img:
                images.append(np.asarray(img.convert("RGB"), dtype=np.float64))
            labels.append(label)
    return images, np.array(labels)


def _nyquist_peaks(img: np.ndarray) -> list[float]:
    """How far the grey image's log spectrum stands out at the three 2x up-sampling peaks.

    A period-2 trace puts energy at (N/2, 0), (0, N/2) and (N/2, N/2); the feature is the largest
    log-magnitude in a 3x3 bin neighbourhood of each, minus the median of the 13x13 neighbourhood around it
    (the local level of the 1/f spectrum).
    """
    grey = img @ np.array([0.299, 0.587, 0.114])
    n = grey.shape[0]
    spec = np.log(np.abs(np.fft.fft2(grey - grey.mean())) + 1e-6)
    out = []
    for py, px in ((n // 2, 0), (0, n // 2), (n // 2, n // 2)):
        near = np.ix_((py + np.arange(-1, 2)) % n, (px + np.arange(-1, 2)) % n)
        around = np.ix_((py + np.arange(-6, 7)) % n, (px + np.arange(-6, 7)) % n)
        out.append(spec[near].max() - np.median(spec[around]))
    return out


def _colour_stats(img: np.ndarray) -> list[float]:
    return [*img.mean(axis=(0, 1)), *img.std(axis=(0, 1))]


def _held_out_auc(feature, train, test) -> float:
    """ROC-AUC (fake positive) on `test` of a logistic regression fitted on `train`."""
    (x_train, y_train), (x_test, y_test) = train, test
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))
    model.fit([feature(x) for x in x_train], y_train)
    scores = model.predict_proba([feature(x) for x in x_test])[:, list(model.classes_).index(FAKE)]
    return roc_auc_score(y_test, scores)


@pytest.fixture(scope="module")
def cue_data(tmp_path_factory):
    """A small dataset at the demo's size and JPEG quality; train/test splits are independent draws."""
    root = tmp_path_factory.mktemp("cue")
    make_demo_dataset(root, n_train=80, n_valid=0, n_test=80, size=128, seed=3, quality=90)
    return _load(root, "train"), _load(root, "test")


def test_layout_counts_and_files(tmp_path):
    counts = make_demo_dataset(tmp_path / "demo", n_train=3, n_valid=2, n_test=1, size=64, seed=1)

    assert counts == {
        "train": {"real": 3, "fake": 3},
        "valid": {"real": 2, "fake": 2},
        "test": {"real": 1, "fake": 1},
    }
    root = tmp_path / "demo"
    assert sorted(p.name for p in root.iterdir()) == ["README.txt", "test", "train", "valid"]
    for split in SPLITS:
        assert sorted(p.name for p in (root / split).iterdir()) == sorted(CLASS_NAMES)
        for cls in CLASS_NAMES:
            names = [p.name for p in _files(root, split, cls)]
            assert names == [f"{i:05d}.jpg" for i in range(counts[split][cls])]
            for path in _files(root, split, cls):
                with Image.open(path) as img:
                    assert img.format == "JPEG"
                    assert img.mode == "RGB"
                    assert img.size == (64, 64)
                    img.load()  # decodes completely: not truncated
    readme = (root / "README.txt").read_text(encoding="utf-8")
    assert "synthetic" in readme.lower()
    assert "seed=1" in readme


def test_rerun_with_fewer_images_removes_only_its_own_stale_files(tmp_path):
    make_demo_dataset(tmp_path, n_train=3, n_valid=1, n_test=1, size=32)
    note = tmp_path / "train" / "real" / "notes.txt"
    note.write_text("keep me")

    counts = make_demo_dataset(tmp_path, n_train=1, n_valid=1, n_test=1, size=32)

    assert counts["train"] == {"real": 1, "fake": 1}
    assert [p.name for p in _files(tmp_path, "train", "real")] == ["00000.jpg"]
    assert [p.name for p in _files(tmp_path, "train", "fake")] == ["00000.jpg"]
    assert note.read_text() == "keep me"


def test_same_seed_same_bytes_other_seed_other_images(tmp_path):
    kwargs = dict(n_train=2, n_valid=1, n_test=1, size=48)
    make_demo_dataset(tmp_path / "a", seed=5, **kwargs)
    make_demo_dataset(tmp_path / "b", seed=5, **kwargs)
    make_demo_dataset(tmp_path / "c", seed=6, **kwargs)

    paths = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*.jpg"))
    assert len(paths) == 2 * (2 + 1 + 1)
    for rel in paths:
        assert (tmp_path / "a" / rel).read_bytes() == (tmp_path / "b" / rel).read_bytes(), rel
        assert (tmp_path / "a" / rel).read_bytes() != (tmp_path / "c" / rel).read_bytes(), rel
    # Within one dataset no two images are the same scene either.
    contents = [(tmp_path / "a" / rel).read_bytes() for rel in paths]
    assert len(set(contents)) == len(contents)


@pytest.mark.parametrize("fake", [False, True])
def test_make_demo_image_is_a_pure_function_of_the_generator(fake):
    a = make_demo_image(np.random.default_rng(11), 96, fake)
    b = make_demo_image(np.random.default_rng(11), 96, fake)
    c = make_demo_image(np.random.default_rng(12), 96, fake)

    assert a.mode == "RGB" and a.size == (96, 96)
    assert np.array_equal(np.asarray(a), np.asarray(b))
    assert not np.array_equal(np.asarray(a), np.asarray(c))
    assert np.asarray(a).std() > 10  # a scene, not a flat or empty image


@pytest.mark.parametrize("size", [15, 33, 0])
def test_bad_sizes_are_refused(size, tmp_path):
    with pytest.raises(ValueError, match="size"):
        make_demo_image(np.random.default_rng(0), size, True)
    with pytest.raises(ValueError, match="size"):
        make_demo_dataset(tmp_path, n_train=1, n_valid=1, n_test=1, size=size)


def test_up_sampling_trace_separates_the_classes_after_jpeg(cue_data):
    train, test = cue_data

    auc = _held_out_auc(_nyquist_peaks, train, test)

    assert auc > 0.9, f"spectral-peak ROC-AUC {auc:.3f}: the fake class has no reliable up-sampling trace"


def test_colour_statistics_do_not_separate_the_classes(cue_data):
    train, test = cue_data

    auc = _held_out_auc(_colour_stats, train, test)

    # Either direction would be a shortcut, so check the distance from chance, not just the sign.
    assert abs(auc - 0.5) < 0.2, f"colour mean/std ROC-AUC {auc:.3f}: the demo would teach a brightness cue"
