"""Errors a user can cause; the CLI prints them as one screen and exits with 1."""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass


class NlpfwError(Exception):
    """Base of every error caused by input (recipes, data, plugins), not by a bug."""


@dataclass(frozen=True)
class Problem:
    """One thing wrong in a recipe, located by its dotted key (`encoder.dropout`)."""

    where: str
    message: str


class RecipeError(NlpfwError):
    """A recipe failed validation; `problems` lists every problem found, not just the first."""

    def __init__(self, source: str, problems: Sequence[Problem]):
        self.source = source
        self.problems = list(problems)
        super().__init__(self.render())

    def render(self) -> str:
        count = len(self.problems)
        head = f"recipe {self.source} is invalid ({count} problem{'s' if count != 1 else ''})"
        width = max((len(p.where) for p in self.problems), default=0)
        lines = [f"  {p.where.ljust(width)}  {p.message}" for p in self.problems]
        return "\n".join([head, *lines])


class RegistryError(NlpfwError):
    """A component name is malformed, registered twice, or unknown."""


class PluginError(NlpfwError):
    """A plugin could not be imported or registered."""


class DataError(NlpfwError):
    """A data file is missing or malformed; the message names the file (and line)."""


class DeviceError(NlpfwError):
    """The requested device does not exist on this machine."""


class RunDirError(NlpfwError):
    """The output folder cannot be used."""


def did_you_mean(name: str, choices: Iterable[str]) -> str:
    """Return ` (did you mean 'x'?)` for the closest choice, or an empty string."""
    close = difflib.get_close_matches(name, list(choices), n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""
