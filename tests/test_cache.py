"""The tokenised-corpus cache: a hit gives exactly what encoding gives; any change misses."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from nlpfw.cache import cache_dir, prepare_corpus
from nlpfw.corpus import window_settings
from nlpfw.recipe import load_recipe
from nlpfw_plugins.bert import BertEncoder

from test_training import ROOT, TINY


@pytest.fixture
def recipe(registry, tmp_path, data_root):
    folder = tmp_path / "cluener"
    folder.mkdir()
    for name in ("train.json", "dev.json"):
        lines = (data_root / "cluener" / name).read_text(encoding="utf-8").splitlines(keepends=True)
        (folder / name).write_text("".join(lines[:50]), encoding="utf-8")
    with (folder / "dev.json").open("a", encoding="utf-8") as stream:  # line breaks inside a text
        stream.write('{"text": "张三\\r\\n说\\u2028好\\r", "label": {"name": {"张三": [[0, 1]]}}}\n')
    overrides = [*TINY, f'dataset.path="{folder}"', "trainer.window=24", "trainer.stride=8"]
    return load_recipe(ROOT / "recipes" / "quickstart.toml", registry, overrides)


def prepare(recipe, data_root, use_cache=True):
    dataset = recipe.dataset.component.cls(recipe.dataset.config, data_root)
    encoder = BertEncoder.from_config(recipe.encoder.config, data_root)
    window, stride = window_settings(recipe.trainer.window, recipe.trainer.stride, encoder.max_chars)
    return prepare_corpus(recipe.task, recipe.dataset, dataset, encoder, ("train", "dev"), window, stride, use_cache)


def test_second_load_comes_from_the_cache_and_is_identical(recipe, data_root, tmp_path, monkeypatch):
    monkeypatch.setenv("NLPFW_CACHE_DIR", str(tmp_path / "cache"))
    first = prepare(recipe, data_root)
    second = prepare(recipe, data_root)
    assert (first.cached, second.cached) == (False, True) and first.key == second.key
    assert sorted(p.name for p in (tmp_path / "cache" / "corpora").iterdir()) == [first.key]
    assert second.task.entity_types == first.task.entity_types
    for name in ("train", "dev"):
        a, b = first.splits[name], second.splits[name]
        assert a.stats == b.stats and a.stats.windowed > 0 and len(a) == len(b) > 50
        for column in ("input_ids", "tags"):
            np.testing.assert_array_equal(a.columns[column], b.columns[column])
        assert sorted(a.tables) == sorted(b.tables) == ["spans"]  # gold spans for span decoders
        np.testing.assert_array_equal(a.tables["spans"], b.tables["spans"])
        for row in range(len(a)):
            np.testing.assert_array_equal(a[row]["input_ids"], b[row]["input_ids"])
            np.testing.assert_array_equal(a[row]["spans"], b[row]["spans"])
        assert [(e.text, e.gold, e.id) for e in a.examples] == [(e.text, e.gold, e.id) for e in b.examples]
    assert second.splits["dev"].examples[-1].text == "张三\r\n说\u2028好\r"


def test_a_changed_file_option_or_switch_misses_the_cache(recipe, data_root, tmp_path, monkeypatch, registry):
    monkeypatch.setenv("NLPFW_CACHE_DIR", str(tmp_path / "cache"))
    first = prepare(recipe, data_root)
    dev = recipe.dataset.config.path + "/dev.json"
    with open(dev, "a", encoding="utf-8") as stream:
        stream.write('{"text": "张三", "label": {"name": {"张三": [[0, 1]]}}}\n')
    changed = prepare(recipe, data_root)
    assert not changed.cached and changed.key != first.key
    assert changed.splits["dev"].stats.examples == first.splits["dev"].stats.examples + 1
    restride = load_recipe(ROOT / "recipes" / "quickstart.toml", registry,
                           [*TINY, f'dataset.path="{recipe.dataset.config.path}"', "trainer.window=24"])  # fmt: skip
    assert prepare(restride, data_root).key not in (first.key, changed.key)
    assert not prepare(recipe, data_root, use_cache=False).cached
    monkeypatch.setenv("NLPFW_CACHE_DIR", "off")
    assert cache_dir() is None and not prepare(recipe, data_root).cached


def test_how_the_data_is_fetched_is_not_part_of_the_key(recipe, data_root, tmp_path, monkeypatch, registry):
    # download and url decide where the files come from, not what they hold (their digests are keyed)
    monkeypatch.setenv("NLPFW_CACHE_DIR", str(tmp_path / "cache"))
    first = prepare(recipe, data_root)
    path = f'dataset.path="{recipe.dataset.config.path}"'
    fetched = load_recipe(ROOT / "recipes" / "quickstart.toml", registry,
                          [*TINY, path, "trainer.window=24", "trainer.stride=8", "dataset.download=false",
                           'dataset.url="/mirror/cluener_public.zip"'])  # fmt: skip
    again = prepare(fetched, data_root)
    assert again.cached and again.key == first.key
    limited = load_recipe(ROOT / "recipes" / "quickstart.toml", registry,
                          [*TINY, path, "trainer.window=24", "trainer.stride=8", "dataset.limit=20"])  # fmt: skip
    assert prepare(limited, data_root).key != first.key
    # and the vectors' cache keys a recipe's split the same way
    from nlpfw.vectors import Source, source_key

    recipes = []
    for extra in ([], ["download = false", 'url = "/mirror/cluener_public.zip"'], ["limit = 20"]):
        text = "\n".join(["[task]", 'type = "ner.v1"', "[dataset]", 'type = "cluener.v1"',
                          f'path = "{recipe.dataset.config.path}"', *extra, "[encoder]", 'type = "bilstm.v1"',
                          "[decoder]", 'type = "crf.v1"'])  # fmt: skip
        recipes.append(tmp_path / f"r{len(recipes)}.toml")
        recipes[-1].write_text(text + "\n", encoding="utf-8")
    keys = [source_key(Source("split", r, "train"), registry, data_root) for r in recipes]
    assert keys[0] == keys[1] != keys[2]


def test_a_half_written_entry_is_never_read(recipe, data_root, tmp_path, monkeypatch):
    monkeypatch.setenv("NLPFW_CACHE_DIR", str(tmp_path / "cache"))
    first = prepare(recipe, data_root)
    entry = tmp_path / "cache" / "corpora" / first.key
    shutil.move(entry, entry.with_name(f"{first.key}.tmp-123"))  # as an interrupted writer leaves it
    again = prepare(recipe, data_root)
    assert not again.cached and entry.is_dir()
