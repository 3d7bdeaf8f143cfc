"""Recipes: parsing, `--set` overrides, validation (every problem at once) and the CLI around them."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

import nlpfw
from nlpfw.cli import cli
from nlpfw.errors import RecipeError
from nlpfw.plugins import build_registry, get_plugin_manager
from nlpfw.recipe import TrainerConfig, load_recipe, parse_override, validate_recipe
from nlpfw.registry import Registry

ROOT = Path(__file__).resolve().parent.parent
RECIPES = sorted((ROOT / "recipes").glob("*.toml"))
QUICKSTART = ROOT / "recipes" / "quickstart.toml"
BERT_CRF = ROOT / "recipes" / "bert_crf_cluener.toml"
ALLOWED = "allowed: name, description, task, dataset, encoder, decoder, trainer, callbacks"


@pytest.fixture(scope="module")
def builtin_registry() -> Registry:
    return build_registry(get_plugin_manager(load_entrypoints=False))


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def problems_of(error: pytest.ExceptionInfo[RecipeError]) -> list[tuple[str, str]]:
    return [(p.where, p.message) for p in error.value.problems]


# --- the shipped recipes -------------------------------------------------------------------


def test_recipes_folder_holds_the_known_recipes() -> None:
    assert RECIPES
    assert {p.name for p in RECIPES} >= {"quickstart.toml", "bert_crf_cluener.toml", "bert_softmax_cluener.toml"}


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.name)
def test_every_recipe_validates(path: Path, builtin_registry: Registry) -> None:
    recipe = load_recipe(path, builtin_registry)
    assert recipe.source == str(path)
    assert recipe.name == tomllib.loads(path.read_text(encoding="utf-8"))["name"]
    for kind in ("task", "dataset", "encoder", "decoder"):
        assert (kind, getattr(recipe, kind).type) in builtin_registry


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.name)
def test_to_toml_round_trips(path: Path, builtin_registry: Registry) -> None:
    """The resolved recipe a run (and a saved model) writes must load again, unchanged."""
    recipe = load_recipe(path, builtin_registry)
    again = validate_recipe(tomllib.loads(recipe.to_toml()), builtin_registry, source="recipe.toml")
    assert again.to_dict() == recipe.to_dict()


def test_to_dict_fills_in_defaults(builtin_registry: Registry) -> None:
    data = load_recipe(QUICKSTART, builtin_registry).to_dict()
    assert data["trainer"]["adam_epsilon"] == 1e-8
    assert data["trainer"]["epochs"] == 4
    assert data["dataset"] == {
        "type": "cluener.v1", "path": "cluener",
        "url": "https://storage.googleapis.com/cluebenchmark/tasks/cluener_public.zip",
    }  # fmt: skip
    assert "max_steps" not in data["trainer"]  # unset optional values are left out


# --- one bad recipe, every problem ---------------------------------------------------------

BAD_RECIPE = """\
name = "bad"
descripton = "a typo in a top-level key"

[dataset]
type = "cluener.v1"
limt = 10

[encoder]
type = "bert.v1"
pretrained = "bert-base-chinese"
vocab = "bert-base-chinese-vocab/vocab.txt"

[decoder]
type = "crf.v2"

[trainer]
epochs = "five"

[trainr]
seed = 1
"""

BAD_PROBLEMS = [
    ("descripton", f"unknown key (did you mean 'description'?); {ALLOWED}"),
    ("trainr", f"unknown section (did you mean 'trainer'?); {ALLOWED}"),
    ("task", "section is missing; add [task] with a type (ner.v1, textcat.v1)"),
    ("dataset.limt", "unknown key (did you mean 'limit'?)"),
    ("encoder", "set either 'pretrained' (hub name or directory) or 'vocab' (from scratch)"),
    ("decoder.type", "unknown decoder 'crf.v2' (did you mean 'crf.v1'?); available: classifier.v1, crf.v1, softmax.v1"),
    ("trainer.epochs", "Input should be a valid integer, unable to parse string as an integer, got 'five'"),
]


def bad_lines(path: Path) -> list[str]:
    return [
        f"recipe {path} is invalid (7 problems)",
        f"  descripton      unknown key (did you mean 'description'?); {ALLOWED}",
        f"  trainr          unknown section (did you mean 'trainer'?); {ALLOWED}",
        "  task            section is missing; add [task] with a type (ner.v1, textcat.v1)",
        "  dataset.limt    unknown key (did you mean 'limit'?)",
        "  encoder         set either 'pretrained' (hub name or directory) or 'vocab' (from scratch)",
        "  decoder.type    unknown decoder 'crf.v2' (did you mean 'crf.v1'?); available: classifier.v1, crf.v1, softmax.v1",
        "  trainer.epochs  Input should be a valid integer, unable to parse string as an integer, got 'five'",
    ]


@pytest.fixture
def bad_recipe(tmp_path: Path) -> Path:
    return write(tmp_path / "bad.toml", BAD_RECIPE)


def test_bad_recipe_reports_every_problem_at_once(bad_recipe: Path, builtin_registry: Registry) -> None:
    with pytest.raises(RecipeError, match=re.escape(f"recipe {bad_recipe} is invalid (7 problems)\n")) as error:
        load_recipe(bad_recipe, builtin_registry)
    assert problems_of(error) == BAD_PROBLEMS
    assert error.value.source == str(bad_recipe)
    assert str(error.value) == "\n".join(bad_lines(bad_recipe))


def test_unknown_key_without_a_close_match_lists_the_keys(builtin_registry: Registry) -> None:
    data = tomllib.loads(QUICKSTART.read_text(encoding="utf-8"))
    data["dataset"]["shuffle_buffer"] = 5
    with pytest.raises(RecipeError, match=r"\(1 problem\)\n  dataset.shuffle_buffer  unknown key; keys: ") as error:
        validate_recipe(data, builtin_registry)
    assert problems_of(error) == [("dataset.shuffle_buffer", "unknown key; keys: path, limit, download, url")]


@pytest.mark.parametrize(
    ("change", "problems"),
    [
        ({"name": 5}, [("name", "expected a string, got 5")]),
        ({"description": ["x"]}, [("description", "expected a string, got ['x']")]),
        ({"encoder": "bert.v1"}, [("encoder", "expected a table, got 'bert.v1'")]),
        ({"decoder": {"dropout": 0.1}}, [("decoder.type", "required key is missing; available: classifier.v1, crf.v1, softmax.v1")]),
        ({"trainer": 3}, [("trainer", "expected a table, got 3")]),
        ({"trainr": 3}, [("trainr", f"unknown key (did you mean 'trainer'?); {ALLOWED}")]),
        ({"trainer": {"device": "gpu"}}, [("trainer.device", "String should match pattern '^(auto|cpu|mps|cuda(:[0-9]+)?)$', got 'gpu'")]),
        ({"trainer": {"epochs": 0}}, [("trainer.epochs", "Input should be greater than or equal to 1, got 0")]),
    ],
    ids=["name-type", "description-type", "section-not-table", "type-missing", "trainer-not-table",
         "unknown-top-level-key", "device-pattern", "epochs-range"],
)  # fmt: skip
def test_single_problems(builtin_registry: Registry, change: dict[str, Any], problems: list[tuple[str, str]]) -> None:
    data = tomllib.loads(QUICKSTART.read_text(encoding="utf-8"))
    data.update(change)
    with pytest.raises(RecipeError, match=r"^recipe <recipe> is invalid \(1 problem\)\n") as error:
        validate_recipe(data, builtin_registry)
    assert problems_of(error) == problems


def test_size_keys_with_pretrained_are_rejected(builtin_registry: Registry) -> None:
    overrides = ["encoder.hidden_size=128", "encoder.num_layers=2"]
    message = (
        "hidden_size, num_layers only apply to from-scratch models; "
        "a pretrained model keeps its own architecture"
    )
    with pytest.raises(RecipeError, match=re.escape(f"  encoder  {message}")) as error:
        load_recipe(BERT_CRF, builtin_registry, overrides)
    assert problems_of(error) == [("encoder", message)]


def test_hidden_size_must_divide_by_heads(builtin_registry: Registry) -> None:
    with pytest.raises(RecipeError) as error:
        load_recipe(QUICKSTART, builtin_registry, ["encoder.num_heads=3"])
    assert problems_of(error) == [("encoder", "hidden_size 128 is not a multiple of num_heads 3")]


# --- files ---------------------------------------------------------------------------------


def test_toml_syntax_error_names_file_and_line(tmp_path: Path, builtin_registry: Registry) -> None:
    path = write(tmp_path / "broken.toml", 'name = "broken"\n[trainer]\nepochs = \n')
    expected = f"recipe {path} is invalid (1 problem)\n  toml  Invalid value (at line 3, column 10)"
    with pytest.raises(RecipeError, match=f"^{re.escape(expected)}$") as error:
        load_recipe(path, builtin_registry)
    assert problems_of(error) == [("toml", "Invalid value (at line 3, column 10)")]


def test_missing_recipe_file(tmp_path: Path, builtin_registry: Registry) -> None:
    path = tmp_path / "nope.toml"
    with pytest.raises(RecipeError, match=f"^{re.escape(f'recipe {path} is invalid (1 problem)')}\n  file  not found$"):
        load_recipe(path, builtin_registry)


def test_recipe_that_is_not_utf8(tmp_path: Path, builtin_registry: Registry) -> None:
    path = tmp_path / "latin1.toml"
    path.write_bytes('name = "caf\xe9"\n'.encode("latin-1"))
    with pytest.raises(RecipeError, match=r"\n  file  not UTF-8 text: 'utf-8' codec can't decode byte 0xe9"):
        load_recipe(path, builtin_registry)


# --- overrides -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("assignment", "keys", "value"),
    [
        ("trainer.epochs=3", ["trainer", "epochs"], 3),
        ("trainer.lr=1e-4", ["trainer", "lr"], 1e-4),
        ("decoder.dropout=0.25", ["decoder", "dropout"], 0.25),
        ("trainer.amp=false", ["trainer", "amp"], False),
        ("encoder.bilstm=true", ["encoder", "bilstm"], True),
        ("encoder.pretrained=bert-base-chinese", ["encoder", "pretrained"], "bert-base-chinese"),
        ("dataset.path=/tmp/x", ["dataset", "path"], "/tmp/x"),
        ("encoder.pretrained=./models/bert", ["encoder", "pretrained"], "./models/bert"),
        ("trainer.device=cuda:0", ["trainer", "device"], "cuda:0"),
        ('description="two words"', ["description"], "two words"),
        ("description='single = quoted'", ["description"], "single = quoted"),
        (" trainer . epochs = 2", ["trainer", "epochs"], 2),
        ("a.b.c=1", ["a", "b", "c"], 1),
    ],
)
def test_parse_override(assignment: str, keys: list[str], value: Any) -> None:
    parsed = parse_override(assignment)
    assert parsed == (keys, value)
    assert type(parsed[1]) is type(value)


@pytest.mark.parametrize("assignment", ["foo", "trainer.epochs", "=1", "trainer..epochs=1", "trainer.=1"])
def test_parse_override_malformed(assignment: str) -> None:
    with pytest.raises(ValueError, match=f"^{re.escape(f'--set {assignment!r}: expected KEY=VALUE, like trainer.epochs=1')}$"):
        parse_override(assignment)


def test_overrides_apply(builtin_registry: Registry) -> None:
    recipe = load_recipe(
        QUICKSTART, builtin_registry,
        ["trainer.epochs=1", "trainer.max_steps=3", "decoder.dropout=0.2", "dataset.limit=10", "name=smoke"],
    )  # fmt: skip
    assert (recipe.trainer.epochs, recipe.trainer.max_steps) == (1, 3)
    assert recipe.decoder.config.dropout == 0.2
    assert recipe.dataset.config.limit == 10
    assert recipe.name == "smoke"
    assert recipe.trainer.batch_size == 32  # untouched values come from the file


def test_malformed_override_is_a_problem(builtin_registry: Registry) -> None:
    with pytest.raises(RecipeError) as error:
        load_recipe(QUICKSTART, builtin_registry, ["foo", "trainer.epochs=1"])
    assert problems_of(error) == [("--set", "--set 'foo': expected KEY=VALUE, like trainer.epochs=1")]


def test_override_of_unknown_key_is_reported_like_the_file(tmp_path: Path, builtin_registry: Registry) -> None:
    with pytest.raises(RecipeError) as by_override:
        load_recipe(QUICKSTART, builtin_registry, ["decoder.dropuot=0.2"])
    in_file = write(tmp_path / "q.toml", QUICKSTART.read_text(encoding="utf-8") + "\n")
    text = in_file.read_text(encoding="utf-8").replace("lr = 5e-3", "lr = 5e-3\ndropuot = 0.2")
    write(in_file, text)
    with pytest.raises(RecipeError) as by_file:
        load_recipe(in_file, builtin_registry)
    assert problems_of(by_override) == problems_of(by_file) == [("decoder.dropuot", "unknown key (did you mean 'dropout'?)")]


def test_override_of_unknown_section(builtin_registry: Registry) -> None:
    with pytest.raises(RecipeError) as error:
        load_recipe(QUICKSTART, builtin_registry, ["trainr.epochs=1"])
    assert problems_of(error) == [("trainr", f"unknown section (did you mean 'trainer'?); {ALLOWED}")]


def test_override_through_a_non_table(builtin_registry: Registry) -> None:
    with pytest.raises(RecipeError, match=re.escape("  name  --set 'name.x=1': 'name' is not a table")) as error:
        load_recipe(QUICKSTART, builtin_registry, ["name.x=1"])
    assert problems_of(error) == [("name", "--set 'name.x=1': 'name' is not a table")]


def test_override_problems_come_with_the_file_problems(bad_recipe: Path, builtin_registry: Registry) -> None:
    with pytest.raises(RecipeError, match=r"is invalid \(8 problems\)") as error:
        load_recipe(bad_recipe, builtin_registry, ["oops"])
    assert problems_of(error) == [("--set", "--set 'oops': expected KEY=VALUE, like trainer.epochs=1"), *BAD_PROBLEMS]


def test_trainer_defaults() -> None:
    config = TrainerConfig()
    assert (config.epochs, config.batch_size, config.device, config.amp) == (5, 24, "auto", True)


# --- the command line ----------------------------------------------------------------------


@pytest.fixture
def runner(monkeypatch: pytest.MonkeyPatch) -> CliRunner:
    monkeypatch.setenv("NLPFW_LOAD_PLUGINS", "")  # built-ins only, whatever is installed
    return CliRunner()


def test_cli_version(runner: CliRunner) -> None:
    result = runner.invoke(cli, ["--version"])
    assert result.exit_code == 0
    assert result.output == f"nlpfw, version {nlpfw.__version__}\n"


def test_cli_validate_good_recipes(runner: CliRunner) -> None:
    result = runner.invoke(cli, ["validate", *map(str, RECIPES)])
    assert result.exit_code == 0, result.output
    assert result.stderr == ""
    lines = result.stdout.splitlines()
    assert len(lines) == len(RECIPES)
    assert f"{QUICKSTART}: ok (ner.v1, cluener.v1, bert.v1 + crf.v1)" in lines
    assert f"{ROOT / 'recipes' / 'bert_softmax_cluener.toml'}: ok (ner.v1, cluener.v1, bert.v1 + softmax.v1)" in lines
    assert all(line.endswith(")") and ": ok (" in line for line in lines)


def test_cli_validate_bad_recipe(runner: CliRunner, bad_recipe: Path) -> None:
    result = runner.invoke(cli, ["validate", str(QUICKSTART), str(bad_recipe)])
    assert result.exit_code == 1
    assert result.stdout == f"{QUICKSTART}: ok (ner.v1, cluener.v1, bert.v1 + crf.v1)\n"
    assert result.stderr == "Error: " + "\n".join(bad_lines(bad_recipe)) + "\n"
    assert "Traceback" not in result.output


def test_cli_validate_with_set(runner: CliRunner) -> None:
    result = runner.invoke(cli, ["validate", str(QUICKSTART), "--set", "decoder.type=softmax.v1"])
    assert result.exit_code == 0, result.output
    assert result.stdout == f"{QUICKSTART}: ok (ner.v1, cluener.v1, bert.v1 + softmax.v1)\n"
    result = runner.invoke(cli, ["validate", str(QUICKSTART), "--set", "decoder.type=sofmax.v1"])
    assert result.exit_code == 1
    assert result.stderr == (
        f"Error: recipe {QUICKSTART} is invalid (1 problem)\n"
        "  decoder.type  unknown decoder 'sofmax.v1' (did you mean 'softmax.v1'?); available: classifier.v1, crf.v1, softmax.v1\n"
    )


def test_cli_validate_missing_file(runner: CliRunner, tmp_path: Path) -> None:
    result = runner.invoke(cli, ["validate", str(tmp_path / "nope.toml")])
    assert result.exit_code == 1
    assert result.stderr == f"Error: recipe {tmp_path / 'nope.toml'} is invalid (1 problem)\n  file  not found\n"


def test_cli_run_invalid_recipe_creates_no_run_folder(runner: CliRunner, bad_recipe: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = runner.invoke(cli, ["run", str(bad_recipe), "-o", str(out)])
    assert result.exit_code == 1
    assert result.stderr == "Error: " + "\n".join(bad_lines(bad_recipe)) + "\n"
    assert "Traceback" not in result.output
    assert not out.exists()


def test_cli_run_refuses_a_folder_that_holds_a_run(runner: CliRunner, tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    write(out / "metrics.jsonl", "{}\n")
    result = runner.invoke(cli, ["run", str(QUICKSTART), "-o", str(out)])
    assert result.exit_code == 1
    assert result.stderr == (
        f"Error: output folder {out} already holds a run; choose another with --output, "
        "or pass --overwrite to replace it\n"
    )
    assert "Traceback" not in result.output
    assert sorted(p.name for p in out.iterdir()) == ["metrics.jsonl"]
    assert (out / "metrics.jsonl").read_text(encoding="utf-8") == "{}\n"


def test_cli_run_refuses_a_file_as_output(runner: CliRunner, tmp_path: Path) -> None:
    out = write(tmp_path / "out", "not a folder")
    result = runner.invoke(cli, ["run", str(QUICKSTART), "-o", str(out)])
    assert result.exit_code == 1
    assert result.stderr == f"Error: output folder {out} is a file\n"
