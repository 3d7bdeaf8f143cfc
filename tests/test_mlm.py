"""`mlm.v1` masked-LM pretraining, `mlm_head.v1` and `text_files.v1`: the masks' statistics and
reproducibility, scoring on a hand-made batch, a run from scratch, SIGKILL and resume, and the
pretrained encoder loaded into an NER recipe."""

from __future__ import annotations

import json
import math
import signal
import sys
from pathlib import Path

import numpy as np
import pytest
import safetensors.torch
import torch
from test_resume import start_and_wait
from test_training import ROOT, run_ok

from nlpfw.corpus import encode_split
from nlpfw.errors import DataError
from nlpfw.interfaces import Example, Window
from nlpfw_plugins.bert import BertEncoder, BertEncoderConfig
from nlpfw_plugins.mlm import MlmConfig, MlmHead, MlmHeadConfig, MlmTask
from nlpfw_plugins.text_files import TextFiles, TextFilesConfig

TINY_BERT = {"hidden_size": 32, "num_layers": 1, "num_heads": 2, "intermediate_size": 64, "max_position_embeddings": 128}


@pytest.fixture(scope="module")
def encoder(data_root: Path) -> BertEncoder:
    config = BertEncoderConfig(vocab="bert-base-chinese-vocab/vocab.txt", **TINY_BERT)
    return BertEncoder.from_config(config, data_root)


@pytest.fixture(scope="module")
def news(data_root: Path) -> list[str]:
    """The first 1,500 paragraphs of People's Daily 1998, read by text_files.v1 (segmented)."""
    config = TextFilesConfig(train=[{"path": "pfr1998/199801.txt", "format": "segmented"}], dev_fraction=0.5, limit=1500)
    dataset = TextFiles(config, data_root)
    return [e.text for e in dataset.load("train")] + [e.text for e in dataset.load("dev")]


def collated(task: MlmTask, split, rows) -> dict[str, torch.Tensor]:
    return task.collate([split[i] for i in rows])


# --- masks ---------------------------------------------------------------------------------


def test_masks_choose_15_percent_and_replace_them_80_10_10(encoder, news):
    texts = [*news, "一 二\u3000三😀四"]  # whitespace and a character the vocabulary lacks ([UNK])
    task = MlmTask(MlmConfig(seed=7), [])
    split = encode_split([Example(t, True) for t in texts], lambda e: task.encode(e, encoder), 126, 0)
    chosen = replaced_by_mask = replaced_by_random = kept = maskable = 0
    specials = encoder.special_ids()
    for begin in range(0, len(split), 64):
        batch = collated(task, split, range(begin, min(begin + 64, len(split))))
        original = torch.from_numpy(np.stack([np.pad(split[i]["input_ids"], (0, batch["mask"].shape[1] - len(split[i]["input_ids"])))
                                              for i in range(begin, min(begin + 64, len(split)))])).long()  # fmt: skip
        gold, inputs, mask = batch["masked_ids"], batch["input_ids"], batch["mask"]
        picked = gold >= 0
        assert torch.equal(gold[picked], original[picked]) and torch.equal(inputs[~picked], original[~picked])
        assert not any(int(i) in specials for i in original[picked])  # never a space or [UNK]
        maskable += int((mask & ~torch.isin(original, torch.tensor(sorted(specials)))).sum())
        chosen += int(picked.sum())
        replaced_by_mask += int((picked & (inputs == encoder.mask_id)).sum())
        random = picked & (inputs != encoder.mask_id) & (inputs != original)
        replaced_by_random += int(random.sum())
        kept += int((picked & (inputs == original)).sum())
        assert bool(((inputs[random] > encoder.mask_id) & (inputs[random] < len(encoder.vocabulary()))).all())
    assert maskable > 100_000
    assert abs(chosen / maskable - 0.15) < 0.005, chosen / maskable
    assert abs(replaced_by_mask / chosen - 0.8) < 0.01
    assert abs(replaced_by_random / chosen - 0.1) < 0.01
    assert abs(kept / chosen - 0.1) < 0.01
    last = split[len(split) - 1]  # "一 二\u3000三😀四": the space, the ideographic space and the emoji never chosen
    assert [int(k) == 0 for k in last["mlm_key"]] == [False, True, False, True, False, True, False]


def test_masks_are_a_function_of_seed_text_and_batch_never_of_global_state(encoder, news):
    task = MlmTask(MlmConfig(seed=7), [])
    split = encode_split([Example(t, True) for t in news[:200]], lambda e: task.encode(e, encoder), 126, 0)
    first = collated(task, split, range(0, 32))
    torch.manual_seed(123), np.random.seed(5)  # the global generators play no part
    assert all(torch.equal(first[k], v) for k, v in collated(task, split, range(0, 32)).items())
    # evaluation (gradients off): a window's masks do not depend on its companions
    with torch.no_grad():
        alone = collated(task, split, [0])
        together = collated(task, split, [0, 5, 9])
    width = alone["masked_ids"].shape[1]
    assert torch.equal(alone["masked_ids"][0], together["masked_ids"][0, :width])
    # training (gradients on): another batch masks the same window afresh
    trained_alone = collated(task, split, [0])
    trained_together = collated(task, split, [0, 5, 9])
    assert not torch.equal(trained_alone["masked_ids"][0], trained_together["masked_ids"][0, :width])
    static = MlmTask(MlmConfig(seed=7, dynamic_masks=False), [])
    assert torch.equal(static.collate([split[0], split[5], split[9]])["masked_ids"][0, :width], alone["masked_ids"][0])
    other_seed = MlmTask(MlmConfig(seed=8), [])
    assert not torch.equal(other_seed.collate([split[0]])["masked_ids"], trained_alone["masked_ids"])


# --- scoring -------------------------------------------------------------------------------


class VocabularyOnly(torch.nn.Module):
    def vocabulary(self) -> list[str]:
        return ["[PAD]", "[MASK]", "甲", "乙", "丙", "丁"]


def test_loss_and_accuracy_of_a_hand_made_batch():
    head = MlmHead(MlmHeadConfig(tie=False), 6, [], "masked_ids")
    head.bind(VocabularyOnly())
    assert head.labels[2] == "甲" and head.num_labels == 6
    head.logits = lambda rows: rows  # the hidden vectors are the logits
    logits = torch.tensor(
        [
            [[0, 0, 0, 0, 0, 0], [0, 0, 3.0, 1.0, 0, 0], [0, 0, 0, 0, 0, 0], [0, 0, 0, 2.0, 1.0, 0]],  # 甲 right, 乙 for 丙
            [[0, 0, 0, 0, 0, 4.0], [0, 0, 0, 0, 0, 0], [0, 0, 0, 0, 0, 0], [0, 0, 0, 0, 0, 0]],
        ]
    )  # fmt: skip
    gold = torch.tensor([[-1, 2, -1, 4], [5, -1, -1, -1]])
    mask = torch.tensor([[True] * 4, [True, True, True, False]])
    output = head.decode(logits, mask, gold)
    windows = head.unbatch(output, [4, 3])
    task = MlmTask(MlmConfig(), [])
    first = task.combine("甲甲丙丙", [Window(0, 4, (0, 4), windows[0])], "masked_ids")
    second = task.combine("丁乙乙", [Window(0, 3, (0, 3), windows[1])], "masked_ids")
    assert first.offsets.tolist() == [1, 3] and first.gold.tolist() == [2, 4] and first.predicted.tolist() == [2, 3]
    assert first.chars == ["甲", "乙"] and second.chars == ["丁"]
    evaluation = task.score([True, True], [first, second])

    def nll(row: list[float], k: int) -> float:
        return math.log(sum(math.exp(v) for v in row)) - row[k]

    expected = (nll([0, 0, 3, 1, 0, 0], 2) + nll([0, 0, 0, 2, 1, 0], 4) + nll([0, 0, 0, 0, 0, 4], 5)) / 3
    assert evaluation.main == "mlm_loss" and not evaluation.higher_is_better
    assert evaluation.summary["mlm_loss"] == pytest.approx(expected, rel=1e-6)
    assert evaluation.summary["accuracy"] == pytest.approx(2 / 3)
    assert evaluation.summary["perplexity"] == pytest.approx(math.exp(expected), rel=1e-6)
    assert evaluation.details["masked"] == 3 and evaluation.details["correct"] == 2
    assert task.output("甲甲丙丙", first) == {"masked": [
        {"start": 1, "char": "甲", "predicted": "甲", "correct": True},
        {"start": 3, "char": "丙", "predicted": "乙", "correct": False},
    ]}  # fmt: skip
    # the training loss is the same mean over the masked characters
    head.train()
    assert head.loss(logits, gold, mask).item() == pytest.approx(expected, rel=1e-6)


def test_overlapping_windows_count_each_masked_character_once():
    task = MlmTask(MlmConfig(), [])
    rows = np.tile(np.asarray([-1, -1, 0, -1], dtype=np.float32), (4, 1))
    left, right = rows.copy(), rows.copy()
    left[3] = right[1] = [2, 2, 0.5, ord("甲")]  # text offset 3, in both windows
    combined = task.combine("乙乙乙甲乙乙", [Window(0, 4, (0, 3), left), Window(2, 4, (3, 6), right)], "masked_ids")
    assert combined.offsets.tolist() == [3] and combined.nll.tolist() == [0.5]


# --- text_files.v1 -------------------------------------------------------------------------


def test_text_files_reads_each_format_and_holds_out_dev_by_hash(tmp_path):
    (tmp_path / "a.txt").write_text("第一行\n\n第二行\r\n", encoding="utf-8")
    (tmp_path / "b.txt").write_text("迈向/v  充满/v  希望/n  ——/w  1/2/m  //w\n", encoding="utf-8")
    (tmp_path / "c.jsonl").write_text('{"text": "北京", "label": "x"}\n{"sentence": "no"}\n', encoding="utf-8")
    (tmp_path / "d.txt").write_text("上 海 人\n", encoding="utf-8")
    config = TextFilesConfig(
        train=[str(tmp_path / "a.txt"), {"path": str(tmp_path / "b.txt"), "format": "segmented"},
               {"path": str(tmp_path / "c.jsonl"), "format": "jsonl"}],
        dev=[{"path": str(tmp_path / "d*.txt"), "format": "spaced"}], on_error="skip",
    )  # fmt: skip
    dataset = TextFiles(config, tmp_path)
    assert [e.text for e in dataset.load("train")] == ["第一行", "第二行", "迈向充满希望——1/2/", "北京"]
    assert [e.text for e in dataset.load("dev")] == ["上海人"] and dataset.load("dev")[0].gold is True
    assert dataset.skipped == [f"{tmp_path / 'c.jsonl'}:2: no text field 'text' (a string) in the record"]
    assert dataset.files("dev") == [tmp_path / "d.txt"]
    lines = [f"第{i}句话" for i in range(400)]
    (tmp_path / "many.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    held = TextFiles(TextFilesConfig(train=[str(tmp_path / "many.txt")], dev_fraction=0.25), tmp_path)
    train, dev = [e.text for e in held.load("train")], [e.text for e in held.load("dev")]
    assert sorted(train + dev) == sorted(lines) and not set(train) & set(dev)
    assert 60 < len(dev) < 140
    again = TextFiles(TextFilesConfig(train=[str(tmp_path / "many.txt")], dev_fraction=0.25), tmp_path)
    assert [e.text for e in again.load("dev")] == dev


def test_text_files_name_the_file_and_line_of_bad_input(tmp_path):
    (tmp_path / "bad.txt").write_bytes("好\n".encode() + b"\xff\xfe\n")
    dataset = TextFiles(TextFilesConfig(train=[str(tmp_path / "bad.txt")], dev_fraction=0.5), tmp_path)
    with pytest.raises(DataError, match=rf"{tmp_path / 'bad.txt'}:2: not UTF-8 text: byte 0xff"):
        dataset.load("train")
    with pytest.raises(DataError, match=r"dataset.train\[1\]: no file matches .*nothing\*.txt"):
        TextFiles(TextFilesConfig(train=[str(tmp_path / "bad.txt"), str(tmp_path / "nothing*.txt")], dev_fraction=0.5), tmp_path).load("dev")
    (tmp_path / "bad.jsonl").write_text('{"text": "好"}\n{"text": \n', encoding="utf-8")
    jsonl = TextFiles(TextFilesConfig(train=[{"path": str(tmp_path / "bad.jsonl"), "format": "jsonl"}], dev_fraction=0.5), tmp_path)
    with pytest.raises(DataError, match=rf"{tmp_path / 'bad.jsonl'}:2: not JSON"):
        jsonl.load("train")
    with pytest.raises(ValueError, match="set either 'dev'"):
        TextFilesConfig(train=["a.txt"])


# --- runs ----------------------------------------------------------------------------------


def mlm_recipe(folder: Path, news: list[str]) -> Path:
    data = folder / "texts"
    data.mkdir(parents=True, exist_ok=True)
    (data / "train.txt").write_text("\n".join(news[:200]) + "\n", encoding="utf-8")
    (data / "dev.txt").write_text("\n".join(news[200:230]) + "\n", encoding="utf-8")
    sizes = "\n".join(f"{k} = {v}" for k, v in TINY_BERT.items())
    path = folder / "mlm.toml"
    path.write_text(f"""name = "mlm_tiny"
[task]
type = "mlm.v1"
seed = 1
[dataset]
type = "text_files.v1"
train = ["{data / 'train.txt'}"]
dev = ["{data / 'dev.txt'}"]
[encoder]
type = "bert.v1"
vocab = "bert-base-chinese-vocab/vocab.txt"
{sizes}
[decoder]
type = "mlm_head.v1"
[trainer]
epochs = 2
batch_size = 16
eval_batch_size = 64
lr = 5e-3
warmup_ratio = 0.0
seed = 3
device = "cpu"
window = 64
stride = 0
checkpoint_every = 3
log_every = 2
""", encoding="utf-8")  # fmt: skip
    return path


def records(run: Path) -> list[dict]:
    lines = (run / "metrics.jsonl").read_text(encoding="utf-8").splitlines()
    return [{k: v for k, v in json.loads(line).items() if k != "speed"} for line in lines]


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory, news) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("mlm")
    run = folder / "run"
    run_ok([sys.executable, "-m", "nlpfw", "run", str(mlm_recipe(folder, news)), "-o", str(run)])
    return folder, run


def test_a_run_from_scratch_learns_and_reports_loss_and_accuracy(pretrained):
    _, run = pretrained
    epochs = records(run)
    assert [(r["main"]["name"], r["main"]["higher_is_better"]) for r in epochs] == [("mlm_loss", False)] * 2
    first, second = (r["summary"] for r in epochs)
    assert second["mlm_loss"] < first["mlm_loss"] < math.log(21128)  # below guessing among the vocabulary
    assert 0 < second["accuracy"] < 1 and epochs[1]["scores"]["masked"] > 200
    assert second["perplexity"] == pytest.approx(math.exp(second["mlm_loss"]))
    report = json.loads((run / "report.json").read_text(encoding="utf-8"))
    assert report["task"] == "mlm.v1" and report["best_epoch"] == 2
    text = (run / "report.txt").read_text(encoding="utf-8")
    assert text.startswith(f"mlm_tiny: best dev mlm-loss {second['mlm_loss']:.4f} at epoch 2")
    assert "| epoch | train loss | dev loss | mlm-loss | accuracy | perplexity |" in (run / "report.md").read_text(encoding="utf-8")
    labels = json.loads((run / "model" / "labels.json").read_text(encoding="utf-8"))
    assert labels["target"] == "masked_ids" and len(labels["target_labels"]) == 21128
    saved = safetensors.torch.load_file(str(run / "model" / "model.safetensors"))
    assert "encoder.bert.embeddings.word_embeddings.weight" in saved  # the tied output layer: stored once
    assert not any(name.startswith("decoder") and "word_embeddings" in name for name in saved)
    import nlpfw

    text = "中共中央总书记、国家主席江泽民发表新年讲话。" * 3
    (record,) = nlpfw.load(run).predict([text])  # the text masked as dev is, and the head's guesses
    assert record["masked"] and all(text[m["start"]] == m["char"] for m in record["masked"])
    assert {m["correct"] for m in record["masked"]} <= {True, False}
    assert all(m["correct"] == (m["predicted"] == m["char"]) for m in record["masked"])


def test_sigkill_then_resume_gives_the_uninterrupted_run(pretrained, tmp_path, news):
    folder, run = pretrained
    output = tmp_path / "run"
    args = [sys.executable, "-m", "nlpfw", "run", str(folder / "mlm.toml"), "-o", str(output)]
    process = start_and_wait(output, lambda m: m["epoch"] == 2 and m["batch"] > 0, args)
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)
    assert not (output / "report.json").exists()
    run_ok([sys.executable, "-m", "nlpfw", "run", str(folder / "mlm.toml"), "--resume", str(output)])
    assert records(output) == records(run)


def test_the_pretrained_encoder_loads_and_fine_tunes_ner(pretrained, data_root, tmp_path):
    _, run = pretrained
    saved = safetensors.torch.load_file(str(run / "model" / "model.safetensors"))
    prefix = "encoder.bert."
    for place in (run, run / "model", run / "model" / "encoder"):
        loaded = BertEncoder.from_config(BertEncoderConfig(pretrained=str(place)), data_root)
        for name, value in loaded.bert.state_dict().items():
            assert torch.equal(value, saved[prefix + name]), (place, name)
    started = BertEncoder.from_config(
        BertEncoderConfig(vocab="bert-base-chinese-vocab/vocab.txt", init_from=str(run), **TINY_BERT), data_root
    )
    assert torch.equal(started.bert.embeddings.word_embeddings.weight, saved[prefix + "embeddings.word_embeddings.weight"])
    with pytest.raises(DataError, match=r"encoder.init_from: .*/run: embeddings\.\S+ has shape \((21128, )?32,?\), the model \((21128, )?64,?\); the size settings"):
        BertEncoder.from_config(BertEncoderConfig(vocab="bert-base-chinese-vocab/vocab.txt", init_from=str(run),
                                                  **{**TINY_BERT, "hidden_size": 64}), data_root)  # fmt: skip
    with pytest.raises(DataError, match=r"encoder.init_from: .*/run: lacks 16 of the model's weights, e.g. encoder.layer.1.attention"):
        BertEncoder.from_config(BertEncoderConfig(vocab="bert-base-chinese-vocab/vocab.txt", init_from=str(run),
                                                  **{**TINY_BERT, "num_layers": 2}), data_root)  # fmt: skip
    ner = tmp_path / "ner"
    sizes = [f"encoder.{k}={v}" for k, v in TINY_BERT.items()]
    overrides = [*sizes, "dataset.limit=64", "trainer.max_steps=2", "trainer.batch_size=16", f"encoder.init_from={run}"]
    args = [sys.executable, "-m", "nlpfw", "run", str(ROOT / "recipes" / "quickstart.toml"), "-o", str(ner)]
    run_ok([*args, *(x for o in overrides for x in ("--set", o))])
    report = json.loads((ner / "report.json").read_text(encoding="utf-8"))
    assert report["task"] == "ner.v1" and report["best"]["main"]["name"] == "f1"
