"""The task contract holds: a third task, written entirely here and registered as a plugin, runs
the whole life cycle (train, SIGKILL and resume, evaluate, predict, report) with no change to
the core.

The toy task: one number per text, the count of its digits, learnt by regression and scored by
mean absolute error, lower being better. Its dataset reads JSON lines `{"text", "value"}`; its
decoder sums each window's character vectors and maps them to one number. A long text's count
is the sum of its windows' counts, each scaled to the characters the window owns.

The subprocess runs load this module with `-p test_task_contract` (tests/ on PYTHONPATH).
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from pydantic import Field
from torch import nn

from nlpfw.data import resolve
from nlpfw.hookspecs import hookimpl
from nlpfw.interfaces import Config, Dataset, Decoder, DecoderConfig, Encoded, Encoder, Evaluation, Example, Task, Window

HERE = Path(__file__).resolve().parent


class CountConfig(Config):
    pass


class DigitCount(Task):
    """One number per text: how many digits it has."""

    config_model = CountConfig
    label_kind = "value"

    def targets(self) -> tuple[str, ...]:
        return ("number",)

    def target_labels(self, target: str) -> list[str]:
        return ["count"]

    def encode(self, example: Example, encoder: Encoder) -> Encoded:
        encoded = Encoded(columns={"input_ids": np.asarray(encoder.char_ids(example.text), dtype=np.int32)})
        if example.gold is not None:
            encoded.values["number"] = np.asarray(float(example.gold), dtype=np.float32)
            encoded.annotations = 1
        return encoded

    def collate(self, windows: Sequence[dict[str, np.ndarray]]) -> dict[str, torch.Tensor]:
        width = max(len(w["input_ids"]) for w in windows)
        ids = np.zeros((len(windows), width), dtype=np.int64)
        for i, w in enumerate(windows):
            ids[i, : len(w["input_ids"])] = w["input_ids"]
        lengths = torch.tensor([len(w["input_ids"]) for w in windows])
        batch = {"input_ids": torch.from_numpy(ids), "mask": torch.arange(width) < lengths.unsqueeze(1)}
        if all("number" in w for w in windows):
            batch["number"] = torch.tensor([float(w["number"]) for w in windows])
        return batch

    def combine(self, text: str, windows: Sequence[Window], target: str) -> float:
        return float(sum(float(w.output[0]) * (w.owned[1] - w.owned[0]) / w.length for w in windows))

    def score(self, gold: Sequence[Any], predicted: Sequence[Any]) -> Evaluation:
        errors = np.abs(np.asarray(gold, dtype=float) - np.asarray(predicted, dtype=float))
        summary = {"mae": float(errors.mean()), "rmse": float(np.sqrt((errors**2).mean()))}
        return Evaluation(main="mae", summary=summary, higher_is_better=False, label_kind="value", note="mean absolute error of the digit count")

    def output(self, text: str, prediction: float) -> dict[str, Any]:
        return {"digits": round(prediction, 3)}


class SumRegressorConfig(DecoderConfig):
    pass


class SumRegressor(Decoder):
    config_model = SumRegressorConfig
    targets = ("number",)
    output_name = "number"

    def __init__(self, config, input_dim, labels, target="number"):
        super().__init__(config, input_dim, labels, target)
        self.linear = nn.Linear(input_dim, 1)

    def predict_number(self, hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        per_char = self.linear(hidden.float()).squeeze(2)
        return (per_char * mask).sum(dim=1)

    def loss(self, hidden, gold, mask):
        return nn.functional.mse_loss(self.predict_number(hidden, mask), gold.float())

    def decode(self, hidden, mask):
        return self.predict_number(hidden, mask).unsqueeze(1)

    def unbatch(self, output, lengths):
        return list(output.float().cpu().numpy())


class NumbersConfig(Config):
    path: str = Field(description="folder of train.jsonl and dev.jsonl")


class Numbers(Dataset):
    config_model = NumbersConfig

    def splits(self):
        return ("train", "dev")

    def files(self, split):
        return [resolve(Path(self.config.path) / f"{split}.jsonl", self.data_root, f"dataset.{split}")]

    def load(self, split):
        (path,) = self.files(split)
        with path.open(encoding="utf-8") as lines:
            return [Example(r["text"], r["value"]) for r in map(json.loads, lines)]

    def labels(self):
        return ["count"]


@hookimpl
def register_tasks(register):
    register("digit_count.v1", DigitCount)


@hookimpl
def register_decoders(register):
    register("sum_regressor.v1", SumRegressor)


@hookimpl
def register_datasets(register):
    register("numbers.v1", Numbers)


# --- the tests -----------------------------------------------------------------------------


def write_corpus(folder: Path) -> None:
    rng = random.Random(3)
    folder.mkdir(parents=True, exist_ok=True)
    for split, count in (("train", 320), ("dev", 60)):
        with (folder / f"{split}.jsonl").open("w", encoding="utf-8") as out:
            for _ in range(count):
                text = "".join(rng.choice("天地人和春夏秋冬0123456789") for _ in range(rng.randint(3, 30)))
                out.write(json.dumps({"text": text, "value": sum(c.isdigit() for c in text)}, ensure_ascii=False) + "\n")


def recipe(folder: Path) -> Path:
    path = folder / "count.toml"
    path.write_text(f"""name = "digits"
[task]
type = "digit_count.v1"
[dataset]
type = "numbers.v1"
path = "{folder / 'data'}"
[encoder]
type = "bilstm.v1"
embedding_size = 16
bigram_size = 0
hidden_size = 16
num_layers = 1
dropout = 0.0
[decoder]
type = "sum_regressor.v1"
[trainer]
epochs = 6
batch_size = 16
lr = 1e-2
warmup_ratio = 0.0
seed = 5
device = "cpu"
checkpoint_every = 4
""", encoding="utf-8")  # fmt: skip
    return path


def nlpfw(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")])}
    result = subprocess.run([sys.executable, "-m", "nlpfw", "-p", "test_task_contract", *args],
                            capture_output=True, text=True, timeout=300, env=env)  # fmt: skip
    if check:
        assert result.returncode == 0, result.stdout + result.stderr
    return result


def records(run: Path) -> list[dict[str, Any]]:
    lines = (run / "metrics.jsonl").read_text(encoding="utf-8").splitlines()
    return [{k: v for k, v in json.loads(line).items() if k != "speed"} for line in lines]


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("contract")
    write_corpus(folder / "data")
    run = folder / "run"
    nlpfw("run", str(recipe(folder)), "-o", str(run))
    return folder, run


def test_a_task_from_a_plugin_trains_and_keeps_its_lowest_error(trained):
    folder, run = trained
    epochs = records(run)
    report = json.loads((run / "report.json").read_text(encoding="utf-8"))
    assert [r["main"]["name"] for r in epochs] == ["mae"] * 6 and not epochs[0]["main"]["higher_is_better"]
    best = min(epochs, key=lambda r: r["summary"]["mae"])
    assert report["best_epoch"] == best["epoch"] and report["best"]["summary"] == best["summary"]
    gold = [json.loads(line)["value"] for line in (folder / "data" / "dev.jsonl").read_text(encoding="utf-8").splitlines()]
    baseline = float(np.mean(np.abs(np.asarray(gold) - np.mean(gold))))  # always guessing the mean
    assert best["summary"]["mae"] < baseline / 2, (best["summary"], baseline)  # it learnt to count
    text = (run / "report.txt").read_text(encoding="utf-8")
    assert text.startswith(f"digits: best dev mae {best['summary']['mae']:.4f} at epoch {best['epoch']}")
    assert "rmse" in text and (run / "curves.png").stat().st_size > 5_000 and (run / "labels.png").is_file()


def test_predict_evaluate_and_report_need_no_core_change(trained, tmp_path):
    folder, run = trained
    result = nlpfw("predict", str(run), "天地1人2和3", "春夏秋冬")
    predicted = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r["text"] for r in predicted] == ["天地1人2和3", "春夏秋冬"]
    assert abs(predicted[0]["digits"] - 3) < 1.0 and abs(predicted[1]["digits"]) < 1.0
    result = nlpfw("evaluate", str(run), "--output", str(tmp_path / "dev.json"))
    report = json.loads((run / "report.json").read_text(encoding="utf-8"))
    assert json.loads((tmp_path / "dev.json").read_text(encoding="utf-8"))["summary"] == report["best"]["summary"]
    assert f"mae {report['best']['summary']['mae']:.4f}" in result.stdout
    (run / "report.md").unlink()
    nlpfw("report", str(run))
    assert "| epoch | train loss | dev loss | mae | rmse |" in (run / "report.md").read_text(encoding="utf-8")


def test_sigkill_then_resume_gives_the_uninterrupted_run(trained, tmp_path):
    folder, run = trained
    output = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")])}
    from test_resume import start_and_wait  # here, not at the top: the runs import this module as a plugin

    args = [sys.executable, "-m", "nlpfw", "-p", "test_task_contract", "run", str(recipe(folder)), "-o", str(output)]
    process = start_and_wait(output, lambda m: m["epoch"] == 2 and m["batch"] > 0, args, env)
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)
    assert not (output / "report.json").exists()
    nlpfw("run", str(recipe(folder)), "--resume", str(output))
    assert records(output) == records(run)
