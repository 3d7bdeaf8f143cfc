"""Every hook a plugin can implement.

A plugin is a module (or object) with functions marked `@hookimpl`. The five contribution
hooks (tasks, encoders, decoders, datasets, training callbacks) are called once per plugin when
the registry is built (at start-up of every command); each receives a `register(name, cls)`
callable. Names are versioned (`bert.v1`); a name registered by two plugins is an error that
names both. `register_commands` adds commands to the `nlpfw` command line.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import pluggy

if TYPE_CHECKING:
    import click

    from nlpfw.interfaces import Callback, Dataset, Decoder, Encoder, Task

hookspec = pluggy.HookspecMarker("nlpfw")
hookimpl = pluggy.HookimplMarker("nlpfw")


@hookspec
def register_tasks(register: Callable[[str, type[Task]], None]) -> None:
    """Register task classes (`ner.v1`): called once when the registry is built.

    `register(name, cls)` takes a versioned name and a `nlpfw.interfaces.Task` subclass.
    """


@hookspec
def register_encoders(register: Callable[[str, type[Encoder]], None]) -> None:
    """Register encoder classes (`bert.v1`): called once when the registry is built.

    `register(name, cls)` takes a versioned name and a `nlpfw.interfaces.Encoder` subclass.
    """


@hookspec
def register_decoders(register: Callable[[str, type[Decoder]], None]) -> None:
    """Register decoder classes (`crf.v1`): called once when the registry is built.

    `register(name, cls)` takes a versioned name and a `nlpfw.interfaces.Decoder` subclass.
    """


@hookspec
def register_datasets(register: Callable[[str, type[Dataset]], None]) -> None:
    """Register dataset classes (`cluener.v1`): called once when the registry is built.

    `register(name, cls)` takes a versioned name and a `nlpfw.interfaces.Dataset` subclass.
    """


@hookspec
def register_callbacks(register: Callable[[str, type[Callback]], None]) -> None:
    """Register training callback classes (`fgm.v1`): called once when the registry is built.

    `register(name, cls)` takes a versioned name and a `nlpfw.interfaces.Callback` subclass. A
    recipe turns callbacks on with `[[callbacks]]` tables (`type = "fgm.v1"` plus its options).
    """


@hookspec
def register_commands(cli: click.Group) -> None:
    """Add commands to the `nlpfw` command line: `cli.add_command(command)` or `@cli.command()`.

    It is called once per plugin when a command that is not built in is looked up, or when
    `nlpfw --help` lists the commands. A command whose name a built-in command or an earlier
    plugin already holds is left out with a warning naming both.
    """
