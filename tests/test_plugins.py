"""The plugin host: hookspecs, the built-in registry, entry points, `-p`, and `list-plugins`."""

from __future__ import annotations

import inspect
import json
import os
import re
import subprocess
import sys
import textwrap
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click
import pytest
import tomli_w
from click.testing import CliRunner

import nlpfw
from nlpfw import hookspecs
from nlpfw.cli import cli
from nlpfw.errors import PluginError, RegistryError
from nlpfw.hookspecs import hookimpl
from nlpfw.interfaces import Callback, Config, Dataset, Decoder, Encoder, Task
from nlpfw.plugins import (
    BUILTIN_PLUGINS,
    HOOK_FOR_KIND,
    LOAD_PLUGINS_ENV,
    PluginManager,
    build_registry,
    get_plugin_manager,
    plugin_commands,
    plugin_records,
)
from nlpfw.registry import KINDS, Origin, Registry
from nlpfw.testing import registered

ROOT = Path(__file__).resolve().parent.parent

BUILTIN_SNAPSHOT = {
    ("task", "ner.v1"): "nlpfw_plugins.ner",
    ("dataset", "cluener.v1"): "nlpfw_plugins.cluener",
    ("dataset", "peoples_daily_2014.v1"): "nlpfw_plugins.peoples_daily",
    ("dataset", "conll.v1"): "nlpfw_plugins.conll",
    ("dataset", "jsonl_spans.v1"): "nlpfw_plugins.jsonl_spans",
    ("dataset", "label_studio.v1"): "nlpfw_plugins.label_studio",
    ("dataset", "doccano.v1"): "nlpfw_plugins.doccano",
    ("encoder", "bert.v1"): "nlpfw_plugins.bert",
    ("encoder", "bilstm.v1"): "nlpfw_plugins.bilstm",
    ("decoder", "crf.v1"): "nlpfw_plugins.crf",
    ("decoder", "softmax.v1"): "nlpfw_plugins.softmax",
    ("task", "textcat.v1"): "nlpfw_plugins.textcat",
    ("decoder", "classifier.v1"): "nlpfw_plugins.textcat",
    ("dataset", "text_labels.v1"): "nlpfw_plugins.text_labels",
    ("dataset", "sentiment.v1"): "nlpfw_plugins.text_labels",
    ("callback", "fgm.v1"): "nlpfw_plugins.adversarial",
    ("callback", "pgd.v1"): "nlpfw_plugins.adversarial",
    ("callback", "ema.v1"): "nlpfw_plugins.ema",
    ("callback", "tensorboard.v1"): "nlpfw_plugins.tensorboard",
}

HOOKSPEC_NAMES = sorted(
    name
    for name, _ in inspect.getmembers(hookspecs, inspect.isfunction)
    if PluginManager().parse_hookspec_opts(hookspecs, name) is not None
)


# --- fixtures ------------------------------------------------------------------------------


@pytest.fixture
def pm() -> PluginManager:
    """A fresh plugin manager with the built-ins only (no installed entry points)."""
    return get_plugin_manager(load_entrypoints=False)


class TinyTask(Task):
    pass


class TinyDataset(Dataset):
    pass


class TinyEncoderConfig(Config):
    width: int = 8


class TinyEncoder(Encoder):
    config_model = TinyEncoderConfig


class TinyDecoder(Decoder):
    pass


class TinyCallback(Callback):
    pass


@click.command("tiny-command")
def tiny_command() -> None:
    """Say hello."""
    click.echo("hello from a plugin")


class FullPlugin:
    """Implements every contribution hook, one tiny component each."""

    @hookimpl
    def register_tasks(self, register):
        register("tiny.v1", TinyTask)

    @hookimpl
    def register_encoders(self, register):
        register("tiny.v1", TinyEncoder)

    @hookimpl
    def register_decoders(self, register):
        register("tiny.v1", TinyDecoder)

    @hookimpl
    def register_datasets(self, register):
        register("tiny.v1", TinyDataset)

    @hookimpl
    def register_callbacks(self, register):
        register("tiny.v1", TinyCallback)

    @hookimpl
    def register_commands(self, cli):
        cli.add_command(tiny_command)


TINY_CLASSES = {"task": TinyTask, "encoder": TinyEncoder, "decoder": TinyDecoder, "dataset": TinyDataset, "callback": TinyCallback}


@pytest.fixture
def full_plugin(pm: PluginManager) -> Iterator[PluginManager]:
    """`pm` with `FullPlugin` registered as 'full_test'; unregistered in `finally`."""
    plugin = FullPlugin()
    with registered(pm, plugin, "full_test") as added:
        assert added, pm.failures
        yield pm
    assert not pm.is_registered(plugin)


# --- built-ins and hookspecs ---------------------------------------------------------------


def test_builtin_registry_matches_snapshot(pm: PluginManager) -> None:
    registry = build_registry(pm)
    assert {(c.kind, c.name): c.origin.plugin for c in registry} == BUILTIN_SNAPSHOT
    for component in registry:
        assert component.origin == Origin(component.origin.plugin, "builtin", "nlpfw", nlpfw.__version__)
    assert pm.failures == []


def test_builtin_plugin_records(pm: PluginManager) -> None:
    records = plugin_records(pm, build_registry(pm))
    assert [r["plugin"] for r in records] == list(BUILTIN_PLUGINS)
    assert {r["plugin"]: (r["source"], r["version"], r["hooks"], r["provides"], r["error"]) for r in records} == {
        "nlpfw_plugins.ner": ("builtin", "0.1.0", ["register_tasks"], ["task: ner.v1"], None),
        "nlpfw_plugins.cluener": ("builtin", "0.1.0", ["register_datasets"], ["dataset: cluener.v1"], None),
        "nlpfw_plugins.peoples_daily": ("builtin", "0.1.0", ["register_datasets"], ["dataset: peoples_daily_2014.v1"], None),
        "nlpfw_plugins.conll": ("builtin", "0.1.0", ["register_datasets"], ["dataset: conll.v1"], None),
        "nlpfw_plugins.jsonl_spans": ("builtin", "0.1.0", ["register_datasets"], ["dataset: jsonl_spans.v1"], None),
        "nlpfw_plugins.label_studio": ("builtin", "0.1.0", ["register_datasets"], ["dataset: label_studio.v1"], None),
        "nlpfw_plugins.doccano": ("builtin", "0.1.0", ["register_datasets"], ["dataset: doccano.v1"], None),
        "nlpfw_plugins.bert": ("builtin", "0.1.0", ["register_encoders"], ["encoder: bert.v1"], None),
        "nlpfw_plugins.bilstm": ("builtin", "0.1.0", ["register_encoders"], ["encoder: bilstm.v1"], None),
        "nlpfw_plugins.crf": ("builtin", "0.1.0", ["register_decoders"], ["decoder: crf.v1"], None),
        "nlpfw_plugins.softmax": ("builtin", "0.1.0", ["register_decoders"], ["decoder: softmax.v1"], None),
        "nlpfw_plugins.textcat": ("builtin", "0.1.0", ["register_decoders", "register_tasks"],
                                  ["task: textcat.v1", "decoder: classifier.v1"], None),
        "nlpfw_plugins.text_labels": ("builtin", "0.1.0", ["register_datasets"],
                                      ["dataset: sentiment.v1", "dataset: text_labels.v1"], None),
        "nlpfw_plugins.adversarial": ("builtin", "0.1.0", ["register_callbacks"], ["callback: fgm.v1", "callback: pgd.v1"], None),
        "nlpfw_plugins.ema": ("builtin", "0.1.0", ["register_callbacks"], ["callback: ema.v1"], None),
        "nlpfw_plugins.tensorboard": ("builtin", "0.1.0", ["register_callbacks"], ["callback: tensorboard.v1"], None),
    }


def test_hookspecs_are_the_five_contribution_hooks_and_commands() -> None:
    assert HOOKSPEC_NAMES == sorted([*HOOK_FOR_KIND.values(), "register_commands"])
    assert HOOK_FOR_KIND == {kind: f"register_{kind}s" for kind in KINDS}


@pytest.mark.parametrize("name", HOOKSPEC_NAMES)
def test_every_hookspec_has_a_docstring(name: str) -> None:
    doc = inspect.getdoc(getattr(hookspecs, name))
    assert doc, f"hookspec {name} has no docstring"
    assert "called" in doc, f"hookspec {name}'s docstring does not say when it is called"


def test_every_hookspec_is_exercised_by_the_full_plugin() -> None:
    """`FullPlugin` (used below) must implement every hookspec: a new hook needs a test."""
    implemented = sorted(
        name for name, _ in inspect.getmembers(FullPlugin, inspect.isfunction)
        if PluginManager().parse_hookimpl_opts(FullPlugin(), name) is not None
    )  # fmt: skip
    assert implemented == HOOKSPEC_NAMES


def test_full_plugin_components_appear_with_the_plugin_as_origin(full_plugin: PluginManager) -> None:
    registry = build_registry(full_plugin)
    origin = Origin("full_test", "test")
    for kind in KINDS:
        component = registry.get(kind, "tiny.v1")
        assert (component.kind, component.cls, component.origin) == (kind, TINY_CLASSES[kind], origin)
    assert {(c.kind, c.name) for c in registry} == set(BUILTIN_SNAPSHOT) | {(k, "tiny.v1") for k in KINDS}
    [record] = [r for r in plugin_records(full_plugin, registry) if r["plugin"] == "full_test"]
    assert record == {
        "plugin": "full_test",
        "version": None,
        "source": "test",
        "hooks": HOOKSPEC_NAMES,
        "provides": ["task: tiny.v1", "encoder: tiny.v1", "decoder: tiny.v1", "dataset: tiny.v1", "callback: tiny.v1"],
        "error": None,
    }


def test_unregistered_plugin_leaves_the_registry(pm: PluginManager) -> None:
    with registered(pm, FullPlugin(), "full_test"):
        assert ("encoder", "tiny.v1") in build_registry(pm)
    assert {(c.kind, c.name) for c in build_registry(pm)} == set(BUILTIN_SNAPSHOT)


# --- registry errors -----------------------------------------------------------------------


class DuplicateBert:
    @hookimpl
    def register_encoders(self, register):
        register("bert.v1", TinyEncoder)


def test_duplicate_of_a_builtin_leaves_the_plugin_out_naming_both(pm: PluginManager) -> None:
    with registered(pm, DuplicateBert(), "dup_test"):
        registry = build_registry(pm)
        [failure] = pm.failures
        assert failure.origin == Origin("dup_test", "test")
        assert failure.error == (
            "encoder 'bert.v1' is registered twice: by plugin 'nlpfw_plugins.bert' "
            "(distribution nlpfw 0.1.0) and by plugin 'dup_test' (test)"
        )
        assert registry.get("encoder", "bert.v1").origin.plugin == "nlpfw_plugins.bert"
        assert {(c.kind, c.name) for c in registry} == set(BUILTIN_SNAPSHOT)
        assert "dup_test" not in pm.origins
        records = plugin_records(pm, registry)
        assert records[-1]["plugin"] == "dup_test" and records[-1]["error"] == failure.error


def test_duplicate_between_two_test_plugins_leaves_the_second_out_whole(pm: PluginManager) -> None:
    with registered(pm, FullPlugin(), "first_test"), registered(pm, FullPlugin(), "second_test"):
        registry = build_registry(pm)
        [failure] = pm.failures
        assert failure.origin.plugin == "second_test"
        assert failure.error == (
            "task 'tiny.v1' is registered twice: by plugin 'first_test' (test) and by plugin 'second_test' (test)"
        )
        for kind in KINDS:  # all four of first_test's components, none of second_test's
            assert registry.get(kind, "tiny.v1").origin.plugin == "first_test"
        assert build_registry(pm).names("task") == registry.names("task")  # built again: the same
        assert len(pm.failures) == 1


def test_builtin_duplicate_is_a_bug_that_raises() -> None:
    pm = get_plugin_manager(load_entrypoints=False)
    twin = DuplicateBert()
    pm.add(twin, Origin("nlpfw_plugins.twin", "builtin", "nlpfw", nlpfw.__version__))
    with pytest.raises(RegistryError, match=r"^encoder 'bert.v1' is registered twice: by plugin 'nlpfw_plugins.bert'"):
        build_registry(pm)


@pytest.mark.parametrize("name", ["Bert", "bert", "bert.V1", "bert-base.v1", "bert.v", "1bert.v1", "bert.v1 "])
def test_malformed_name_is_rejected(pm: PluginManager, name: str) -> None:
    class BadName:
        @hookimpl
        def register_encoders(self, register):
            register(name, TinyEncoder)

    with registered(pm, BadName(), "bad_name_test"):
        registry = build_registry(pm)
        [failure] = pm.failures
        assert failure.error == (
            f"plugin 'bad_name_test' (test) registers encoder {name!r}: names are lower-case "
            "and versioned, like 'bert.v1'"
        )
        assert {(c.kind, c.name) for c in registry} == set(BUILTIN_SNAPSHOT)


class CommandClash:
    @hookimpl
    def register_commands(self, cli):
        @cli.command("run")
        def shadow() -> None:
            """Not the real run."""

        cli.add_command(tiny_command)


def test_plugin_commands_never_replace_a_builtin_or_an_earlier_plugins(full_plugin: PluginManager) -> None:
    with registered(full_plugin, CommandClash(), "clash_test") as added:
        assert added
        commands, problems = plugin_commands(full_plugin, set(cli.commands))
    assert list(commands) == ["tiny-command"] and commands["tiny-command"] is tiny_command
    assert problems == [
        "plugin 'clash_test' (test) adds the command 'run', which is built in; left out",
        "plugin 'clash_test' (test) adds the command 'tiny-command', which plugin 'full_test' (test) added first; left out",
    ]


def test_registry_rejects_unknown_kind() -> None:
    with pytest.raises(RegistryError, match=r"^unknown component kind 'tokenizer'; kinds: task, encoder, decoder, dataset, callback$"):
        Registry().add("tokenizer", "bpe.v1", object, Origin("x", "test"))


def test_unknown_name_suggests_and_lists(pm: PluginManager) -> None:
    registry = build_registry(pm)
    expected = "unknown encoder 'bret.v1' (did you mean 'bert.v1'?); available: bert.v1, bilstm.v1"
    assert registry.unknown_message("encoder", "bret.v1") == expected
    with pytest.raises(RegistryError, match=f"^{re.escape(expected)}$"):
        registry.get("encoder", "bret.v1")
    with pytest.raises(RegistryError, match=r"^unknown decoder 'span.v1'; available: classifier.v1, crf.v1, softmax.v1$"):
        registry.get("decoder", "span.v1")
    with pytest.raises(RegistryError, match=r"^unknown task 'ner.v1'; available: none$"):
        Registry().get("task", "ner.v1")


def test_hook_that_raises_leaves_the_plugin_out_naming_it(pm: PluginManager) -> None:
    class Broken:
        @hookimpl
        def register_encoders(self, register):
            register("half.v1", TinyEncoder)  # registered before the failure: must not stay

        @hookimpl
        def register_decoders(self, register):
            raise RuntimeError("no GPU kernels")

    with registered(pm, Broken(), "broken_test"):
        registry = build_registry(pm)
        [failure] = pm.failures
        assert failure.error == "plugin 'broken_test' (test) failed in register_decoders: RuntimeError: no GPU kernels"
        assert {(c.kind, c.name) for c in registry} == set(BUILTIN_SNAPSHOT)


def test_builtin_hook_that_raises_is_a_plugin_error() -> None:
    class Broken:
        @hookimpl
        def register_decoders(self, register):
            raise RuntimeError("no GPU kernels")

    pm = get_plugin_manager(load_entrypoints=False)
    pm.add(Broken(), Origin("nlpfw_plugins.broken", "builtin", "nlpfw", nlpfw.__version__))
    expected = "plugin 'nlpfw_plugins.broken' (distribution nlpfw 0.1.0) failed in register_decoders: RuntimeError: no GPU kernels"
    with pytest.raises(PluginError, match=f"^{re.escape(expected)}$"):
        build_registry(pm)


# --- misspelt hooks ------------------------------------------------------------------------


class MisspeltHook:
    @hookimpl
    def register_encoder(self, register):  # no "s": not a hook nlpfw knows
        register("misspelt.v1", TinyEncoder)


class WrongArgument:
    @hookimpl
    def register_encoders(self, reg):
        reg("wrong_arg.v1", TinyEncoder)


@pytest.mark.parametrize(
    ("plugin", "error"),
    [
        (MisspeltHook(), r"^PluginValidationError: unknown hook 'register_encoder' in plugin "),
        (WrongArgument(), r"^PluginValidationError: Plugin 'bad_hook_test' for hook 'register_encoders'"),
    ],
    ids=["misspelt-name", "wrong-argument"],
)
def test_plugin_with_a_bad_hook_is_left_out(pm: PluginManager, plugin: Any, error: str) -> None:
    with registered(pm, plugin, "bad_hook_test") as added:
        assert added is False
        assert not pm.is_registered(plugin)
        assert "bad_hook_test" not in pm.origins
        [failure] = pm.failures
        assert failure.origin == Origin("bad_hook_test", "test")
        assert re.search(error, failure.error), failure.error
        registry = build_registry(pm)
        assert {(c.kind, c.name): c.origin.plugin for c in registry} == BUILTIN_SNAPSHOT
        records = plugin_records(pm, registry)
        assert [r["plugin"] for r in records] == [*BUILTIN_PLUGINS, "bad_hook_test"]
        assert records[-1] == {
            "plugin": "bad_hook_test", "version": None, "source": "test",
            "hooks": [], "provides": [], "error": failure.error,
        }  # fmt: skip


# --- installed distributions (entry points) ------------------------------------------------

TESTPLUGIN_SOURCE = '''
"""A fake installed nlpfw plugin (distribution nlpfw-testplugin)."""
from nlpfw.hookspecs import hookimpl
from nlpfw.interfaces import Decoder, Encoder, EncoderConfig


class TinyTestConfig(EncoderConfig):
    width: int = 8


class TinyTestEncoder(Encoder):
    config_model = TinyTestConfig


class TinyTestDecoder(Decoder):
    pass


@hookimpl
def register_encoders(register):
    register("tiny_test.v1", TinyTestEncoder)


@hookimpl
def register_decoders(register):
    register("tiny_test.v1", TinyTestDecoder)
'''

DEVPLUGIN_SOURCE = '''
"""An uninstalled plugin module, loaded with `-p`."""
from nlpfw.hookspecs import hookimpl
from nlpfw.interfaces import Decoder


class DevDecoder(Decoder):
    pass


@hookimpl
def register_decoders(register):
    register("dev_test.v1", DevDecoder)
'''

SITE_PLUGINS = ("testplugin", "broken", "duplicate")  # entry points the tests below install
FAKE_MODULES = ("nlpfw_testplugin", "nlpfw_broken", "nlpfw_testplugin_twin", "nlpfw_devplugin", "nlpfw_duplicate")

TESTPLUGIN_RECORD = {
    "plugin": "testplugin",
    "version": "1.2.3",
    "source": "nlpfw-testplugin",
    "hooks": ["register_decoders", "register_encoders"],
    "provides": ["encoder: tiny_test.v1", "decoder: tiny_test.v1"],
    "error": None,
}


def install(root: Path, module: str, source: str, dist: str, version: str, entry_point: str) -> None:
    """Write `module.py` and a `.dist-info` folder declaring it as an `nlpfw` entry point."""
    (root / f"{module}.py").write_text(textwrap.dedent(source), encoding="utf-8")
    info = root / f"{dist.replace('-', '_')}-{version}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(
        f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n", encoding="utf-8"
    )
    (info / "entry_points.txt").write_text(f"[nlpfw]\n{entry_point} = {module}\n", encoding="utf-8")


def install_testplugin(root: Path) -> None:
    install(root, "nlpfw_testplugin", TESTPLUGIN_SOURCE, "nlpfw-testplugin", "1.2.3", "testplugin")


@pytest.fixture
def clean_modules() -> Iterator[None]:
    """Forget the fake plugin modules, so that each test imports its own copy."""
    try:
        yield
    finally:
        for name in FAKE_MODULES:
            sys.modules.pop(name, None)


@pytest.fixture
def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, clean_modules: None) -> Path:
    """A folder on sys.path holding the fake distribution nlpfw-testplugin 1.2.3."""
    install_testplugin(tmp_path)
    # only this folder's distributions: others installed here (nlpfw-globalpointer) stay out
    monkeypatch.setenv(LOAD_PLUGINS_ENV, ",".join(SITE_PLUGINS))
    monkeypatch.syspath_prepend(str(tmp_path))
    return tmp_path


def loaded_names(pm: PluginManager) -> set[str]:
    return {name for name, origin in pm.origins.items() if origin.source != "builtin"}


def test_installed_plugin_is_loaded(site: Path) -> None:
    pm = get_plugin_manager()
    assert loaded_names(pm) == {"testplugin"}
    assert pm.failures == []
    registry = build_registry(pm)
    origin = Origin("testplugin", "entry point", "nlpfw-testplugin", "1.2.3")
    assert registry.get("encoder", "tiny_test.v1").origin == origin
    assert registry.get("decoder", "tiny_test.v1").origin == origin
    assert issubclass(registry.get("encoder", "tiny_test.v1").cls, Encoder)
    records = plugin_records(pm, registry)
    assert [r["plugin"] for r in records] == [*BUILTIN_PLUGINS, "testplugin"]
    assert records[-1] == TESTPLUGIN_RECORD


def test_load_entrypoints_false_skips_installed_plugins(site: Path) -> None:
    pm = get_plugin_manager(load_entrypoints=False)
    assert loaded_names(pm) == set()
    assert "nlpfw_testplugin" not in sys.modules


@pytest.mark.parametrize(
    ("value", "loaded"),
    [
        ("", False),
        ("testplugin", True),
        ("nlpfw-testplugin", True),
        (" other , testplugin ", True),
        ("other", False),
        (",", False),
    ],
)
def test_load_plugins_env_limits_entry_points(
    site: Path, monkeypatch: pytest.MonkeyPatch, value: str, loaded: bool
) -> None:
    monkeypatch.setenv(LOAD_PLUGINS_ENV, value)
    pm = get_plugin_manager()
    assert loaded_names(pm) == ({"testplugin"} if loaded else set())
    assert pm.failures == []
    registry = build_registry(pm)
    assert (("encoder", "tiny_test.v1") in registry) is loaded
    assert {(c.kind, c.name) for c in registry if c.origin.source == "builtin"} == set(BUILTIN_SNAPSHOT)


def test_entry_point_that_fails_to_import_is_a_failure(site: Path) -> None:
    install(
        site, "nlpfw_broken", 'raise ImportError("needs the missing library nlpfw_missing_dep")\n',
        "nlpfw-broken", "0.0.1", "broken",
    )  # fmt: skip
    pm = get_plugin_manager()
    [failure] = pm.failures
    assert failure.origin == Origin("broken", "entry point", "nlpfw-broken", "0.0.1")
    assert failure.error == "ImportError: needs the missing library nlpfw_missing_dep"
    assert failure.origin.describe() == "plugin 'broken' (distribution nlpfw-broken 0.0.1)"
    assert loaded_names(pm) == {"testplugin"}
    registry = build_registry(pm)
    assert ("encoder", "tiny_test.v1") in registry
    records = {r["plugin"]: r for r in plugin_records(pm, registry)}
    assert records["broken"] == {
        "plugin": "broken", "version": "0.0.1", "source": "nlpfw-broken",
        "hooks": [], "provides": [], "error": "ImportError: needs the missing library nlpfw_missing_dep",
    }  # fmt: skip
    assert records["testplugin"] == TESTPLUGIN_RECORD


def test_cli_warns_about_a_broken_entry_point_and_keeps_working(site: Path) -> None:
    install(site, "nlpfw_broken", 'raise ImportError("nope")\n', "nlpfw-broken", "0.0.1", "broken")
    result = CliRunner().invoke(cli, ["list-plugins", "--json"])
    assert result.exit_code == 0, result.output
    assert result.stderr == (
        "Warning: plugin 'broken' (distribution nlpfw-broken 0.0.1) was not loaded: ImportError: nope\n"
    )
    records = {r["plugin"]: r for r in json.loads(result.stdout)}
    assert records["broken"]["error"] == "ImportError: nope"
    assert records["testplugin"] == TESTPLUGIN_RECORD


DUPLICATE_SOURCE = '''
"""An installed plugin whose decoder name is a built-in's."""
from nlpfw.hookspecs import hookimpl
from nlpfw.interfaces import Decoder, Encoder


class MyEncoder(Encoder):
    pass


class MyCrf(Decoder):
    pass


@hookimpl
def register_encoders(register):
    register("mine.v1", MyEncoder)


@hookimpl
def register_decoders(register):
    register("crf.v1", MyCrf)
'''


def test_installed_plugin_with_a_duplicate_name_is_left_out_naming_the_distribution(site: Path) -> None:
    install(site, "nlpfw_duplicate", DUPLICATE_SOURCE, "nlpfw-duplicate", "0.3.0", "duplicate")
    result = CliRunner().invoke(cli, ["list-plugins", "--json"])
    assert result.exit_code == 0, result.output
    assert result.stderr == (
        "Warning: plugin 'duplicate' (distribution nlpfw-duplicate 0.3.0) was not loaded: decoder 'crf.v1' "
        "is registered twice: by plugin 'nlpfw_plugins.crf' (distribution nlpfw 0.1.0) and by plugin "
        "'duplicate' (distribution nlpfw-duplicate 0.3.0)\n"
    )
    records = {r["plugin"]: r for r in json.loads(result.stdout)}
    assert records["duplicate"]["source"] == "nlpfw-duplicate" and records["duplicate"]["provides"] == []
    assert "registered twice" in records["duplicate"]["error"]
    assert records["testplugin"] == TESTPLUGIN_RECORD  # the rest keeps working
    assert records["nlpfw_plugins.crf"]["provides"] == ["decoder: crf.v1"]
    registry = build_registry(get_plugin_manager())
    assert ("encoder", "mine.v1") not in registry  # left out whole, not half
    assert registry.get("decoder", "crf.v1").origin.plugin == "nlpfw_plugins.crf"


def test_cli_warns_about_a_misspelt_hook_naming_the_distribution(site: Path) -> None:
    install(
        site, "nlpfw_broken", "from nlpfw.hookspecs import hookimpl\n\n@hookimpl\n"
        "def register_decoder(register):\n    pass\n", "nlpfw-broken", "0.0.1", "broken",
    )  # fmt: skip
    result = CliRunner().invoke(cli, ["list-plugins", "--json"])
    assert result.exit_code == 0, result.output
    assert result.stderr.startswith(
        "Warning: plugin 'broken' (distribution nlpfw-broken 0.0.1) was not loaded: "
        "PluginValidationError: unknown hook 'register_decoder' in plugin "
    )
    assert result.stderr.count("\n") == 1
    records = {r["plugin"]: r for r in json.loads(result.stdout)}
    assert records["broken"]["error"].startswith("PluginValidationError: unknown hook 'register_decoder'")
    assert records["testplugin"] == TESTPLUGIN_RECORD


def test_two_distributions_with_one_entry_point_name(site: Path) -> None:
    install(site, "nlpfw_testplugin_twin", DEVPLUGIN_SOURCE, "nlpfw-twin", "2.0", "testplugin")
    pm = get_plugin_manager()
    assert loaded_names(pm) == {"testplugin"}
    [failure] = pm.failures
    assert failure.origin.plugin == "testplugin"
    assert failure.error == "a plugin named 'testplugin' is already loaded"
    loaded = pm.origins["testplugin"].distribution
    assert {loaded, failure.origin.distribution} == {"nlpfw-testplugin", "nlpfw-twin"}


def test_p_module_that_is_also_installed_keeps_its_components(site: Path) -> None:
    """`-p nlpfw_testplugin` while nlpfw-testplugin is installed: the module is loaded once.

    The entry point finds the module already registered (by `-p`); that second registration
    may fail, but the first must stay, with its components.
    """
    pm = get_plugin_manager(modules=["nlpfw_testplugin"])
    registry = build_registry(pm)
    assert ("encoder", "tiny_test.v1") in registry
    assert ("decoder", "tiny_test.v1") in registry


def test_p_module_that_is_a_builtin_keeps_the_builtin() -> None:
    """`-p nlpfw_plugins.crf` repeats a built-in: crf.v1 must not vanish from the registry."""
    pm = get_plugin_manager(load_entrypoints=False, modules=["nlpfw_plugins.crf"])
    registry = build_registry(pm)
    assert {(c.kind, c.name) for c in registry} == set(BUILTIN_SNAPSHOT)


def test_p_module_that_does_not_import_is_a_failure() -> None:
    pm = get_plugin_manager(load_entrypoints=False, modules=["nlpfw_no_such_module"])
    [failure] = pm.failures
    assert failure.origin == Origin("nlpfw_no_such_module", "-p")
    assert failure.error == "ModuleNotFoundError: No module named 'nlpfw_no_such_module'"
    assert {(c.kind, c.name) for c in build_registry(pm)} == set(BUILTIN_SNAPSHOT)


# --- the command line, in a subprocess (a real installed distribution) ---------------------


@pytest.fixture(scope="module")
def cli_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder for PYTHONPATH: nlpfw-testplugin (installed) and nlpfw_devplugin (not)."""
    root = tmp_path_factory.mktemp("site")
    install_testplugin(root)
    (root / "nlpfw_devplugin.py").write_text(textwrap.dedent(DEVPLUGIN_SOURCE), encoding="utf-8")
    return root


def nlpfw_cli(site: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    env.update(PYTHONPATH=str(site), COLUMNS="200", NO_COLOR="1", **{LOAD_PLUGINS_ENV: ",".join(SITE_PLUGINS)})
    return subprocess.run(
        [sys.executable, "-m", "nlpfw", *args],
        cwd=site, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip


@pytest.fixture(scope="module")
def listed_json(cli_site: Path) -> list[dict[str, Any]]:
    """`nlpfw -p nlpfw_devplugin list-plugins --json`, run once for the tests below."""
    result = nlpfw_cli(cli_site, "-p", "nlpfw_devplugin", "list-plugins", "--json")
    assert (result.returncode, result.stderr) == (0, ""), result.stderr
    return json.loads(result.stdout)


def test_cli_list_plugins_json_shows_the_installed_plugin(listed_json: list[dict[str, Any]]) -> None:
    records = {r["plugin"]: r for r in listed_json}
    assert records["testplugin"] == TESTPLUGIN_RECORD
    assert [r["plugin"] for r in listed_json][: len(BUILTIN_PLUGINS)] == list(BUILTIN_PLUGINS)


def test_cli_p_module_is_listed_with_source_p(listed_json: list[dict[str, Any]]) -> None:
    records = {r["plugin"]: r for r in listed_json}
    assert records["nlpfw_devplugin"] == {
        "plugin": "nlpfw_devplugin",
        "version": None,
        "source": "-p",
        "hooks": ["register_decoders"],
        "provides": ["decoder: dev_test.v1"],
        "error": None,
    }
    assert sorted(records) == sorted([*BUILTIN_PLUGINS, "testplugin", "nlpfw_devplugin"])


def test_cli_list_plugins_table_shows_the_installed_plugin(cli_site: Path) -> None:
    result = nlpfw_cli(cli_site, "list-plugins")
    assert (result.returncode, result.stderr) == (0, "")
    [row] = [line for line in result.stdout.splitlines() if "testplugin" in line]
    cells = [cell.strip() for cell in re.split(r"[│|]", row) if cell.strip()]
    assert cells[:4] == ["testplugin", "1.2.3", "nlpfw-testplugin", "register_decoders"]
    assert "encoder: tiny_test.v1" in cells[4]
    assert "nlpfw plugins" in result.stdout
    assert "nlpfw_plugins.bert" in result.stdout


def test_cli_validate_recipe_using_the_installed_plugin(cli_site: Path, tmp_path: Path) -> None:
    data = tomllib.loads((ROOT / "recipes" / "quickstart.toml").read_text(encoding="utf-8"))
    data["encoder"] = {"type": "tiny_test.v1", "width": 16}
    recipe = tmp_path / "tiny.toml"
    recipe.write_text(tomli_w.dumps(data), encoding="utf-8")
    result = nlpfw_cli(cli_site, "validate", str(recipe))
    assert (result.returncode, result.stderr) == (0, "")
    assert result.stdout == f"{recipe}: ok (ner.v1, cluener.v1, tiny_test.v1 + crf.v1)\n"
