"""Device choice: `auto` picks CUDA, then Apple MPS, then the CPU; or a device by name."""

from __future__ import annotations

import contextlib

import torch

from nlpfw.errors import DeviceError


def resolve_device(name: str) -> torch.device:
    """`auto`, `cpu`, `mps`, `cuda` or `cuda:N`; raise `DeviceError` if it is not on this machine."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name == "cpu":
        return torch.device("cpu")
    if name == "mps":
        if not torch.backends.mps.is_available():
            raise DeviceError("trainer.device: 'mps' requested, but Apple MPS is not available here; use 'auto' or 'cpu'")
        return torch.device("mps")
    if name == "cuda" or name.startswith("cuda:"):
        if not torch.cuda.is_available():
            raise DeviceError(f"trainer.device: {name!r} requested, but CUDA is not available here; use 'auto' or 'cpu'")
        device = torch.device(name)
        count = torch.cuda.device_count()
        if device.index is not None and device.index >= count:
            raise DeviceError(f"trainer.device: {name!r} requested, but this machine has {count} CUDA device(s): cuda:0..cuda:{count - 1}")
        return device
    raise DeviceError(f"trainer.device: unknown device {name!r}; use auto, cpu, mps, cuda or cuda:N")


def amp_dtype(device: torch.device, enabled: bool) -> torch.dtype | None:
    """The autocast dtype for mixed precision: bf16 on CUDA where supported, else fp16; None off CUDA."""
    if not enabled or device.type != "cuda":
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def autocast(device: torch.device, dtype: torch.dtype | None) -> contextlib.AbstractContextManager:
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def synchronize(device: torch.device) -> None:
    """Wait for queued device work, so that wall-clock timings are true."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()
