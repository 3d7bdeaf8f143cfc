"""nlpfw.testing, the pytest plugin for plugin authors: registered, light, and its fixtures work."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import torch

from nlpfw.recipe import load_recipe
from nlpfw.testing import tiny_examples


def test_the_pytest_plugin_is_registered_and_imports_nothing_heavy(pytestconfig) -> None:
    assert pytestconfig.pluginmanager.has_plugin("nlpfw")
    code = "import sys, nlpfw.testing; print(sorted(m for m in ('torch', 'transformers', 'nlpfw.plugins') if m in sys.modules))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert (result.returncode, result.stdout) == (0, "[]\n"), result.stderr


def test_tiny_examples_spans_index_their_text() -> None:
    examples = tiny_examples(20, seed=3)
    assert examples == tiny_examples(20, seed=3)  # seeded
    surfaces = {e.text[s.start : s.end] for e in examples for s in e.gold}
    assert {"New York", "Tom", "IBM"} & surfaces  # Latin words, so that offsets are tested
    for example in examples:
        assert len(example.gold) == 3 and {s.label for s in example.gold} == {"name", "address", "company"}
        assert all(example.text[s.start : s.end].strip() == example.text[s.start : s.end] for s in example.gold)


def test_tiny_encoder_fixture_gives_one_vector_per_character(nlpfw_tiny_encoder, nlpfw_tiny_corpus) -> None:
    text = nlpfw_tiny_corpus.train[4].text  # the template with spaces and an emoji
    assert " " in text and "😀" in text
    ids = torch.as_tensor(np.asarray(nlpfw_tiny_encoder.char_ids(text)), dtype=torch.long)[None]
    hidden = nlpfw_tiny_encoder(ids, torch.ones_like(ids, dtype=torch.bool))
    assert hidden.shape == (1, len(text), 32) and nlpfw_tiny_encoder.max_chars == 62
    assert not (ids == nlpfw_tiny_encoder.unk_id).any()  # the vocabulary holds every character
    assert [i for i, c in enumerate(text) if c == " "] == (ids[0] == nlpfw_tiny_encoder.space_id).nonzero().flatten().tolist()


def test_tiny_recipe_fixture_validates_with_each_builtin_decoder(nlpfw_tiny_recipe, nlpfw_registry) -> None:
    for decoder in ("crf.v1", "softmax.v1"):
        recipe = load_recipe(nlpfw_tiny_recipe(decoder={"type": decoder}), nlpfw_registry)
        assert recipe.decoder.type == decoder and recipe.dataset.type == "jsonl_spans.v1"
