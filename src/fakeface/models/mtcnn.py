"""MTCNN (Zhang et al. 2016): a three-stage cascade that finds faces and five landmarks in an image.

P-Net slides over an image pyramid and proposes boxes, R-Net refines them on 24 px crops, O-Net refines again on
48 px crops and places the eyes, nose tip and mouth corners. The layer names and shapes are those of
facenet-pytorch's ``PNet``/``RNet``/``ONet`` (MIT), whose published weights (converted from the authors' Caffe
models) load into them unchanged; ``benchmarks/make_mtcnn_weights.py`` packs them into one safetensors file.
Pixels are RGB on 0-255 and each net sees ``(x - 127.5) / 128``, as the weights were trained. The pyramid and the
nets' crops are resampled with OpenCV's area interpolation (as the TensorFlow port of facenet does; facenet-pytorch
uses PyTorch's adaptive pooling, slower at the same alignment error: ``benchmarks/face_detection.py``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import cv2
import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

NETS = ("pnet", "rnet", "onet")


class PNet(nn.Module):
    """Proposal net: fully convolutional, one 12x12 window every 2 pixels -> (box offsets, face probability)."""

    def __init__(self):
        super().__init__()
        self.conv1, self.prelu1 = nn.Conv2d(3, 10, 3), nn.PReLU(10)
        self.pool1 = nn.MaxPool2d(2, 2, ceil_mode=True)
        self.conv2, self.prelu2 = nn.Conv2d(10, 16, 3), nn.PReLU(16)
        self.conv3, self.prelu3 = nn.Conv2d(16, 32, 3), nn.PReLU(32)
        self.conv4_1 = nn.Conv2d(32, 2, 1)  # face / not face
        self.conv4_2 = nn.Conv2d(32, 4, 1)  # box offsets

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.pool1(self.prelu1(self.conv1(x)))
        x = self.prelu3(self.conv3(self.prelu2(self.conv2(x))))
        return self.conv4_2(x), F.softmax(self.conv4_1(x), dim=1)  # (B, 4, h, w), (B, 2, h, w)


class RNet(nn.Module):
    """Refine net on 24x24 crops -> (box offsets (B, 4), probabilities (B, 2))."""

    def __init__(self):
        super().__init__()
        self.conv1, self.prelu1 = nn.Conv2d(3, 28, 3), nn.PReLU(28)
        self.pool1 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv2, self.prelu2 = nn.Conv2d(28, 48, 3), nn.PReLU(48)
        self.pool2 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv3, self.prelu3 = nn.Conv2d(48, 64, 2), nn.PReLU(64)
        self.dense4, self.prelu4 = nn.Linear(576, 128), nn.PReLU(128)
        self.dense5_1 = nn.Linear(128, 2)
        self.dense5_2 = nn.Linear(128, 4)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.pool1(self.prelu1(self.conv1(x)))
        x = self.pool2(self.prelu2(self.conv2(x)))
        x = self.prelu3(self.conv3(x))
        x = x.permute(0, 3, 2, 1).flatten(1)  # the Caffe weights flatten (W, H, C)
        x = self.prelu4(self.dense4(x))
        return self.dense5_2(x), F.softmax(self.dense5_1(x), dim=1)


class ONet(nn.Module):
    """Output net on 48x48 crops -> (box offsets (B, 4), landmarks (B, 10): 5 x then 5 y, probabilities)."""

    def __init__(self):
        super().__init__()
        self.conv1, self.prelu1 = nn.Conv2d(3, 32, 3), nn.PReLU(32)
        self.pool1 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv2, self.prelu2 = nn.Conv2d(32, 64, 3), nn.PReLU(64)
        self.pool2 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv3, self.prelu3 = nn.Conv2d(64, 64, 3), nn.PReLU(64)
        self.pool3 = nn.MaxPool2d(2, 2, ceil_mode=True)
        self.conv4, self.prelu4 = nn.Conv2d(64, 128, 2), nn.PReLU(128)
        self.dense5, self.prelu5 = nn.Linear(1152, 256), nn.PReLU(256)
        self.dense6_1 = nn.Linear(256, 2)
        self.dense6_2 = nn.Linear(256, 4)
        self.dense6_3 = nn.Linear(256, 10)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x = self.pool1(self.prelu1(self.conv1(x)))
        x = self.pool2(self.prelu2(self.conv2(x)))
        x = self.pool3(self.prelu3(self.conv3(x)))
        x = self.prelu4(self.conv4(x))
        x = self.prelu5(self.dense5(x.permute(0, 3, 2, 1).flatten(1)))
        return self.dense6_2(x), self.dense6_3(x), F.softmax(self.dense6_1(x), dim=1)


class MTCNNWeightsError(ValueError):
    """The MTCNN weights file is missing, unreadable or does not fit the networks."""


def load_nets(path: str | os.PathLike) -> tuple[PNet, RNet, ONet]:
    """The three nets in eval mode with the weights of one safetensors file (keys ``pnet.conv1.weight`` ...).

    Raises:
        MTCNNWeightsError: the file is missing or broken, or its keys or shapes differ from the nets'.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        tensors = load_file(os.fspath(path))
    except FileNotFoundError:
        raise MTCNNWeightsError(f"the MTCNN weights file {os.fspath(path)} is missing") from None
    except (SafetensorError, OSError, ValueError) as e:
        raise MTCNNWeightsError(f"the MTCNN weights file {os.fspath(path)} cannot be read: {e}") from None
    nets = PNet(), RNet(), ONet()
    for name, net in zip(NETS, nets):
        state = {k.removeprefix(name + "."): v for k, v in tensors.items() if k.startswith(name + ".")}
        expected = {k: tuple(v.shape) for k, v in net.state_dict().items()}
        got = {k: tuple(v.shape) for k, v in state.items()}
        if got != expected:
            missing = sorted(expected.keys() - got.keys())
            extra = sorted(got.keys() - expected.keys())
            shapes = sorted(k for k in expected.keys() & got.keys() if expected[k] != got[k])
            raise MTCNNWeightsError(f"the MTCNN weights file {os.fspath(path)} does not fit {name}: missing "
                                    f"{missing}, unexpected {extra}, wrong shape {shapes}")
        net.load_state_dict(state)
        net.eval().requires_grad_(False)
    return nets


@dataclass(frozen=True)
class Thresholds:
    """Face-probability thresholds of the three stages, MTCNN's published defaults (facenet-pytorch's too)."""

    pnet: float = 0.6
    rnet: float = 0.7
    onet: float = 0.7


def nms(boxes: np.ndarray, scores: np.ndarray, iou: float, mode: str = "union") -> np.ndarray:
    """Greedy non-maximum suppression: indices of the boxes kept, highest score first.

    ``boxes`` (N, 4) as x0, y0, x1, y1. ``mode="min"`` divides the overlap by the smaller box (MTCNN's last stage
    uses it so a box inside a bigger one is dropped too).
    """
    x0, y0, x1, y1 = boxes.T
    area = (x1 - x0 + 1) * (y1 - y0 + 1)
    order = np.argsort(-scores, kind="stable")
    keep = []
    while order.size:
        i, rest = order[0], order[1:]
        keep.append(i)
        w = np.maximum(0.0, np.minimum(x1[i], x1[rest]) - np.maximum(x0[i], x0[rest]) + 1)
        h = np.maximum(0.0, np.minimum(y1[i], y1[rest]) - np.maximum(y0[i], y0[rest]) + 1)
        inter = w * h
        denom = np.minimum(area[i], area[rest]) if mode == "min" else area[i] + area[rest] - inter
        order = rest[inter / denom <= iou]
    return np.asarray(keep, dtype=np.int64)


def _square(boxes: np.ndarray) -> np.ndarray:
    """Each box grown to a square about its centre (the nets' inputs are square)."""
    w, h = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    side = np.maximum(w, h)
    out = boxes.copy()
    out[:, 0] = boxes[:, 0] + w / 2 - side / 2
    out[:, 1] = boxes[:, 1] + h / 2 - side / 2
    out[:, 2:4] = out[:, 0:2] + side[:, None]
    return out


def _regress(boxes: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """Apply the nets' box offsets (fractions of the box's width and height)."""
    wh = np.tile((boxes[:, 2:4] - boxes[:, 0:2] + 1), 2)
    return boxes[:, :4] + offsets * wh


def _crops(img: np.ndarray, boxes: np.ndarray, size: int) -> torch.Tensor:
    """(N, 3, size, size) network input cut from ``img`` (H, W, 3) float32 at integer square ``boxes``; parts
    outside the image are zeros, as in the original Caffe pipeline, so a face at the border keeps its proportions."""
    h, w, _ = img.shape
    out = np.empty((len(boxes), size, size, 3), dtype=np.float32)
    for i, (x0, y0, x1, y1) in enumerate(np.floor(boxes[:, :4]).astype(int)):
        x1, y1 = max(x1, x0 + 1), max(y1, y0 + 1)
        patch = np.zeros((y1 - y0, x1 - x0, 3), dtype=np.float32)
        sx0, sy0, sx1, sy1 = max(x0, 0), max(y0, 0), min(x1, w), min(y1, h)
        if sx1 > sx0 and sy1 > sy0:
            patch[sy0 - y0: sy1 - y0, sx0 - x0: sx1 - x0] = img[sy0:sy1, sx0:sx1]
        out[i] = cv2.resize(patch, (size, size), interpolation=cv2.INTER_AREA)
    return torch.from_numpy((out - 127.5) / 128.0).permute(0, 3, 1, 2)


class MTCNN:
    """Faces and their five landmarks in one RGB image.

    Args:
        weights: the safetensors file of :func:`load_nets`.
        min_face: the smallest face side searched for, in pixels of the image given to :meth:`detect`.
        factor: scale step of the image pyramid (0.709 = 1/sqrt(2), the paper's).
        thresholds: face-probability threshold of each stage.
    """

    def __init__(self, weights: str | os.PathLike, min_face: int = 20, factor: float = 0.709,
                 thresholds: Thresholds = Thresholds()):
        if min_face < 12 or not 0 < factor < 1:
            raise ValueError(f"min_face must be >= 12 and 0 < factor < 1, got {min_face} and {factor}")
        self.pnet, self.rnet, self.onet = load_nets(weights)
        self.min_face, self.factor, self.thresholds = min_face, factor, thresholds

    @torch.inference_mode()
    def detect(self, rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``rgb`` (H, W, 3) uint8 -> boxes (N, 4) as x0, y0, x1, y1, scores (N,), landmarks (N, 5, 2) as x, y of
        the left eye, right eye, nose tip, left and right mouth corner (left/right as seen in the image);
        most confident first."""
        img = np.asarray(rgb, dtype=np.float32)
        empty = np.zeros((0, 4)), np.zeros(0), np.zeros((0, 5, 2))
        boxes = self._propose(img)
        if len(boxes) == 0:
            return empty
        # R-Net: rescore and refine the proposals
        boxes = _square(boxes)
        offsets, probs = self.rnet(_crops(img, boxes, 24))
        keep = (probs[:, 1] > self.thresholds.rnet).numpy()
        boxes, scores, offsets = boxes[keep], probs[keep, 1].numpy(), offsets[keep].numpy()
        if len(boxes) == 0:
            return empty
        pick = nms(boxes, scores, 0.7)
        boxes = _square(_regress(boxes[pick], offsets[pick]))
        # O-Net: rescore, refine and place the landmarks
        offsets, points, probs = self.onet(_crops(img, boxes, 48))
        keep = (probs[:, 1] > self.thresholds.onet).numpy()
        boxes, scores = np.floor(boxes[keep]), probs[keep, 1].numpy()
        offsets, points = offsets[keep].numpy(), points[keep].numpy()
        if len(boxes) == 0:
            return empty
        wh = boxes[:, 2:4] - boxes[:, 0:2] + 1
        landmarks = np.stack([points[:, :5], points[:, 5:]], axis=2) * wh[:, None] + boxes[:, None, 0:2] - 1
        boxes = _regress(boxes, offsets)
        pick = nms(boxes, scores, 0.7, mode="min")
        return boxes[pick], scores[pick], landmarks[pick]

    def _propose(self, img: np.ndarray) -> np.ndarray:
        """P-Net over the image pyramid -> candidate boxes (N, 4), each level's and then all levels' NMS'd."""
        h, w, _ = img.shape
        scale, found = 12.0 / self.min_face, []
        while min(h, w) * scale >= 12:
            level = cv2.resize(img, (int(w * scale + 1), int(h * scale + 1)), interpolation=cv2.INTER_AREA)
            offsets, probs = self.pnet(torch.from_numpy((level - 127.5) / 128.0).permute(2, 0, 1)[None])
            ys, xs = np.nonzero(probs[0, 1].numpy() >= self.thresholds.pnet)
            if len(ys):
                scores = probs[0, 1].numpy()[ys, xs]
                # each output cell is a 12x12 window, stride 2, of the scaled image
                cells = np.stack([xs, ys], axis=1).astype(np.float64)
                boxes = np.concatenate([np.floor((2 * cells + 1) / scale), np.floor((2 * cells + 12) / scale)], 1)
                boxes = np.concatenate([boxes, offsets[0][:, ys, xs].numpy().T, scores[:, None]], 1)
                found.append(boxes[nms(boxes[:, :4], scores, 0.5)])
            scale *= self.factor
        if not found:
            return np.zeros((0, 4))
        boxes = np.concatenate(found)
        boxes = boxes[nms(boxes[:, :4], boxes[:, 8], 0.7)]
        return _regress(boxes[:, :4], boxes[:, 4:8])
