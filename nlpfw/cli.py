"""The `nlpfw` command line."""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from nlpfw import __version__
from nlpfw.errors import NlpfwError, RecipeError


def _fail(message: str) -> None:
    click.echo(f"Error: {message}", err=True)
    sys.exit(1)


def user_errors(command: Callable[..., Any]) -> Callable[..., Any]:
    """Turn errors a user caused into one message and exit code 1, never a traceback."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except NlpfwError as error:
            _fail(str(error))

    return wrapper


class _Group(click.Group):
    """Exit codes as docs/errors.md promises: 1 for a usage error (click's own is 2), 128 + the
    signal for Ctrl-C, SIGTERM or SIGHUP at any moment (click says "Aborted!" and exits 1).

    Plugins add commands through `register_commands`: they are looked up only when a command is
    not built in, or when the commands are listed (`nlpfw --help`), so the built-in commands
    start without loading every plugin first."""

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        return super().get_command(ctx, cmd_name) or self._plugin_commands(ctx).get(cmd_name)

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *self._plugin_commands(ctx)})

    def _plugin_commands(self, ctx: click.Context) -> dict[str, click.Command]:
        root = ctx.find_root()
        meta = root.meta.setdefault("nlpfw.plugin_commands", {})
        modules = tuple(root.params.get("plugins") or ())
        if modules not in meta:
            from nlpfw.plugins import get_plugin_manager, plugin_commands

            pm = get_plugin_manager(modules=modules)
            commands, problems = plugin_commands(pm, set(self.commands))
            for problem in problems:
                click.echo(f"Warning: {problem}", err=True)
            meta[modules] = commands
        return meta[modules]

    def main(self, *args: Any, standalone_mode: bool = True, **kwargs: Any) -> Any:
        if not standalone_mode:
            return super().main(*args, standalone_mode=False, **kwargs)
        from nlpfw import signals

        try:
            code = super().main(*args, standalone_mode=False, **kwargs)
        except click.ClickException as error:
            error.show()
            sys.exit(1)
        except (click.Abort, KeyboardInterrupt):
            click.echo(f"\nInterrupted ({signals.name()}).", err=True)
            sys.exit(signals.exit_code())
        sys.exit(code if isinstance(code, int) else 0)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "-V", "--version", prog_name="nlpfw")
@click.option(
    "-p", "--plugin", "plugins", multiple=True, metavar="MODULE", is_eager=True,
    help="Load an uninstalled plugin module (repeatable), e.g. during development.",
)  # fmt: skip
@click.pass_context
def cli(ctx: click.Context, plugins: tuple[str, ...]) -> None:
    """nlpfw: train NLP models from TOML recipes, with plugins for every component."""
    from nlpfw import signals

    signals.install()  # SIGTERM and SIGHUP stop nlpfw as Ctrl-C does
    ctx.obj = {"plugins": plugins}


def _plugins(ctx: click.Context) -> tuple[Any, Any]:
    from nlpfw.plugins import build_registry, get_plugin_manager

    pm = get_plugin_manager(modules=ctx.obj["plugins"])
    registry = build_registry(pm)  # may leave more plugins out (a duplicate name, a hook that raises)
    for failure in pm.failures:
        click.echo(f"Warning: {failure.origin.describe()} was not loaded: {failure.error}", err=True)
    return pm, registry


@cli.command()
@click.argument("recipes", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help="Override a recipe value.")
@click.pass_context
@user_errors
def validate(ctx: click.Context, recipes: tuple[Path, ...], overrides: tuple[str, ...]) -> None:
    """Check recipes without running them: every problem, one line each."""
    from nlpfw.recipe import load_recipe

    _, registry = _plugins(ctx)
    failed = 0
    for path in recipes:
        try:
            recipe = load_recipe(_recipe_file(path), registry, overrides)
            _check_window(recipe, str(path))
        except RecipeError as error:
            failed += 1
            click.echo(f"Error: {error}", err=True)
        else:
            click.echo(
                f"{path}: ok ({recipe.task.type}, {recipe.dataset.type}, "
                f"{recipe.encoder.type} + {recipe.decoder.type})"
            )
    if failed:
        sys.exit(1)


@cli.command()
@click.argument("recipe", type=click.Path(path_type=Path))
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Override a recipe value, e.g. --set trainer.epochs=1 (repeatable).")  # fmt: skip
@click.option("-o", "--output", type=click.Path(path_type=Path), default=None,
              help="Run folder (default: a new runs/<recipe>-<time>).")  # fmt: skip
@click.option("--overwrite", is_flag=True, help="Replace the run already in --output.")
@click.option("--no-cache", is_flag=True,
              help="Read and encode the corpus afresh, without the tokenised-corpus cache.")  # fmt: skip
@click.option("--resume", is_flag=False, flag_value="latest", default=None, metavar="[RUN_DIR]",
              help="Continue an interrupted run from its checkpoint: RUN_DIR, or alone the "
                   "newest runs/<recipe>-* folder.")  # fmt: skip
@click.option("--nproc", type=click.IntRange(min=1), default=1, show_default=True,
              help="Train data-parallel in N processes on this machine (torchrun; one per GPU, or gloo on CPU).")  # fmt: skip
@click.pass_context
@user_errors
def run(
    ctx: click.Context, recipe: Path, overrides: tuple[str, ...], output: Path | None, overwrite: bool,
    no_cache: bool, resume: str | None, nproc: int,
) -> None:  # fmt: skip
    """Train the model a recipe describes."""
    from nlpfw import checkpoint, distributed, rundir, signals
    from nlpfw.io import WriteError
    from nlpfw.recipe import load_recipe

    pm, registry = _plugins(ctx)
    recipe = _recipe_file(recipe)
    loaded = load_recipe(recipe, registry, overrides)

    from nlpfw.runner import default_output_dir, latest_run
    from nlpfw.runner import run as run_recipe
    from nlpfw.trainer import Interrupted

    _quiet_transformers()
    context = distributed.setup()  # under torchrun: join its process group
    if nproc > 1 and context.active:
        raise NlpfwError("--nproc: this process was already started by torchrun; leave --nproc out")
    console = Console(quiet=not context.main)
    if resume is not None:
        folder = latest_run(loaded.name) if resume == "latest" else Path(resume)
        checkpoint.require(folder)
        lock = rundir.claim(folder, resume=True) if context.main else None
        ctx.call_on_close(lock.release if lock is not None else lambda: None)  # on any error too
        saved = load_recipe(folder / "recipe.toml", registry)
        if saved.to_dict() != loaded.to_dict():
            console.print(f"[yellow]Note:[/] resuming with the run's own recipe, {folder / 'recipe.toml'}; "
                          f"{recipe} (with --set) differs from it")  # fmt: skip
        loaded = saved
    else:
        # rank 0 checks and names the folder (a default name holds the time), the others take it
        # rank 0 locks the folder, then checks it: no two runs write into one folder
        lock = rundir.claim(output or default_output_dir(loaded.name), overwrite) if context.main else None
        ctx.call_on_close(lock.release if lock is not None else lambda: None)  # on any error too
        folder = context.broadcast(lock.folder if lock is not None else None)
    if nproc > 1:
        _launch(ctx, recipe, overrides, folder, overwrite, no_cache, resume is not None, nproc, console)
        return
    console.print(f"Run folder: [bold]{folder}[/]" + (f" ({context.world} processes)" if context.active else ""))
    resume_with = f"nlpfw run {recipe} --resume {folder}" + (f" --nproc {context.world}" if context.active else "")
    try:
        history = run_recipe(loaded, folder, registry, pm, console, use_cache=not no_cache,
                             resume=resume is not None, context=context)  # fmt: skip
        # every rank waits here until rank 0 has written its last file: a rank that tears the
        # gloo group down while another still uses it can abort ("terminate called ...")
        context.barrier()
    except Interrupted as stop:
        where = f"epoch {stop.position.epoch}, batch {stop.position.batch}, step {stop.position.step}"
        console.print(f"[red]Interrupted[/] at {where}; the checkpoint is in {folder / 'checkpoint'}.\n"
                      f"Resume with: {resume_with}")  # fmt: skip
        sys.exit(signals.exit_code())
    except KeyboardInterrupt:
        if checkpoint.find(folder) is not None:
            console.print(f"[red]Interrupted.[/] {folder} keeps the best model and the last checkpoint saved so far; "
                          f"resume with: {resume_with}")  # fmt: skip
        else:
            again = " ".join(["nlpfw run", str(recipe), *[f"--set {item}" for item in overrides], "-o", str(folder), "--overwrite"])
            console.print(f"[red]Interrupted[/] before the first checkpoint; {folder} cannot be resumed. "
                          f"Start it again with: {again}")  # fmt: skip
        sys.exit(signals.exit_code())
    except WriteError as error:
        kept = checkpoint.find(folder)
        again = " ".join(["nlpfw run", str(recipe), *[f"--set {item}" for item in overrides], "-o", str(folder), "--overwrite"])
        state = (f"The last checkpoint, {kept}, is intact; once the cause is fixed: {resume_with}" if kept
                 else f"No checkpoint had been written yet; once the cause is fixed: {again}")  # fmt: skip
        raise NlpfwError(f"{error}; the run stopped and left no temporary files. {state}") from None
    finally:
        distributed.teardown(context)
        if lock is not None:
            lock.release()
    from nlpfw.model import main_score
    from nlpfw.report import metric_title

    name, value, _ = main_score(history.best)  # the runner always evaluates at least once
    console.print(
        f"Done: best dev {metric_title(name)} {value:.4f} "
        f"at epoch {history.best['epoch']}. Run folder: [bold]{folder}[/]"
    )


def _recipe_file(argument: Path) -> Path:
    """A recipe path that exists, else the built-in recipe of that name (`quickstart`)."""
    from nlpfw.starter import find_recipe

    return find_recipe(argument)


@cli.command()
@click.argument("output", type=click.Path(path_type=Path))
@click.option("--task", default="ner.v1", show_default=True, help="Task plugin.")
@click.option("--encoder", default="bert.v1", show_default=True, help="Encoder plugin.")
@click.option("--decoder", default="crf.v1", show_default=True, help="Decoder plugin.")
@click.option("--dataset", default="cluener.v1", show_default=True, help="Dataset plugin.")
@click.option("--force", is_flag=True, help="Replace OUTPUT if it exists.")
@click.pass_context
@user_errors
def init(ctx: click.Context, output: Path, task: str, encoder: str, decoder: str, dataset: str, force: bool) -> None:
    """Write a starter recipe: every option of the chosen components and of the trainer, at its
    default, under its description (`nlpfw list-plugins` shows the choices)."""
    from nlpfw import io
    from nlpfw.starter import check_starter, starter_recipe

    if output.exists() and not force:
        raise NlpfwError(f"{output} exists; choose another name, or --force to replace it")
    if output.suffix != ".toml":
        raise NlpfwError(f"{output}: a recipe is a .toml file; name it {output.name}.toml")
    io.check_writable(output)
    _, registry = _plugins(ctx)
    choices = {"task": task, "dataset": dataset, "encoder": encoder, "decoder": decoder}
    text = starter_recipe(registry, output.stem, choices)
    io.write_text(output, text)
    try:
        check_starter(text, registry, str(output))
    except RecipeError as error:
        click.echo(f"Wrote {output}; fill in what it lacks before running it:\n{error}", err=True)
        sys.exit(1)
    click.echo(f"Wrote {output} ({task}, {dataset}, {encoder} + {decoder}; every option at its default). "
               f"Next: nlpfw validate {output}, then nlpfw run {output}")  # fmt: skip


def _check_window(recipe: Any, source: str) -> None:
    """`trainer.window` and `stride` against the encoder's limit, where its settings tell it
    without building the model (`configured_max_chars`); the run checks it again in any case."""
    from nlpfw.corpus import window_settings
    from nlpfw.data import data_root
    from nlpfw.errors import Problem

    limit_of = getattr(recipe.encoder.component.cls, "configured_max_chars", None)
    limit = limit_of(recipe.encoder.config, data_root()) if limit_of is not None else None
    try:
        window_settings(recipe.trainer.window, recipe.trainer.stride, limit)
    except NlpfwError as error:
        key, _, message = str(error).partition(": ")
        raise RecipeError(source, [Problem(key, message)]) from None


def _launch(
    ctx: click.Context, recipe: Path, overrides: tuple[str, ...], folder: Path, overwrite: bool,
    no_cache: bool, resume: bool, nproc: int, console: Console,
) -> None:  # fmt: skip
    """`nlpfw run --nproc N`: the same run in N torchrun processes, into the folder chosen here."""
    from nlpfw import checkpoint
    from nlpfw.distributed import launch

    args = [arg for module in ctx.obj["plugins"] for arg in ("-p", module)] + ["run", str(recipe)]
    args += [arg for item in overrides for arg in ("--set", item)]
    args += ["--resume", str(folder)] if resume else ["-o", str(folder)] + (["--overwrite"] if overwrite else [])
    args += ["--no-cache"] if no_cache else []
    console.print(f"Launching {nproc} processes: torchrun --standalone --nproc-per-node {nproc} -m nlpfw {' '.join(args)}")
    code = launch(nproc, args)
    if code == 0:
        return
    kept = checkpoint.find(folder)
    state = f"the last checkpoint, {kept}, is intact" if kept else "no checkpoint had been written yet"
    again = " ".join([f"nlpfw run {recipe}", *[f"--set {item}" for item in overrides], f"-o {folder} --overwrite --nproc {nproc}"])
    resume_with = f"nlpfw run {recipe} --resume {folder} --nproc {nproc}" if kept else again
    if code in (129, 130, 143):
        sys.exit(code)  # Ctrl-C, SIGTERM, SIGHUP: rank 0 said where it stopped and how to resume
    first = getattr(launch, "first_failure", None)
    raise NlpfwError(
        f"a training process failed (torchrun exit code {code}; its error is above) and torchrun stopped the "
        f"others; {state}. Once the cause is fixed: {resume_with}" + (f". The first to fail: {first}" if first else "")
    )


class InputForm(click.Choice):
    """`predict --format`: the form of --input; a value that is not one points to --output-format,
    where the tools' formats go."""

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        try:
            return super().convert(value, param, ctx)
        except click.BadParameter:
            self.fail(f"{value!r} is not one of {', '.join(map(str, self.choices))}: --format is the form of --input; "
                      f"the output's format is --output-format (e.g. --output-format {value})", param, ctx)  # fmt: skip


def _load(ctx: click.Context, run_dir: Path, device: str) -> tuple[Any, Any]:
    from nlpfw.device import resolve_device
    from nlpfw.errors import DeviceError
    from nlpfw.modelcheck import load_checked

    _quiet_transformers()
    _, registry = _plugins(ctx)
    try:
        resolved = resolve_device(device)
    except DeviceError as error:  # the option here, not the recipe key
        raise DeviceError(str(error).replace("trainer.device:", "--device:", 1)) from None
    return load_checked(run_dir, registry, resolved), registry


def _split_examples(model: Any, split: str) -> tuple[list[Any], Any]:
    """A split of the dataset the model was trained on, and the dataset (for its reference)."""
    from nlpfw.data import data_root

    section = model.recipe.dataset
    dataset = section.component.cls(section.config, data_root())
    if split not in dataset.splits():
        raise NlpfwError(f"--split: {section.type} has no split {split!r}; splits: {', '.join(dataset.splits())}")
    return dataset.load(split), dataset


RUN_DIR = click.argument("run_dir", type=click.Path(path_type=Path))
DEVICE = click.option("--device", default="cpu", show_default=True, help="cpu, cuda, cuda:N, mps or auto.")
BATCH = click.option("--batch-size", type=click.IntRange(min=1), default=64, show_default=True,
                     help="Texts per batch (sorted by length).")  # fmt: skip


@cli.command()
@RUN_DIR
@click.option("--split", default=None, help="A split of the model's dataset (default: dev).")
@click.option("--data", "data_file", type=click.Path(path_type=Path), default=None,
              help="A labelled file instead: JSON lines (.json/.jsonl) or CoNLL (anything else).")  # fmt: skip
@click.option("--output", type=click.Path(path_type=Path), default=None, help="Also write the scores as JSON.")
@DEVICE
@BATCH
@click.pass_context
@user_errors
def evaluate(
    ctx: click.Context, run_dir: Path, split: str | None, data_file: Path | None,
    output: Path | None, device: str, batch_size: int,
) -> None:  # fmt: skip
    """Score a trained model on labelled data and print the result tables."""
    from nlpfw import io
    from nlpfw.predict import labelled_file
    from nlpfw.report import evaluation_fields, metric_title, result_tables

    if split and data_file:
        raise NlpfwError("give --split or --data, not both")
    if output is not None:
        io.check_writable(output)  # before the work, not after it
    model, registry = _load(ctx, run_dir, device)
    reference = None
    if data_file is not None:
        examples, source = labelled_file(model, data_file, registry), str(data_file)
    else:
        examples, dataset = _split_examples(model, split or "dev")
        reference, source = dataset.reference(), f"{model.recipe.dataset.type} {split or 'dev'}"
    if not any(e.gold is not None for e in examples):
        raise NlpfwError(f"{source} has no labelled texts to score; use `nlpfw predict` for unlabelled ones")
    record = model.evaluate(examples, batch_size)
    record["device"] = str(model.device)
    console = Console()
    fields = evaluation_fields(record)
    main = fields["main"]["name"]
    others = ", ".join(f"{metric_title(k)} {v:.4f}" for k, v in fields["summary"].items() if k != main)
    console.print(f"[bold]{source}[/]: {len(examples):,} texts, {metric_title(main)} {fields['main']['value']:.4f}"
                  + (f" ({others})" if others else ""))  # fmt: skip
    for table in result_tables(record, reference):
        console.print(table)
    if output is not None:
        io.write_json(output, {"source": source, "texts": len(examples), **record})


@cli.command()
@RUN_DIR
@click.argument("texts", nargs=-1)
@click.option("--input", "input_file", type=click.Path(path_type=Path), default=None,
              help="Texts to predict on: plain lines, or JSON lines with \"text\" (and \"id\").")  # fmt: skip
@click.option("--format", "form", type=InputForm(["auto", "text", "jsonl"]), default="auto", show_default=True,
              help="Form of --input; auto: JSON lines for .json/.jsonl, else plain lines.")  # fmt: skip
@click.option("--output", type=click.Path(path_type=Path), default=None,
              help="Write JSON lines here (default: print them).")  # fmt: skip
@click.option("--submission", "--cluener-submission", "submission", is_flag=True,
              help="Write the dataset's leaderboard file (CLUENER2020's for cluener.v1) for --split (default "
                   "test) of the model's dataset.")  # fmt: skip
@click.option("--split", default=None, help="Predict a split of the model's dataset.")
@click.option("--output-format", default="jsonl", show_default=True,
              help="jsonl: the prediction records as JSON lines; or a tool's format a dataset writes (label-studio: "
                   "tasks with pre-annotations, predictions and scores; doccano: JSONL to import).")  # fmt: skip
@click.option("--rank", type=click.Choice(["uncertainty"]), default=None,
              help="Order the texts from least to most confident, with a confidence per text and per annotation.")  # fmt: skip
@click.option("--model-version", default=None, help="Label Studio's model_version (default: the run folder's name).")
@click.option("--option", "options", multiple=True, metavar="KEY=VALUE",
              help="An option of the --output-format writer (label-studio: from_name=NAME and to_name=NAME, the "
                   "labeling config's control and object; text_field=NAME, the task data field).")  # fmt: skip
@DEVICE
@BATCH
@click.pass_context
@user_errors
def predict(
    ctx: click.Context, run_dir: Path, texts: tuple[str, ...], input_file: Path | None, form: str,
    output: Path | None, submission: bool, split: str | None, output_format: str, rank: str | None,
    model_version: str | None, options: tuple[str, ...], device: str, batch_size: int,
) -> None:  # fmt: skip
    """Predict with a trained model: JSON lines, one per text (NER: entities with character
    offsets; a classifier: the label and its scores)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from nlpfw import io
    from nlpfw.predict import predict_records, read_inputs
    from nlpfw.predict import submission as submission_file

    sources = sum(bool(x) for x in (texts, input_file, split or submission))
    if sources != 1:
        raise NlpfwError("give texts, --input FILE, or --split/--submission (exactly one of them)")
    given = key_values(options)
    if given and output_format == "jsonl":
        raise NlpfwError("--option is for a tool's --output-format (label-studio); the JSON lines take none")
    if output is not None:
        io.check_writable(output)  # before the work, not after it
    model, registry = _load(ctx, run_dir, device)
    examples = dataset = None
    if input_file is not None:
        records = read_inputs(input_file, form)
    elif texts:
        records = [{"text": t} for t in texts]
    else:
        examples, dataset = _split_examples(model, split or "test")
        records = [{"id": e.id, "text": e.text} for e in examples]
        if submission and output is None:
            io.check_writable(Path(submission_file(dataset, [], [])[0]))  # the default name, before the work
    console = Console(stderr=True)
    if output_format != "jsonl" or rank:
        from nlpfw.annotate import check_output_format

        check_output_format(output_format, registry, given)
        if submission:
            raise NlpfwError("--submission writes its own format; leave out --output-format and --rank")
        _annotate(model, registry, records, output_format, rank, model_version or Path(run_dir).resolve().name,
                  output, batch_size, console, given)  # fmt: skip
        return
    with Progress(TextColumn("predicting"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                  console=console, disable=len(records) <= 2048) as progress:  # fmt: skip
        bar = progress.add_task("predict", total=len(records))
        results = list(predict_records(model, records, batch_size, lambda n: progress.advance(bar, n)))
    if submission:
        name, lines = submission_file(dataset, examples, results)
        target = output or Path(name)
        io.write_text(target, "".join(f"{line}\n" for line in lines))
        console.print(f"Wrote {len(lines):,} lines to {target} (the leaderboard format of {model.recipe.dataset.type})")
        return
    lines = [json.dumps(r, ensure_ascii=False) for r in results]
    if output is None:
        click.echo("\n".join(lines))
    else:
        io.write_text(output, "".join(f"{line}\n" for line in lines))
        console.print(f"Wrote {len(lines):,} predictions to {output}")


def key_values(items: tuple[str, ...]) -> dict[str, str]:
    """`--option KEY=VALUE` items as a dict; an error naming a malformed one."""
    given: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise NlpfwError(f"--option: expected KEY=VALUE, not {item!r}")
        given[key.strip()] = value
    return given


def _annotate(
    model: Any, registry: Any, records: list[dict[str, Any]], output_format: str, rank: str | None,
    model_version: str, output: Path | None, batch_size: int, console: Console, options: dict[str, str],
) -> None:  # fmt: skip
    """`predict --output-format/--rank`: pre-annotations for a tool, or texts ranked by uncertainty."""
    from nlpfw import io
    from nlpfw.annotate import predictions, render

    predicted = predictions(model, [r["text"] for r in records], batch_size, scored=bool(rank) or output_format != "jsonl")
    content, _ = render(records, predicted, output_format, model_version, rank=bool(rank), registry=registry,
                        options=options)
    if output is None:
        click.echo(content, nl=False)
        return
    io.write_text(output, content)
    ranked = ", least confident first" if rank else ""
    console.print(f"Wrote {len(records):,} texts to {output} ({output_format}{ranked})")


@cli.command()
@click.argument("source", type=click.Path(path_type=Path))
@click.argument("target", type=click.Path(path_type=Path))
@click.option("--from", "source_format", default="auto", show_default=True,
              help="Format of SOURCE (cluener, spans, conll, conll-bioes, label-studio, doccano, text-labels, "
                   "text-labels-csv, text-labels-tsv, text: the datasets' file formats, and plain texts); auto: from its "
                   "first record.")  # fmt: skip
@click.option("--to", "target_format", required=True, help="Format to write TARGET in (as --from).")
@click.option("--on-error", type=click.Choice(["raise", "skip"]), default="raise", show_default=True,
              help="Bad records: stop naming the file and line, or leave them out and count them.")  # fmt: skip
@click.option("--text-field", default="text", show_default=True,
              help="The field holding the text (Label Studio: the task data field; text-labels: the field or column).")  # fmt: skip
@click.option("--option", "options", multiple=True, metavar="KEY=VALUE",
              help="An option of the reader or the writer (label-studio: result_type=choices, from_name=NAME, "
                   "to_name=NAME, annotator=WHO; "
                   "doccano: project=text_classification; text-labels: label_field=NAME, label_separator=|, format=csv).")  # fmt: skip
@click.pass_context
@user_errors
def convert(
    ctx: click.Context, source: Path, target: Path, source_format: str, target_format: str, on_error: str,
    text_field: str, options: tuple[str, ...],
) -> None:  # fmt: skip
    """Convert a corpus between the datasets' file formats (entities: CLUENER JSON, JSON spans, CoNLL;
    classes: text-labels JSON lines, CSV, TSV; either: Label Studio, doccano) and plain texts."""
    from nlpfw.convert import convert as convert_corpus

    _, registry = _plugins(ctx)
    done = convert_corpus(source, target, source_format, target_format, registry, on_error, text_field, key_values(options))
    click.echo(f"Read {done.texts:,} texts ({done.source_format}; {done.labelled:,} labelled, {done.annotations:,} "
               f"annotations); wrote {done.written:,} to {target} ({target_format})")  # fmt: skip
    for note in done.notes:
        click.echo(f"Note: {note}")
    if done.skipped:
        click.echo(f"Skipped {len(done.skipped):,} bad record(s) or span(s); the first: {done.skipped[0]}")


@cli.command()
@RUN_DIR
@click.option("--onnx", "onnx_out", type=click.Path(path_type=Path), required=True,
              help="Write the ONNX graph here (and its labels beside it, in OUT.json).")  # fmt: skip
@click.option("--quantize", type=click.Choice(["int8"]), default=None,
              help="Write an int8 graph (onnxruntime dynamic quantization) for faster CPU inference.")  # fmt: skip
@click.option("--max-tag-change", default=0.02, show_default=True, type=click.FloatRange(0, 1),
              help="With --quantize: refuse the graph if more than this share of the check batch's characters "
                   "get another tag than from the float model.")  # fmt: skip
@click.option("--check-input", type=click.Path(path_type=Path), default=None,
              help="With --quantize: the check batch, one text a line (default: built-in sentences).")  # fmt: skip
@click.pass_context
@user_errors
def export(
    ctx: click.Context, run_dir: Path, onnx_out: Path, quantize: str | None, max_tag_change: float,
    check_input: Path | None,
) -> None:  # fmt: skip
    """Export a trained model, encoder and decoder (a CRF's Viterbi included), to one ONNX graph."""
    from nlpfw import io
    from nlpfw.export import export_onnx

    io.check_writable(onnx_out, "--onnx")  # before the work, not after it
    io.check_writable(onnx_out.with_name(onnx_out.name + ".json"), "--onnx")
    _quiet_transformers()
    _, registry = _plugins(ctx)
    texts = None
    if quantize:
        from nlpfw.quantize import check_texts

        texts = check_texts(check_input)
    out = export_onnx(run_dir, onnx_out, registry, quantize, texts, max_tag_change)
    size = out.stat().st_size / 2**20
    output = json.loads(out.with_name(out.name + ".json").read_text(encoding="utf-8"))["output"]
    kind = f"{quantize}, " if quantize else ""
    click.echo(f"Wrote {out} ({kind}{size:.1f} MiB; inputs input_ids, mask; output {output}) and {out.name}.json (labels); "
               f"onnxruntime gave the model's own {output} on a check batch{' (float32 graph)' if quantize else ''}")  # fmt: skip
    if quantize:
        check = json.loads(out.with_name(out.name + ".json").read_text(encoding="utf-8"))["quantization"]["check"]
        click.echo(f"int8: {check['changed']:,} of {check['chars']:,} characters of the check batch "
                   f"({check['changed'] / max(check['chars'], 1):.2%}) tagged differently from the float model "
                   f"(allowed: {max_tag_change:.2%})")  # fmt: skip


@cli.command()
@RUN_DIR
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to bind; 0.0.0.0 serves other machines too (set an API key then).")  # fmt: skip
@click.option("--port", default=8000, show_default=True, type=click.IntRange(0, 65535))
@click.option("--onnx", "onnx_file", type=click.Path(path_type=Path), default=None,
              help="Compute the tags with this exported ONNX graph (nlpfw export) through onnxruntime.")  # fmt: skip
@click.option("--api-key", envvar="NLPFW_API_KEY", default=None, show_envvar=True,
              help="Require this key (X-API-Key header or Authorization: Bearer) on /predict and /info.")  # fmt: skip
@click.option("--workers", default=1, show_default=True, type=click.IntRange(min=1),
              help="Server processes, each with its own copy of the model.")  # fmt: skip
@click.option("--threads", default=None, type=click.IntRange(min=1),
              help="CPU threads for each process's model (default: torch's; with --workers, the cores this process may use divided among them).")  # fmt: skip
@click.option("--batch-wait-ms", default=2.0, show_default=True, type=click.FloatRange(min=0),
              help="How long a micro-batch waits for more requests after its first.")  # fmt: skip
@click.option("--max-batch", default=64, show_default=True, type=click.IntRange(min=1),
              help="Texts at which a micro-batch closes (a request is never split).")  # fmt: skip
@click.option("--no-batching", is_flag=True, help="Run each request alone (for comparison).")
@click.option("--max-body-bytes", default=1 << 20, show_default=True, type=click.IntRange(min=1),
              help="Larger request bodies get 413.")  # fmt: skip
@click.option("--max-chars", default=100_000, show_default=True, type=click.IntRange(min=1),
              help="Characters a request's texts may hold in all (413 above); long texts are windowed.")  # fmt: skip
@click.option("--drain-timeout", default=30.0, show_default=True, type=click.FloatRange(min=0),
              help="On SIGTERM, seconds to let the requests in flight finish.")  # fmt: skip
@DEVICE
@BATCH
@click.pass_context
@user_errors
def serve(
    ctx: click.Context, run_dir: Path, host: str, port: int, onnx_file: Path | None, api_key: str | None,
    workers: int, threads: int | None, batch_wait_ms: float, max_batch: int, no_batching: bool,
    max_body_bytes: int, max_chars: int, drain_timeout: float, device: str, batch_size: int,
) -> None:  # fmt: skip
    """Serve a trained model over HTTP: POST /predict, GET /info, /health, /docs, and a page at /."""
    try:
        from nlpfw.serve.app import ServeSettings
        from nlpfw.serve.server import load_for_serving, serve_workers
        from nlpfw.serve.server import serve as serve_app
    except ImportError as error:
        raise NlpfwError(f"nlpfw serve needs fastapi and uvicorn ({error.name} is missing): "
                         "pip install 'nlpfw[serve]'") from None  # fmt: skip
    import torch

    from nlpfw.device import resolve_device, threads_per_process

    _quiet_transformers()
    _, registry = _plugins(ctx)
    device = str(resolve_device(device))
    threads = threads or (min(torch.get_num_threads(), threads_per_process(workers)) if workers > 1 else None)
    model = load_for_serving(run_dir, registry, device, onnx_file, threads)  # errors before binding
    settings = ServeSettings(
        batching=not no_batching, max_batch_texts=max_batch, max_wait_ms=batch_wait_ms, batch_size=batch_size,
        max_body_bytes=max_body_bytes, max_chars=max_chars, api_key=api_key or None,
    )  # fmt: skip
    runtime = "onnxruntime" if onnx_file else "torch"
    if host not in ("127.0.0.1", "localhost", "::1") and not api_key:
        click.echo(f"Warning: serving on {host} without an API key: whoever reaches it can use it "
                   "(--api-key or NLPFW_API_KEY)", err=True)  # fmt: skip
    where = f"http://{host}:{port}"
    click.echo(f"Serving {run_dir} ({runtime}, {workers} process{'es' if workers > 1 else ''}) at {where}: "
               f"the page at {where}/, the API at {where}/docs" + ("; API key required" if api_key else ""), err=True)  # fmt: skip
    if workers == 1:
        serve_app(model, settings, host, port, runtime, drain_timeout)
        return
    del model
    options = {"run_dir": str(run_dir), "device": device, "onnx": str(onnx_file) if onnx_file else None,
               "threads": threads, "plugins": list(ctx.obj["plugins"])}  # fmt: skip
    serve_workers(options, settings, workers, host, port, drain_timeout)


@cli.command()
@RUN_DIR
@click.pass_context
@user_errors
def report(ctx: click.Context, run_dir: Path) -> None:
    """Rebuild a run's report.txt, report.md and plots from its metrics.jsonl and report.json."""
    from nlpfw.run_report import headline, read_run, write_reports

    paths = write_reports(run_dir)
    click.echo(headline(read_run(run_dir)))
    for path in paths:
        click.echo(f"wrote {path}")


@cli.command()
@click.argument("run_dirs", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.pass_context
@user_errors
def compare(ctx: click.Context, run_dirs: tuple[Path, ...]) -> None:
    """Print runs side by side: summary scores, timings and per-label scores of each best epoch."""
    from nlpfw.run_report import compare_table, read_run

    Console().print(compare_table([read_run(d) for d in run_dirs]))


@cli.command("list-plugins")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@click.pass_context
@user_errors
def list_plugins(ctx: click.Context, as_json: bool) -> None:
    """Show the plugins, where they came from and what they provide."""
    from nlpfw.plugins import plugin_records

    pm, registry = _plugins(ctx)
    records = plugin_records(pm, registry)
    if as_json:
        click.echo(json.dumps(records, indent=2, ensure_ascii=False))
        return
    table = Table(title="nlpfw plugins")
    for column in ("plugin", "version", "source", "hooks", "provides"):
        table.add_column(column, overflow="fold")
    for r in records:
        provides = "\n".join(r["provides"]) if not r["error"] else f"[red]failed: {r['error']}[/]"
        table.add_row(r["plugin"], r["version"] or "-", r["source"], "\n".join(r["hooks"]), provides)
    Console().print(table)


@cli.group()
def vectors() -> None:
    """Character, bigram and word vectors from unlabelled text, for bilstm.v1."""


@vectors.command("train")
@click.argument("out", type=click.Path(path_type=Path))
@click.option("--text", "texts", multiple=True, type=click.Path(path_type=Path), metavar="FILE",
              help="A plain-text file, one text a line (repeatable).")
@click.option("--pfr", multiple=True, type=click.Path(path_type=Path), metavar="FILE",
              help="A People's Daily 1998 file, `word/TAG  word/TAG` lines (repeatable).")
@click.option("--split", "splits", multiple=True, metavar="RECIPE:SPLIT",
              help="The texts of a split of a recipe's dataset, e.g. recipes/bilstm_crf_cluener.toml:train "
                   "(repeatable; dev is refused).")
@click.option("--char-size", type=click.IntRange(min=0), default=128, show_default=True, help="chars.vec size (0: none).")
@click.option("--bigram-size", type=click.IntRange(min=0), default=64, show_default=True, help="bigrams.vec size (0: none).")
@click.option("--word-size", type=click.IntRange(min=0), default=0, show_default=True,
              help="words.vec size, on jieba-segmented text, for encoder.lexicon_vectors (0: none).")
@click.option("--method", type=click.Choice(["word2vec", "fasttext"]), default="word2vec", show_default=True)
@click.option("--epochs", type=click.IntRange(min=1), default=5, show_default=True)
@click.option("--window", type=click.IntRange(min=1), default=5, show_default=True)
@click.option("--min-count", type=click.IntRange(min=1), default=2, show_default=True,
              help="Tokens seen fewer times get no vector.")
@click.option("--cbow", is_flag=True, help="CBOW instead of skip-gram.")
@click.option("--seed", type=int, default=42, show_default=True)
@click.option("--workers", type=click.IntRange(min=1), default=1, show_default=True,
              help="gensim threads (more than 1: faster, but not the same vectors twice).")
@click.option("--no-cache", is_flag=True, help="Train even if the cache holds these vectors.")
@click.pass_context
@user_errors
def vectors_train(ctx: click.Context, out: Path, texts: tuple[Path, ...], pfr: tuple[Path, ...], splits: tuple[str, ...],
                  char_size: int, bigram_size: int, word_size: int, method: str, epochs: int, window: int,
                  min_count: int, cbow: bool, seed: int, workers: int, no_cache: bool) -> None:  # fmt: skip
    """Train vectors on unlabelled text into OUT (chars.vec, bigrams.vec, words.vec), for
    bilstm.v1's encoder.vectors, encoder.bigram_vectors and encoder.lexicon_vectors."""
    from nlpfw import vectors as trainer

    sources = [trainer.split_source(spec) for spec in splits]  # a refused split fails before any work
    sources = [*(trainer.Source("text", p) for p in texts), *(trainer.Source("pfr", p) for p in pfr), *sources]
    registry = _plugins(ctx)[1] if splits else None
    options = trainer.Options(char_size, bigram_size, word_size, method, epochs, window, min_count, not cbow, seed, workers)
    meta = trainer.train_all(out, sources, options, registry, use_cache=not no_cache, report=click.echo)
    took = "from the cache" if meta["cached"] else f"in {meta['times']['total']} s"
    click.echo(f"Wrote {', '.join(meta['files'])} into {out} {took}")


def _quiet_transformers() -> None:
    import transformers

    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()


def main() -> None:
    cli(prog_name="nlpfw")
