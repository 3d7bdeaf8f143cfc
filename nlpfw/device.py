"""Device choice: `auto` picks CUDA, then Apple MPS, then the CPU; or a device by name."""

from __future__ import annotations

import contextlib
import ctypes
import math
import os
import sys
from pathlib import Path

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
    """The autocast dtype for mixed precision: on CUDA bf16 where supported, else fp16 (with a
    gradient scaler); on a CPU with bf16 matrix units (AMX or AVX512-BF16) bf16; else None."""
    if not enabled:
        return None
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if device.type == "cpu" and cpu_has_bf16_units():
        return torch.bfloat16
    return None


def cpu_has_bf16_units() -> bool:
    """Whether this CPU multiplies bf16 matrices in hardware (Intel AMX or AVX512-BF16), where
    bf16 autocast runs several times faster than float32; elsewhere it would be emulated, slower."""
    checks = [getattr(torch.cpu, name, None) for name in ("_is_amx_tile_supported", "_is_avx512_bf16_supported")]
    return any(check() for check in checks if check is not None)


def available_cpus() -> int:
    """The CPU cores this process may use: its affinity mask, within a cgroup CPU quota."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        cores = os.cpu_count() or 1
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
        if quota != "max":
            cores = min(cores, max(1, math.ceil(int(quota) / int(period))))
    except (OSError, ValueError):
        pass
    return cores


def keep_freed_memory() -> bool:
    """Have glibc keep freed blocks of up to 32 MB for reuse instead of returning them to the
    system: a training step frees and reallocates the same large buffers (weight casts,
    gradients, activations), and mapping them afresh costs a page fault every 4 KB, which
    made a bert-base step on 2 cores about 20% slower. The process keeps its peak memory.
    Returns whether it applied (glibc only)."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        mmap_threshold, trim_threshold = -3, -1  # M_MMAP_THRESHOLD, M_TRIM_THRESHOLD (malloc.h)
        return bool(libc.mallopt(mmap_threshold, 32 << 20) and libc.mallopt(trim_threshold, 2**31 - 1))
    except (OSError, AttributeError):  # musl and others: no mallopt
        return False


def set_cpu_threads() -> int:
    """Use no more intra-op threads than the cores available (torch counts the host's cores,
    which in a container can be many more; oversubscribed threads slow every matmul down)."""
    cores = available_cpus()
    if torch.get_num_threads() > cores:
        torch.set_num_threads(cores)
    return torch.get_num_threads()


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
