"""The plugin manager: built-ins first, then installed entry points in group `nlpfw`.

`NLPFW_LOAD_PLUGINS` limits the entry points loaded to a comma-separated list of entry-point
or distribution names (an empty string loads none); built-ins are always loaded, since they
are the recipe vocabulary. A plugin that fails to import, has a misspelt hook, raises in a
hook or registers a name another plugin holds is recorded in `PluginManager.failures` and
left out; the rest of nlpfw keeps working.
"""

from __future__ import annotations

import importlib
import os
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Any

import pluggy

from nlpfw import __version__, hookspecs
from nlpfw.errors import PluginError, RegistryError
from nlpfw.registry import KINDS, Origin, Registry

ENTRY_POINT_GROUP = "nlpfw"
LOAD_PLUGINS_ENV = "NLPFW_LOAD_PLUGINS"

BUILTIN_PLUGINS = (
    "nlpfw_plugins.ner",
    "nlpfw_plugins.cluener",
    "nlpfw_plugins.peoples_daily",
    "nlpfw_plugins.conll",
    "nlpfw_plugins.jsonl_spans",
    "nlpfw_plugins.label_studio",
    "nlpfw_plugins.doccano",
    "nlpfw_plugins.bert",
    "nlpfw_plugins.bilstm",
    "nlpfw_plugins.crf",
    "nlpfw_plugins.softmax",
    "nlpfw_plugins.textcat",
    "nlpfw_plugins.text_labels",
    "nlpfw_plugins.adversarial",
    "nlpfw_plugins.ema",
    "nlpfw_plugins.tensorboard",
)


@dataclass
class Failure:
    """A plugin that could not be loaded, and why."""

    origin: Origin
    error: str


class PluginManager(pluggy.PluginManager):
    """pluggy's manager plus where each plugin came from (for `list-plugins` and run records)."""

    def __init__(self) -> None:
        super().__init__("nlpfw")
        self.add_hookspecs(hookspecs)
        self.origins: dict[str, Origin] = {}
        self.failures: list[Failure] = []

    def add(self, plugin: Any, origin: Origin) -> bool:
        """Register `plugin`; on a misspelt hook or a second copy, record a failure and leave it out."""
        if self.is_registered(plugin):
            loaded_as = self.get_name(plugin)
            self.failures.append(Failure(origin, f"already loaded as plugin '{loaded_as}'"))
            return False
        try:
            self.register(plugin, name=origin.plugin)
            self.check_pending()
        except Exception as error:  # a broken plugin must not take nlpfw down with it
            if self.is_registered(plugin):
                self.unregister(plugin)
            self.failures.append(Failure(origin, f"{type(error).__name__}: {error}"))
            return False
        self.origins[origin.plugin] = origin
        return True

    def leave_out(self, name: str, origin: Origin, error: str) -> None:
        """Unregister a loaded plugin that turned out broken, and record why."""
        plugin = self.get_plugin(name)
        if plugin is not None:
            self.unregister(plugin)
        self.origins.pop(name, None)
        self.failures.append(Failure(origin, error))


def get_plugin_manager(
    load_entrypoints: bool = True, modules: Iterable[str] = ()
) -> PluginManager:
    """Build a manager with the built-ins, then `modules` (`-p`), then installed entry points."""
    pm = PluginManager()
    for name in BUILTIN_PLUGINS:
        pm.add(importlib.import_module(name), Origin(name, "builtin", "nlpfw", __version__))
    for name in modules:
        origin = Origin(name, "-p")
        try:
            module = importlib.import_module(name)
        except Exception as error:
            pm.failures.append(Failure(origin, f"{type(error).__name__}: {error}"))
            continue
        pm.add(module, origin)
    if load_entrypoints:
        _load_entrypoints(pm, _allowed_names())
    return pm


def _allowed_names() -> set[str] | None:
    value = os.environ.get(LOAD_PLUGINS_ENV)
    if value is None:
        return None
    return {_canonical(part) for part in value.split(",") if part.strip()}


def _canonical(name: str) -> str:
    """Distribution names compare as PyPI does: case and runs of -_. do not matter."""
    return re.sub(r"[-_.]+", "-", name.strip()).lower()


def _load_entrypoints(pm: PluginManager, allowed: set[str] | None) -> None:
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        dist = ep.dist.name if ep.dist is not None else None
        version = ep.dist.version if ep.dist is not None else None
        if allowed is not None and not {_canonical(ep.name), _canonical(dist or "")} & allowed:
            continue
        origin = Origin(ep.name, "entry point", dist, version)
        if pm.has_plugin(ep.name):
            pm.failures.append(Failure(origin, f"a plugin named '{ep.name}' is already loaded"))
            continue
        try:
            plugin = ep.load()
        except Exception as error:
            pm.failures.append(Failure(origin, f"{type(error).__name__}: {error}"))
            continue
        pm.add(plugin, origin)


HOOK_FOR_KIND = {kind: f"register_{kind}s" for kind in KINDS}


def build_registry(pm: PluginManager) -> Registry:
    """Call every plugin's contribution hooks and record which plugin supplied each name.

    The hooks are called one plugin at a time (through pluggy's public `get_hookimpls`), in
    the order the plugins were loaded (built-ins first), so that the registry knows the
    supplier of every name. A plugin whose hook raises, or that registers a malformed name or
    a name another plugin already holds, is left out whole (none of its components stay) and
    recorded in `pm.failures` with a message naming both plugins; the rest keeps working. The
    same faults in a built-in plugin are bugs in nlpfw and raise (`PluginError`,
    `RegistryError`).
    """
    registry = Registry()
    for plugin_name, impls in _impls_by_plugin(pm).items():
        origin = pm.origins.get(plugin_name, Origin(plugin_name, "registered"))
        added: list[tuple[str, str]] = []
        try:
            for kind, hook_name, impl in impls:
                register = _registrar(registry, kind, origin, added)
                try:
                    impl.function(register=register)
                except RegistryError:
                    raise
                except Exception as error:
                    raise PluginError(
                        f"{origin.describe()} failed in {hook_name}: {type(error).__name__}: {error}"
                    ) from error
        except (PluginError, RegistryError) as error:
            if origin.source == "builtin":
                raise
            for kind, name in added:
                registry.remove(kind, name)
            pm.leave_out(plugin_name, origin, str(error))
    return registry


def _impls_by_plugin(pm: PluginManager) -> dict[str, list[tuple[str, str, Any]]]:
    """Each plugin's contribution hook implementations, plugins in load order."""
    by_plugin: dict[str, list[tuple[str, str, Any]]] = {}
    for kind, hook_name in HOOK_FOR_KIND.items():
        for impl in getattr(pm.hook, hook_name).get_hookimpls():
            by_plugin.setdefault(impl.plugin_name, []).append((kind, hook_name, impl))
    order = list(pm.origins)
    return dict(sorted(by_plugin.items(), key=lambda item: order.index(item[0]) if item[0] in order else len(order)))


def _registrar(
    registry: Registry, kind: str, origin: Origin, added: list[tuple[str, str]]
) -> Callable[[str, type], None]:
    def register(name: str, cls: type) -> None:
        registry.add(kind, name, cls, origin)
        added.append((kind, name))

    return register


def plugin_commands(pm: PluginManager, taken: set[str]) -> tuple[dict[str, Any], list[str]]:
    """The commands plugins add through `register_commands`, by name, and the problems: a
    command whose name is `taken` (built in) or already added by an earlier plugin is left out,
    and a hook that raises leaves its plugin's commands out."""
    import click

    commands: dict[str, click.Command] = {}
    owners: dict[str, str] = {}
    problems = []
    for impl in pm.hook.register_commands.get_hookimpls():  # in load order
        origin = pm.origins.get(impl.plugin_name, Origin(impl.plugin_name, "registered"))
        group = click.Group()
        try:
            impl.function(cli=group)
        except Exception as error:
            problems.append(f"{origin.describe()} failed in register_commands: {type(error).__name__}: {error}")
            continue
        for name, command in group.commands.items():
            if name in taken:
                problems.append(f"{origin.describe()} adds the command '{name}', which is built in; left out")
            elif name in commands:
                problems.append(f"{origin.describe()} adds the command '{name}', which {owners[name]} added first; left out")
            else:
                commands[name], owners[name] = command, origin.describe()
    return commands, problems


def plugin_records(pm: PluginManager, registry: Registry) -> list[dict[str, Any]]:
    """One record per plugin (loaded or failed): what `list-plugins` shows and runs save."""
    provides: dict[str, list[str]] = {}
    for component in registry:
        provides.setdefault(component.origin.plugin, []).append(
            f"{component.kind}: {component.name}"
        )
    records = []
    for name, origin in pm.origins.items():
        plugin = pm.get_plugin(name)
        hooks = sorted(caller.name for caller in pm.get_hookcallers(plugin) or [])
        records.append(
            {
                "plugin": name,
                "version": origin.version,
                "source": origin.distribution if origin.source == "entry point" else origin.source,
                "hooks": hooks,
                "provides": provides.get(name, []),
                "error": None,
            }
        )
    for failure in pm.failures:
        origin = failure.origin
        records.append(
            {
                "plugin": origin.plugin,
                "version": origin.version,
                "source": origin.distribution or origin.source,
                "hooks": [],
                "provides": [],
                "error": failure.error,
            }
        )
    return records
