"""Device choice: `auto` picks CUDA, then Apple MPS, then the CPU; or a device by name."""

from __future__ import annotations

import contextlib
import ctypes
import math
import os
import sys
from collections.abc import Iterator
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
    if isa_capped_below_bf16():
        return False
    checks = [getattr(torch.cpu, name, None) for name in ("_is_amx_tile_supported", "_is_avx512_bf16_supported")]
    return any(check() for check in checks if check is not None)


BELOW_BF16_ISAS = ("SSE41", "AVX", "AVX2", "AVX2_VNNI", "AVX2_VNNI_2", "AVX512_CORE", "AVX512_CORE_VNNI")


def isa_capped_below_bf16() -> bool:
    """Whether the environment tells torch to use less than the CPU has, below bf16 matrix
    units: `ATEN_CPU_CAPABILITY=avx2` (or `default`) or `DNNL_MAX_CPU_ISA=AVX2` (or another ISA
    without bf16), as when an AVX2-only machine is approximated on a newer one."""
    capability = os.environ.get("ATEN_CPU_CAPABILITY", "").strip().lower()
    isa = os.environ.get("DNNL_MAX_CPU_ISA", "").strip().upper()
    return capability in ("default", "avx2") or isa in BELOW_BF16_ISAS


CGROUP_FS = Path("/sys/fs/cgroup")
CGROUP_MEMBERSHIP = Path("/proc/self/cgroup")


def affinity_cpus() -> int:
    """The cores the scheduler lets this process run on (its affinity mask: taskset, numactl,
    a container's cpuset); the machine's count where there is no mask (macOS, Windows)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def cgroup_cpu_quota(fs: Path | None = None, membership: Path | None = None) -> float | None:
    """The cores this process's control group may keep busy (`docker --cpus`, Kubernetes CPU
    limits, systemd's CPUQuota): cgroup v2 `cpu.max`, or v1 `cpu.cfs_quota_us` over
    `cpu.cfs_period_us`, the smallest along the group's path up to the root; None: no quota."""
    fs, membership = fs or CGROUP_FS, membership or CGROUP_MEMBERSHIP
    try:
        lines = membership.read_text().splitlines()
    except OSError:
        lines = []
    limits: list[float] = []
    for line in lines:
        hierarchy, _, rest = line.partition(":")
        controllers, _, group = rest.partition(":")
        if hierarchy == "0" and controllers == "":  # v2: one unified hierarchy
            for folder in _up_to(fs, group):
                limits += _read_quota(folder / "cpu.max", None)
        elif "cpu" in controllers.split(","):  # v1: the cpu controller's own hierarchy
            for mount in (fs / controllers, fs / "cpu,cpuacct", fs / "cpu"):
                if mount.is_dir():
                    for folder in _up_to(mount, group):
                        limits += _read_quota(folder / "cpu.cfs_quota_us", folder / "cpu.cfs_period_us")
                    break
    if not lines:  # no membership file: the mount's root, v2 then v1
        limits += _read_quota(fs / "cpu.max", None) + _read_quota(fs / "cpu" / "cpu.cfs_quota_us", fs / "cpu" / "cpu.cfs_period_us")
    return min(limits) if limits else None


def _up_to(mount: Path, group: str) -> list[Path]:
    """`mount/group` and its parents up to `mount` (inside a container's cgroup namespace the
    group is `/`, and only the mount's root is there)."""
    parts = [part for part in group.strip("/").split("/") if part and part != ".."]
    return [mount.joinpath(*parts[:depth]) for depth in range(len(parts), -1, -1)]


def _read_quota(quota_file: Path, period_file: Path | None) -> list[float]:
    """[cores] from a v2 `cpu.max` (`QUOTA PERIOD`, `max` for none) or v1 quota and period
    files (-1 for none); [] when there is no quota or no such file."""
    try:
        fields = quota_file.read_text().split()
        quota, period = (fields[0], fields[1]) if period_file is None else (fields[0], period_file.read_text().split()[0])
        if quota in ("max", "-1") or int(quota) <= 0:
            return []
        return [int(quota) / int(period)]
    except (OSError, ValueError, IndexError, ZeroDivisionError):
        return []


def available_cpus() -> int:
    """The CPU cores this process may use: its affinity mask, within a cgroup CPU quota (rounded
    up: a quota of 1.5 cores keeps 2 threads busy part of the time)."""
    cores = affinity_cpus()
    quota = cgroup_cpu_quota()
    if quota is not None:
        cores = min(cores, max(1, math.ceil(quota)))
    return cores


def local_processes() -> int:
    """The processes of this run on this machine: torchrun's `LOCAL_WORLD_SIZE` (`nlpfw run
    --nproc N` starts N), 1 outside torchrun."""
    try:
        return max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    except ValueError:
        return 1


def threads_per_process(processes: int | None = None) -> int:
    """Intra-op threads for each of `processes` processes sharing this process's cores (default:
    the local ranks): the cores it may use divided among them, never below 1."""
    return max(1, available_cpus() // (processes or local_processes()))


def omp_num_threads() -> int | None:
    """`OMP_NUM_THREADS` when it holds a positive whole number (torch starts with it)."""
    try:
        value = int(os.environ.get("OMP_NUM_THREADS", "").strip())
    except ValueError:
        return None
    return value if value > 0 else None


_explicit_threads: int | None = None


@contextlib.contextmanager
def explicit_threads(threads: int | None) -> Iterator[None]:
    """Within the block, `set_cpu_threads` uses `threads` (a recipe's `trainer.threads`) as it
    is; the thread count before the block is restored after it."""
    global _explicit_threads
    before, saved = _explicit_threads, torch.get_num_threads()
    _explicit_threads = threads
    try:
        if threads is not None:
            torch.set_num_threads(threads)
        yield
    finally:
        _explicit_threads = before
        torch.set_num_threads(saved)


def cpu_threads() -> tuple[int, str]:
    """The intra-op threads a training process should use, and why: `trainer.threads` or
    `OMP_NUM_THREADS` as set; otherwise the cores this process may use (affinity, cgroup quota)
    divided by the local ranks, and no more than torch started with."""
    if _explicit_threads is not None:
        return _explicit_threads, "trainer.threads"
    omp = omp_num_threads()
    if omp is not None:
        return omp, "OMP_NUM_THREADS"
    cores, processes = available_cpus(), local_processes()
    share = max(1, cores // processes)
    why = f"{cores} core{'s' if cores != 1 else ''} available" + (f" / {processes} local processes" if processes > 1 else "")
    return min(share, torch.get_num_threads()), why


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
    """Set torch's intra-op threads as `cpu_threads` says and return the count: never more than
    the cores this process may use (torch counts the host's cores, which in a container can be
    many more; oversubscribed threads slow every matmul down several times)."""
    threads, _ = cpu_threads()
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
    return threads


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
