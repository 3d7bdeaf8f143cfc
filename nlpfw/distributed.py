"""Data-parallel training with PyTorch's own engine: `torch.distributed` + DistributedDataParallel,
launched by `torchrun` (or `nlpfw run --nproc N`, which runs torchrun for one machine).

Each process (rank) holds a full copy of the model and trains on its share of every batch;
DDP averages the gradients, so all ranks step alike. `trainer.batch_size` is the global batch,
whatever the number of processes: a recipe means the same training on 1 GPU or 8, and its
learning rate needs no scaling. Evaluation is sharded by text and the predictions gathered, so
dev metrics equal a single process's exactly. Only rank 0 writes files and draws progress.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from nlpfw.errors import NlpfwError


@dataclass(frozen=True)
class Context:
    """This process's place in the run: rank `rank` of `world` (`local_rank` on its machine)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        """Whether this process writes files and draws progress (rank 0)."""
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world > 1

    def barrier(self) -> None:
        if self.active:
            dist.barrier()

    def broadcast(self, value: Any) -> Any:
        """Rank 0's `value`, on every rank."""
        if not self.active:
            return value
        box = [value]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def gather(self, value: Any) -> list[Any]:
        """Every rank's `value`, in rank order, on every rank."""
        if not self.active:
            return [value]
        out: list[Any] = [None] * self.world
        dist.all_gather_object(out, value)
        return out

    def all_reduce(self, tensor: torch.Tensor, op: str = "sum") -> torch.Tensor:
        """`tensor` reduced over the ranks (in place): `sum`, `min` or `max`."""
        if self.active:
            dist.all_reduce(tensor, op={"sum": dist.ReduceOp.SUM, "min": dist.ReduceOp.MIN, "max": dist.ReduceOp.MAX}[op])
        return tensor


SINGLE = Context()


def setup() -> Context:
    """Join the process group that `torchrun` describes in the environment (`WORLD_SIZE`,
    `RANK`, `LOCAL_RANK`, `MASTER_ADDR`, ...), or return the single-process context."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return SINGLE
    context = Context(int(os.environ["RANK"]), world, int(os.environ.get("LOCAL_RANK", "0")))
    if not dist.is_initialized():
        cuda = torch.cuda.is_available()
        if cuda:
            torch.cuda.set_device(context.local_rank % torch.cuda.device_count())
        dist.init_process_group(backend="nccl" if cuda else "gloo")
    return context


def teardown(context: Context) -> None:
    if context.active and dist.is_initialized():
        dist.destroy_process_group()


def rank_device(context: Context, device: torch.device) -> torch.device:
    """Each rank on its own GPU of its machine (`cuda` -> `cuda:LOCAL_RANK`); CPU as it is."""
    if context.active and device.type == "cuda":
        return torch.device("cuda", context.local_rank % torch.cuda.device_count())
    return device


def launch(nproc: int, args: Sequence[str]) -> int:
    """Run `nlpfw ARGS` in `nproc` processes on this machine through torchrun; its exit code."""
    if not dist.is_available():
        raise NlpfwError("--nproc needs torch.distributed, which this build of torch lacks")
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
        "-m", "nlpfw", *args,
    ]  # fmt: skip
    from nlpfw.device import omp_num_threads, threads_per_process

    # each rank's share of the cores this process may use (torchrun would give each rank 1 thread)
    threads = omp_num_threads() or threads_per_process(nproc)
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    report = TorchrunReport()
    process = subprocess.Popen(command, env=env, stderr=subprocess.PIPE, text=True, errors="replace")
    assert process.stderr is not None
    interrupted = False
    while True:
        try:
            for line in process.stderr:
                report.feed(line)
            break
        except KeyboardInterrupt:  # torchrun passes Ctrl-C on to the ranks, which save a checkpoint
            interrupted = True
    code = process.wait()
    report.show_root_cause()
    launch.first_failure = report.first_failure()  # type: ignore[attr-defined]
    return 130 if interrupted else code


class TorchrunReport:
    """The ranks' stderr passes through; torchrun's own failure report (its log lines, its
    traceback and the ChildFailedError summary, ~40-90 lines) is held back, and only its root
    cause is kept, so the ranks' one-line errors stay on screen. A rank's own traceback
    (`[rankN]: ...` lines) is shown only if that rank failed first: the others' are the echo
    of its failure ("Connection closed by peer")."""

    AGENT = re.compile(r"^[EWI]\d{4} \d\d:\d\d:\d\d\.\d+ +\d+ .*torch/distributed/elastic/")
    RANK = re.compile(r"^\[rank(\d+)\]:")

    def __init__(self) -> None:
        self.held: list[str] = []
        self.ranks: dict[str, list[str]] = {}

    def feed(self, line: str) -> None:
        rank = self.RANK.match(line)
        if rank is not None:
            self.ranks.setdefault(rank.group(1), []).append(line)
        elif self.held or self.AGENT.match(line):
            self.held.append(line)
        else:
            sys.stderr.write(line)
            sys.stderr.flush()

    def show_root_cause(self) -> None:
        """The held traceback of the rank that failed first (all of them if torchrun said none)."""
        cause = self._cause()
        for rank, lines in self.ranks.items():
            if cause is None or rank == cause[0]:
                sys.stderr.writelines(lines)
        sys.stderr.flush()

    ECHOES = ("Connection closed by peer", "Connection reset by peer")
    FAILURE = re.compile(r"rank\s*:\s*(\d+)[^\n]*\n\s*exitcode\s*:\s*(-?\d+)")

    def _failures(self) -> list[tuple[str, int]]:
        """(rank, exit code) of each failure in torchrun's summary, its root cause first."""
        others, _, root = "".join(self.held).partition("Root Cause")
        return [(rank, int(code)) for rank, code in self.FAILURE.findall(root) + self.FAILURE.findall(others)]

    def _echo(self, rank: str) -> bool:
        """Whether the rank failed only because another rank's failure closed its connections."""
        return any(echo in line for line in self.ranks.get(rank, []) for echo in self.ECHOES)

    def _cause(self) -> tuple[str, int] | None:
        """The failure to name: torchrun's root cause, unless that is a rank whose connection
        another's failure closed (torchrun names whichever exits first: a race), then the first
        failure that is not such an echo."""
        failures = self._failures()
        for rank, code in failures:
            if not self._echo(rank):
                return rank, code
        return failures[0] if failures else None

    def first_failure(self) -> str | None:
        """`rank 1 (killed by SIGKILL)` or `rank 0 (exit code 1)`: torchrun's root cause, or
        the rank behind it when that is an echo (then without a signal torchrun itself sent)."""
        cause = self._cause()
        if cause is None:
            return None
        rank, number = cause
        if number < 0:
            if self._failures()[0][0] != rank:
                return f"rank {rank}"  # stopped by torchrun after the echo; its own error is above
            try:
                return f"rank {rank} (killed by {signal.Signals(-number).name})"
            except ValueError:
                pass
        return f"rank {rank} (exit code {number})"
