"""trainer.compile: the encoder compiled in place trains, saves and loads like any other."""

from __future__ import annotations

import json

import pytest
import safetensors.torch
from test_training import train

import nlpfw


@pytest.mark.slow
def test_a_compiled_encoder_trains_and_its_model_loads_uncompiled(tmp_path, data_root):
    result, output = train(tmp_path, "trainer.epochs=1", "trainer.compile=true")
    assert result.exit_code == 0, result.output
    weights = safetensors.torch.load_file(output / "model" / "model.safetensors")
    assert not [key for key in weights if "_orig_mod" in key]  # names as without compile
    record = json.loads((output / "metrics.jsonl").read_text(encoding="utf-8"))
    assert record["dev_loss"] > 0 and record["padding"] < 0.1
    model = nlpfw.load(output)
    assert len(model.predict(["张三在北京的华为公司工作", ""])) == 2
