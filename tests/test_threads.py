"""Threads per process follow the cores the process may use: its affinity mask, its control
group's CPU quota (v2 and v1), divided among the local ranks; `trainer.threads` and
`OMP_NUM_THREADS` win. The machine's own files are replaced by fakes."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from nlpfw import device
from nlpfw.device import (
    available_cpus,
    cgroup_cpu_quota,
    cpu_threads,
    explicit_threads,
    set_cpu_threads,
    threads_per_process,
)


@pytest.fixture(autouse=True)
def _keep_threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def machine(monkeypatch, tmp_path: Path, cores: int, membership: str | None) -> Path:
    """A fake host: `cores` in the affinity mask, /proc/self/cgroup holding `membership`, and an
    empty cgroup mount under tmp_path (returned) for the test to fill."""
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(cores)), raising=False)
    fs = tmp_path / "cgroup"
    fs.mkdir(parents=True)
    proc = tmp_path / "proc-self-cgroup"
    if membership is not None:
        proc.write_text(membership)
    monkeypatch.setattr(device, "CGROUP_FS", fs)
    monkeypatch.setattr(device, "CGROUP_MEMBERSHIP", proc)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    return fs


def test_affinity_alone(monkeypatch, tmp_path) -> None:
    machine(monkeypatch, tmp_path, 6, "0::/\n")
    assert cgroup_cpu_quota() is None
    assert available_cpus() == 6


def test_cgroup_v2_quota_in_the_namespace_root(monkeypatch, tmp_path) -> None:
    fs = machine(monkeypatch, tmp_path, 16, "0::/\n")
    write(fs / "cpu.max", "250000 100000\n")  # docker --cpus 2.5
    assert cgroup_cpu_quota() == 2.5
    assert available_cpus() == 3  # rounded up
    write(fs / "cpu.max", "max 100000\n")
    assert cgroup_cpu_quota() is None and available_cpus() == 16


def test_cgroup_v2_smallest_quota_along_the_path(monkeypatch, tmp_path) -> None:
    fs = machine(monkeypatch, tmp_path, 32, "0::/user.slice/job.scope\n")
    write(fs / "user.slice" / "cpu.max", "400000 100000\n")  # the parent allows 4 cores
    write(fs / "user.slice" / "job.scope" / "cpu.max", "max 100000\n")  # the job itself: no limit
    assert cgroup_cpu_quota() == 4.0
    assert available_cpus() == 4


def test_cgroup_v1_cfs_quota(monkeypatch, tmp_path) -> None:
    fs = machine(monkeypatch, tmp_path, 8, "4:memory:/x\n3:cpu,cpuacct:/docker/abc\n0::/\n")
    write(fs / "cpu,cpuacct" / "docker" / "abc" / "cpu.cfs_quota_us", "150000\n")
    write(fs / "cpu,cpuacct" / "docker" / "abc" / "cpu.cfs_period_us", "100000\n")
    write(fs / "cpu,cpuacct" / "cpu.cfs_quota_us", "-1\n")  # the root: none
    write(fs / "cpu,cpuacct" / "cpu.cfs_period_us", "100000\n")
    assert cgroup_cpu_quota() == 1.5
    assert available_cpus() == 2


def test_a_quota_never_raises_the_affinity(monkeypatch, tmp_path) -> None:
    fs = machine(monkeypatch, tmp_path, 2, "0::/\n")
    write(fs / "cpu.max", "800000 100000\n")
    assert available_cpus() == 2


def test_unreadable_cgroup_files_mean_no_quota(monkeypatch, tmp_path) -> None:
    fs = machine(monkeypatch, tmp_path, 4, "0::/\n")
    write(fs / "cpu.max", "garbage\n")
    assert cgroup_cpu_quota() is None and available_cpus() == 4
    machine(monkeypatch, tmp_path / "none", 4, None)  # no /proc/self/cgroup at all
    assert cgroup_cpu_quota() is None


@pytest.mark.parametrize(("cores", "local", "expected"), [(8, "1", 8), (8, "2", 4), (8, "3", 2), (2, "4", 1), (6, "x", 6)])
def test_local_ranks_share_the_cores(monkeypatch, tmp_path, cores, local, expected) -> None:
    machine(monkeypatch, tmp_path, cores, "0::/\n")
    monkeypatch.setenv("LOCAL_WORLD_SIZE", local)
    assert threads_per_process() == expected
    torch.set_num_threads(cores)  # torch started with all of them
    assert set_cpu_threads() == expected and torch.get_num_threads() == expected


def test_quota_and_ranks_together(monkeypatch, tmp_path) -> None:
    fs = machine(monkeypatch, tmp_path, 64, "0::/\n")
    write(fs / "cpu.max", "400000 100000\n")
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    torch.set_num_threads(8)
    assert cpu_threads() == (2, "4 cores available / 2 local processes")
    assert set_cpu_threads() == 2 and torch.get_num_threads() == 2


def test_omp_num_threads_wins(monkeypatch, tmp_path) -> None:
    machine(monkeypatch, tmp_path, 2, "0::/\n")
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    assert set_cpu_threads() == 3 and torch.get_num_threads() == 3
    monkeypatch.setenv("OMP_NUM_THREADS", "not a number")  # ignored, as OpenMP ignores it
    torch.set_num_threads(2)
    assert cpu_threads() == (1, "2 cores available / 2 local processes")


def test_trainer_threads_win_and_are_restored(monkeypatch, tmp_path) -> None:
    machine(monkeypatch, tmp_path, 2, "0::/\n")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    torch.set_num_threads(1)
    with explicit_threads(3):
        assert torch.get_num_threads() == 3
        assert set_cpu_threads() == 3 and cpu_threads()[1] == "trainer.threads"
    assert torch.get_num_threads() == 1
    with explicit_threads(None):
        assert set_cpu_threads() == 1 and cpu_threads()[1] == "OMP_NUM_THREADS"


def test_nproc_gives_each_rank_its_share(monkeypatch, tmp_path) -> None:
    """`nlpfw run --nproc N` hands torchrun OMP_NUM_THREADS = cores / N (torchrun's own default is 1)."""
    from nlpfw import distributed

    machine(monkeypatch, tmp_path, 8, "0::/\n")
    seen = {}

    class Done(Exception):
        pass

    def popen(command, env, **kwargs):
        seen.update(env)
        raise Done

    monkeypatch.setattr(distributed.subprocess, "Popen", popen)
    with pytest.raises(Done):
        distributed.launch(4, ["run", "x.toml"])
    assert seen["OMP_NUM_THREADS"] == "2"
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    with pytest.raises(Done):
        distributed.launch(4, ["run", "x.toml"])
    assert seen["OMP_NUM_THREADS"] == "3"
