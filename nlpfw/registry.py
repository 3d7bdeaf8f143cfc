"""Versioned component names (`bert.v1`) mapped to classes and to the plugin that supplied them."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass

from nlpfw.errors import RegistryError, did_you_mean

KINDS = ("task", "encoder", "decoder", "dataset", "callback")
NAME_PATTERN = re.compile(r"^[a-z][a-z0-9_]*\.v[0-9]+$")


@dataclass(frozen=True)
class Origin:
    """Where a plugin came from: `builtin`, an installed distribution, or `-p` on the command line."""

    plugin: str
    source: str
    distribution: str | None = None
    version: str | None = None

    def describe(self) -> str:
        if self.distribution:
            return f"plugin '{self.plugin}' (distribution {self.distribution} {self.version})"
        return f"plugin '{self.plugin}' ({self.source})"


@dataclass(frozen=True)
class Component:
    """One registered component."""

    kind: str
    name: str
    cls: type
    origin: Origin


class Registry:
    """Component classes by kind and name; fails on malformed or duplicate names."""

    def __init__(self) -> None:
        self._components: dict[str, dict[str, Component]] = {kind: {} for kind in KINDS}

    def add(self, kind: str, name: str, cls: type, origin: Origin) -> None:
        if kind not in self._components:
            raise RegistryError(f"unknown component kind '{kind}'; kinds: {', '.join(KINDS)}")
        if not isinstance(name, str) or not NAME_PATTERN.match(name):
            raise RegistryError(
                f"{origin.describe()} registers {kind} {name!r}: names are lower-case and "
                "versioned, like 'bert.v1'"
            )
        existing = self._components[kind].get(name)
        if existing is not None:
            raise RegistryError(
                f"{kind} '{name}' is registered twice: by {existing.origin.describe()} "
                f"and by {origin.describe()}"
            )
        self._components[kind][name] = Component(kind, name, cls, origin)

    def remove(self, kind: str, name: str) -> None:
        """Take a name out again (a plugin left out after it registered it)."""
        self._components[kind].pop(name, None)

    def names(self, kind: str) -> list[str]:
        return sorted(self._components[kind])

    def get(self, kind: str, name: str) -> Component:
        try:
            return self._components[kind][name]
        except KeyError:
            raise RegistryError(self.unknown_message(kind, name)) from None

    def unknown_message(self, kind: str, name: str) -> str:
        names = self.names(kind)
        return (
            f"unknown {kind} {name!r}{did_you_mean(str(name), names)}; "
            f"available: {', '.join(names) or 'none'}"
        )

    def __contains__(self, key: tuple[str, str]) -> bool:
        kind, name = key
        return name in self._components.get(kind, {})

    def __iter__(self) -> Iterator[Component]:
        for kind in KINDS:
            yield from (self._components[kind][n] for n in self.names(kind))
