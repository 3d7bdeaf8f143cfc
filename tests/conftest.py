from __future__ import annotations

import os
from pathlib import Path

import pytest

from nlpfw.plugins import build_registry, get_plugin_manager

ROOT = Path(__file__).resolve().parent.parent


def _data_root() -> Path | None:
    for candidate in (os.environ.get("NLPFW_DATA_ROOT"), ROOT.parent / "shared" / "data"):
        if candidate and (Path(candidate) / "cluener" / "train.json").is_file():
            return Path(candidate)
    return None


@pytest.fixture(scope="session")
def data_root() -> Path:
    """The shared data root; in CI its absence is a failure, never a skip."""
    root = _data_root()
    if root is None:
        message = "../shared/data (or NLPFW_DATA_ROOT) with cluener/ is missing"
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(message)
        pytest.skip(message)
    return root


@pytest.fixture(autouse=True)
def _data_root_env(monkeypatch: pytest.MonkeyPatch) -> None:
    root = _data_root()
    if root is not None:
        monkeypatch.setenv("NLPFW_DATA_ROOT", str(root))


@pytest.fixture(scope="session")
def registry():
    return build_registry(get_plugin_manager(load_entrypoints=False))


@pytest.fixture(scope="session")
def vocab(data_root: Path) -> Path:
    return data_root / "bert-base-chinese-vocab" / "vocab.txt"
