"""One device / precision switch with no-op fallbacks (as nanoGPT's train.py does it)."""

from __future__ import annotations

import contextlib

import torch


def resolve_device(name: str = "auto") -> torch.device:
    """``auto`` picks cuda, then mps, then cpu."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ValueError(f"unknown device {name!r}: auto, cpu, cuda, cuda:N or mps") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("device cuda was asked for but CUDA is not available")
    return device


def cpu_has_fast_bf16() -> bool:
    """True on CPUs with AMX or AVX-512 BF16, where bf16 autocast runs convolutions several times faster."""
    amx = getattr(torch.cpu, "_is_amx_tile_supported", lambda: False)()
    avx = getattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)()
    return bool(amx or avx)


def int8_full_range_safe() -> bool:
    """True on x86 CPUs with AVX512-VNNI, whose dot-product instruction adds uint8 x int8 products in 32 bits, so
    ONNX Runtime's int8 kernels stay exact with full-range (8-bit) weights. With AVX2 alone they add pairs of
    products in 16 bits, which 8-bit weights saturate; ORT's quantization guide says to use 7-bit weights
    (reduce_range) there, and so does fakeface wherever this is False (other CPUs included, unmeasured)."""
    return bool(getattr(torch.cpu, "_is_vnni_supported", lambda: False)())


def resolve_precision(name: str, device: torch.device, model: str | None = None) -> str:
    """``auto``: bf16 on CUDA where supported (fp16 + grad scaler otherwise); on CPUs with AMX/AVX512-BF16, bf16
    for models whose registry entry says it is faster there (benchmarks/train_step.py: ~2x for
    Inception-ResNet-V1, slower for EfficientNet-Lite0's depthwise convolutions), else fp32."""
    if name != "auto":
        if name not in ("fp32", "bf16", "fp16"):
            raise ValueError(f"precision must be auto, fp32, bf16 or fp16, got {name!r}")
        return name
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    if device.type == "cpu":
        from .models import get_entry

        fast = model is None or get_entry(model).cpu_bf16
        return "bf16" if fast and cpu_has_fast_bf16() else "fp32"
    return "fp32"


def autocast(device: torch.device, precision: str):
    """The autocast context for ``precision``; a no-op context for fp32."""
    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


def grad_scaler(device: torch.device, precision: str) -> torch.amp.GradScaler:
    """Enabled only for fp16, where small gradients would underflow."""
    return torch.amp.GradScaler(device.type, enabled=(precision == "fp16" and device.type == "cuda"))
