"""docs/recipes.md documents every option of every built-in component and of the trainer."""

from __future__ import annotations

import re
from pathlib import Path

from nlpfw.recipe import TrainerConfig

DOC = (Path(__file__).resolve().parent.parent / "docs" / "recipes.md").read_text(encoding="utf-8")


def _documented_keys(section: str) -> set[str]:
    return set(re.findall(r"^\| `([a-z][a-z0-9_]*)` \|", section, flags=re.M))


def test_every_builtin_component_and_option_is_documented(registry):
    for component in registry:
        assert f"### `{component.name}`" in DOC, component.name
        start = DOC.index("## `[[callbacks]]`" if component.kind == "callback" else f"## `[{component.kind}]`")
        end = DOC.find("\n## ", start + 1)
        keys = _documented_keys(DOC[start : end if end > 0 else None])
        missing = set(component.cls.config_model.model_fields) - keys
        assert not missing, f"{component.kind} {component.name}: {sorted(missing)} not in docs/recipes.md"


def test_every_trainer_option_is_documented():
    section = DOC[DOC.index("## `[trainer]`") :]
    assert _documented_keys(section) == set(TrainerConfig.model_fields)
