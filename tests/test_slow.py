"""Longer end-to-end checks, run with `make test-all` (marked `slow`)."""

from __future__ import annotations

import json

import pytest
from test_training import ROOT, run_cli

pytestmark = pytest.mark.slow


def test_from_scratch_model_trains_one_epoch_on_peoples_daily(tmp_path, data_root):
    output = tmp_path / "pd"
    result = run_cli(
        ROOT / "recipes" / "quickstart.toml", output,
        'dataset.type="peoples_daily_2014.v1"', 'dataset.path="people_daily_2014"', "trainer.epochs=1",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    report = json.loads((output / "report.json").read_text(encoding="utf-8"))
    data = report["data"]
    assert (data["train_examples"], data["dev_examples"]) == (21061, 5265)
    assert (data["train_annotations"], data["dev_annotations"]) == (54800, 13421)  # every entity, I- starts included
    assert data["window"] == 126 and data["dev_windowed"] > 0  # paragraphs up to 2,524 characters
    scores = report["best"]["scores"]
    assert scores["overall"]["support"] == 13421
    assert scores["overall"]["f1"] > 0.6, scores["overall"]
    assert set(scores["by_type"]) == {"LOC", "ORG", "PER", "T"}
    assert "RTX 2070 (ref)" in (output / "report.txt").read_text(encoding="utf-8")
