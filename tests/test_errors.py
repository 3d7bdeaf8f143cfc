"""The error catalogue (docs/errors.md): each entry's test exists, and the entries no other test
file covers: running out of memory, missing data, unsafe files."""

from __future__ import annotations

import ast
import os
import pickle
import re
from pathlib import Path

import pytest
from click.testing import CliRunner
from test_training import ROOT, TINY

from nlpfw import checkpoint
from nlpfw.cli import cli
from nlpfw.trainer import OutOfMemory, out_of_memory

CATALOGUE = ROOT / "docs" / "errors.md"
QUICKSTART = ROOT / "recipes" / "quickstart.toml"


def catalogue_entries() -> list[tuple[str, list[str]]]:
    """(heading, the `tests/...::test_...` references under it) for each `### ` entry."""
    entries = []
    for block in CATALOGUE.read_text(encoding="utf-8").split("\n### ")[1:]:
        heading = block.splitlines()[0]
        entries.append((heading, re.findall(r"`(tests/[\w/]+\.py::\w+)`", block)))
    return entries


def test_every_catalogue_entry_names_one_test_that_exists():
    entries = catalogue_entries()
    assert len(entries) >= 20
    for heading, tests in entries:
        assert len(tests) == 1, f"{heading!r} names {len(tests)} tests; each entry names exactly one"
        path, name = tests[0].split("::")
        tree = ast.parse((ROOT / path).read_text(encoding="utf-8"))
        functions = {node.name for node in ast.walk(tree) if isinstance(node, ast.FunctionDef)}
        assert name in functions, f"{heading!r}: {tests[0]} does not exist"
    names = [tests[0] for _, tests in entries]
    assert len(set(names)) == len(names), "two entries share a test"


def invoke(*args: str, env: dict[str, str] | None = None):
    return CliRunner(env=env).invoke(cli, [str(a) for a in args])


def test_out_of_memory_in_training_names_the_batch_and_the_key(tmp_path, data_root):
    args = ["-p", "faulty_plugin", "run", QUICKSTART, "-o", tmp_path / "run", "--set", "decoder.type=oom_crf.v1"]
    for item in TINY:
        args += ["--set", item]
    result = invoke(*args)
    assert result.exit_code == 1, result.output
    flat = " ".join(result.output.split())
    assert re.search(
        r"Error: out of memory at batch 3 of epoch 1 \(trainer\.batch_size = 16, \(16, \d+\) \[texts, characters\]\): "
        r"CUDA out of memory\. Tried to allocate 2\.00 GiB\. Set a smaller batch, e\.g\. --set trainer\.batch_size=8 "
        r"\(with trainer\.grad_accum_steps doubled to keep the effective batch\), or a shorter trainer\.window",
        flat,
    ), flat
    assert "Traceback" not in result.output


def test_the_cpu_allocator_running_out_is_out_of_memory_too():
    with pytest.raises(OutOfMemory, match=r"^out of memory at evaluating epoch 2 \(trainer\.eval_batch_size = 1\): "
                                          r"DefaultCPUAllocator: can't allocate memory: you tried to allocate 8 bytes\. "
                                          r"Set a smaller batch, e\.g\. --set trainer\.eval_batch_size=1, or a shorter"):  # fmt: skip
        with out_of_memory(None, "trainer.eval_batch_size", 1, 2):
            raise RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 8 bytes")
    with pytest.raises(RuntimeError, match="^shape mismatch$"):  # other errors pass through as they are
        with out_of_memory(None, "trainer.batch_size", 4, 1, 1):
            raise RuntimeError("shape mismatch")


def test_a_missing_data_root_names_the_file_and_the_variable(tmp_path):
    result = invoke("run", QUICKSTART, "-o", tmp_path / "run", "--set", "encoder.download=false",
                    env={"NLPFW_DATA_ROOT": str(tmp_path / "empty")})  # fmt: skip
    assert result.exit_code == 1
    assert (
        f"Error: encoder.vocab: file not found: {tmp_path / 'empty' / 'bert-base-chinese-vocab' / 'vocab.txt'} "
        "(relative paths are read under the data root; set NLPFW_DATA_ROOT)"
    ) in " ".join(result.output.split())
    assert not (tmp_path / "run").exists()


def test_a_missing_dataset_folder_is_named(tmp_path, data_root):
    result = invoke("run", QUICKSTART, "-o", tmp_path / "run", "--set", f"dataset.path={tmp_path / 'nope'}")
    assert result.exit_code == 1
    assert f"Error: dataset.path: folder not found: {tmp_path / 'nope'}" in result.output


class _RunsCode:
    def __reduce__(self):
        return (os.system, (f"touch {MARKER}",))


MARKER = Path("/tmp/nlpfw-unpickled-code-ran")


def test_a_checkpoint_holding_code_is_refused_and_the_code_never_runs(tmp_path):
    MARKER.unlink(missing_ok=True)
    (tmp_path / "checkpoint").mkdir()
    with (tmp_path / "checkpoint" / "state.pt").open("wb") as stream:
        pickle.dump({"format": 1, "position": _RunsCode()}, stream, protocol=2)
    with pytest.raises(checkpoint.CheckpointError, match=r"checkpoint .* is corrupt or unreadable \(UnpicklingError: "):
        checkpoint.load(tmp_path)
    assert not MARKER.exists()


def test_torch_files_are_read_with_weights_only_and_remote_code_is_off_by_default():
    sources = [*sorted((ROOT / "nlpfw").glob("*.py")), *sorted((ROOT / "plugins").glob("*.py"))]
    loads = remote = 0
    for path in sources:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Attribute):
                continue
            keywords = {k.arg: k.value for k in node.keywords}
            if node.func.attr == "load" and getattr(node.func.value, "id", None) == "torch":
                loads += 1
                assert isinstance(keywords.get("weights_only"), ast.Constant) and keywords["weights_only"].value is True, (
                    f"{path.name}:{node.lineno}: torch.load without weights_only=True"
                )
            if node.func.attr in ("from_pretrained", "from_config") and path.name == "bert.py":
                remote += 1
                assert None in keywords, f"{path.name}:{node.lineno}: {node.func.attr} without **remote"
    assert loads >= 1 and remote >= 4
    from nlpfw_plugins.bert import BertEncoderConfig

    assert BertEncoderConfig(vocab="v.txt").trust_remote_code is False
