"""Built-in recipes by name (`nlpfw run quickstart`) and `nlpfw init`'s starter recipes."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest
from click.testing import CliRunner

from nlpfw.cli import cli
from nlpfw.recipe import TrainerConfig, load_recipe
from nlpfw.starter import builtin_recipes, find_recipe

ROOT = Path(__file__).resolve().parent.parent


def invoke(*args: str, cwd: Path | None = None):
    runner = CliRunner()
    if cwd is None:
        return runner.invoke(cli, list(args), catch_exceptions=False)
    with runner.isolated_filesystem(temp_dir=cwd):
        return runner.invoke(cli, list(args), catch_exceptions=False)


def test_builtin_recipes_are_the_recipes_folder() -> None:
    assert builtin_recipes() == {p.stem: p for p in sorted((ROOT / "recipes").glob("*.toml"))}
    assert find_recipe("quickstart").read_bytes() == (ROOT / "recipes" / "quickstart.toml").read_bytes()
    assert find_recipe("quickstart.toml") == find_recipe("quickstart")


def test_a_path_that_exists_wins(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    Path("quickstart").write_text('name = "mine"\n', encoding="utf-8")
    assert find_recipe("quickstart") == Path("quickstart")


def test_an_unknown_name_lists_the_builtin_recipes(tmp_path) -> None:
    result = CliRunner().invoke(cli, ["run", "quickstrat"])
    assert result.exit_code == 1
    assert "Error: recipe quickstrat is invalid (1 problem)" in result.output
    assert "file  not found, and no built-in recipe has that name (did you mean 'quickstart'?)" in result.output
    assert f"built-in recipes: {', '.join(builtin_recipes())} (nlpfw init" in result.output
    missing = CliRunner().invoke(cli, ["validate", str(tmp_path / "quickstart.toml")])  # a folder: a path, no lookup
    assert missing.exit_code == 1 and "did you mean" not in missing.output and "not found" in missing.output


def test_validate_takes_builtin_names() -> None:
    result = invoke("validate", "quickstart", "bilstm_crf_cluener")
    assert result.exit_code == 0, result.output
    assert "quickstart: ok (ner.v1, cluener.v1, bert.v1 + crf.v1)" in result.output


@pytest.mark.parametrize("choice", [
    ("ner.v1", "bert.v1", "crf.v1", "cluener.v1"),
    ("ner.v1", "bilstm.v1", "softmax.v1", "conll.v1"),
    ("textcat.v1", "bert.v1", "classifier.v1", "text_labels.v1"),
])  # fmt: skip
def test_init_writes_every_option_with_its_default(tmp_path, registry, choice) -> None:
    task, encoder, decoder, dataset = choice
    target = tmp_path / "recipe.toml"
    result = invoke("init", str(target), "--task", task, "--encoder", encoder, "--decoder", decoder, "--dataset", dataset)
    assert result.exit_code == 0, result.output
    assert f"Wrote {target} ({task}, {dataset}, {encoder} + {decoder}" in result.output
    text = target.read_text(encoding="utf-8")
    data = tomllib.loads(text)
    recipe = load_recipe(target, registry)  # valid as written
    assert invoke("validate", str(target)).exit_code == 0
    assert [data[k]["type"] for k in ("task", "encoder", "decoder", "dataset")] == list(choice)
    lines = text.splitlines()
    for kind, chosen in zip(("task", "encoder", "decoder", "dataset"), choice):
        model = registry.get(kind, chosen).cls.config_model
        for key, field in model.model_fields.items():
            default = field.get_default(call_default_factory=True)
            written = [i for i, line in enumerate(lines) if line.startswith((f"{key} =", f"# {key} ="))]
            assert written, f"{kind}.{key} missing"
            if field.description:  # its description is the comment just above it, in the section
                assert any(field.description[:40] in lines[i - 1] or field.description[:40] in " ".join(lines[i - 3 : i])
                           for i in written), (kind, key)  # fmt: skip
            if field.is_required():
                assert key in data[kind], (kind, key)
            elif default is None:
                assert key not in data[kind] or field.examples, (kind, key)  # commented out, or the starter example
            else:
                assert data[kind][key] == (default.value if hasattr(default, "value") else default), (kind, key)
    for key, field in TrainerConfig.model_fields.items():
        default = field.get_default()
        if default is None:
            assert f"# {key} =" in text and key not in data["trainer"]
        else:
            assert data["trainer"][key] == default, key
    assert recipe.trainer == TrainerConfig()


def test_init_bert_starts_from_the_pretrained_checkpoint(tmp_path, registry) -> None:
    target = tmp_path / "ner.toml"
    assert invoke("init", str(target)).exit_code == 0  # the defaults: ner.v1, bert.v1, crf.v1, cluener.v1
    text = target.read_text(encoding="utf-8")
    assert 'pretrained = "bert-base-chinese"\n' in text
    assert '# vocab = "bert-base-chinese-vocab/vocab.txt"  # unset by default' in text
    assert "# from scratch only (default 768) (>= 1)\n# hidden_size =  # unset by default" in text
    assert "# passes over the training data (>= 1)\nepochs = 5\n" in text
    recipe = load_recipe(target, registry)
    assert recipe.name == "ner" and recipe.encoder.config.pretrained == "bert-base-chinese"


def test_init_refuses_to_overwrite_without_force(tmp_path) -> None:
    target = tmp_path / "recipe.toml"
    target.write_text("mine\n", encoding="utf-8")
    result = invoke("init", str(target))
    assert result.exit_code == 1
    assert f"Error: {target} exists; choose another name, or --force to replace it" in result.output
    assert target.read_text(encoding="utf-8") == "mine\n"
    assert invoke("init", str(target), "--force").exit_code == 0
    assert target.read_text(encoding="utf-8").startswith("# nlpfw recipe written by `nlpfw init`")


def test_init_names_unknown_components(tmp_path) -> None:
    result = invoke("init", str(tmp_path / "r.toml"), "--decoder", "crff.v1")
    assert result.exit_code == 1
    assert "Error: --decoder: unknown decoder 'crff.v1' (did you mean 'crf.v1'?)" in result.output
    assert not (tmp_path / "r.toml").exists()
    result = invoke("init", str(tmp_path / "r.txt"))
    assert result.exit_code == 1 and "a recipe is a .toml file" in result.output
