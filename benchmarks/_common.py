"""What the speed benchmarks share: a bert-base-sized model built offline from the real
bert-base-chinese vocabulary (random weights), CLUENER2020 encoded by nlpfw, and printing.

Run them from the repository root in the `make install` environment (.venv), under the CPU
lock on shared machines:  flock /tmp/nlpfw-cpu.lock .venv/bin/python benchmarks/NAME.py
"""

from __future__ import annotations

import os
import platform
import shlex
import sys
import time
from collections.abc import Callable
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
    print(
        f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, "
        f"bf16 matrix units: {cpu_has_bf16_units()}, torch {torch.__version__}, python {platform.python_version()}"
    )


def recipe(decoder: str = "crf.v1", **trainer: Any) -> Any:
    """The quickstart recipe at bert-base size: CLUENER, bert-base-chinese's vocabulary."""
    from nlpfw.plugins import build_registry, get_plugin_manager
    from nlpfw.recipe import load_recipe

    registry = build_registry(get_plugin_manager(load_entrypoints=False))
    overrides = [f"encoder.{k}={v}" for k, v in BERT_BASE.items()]
    overrides += [f"decoder.type={decoder}", "decoder.lr=5e-5", "trainer.lr=3e-5", "trainer.batch_size=24"]
    overrides += [f"trainer.{k}={str(v).lower() if isinstance(v, bool) else v}" for k, v in trainer.items()]
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
