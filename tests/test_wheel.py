"""A user who installs nlpfw from a wheel gets the recipes: build the wheel, install it into a
fresh virtual environment, and from another folder run `nlpfw init`, `nlpfw validate` and
`nlpfw run quickstart` (the built-in recipe, by name) with the installed package only."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
TORCH = "torch==2.13.0"  # the local CPU wheel on our machines (see the Makefile's TORCH_SPEC)


def run(args: list[str | Path], **kwargs) -> subprocess.CompletedProcess:
    result = subprocess.run([str(a) for a in args], capture_output=True, text=True, timeout=900, **kwargs)
    assert result.returncode == 0, f"{args}\n{result.stdout}\n{result.stderr}"
    return result


@pytest.mark.slow
def test_wheel_in_a_fresh_venv(tmp_path, data_root) -> None:
    dist = tmp_path / "dist"
    run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-w", dist, ROOT])
    [wheel] = dist.glob("nlpfw-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    recipes = sorted(n for n in names if n.startswith("nlpfw/recipes/") and n.endswith(".toml"))
    assert recipes == sorted(f"nlpfw/recipes/{p.name}" for p in (ROOT / "recipes").glob("*.toml"))

    venv = tmp_path / "venv"
    run([sys.executable, "-m", "venv", venv])  # no --system-site-packages: only what the wheel brings
    python, nlpfw = venv / "bin" / "python", venv / "bin" / "nlpfw"
    run([python, "-m", "pip", "install", "--quiet", TORCH])
    run([python, "-m", "pip", "install", "--quiet", wheel])
    work = tmp_path / "elsewhere"
    work.mkdir()
    env = {key: value for key, value in os.environ.items() if key not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env |= {"NLPFW_DATA_ROOT": str(data_root), "NLPFW_CACHE_DIR": str(tmp_path / "cache")}
    code = "import nlpfw, nlpfw.starter as s; print(nlpfw.__file__); print(s.recipes_folder())"
    where = run([python, "-c", code], cwd=work, env=env)
    assert str(venv) in where.stdout and str(ROOT) not in where.stdout  # the installed copy, not the checkout
    init = run([nlpfw, "init", "ner.toml", "--encoder", "bilstm.v1", "--decoder", "crf.v1"], cwd=work, env=env)
    assert "Wrote ner.toml" in init.stdout
    run([nlpfw, "init", "bert.toml"], cwd=work, env=env)
    validate = run([nlpfw, "validate", "ner.toml", "bert.toml", "quickstart"], cwd=work, env=env)
    assert validate.stdout.splitlines() == [
        "ner.toml: ok (ner.v1, cluener.v1, bilstm.v1 + crf.v1)",
        "bert.toml: ok (ner.v1, cluener.v1, bert.v1 + crf.v1)",
        "quickstart: ok (ner.v1, cluener.v1, bert.v1 + crf.v1)",
    ]
    trained = run([nlpfw, "run", "quickstart", "--set", "trainer.max_steps=2", "--set", "trainer.epochs=1",
                   "--set", "dataset.limit=64", "-o", "runs/q"], cwd=work, env=env)  # fmt: skip
    assert "Done: best dev" in trained.stdout
    assert (work / "runs" / "q" / "model").is_dir() and (work / "runs" / "q" / "recipe.toml").is_file()
