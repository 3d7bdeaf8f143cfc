"""pytest fixtures for plugin authors: a plugin manager with the built-ins, a tiny corpus, a
tiny encoder, tiny recipes and a runner.

nlpfw registers this module as a pytest plugin (entry point `pytest11`), so a plugin
package's tests use the fixtures with no conftest:

    def test_my_decoder_trains(nlpfw_tiny_recipe, nlpfw_run):
        recipe = nlpfw_tiny_recipe(decoder={"type": "my_decoder.v1"})
        result, run_dir = nlpfw_run(recipe, "trainer.epochs=2")
        assert result.exit_code == 0, result.output

Everything is offline and small: the corpus is a few dozen generated Chinese texts (with
Latin words, digits and spaces, so that offsets are tested), the encoder a 1-layer BERT built
from scratch over a vocabulary of the corpus's characters. Fixtures never touch the user's
corpus cache (`NLPFW_CACHE_DIR` points into the test's temporary folder while they run).

Importing this module costs nothing heavy (torch and the plugins load inside the fixtures),
so it does not slow down test sessions that do not use it.
"""

from __future__ import annotations

import contextlib
import json
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from click.testing import Result

    from nlpfw.interfaces import Encoder, Example
    from nlpfw.plugins import PluginManager
    from nlpfw.registry import Registry

__all__ = ["TinyCorpus", "registered", "tiny_examples", "write_tiny_corpus"]

TINY_TYPES = ("name", "address", "company")
TINY_ENCODER = {
    "type": "bert.v1", "hidden_size": 32, "num_layers": 1, "num_heads": 2, "intermediate_size": 64,
    "max_position_embeddings": 64, "dropout": 0.0, "hidden_dropout": 0.0, "attention_dropout": 0.0,
}  # fmt: skip
TINY_TRAINER = {
    "epochs": 8, "batch_size": 8, "eval_batch_size": 32, "lr": 5e-3, "warmup_ratio": 0.0,
    "weight_decay": 0.0, "seed": 7, "device": "cpu",
}  # fmt: skip
_SPECIAL = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "[unused1]")
_NAMES = ("张三", "李四", "王小明", "Tom", "赵六")
_PLACES = ("北京", "上海", "深圳南山", "New York")
_COMPANIES = ("华为", "腾讯公司", "CSOL战队", "IBM")
_TEMPLATES = (
    "{name}在{address}的{company}工作",
    "{name}说{company}搬到了{address}",
    "昨天{name}去{address}见了{company}的人",
    "{company}在{address}有1234个员工，{name}是其中之一",
    "{address} 的 {company} 请 {name} 吃饭😀",
)


@dataclass
class TinyCorpus:
    """A tiny labelled corpus as JSON lines (`train.jsonl`, `dev.jsonl`) for `jsonl_spans.v1`."""

    path: Path
    train: list[Example]
    dev: list[Example]
    entity_types: tuple[str, ...] = TINY_TYPES

    @property
    def dataset(self) -> dict[str, Any]:
        """The recipe's `[dataset]` section for this corpus."""
        return {"type": "jsonl_spans.v1", "path": str(self.path), "entity_types": list(self.entity_types)}

    @property
    def vocab(self) -> Path:
        """A BERT vocabulary of the corpus's characters (with the special tokens)."""
        return self.path / "vocab.txt"


def tiny_examples(count: int, seed: int) -> list[Example]:
    """`count` generated texts with gold spans of the types `name`, `address`, `company`."""
    from nlpfw.interfaces import Example, Span

    rng = random.Random(seed)
    examples = []
    for index in range(count):
        template = _TEMPLATES[index % len(_TEMPLATES)]
        values = {"name": rng.choice(_NAMES), "address": rng.choice(_PLACES), "company": rng.choice(_COMPANIES)}
        text, spans, rest = "", [], template
        while "{" in rest:
            before, _, after = rest.partition("{")
            label, _, rest = after.partition("}")
            text += before
            spans.append(Span(len(text), len(text) + len(values[label]), label))
            text += values[label]
        text += rest
        examples.append(Example(text, sorted(spans), index))
    return examples


def write_tiny_corpus(folder: Path, train: int = 40, dev: int = 15) -> TinyCorpus:
    """Write a tiny corpus (and its vocabulary) into `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    splits = {"train": tiny_examples(train, seed=1), "dev": tiny_examples(dev, seed=2)}
    for split, examples in splits.items():
        with (folder / f"{split}.jsonl").open("w", encoding="utf-8") as stream:
            for example in examples:
                spans = [{"start": s.start, "end": s.end, "label": s.label} for s in example.gold or ()]
                stream.write(json.dumps({"text": example.text, "spans": spans}, ensure_ascii=False) + "\n")
    chars = sorted({c for examples in splits.values() for e in examples for c in e.text if not c.isspace()})
    letters = [chr(c) for c in range(ord("a"), ord("z") + 1)] + [str(d) for d in range(10)]
    vocab = list(dict.fromkeys([*_SPECIAL, *letters, *chars]))
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    return TinyCorpus(folder, splits["train"], splits["dev"])


@contextlib.contextmanager
def registered(pm: PluginManager, plugin: Any, name: str) -> Iterator[bool]:
    """Add `plugin` (a module or object with `@hookimpl`s) to `pm` as `name`; yield whether it
    was added (see `pm.failures` if not); always unregister it afterwards."""
    from nlpfw.registry import Origin

    try:
        yield pm.add(plugin, Origin(name, "test"))
    finally:
        if pm.is_registered(plugin):
            pm.unregister(plugin)
        pm.origins.pop(name, None)


@pytest.fixture
def nlpfw_plugin_manager() -> PluginManager:
    """A fresh plugin manager with nlpfw's built-in plugins only (no installed entry points)."""
    from nlpfw.plugins import get_plugin_manager

    return get_plugin_manager(load_entrypoints=False)


@pytest.fixture
def nlpfw_registry(nlpfw_plugin_manager: PluginManager) -> Registry:
    """The registry of the built-in components."""
    from nlpfw.plugins import build_registry

    return build_registry(nlpfw_plugin_manager)


@pytest.fixture
def nlpfw_register(nlpfw_plugin_manager: PluginManager) -> Iterator[Callable[..., Registry]]:
    """`register(plugin, name="test_plugin")`: add your plugin module to a built-ins-only
    manager and return the registry; fails on a plugin that does not load (misspelt hook,
    duplicate name). Every plugin added is unregistered when the test ends."""
    from nlpfw.plugins import build_registry

    pm = nlpfw_plugin_manager
    with contextlib.ExitStack() as stack:

        def register(plugin: Any, name: str = "test_plugin") -> Registry:
            added = stack.enter_context(registered(pm, plugin, name))
            registry = build_registry(pm)
            if not added or pm.failures:
                pytest.fail("; ".join(f"{f.origin.describe()}: {f.error}" for f in pm.failures))
            return registry

        yield register


@pytest.fixture
def nlpfw_isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Keep the corpus cache in the test's temporary folder; returns that folder."""
    cache = tmp_path / "nlpfw-cache"
    monkeypatch.setenv("NLPFW_CACHE_DIR", str(cache))
    return cache


@pytest.fixture
def nlpfw_tiny_corpus(tmp_path: Path, nlpfw_isolated: Path) -> TinyCorpus:
    """A tiny labelled corpus (40 train, 15 dev texts) with its vocabulary, in a temporary folder."""
    return write_tiny_corpus(tmp_path / "tiny-corpus")


@pytest.fixture
def nlpfw_tiny_encoder(nlpfw_tiny_corpus: TinyCorpus, nlpfw_registry: Registry) -> Encoder:
    """A 1-layer, 32-wide BERT built from scratch over the tiny corpus's vocabulary (`bert.v1`),
    seeded; `output_dim` is 32 and `max_chars` 62."""
    import torch

    component = nlpfw_registry.get("encoder", "bert.v1")
    config = component.cls.config_model(**{k: v for k, v in TINY_ENCODER.items() if k != "type"},
                                        vocab=str(nlpfw_tiny_corpus.vocab))  # fmt: skip
    torch.manual_seed(0)
    return component.cls.from_config(config, nlpfw_tiny_corpus.path)


@pytest.fixture
def nlpfw_tiny_recipe(nlpfw_tiny_corpus: TinyCorpus, tmp_path: Path) -> Callable[..., Path]:
    """`make(decoder={"type": ...}, encoder=..., task=..., trainer=...) -> Path`: a recipe on the
    tiny corpus and the tiny encoder (NER, `crf.v1` unless `decoder` says otherwise); each
    given section replaces the default one, except `trainer`, whose keys are merged."""
    import tomli_w

    def make(name: str = "tiny", **sections: dict[str, Any]) -> Path:
        recipe: dict[str, Any] = {
            "name": name,
            "task": {"type": "ner.v1"},
            "dataset": nlpfw_tiny_corpus.dataset,
            "encoder": {**TINY_ENCODER, "vocab": str(nlpfw_tiny_corpus.vocab)},
            "decoder": {"type": "crf.v1"},
            "trainer": dict(TINY_TRAINER),
        }
        for key, value in sections.items():
            recipe[key] = {**recipe["trainer"], **value} if key == "trainer" else value
        path = tmp_path / f"{name}.toml"
        path.write_text(tomli_w.dumps(recipe), encoding="utf-8")
        return path

    return make


@pytest.fixture
def nlpfw_run(tmp_path: Path, nlpfw_isolated: Path) -> Callable[..., tuple[Result, Path]]:
    """`run(recipe, *overrides, plugins=(), output=None) -> (click result, run folder)`:
    `nlpfw [-p MODULE ...] run RECIPE -o OUTPUT --set ...` in this process. Installed plugins
    load as they would for a user; `plugins` are uninstalled modules (`-p`)."""
    from click.testing import CliRunner

    from nlpfw.cli import cli

    def run(recipe: Path, *overrides: str, plugins: tuple[str, ...] = (), output: Path | None = None) -> tuple[Result, Path]:
        folder = output or tmp_path / f"run-{Path(recipe).stem}"
        args = [arg for module in plugins for arg in ("-p", module)]
        args += ["run", str(recipe), "-o", str(folder), "--overwrite"]
        for item in overrides:
            args += ["--set", item]
        return CliRunner().invoke(cli, args, catch_exceptions=False), folder

    return run
