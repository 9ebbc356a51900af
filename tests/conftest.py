"""Shared fixtures: the real data sample in ../shared, and small image folders made on the spot."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("FAKEFACE_SHARED", REPO.parent / "shared"))
SAMPLE = SHARED / "data" / "faces140k-sample"
FACENET_KEYS = SHARED / "fixtures" / "facenet_inception_resnet_v1_vggface2_keys.txt"


@pytest.fixture(scope="session", autouse=True)
def user_cache(tmp_path_factory) -> Path:
    """A fresh user cache for the session (ONNX exports of model folders are kept there): tests neither read a
    developer's cached exports nor leave files in ~/.cache; subprocesses inherit it."""
    cache = tmp_path_factory.mktemp("xdg-cache")
    old = os.environ.get("XDG_CACHE_HOME")
    os.environ["XDG_CACHE_HOME"] = str(cache)
    yield cache
    if old is None:
        os.environ.pop("XDG_CACHE_HOME", None)
    else:
        os.environ["XDG_CACHE_HOME"] = old


def _require(path: Path) -> Path:
    if not path.exists():
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"{path} is missing: CI must run with ../shared beside the repository")
        pytest.skip(f"{path} not found (../shared is not beside this checkout)")
    return path


@pytest.fixture(scope="session")
def sample_root() -> Path:
    """The real 140k sample: real_vs_fake/{train,valid,test}.csv + real-vs-fake/..."""
    return _require(SAMPLE)


@pytest.fixture(scope="session")
def facenet_keys() -> Path:
    return _require(FACENET_KEYS)


def noise_image(seed: int, size: int = 96, mode: str = "RGB") -> Image.Image:
    rng = np.random.default_rng(seed)
    arr = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
    return Image.fromarray(arr).convert(mode)


def make_folder_dataset(root: Path, per_class: int = 6, size: int = 96, splits=("train", "valid", "test"),
                        class_dirs=("real", "fake")) -> Path:
    """root/{split}/{real,fake}/*.jpg of random-noise images (fake ones get a visible stripe pattern)."""
    for s, split in enumerate(splits):
        for c, name in enumerate(class_dirs):
            d = root / split / name if split else root / name
            d.mkdir(parents=True, exist_ok=True)
            for i in range(per_class):
                img = np.asarray(noise_image(1000 * s + 100 * c + i, size)).copy()
                if "fake" in name:
                    img[::2] //= 2  # a cue a network can pick up
                Image.fromarray(img).save(d / f"{i:03d}.jpg", quality=95)
    return root


@pytest.fixture
def folder_dataset(tmp_path) -> Path:
    return make_folder_dataset(tmp_path / "ds")


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory) -> tuple[Path, Path]:
    """A detector trained for one epoch on a tiny folder dataset: (data folder, best.pt), with no ONNX export
    beside it (tests of exports make their own). Shared: do not modify either; copy the data first
    (shutil.copytree) to plant broken files."""
    from fakeface.train import TrainConfig, train

    root = tmp_path_factory.mktemp("tiny")
    data = make_folder_dataset(root / "ds", per_class=8, size=96)
    run = train(TrainConfig(data=str(data), out=str(root / "run"), epochs=1, batch_size=8, image_size=80,
                            precision="fp32", workers=0, export="none"))
    return data, run / "best.pt"


@pytest.fixture(scope="session")
def tiny_lite_run(tiny_run, tmp_path_factory) -> Path:
    """An efficientnet_lite0 detector trained one epoch on ``tiny_run``'s data: the second backbone of ensembles."""
    from fakeface.train import TrainConfig, train

    data, _ = tiny_run
    run = train(TrainConfig(data=str(data), out=str(tmp_path_factory.mktemp("lite") / "run"), epochs=1, batch_size=8,
                            model="efficientnet_lite0", image_size=64, precision="fp32", workers=0,
                            export="none"))
    return run / "best.pt"

