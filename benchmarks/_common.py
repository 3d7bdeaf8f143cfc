"""What the speed benchmarks share: a bert-base-sized model built offline from the real
bert-base-chinese vocabulary (random weights), CLUENER2020 encoded by nlpfw, and printing.

Run them from the repository root in the `make install` environment (.venv), under the CPU
lock on shared machines:  flock /tmp/nlpfw-cpu.lock .venv/bin/python benchmarks/NAME.py
"""

from __future__ import annotations

import json
import os
import platform
import shlex
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parent.parent
BERT_BASE = {  # bert-base-chinese's architecture (see the vocabulary folder's README)
    "hidden_size": 768, "num_layers": 12, "num_heads": 12, "intermediate_size": 3072,
    "max_position_embeddings": 512,
}  # fmt: skip


def data_root() -> Path:
    from nlpfw.data import data_root as default

    root = Path(os.environ.get("NLPFW_DATA_ROOT") or ROOT.parent / "shared" / "data")
    return root if (root / "cluener").is_dir() else default()


def command() -> str:
    """The exact command that ran this benchmark."""
    return " ".join(shlex.quote(a) for a in [Path(sys.executable).name, *sys.argv])


def header(title: str) -> None:
    from nlpfw.device import cpu_has_bf16_units

    print(f"== {title}")
    print(f"$ {command()}")
    print(f"CPU class: {isa_class()}; {cpu_class()}")
    print(
        f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, "
        f"bf16 matrix units: {cpu_has_bf16_units()}, torch {torch.__version__}, python {platform.python_version()}"
    )


SIZES = ("bert-base", "quickstart")


def recipe(decoder: str = "crf.v1", size: str = "bert-base", extra: Sequence[str] = (), **trainer: Any) -> Any:
    """The quickstart recipe at bert-base size (batch 24, the reference's learning rates), or
    as it is (`size="quickstart"`: 2 layers, 128 wide, batch 32): CLUENER, bert-base-chinese's
    vocabulary."""
    from nlpfw.plugins import build_registry, get_plugin_manager
    from nlpfw.recipe import load_recipe

    registry = build_registry(get_plugin_manager(load_entrypoints=False))
    overrides = [f"decoder.type={decoder}"]
    if size == "bert-base":
        overrides += [f"encoder.{k}={v}" for k, v in BERT_BASE.items()]
        overrides += ["decoder.lr=5e-5", "trainer.lr=3e-5", "trainer.batch_size=24"]
    overrides += [f"trainer.{k}={str(v).lower() if isinstance(v, bool) else v}" for k, v in trainer.items()]
    overrides += list(extra)  # `--set`-style overrides, last
    return load_recipe(ROOT / "recipes" / "quickstart.toml", registry, overrides), registry


def build(recipe: Any, splits: tuple[str, ...] = ("train", "dev")) -> tuple[Any, Any, Any]:
    """(Model, task, {split: EncodedSplit}) for a recipe, from the corpus cache."""
    from nlpfw.cache import prepare_corpus
    from nlpfw.corpus import window_settings
    from nlpfw.model import Model, build_decoder
    from nlpfw.trainer import set_seed

    root = data_root()
    dataset = recipe.dataset.component.cls(recipe.dataset.config, root)
    set_seed(recipe.trainer.seed)
    encoder = recipe.encoder.component.cls.from_config(recipe.encoder.config, root)
    window, stride = window_settings(recipe.trainer.window, recipe.trainer.stride, encoder.max_chars)
    corpus = prepare_corpus(recipe.task, recipe.dataset, dataset, encoder, splits, window, stride, True)
    decoder = build_decoder(recipe.decoder, encoder, corpus.task)
    return Model(encoder, decoder), corpus.task, corpus.splits


def timed(fn: Callable[[], Any], repeat: int, warmup: int = 1) -> float:
    """Seconds per call of `fn`, after `warmup` untimed calls."""
    for _ in range(warmup):
        fn()
    start = time.perf_counter()
    for _ in range(repeat):
        fn()
    return (time.perf_counter() - start) / repeat


def matmul_rate(dtype: torch.dtype, n: int = 2048, repeat: int = 5) -> float:
    """FLOP/s of one n x n x n matmul in `dtype`: the practical limit of this machine."""
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    return 2 * n**3 / timed(lambda: a @ b, repeat, warmup=2)


def isa_class(flags: set[str] | None = None) -> str:
    """The CPU's class for the speed tables: `AMX`, `AVX-512 (bf16)`, `AVX-512`, `AVX2` or
    `below AVX2`, from /proc/cpuinfo's flags; `(emulated)` when ATEN_CPU_CAPABILITY or
    DNNL_MAX_CPU_ISA caps what torch uses below what the CPU has."""
    if flags is None:
        try:
            text = Path("/proc/cpuinfo").read_text()
        except OSError:
            text = ""
        flags = set(next((line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags")), []))
    if "amx_bf16" in flags or "amx_tile" in flags:
        found = "AMX"
    elif "avx512f" in flags:
        found = "AVX-512 (bf16)" if "avx512_bf16" in flags else "AVX-512"
    elif "avx2" in flags:
        found = "AVX2"
    else:
        found = "below AVX2" if flags else "unknown (no /proc/cpuinfo)"
    capped = os.environ.get("ATEN_CPU_CAPABILITY") or os.environ.get("DNNL_MAX_CPU_ISA")
    return f"{found}; torch capped at {capped} (emulated class)" if capped else found


def cpu_class() -> str:
    """The CPU's model name and its vector/matrix extensions (AMX, AVX-512, AVX2), from lscpu."""
    import subprocess

    try:
        info = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return platform.processor() or platform.machine()
    fields = dict(line.split(":", 1) for line in info.splitlines() if ":" in line)
    name = fields.get("Model name", platform.machine()).strip()
    flags = set(fields.get("Flags", "").split())
    extensions = [f for f in ("amx_bf16", "amx_int8", "avx512f", "avx512_vnni", "avx512_bf16", "avx_vnni", "avx2") if f in flags]
    return f"{name} ({os.cpu_count()} cores; {', '.join(extensions) or 'no AVX2'})"


def timed_training(recipe: Any) -> tuple[Any, Any, list[float], float]:
    """Train `recipe` on the CPU through nlpfw's own Trainer, evaluation skipped (the speed
    benchmarks time training steps): (the trainer, the training split, the clock after each
    optimizer step, the clock when the trainer was made)."""
    from rich.console import Console

    from nlpfw.device import amp_dtype
    from nlpfw.trainer import Trainer

    model, task, splits = build(recipe)
    stamps: list[float] = []

    class Timed(Trainer):
        def _step(self) -> None:
            super()._step()
            stamps.append(time.perf_counter())

        def evaluate(self, dev):
            return {"scores": {"overall": {"f1": 0.0}}, "speed": {}, "dev_loss": 0.0}

    device = torch.device("cpu")
    start = time.perf_counter()
    trainer = Timed(model, task, recipe.trainer, device, amp_dtype(device, recipe.trainer.amp), Console(quiet=True))
    trainer.fit(splits["train"], splits["dev"], lambda history: None)
    return trainer, splits["train"], stamps, start


RESULT = "RESULT "  # the line a fresh run prints its figures on, as JSON


def print_result(result: dict) -> None:
    """Hand a fresh run's figures back to `fresh_runs`."""
    print(RESULT + json.dumps(result))


def fresh_runs(script: str, variants: dict[str, list[str]], rounds: int) -> dict[str, list[dict]]:
    """Run `script` with each variant's arguments in a fresh process, `rounds` times, the
    variants alternating round by round (so that drift in the machine's speed hits all of
    them): each variant's `print_result` figures, one per round."""
    results: dict[str, list[dict]] = {name: [] for name in variants}
    for _ in range(rounds):
        for name, arguments in variants.items():
            output = subprocess.run([sys.executable, script, *arguments], capture_output=True, text=True, check=True).stdout
            results[name].append(json.loads(output.split(RESULT, 1)[1]))
    return results
