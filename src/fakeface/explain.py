"""Grad-CAM heatmaps: which regions of the face drove the score.

Selvaraju et al., "Grad-CAM: Visual Explanations from Deep Networks via Gradient-based Localization" (2017):
the feature maps A_k of the last convolutional block (``model.feature_layer()``: Inception-ResNet-V1's
``block8``) are weighted by the spatial mean of d(logit)/d(A_k), summed, and rectified. A positive region
pushes the score towards "fake". Written here with forward/backward hooks (grad-cam needs torchvision). A
detector with flip test-time augmentation scores an image and its mirror: their maps are averaged, the
mirror's flipped back.
"""

from __future__ import annotations

import io
import os

import numpy as np
import torch
from matplotlib import colormaps
from PIL import Image

from .preprocess import Normalize


def grad_cam(model: torch.nn.Module, preprocess, img: Image.Image) -> tuple[np.ndarray, float]:
    """(h, w) heatmap in [0, 1] over the model's evaluation view of ``img``, and the logit."""
    layer = model.feature_layer()
    saved: dict[str, torch.Tensor] = {}

    def keep(module, inputs, output):
        output.retain_grad()
        saved["activation"] = output

    handle = layer.register_forward_hook(keep)
    try:
        model.eval()
        x = Normalize(preprocess)(preprocess.eval_tensor(img).unsqueeze(0))  # (1, 3, S, S)
        x = x.to(next(model.parameters()).device)
        with torch.enable_grad():
            logit = model(x.requires_grad_(True)).squeeze()  # also when no parameter precedes the layer
            model.zero_grad(set_to_none=True)
            logit.backward()
        act, grad = saved["activation"], saved["activation"].grad  # (1, C, h, w)
    finally:
        handle.remove()
    weights = grad.mean(dim=(2, 3), keepdim=True)  # (n, C, 1, 1); n = 2 with flip TTA (the image and its mirror)
    cam = torch.relu((weights * act).sum(dim=1)).detach()  # (n, h, w)
    if hasattr(model, "fold_maps"):
        cam = model.fold_maps(cam)  # the mirror's map flipped back and averaged with the image's
    cam = cam[0]
    cam = cam / cam.max() if cam.max() > 0 else cam
    return cam.numpy(), float(logit.detach())


def overlay(img: Image.Image, cam: np.ndarray, alpha: float = 0.45) -> Image.Image:
    """The heatmap (jet colours, up-sampled bilinearly) blended over ``img``."""
    heat = Image.fromarray(np.uint8(cam * 255)).resize(img.size, Image.Resampling.BILINEAR)
    coloured = colormaps["jet"](np.asarray(heat) / 255.0)[..., :3]  # (H, W, 3) in [0, 1]
    base = np.asarray(img.convert("RGB"), dtype=np.float32) / 255.0
    return Image.fromarray(np.uint8(255 * ((1 - alpha) * base + alpha * coloured)))


def explain_image(detector, img: Image.Image) -> tuple[Image.Image, float]:
    """Overlay for ``img`` on the detector's evaluation view, and its calibrated P(fake).

    Runs in fp32 on the CPU copy of the model, whatever the detector's serving precision, so gradients are
    exact; the heatmap covers the same centre crop the score was computed on.
    """
    model = detector.explain_model()
    cam, logit = grad_cam(model, detector.preprocess, img)
    view = detector.preprocess.eval_image(img)
    return overlay(view, cam), float(detector.p_fake(np.array([logit]))[0])


def png_bytes(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def save_explanation(detector, img: Image.Image, out: str | os.PathLike) -> float:
    heat, p = explain_image(detector, img)
    heat.save(out)
    return p
