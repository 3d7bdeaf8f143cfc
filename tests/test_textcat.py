"""Text classification through the task contract: textcat.v1, classifier.v1, text_labels.v1 and
sentiment.v1, and everything a user does with an NER run done with a classifier."""

from __future__ import annotations

import json
import signal
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from test_resume import comparable, start_and_wait
from test_training import ROOT, run_ok

import nlpfw
from nlpfw.cli import cli
from nlpfw.corpus import encode_split, owned_ranges
from nlpfw.errors import DataError, NlpfwError
from nlpfw.export import OnnxModel
from nlpfw.interfaces import Example, Window
from nlpfw.model import infer, predict_split
from nlpfw_plugins.text_labels import Sentiment, SentimentConfig, TextLabels, TextLabelsConfig
from nlpfw_plugins.textcat import ClassifierConfig, ClassifierDecoder, Classes, TextcatConfig, TextcatTask

RECIPE = ROOT / "recipes" / "bilstm_textcat_sentiment.toml"
TINY = [
    "dataset.limit=300", "encoder.embedding_size=16", "encoder.bigram_size=8", "encoder.hidden_size=16",
    "trainer.epochs=2", "trainer.batch_size=16", "trainer.eval_batch_size=64",
]  # fmt: skip


def run_args(output: Path, *overrides: str, recipe: Path = RECIPE) -> list[str]:
    args = ["run", str(recipe), "-o", str(output)]
    for item in [*TINY, *overrides]:
        args += ["--set", item]
    return args


def invoke(*args):
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)


@pytest.fixture(scope="module")
def textcat_run(tmp_path_factory, data_root) -> Path:
    output = tmp_path_factory.mktemp("textcat") / "run"
    result = invoke(*run_args(output, "trainer.checkpoint_every=4"))
    assert result.exit_code == 0, result.output
    return output


# --- datasets ------------------------------------------------------------------------------


def test_sentiment_reads_the_shared_corpus(data_root):
    dataset = Sentiment(SentimentConfig(), data_root)
    train, dev, test = (dataset.load(split) for split in ("train", "dev", "test"))
    assert (len(train), len(dev), len(test)) == (13_886, 1_720, 1_757)
    assert Counter(e.gold[0] for e in train) == {"neg": 7_200, "pos": 6_686}
    assert Counter(e.gold[0] for e in dev) == {"neg": 923, "pos": 797}
    assert Counter(e.gold[0] for e in test) == {"neg": 908, "pos": 849}
    assert dataset.labels() == ["neg", "pos"] and all(len(e.gold) == 1 for e in train)
    assert max(len(e.text) for e in train + dev + test) == 2_876  # longer than a BERT window: windowed, never cut


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_text_labels_reads_tnews_jsonl_chnsenticorp_tsv_and_multi_label_csv(tmp_path):
    tnews = tmp_path / "tnews"
    tnews.mkdir()
    lines = [{"label": "102", "label_desc": "news_entertainment", "sentence": "江疏影甜甜圈自拍，😀 迷倒一片"},
             {"label": "110", "label_desc": "news_military", "sentence": "以色列大规模空袭"}]  # fmt: skip
    for split in ("train", "dev"):
        write(tnews / f"{split}.jsonl", "".join(json.dumps(x, ensure_ascii=False) + "\n" for x in lines))
    dataset = TextLabels(TextLabelsConfig(path=str(tnews), text_field="sentence", label_field="label_desc"), tmp_path)
    first = dataset.load("train")[0]
    assert (first.text, first.gold) == ("江疏影甜甜圈自拍，😀 迷倒一片", ["news_entertainment"])
    assert dataset.labels() == ["news_entertainment", "news_military"]
    numeric = TextLabels(TextLabelsConfig(path=str(tnews), text_field="sentence"), tmp_path)
    assert numeric.load("dev")[1].gold == ["110"]  # a number's text is the label

    senti = tmp_path / "chnsenticorp"
    senti.mkdir()
    write(senti / "train.tsv", "label\ttext_a\n1\t选择珠江花园的原因就是方便。\n0\t房间 太小，服务差\n")
    write(senti / "dev.tsv", "label\ttext_a\n0\t不好\n")
    write(senti / "test.tsv", "qid\ttext_a\n0\t还行吧\n")  # no label column: texts to predict on
    config = TextLabelsConfig(path=str(senti), train="train.tsv", dev="dev.tsv", test="test.tsv", text_field="text_a")
    dataset = TextLabels(config, tmp_path)
    assert [(e.text, e.gold) for e in dataset.load("train")] == [("选择珠江花园的原因就是方便。", ["1"]), ("房间 太小，服务差", ["0"])]
    assert [(e.text, e.gold) for e in dataset.load("test")] == [("还行吧", None)]

    multi = tmp_path / "multi"
    multi.mkdir()
    write(multi / "train.csv", 'text,tags\n"价格便宜, 物流快",price|delivery\n质量一般,quality\n')
    write(multi / "dev.csv", "text,tags\n发货慢,delivery\n")
    config = TextLabelsConfig(path=str(multi), train="train.csv", dev="dev.csv", label_field="tags", label_separator="|")
    dataset = TextLabels(config, tmp_path)
    assert [e.gold for e in dataset.load("train")] == [["price", "delivery"], ["quality"]]
    assert dataset.load("train")[0].text == "价格便宜, 物流快"  # the quoted comma stays in the text
    assert dataset.labels() == ["delivery", "price", "quality"]


def test_bad_lines_name_the_file_and_line_or_are_skipped(tmp_path):
    folder = tmp_path / "bad"
    folder.mkdir()
    write(folder / "train.jsonl", '{"text": "好", "label": "pos"}\n{"text": "坏"}\nnot json\n{"text": 3, "label": "neg"}\n'
                                  '{"text": "空", "label": ""}\n{"text": "怪", "label": "meh"}\n{"text": "差", "label": "neg"}\n')  # fmt: skip
    write(folder / "dev.jsonl", '{"text": "好", "label": "pos"}\n')
    train = folder / "train.jsonl"
    strict = TextLabels(TextLabelsConfig(path=str(folder), labels=["neg", "pos"]), tmp_path)
    with pytest.raises(DataError, match=rf"^{train}:2: no 'label' field \(set dataset.label_field\) \(set dataset.on_error"):
        strict.load("train")
    lenient = TextLabels(TextLabelsConfig(path=str(folder), labels=["neg", "pos"], on_error="skip"), tmp_path)
    assert [(e.text, e.gold) for e in lenient.load("train")] == [("好", ["pos"]), ("差", ["neg"])]
    assert lenient.skipped == [
        f"{train}:2: no 'label' field (set dataset.label_field)",
        f"{train}:3: not valid JSON: Expecting value at column 1",
        f"{train}:4: 'text' must be a string (found a int; set dataset.text_field)",
        f"{train}:5: 'label' holds an empty label",
        f"{train}:6: unknown label 'meh'; labels: neg, pos",
    ]
    write(folder / "train.tsv", "label\tsentence\n1\tx\n")
    with pytest.raises(DataError, match=r"train\.tsv:1: no column 'text' in the header; columns: label, sentence \(set dataset\.text_field\)"):
        TextLabels(TextLabelsConfig(path=str(folder), train="train.tsv"), tmp_path).load("train")


# --- the task and the decoder --------------------------------------------------------------


def test_windows_are_combined_weighted_by_the_characters_they_own():
    task = TextcatTask(TextcatConfig(), ["neg", "pos"])
    windows = [Window(0, 10, (0, 8), np.asarray([0.9, 0.1])), Window(6, 10, (8, 16), np.asarray([0.2, 0.8]))]
    combined = task.combine("x" * 16, windows, "class")
    assert combined.scores == pytest.approx({"neg": 0.55, "pos": 0.45}) and combined.labels == ["neg"]
    windows[0] = Window(0, 10, (0, 4), np.asarray([0.9, 0.1]))  # the second owns three quarters
    windows[1] = Window(4, 12, (4, 16), np.asarray([0.2, 0.8]))
    assert task.combine("x" * 16, windows, "class").labels == ["pos"]
    multi = TextcatTask(TextcatConfig(multi_label=True, threshold=0.4), ["a", "b", "c"])
    found = multi.combine("xy", [Window(0, 2, (0, 2), np.asarray([0.5, 0.39, 0.4]))], "classes")
    assert found.labels == ["a", "c"] and multi.output("xy", found) == {"labels": ["a", "c"], "scores": {"a": 0.5, "b": 0.39, "c": 0.4}}
    assert task.combine("", [], "class").labels == []  # an empty text has no window


def test_scores_accuracy_macro_and_micro_f1_and_per_class():
    task = TextcatTask(TextcatConfig(), ["neg", "pos", "neu"])
    gold = [["neg"], ["neg"], ["pos"], ["neu"]]
    predicted = [Classes([label], {}) for label in ("neg", "pos", "pos", "pos")]
    evaluation = task.score(gold, predicted)
    assert evaluation.main == "accuracy" and evaluation.value == 0.5
    neg, pos, neu = (evaluation.per_label[c] for c in ("neg", "pos", "neu"))
    assert (neg["precision"], neg["recall"], neg["support"]) == (1.0, 0.5, 2)
    assert (pos["precision"], pos["recall"], pos["support"]) == (pytest.approx(1 / 3), 1.0, 1)
    assert neu["f1"] == 0.0 and neu["support"] == 1
    assert evaluation.summary["macro_f1"] == pytest.approx((2 / 3 + 0.5 + 0.0) / 3)
    assert evaluation.summary["micro_f1"] == 0.5  # single-label: micro-F1 is the accuracy
    multi = TextcatTask(TextcatConfig(multi_label=True), ["a", "b"])
    evaluation = multi.score([["a", "b"], ["a"]], [Classes(["a", "b"], {}), Classes(["a", "b"], {})])
    assert evaluation.main == "macro_f1" and evaluation.summary["accuracy"] == 0.5  # exact sets only
    assert evaluation.per_label["b"]["precision"] == 0.5 and evaluation.summary["micro_f1"] == pytest.approx(6 / 7)
    chosen = TextcatTask(TextcatConfig(main_score="macro_f1"), ["x", "y"]).score([["x"]], [Classes(["x"], {})])
    assert chosen.main == "macro_f1" and chosen.higher_is_better


def test_encode_gives_one_value_per_text_and_checks_the_classes():
    class Chars:
        def char_ids(self, text):
            return [1] * len(text)

    task = TextcatTask(TextcatConfig(), ["neg", "pos"])
    split = encode_split([Example("很好用", ["pos"]), Example("差评" * 6, ["neg"])], lambda e: task.encode(e, Chars()), 5, 2)
    assert split.values["class"].tolist() == [1, 0] and len(split) == 1 + 4  # the 12 characters have four windows
    assert [int(split[i]["class"]) for i in range(len(split))] == [1, 0, 0, 0, 0]  # every window has its text's class
    batch = task.collate([split[0], split[1]])
    assert batch["class"].tolist() == [1, 0] and batch["mask"].tolist() == [[True, True, True, False, False], [True] * 5]
    with pytest.raises(ValueError, match=r"a single-label text has 2 classes \(\['neg', 'pos'\]\); set task.multi_label = true"):
        task.encode(Example("好", ["neg", "pos"]), Chars())
    with pytest.raises(ValueError, match=r"classes \['meh'\] are not among the task's \['neg', 'pos'\]"):
        task.encode(Example("好", ["meh"]), Chars())
    multi = TextcatTask(TextcatConfig(multi_label=True), ["a", "b", "c"])
    assert multi.encode(Example("好", ["c", "a"]), Chars()).values["classes"].tolist() == [1.0, 0.0, 1.0]


def test_classifier_pools_over_the_mask_and_weighs_classes():
    hidden = torch.tensor([[[1.0, 0.0], [3.0, 2.0], [99.0, 99.0]], [[5.0, -1.0], [0.0, 0.0], [0.0, 0.0]]])
    mask = torch.tensor([[True, True, False], [True, False, False]])
    for pooling, expected in (
        ("first", [[1.0, 0.0], [5.0, -1.0]]),
        ("mean", [[2.0, 1.0], [5.0, -1.0]]),
        ("max", [[3.0, 2.0], [5.0, -1.0]]),
        ("mean_max", [[2.0, 1.0, 3.0, 2.0], [5.0, -1.0, 5.0, -1.0]]),
    ):
        decoder = ClassifierDecoder(ClassifierConfig(pooling=pooling), 2, ["a", "b"], "class")
        assert decoder.pool(hidden, mask).tolist() == expected, pooling
    decoder = ClassifierDecoder(ClassifierConfig(dropout=0.0), 2, ["a", "b"], "class").eval()
    scores = decoder.decode(hidden, mask)
    assert scores.shape == (2, 2) and torch.allclose(scores.sum(dim=1), torch.ones(2))
    weighted = ClassifierDecoder(ClassifierConfig(dropout=0.0, class_weights={"b": 3.0}), 2, ["a", "b"], "class")
    weighted.load_state_dict(decoder.state_dict())
    gold = torch.tensor([1, 1])
    logits = decoder.logits(hidden, mask)
    assert torch.allclose(weighted.loss(hidden, gold, mask), torch.nn.functional.cross_entropy(logits, gold))  # all b: the weights cancel
    assert not torch.allclose(weighted.loss(hidden, torch.tensor([0, 1]), mask), decoder.loss(hidden, torch.tensor([0, 1]), mask))
    with pytest.raises(ValueError, match=r"decoder.class_weights: unknown labels \['c'\]; labels: a, b$"):
        ClassifierDecoder(ClassifierConfig(class_weights={"c": 2.0}), 2, ["a", "b"], "class")
    sigmoid = ClassifierDecoder(ClassifierConfig(), 2, ["a", "b"], "classes").eval()
    assert ((sigmoid.decode(hidden, mask) > 0) & (sigmoid.decode(hidden, mask) < 1)).all()
    assert sigmoid.loss(hidden, torch.tensor([[1.0, 0.0], [1.0, 1.0]]), mask).ndim == 0


def test_a_tag_decoder_cannot_learn_a_classification_task(registry):
    from types import SimpleNamespace

    from nlpfw.model import build_decoder
    from nlpfw_plugins.crf import CrfConfig

    section = SimpleNamespace(type="crf.v1", config=CrfConfig(), component=registry.get("decoder", "crf.v1"))
    encoder = SimpleNamespace(output_dim=8)
    with pytest.raises(NlpfwError, match=r"^decoder.type: crf.v1 learns from tags, which task TextcatTask does not give \(it gives class\)$"):
        build_decoder(section, encoder, TextcatTask(TextcatConfig(), ["neg", "pos"]))
    multi = TextcatTask(TextcatConfig(multi_label=True), ["a", "b"])
    section = SimpleNamespace(type="classifier.v1", config=ClassifierConfig(), component=registry.get("decoder", "classifier.v1"))
    assert build_decoder(section, encoder, multi).target == "classes"


# --- a classifier run, end to end ----------------------------------------------------------


def test_a_classification_run_writes_its_tables_reports_and_model(textcat_run):
    report = json.loads((textcat_run / "report.json").read_text(encoding="utf-8"))
    best = report["best"]
    assert report["task"] == "textcat.v1" and report["labels"] == ["neg", "pos"]
    assert best["main"]["name"] == "accuracy" and best["main"]["value"] == best["summary"]["accuracy"]
    assert list(best["summary"]) == ["accuracy", "macro_f1", "micro_f1"]
    assert set(best["per_label"]) == {"neg", "pos", "overall"} and best["per_label"]["neg"]["support"] + best["per_label"]["pos"]["support"] == 300
    assert best["summary"]["accuracy"] > 0.6  # 300 reviews, two tiny epochs: better than chance (0.54)
    records = [json.loads(line) for line in (textcat_run / "metrics.jsonl").read_text(encoding="utf-8").splitlines()]
    assert best == max(records, key=lambda r: r["main"]["value"]) | {"device": best["device"]}
    text = (textcat_run / "report.txt").read_text(encoding="utf-8")
    assert text.startswith(f"bilstm_textcat_sentiment: best dev accuracy {best['summary']['accuracy']:.4f}")
    assert "Per-class F1 (dev)" in text and "macro_f1" in text
    md = (textcat_run / "report.md").read_text(encoding="utf-8")
    assert "| epoch | train loss | dev loss | accuracy | macro-F1 | micro-F1 |" in md and "![per-class F1](labels.png)" in md
    assert (textcat_run / "labels.png").stat().st_size > 5_000 and (textcat_run / "curves.png").stat().st_size > 5_000
    labels = json.loads((textcat_run / "model" / "labels.json").read_text(encoding="utf-8"))
    assert labels == {"labels": ["neg", "pos"], "target": "class", "target_labels": ["neg", "pos"]}


def test_predict_evaluate_and_the_python_api(textcat_run, data_root, tmp_path):
    texts = ["这个手机很好用，物流也快", "质量太差了，退货", "", "好" * 700]  # an empty text and one longer than no window
    model = nlpfw.load(textcat_run)
    records = model.predict(texts)
    assert [r["text"] for r in records] == texts
    for record in records[:2] + records[3:]:
        assert record["label"] in ("neg", "pos") and set(record["scores"]) == {"neg", "pos"}
        assert record["scores"][record["label"]] == max(record["scores"].values())
        assert sum(record["scores"].values()) == pytest.approx(1.0, abs=1e-5)
    assert records[2] == {"text": "", "label": None, "scores": {"neg": 0.0, "pos": 0.0}}
    result = invoke("predict", textcat_run, *texts[:2])
    assert result.exit_code == 0, result.output
    assert [json.loads(line) for line in result.output.splitlines()] == records[:2]
    lines = tmp_path / "in.jsonl"
    lines.write_text("".join(json.dumps({"id": i, "text": t}, ensure_ascii=False) + "\n" for i, t in enumerate(texts[:2])), encoding="utf-8")
    result = invoke("predict", textcat_run, "--input", lines, "--output", tmp_path / "out.jsonl")
    assert result.exit_code == 0 and "Wrote 2 predictions" in result.output
    written = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text(encoding="utf-8").splitlines()]
    assert written == [{"id": i, **r} for i, r in enumerate(records[:2])]

    result = invoke("evaluate", textcat_run, "--split", "test", "--output", tmp_path / "scores.json")
    assert result.exit_code == 0, result.output
    saved = json.loads((tmp_path / "scores.json").read_text(encoding="utf-8"))
    assert f"sentiment.v1 test: 300 texts, accuracy {saved['summary']['accuracy']:.4f} (macro-F1" in " ".join(result.output.split())
    dev = Sentiment(SentimentConfig(limit=300), data_root).load("dev")
    report = json.loads((textcat_run / "report.json").read_text(encoding="utf-8"))
    assert model.evaluate(dev)["summary"] == report["best"]["summary"]  # the run's own dev scores, reproduced
    own = tmp_path / "own.jsonl"
    own.write_text("".join(json.dumps({"text": e.text, "label": e.gold[0]}, ensure_ascii=False) + "\n" for e in dev), encoding="utf-8")
    result = invoke("evaluate", textcat_run, "--data", own, "--output", tmp_path / "own.json")
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "own.json").read_text(encoding="utf-8"))["summary"] == report["best"]["summary"]
    result = invoke("predict", textcat_run, "--submission")
    assert result.exit_code == 1 and "Error: --submission: dataset Sentiment has no submission format" in result.output


def test_long_texts_are_classified_by_their_windows(tmp_path, data_root):
    output = tmp_path / "run"
    result = invoke(*run_args(output, "trainer.window=32", "trainer.stride=8", "trainer.epochs=1"))
    assert result.exit_code == 0, result.output
    report = json.loads((output / "report.json").read_text(encoding="utf-8"))
    assert report["data"]["window"] == 32 and report["data"]["dev_windowed"] > 50
    model = nlpfw.load(output)
    text = "手机很好用，就是电池不行。" * 10
    [record] = model.predict([text])
    windows = model.encode([Example(text)])
    assert len(windows) == 6  # 130 characters in windows of 32 overlapping by 8
    outputs, _, _ = infer(model.model, model.task, windows, 64, model.device)
    starts = windows.window_start.tolist()
    owned = [hi - lo for lo, hi in owned_ranges(starts, len(text), 32)]
    assert sum(owned) == len(text)  # every character counts once
    expected = np.average(np.stack(outputs), axis=0, weights=owned)
    assert [record["scores"]["neg"], record["scores"]["pos"]] == pytest.approx(expected.tolist(), abs=1e-6)
    assert not np.allclose(outputs[0], outputs[-1])  # the windows do differ


def test_export_onnx_gives_the_models_scores(textcat_run, tmp_path, data_root):
    out = tmp_path / "sentiment.onnx"
    result = invoke("export", textcat_run, "--onnx", out)
    assert result.exit_code == 0, result.output
    sidecar = json.loads(out.with_name("sentiment.onnx.json").read_text(encoding="utf-8"))
    assert sidecar["output"] == "scores" and sidecar["target"] == "class" and sidecar["labels"] == ["neg", "pos"]
    model = nlpfw.load(textcat_run)
    texts = [e.text for e in Sentiment(SentimentConfig(limit=200), data_root).load("dev")] + ["好" * 700]
    expected, _, _ = predict_split(model.model, model.task, model.encode([Example(t) for t in texts]), 64, model.device)
    got, _, _ = predict_split(OnnxModel(out, model.model.decoder), model.task, model.encode([Example(t) for t in texts]), 64, model.device)
    assert [p.labels for p in got] == [p.labels for p in expected]
    for a, b in zip(got, expected):
        assert a.scores == pytest.approx(b.scores, abs=1e-4)


def test_report_and_compare_a_classifier_beside_an_ner_run(textcat_run, run_dir, tmp_path):
    for name in ("report.txt", "report.md", "labels.png"):
        (textcat_run / name).rename(tmp_path / name)
    result = invoke("report", textcat_run)
    assert result.exit_code == 0, result.output
    assert (textcat_run / "report.txt").read_text(encoding="utf-8") == (tmp_path / "report.txt").read_text(encoding="utf-8")
    for name in ("report.txt", "report.md", "labels.png"):
        assert (textcat_run / name).exists()
    result = CliRunner().invoke(cli, ["compare", str(textcat_run), str(run_dir)], terminal_width=200)
    assert result.exit_code == 0, result.output
    rows = {line.split("│")[1].strip(): line for line in result.output.splitlines() if line.count("│") >= 3}
    assert "accuracy" in rows and "F1" in rows and "neg" in rows and "name" in rows
    assert rows["accuracy"].split("│")[3].strip() == "-"  # the NER run has no accuracy


def test_sigkill_then_resume_gives_the_uninterrupted_classifier(textcat_run, tmp_path):
    output = tmp_path / "run"
    args = [sys.executable, "-m", "nlpfw", *run_args(output, "trainer.checkpoint_every=4")]
    process = start_and_wait(output, lambda m: m["epoch"] == 2 and m["batch"] > 0, args)
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)
    assert not (output / "report.json").exists()
    run_ok([sys.executable, "-m", "nlpfw", "run", str(RECIPE), "--resume", str(output)])
    assert comparable(output) == comparable(textcat_run)


def test_two_processes_train_the_classifier_one_process_trains(tmp_path, data_root):
    exact = ["trainer.amp=false", "encoder.dropout=0.0", "encoder.unk_dropout=0.0", "decoder.dropout=0.0"]
    single, double = tmp_path / "single", tmp_path / "double"
    run_ok([sys.executable, "-m", "nlpfw", *run_args(single, *exact)])
    result = run_ok([sys.executable, "-m", "nlpfw", *run_args(double, *exact), "--nproc", "2"])
    assert result.stdout.count("Done: best dev accuracy") == 1  # only rank 0 prints
    import safetensors.torch

    ours = safetensors.torch.load_file(str(double / "model" / "model.safetensors"))
    theirs = safetensors.torch.load_file(str(single / "model" / "model.safetensors"))
    for name in ours:
        torch.testing.assert_close(ours[name], theirs[name], rtol=1e-4, atol=1e-5, msg=name)
    one, two = (json.loads((run / "report.json").read_text(encoding="utf-8"))["best"] for run in (single, double))
    assert two["per_label"]["overall"]["support"] == 300  # every dev text scored once, gathered from both ranks
    assert two["summary"]["accuracy"] == pytest.approx(one["summary"]["accuracy"], abs=1 / 300)


def test_bytes_that_are_not_utf8_and_lone_surrogates_are_bad_data(tmp_path):
    folder = tmp_path / "raw"
    folder.mkdir()
    (folder / "train.jsonl").write_bytes('{"text": "好", "label": "pos"}\n'.encode() + b'{"text": "\xe9", "label": "neg"}\n'
                                         + b'{"text": "ab\\ud800", "label": "neg"}\n')  # fmt: skip
    (folder / "dev.jsonl").write_text('{"text": "好", "label": "pos"}\n', encoding="utf-8")
    with pytest.raises(DataError, match=r"train\.jsonl:2: not UTF-8 text: byte 0xe9"):
        TextLabels(TextLabelsConfig(path=str(folder)), tmp_path).load("train")
    lenient = TextLabels(TextLabelsConfig(path=str(folder), on_error="skip"), tmp_path)
    assert [e.text for e in lenient.load("train")] == ["好"]
    assert len(lenient.skipped) == 2 and "lone surrogate" in lenient.skipped[1] and ":3: " in lenient.skipped[1]


# --- the annotation loop: pre-annotations and uncertainty ------------------------------------


def test_predict_pre_annotates_for_label_studio_and_doccano_and_ranks_by_uncertainty(textcat_run, data_root, tmp_path):
    from nlpfw_plugins.doccano import Doccano, DoccanoConfig
    from nlpfw_plugins.label_studio import LabelStudio, LabelStudioConfig

    pool = [e.text for e in Sentiment(SentimentConfig(limit=60), data_root).load("test")]
    pool += ["😀这款手机ＣＰＵ很快，电池也耐用🔋", "ＯＫ，还行吧。", ""]  # emoji, full-width characters, an empty text
    expected = nlpfw.load(textcat_run).predict(pool)
    (tmp_path / "pool.jsonl").write_text("".join(json.dumps({"id": f"p{i}", "text": t}, ensure_ascii=False) + "\n"
                                                 for i, t in enumerate(pool)), encoding="utf-8")  # fmt: skip
    result = invoke("predict", textcat_run, "--input", tmp_path / "pool.jsonl", "--output-format", "label-studio",
                    "--model-version", "round-1", "--output", tmp_path / "tasks.json")  # fmt: skip
    assert result.exit_code == 0, result.output
    tasks = json.loads((tmp_path / "tasks.json").read_text(encoding="utf-8"))
    assert [t["data"] for t in tasks] == [{"text": t, "id": f"p{i}"} for i, t in enumerate(pool)]
    for task, record in zip(tasks, expected):
        (prediction,) = task["predictions"]
        assert prediction["model_version"] == "round-1" and "annotations" not in task
        if record["label"] is None:  # the empty text: nothing to choose
            assert prediction["result"] == [] and prediction["score"] == 1.0
            continue
        (choice,) = prediction["result"]
        assert (choice["type"], choice["from_name"], choice["to_name"]) == ("choices", "sentiment", "text")
        assert choice["value"] == {"choices": [record["label"]]}
        assert prediction["score"] == choice["score"] == round(max(record["scores"].values()), 4) >= 0.5
    assert {r["label"] for r in expected} >= {"neg", None}  # this tiny run says neg to all; both classes: test_annotation_classes
    # the annotator accepts the pre-annotations: Label Studio saves them as the annotations
    for task in tasks:
        task["annotations"] = [{"id": 1, "completed_by": 1, "was_cancelled": False, "result": task["predictions"][0]["result"]}]
    (tmp_path / "export.json").write_text(json.dumps(tasks, ensure_ascii=False), encoding="utf-8")
    read = LabelStudio(LabelStudioConfig(path=str(tmp_path), train="export.json", dev="export.json"), tmp_path)
    back = read.read_all(tmp_path / "export.json", "test")
    assert [e.gold for e in back] == [[r["label"]] if r["label"] else [] for r in expected]

    result = invoke("predict", textcat_run, "--input", tmp_path / "pool.jsonl", "--output-format", "doccano",
                    "--output", tmp_path / "pool_doccano.jsonl")  # fmt: skip
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in (tmp_path / "pool_doccano.jsonl").read_text(encoding="utf-8").splitlines()]
    assert [(line["id"], line["text"], line["scores"]) for line in lines] == [(f"p{i}", r["text"], r["scores"]) for i, r in enumerate(expected)]
    dataset = Doccano(DoccanoConfig(path=str(tmp_path), train="pool_doccano.jsonl", dev="pool_doccano.jsonl", test="pool_doccano.jsonl"), tmp_path)
    assert [e.gold for e in dataset.load("test")] == [[r["label"]] if r["label"] else None for r in expected]

    result = invoke("predict", textcat_run, "--input", tmp_path / "pool.jsonl", "--rank", "uncertainty", "--output", tmp_path / "ranked.jsonl")
    assert result.exit_code == 0 and "least confident first" in result.output
    ranked = [json.loads(line) for line in (tmp_path / "ranked.jsonl").read_text(encoding="utf-8").splitlines()]
    confidences = [r["confidence"] for r in ranked]
    assert confidences == sorted(confidences) and 0.5 <= confidences[0] < confidences[-2] <= 1 and confidences[-1] == 1.0
    by_id = {f"p{i}": r for i, r in enumerate(expected)}
    for record in ranked:
        assert {k: record[k] for k in ("text", "label", "scores")} == by_id[record["id"]]
        assert record["label"] is None or record["confidence"] == round(record["scores"][record["label"]], 4)
    ranked_tasks = json.loads(invoke("predict", textcat_run, "--input", tmp_path / "pool.jsonl", "--rank", "uncertainty",
                                     "--output-format", "label-studio").output)  # fmt: skip
    assert [t["data"]["id"] for t in ranked_tasks] == [r["id"] for r in ranked]
    assert [t["predictions"][0]["score"] for t in ranked_tasks] == confidences
