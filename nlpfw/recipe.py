"""TOML recipes: parse, apply `--set` overrides, and validate every section at once.

Validation runs in phases (top-level keys, then each section's `type`, then each section's
keys against that component's config model) and collects every problem before raising one
`RecipeError`, so a user fixes a recipe in one pass.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

import tomli_w
from pydantic import Field, ValidationError, model_validator

from nlpfw.errors import Problem, RecipeError, did_you_mean
from nlpfw.interfaces import Config
from nlpfw.registry import Component, Registry

COMPONENT_SECTIONS = ("task", "dataset", "encoder", "decoder")
SECTIONS = (*COMPONENT_SECTIONS, "trainer", "callbacks")
TOP_LEVEL_KEYS = ("name", "description")


class TrainerConfig(Config):
    """Options of the training loop (the `[trainer]` section)."""

    epochs: int = Field(default=5, ge=1, description="passes over the training data")
    max_steps: int | None = Field(
        default=None, ge=1, description="stop after this many optimizer steps (smoke tests)"
    )
    batch_size: int = Field(default=24, ge=1, description="training batch")
    eval_batch_size: int = Field(default=64, ge=1, description="evaluation batch")
    lr: float = Field(default=3e-5, gt=0, description="learning rate of the encoder")
    weight_decay: float = Field(default=0.01, ge=0, description="AdamW weight decay (none on biases and norms)")
    adam_epsilon: float = Field(default=1e-8, gt=0, description="AdamW epsilon")
    warmup_ratio: float = Field(default=0.1, ge=0, le=1, description="share of the steps with linear warm-up, then linear decay to 0")
    max_grad_norm: float | None = Field(default=1.0, gt=0, description="gradient clipping")
    grad_accum_steps: int = Field(default=1, ge=1, description="batches accumulated per optimizer step")
    seed: int = Field(default=42, description="seeds Python, NumPy, torch and the shuffling")
    device: str = Field(default="auto", pattern=r"^(auto|cpu|mps|cuda(:[0-9]+)?)$", description="auto (CUDA, then MPS, then CPU), cpu, mps, cuda or cuda:N")
    amp: bool = Field(
        default=True, description="mixed precision: on CUDA, and in training on CPUs with bf16 matrix units"
    )
    compile: bool = Field(default=False, description="torch.compile the encoder")
    fast_dropout: bool = Field(
        default=True, description="on a CPU, dropout masks from 16 random bits an element (p to 1/65536), "
        "2x cheaper than torch's (nlpfw.dropout)",
    )  # fmt: skip
    bucket_batches: int = Field(
        default=100, ge=1, description="batches per length bucket (1: plain shuffled batches)"
    )
    patience: int | None = Field(
        default=None, ge=1, description="stop after this many evaluations without a better main dev score"
    )
    log_every: int = Field(default=20, ge=1, description="steps between loss read-outs")
    checkpoint_every: int | None = Field(
        default=500, ge=1, description="optimizer steps between checkpoints (also at each epoch end)"
    )
    on_nan: Literal["stop", "skip"] = Field(
        default="stop", description="a NaN or infinite loss stops the run, or its batch is skipped"
    )
    window: int | None = Field(
        default=None, ge=2, description="characters per window (default: the encoder's limit)"
    )
    stride: int | None = Field(
        default=None, ge=0, description="characters shared by neighbouring windows (default: window // 4)"
    )
    threads: int | None = Field(default=None, ge=1, description="CPU threads torch computes with (default: the cores this process may use, divided among the local ranks; OMP_NUM_THREADS if set)")
    tensorboard: bool = Field(
        default=False,
        description="log each epoch to RUN_DIR/tensorboard (needs tensorboard): a shorthand for a tensorboard.v1 callback",
    )

    @model_validator(mode="after")
    def _stride_below_window(self) -> TrainerConfig:
        if self.window is not None and self.stride is not None and self.stride >= self.window:
            raise ValueError(f"stride {self.stride} must be smaller than window {self.window}")
        return self


@dataclass(frozen=True)
class Section:
    """A validated component section: its registered component and its options."""

    component: Component
    config: Config

    @property
    def type(self) -> str:
        return self.component.name


@dataclass(frozen=True)
class Recipe:
    """A validated recipe."""

    source: str
    name: str
    description: str
    task: Section
    dataset: Section
    encoder: Section
    decoder: Section
    trainer: TrainerConfig
    callbacks: tuple[Section, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """The resolved recipe: every default filled in (unset optional values left out)."""
        data: dict[str, Any] = {"name": self.name}
        if self.description:
            data["description"] = self.description
        for key in COMPONENT_SECTIONS:
            section: Section = getattr(self, key)
            data[key] = {"type": section.type, **_dump(section.config)}
        data["trainer"] = _dump(self.trainer)
        if self.callbacks:
            data["callbacks"] = [{"type": section.type, **_dump(section.config)} for section in self.callbacks]
        return data

    def for_model(self) -> Recipe:
        """The recipe a saved model keeps: without the training callbacks, which predicting
        does not need (nor their plugins installed)."""
        return replace(self, callbacks=())

    def to_toml(self) -> str:
        return tomli_w.dumps(self.to_dict())


def _dump(config: Config) -> dict[str, Any]:
    return config.model_dump(mode="json", exclude_none=True)


def read_toml(path: Path) -> dict[str, Any]:
    """Parse a TOML file; syntax errors name the file, line and column."""
    try:
        text = path.read_text(encoding="utf-8").removeprefix("\ufeff")  # a byte-order mark is no statement
    except FileNotFoundError:
        raise RecipeError(str(path), [Problem("file", "not found")]) from None
    except IsADirectoryError:
        raise RecipeError(str(path), [Problem("file", "is a folder; give a recipe file (.toml)")]) from None
    except UnicodeDecodeError as error:
        raise RecipeError(str(path), [Problem("file", f"not UTF-8 text: {error}")]) from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise RecipeError(str(path), [Problem("toml", str(error))]) from None


def parse_override(assignment: str) -> tuple[list[str], Any]:
    """`encoder.dropout=0.2` -> (['encoder', 'dropout'], 0.2). Values are read as TOML, else text."""
    key, sep, raw = assignment.partition("=")
    keys = [part.strip() for part in key.split(".")]
    if not sep or not all(keys):
        raise ValueError(f"--set {assignment!r}: expected KEY=VALUE, like trainer.epochs=1")
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw
    return keys, value


def apply_overrides(data: dict[str, Any], overrides: Sequence[str]) -> list[Problem]:
    """Set each `KEY=VALUE` in `data` in place; return the problems with the overrides."""
    problems = []
    for assignment in overrides:
        try:
            keys, value = parse_override(assignment)
        except ValueError as error:
            problems.append(Problem("--set", str(error)))
            continue
        table = data
        for depth, key in enumerate(keys[:-1]):
            table = table.setdefault(key, {})
            if not isinstance(table, dict):
                where = ".".join(keys[: depth + 1])
                problems.append(Problem(where, f"--set {assignment!r}: '{where}' is not a table"))
                break
        else:
            if isinstance(table.get(keys[-1]), dict) and isinstance(value, dict):
                where = ".".join(keys)
                problems.append(Problem(where, f"--set {assignment!r} would replace the whole [{where}] table; "
                                               f"set its keys one at a time, like {where}.KEY=VALUE"))  # fmt: skip
                continue
            table[keys[-1]] = value
    return problems


def load_recipe(path: str | Path, registry: Registry, overrides: Sequence[str] = ()) -> Recipe:
    """Read, override and validate a recipe file; raise `RecipeError` with every problem."""
    path = Path(path)
    data = read_toml(path)
    problems = apply_overrides(data, overrides)
    return validate_recipe(data, registry, source=str(path), problems=problems)


def validate_recipe(
    data: dict[str, Any],
    registry: Registry,
    source: str = "<recipe>",
    problems: list[Problem] | None = None,
) -> Recipe:
    """Validate parsed recipe data against the registry's components."""
    problems = list(problems or [])
    allowed = (*TOP_LEVEL_KEYS, *SECTIONS)
    for key, value in data.items():
        if key not in allowed:
            kind = "section" if isinstance(value, dict) else "key"
            problems.append(
                Problem(key, f"unknown {kind}{did_you_mean(key, allowed)}; allowed: {', '.join(allowed)}")
            )
    for key in TOP_LEVEL_KEYS:
        if key in data and not isinstance(data[key], str):
            problems.append(Problem(key, f"expected a string, got {data[key]!r}"))
    if isinstance(data.get("name"), str) and not re.fullmatch(r"[\w][\w.+-]*", data["name"]):
        problems.append(Problem("name", f"{data['name']!r} is not a plain name (letters, digits, '-', '_', '.', "
                                        "'+'; no '/'): it names the run folder runs/<name>-<time>"))  # fmt: skip

    sections: dict[str, Section] = {}
    for key in COMPONENT_SECTIONS:
        section = _validate_component(key, data.get(key), registry, problems)
        if section is not None:
            sections[key] = section
    trainer = _validate_config("trainer", TrainerConfig, data.get("trainer", {}), problems)
    callbacks = _validate_callbacks(data.get("callbacks", []), registry, problems)

    if problems:
        raise RecipeError(source, problems)
    assert trainer is not None
    name = data.get("name") or Path(source).stem
    return Recipe(
        source=source,
        name=name,
        description=data.get("description", ""),
        trainer=trainer,  # type: ignore[arg-type]
        callbacks=tuple(callbacks),
        **sections,
    )


def _validate_component(
    key: str, table: Any, registry: Registry, problems: list[Problem], kind: str | None = None
) -> Section | None:
    """Validate the section `key` (a component of `kind`, by default the section's name)."""
    kind = kind or key
    if table is None:
        names = ", ".join(registry.names(kind)) or "none"
        problems.append(Problem(key, f"section is missing; add [{key}] with a type ({names})"))
        return None
    if not isinstance(table, dict):
        problems.append(Problem(key, f"expected a table, got {table!r}"))
        return None
    options = dict(table)
    name = options.pop("type", None)
    if name is None:
        names = ", ".join(registry.names(kind)) or "none"
        problems.append(Problem(f"{key}.type", f"required key is missing; available: {names}"))
        return None
    if (kind, name) not in registry:
        problems.append(Problem(f"{key}.type", registry.unknown_message(kind, name)))
        return None
    component = registry.get(kind, name)
    config = _validate_config(key, component.cls.config_model, options, problems)
    return None if config is None else Section(component, config)


def _validate_callbacks(tables: Any, registry: Registry, problems: list[Problem]) -> list[Section]:
    """`[[callbacks]]` tables, in order; problems name them `callbacks[N]`, counted from 1."""
    if not isinstance(tables, list):
        problems.append(Problem("callbacks", "expected [[callbacks]] tables (an array of tables), "
                                             f"got {tables!r}"))  # fmt: skip
        return []
    sections = []
    for number, table in enumerate(tables, 1):
        section = _validate_component(f"callbacks[{number}]", table, registry, problems, kind="callback")
        if section is not None:
            sections.append(section)
    adversarial = [section.type for section in sections if section.component.cls.extra_passes]
    if len(adversarial) > 1:
        problems.append(Problem("callbacks", f"{' and '.join(adversarial)} both run extra passes over each "
                                             "batch; a recipe can use one of them"))  # fmt: skip
    return sections


def _validate_config(
    section: str, model: type[Config], options: Any, problems: list[Problem]
) -> Config | None:
    if not isinstance(options, dict):
        problems.append(Problem(section, f"expected a table, got {options!r}"))
        return None
    try:
        return model.model_validate(options)
    except ValidationError as error:
        problems.extend(_problems_from(section, model, error))
        return None


def _problems_from(section: str, model: type[Config], error: ValidationError) -> list[Problem]:
    fields = list(model.model_fields)
    problems = []
    for item in error.errors():
        loc = ".".join(str(part) for part in item["loc"])
        where = f"{section}.{loc}" if loc else section
        if item["type"] == "extra_forbidden":
            hint = did_you_mean(str(item["loc"][-1]), fields)
            message = f"unknown key{hint}" if hint else f"unknown key; keys: {', '.join(fields)}"
        elif item["type"] == "missing":
            message = "required key is missing"
        elif not loc:
            message = item["msg"].removeprefix("Value error, ")
        else:
            message = f"{item['msg'].removeprefix('Value error, ')}, got {item['input']!r}"
        problems.append(Problem(where, message))
    return problems
