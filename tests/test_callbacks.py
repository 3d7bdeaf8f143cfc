"""Training callbacks: the fifth component kind.

- FGM and PGD give exactly the gradients their definitions say (checked against autograd by
  hand), put the embeddings back bit for bit, and take the direction from the batch's own
  gradient when batches accumulate;
- EMA keeps the average its formula says and swaps it in only for evaluation;
- a plugin written here, outside the core (`-p test_callbacks`), adds a callback and a command
  that `list-plugins` and `nlpfw --help` show and a run uses;
- a run with FGM and EMA killed with SIGKILL and resumed ends as the uninterrupted run;
- recipes name callback problems by position (`callbacks[N].key`).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from contextlib import nullcontext
from pathlib import Path
from types import MethodType, SimpleNamespace

import click
import pytest
import torch
from click.testing import CliRunner
from pydantic import Field
from test_resume import assert_same_weights, comparable, meta, start_and_wait
from test_training import ROOT, TINY, run_ok
from torch import nn

from nlpfw.cli import cli
from nlpfw.errors import RecipeError
from nlpfw.hookspecs import hookimpl
from nlpfw.interfaces import Callback, Config
from nlpfw.recipe import load_recipe
from nlpfw.trainer import TrainBatch, Trainer
from nlpfw_plugins.adversarial import FGM, PGD, AdversarialConfig, PGDConfig
from nlpfw_plugins.ema import EMA, EMAConfig

HERE = Path(__file__).resolve().parent
RECIPE = ROOT / "recipes" / "quickstart.toml"


# ---- a plugin outside the core: a callback and a command ------------------------------------


class StepLogConfig(Config):
    file: str = Field(default="steps.jsonl", description="inside the run folder")


class StepLog(Callback):
    """Writes one line per optimizer step: the step, the learning rate and the gradient norm
    before clipping (what `before_step` sees); in a distributed run, one file per rank."""

    config_model = StepLogConfig

    def on_train_start(self, trainer) -> None:
        self.path = trainer.run_dir / self.config.file
        if trainer.context.active:
            self.path = self.path.with_suffix(f".rank{trainer.context.rank}.jsonl")

    def before_step(self, trainer) -> None:
        norm = torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in trainer.model.parameters() if p.grad is not None]))
        line = {"step": trainer.position.step + 1, "lr": trainer.scheduler.get_last_lr()[0], "grad_norm": norm.item()}
        with open(self.path, "a", encoding="utf-8") as stream:
            stream.write(json.dumps(line) + "\n")


@click.command("best-score")
@click.argument("run_dir", type=click.Path(exists=True, path_type=Path))
def best_score(run_dir: Path) -> None:
    """Print a run's best main dev score."""
    report = json.loads((run_dir / "report.json").read_text(encoding="utf-8"))
    click.echo(f"{report['best']['main']['name']} {report['best']['main']['value']:.4f} at epoch {report['best_epoch']}")


@hookimpl
def register_callbacks(register):
    register("step_log.v1", StepLog)


@hookimpl
def register_commands(cli):
    cli.add_command(best_score)


def nlpfw(*args: str) -> list[str]:
    return [sys.executable, "-m", "nlpfw", "-p", "test_callbacks", *args]


def plugin_env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")])}


# ---- FGM and PGD against their definitions ---------------------------------------------------


class TinyModel(nn.Module):
    """An encoder with an embedding, a loss over a batch of ids."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.encoder = nn.Module()
        self.encoder.embedding = nn.Embedding(12, 5)
        self.encoder.position_embeddings = nn.Embedding(4, 5)
        self.head = nn.Linear(5, 3)

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        hidden = self.encoder.embedding(batch["input_ids"]) + self.encoder.position_embeddings.weight[:4]
        return nn.functional.cross_entropy(self.head(torch.tanh(hidden)).reshape(-1, 3), batch["gold"].reshape(-1))


def fake_trainer(model: nn.Module, accumulate: int = 1) -> SimpleNamespace:
    """What TrainBatch.forward_backward reads of a trainer, its passes the Trainer's own."""
    trainer = SimpleNamespace(
        model=model, ddp=model, device=torch.device("cpu"), amp=None,
        scaler=torch.amp.GradScaler("cpu", enabled=False),
        _no_sync=lambda skip: nullcontext(), _share=lambda loss, index: loss / accumulate,
    )  # fmt: skip
    trainer._forward = MethodType(Trainer._forward, trainer)
    trainer._backward = MethodType(Trainer._backward, trainer)
    return trainer


BATCH = {"input_ids": torch.tensor([[1, 2, 3, 4], [5, 1, 7, 0]]), "gold": torch.tensor([[0, 1, 2, 1], [2, 2, 0, 1]])}


def gradients(model: nn.Module, embedding: torch.Tensor) -> dict[str, torch.Tensor]:
    """d loss / d every parameter, with the embedding matrix set to `embedding`."""
    twin = TinyModel()
    twin.load_state_dict(model.state_dict())
    with torch.no_grad():
        twin.encoder.embedding.weight.copy_(embedding)
    twin.zero_grad()
    twin(BATCH).backward()
    return {name: p.grad.clone() for name, p in twin.named_parameters()}


def train_batch(callback: Callback, model: nn.Module, accumulate: int = 1, earlier: dict | None = None) -> None:
    """One batch as the trainer runs it: gradients of `earlier` batches, then this batch's
    forward and backward, then the callback."""
    trainer = fake_trainer(model, accumulate)
    for name, p in model.named_parameters():
        p.grad = earlier[name].clone() if earlier else None
    callback.on_train_start(trainer)
    batch = TrainBatch(trainer, BATCH, 0, True)
    callback.on_batch_start(trainer, batch)
    (model(BATCH) / accumulate).backward()
    callback.after_backward(trainer, batch)


def step_along(gradient: torch.Tensor, size: float) -> torch.Tensor:
    return size * gradient / gradient.norm()


@pytest.mark.parametrize("accumulate", [1, 2])
def test_fgm_adds_the_gradient_at_the_perturbed_embedding_and_restores_it(accumulate):
    model = TinyModel()
    original = model.encoder.embedding.weight.detach().clone()
    earlier = {name: torch.randn_like(p) for name, p in model.named_parameters()} if accumulate > 1 else None
    train_batch(FGM(AdversarialConfig(epsilon=0.7)), model, accumulate, earlier)

    assert torch.equal(model.encoder.embedding.weight, original)  # restored bit for bit
    clean = gradients(model, original)
    # the direction: this batch's gradient alone, not the earlier batches' added to it
    attacked = gradients(model, original + step_along(clean["encoder.embedding.weight"], 0.7))
    for name, p in model.named_parameters():
        expected = (clean[name] + attacked[name]) / accumulate + (earlier[name] if earlier else 0)
        torch.testing.assert_close(p.grad, expected, rtol=1e-5, atol=1e-6)
    # position embeddings are not perturbed under "auto": their gradient is the plain sum
    assert not torch.equal(attacked["encoder.embedding.weight"], clean["encoder.embedding.weight"])


def test_pgd_steps_inside_the_ball_and_keeps_only_the_last_pass_gradient():
    model = TinyModel()
    original = model.encoder.embedding.weight.detach().clone()
    earlier = {name: torch.randn_like(p) for name, p in model.named_parameters()}
    train_batch(PGD(PGDConfig(epsilon=0.5, alpha=0.4, steps=3)), model, 1, earlier)

    assert torch.equal(model.encoder.embedding.weight, original)

    def project(point):
        delta = point - original
        return original + delta * min(1.0, 0.5 / delta.norm().item())

    clean = gradients(model, original)
    point = project(original + step_along(clean["encoder.embedding.weight"], 0.4))
    for _ in range(2):
        point = project(point + step_along(gradients(model, point)["encoder.embedding.weight"], 0.4))
    assert (point - original).norm() <= 0.5 + 1e-6
    last = gradients(model, point)
    for name, p in model.named_parameters():
        torch.testing.assert_close(p.grad, earlier[name] + clean[name] + last[name], rtol=1e-5, atol=1e-6)


def test_adversarial_embeddings_by_name_and_a_clear_error_when_none_match():
    model = TinyModel()
    fgm = FGM(AdversarialConfig(embeddings=["position_embeddings"]))
    fgm.on_train_start(fake_trainer(model))
    assert list(fgm.params) == ["encoder.position_embeddings.weight"]
    with pytest.raises(Exception, match=r"fgm.v1.embeddings: no trainable parameter matches \['word_embeddings'\]; "
                                        r"the encoder's embeddings: encoder.embedding.weight, encoder.position_embeddings.weight"):  # fmt: skip
        FGM(AdversarialConfig(embeddings=["word_embeddings"])).on_train_start(fake_trainer(model))


def test_ema_average_and_evaluation_swap():
    model = TinyModel()
    ema = EMA(EMAConfig(decay=0.9, warmup=False))
    trainer = fake_trainer(model)
    ema.on_train_start(trainer)
    start = {name: p.detach().clone() for name, p in model.named_parameters()}
    expected = dict(start)
    for _ in range(3):
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn_like(p))
        ema.after_step(trainer)
        expected = {name: 0.9 * expected[name] + 0.1 * p.detach() for name, p in model.named_parameters()}
    trained = {name: p.detach().clone() for name, p in model.named_parameters()}
    with ema.evaluation_weights(trainer):
        for name, p in model.named_parameters():
            torch.testing.assert_close(p, expected[name])
    for name, p in model.named_parameters():
        assert torch.equal(p, trained[name])  # training goes on with its own weights
    state = ema.state_dict()
    again = EMA(EMAConfig(decay=0.9, warmup=False))
    again.load_state_dict(state)
    again.on_train_start(trainer)  # a resumed run keeps the saved average
    assert all(torch.equal(again.average[name], ema.average[name]) for name in ema.average)
    assert EMA(EMAConfig(decay=0.999)).decay() == pytest.approx(0.1)  # warm-up: (1 + 0) / (10 + 0)


# ---- recipes ---------------------------------------------------------------------------------


def write_recipe(tmp_path: Path, callbacks: str) -> Path:
    path = tmp_path / "recipe.toml"
    path.write_text(RECIPE.read_text(encoding="utf-8") + "\n" + callbacks, encoding="utf-8")
    return path


def test_callback_problems_are_named_by_position(tmp_path, registry):
    path = write_recipe(tmp_path, '[[callbacks]]\ntype = "ema.v1"\n\n[[callbacks]]\ntype = "fgm.v1"\nepsilon = -1\n'
                                  '\n[[callbacks]]\ntype = "fgn.v1"\n\n[[callbacks]]\ntype = "pgd.v1"\nstep = 2\n')  # fmt: skip
    with pytest.raises(RecipeError) as caught:
        load_recipe(path, registry)
    text = str(caught.value)
    lines = [" ".join(line.split()) for line in text.splitlines()]
    assert "callbacks[2].epsilon Input should be greater than 0, got -1" in lines
    assert ("callbacks[3].type unknown callback 'fgn.v1' (did you mean 'fgm.v1'?); "
            "available: ema.v1, fgm.v1, pgd.v1, tensorboard.v1") in lines  # fmt: skip
    assert "callbacks[4].step unknown key (did you mean 'steps'?)" in lines

    path = write_recipe(tmp_path, '[[callbacks]]\ntype = "fgm.v1"\n\n[[callbacks]]\ntype = "pgd.v1"\n')
    with pytest.raises(RecipeError, match="fgm.v1 and pgd.v1 both run extra passes over each batch; a recipe can use one of them"):
        load_recipe(path, registry)


def test_callbacks_round_trip_and_can_be_set_from_the_command_line(tmp_path, registry):
    recipe = load_recipe(RECIPE, registry, ['callbacks=[{type = "fgm.v1", epsilon = 0.5}, {type = "ema.v1"}]'])
    assert [(section.type, section.config.model_dump()) for section in recipe.callbacks] == [
        ("fgm.v1", {"epsilon": 0.5, "embeddings": "auto"}), ("ema.v1", {"decay": 0.999, "warmup": True}),
    ]  # fmt: skip
    saved = tmp_path / "saved.toml"
    saved.write_text(recipe.to_toml(), encoding="utf-8")
    assert load_recipe(saved, registry).callbacks == recipe.callbacks
    assert "callbacks" not in recipe.for_model().to_dict()  # a saved model does not need them


# ---- end to end --------------------------------------------------------------------------------

# 240 texts in batches of 16: 15 batches an epoch, a checkpoint every 3 steps
SETTINGS = [*TINY, "dataset.limit=240", "trainer.epochs=2", "trainer.checkpoint_every=3", "trainer.log_every=2",
            'callbacks=[{type = "fgm.v1", epsilon = 0.5}, {type = "ema.v1", decay = 0.99}, {type = "step_log.v1"}]']  # fmt: skip


def command(output: Path) -> list[str]:
    return nlpfw("run", str(RECIPE), "-o", str(output), *[arg for item in SETTINGS for arg in ("--set", item)])


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, data_root):
    output = tmp_path_factory.mktemp("whole") / "run"
    run_ok(command(output), env=plugin_env())
    return output


def test_a_plugin_callback_and_command_are_listed_and_used(uninterrupted):
    def invoke(*args: str) -> str:
        result = CliRunner().invoke(cli, list(args))
        assert result.exit_code == 0, result.output
        return result.output

    listed = json.loads(invoke("-p", "test_callbacks", "list-plugins", "--json"))
    mine = next(record for record in listed if record["plugin"] == "test_callbacks")
    assert mine["provides"] == ["callback: step_log.v1"]
    assert mine["hooks"] == ["register_callbacks", "register_commands"]
    assert any(record["provides"] == ["callback: fgm.v1", "callback: pgd.v1"] for record in listed)
    help_text = " ".join(invoke("-p", "test_callbacks", "--help").split())
    assert "Commands: best-score Print a run's best main dev score. compare" in help_text
    assert "best-score" not in invoke("--help")

    steps = [json.loads(line) for line in (uninterrupted / "steps.jsonl").read_text(encoding="utf-8").splitlines()]
    assert [line["step"] for line in steps] == list(range(1, 31))  # 2 epochs of 15 steps
    assert all(line["grad_norm"] > 0 for line in steps)
    report = json.loads((uninterrupted / "report.json").read_text(encoding="utf-8"))
    shown = invoke("-p", "test_callbacks", "best-score", str(uninterrupted))
    assert shown == f"f1 {report['best']['main']['value']:.4f} at epoch {report['best_epoch']}\n"
    recipe = (uninterrupted / "recipe.toml").read_text(encoding="utf-8")
    assert 'type = "fgm.v1"' in recipe and 'type = "step_log.v1"' in recipe
    assert "callbacks" not in (uninterrupted / "model" / "recipe.toml").read_text(encoding="utf-8")


def test_sigkill_then_resume_with_fgm_and_ema_gives_the_same_run(uninterrupted, tmp_path):
    output = tmp_path / "run"
    process = start_and_wait(output, lambda m: m["epoch"] == 1 and m["batch"] > 0, command(output), plugin_env())
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)
    saved = meta(output)
    assert saved["epoch"] == 1 and 0 < saved["batch"] < 15, saved
    run_ok(nlpfw("run", str(RECIPE), "--resume", str(output)), env=plugin_env())
    assert comparable(output) == comparable(uninterrupted)
    assert_same_weights(output / "model" / "model.safetensors", uninterrupted / "model" / "model.safetensors")
    assert_same_weights(output / "checkpoint" / "model.safetensors", uninterrupted / "checkpoint" / "model.safetensors")


def test_fgm_under_ddp_averages_the_gradients_once_on_every_rank(tmp_path, data_root):
    """Each rank attacks with its own gradient and back-propagates twice; the gradients the
    optimizer sees must still be the ranks' average, equal on both ranks at every step."""
    output = tmp_path / "run"
    settings = [*TINY, "trainer.epochs=1", "trainer.amp=false",
                'callbacks=[{type = "fgm.v1"}, {type = "step_log.v1"}]']  # fmt: skip
    run_ok(nlpfw("run", str(RECIPE), "-o", str(output), "--nproc", "2", *[a for item in settings for a in ("--set", item)]),
           env=plugin_env())  # fmt: skip
    ranks = [[json.loads(line) for line in (output / f"steps.rank{rank}.jsonl").read_text(encoding="utf-8").splitlines()]
             for rank in (0, 1)]  # fmt: skip
    assert len(ranks[0]) == len(ranks[1]) == 10  # 160 texts in global batches of 16
    for first, second in zip(*ranks):
        assert first["grad_norm"] == pytest.approx(second["grad_norm"], rel=1e-6)


def test_ema_weights_are_the_saved_model(uninterrupted):
    """The model saved for the best epoch is the average, not the training weights."""
    import safetensors.torch

    state = torch.load(uninterrupted / "checkpoint" / "state.pt", weights_only=True)
    average = state["callbacks"][1]["average"]
    training = safetensors.torch.load_file(str(uninterrupted / "checkpoint" / "model.safetensors"))
    saved = safetensors.torch.load_file(str(uninterrupted / "model" / "model.safetensors"))
    report = json.loads((uninterrupted / "report.json").read_text(encoding="utf-8"))
    if report["best_epoch"] == 2:  # the last epoch: the checkpoint's average is the one saved
        for name, value in average.items():
            assert torch.equal(saved[name], value), name
    assert any(not torch.equal(saved[name], training[name]) for name in average)
    assert state["callbacks"][1]["updates"] == 30
