"""cluener.v1: splits, the unlabelled test split, and the checksummed download path."""

from __future__ import annotations

import zipfile
from pathlib import Path

import pytest

from nlpfw.errors import DataError
from nlpfw_plugins.cluener import SHA256, Cluener, CluenerConfig


def test_splits_and_counts(data_root):
    dataset = Cluener(CluenerConfig(), data_root)
    test = dataset.load("test")
    assert len(test) == 1345 and all(e.gold is None for e in test)
    assert (test[0].id, test[2].text) == (0, "销售冠军：辐射3-Bethesda")
    dev = dataset.load("dev")
    assert sum(len(e.gold) for e in dev) == 3072
    with pytest.raises(DataError, match="cluener has no split 'valid'; splits: train, dev, test"):
        dataset.load("valid")


def _release(tmp_path, data_root, corrupt: str | None = None):
    archive = tmp_path / "cluener_public.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for name in SHA256:
            data = (data_root / "cluener" / name).read_bytes()
            zf.writestr(f"cluener_public/{name}", data + b"x" if name == corrupt else data)
    return archive.as_uri()


def test_download_checks_sha256_and_unpacks(tmp_path, data_root):
    target = tmp_path / "downloaded"
    config = CluenerConfig(path=str(target), download=True, url=_release(tmp_path, data_root))
    dev = Cluener(config, data_root).load("dev")
    assert len(dev) == 1343 and sorted(p.name for p in target.iterdir()) == ["dev.json", "test.json", "train.json"]


def test_download_with_a_bad_checksum_writes_nothing(tmp_path, data_root):
    target = tmp_path / "downloaded"
    url = _release(tmp_path, data_root, corrupt="dev.json")
    with pytest.raises(DataError, match="dataset.url: dev.json from .* fails its sha256 check"):
        Cluener(CluenerConfig(path=str(target), download=True, url=url), data_root).load("train")
    assert not target.exists()


def test_download_without_network_says_what_to_do(tmp_path, data_root):
    url = (tmp_path / "absent.zip").as_uri()
    with pytest.raises(DataError, match=r"cannot fetch .*absent\.zip.*unpack train/dev/test\.json into"):
        Cluener(CluenerConfig(path=str(tmp_path / "x"), download=True, url=url), data_root).load("dev")


def test_missing_folder_names_the_key_and_the_data_root(tmp_path):
    with pytest.raises(DataError, match=r"dataset\.path: folder not found: .*/nowhere/cluener \(relative paths are read under the data root; set NLPFW_DATA_ROOT\)"):
        Cluener(CluenerConfig(download=False), tmp_path / "nowhere").load("dev")


def test_a_relative_data_root_is_applied_once(data_root, monkeypatch):
    monkeypatch.chdir(data_root.parent)
    assert len(Cluener(CluenerConfig(limit=3), Path(data_root.name)).load("dev")) == 3
