"""Pack facenet-pytorch's published MTCNN weights into the one safetensors file the package ships.

    pip download --no-deps facenet-pytorch==2.6.0 -d /tmp/fp
    python benchmarks/make_mtcnn_weights.py /tmp/fp/facenet_pytorch-2.6.0-py3-none-any.whl

facenet-pytorch itself cannot be a dependency (2.6.0 pins torch < 2.3 and needs torchvision), but its wheel
carries the three state dicts (``facenet_pytorch/data/{pnet,rnet,onet}.pt``, MIT licence). They are read with
``torch.load(weights_only=True)``, checked against :mod:`fakeface.models.mtcnn`'s nets, and written to
``src/fakeface/weights/mtcnn.safetensors`` (keys ``pnet.conv1.weight`` ...) with the source and licence in the
file's metadata, so the package loads them without pickle.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import zipfile
from pathlib import Path

import torch
from safetensors.torch import save_file

from fakeface.models.mtcnn import NETS, ONet, PNet, RNet

WHEEL = "facenet_pytorch-2.6.0-py3-none-any.whl"
OUT = Path(__file__).resolve().parents[1] / "src/fakeface/weights/mtcnn.safetensors"
SOURCE = ("facenet-pytorch 2.6.0 (https://github.com/timesler/facenet-pytorch, PyPI wheel "
          f"{WHEEL}: facenet_pytorch/data/pnet.pt, rnet.pt, onet.pt)")
LICENSE = "MIT, Copyright (c) 2019 Timothy Esler"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("wheel", type=Path, help=f"the downloaded {WHEEL}")
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args()
    tensors = {}
    with zipfile.ZipFile(args.wheel) as wheel:
        for name, net in zip(NETS, (PNet(), RNet(), ONet())):
            raw = wheel.read(f"facenet_pytorch/data/{name}.pt")
            state = torch.load(io.BytesIO(raw), map_location="cpu", weights_only=True)
            net.load_state_dict(state, strict=True)  # the same keys and shapes as our definition, or an error
            tensors.update({f"{name}.{k}": v.contiguous() for k, v in state.items()})
            print(f"{name}: {len(state)} tensors, sha256 of the .pt {hashlib.sha256(raw).hexdigest()[:16]}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, args.out, metadata={"source": SOURCE, "license": LICENSE})
    print(f"wrote {args.out} ({args.out.stat().st_size / 1e6:.2f} MB)")


if __name__ == "__main__":
    main()
