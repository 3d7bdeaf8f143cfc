"""Length-bucketed batches: every text once an epoch, little padding, random order, exact replay."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import safetensors.torch
import torch
from click.testing import CliRunner

from nlpfw import checkpoint
from nlpfw.cli import cli
from nlpfw.sampler import LengthBucketSampler, padding_fraction

ROOT = Path(__file__).resolve().parent.parent
# lengths shaped like CLUENER's (most 20-50 characters, a few short and long ones)
LENGTHS = np.random.default_rng(0).gamma(6.0, 6.5, size=1000).astype(int) + 2


def plan(sampler: LengthBucketSampler) -> list[list[int]]:
    return list(sampler)


def test_every_text_is_in_one_batch_each_epoch_and_the_short_batch_comes_last():
    sampler = LengthBucketSampler(LENGTHS, 24, torch.Generator().manual_seed(1))
    for _ in range(2):
        batches = plan(sampler)
        assert len(batches) == len(sampler) == 42  # ceil(1000 / 24)
        assert sorted(i for b in batches for i in b) == list(range(1000))
        assert [len(b) for b in batches] == [24] * 41 + [1000 - 41 * 24]


def test_buckets_cut_padding_and_bucket_size_one_is_plain_shuffling():
    bucketed = plan(LengthBucketSampler(LENGTHS, 24, torch.Generator().manual_seed(1), bucket_batches=100))
    plain = plan(LengthBucketSampler(LENGTHS, 24, torch.Generator().manual_seed(1), bucket_batches=1))
    assert padding_fraction(LENGTHS, bucketed) < 0.05
    assert padding_fraction(LENGTHS, plain) > 0.2
    # plain: one shuffled order cut into batches of 24 (only the order within a batch is sorted)
    order = torch.randperm(1000, generator=torch.Generator().manual_seed(1)).tolist()
    chunks = {tuple(sorted(order[i : i + 24])) for i in range(0, 1000, 24)}
    assert {tuple(sorted(b)) for b in plain} == chunks


def test_padding_fraction():
    assert padding_fraction([3, 1, 2, 2], [[0, 1], [2, 3]]) == pytest.approx(1 - 8 / 10)
    assert padding_fraction([5], []) == 0.0


def test_the_order_is_a_function_of_the_generator_state_and_changes_every_epoch():
    generator = torch.Generator().manual_seed(7)
    sampler = LengthBucketSampler(LENGTHS, 16, generator)
    state = generator.get_state()
    first = plan(sampler)
    second = plan(sampler)
    assert first != second  # a new order each epoch
    generator.set_state(state)
    assert plan(sampler) == first  # replayed exactly from the state at the epoch's start
    assert plan(sampler) == second
    assert plan(LengthBucketSampler(LENGTHS, 16, torch.Generator().manual_seed(8))) != first


def test_accumulated_batches_hold_the_items_of_one_large_batch():
    large = plan(LengthBucketSampler(LENGTHS, 16, torch.Generator().manual_seed(3)))
    small = plan(LengthBucketSampler(LENGTHS, 8, torch.Generator().manual_seed(3), group=2))
    assert len(small) == 125
    pairs = [sorted(small[i] + small[i + 1]) for i in range(0, 124, 2)]
    assert pairs == [sorted(b) for b in large[:62]]
    assert small[124] == large[62][:8] and len(large[62]) == 8


def test_ranks_take_shares_of_every_batch_of_one_plan():
    whole = plan(LengthBucketSampler(LENGTHS, 24, torch.Generator().manual_seed(5)))
    ranks = [LengthBucketSampler(LENGTHS, 24, torch.Generator().manual_seed(5), num_replicas=3, rank=r) for r in range(3)]
    shares = [plan(s) for s in ranks]
    assert [len(s) for s in shares] == [len(r) for r in ranks] == [42, 42, 42]  # every rank in every step
    for k, batch in enumerate(whole):
        assert shares[0][k] + shares[1][k] + shares[2][k] == batch  # contiguous parts of the sorted batch
    # the short last batch of 1000 - 41 * 24 = 16 items splits 6 / 5 / 5; weights make the mean exact
    assert [len(s[41]) for s in shares] == [6, 5, 5]
    assert [r.weights[41] for r in ranks] == [6 * 3 / 16, 5 * 3 / 16, 5 * 3 / 16]
    assert all(r.weights[:41] == [1.0] * 41 for r in ranks)
    # a short batch of fewer items than ranks is left out by every rank alike
    seventeen = [LengthBucketSampler(LENGTHS[:1000 - 15], 24, torch.Generator().manual_seed(5), num_replicas=2, rank=r)
                 for r in range(2)]  # fmt: skip
    assert [len(s) for s in seventeen] == [41, 41] and [len(plan(s)) for s in seventeen] == [41, 41]
    assert sum(len(b) for s in seventeen for b in s.batches) == 41 * 24
    with pytest.raises(ValueError, match="rank 3 is not in 0..2"):
        LengthBucketSampler(LENGTHS, 24, None, num_replicas=3, rank=3)


def test_without_a_generator_the_plan_follows_seed_and_epoch():
    sampler = LengthBucketSampler(LENGTHS, 24, None, seed=5)
    first = plan(sampler)
    assert plan(LengthBucketSampler(LENGTHS, 24, None, seed=5)) == first
    sampler.set_epoch(1)
    assert plan(sampler) != first


TINY = [
    "dataset.limit=160", "encoder.hidden_size=32", "encoder.num_layers=1", "encoder.num_heads=2",
    "encoder.intermediate_size=64", "trainer.batch_size=16", "trainer.eval_batch_size=64",
]  # fmt: skip


def run_cli(*args: str):
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def test_a_run_resumed_mid_epoch_ends_exactly_as_an_uninterrupted_one(tmp_path, data_root, monkeypatch):
    """Checkpoint at step 3 of 10 (a copy of the run folder is kept), finish; resume the copy."""
    sets = [x for item in [*TINY, "trainer.epochs=2", "trainer.checkpoint_every=3"] for x in ("--set", item)]
    recipe = str(ROOT / "recipes" / "quickstart.toml")
    save = checkpoint.save

    def save_and_copy(run_dir, model, state):
        target = save(run_dir, model, state)
        if state.position.step == 3:
            shutil.copytree(run_dir, tmp_path / "stopped")
        return target

    monkeypatch.setattr(checkpoint, "save", save_and_copy)
    whole = run_cli("run", recipe, "-o", str(tmp_path / "whole"), *sets)
    assert whole.exit_code == 0, whole.output
    monkeypatch.setattr(checkpoint, "save", save)
    assert json.loads((tmp_path / "stopped" / "checkpoint" / "meta.json").read_text())["batch"] == 3
    resumed = run_cli("run", recipe, "--resume", str(tmp_path / "stopped"), *sets)
    assert resumed.exit_code == 0, resumed.output
    assert "Resuming from" in resumed.output and "batch 3, step 3" in resumed.output
    assert "of the tokens are padding" in whole.output
    a = safetensors.torch.load_file(tmp_path / "whole" / "model" / "model.safetensors")
    b = safetensors.torch.load_file(tmp_path / "stopped" / "model" / "model.safetensors")
    for key in a:
        assert torch.equal(a[key], b[key]), key
    records = [
        [json.loads(line) for line in (tmp_path / name / "metrics.jsonl").read_text().splitlines()]
        for name in ("whole", "stopped")
    ]
    for x, y in zip(*records):
        assert x["train_loss"] == pytest.approx(y["train_loss"], rel=1e-6)
        assert x["scores"] == y["scores"] and x["padding"] == y["padding"]
        assert 0 <= x["padding"] < 0.1
