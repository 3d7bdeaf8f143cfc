"""Device choice: `trainer.device` names a device this machine has, or fails with a hint."""

from __future__ import annotations

import contextlib
import re

import pytest
import torch

from nlpfw.device import amp_dtype, autocast, resolve_device
from nlpfw.errors import DeviceError

HAS_CUDA = torch.cuda.is_available()
HAS_MPS = torch.backends.mps.is_available()


@pytest.mark.skipif(HAS_CUDA or HAS_MPS, reason="auto picks the accelerator on this machine")
def test_auto_is_cpu_without_accelerators() -> None:
    assert resolve_device("auto") == torch.device("cpu")


@pytest.mark.skipif(not HAS_CUDA, reason="needs CUDA")
def test_auto_prefers_cuda() -> None:
    assert resolve_device("auto") == torch.device("cuda")


def test_cpu() -> None:
    assert resolve_device("cpu") == torch.device("cpu")


@pytest.mark.skipif(HAS_CUDA, reason="CUDA is available here")
@pytest.mark.parametrize("name", ["cuda", "cuda:0", "cuda:1"])
def test_cuda_without_cuda(name: str) -> None:
    expected = f"trainer.device: {name!r} requested, but CUDA is not available here; use 'auto' or 'cpu'"
    with pytest.raises(DeviceError, match=f"^{re.escape(expected)}$"):
        resolve_device(name)


@pytest.mark.skipif(not HAS_CUDA, reason="needs CUDA")
def test_cuda_index_beyond_the_devices() -> None:
    count = torch.cuda.device_count()
    expected = (
        f"trainer.device: 'cuda:{count}' requested, but this machine has {count} CUDA device(s): "
        f"cuda:0..cuda:{count - 1}"
    )
    with pytest.raises(DeviceError, match=f"^{re.escape(expected)}$"):
        resolve_device(f"cuda:{count}")


@pytest.mark.skipif(HAS_MPS, reason="Apple MPS is available here")
def test_mps_without_mps() -> None:
    expected = "trainer.device: 'mps' requested, but Apple MPS is not available here; use 'auto' or 'cpu'"
    with pytest.raises(DeviceError, match=f"^{re.escape(expected)}$"):
        resolve_device("mps")


@pytest.mark.parametrize("name", ["tpu", "gpu", "CPU", ""])
def test_unknown_device(name: str) -> None:
    expected = f"trainer.device: unknown device {name!r}; use auto, cpu, mps, cuda or cuda:N"
    with pytest.raises(DeviceError, match=f"^{re.escape(expected)}$"):
        resolve_device(name)


@pytest.mark.parametrize("enabled", [True, False])
def test_no_mixed_precision_on_cpu(enabled: bool) -> None:
    assert amp_dtype(torch.device("cpu"), enabled) is None
    assert isinstance(autocast(torch.device("cpu"), None), contextlib.nullcontext)


@pytest.mark.skipif(not HAS_CUDA, reason="needs CUDA")
def test_mixed_precision_on_cuda() -> None:
    cuda = torch.device("cuda")
    expected = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    assert amp_dtype(cuda, True) is expected
    assert amp_dtype(cuda, False) is None
