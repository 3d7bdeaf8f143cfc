"""bert.v1 loading paths: a local checkpoint of bert-base-chinese's architecture, hub names offline."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import transformers
from click.testing import CliRunner

from nlpfw.cli import cli
from nlpfw_plugins.bert import _tokenizer_from_vocab

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def bert_base_dir(tmp_path_factory, vocab):
    """A random-init checkpoint with bert-base-chinese's exact architecture (README of the vocab)."""
    directory = tmp_path_factory.mktemp("bert-base-chinese-random")
    config = transformers.BertConfig(
        vocab_size=21128, hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
        intermediate_size=3072, max_position_embeddings=512, type_vocab_size=2,
    )  # fmt: skip
    transformers.BertModel(config).save_pretrained(directory)
    _tokenizer_from_vocab(vocab).save_pretrained(directory)
    return directory


def test_reference_recipe_runs_a_training_step_from_a_local_checkpoint(bert_base_dir, tmp_path, data_root):
    output = tmp_path / "run"
    sets = [f"encoder.pretrained={bert_base_dir}", "trainer.max_steps=1", "dataset.limit=24"]
    args = ["run", str(ROOT / "recipes" / "bert_crf_cluener.toml"), "-o", str(output)]
    for item in sets:
        args += ["--set", item]
    result = CliRunner().invoke(cli, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "101,6" in result.output  # ~101.7M parameters: bert-base-chinese without its pooler, plus the CRF head
    record = json.loads((output / "metrics.jsonl").read_text(encoding="utf-8"))
    assert record["epoch"] == 1 and record["step"] == 1 and record["train_loss"] > 0
    saved = json.loads((output / "model" / "encoder" / "config.json").read_text(encoding="utf-8"))
    assert (saved["hidden_size"], saved["num_hidden_layers"], saved["vocab_size"]) == (768, 12, 21128)


def _run_offline(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    return subprocess.run([sys.executable, "-m", "nlpfw", *args], capture_output=True, text=True, env=env, cwd=cwd, timeout=300)


def test_hub_name_without_network_says_how_to_fix_it(tmp_path, data_root):
    result = _run_offline(
        "run", str(ROOT / "recipes" / "bert_crf_cluener.toml"), "-o", str(tmp_path / "run"),
        "--set", "dataset.limit=8", cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 1, result.stderr
    assert "Error: encoder.pretrained: cannot load 'bert-base-chinese'" in result.stderr
    assert "set encoder.pretrained to its local directory" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "run").exists()  # nothing half-written: the same -o works next time


def test_missing_local_directory_is_named(tmp_path, data_root):
    result = _run_offline(
        "run", str(ROOT / "recipes" / "bert_crf_cluener.toml"), "-o", str(tmp_path / "run"),
        "--set", "encoder.pretrained=./models/missing", cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 1
    assert "Error: encoder.pretrained: directory not found: models/missing" in result.stderr
