"""Device choice: `trainer.device` names a device this machine has, or fails with a hint."""

from __future__ import annotations

import contextlib
import os
import re
from pathlib import Path

import pytest
import torch

from nlpfw.device import amp_dtype, autocast, available_cpus, cpu_has_bf16_units, resolve_device, set_cpu_threads
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


def test_cpu_mixed_precision_only_with_bf16_matrix_units(monkeypatch) -> None:
    cpu = torch.device("cpu")
    assert amp_dtype(cpu, False) is None
    assert isinstance(autocast(cpu, None), contextlib.nullcontext)
    for amx, avx512_bf16, expected in [(True, False, torch.bfloat16), (False, True, torch.bfloat16), (False, False, None)]:
        monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx)
        monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: avx512_bf16)
        assert amp_dtype(cpu, True) is expected
        assert amp_dtype(cpu, False) is None


@pytest.mark.parametrize(
    ("variable", "value", "units"),
    [("ATEN_CPU_CAPABILITY", "avx2", False), ("ATEN_CPU_CAPABILITY", "default", False),
     ("DNNL_MAX_CPU_ISA", "AVX2", False), ("DNNL_MAX_CPU_ISA", "avx512_core", False),
     ("DNNL_MAX_CPU_ISA", "AVX512_CORE_BF16", True), ("ATEN_CPU_CAPABILITY", "avx512", True)],
)  # fmt: skip
def test_an_isa_capped_below_bf16_means_no_bf16_units(monkeypatch, variable, value, units) -> None:
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: True)  # the hardware has them
    monkeypatch.delenv("ATEN_CPU_CAPABILITY", raising=False)
    monkeypatch.delenv("DNNL_MAX_CPU_ISA", raising=False)
    monkeypatch.setenv(variable, value)
    assert cpu_has_bf16_units() is units
    assert amp_dtype(torch.device("cpu"), True) is (torch.bfloat16 if units else None)


def test_cpu_bf16_units_match_the_cpu_flags(monkeypatch) -> None:
    monkeypatch.delenv("ATEN_CPU_CAPABILITY", raising=False)
    monkeypatch.delenv("DNNL_MAX_CPU_ISA", raising=False)
    flags = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").is_file() else ""
    if not flags:
        pytest.skip("no /proc/cpuinfo here")
    has_units = bool(re.search(r"\b(amx_bf16|avx512_bf16)\b", flags))
    assert cpu_has_bf16_units() is has_units


def test_cpu_threads_stay_within_the_available_cores(monkeypatch) -> None:
    before = torch.get_num_threads()
    try:
        monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0}, raising=False)
        torch.set_num_threads(4)
        assert available_cpus() == 1
        assert set_cpu_threads() == 1 and torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


def test_cpu_autocast_keeps_the_crf_in_float32() -> None:
    from nlpfw_plugins.crf import CrfConfig, CrfDecoder

    decoder = CrfDecoder(CrfConfig(), 8, [f"t{i}" for i in range(5)])
    hidden = torch.randn(2, 4, 8)
    mask = torch.ones(2, 4, dtype=torch.bool)
    with autocast(torch.device("cpu"), torch.bfloat16):
        assert decoder.classifier(hidden).dtype == torch.bfloat16  # autocast is on
        loss = decoder.loss(hidden, torch.zeros(2, 4, dtype=torch.long), mask)
    assert loss.dtype == torch.float32


@pytest.mark.skipif(not HAS_CUDA, reason="needs CUDA")
def test_mixed_precision_on_cuda() -> None:
    cuda = torch.device("cuda")
    expected = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    assert amp_dtype(cuda, True) is expected
    assert amp_dtype(cuda, False) is None
