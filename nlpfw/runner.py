"""Assemble a recipe's task, dataset, encoder and decoder, train, and write the run folder.

The runner knows components only through the registry; it never imports a built-in plugin.
A run folder holds:

    recipe.toml      the resolved recipe (every default filled in)
    plugins.json     the plugins and versions that supplied each component, the environment
                     (versions, device, threads), the seed, the data files' sha256, the command to repeat it
    metrics.jsonl    one record per evaluation (scores, losses, timings)
    report.json      the best evaluation, the data summary and the published reference
    report.txt       the three result tables of the best evaluation
    report.md        the same in Markdown, the epochs, and the plots curves.png, labels.png
                     (see nlpfw.run_report; `nlpfw report RUN_DIR` rebuilds them)
    model/           the self-contained model (see nlpfw.model)
    checkpoint/      the latest training state, to resume from (see nlpfw.checkpoint)
"""

from __future__ import annotations

import platform
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.console import Console

from nlpfw import __version__, checkpoint, io, rundir
from nlpfw.cache import Corpus, file_digest, prepare_corpus
from nlpfw.distributed import SINGLE, Context, rank_device
from nlpfw.corpus import window_settings
from nlpfw.data import data_root as default_data_root
from nlpfw.device import amp_dtype, cpu_threads, explicit_threads, resolve_device, set_cpu_threads
from nlpfw.errors import DataError, RunDirError
from nlpfw.interfaces import Callback, Dataset
from nlpfw.model import Model, build_decoder, main_score, save_model
from nlpfw.plugins import PluginManager, plugin_records
from nlpfw.recipe import Recipe, Section
from nlpfw.registry import Registry
from nlpfw.report import metric_title, result_tables
from nlpfw.run_report import write_reports
from nlpfw.trainer import History, Trainer, set_seed


def default_output_dir(recipe_name: str, root: Path = Path("runs")) -> Path:
    """`runs/<recipe>-<time>`, made unique if two runs start in the same second."""
    base = root / f"{recipe_name}-{time.strftime('%Y%m%d-%H%M%S')}"
    candidate, n = base, 1
    while candidate.exists():
        n += 1
        candidate = base.with_name(f"{base.name}-{n}")
    return candidate


def latest_run(recipe_name: str, root: Path = Path("runs")) -> Path:
    """The newest `runs/<recipe>-*` folder that holds a checkpoint."""
    runs = [p for p in root.glob(f"{recipe_name}-*") if checkpoint.find(p) is not None]
    if not runs:
        raise RunDirError(f"--resume: no run of {recipe_name!r} with a checkpoint in {root}/; give the run folder")
    return max(runs, key=lambda p: checkpoint.find(p).stat().st_mtime)  # type: ignore[union-attr]


def environment(device: torch.device, context: Context = SINGLE) -> dict[str, Any]:
    import transformers

    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
    elif device.type == "cpu":
        threads = torch.get_num_threads()
        name = f"CPU {platform.machine()}, {threads} thread{'' if threads == 1 else 's'}"
    else:
        name = "Apple MPS"
    if context.active:
        name = f"{context.world} x {name}"
    return {
        "nlpfw": __version__,
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "numpy": np.__version__,
        "pytorch-crf": _version("pytorch-crf"),
        "platform": platform.platform(),
        "device": str(device),
        "device_name": name,
        "threads": torch.get_num_threads(),
        "threads_from": cpu_threads()[1] if device.type == "cpu" else None,
        "processes": context.world,
    }


def _version(distribution: str) -> str | None:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None


def data_files(dataset: Dataset, splits: Sequence[str]) -> dict[str, list[dict[str, str]]]:
    """The files each split was read from, with their sha256, so a rerun can check its data."""
    return {
        split: [{"path": str(path), "sha256": file_digest(Path(path))} for path in dataset.files(split) or ()]
        for split in splits
    }


def run(
    recipe: Recipe,
    output_dir: Path,
    registry: Registry,
    pm: PluginManager,
    console: Console,
    data_root: Path | None = None,
    use_cache: bool = True,
    resume: bool = False,
    context: Context = SINGLE,
) -> History:
    """Train the recipe and write the run folder; return the evaluation history.

    With `resume`, continue the run in `output_dir` from its checkpoint. In a distributed run
    (`context`) every rank trains and evaluates its share; only rank 0 writes files.
    `trainer.threads` applies for the run only; the caller's thread count is restored after.
    Without it, a CPU run uses the cores this process may use divided among the local ranks
    (`nlpfw.device.cpu_threads`)."""
    with explicit_threads(recipe.trainer.threads):
        return _run(recipe, output_dir, registry, pm, console, data_root, use_cache, resume, context)


def _run(
    recipe: Recipe,
    output_dir: Path,
    registry: Registry,
    pm: PluginManager,
    console: Console,
    data_root: Path | None,
    use_cache: bool,
    resume: bool,
    context: Context,
) -> History:
    saved = checkpoint.load(output_dir) if resume else None
    callbacks = build_callbacks(recipe, registry)  # before anything heavy: a missing package stops the run here
    data_root = data_root or default_data_root()
    device = rank_device(context, resolve_device(recipe.trainer.device))
    if device.type == "cpu":
        set_cpu_threads()  # before the environment records the count (the trainer keeps it)
    amp = amp_dtype(device, recipe.trainer.amp)
    dataset = recipe.dataset.component.cls(recipe.dataset.config, data_root)
    set_seed(recipe.trainer.seed)  # the encoder and decoder initialise from the seed
    encoder = recipe.encoder.component.cls.from_config(recipe.encoder.config, data_root)
    if encoder.needs_training_texts:  # a vocabulary from the data; a fresh reader keeps `skipped` single
        vocab_source = recipe.dataset.component.cls(recipe.dataset.config, data_root)
        encoder.fit_texts(example.text for example in vocab_source.load("train"))
    window, stride = window_settings(recipe.trainer.window, recipe.trainer.stride, encoder.max_chars)
    start = time.perf_counter()
    if not context.main:
        context.barrier()  # rank 0 reads, encodes and caches the corpus first; the others read the cache
    corpus = prepare_corpus(
        recipe.task, recipe.dataset, dataset, encoder, ("train", "dev"), window, stride, use_cache
    )
    if context.main:
        context.barrier()
    load_time = time.perf_counter() - start
    for split in ("train", "dev"):
        if not corpus.splits[split].stats.labelled:
            raise DataError(f"dataset: the {split} split of {recipe.dataset.type} has no labelled texts")
    task, train, dev = corpus.task, corpus.splits["train"], corpus.splits["dev"]
    decoder = build_decoder(recipe.decoder, encoder, task)
    model = Model(encoder, decoder).to(device)

    # Written once assembly has succeeded, so a recipe that fails to load leaves no half run behind.
    env = environment(device, context)
    if context.main:
        io.write_text(output_dir / "recipe.toml", recipe.to_toml())
        io.write_json(
            output_dir / "plugins.json",
            {
                "plugins": plugin_records(pm, registry),
                "environment": env,
                "seed": recipe.trainer.seed,
                "data_root": str(data_root),
                "data_files": data_files(dataset, ("train", "dev")),
                "repeat": f"nlpfw run {output_dir / 'recipe.toml'} -o NEW_RUN_DIR",
            },
        )
    summary = data_summary(corpus, window, stride, load_time)
    console.print(
        f"[bold]{recipe.name}[/]: {train.stats.examples:,} train / {dev.stats.examples:,} dev texts "
        f"({'from the cache' if corpus.cached else 'read and encoded'} in {load_time:.1f} s), "
        f"{len(decoder.labels)} {decoder.target} labels, {sum(p.numel() for p in model.parameters()):,} parameters, "
        f"device {device}{f' ({amp})' if amp else ''}"
    )
    if corpus.skipped:
        console.print(
            f"[yellow]Skipped:[/] {len(corpus.skipped)} bad record(s) or span(s) (dataset.on_error = "
            f"\"skip\"); the first: {corpus.skipped[0]}; all are listed in report.json"
        )
    for note in task.notes({name: split.stats for name, split in corpus.splits.items()}, decoder.target):
        console.print(note)
    if train.stats.windowed or dev.stats.windowed:
        console.print(
            f"{train.stats.windowed} train and {dev.stats.windowed} dev texts are longer than the "
            f"{window}-character window; they are read in windows overlapping by {stride} characters, "
            "and dev is scored on the whole texts"
        )

    reference = dataset.reference()

    def on_epoch(history: History) -> None:
        record = history.epochs[-1]
        record["device"] = env["device_name"]
        if not context.main:
            return
        if record["best"]:  # swapped in as model/ once the checkpoint that records it is written
            rundir.stage_model(output_dir, record["epoch"], lambda folder: save_model(folder, model, task, recipe))
        io.write_jsonl(output_dir / "metrics.jsonl", history.epochs)
        name, value, _ = main_score(record)
        console.print(
            f"epoch {record['epoch']}: train loss {record['train_loss']:.4f}, dev loss "
            f"{record['dev_loss']:.4f}, dev {metric_title(name)} {value:.4f}"
            f"{' (best so far, saved)' if record['best'] else ''}"
        )
        for table in result_tables(record, reference):
            console.print(table)

    trainer = Trainer(model, task, recipe.trainer, device, amp, console, context, callbacks)
    if saved is not None:
        position = saved.position
        console.print(f"Resuming from {checkpoint.find(output_dir)}: epoch {position.epoch}, "
                      f"batch {position.batch}, step {position.step}")  # fmt: skip
    history = trainer.fit(train, dev, on_epoch, output_dir, saved)

    best = history.best
    assert best is not None
    if not context.main:
        return history
    tables = result_tables(best, reference)
    io.write_json(
        output_dir / "report.json",
        {
            "recipe": recipe.name,
            "task": recipe.task.type,
            "metric": best["metric"],
            "best_epoch": best["epoch"],
            "best": best,
            "epochs_run": len(history.epochs),
            "stopped_early": history.stopped_early,
            "data": summary,
            "labels": task.labels,
            "reference": asdict(reference) if reference else None,
        },
    )
    write_reports(output_dir)
    console.rule(f"Best model: epoch {best['epoch']}")
    for table in tables:
        console.print(table)
    return history


TENSORBOARD = "tensorboard.v1"  # what `trainer.tensorboard = true` stands for


def build_callbacks(recipe: Recipe, registry: Registry) -> list[Callback]:
    """The recipe's callbacks in order, and a TensorBoard one for `trainer.tensorboard = true`
    (unless the recipe lists one already)."""
    sections = list(recipe.callbacks)
    if recipe.trainer.tensorboard and all(section.type != TENSORBOARD for section in sections):
        component = registry.get("callback", TENSORBOARD)
        sections.append(Section(component, component.cls.config_model()))
    return [section.component.cls(section.config) for section in sections]


def data_summary(corpus: Corpus, window: int | None, stride: int, load_time: float) -> dict[str, Any]:
    """What the run trained and was scored on, for report.json."""
    return {
        **{f"{name}_{key}": value for name, split in corpus.splits.items() for key, value in asdict(split.stats).items()},
        "window": window,
        "stride": stride,
        "cached": corpus.cached,
        "cache_key": corpus.key,
        "load_time": load_time,
        "skipped": corpus.skipped,
    }
