"""`nlpfw vectors train`: vectors from unlabelled text in the form bilstm.v1 reads, cached by the
sources' contents; then a tiny bilstm.v1 run with those vectors and jieba's lexicon, exported
to ONNX."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from test_training import ROOT, run_cli

import nlpfw
from nlpfw.cli import cli
from nlpfw_plugins.bilstm import read_vectors

TEXTS = ["北京大学的学生在上海工作", "张三去北京开会", "上海的天气很好", "学生们在北京读书"] * 10


def vectors(*args: str):
    return CliRunner().invoke(cli, ["vectors", "train", *args], catch_exceptions=False)


SMALL = ["--char-size", "8", "--bigram-size", "4", "--epochs", "1", "--min-count", "1"]


def test_vectors_are_written_in_bilstms_form_and_cached_by_content(tmp_path):
    source = tmp_path / "news.txt"
    source.write_text("\n".join(TEXTS) + "\n", encoding="utf-8")
    out = tmp_path / "vectors"
    first = vectors(str(out), "--text", str(source), *SMALL)
    assert first.exit_code == 0, first.output
    assert "Wrote chars.vec, bigrams.vec into" in first.output and "from the cache" not in first.output
    chars, bigrams = read_vectors(out / "chars.vec", 8), read_vectors(out / "bigrams.vec", 4, length=2)
    assert set(chars) == set("".join(TEXTS))
    assert "北京" in bigrams and "京大" in bigrams and len(next(iter(bigrams.values()))) == 4
    meta = json.loads((out / "vectors.json").read_text(encoding="utf-8"))
    assert meta["sources"][0]["texts"] == len(TEXTS) and meta["chars"]["tokens"] == len(chars)

    again = vectors(str(tmp_path / "again"), "--text", str(source), *SMALL)
    assert "from the cache" in again.output
    assert (tmp_path / "again" / "chars.vec").read_bytes() == (out / "chars.vec").read_bytes()
    other = vectors(str(tmp_path / "other"), "--text", str(source), *SMALL[:-2], "--min-count", "2")
    assert "from the cache" not in other.output  # another option, another entry
    source.write_text("\n".join(TEXTS[:3]) + "\n", encoding="utf-8")
    changed = vectors(str(tmp_path / "changed"), "--text", str(source), *SMALL)
    assert changed.exit_code == 0 and "from the cache" not in changed.output
    assert set(read_vectors(tmp_path / "changed" / "chars.vec", 8)) == set("".join(TEXTS[:3]))


def test_vectors_train_errors(tmp_path):
    refused = vectors(str(tmp_path / "out"), "--split", "recipes/bilstm_crf_cluener.toml:dev")
    assert refused.exit_code == 1
    assert "Error: --split 'recipes/bilstm_crf_cluener.toml:dev': the dev split is refused" in refused.output
    assert "--split 'train': expected RECIPE:SPLIT" in vectors(str(tmp_path / "out"), "--split", "train").output
    assert "Error: no texts: give --text, --pfr or --split" in vectors(str(tmp_path / "out")).output
    pfr = tmp_path / "pfr.txt"
    pfr.write_text("迈向/v  充满/v\n希望 的/u\n", encoding="utf-8")
    result = vectors(str(tmp_path / "out"), "--pfr", str(pfr), *SMALL)
    assert result.exit_code == 1 and f"{pfr}:2: '希望' is not word/TAG" in result.output
    bad = tmp_path / "bad.txt"
    bad.write_bytes("好的\n".encode() + "北京".encode("gb18030") + b"\n")
    result = vectors(str(tmp_path / "out"), "--text", str(bad), *SMALL)
    assert result.exit_code == 1 and f"{bad}:2: not UTF-8 text" in result.output
    missing = vectors(str(tmp_path / "out"), "--text", str(tmp_path / "missing.txt"))
    assert missing.exit_code == 1 and "missing.txt: file not found" in missing.output


# Slow (about 27 s: vectors, a run and two exports). The fault it once showed in CI (a second
# export in one process fixed `chars` to the example's 5) is covered in the default run by
# test_bilstm's test_the_bilstm_exports_with_a_dynamic_length_also_the_second_time_in_a_process.
@pytest.mark.slow
def test_a_tiny_run_with_self_trained_vectors_and_jiebas_lexicon_exports_to_onnx(tmp_path, data_root, registry):
    from nlpfw.export import OnnxModel, export_onnx

    recipe = tmp_path / "small.toml"  # CLUENER's first 300 training texts
    recipe.write_text((ROOT / "recipes" / "bilstm_crf_cluener.toml").read_text(encoding="utf-8").replace(
        'path = "cluener"', 'path = "cluener"\nlimit = 300'), encoding="utf-8")  # fmt: skip
    out = tmp_path / "vectors"
    result = vectors(str(out), "--split", f"{recipe}:train", "--char-size", "16", "--bigram-size", "8", "--word-size", "8",
                     "--epochs", "1", "--min-count", "1")  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "read 300 texts" in result.output and "words.vec" in result.output
    run = tmp_path / "run"
    trained = run_cli(
        ROOT / "recipes" / "bilstm_lexicon_crf_cluener.toml", run, "dataset.limit=160", "trainer.epochs=1",
        "encoder.embedding_size=16", "encoder.bigram_size=8", "encoder.hidden_size=16", "encoder.num_layers=1",
        f"encoder.vectors={out / 'chars.vec'}", f"encoder.bigram_vectors={out / 'bigrams.vec'}",
        "encoder.lexicon_size=8", f"encoder.lexicon_vectors={out / 'words.vec'}",
    )  # fmt: skip
    assert trained.exit_code == 0, trained.output
    words = json.loads((run / "model" / "encoder" / "lexicon.json").read_text(encoding="utf-8"))["words"]
    with_vectors = set(read_vectors(out / "words.vec", 8, length=None))
    assert "北京" in words and with_vectors & set(words)
    onnx = export_onnx(run, tmp_path / "tagger.onnx", registry)  # refuses a graph that differs from the model
    sidecar = json.loads((tmp_path / "tagger.onnx.json").read_text(encoding="utf-8"))
    assert onnx.is_file() and sidecar["inputs"]["input_ids"] == "[batch, chars, 17] int64"
    # A second export in the same process once came out with chars fixed to the example's 5
    # (torch.onnx's LSTM replacement is skipped once aten.lstm has been traced in the process)
    again = export_onnx(run, tmp_path / "again.onnx", registry)
    model = nlpfw.load(run)
    texts = ["北", "北京", "北京大学的学生", "张三去北京开会，在上海工作。", "上海的天气很好" * 9]
    for graph in (onnx, again):
        session = OnnxModel(graph, model.model.decoder)
        for batch in ([texts[1]], texts, texts[2:4]):
            encoded = model.task.collate([{"input_ids": model.model.encoder.char_ids(t)} for t in batch])
            _, tags = session.predict(encoded)
            with torch.no_grad():
                _, expected = model.model.predict(encoded)
            assert tags.shape == (len(batch), max(map(len, batch))) and torch.equal(tags, expected.cpu()), batch
