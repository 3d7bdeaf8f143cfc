"""Recipes that come with nlpfw, and `nlpfw init`'s starter recipes.

The built-in recipes are the repository's `recipes/*.toml`, installed as the package
`nlpfw.recipes` (pyproject.toml maps the folder), so `nlpfw run quickstart` works from a
wheel. `starter_recipe` writes a recipe for a task, encoder, decoder and dataset with every
option of each and of the trainer at its default, each under its description (spaCy's
`init config` is the model), that `nlpfw validate` accepts as written.
"""

from __future__ import annotations

import importlib.resources
import textwrap
import tomllib
from pathlib import Path
from typing import Any

import tomli_w
from pydantic import ValidationError
from pydantic.fields import FieldInfo

from nlpfw.errors import NlpfwError, RecipeError, did_you_mean
from nlpfw.interfaces import Config
from nlpfw.recipe import COMPONENT_SECTIONS, TrainerConfig, validate_recipe
from nlpfw.registry import Registry

_CHECKOUT = Path(__file__).resolve().parent.parent / "recipes"  # a source checkout without installing


def recipes_folder() -> Path:
    """Where the built-in recipes are: the installed package `nlpfw.recipes`, else the checkout's `recipes/`."""
    try:
        folder = Path(str(importlib.resources.files("nlpfw.recipes")))
    except ModuleNotFoundError:
        folder = _CHECKOUT
    return folder if folder.is_dir() else _CHECKOUT


def builtin_recipes() -> dict[str, Path]:
    """The built-in recipes by name (the file name without `.toml`)."""
    return {path.stem: path for path in sorted(recipes_folder().glob("*.toml"))}


def find_recipe(argument: str | Path) -> Path:
    """A recipe file: `argument` as a path when it exists, else the built-in recipe of that name
    (`quickstart` or `quickstart.toml`); `RecipeError` listing the built-in ones when neither."""
    path = Path(argument)
    if path.exists() or path.parent != Path("."):
        return path  # a path (load_recipe says if it is missing)
    builtin = builtin_recipes()
    name = path.name.removesuffix(".toml")
    if name in builtin:
        return builtin[name]
    from nlpfw.errors import Problem

    hint = did_you_mean(name, list(builtin))
    raise RecipeError(
        str(argument),
        [Problem("file", f"not found, and no built-in recipe has that name{hint}; built-in recipes: "
                         f"{', '.join(builtin) or 'none'} (nlpfw init writes a new one)")],
    )  # fmt: skip


def starter_recipe(registry: Registry, name: str, choices: dict[str, str]) -> str:
    """TOML text of a recipe for the chosen component names (`{"task": "ner.v1", ...}`): every
    option of each component and of the trainer at its default, under its description; options
    unset by default are commented out. Where a component's defaults alone do not validate (bert.v1
    needs `pretrained` or `vocab`), its required and example-carrying options get their first
    `examples` value from the config model."""
    for kind, chosen in choices.items():
        if (kind, chosen) not in registry:
            raise NlpfwError(f"--{kind}: {registry.unknown_message(kind, chosen)}")
    lines = [
        f"# nlpfw recipe written by `nlpfw init`: every option with its default. Check it with",
        f"# `nlpfw validate {name}.toml`, train with `nlpfw run {name}.toml`; docs/recipes.md explains each.",
        f"name = {_toml(name)}",
        f"description = {_toml(' + '.join(choices[k] for k in ('encoder', 'decoder')) + ' on ' + choices['dataset'])}",
    ]
    for kind in COMPONENT_SECTIONS:
        component = registry.get(kind, choices[kind])
        lines += ["", f"[{kind}]"] + _summary(component.cls) + [f"type = {_toml(component.name)}"]
        lines += _options(component.cls.config_model, _starter_values(kind, component.cls.config_model))
    lines += ["", "[trainer]", *_summary(TrainerConfig)]
    lines += _options(TrainerConfig, {})
    return "\n".join(lines) + "\n"


def check_starter(text: str, registry: Registry, source: str) -> None:
    """Validate the written text as `nlpfw validate` would (`RecipeError` with every problem)."""
    validate_recipe(tomllib.loads(text), registry, source=source)


def _starter_values(kind: str, model: type[Config]) -> dict[str, Any]:
    """Values beyond the defaults that make the section valid: the first example of each
    required option, then of unset options with examples, one at a time, until it validates."""
    values = {key: field.examples[0] for key, field in model.model_fields.items()
              if field.is_required() and field.examples}  # fmt: skip
    optional = [key for key, field in model.model_fields.items()
                if not field.is_required() and field.get_default() is None and field.examples]  # fmt: skip
    while True:
        try:
            model.model_validate(values)
            return values
        except ValidationError:
            if not optional:
                return values  # the plugin gave no examples: the written recipe says what is missing
            key = optional.pop(0)
            values[key] = model.model_fields[key].examples[0]  # type: ignore[index]


def _options(model: type[Config], values: dict[str, Any]) -> list[str]:
    lines: list[str] = []
    for key, field in model.model_fields.items():
        lines += _comment(field)
        if key in values:
            lines.append(f"{key} = {_toml(values[key])}")
        elif field.is_required():
            lines.append(f"{key} = \"\"  # required: fill in")
        else:
            default = field.get_default(call_default_factory=True)
            if default is None:
                example = f" {_toml(field.examples[0])}" if field.examples else ""
                lines.append(f"# {key} ={example}  # unset by default")
            else:
                lines.append(f"{key} = {_toml(default)}")
    return lines


def _summary(cls: type) -> list[str]:
    """The first sentence of a class's docstring, as comment lines."""
    paragraph = " ".join((cls.__doc__ or "").strip().split("\n\n")[0].split())
    if not paragraph:
        return []
    sentence = paragraph.split(". ")[0].rstrip(".") + "."
    return textwrap.wrap(sentence, 96, initial_indent="# ", subsequent_indent="# ")


def _comment(field: FieldInfo) -> list[str]:
    """`# description (constraints)` above an option, when there is something to say."""
    notes = [field.description] if field.description else []
    limits = [f"{word} {getattr(meta, attr)}" for meta in field.metadata
              for attr, word in (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<"))
              if getattr(meta, attr, None) is not None]  # fmt: skip
    text = "; ".join(notes) + (f" ({', '.join(limits)})" if limits else "")
    return textwrap.wrap(text, 96, initial_indent="# ", subsequent_indent="# ") if text else []


def _toml(value: Any) -> str:
    """A TOML value on one line (tables inline)."""
    if isinstance(value, Config):
        value = value.model_dump(mode="json", exclude_none=True)
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{_key(k)} = {_toml(v)}" for k, v in value.items()) + " }" if value else "{}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    if isinstance(value, Path):
        value = str(value)
    if hasattr(value, "value") and not isinstance(value, (str, int, float, bool)):  # an Enum
        value = value.value
    return tomli_w.dumps({"v": value})[len("v = ") :].strip()


def _key(key: str) -> str:
    return tomli_w.dumps({key: 0}).split(" = ")[0]
