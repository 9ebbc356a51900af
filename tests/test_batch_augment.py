"""On-device batch augmentation: the per-image path's shapes and values, seeded, and a training run through it."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from conftest import make_folder_dataset, noise_image
from fakeface.augment import AugmentConfig, train_view
from fakeface.batch_augment import BatchAugment, unsupported_keys
from fakeface.checkpoint import load_checkpoint
from fakeface.data import Sample, collate, discover
from fakeface.loader import StoredSizeDataset, stored_size
from fakeface.preprocess import Preprocess, to_uint8_tensor
from fakeface.train import TrainConfig, train

PRE = Preprocess(input_size=64, resize=80, interpolation="bilinear")
ALL_ON = AugmentConfig(hflip_p=0.5, scale_p=0.5, blur_p=0.5, resize_p=0.5, noise_p=0.5, color_p=0.5,
                       noise_std=(0.01, 0.05))


def batch(n=6, size=96, seed=0):
    return torch.stack([to_uint8_tensor(noise_image(seed + i, size)) for i in range(n)])


def test_shapes_and_values_are_the_per_image_paths():
    images = batch()
    out = BatchAugment(PRE, ALL_ON, seed=1)(images, epoch=1, step=0)
    ref = torch.stack([to_uint8_tensor(train_view(Image.fromarray(im.permute(1, 2, 0).numpy()), PRE, ALL_ON,
                                                  random.Random(i))) for i, im in enumerate(images)])
    assert out.shape == ref.shape == (6, 3, 64, 64)
    assert out.dtype == ref.dtype == torch.uint8
    assert out.float().std() > 10  # images, not a constant: noise images stay noisy through every step


def test_seeded_and_reproducible():
    aug = BatchAugment(PRE, ALL_ON, seed=3)
    images = batch()
    a, b = aug(images, epoch=2, step=5), aug(images, epoch=2, step=5)
    assert torch.equal(a, b)
    assert not torch.equal(a, aug(images, epoch=2, step=6))  # another step, other draws
    assert not torch.equal(a, BatchAugment(PRE, ALL_ON, seed=4)(images, epoch=2, step=5))


@pytest.mark.parametrize("flip", [0.0, 1.0])
def test_resize_crop_flip_equal_the_per_image_reference(flip):
    aug = AugmentConfig(hflip_p=flip, random_crop=False)  # deterministic: centre crop, flip always or never
    images = batch(n=4, size=100)
    out = BatchAugment(PRE, aug)(images)
    ref = torch.stack([to_uint8_tensor(train_view(Image.fromarray(im.permute(1, 2, 0).numpy()), PRE, aug,
                                                  random.Random(0))) for im in images])
    diff = (out.int() - ref.int()).abs()
    assert diff.max() <= 2 and diff.float().mean() < 0.2  # float vs uint8 resampling kernels: rounding apart


def test_random_crops_are_windows_of_the_resized_image():
    pre = Preprocess(input_size=32, resize=None)  # native: a crop is a window of the image as stored
    images = batch(n=8, size=48)
    out = BatchAugment(pre, AugmentConfig(hflip_p=0.0))(images, step=1)
    for im, crop in zip(images, out):
        windows = im.unfold(1, 32, 1).unfold(2, 32, 1)  # (3, 17, 17, 32, 32)
        assert any(torch.equal(windows[:, r, c], crop) for r in range(17) for c in range(17))


def test_photometric_steps_change_values_but_keep_the_range():
    images = batch(n=8)
    for kind in ("blur", "color", "noise", "resize"):
        aug = AugmentConfig(**{f"{kind}_p": 1.0, "hflip_p": 0.0, "random_crop": False},
                            **({"noise_std": (0.05, 0.1)} if kind == "noise" else {}))
        out = BatchAugment(PRE, aug)(images)
        plain = BatchAugment(PRE, AugmentConfig(hflip_p=0.0, random_crop=False))(images)
        assert out.shape == plain.shape and not torch.equal(out, plain), kind
    blurred = BatchAugment(PRE, AugmentConfig(blur_p=1.0, blur_sigma=(1.5, 2.0), hflip_p=0))(images)
    assert blurred.float().std() < images.float().std()  # blur smooths noise


def test_unsupported_augmentations_are_named():
    assert unsupported_keys(ALL_ON) == []
    assert unsupported_keys(AugmentConfig(mixup_alpha=0.2)) == []  # mixed by the training loop, either path


def test_stored_size_dataset_decodes_at_stored_size(tmp_path):
    paths = []
    for i, size in enumerate((96, 96, 120)):  # the odd one is fitted to the stored size
        paths.append(tmp_path / f"{i}.png")
        noise_image(i, size).save(paths[-1])
    (tmp_path / "bad.jpg").write_bytes(b"not an image")
    samples = [Sample(str(p), 0) for p in paths] + [Sample(str(tmp_path / "bad.jpg"), 1)]
    assert stored_size(samples) == (96, 96)
    ds = StoredSizeDataset(samples, (96, 96), AugmentConfig(jpeg_p=1.0), seed=0)
    items = [ds[i] for i in range(len(ds))]
    b = collate(items)
    assert b["image"].shape == (3, 3, 96, 96) and b["image"].dtype == torch.uint8
    assert [f[0] for f in b["failures"]] == [3]
    plain = StoredSizeDataset(samples, (96, 96))[0]["image"]
    assert torch.equal(plain, to_uint8_tensor(Image.open(paths[0]).convert("RGB")))  # no work without jpeg_p
    assert not torch.equal(items[0]["image"], plain)  # re-compressed


@pytest.mark.slow
def test_training_runs_with_gpu_augment_on_cpu(tmp_path):
    data = make_folder_dataset(tmp_path / "ds", per_class=6, size=80)
    cfg = TrainConfig(data=str(data), out=str(tmp_path / "run"), epochs=2, batch_size=4, image_size=64,
                      model="efficientnet_lite0",
                      precision="fp32", workers=0, gpu_augment=True, export="none",
                      augment={"blur_p": 0.3, "color_p": 0.3, "noise_p": 0.3, "jpeg_p": 0.3, "scale_p": 0.3})
    run = train(cfg)
    resolved = yaml.safe_load((run / "config.yaml").read_text())["resolved"]
    assert resolved["gpu_augment"] is True
    ckpt = load_checkpoint(run / "last.pt")
    assert ckpt["epoch"] == 2 and all(np.isfinite(r["train_loss"]) for r in ckpt["history"])
    assert len(discover(data).splits["train"]) == 12


def test_gpu_augment_setting_is_checked():
    with pytest.raises(ValueError, match="gpu_augment"):
        TrainConfig(gpu_augment="gpu")


def test_an_augmentation_only_the_per_image_path_has_keeps_it(monkeypatch, caplog):
    import fakeface.batch_augment as batch_augment
    from fakeface.train import use_batch_augment

    monkeypatch.setattr(batch_augment, "SUPPORTED", batch_augment.SUPPORTED - {"blur_p"})
    cfg, cpu = TrainConfig(gpu_augment=True), torch.device("cpu")
    assert use_batch_augment(cfg, AugmentConfig(), cpu)
    with caplog.at_level("INFO", logger="fakeface"):
        assert not use_batch_augment(cfg, AugmentConfig(blur_p=0.2), cpu)
    assert "blur_p only in the per-image path" in caplog.text
    with pytest.raises(ValueError, match="blur_p"):
        BatchAugment(PRE, AugmentConfig(blur_p=0.2))
    assert not use_batch_augment(TrainConfig(), AugmentConfig(), cpu)  # auto: on CUDA only
