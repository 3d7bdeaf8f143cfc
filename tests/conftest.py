from __future__ import annotations

import os
from collections.abc import Iterator
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


@pytest.fixture(scope="session")
def cache_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tokenised-corpus cache the tests share (never the user's ~/.cache)."""
    return tmp_path_factory.mktemp("nlpfw-cache")


@pytest.fixture(scope="session", autouse=True)
def _environment(cache_root: Path) -> Iterator[None]:
    """Session-wide, so that module-scoped fixtures (trained runs) see it too."""
    with pytest.MonkeyPatch.context() as patch:
        root = _data_root()
        if root is not None:
            patch.setenv("NLPFW_DATA_ROOT", str(root))
        patch.setenv("NLPFW_CACHE_DIR", str(cache_root))
        yield


@pytest.fixture(scope="session")
def registry():
    return build_registry(get_plugin_manager(load_entrypoints=False))


@pytest.fixture(scope="session")
def vocab(data_root: Path) -> Path:
    return data_root / "bert-base-chinese-vocab" / "vocab.txt"


@pytest.fixture(scope="session")
def run_dir(tmp_path_factory: pytest.TempPathFactory, data_root: Path) -> Path:
    """A tiny model trained on 400 CLUENER texts for 4 epochs, for the tests that use a trained
    run folder (predict, evaluate, export); read-only for them."""
    from test_training import train

    result, output = train(tmp_path_factory.mktemp("trained"), "trainer.epochs=4", "dataset.limit=400")
    assert result.exit_code == 0, result.output
    return output
