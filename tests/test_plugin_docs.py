"""docs/plugins.md documents every hook, every fixture of nlpfw.testing and the base classes' methods."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import pytest

from nlpfw import hookspecs, interfaces, testing
from nlpfw.plugins import PluginManager

DOC = (Path(__file__).resolve().parent.parent / "docs" / "plugins.md").read_text(encoding="utf-8")

HOOKSPECS = sorted(
    name
    for name, _ in inspect.getmembers(hookspecs, inspect.isfunction)
    if PluginManager().parse_hookspec_opts(hookspecs, name) is not None
)
FIXTURES = sorted(name for name, value in vars(testing).items() if name.startswith("nlpfw_") and callable(value))


def _section(heading: str) -> str:
    start = DOC.index(heading)
    end = DOC.find("\n## ", start + 1)
    return DOC[start : end if end > 0 else None]


@pytest.mark.parametrize("name", HOOKSPECS)
def test_every_hookspec_is_in_the_hook_reference(name: str) -> None:
    parameters = ", ".join(inspect.signature(getattr(hookspecs, name)).parameters)
    assert f"### `{name}({parameters})`" in _section("## Hook reference"), f"{name} is not documented"


def test_the_hook_reference_documents_no_hook_that_does_not_exist() -> None:
    documented = re.findall(r"^### `([a-z_]+)\(", _section("## Hook reference"), flags=re.M)
    assert sorted(documented) == HOOKSPECS


def test_every_testing_fixture_is_documented() -> None:
    assert FIXTURES  # nlpfw.testing has fixtures
    rows = set(re.findall(r"^\| `(nlpfw_[a-z_]+)` \|", _section("## Testing a plugin"), flags=re.M))
    assert rows == set(FIXTURES)


@pytest.mark.parametrize("cls", [interfaces.Task, interfaces.Encoder, interfaces.Decoder, interfaces.Dataset, interfaces.Callback])
def test_every_method_of_the_base_classes_is_documented(cls: type) -> None:
    own = [name for name, value in vars(cls).items() if not name.startswith("_") and (inspect.isfunction(value) or isinstance(value, (property, classmethod)))]
    article = "an" if cls.__name__[0] in "AEIOU" else "a"
    section = _section(f"## Writing {article} {cls.__name__.lower()}")
    missing = [name for name in own if f"`{name}" not in section]
    assert not missing, f"{cls.__name__}: {missing} not in docs/plugins.md"
