"""Bad bytes, damaged model folders, silently wrong settings and misleading messages: each is one
clear message (exit 1, no traceback) or the right result."""

from __future__ import annotations

import json
import os
import pickle
import re
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner
from test_own_data import conll, jsonl, write
from test_training import ROOT, TINY

from nlpfw import checkpoint
from nlpfw.cache import prepare_corpus
from nlpfw.cli import cli
from nlpfw.corpus import window_settings
from nlpfw.errors import DataError, RecipeError
from nlpfw.predict import read_inputs
from nlpfw.recipe import load_recipe
from nlpfw_plugins.bert import BertEncoder, BertEncoderConfig

QUICKSTART = ROOT / "recipes" / "quickstart.toml"
GOOD = json.dumps({"text": "上海", "spans": [{"start": 0, "end": 2, "label": "LOC"}]}, ensure_ascii=False)


def invoke(*args: object, **kwargs):
    return CliRunner().invoke(cli, [str(a) for a in args], **kwargs)


def flat(text: str) -> str:
    return " ".join(text.split())


# --- bytes that are not UTF-8, lone surrogates, stray "\r" ------------------------------------


def test_a_file_that_is_not_utf8_names_file_line_and_byte_or_is_skipped(tmp_path):
    folder = tmp_path / "j"
    folder.mkdir()
    (folder / "train.jsonl").write_bytes(f"{GOOD}\n".encode() + b'{"text": "caf\xe9"}\n' + f"{GOOD}\n".encode())
    (folder / "dev.jsonl").write_bytes(b"")
    where = f"{folder / 'train.jsonl'}:2"
    offset = len(GOOD.encode()) + 1 + len(b'{"text": "caf')
    problem = f"not UTF-8 text: byte 0xe9 at byte {offset} of the file (column 14 of the line); save the file as UTF-8"
    with pytest.raises(DataError, match=f"^{re.escape(f'{where}: {problem}')}"):
        jsonl(folder).load("train")
    dataset = jsonl(folder, on_error="skip")
    assert [e.text for e in dataset.load("train")] == ["上海", "上海"]
    assert dataset.skipped == [f"{where}: {problem}"]
    # CoNLL: the sentence holding the line is left out whole
    conll_folder = tmp_path / "c"
    conll_folder.mkdir()
    (conll_folder / "train.txt").write_bytes("上\tB-LOC\n海\tI-LOC\n\n".encode() + b"\xff\tO\n" + "好\tO\n\n北\tB-LOC\n".encode())
    (conll_folder / "dev.txt").write_bytes(b"")
    with pytest.raises(DataError, match=rf"^{conll_folder / 'train.txt'}:4: not UTF-8 text: byte 0xff at byte 21 of the file"):
        conll(conll_folder).load("train")
    dataset = conll(conll_folder, on_error="skip")
    assert [e.text for e in dataset.load("train")] == ["上海", "北"]
    assert len(dataset.skipped) == 1


def test_predict_input_that_is_not_utf8_or_holds_a_lone_surrogate_is_named(tmp_path):
    (tmp_path / "texts.txt").write_bytes("张三\n".encode() + b"\xc3(\n")
    with pytest.raises(DataError, match=rf"^{tmp_path / 'texts.txt'}:2: not UTF-8 text: byte 0xc3 at byte 7 of the file"):
        read_inputs(tmp_path / "texts.txt")
    (tmp_path / "texts.jsonl").write_text('{"text": "ok"}\n{"text": "ab\\ud800cd"}\n', encoding="utf-8")
    with pytest.raises(DataError, match=rf"^{tmp_path / 'texts.jsonl'}:2: \"text\" holds a lone surrogate '\\ud800' at character 2"):
        read_inputs(tmp_path / "texts.jsonl")


def test_a_lone_surrogate_in_a_dataset_is_bad_data_and_leaves_no_cache_folder(tmp_path, registry, data_root, monkeypatch):
    folder = write(tmp_path / "j", train_jsonl=f'{GOOD}\n{{"text": "ab\\ud800cd", "spans": []}}\n', dev_jsonl=f"{GOOD}\n")
    message = r"'text' holds a lone surrogate '\\ud800' at character 2, which is not text"
    with pytest.raises(DataError, match=rf"^{folder / 'train.jsonl'}:2: {message}"):
        jsonl(folder).load("train")
    monkeypatch.setenv("NLPFW_CACHE_DIR", str(tmp_path / "cache"))
    result = invoke("run", QUICKSTART, "-o", tmp_path / "run", "--set", "dataset.type=jsonl_spans.v1",
                    "--set", f"dataset.path={folder}", *[a for item in TINY for a in ("--set", item)])  # fmt: skip
    assert result.exit_code == 1
    assert f"Error: {folder / 'train.jsonl'}:2: 'text' holds a lone surrogate" in flat(result.output)
    assert not (tmp_path / "run").exists()
    assert not any(".tmp-" in p.name for p in (tmp_path / "cache").rglob("*"))


def test_a_lone_carriage_return_stays_inside_its_line(tmp_path):
    (tmp_path / "texts.txt").write_bytes("张三\r在北京\r\n李四\n".encode())
    assert read_inputs(tmp_path / "texts.txt") == [{"text": "张三\r在北京"}, {"text": "李四"}]


# --- damaged model folders ----------------------------------------------------------------------


def damage_truncated(model: Path) -> None:
    data = (model / "model.safetensors").read_bytes()
    (model / "model.safetensors").write_bytes(data[: len(data) // 2])


def damage_random(model: Path) -> None:
    (model / "model.safetensors").write_bytes(os.urandom(4096))


def damage_labels(model: Path) -> None:
    (model / "labels.json").write_text('{"entity_types": ["name"', encoding="utf-8")


def damage_label_count(model: Path) -> None:
    labels = json.loads((model / "labels.json").read_text(encoding="utf-8"))
    labels["labels"].append("extra")  # one more entity type than the weights were trained for
    labels["target_labels"] += ["B-extra", "I-extra"]  # consistently, so that only the weights disagree
    (model / "labels.json").write_text(json.dumps(labels), encoding="utf-8")


DAMAGE = [
    (damage_truncated, r"model\.safetensors is truncated or not a safetensors file \("),
    (damage_random, r"model\.safetensors is truncated or not a safetensors file \("),
    (damage_labels, r"labels\.json is not valid JSON \(JSONDecodeError: "),
    (lambda m: (m / "labels.json").unlink(), r"labels\.json is missing"),
    (lambda m: (m / "encoder" / "config.json").unlink(), r"encoder/ does not load \(.*config\.json"),
    (damage_label_count, r"model\.safetensors does not fit the model that recipe\.toml and labels\.json describe \(RuntimeError: "),
]  # fmt: skip


def test_a_damaged_model_folder_is_named_by_predict_evaluate_and_export(run_dir, tmp_path):
    for number, (damage, message) in enumerate(DAMAGE):
        copy = tmp_path / f"run{number}"
        shutil.copytree(run_dir / "model", copy / "model")
        damage(copy / "model")
        pattern = rf"^Error: model folder {copy / 'model'} is damaged: {message}.*; copy the folder again, or train the model again$"
        for args in (["predict", copy, "张三"], ["evaluate", copy, "--data", tmp_path / "none.jsonl"],
                     ["export", copy, "--onnx", tmp_path / "x.onnx"]):  # fmt: skip
            result = invoke(*args)
            assert result.exit_code == 1, (damage, args, result.output)
            assert "Traceback" not in result.output
            assert re.match(pattern, flat(result.output)), (args, result.output)


# --- silently wrong settings ---------------------------------------------------------------------


def test_a_batch_size_below_one_is_refused(tmp_path):
    for command in (["predict", tmp_path, "张三"], ["evaluate", tmp_path]):
        for size in ("-1", "0"):
            result = invoke(*command, "--batch-size", size)
            assert result.exit_code == 1
            assert f"Error: Invalid value for '--batch-size': {size} is not in the range x>=1." in flat(result.output)


def test_an_empty_vocabulary_is_named(tmp_path):
    (tmp_path / "vocab.txt").write_text("\n\n", encoding="utf-8")
    with pytest.raises(DataError, match=rf"^encoder\.vocab: {tmp_path / 'vocab.txt'} is empty; give a vocab\.txt"):
        BertEncoder.from_config(BertEncoderConfig(vocab=str(tmp_path / "vocab.txt")), tmp_path)
    (tmp_path / "vocab.txt").write_text("a\nb\n[UNK]\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"lacks \[PAD\], \[CLS\], \[SEP\], which a BERT vocabulary holds"):
        BertEncoder.from_config(BertEncoderConfig(vocab=str(tmp_path / "vocab.txt")), tmp_path)


def test_a_span_with_an_empty_label_is_bad_data(tmp_path):
    record = json.dumps({"text": "上海", "spans": [{"start": 0, "end": 2, "label": ""}]})
    folder = write(tmp_path / "j", train_jsonl=f"{record}\n", dev_jsonl="")
    with pytest.raises(DataError, match=rf"^{folder / 'train.jsonl'}:1: span \[0, 2\): the label is empty; a span needs an entity type"):
        jsonl(folder).load("train")


def test_set_never_replaces_a_whole_section_and_a_name_is_no_path(registry, tmp_path):
    with pytest.raises(RecipeError) as caught:
        load_recipe(QUICKSTART, registry, ["trainer={}"])
    assert str(caught.value).splitlines()[1:] == [
        "  trainer  --set 'trainer={}' would replace the whole [trainer] table; set its keys one at a time, like trainer.KEY=VALUE"
    ]
    with pytest.raises(RecipeError) as caught:
        load_recipe(QUICKSTART, registry, ['name="../../x"'])
    assert str(caught.value).splitlines()[1:] == [
        "  name  '../../x' is not a plain name (letters, digits, '-', '_', '.', '+'; no '/'): it names the run "
        "folder runs/<name>-<time>"
    ]
    assert load_recipe(QUICKSTART, registry, ['name="my-run_2.b"']).name == "my-run_2.b"


# --- messages that misled ------------------------------------------------------------------------


def test_usage_errors_exit_1():
    result = invoke("predict")
    assert result.exit_code == 1
    assert "Error: Missing argument 'RUN_DIR'." in result.output


def test_ctrl_c_during_start_up_exits_130(monkeypatch, tmp_path):
    import nlpfw.recipe

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(nlpfw.recipe, "load_recipe", interrupted)
    result = invoke("run", QUICKSTART, "-o", tmp_path / "run")
    assert result.exit_code == 130
    assert result.output.strip() == "Interrupted (Ctrl-C)."
    assert "Aborted" not in result.output


def test_ctrl_c_before_the_first_checkpoint_says_the_folder_cannot_be_resumed(monkeypatch, tmp_path, data_root):
    import nlpfw.runner

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(nlpfw.runner, "run", interrupted)
    result = invoke("run", QUICKSTART, "-o", tmp_path / "run", "--set", "trainer.epochs=1")
    assert result.exit_code == 130
    assert (
        f"Interrupted before the first checkpoint; {tmp_path / 'run'} cannot be resumed. Start it again with: "
        f"nlpfw run {QUICKSTART} --set trainer.epochs=1 -o {tmp_path / 'run'} --overwrite"
    ) in flat(result.output)
    assert "keeps the best model" not in result.output


def test_predict_names_its_own_device_option(tmp_path):
    result = invoke("predict", tmp_path, "张三", "--device", "tpu")
    assert result.exit_code == 1
    assert result.output == "Error: --device: unknown device 'tpu'; use auto, cpu, mps, cuda or cuda:N\n"


def test_evaluate_data_errors_do_not_suggest_a_recipe_key(run_dir, tmp_path):
    (tmp_path / "gold.jsonl").write_text('{"text": "上海", "spans": [{"start": 0, "end": 5, "label": "address"}]}\n', encoding="utf-8")
    result = invoke("evaluate", run_dir, "--data", tmp_path / "gold.jsonl")
    assert result.exit_code == 1
    assert flat(result.output) == (
        f"Error: {tmp_path / 'gold.jsonl'}:1: address span [0, 5) is out of range for a text of 2 characters"
    )


def test_a_recipe_with_a_byte_order_mark_or_that_is_a_folder(tmp_path):
    (tmp_path / "bom.toml").write_bytes(b"\xef\xbb\xbf" + QUICKSTART.read_bytes())
    result = invoke("validate", tmp_path / "bom.toml")
    assert result.exit_code == 0, result.output
    result = invoke("validate", tmp_path)
    assert result.exit_code == 1
    assert result.output == f"Error: recipe {tmp_path} is invalid (1 problem)\n  file  is a folder; give a recipe file (.toml)\n"


class _RunsCode:
    def __reduce__(self):
        return (print, ("never",))


def test_a_refused_pickle_never_suggests_weights_only_false(tmp_path):
    (tmp_path / "checkpoint").mkdir()
    with (tmp_path / "checkpoint" / "state.pt").open("wb") as stream:
        pickle.dump({"format": 1, "position": _RunsCode()}, stream, protocol=2)
    with pytest.raises(checkpoint.CheckpointError) as caught:
        checkpoint.load(tmp_path)
    message = str(caught.value)
    assert "UnpicklingError: it holds Python objects that a checkpoint never holds" in message
    assert "weights_only" not in message and "\n" not in message


# --- the corpus cache ----------------------------------------------------------------------------


def prepare(recipe, data_root):
    dataset = recipe.dataset.component.cls(recipe.dataset.config, data_root)
    encoder = BertEncoder.from_config(recipe.encoder.config, data_root)
    window, stride = window_settings(recipe.trainer.window, recipe.trainer.stride, encoder.max_chars)
    return prepare_corpus(recipe.task, recipe.dataset, dataset, encoder, ("train", "dev"), window, stride)


def test_a_damaged_or_unwritable_cache_is_rebuilt_or_passed_by(registry, data_root, tmp_path, monkeypatch, capfd):
    recipe = load_recipe(QUICKSTART, registry, TINY)
    monkeypatch.setenv("NLPFW_CACHE_DIR", str(tmp_path / "cache"))
    first = prepare(recipe, data_root)
    entry = tmp_path / "cache" / "corpora" / first.key
    column = next(entry.glob("train.column.*.npy"))
    column.write_bytes(column.read_bytes()[:20])  # torn
    again = prepare(recipe, data_root)
    assert not again.cached and (entry / "meta.json").is_file()  # rebuilt
    assert f"Warning: the corpus cache entry {entry} is damaged (ValueError: " in capfd.readouterr().err
    assert prepare(recipe, data_root).cached
    (tmp_path / "blocker").write_text("a file, not a folder", encoding="utf-8")
    monkeypatch.setenv("NLPFW_CACHE_DIR", str(tmp_path / "blocker" / "cache"))
    uncached = prepare(recipe, data_root)
    assert not uncached.cached
    assert (
        f"Warning: the corpus cache {tmp_path / 'blocker' / 'cache'} cannot be written (a part of the path is a "
        "file, not a folder); the run goes on without it"
    ) in flat(capfd.readouterr().err)


def test_validate_checks_the_window_against_the_encoder(tmp_path):
    # the quickstart's from-scratch BERT has 128 positions: 126 characters and [CLS], [SEP]
    result = invoke("validate", QUICKSTART, "--set", "trainer.window=200")
    assert result.exit_code == 1
    assert result.output == (
        f"Error: recipe {QUICKSTART} is invalid (1 problem)\n"
        "  trainer.window  200 is longer than the encoder's limit of 126 characters\n"
    )
    result = invoke("validate", QUICKSTART, "--set", "trainer.window=126")
    assert result.exit_code == 0, result.output
