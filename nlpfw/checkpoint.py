"""Training checkpoints: everything needed to continue a run exactly where it stopped.

A checkpoint is the folder `RUN_DIR/checkpoint/`:

    model.safetensors   the weights (safetensors: loading runs no code)
    state.pt            optimizer, scheduler and scaler states, RNG states, the position in
                        the epoch and the history; read with `torch.load(weights_only=True)`
    meta.json           epoch, batch and step, for people

It is written into a temporary folder beside the old one and swapped in with renames, so a
crash at any moment leaves a complete checkpoint (the new one, or the one before).
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import safetensors.torch
import torch

from nlpfw.errors import NlpfwError

FOLDER = "checkpoint"
FORMAT = 1


class CheckpointError(NlpfwError):
    """A checkpoint is missing, unreadable or does not fit the run."""


@dataclass
class Position:
    """Where training stands: the next batch to train is batch `batch` of epoch `epoch`."""

    epoch: int = 1
    batch: int = 0
    step: int = 0  # optimizer steps taken
    stale: int = 0  # evaluations since the best one
    epoch_loss: float = 0.0  # sum of the read-out batch losses of this epoch
    running: float = 0.0  # batch losses since the last read-out
    seen: int = 0  # batches since the last read-out


@dataclass
class RandomState:
    """Every random generator training draws from, captured at one moment."""

    torch: torch.Tensor
    cuda: list[torch.Tensor]
    python: Any
    numpy: Any
    loader: torch.Tensor  # the shuffling generator's state at the start of the epoch

    @classmethod
    def capture(cls, loader_state: torch.Tensor) -> RandomState:
        kind, keys, pos, has_gauss, gauss = np.random.get_state(legacy=True)  # type: ignore[misc]
        return cls(
            torch=torch.get_rng_state(),
            cuda=torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            python=random.getstate(),
            numpy=(kind, keys.tolist(), pos, has_gauss, gauss),
            loader=loader_state.clone(),
        )

    def restore(self) -> None:
        torch.set_rng_state(self.torch)
        if self.cuda and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(self.cuda)
        version, internal, gauss = self.python
        random.setstate((version, tuple(internal), gauss))
        kind, keys, pos, has_gauss, cached = self.numpy
        np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))


@dataclass
class Checkpoint:
    position: Position
    rng: RandomState
    optimizer: dict[str, Any]
    scheduler: dict[str, Any]
    scaler: dict[str, Any]
    history: dict[str, Any]
    callbacks: list[dict[str, Any]] = field(default_factory=list)  # each callback's state_dict, in order
    weights: Path = field(default=Path())


def save(run_dir: Path, model: torch.nn.Module, checkpoint: Checkpoint) -> Path:
    """Write `run_dir/checkpoint/` atomically (temporary folder, then renames), then swap in
    the model folder staged for the epoch this checkpoint records as best (nlpfw.rundir)."""
    from nlpfw import io, rundir

    target = run_dir / FOLDER
    partial = run_dir / f".{FOLDER}.tmp-{os.getpid()}"
    best = (checkpoint.history.get("best") or {}).get("epoch")
    try:
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir(parents=True)
        safetensors.torch.save_model(model, str(partial / "model.safetensors"))
        io.fault_point("checkpoint weights written")
        state = {
            "format": FORMAT,
            "position": asdict(checkpoint.position),
            "rng": asdict(checkpoint.rng),
            "optimizer": checkpoint.optimizer,
            "scheduler": checkpoint.scheduler,
            "scaler": checkpoint.scaler,
            "history": json.dumps(checkpoint.history),
            "callbacks": checkpoint.callbacks,
        }
        torch.save(state, partial / "state.pt")
        io.fault_point("checkpoint state written")
        meta = {**asdict(checkpoint.position), "best_epoch": best, "written": time.strftime("%Y-%m-%d %H:%M:%S")}
        (partial / "meta.json").write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
        mode = 0o666 & ~io._umask()
        for file in partial.iterdir():
            os.chmod(file, mode)  # safetensors writes 0600; the run's other files are 0644
            with open(file, "rb") as stream:
                os.fsync(stream.fileno())
        io.sync_folder(partial)
    except (OSError, RuntimeError) as error:
        shutil.rmtree(partial, ignore_errors=True)
        rundir.commit_model(run_dir, None)  # a model staged for this checkpoint goes with it
        raise io.WriteError(f"cannot write the checkpoint {target}: {io.reason(error, run_dir)}") from None
    except BaseException as error:
        shutil.rmtree(partial, ignore_errors=True)
        rundir.commit_model(run_dir, None)
        if type(error).__name__ == "SafetensorError":
            raise io.WriteError(f"cannot write the checkpoint {target}: {io.reason(error, run_dir)}") from None
        raise
    io.fault_point("checkpoint complete")
    old = run_dir / f".{FOLDER}.old-{os.getpid()}"
    if target.exists():
        target.rename(old)
        io.fault_point("checkpoint moved aside")
    partial.rename(target)
    io.fault_point("checkpoint swapped in")
    io.sync_folder(run_dir)
    shutil.rmtree(old, ignore_errors=True)
    rundir.commit_model(run_dir, best)
    return target


def best_epoch(run_dir: Path) -> int | None:
    """The epoch the run's checkpoint records as best (None: no checkpoint or no evaluation)."""
    folder = find(run_dir)
    if folder is None:
        return None
    try:
        meta = json.loads((folder / "meta.json").read_text(encoding="utf-8"))
        if "best_epoch" in meta:
            return meta["best_epoch"]
        return (load(run_dir).history.get("best") or {}).get("epoch")
    except (OSError, ValueError, CheckpointError):
        return None


def find(run_dir: Path) -> Path | None:
    """The run's checkpoint folder; after a crash between the two renames, the previous one."""
    if (run_dir / FOLDER / "state.pt").is_file():
        return run_dir / FOLDER
    previous = sorted(run_dir.glob(f".{FOLDER}.old-*"), key=lambda p: p.stat().st_mtime)
    return previous[-1] if previous else None


def require(run_dir: Path) -> Path:
    """The run's checkpoint folder, or `CheckpointError` when it has none."""
    folder = find(run_dir)
    if folder is None:
        if not run_dir.is_dir():
            what = "is not a folder"
        elif (run_dir / FOLDER).is_dir():
            what = f"has a {FOLDER}/ with no state.pt in it (an incomplete checkpoint)"
        else:
            what = f"has no {FOLDER}/"
        raise CheckpointError(f"--resume: {run_dir} {what}: no checkpoint to resume from; give a run folder "
                              "that was interrupted, or start a new run without --resume")  # fmt: skip
    return folder


def load(run_dir: Path) -> Checkpoint:
    """Read the run's checkpoint, or raise `CheckpointError` saying what is wrong."""
    folder = require(run_dir)
    try:
        state = torch.load(folder / "state.pt", map_location="cpu", weights_only=True)
        if state.get("format") != FORMAT:
            raise ValueError(f"format {state.get('format')!r}, expected {FORMAT}")
        rng = state["rng"]
        return Checkpoint(
            position=Position(**state["position"]),
            rng=RandomState(**rng),
            optimizer=state["optimizer"],
            scheduler=state["scheduler"],
            scaler=state["scaler"],
            history=json.loads(state["history"]),
            callbacks=state.get("callbacks", []),
            weights=folder / "model.safetensors",
        )
    except Exception as error:  # unpickling, a truncated file, a missing key: all mean "corrupt"
        raise CheckpointError(
            f"checkpoint {folder} is corrupt or unreadable ({type(error).__name__}: {_first_line(error)}); "
            f"delete {folder} to start the run over, or resume another run"
        ) from None


def _first_line(error: BaseException) -> str:
    """The cause without torch's advice (a refused pickle suggests `weights_only=False`,
    which would run the code the check refused)."""
    text = str(error).strip()
    if "Weights only load failed" in text:
        unsupported = re.search(r"Unsupported global: GLOBAL [\w.]+", text)
        return "it holds Python objects that a checkpoint never holds" + (f" ({unsupported.group()})" if unsupported else "")
    return text.splitlines()[0] if text else ""


def load_weights(model: torch.nn.Module, checkpoint: Checkpoint) -> None:
    try:
        safetensors.torch.load_model(model, str(checkpoint.weights), device="cpu")
    except Exception as error:
        raise CheckpointError(
            f"checkpoint weights {checkpoint.weights} do not load ({type(error).__name__}: {error}); "
            "the file is corrupt, or the recipe changed since the run started"
        ) from None
