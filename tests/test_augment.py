"""Batch mixing (MixUp / CutMix): the labels follow the pixels, off means untouched, draws are seeded, and the
training loop trains on the mixed batches."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import make_folder_dataset
from fakeface import train as train_module
from fakeface.augment import AugmentConfig, mix_batch
from fakeface.train import TrainConfig, train


def label_images(y: torch.Tensor, size: int = 32) -> torch.Tensor:
    """Each image filled with its own label (0 real, 1 fake): after mixing, an image's mean is its fake share."""
    return y.view(-1, 1, 1, 1).expand(-1, 3, size, size).clone()


@pytest.mark.parametrize("aug", [AugmentConfig(mixup_alpha=0.4), AugmentConfig(cutmix_alpha=1.0),
                                 AugmentConfig(mixup_alpha=1.0, cutmix_alpha=1.0)])
def test_mixed_labels_are_the_fake_share_of_each_image(aug):
    y = torch.tensor([0.0, 1.0] * 8)
    mixed_any = False
    for seed in range(20):
        x, soft = mix_batch(label_images(y), y, aug, np.random.default_rng(seed))
        assert torch.allclose(x.mean(dim=(1, 2, 3)), soft, atol=1e-5)
        assert x.shape == (16, 3, 32, 32) and ((soft >= 0) & (soft <= 1)).all()
        mixed_any |= bool(((soft > 0) & (soft < 1)).any())
    assert mixed_any


def test_cutmix_pastes_a_box_and_leaves_the_rest():
    y = torch.tensor([0.0, 1.0] * 4)
    x, soft = mix_batch(label_images(y), y, AugmentConfig(cutmix_alpha=1.0), np.random.default_rng(3))
    changed = (x != label_images(y)).any(dim=(0, 1))  # pixels changed in any image: one axis-aligned box
    rows, cols = changed.any(dim=1).nonzero().flatten(), changed.any(dim=0).nonzero().flatten()
    assert changed.sum() == len(rows) * len(cols) > 0
    assert torch.equal(x.unique(), torch.tensor([0.0, 1.0]))  # pixels moved, never blended


def test_off_or_not_drawn_is_the_same_batch_and_draws_are_seeded():
    x, y = torch.randn(4, 3, 8, 8), torch.tensor([0.0, 1.0, 0.0, 1.0])
    for aug in (AugmentConfig(), AugmentConfig(mixup_alpha=1.0, mix_p=0.0)):
        x2, y2 = mix_batch(x, y, aug, np.random.default_rng(0))
        assert x2 is x and y2 is y
    a = mix_batch(x, y, AugmentConfig(mixup_alpha=1.0), np.random.default_rng(7))
    b = mix_batch(x, y, AugmentConfig(mixup_alpha=1.0), np.random.default_rng(7))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


def test_a_mix_with_an_unlabelled_image_has_no_label():
    y = torch.tensor([0.0, 1.0, -1.0, 1.0, 0.0, -1.0, 1.0, 0.0])
    for seed in range(10):
        x = torch.rand(8, 3, 8, 8)
        _, soft = mix_batch(x, y, AugmentConfig(mixup_alpha=1.0), np.random.default_rng(seed))
        assert (soft[y < 0] == -1).all()  # an unlabelled image stays unlabelled, whatever it was mixed with
        assert ((soft == -1) | ((soft >= 0) & (soft <= 1))).all()  # never a blend of a label and "none"


def test_bad_settings_fail_when_the_config_is_read():
    for bad in ({"mixup_alpha": -1.0}, {"cutmix_alpha": -0.5}, {"mix_p": 1.5}):
        with pytest.raises(ValueError, match="mix_p in"):
            TrainConfig(augment=bad)


@pytest.mark.slow
def test_training_steps_on_the_mixed_batches(tmp_path, monkeypatch):
    data = make_folder_dataset(tmp_path / "ds", per_class=8, size=96)
    seen = []

    def spy(x, y, aug, rng):
        out = mix_batch(x, y, aug, rng)
        seen.append(out[1])
        return out

    monkeypatch.setattr(train_module, "mix_batch", spy)
    run = train(TrainConfig(data=str(data), out=str(tmp_path / "run"), epochs=1, batch_size=8, image_size=80,
                            precision="fp32", workers=0, augment={"cutmix_alpha": 1.0, "mix_p": 1.0}))
    assert (run / "best.pt").is_file() and len(seen) == 2  # 16 training images, batch 8
    assert any(((s > 0) & (s < 1)).any() for s in seen)  # the loss saw soft labels
