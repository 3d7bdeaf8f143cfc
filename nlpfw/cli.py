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


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "-V", "--version", prog_name="nlpfw")
@click.option(
    "-p", "--plugin", "plugins", multiple=True, metavar="MODULE",
    help="Load an uninstalled plugin module (repeatable), e.g. during development.",
)  # fmt: skip
@click.pass_context
def cli(ctx: click.Context, plugins: tuple[str, ...]) -> None:
    """nlpfw: train NLP models from TOML recipes, with plugins for every component."""
    ctx.obj = {"plugins": plugins}


def _plugins(ctx: click.Context) -> tuple[Any, Any]:
    from nlpfw.plugins import build_registry, get_plugin_manager

    pm = get_plugin_manager(modules=ctx.obj["plugins"])
    for failure in pm.failures:
        click.echo(f"Warning: {failure.origin.describe()} was not loaded: {failure.error}", err=True)
    return pm, build_registry(pm)


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
            recipe = load_recipe(path, registry, overrides)
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
@click.pass_context
@user_errors
def run(
    ctx: click.Context, recipe: Path, overrides: tuple[str, ...], output: Path | None, overwrite: bool, no_cache: bool
) -> None:
    """Train the model a recipe describes."""
    from nlpfw.recipe import load_recipe

    pm, registry = _plugins(ctx)
    loaded = load_recipe(recipe, registry, overrides)

    from nlpfw.runner import default_output_dir, prepare_output_dir
    from nlpfw.runner import run as run_recipe

    _quiet_transformers()
    folder = prepare_output_dir(output or default_output_dir(loaded.name), overwrite)
    console = Console()
    console.print(f"Run folder: [bold]{folder}[/]")
    try:
        history = run_recipe(loaded, folder, registry, pm, console, use_cache=not no_cache)
    except KeyboardInterrupt:
        console.print(f"[red]Interrupted.[/] The run folder {folder} keeps the best model saved so far.")
        sys.exit(130)
    best = history.best  # the runner always evaluates at least once
    console.print(
        f"Done: best dev F1 {best['scores']['overall']['f1']:.4f} "
        f"at epoch {best['epoch']}. Run folder: [bold]{folder}[/]"
    )


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


def _quiet_transformers() -> None:
    import transformers

    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()


def main() -> None:
    cli(prog_name="nlpfw")
