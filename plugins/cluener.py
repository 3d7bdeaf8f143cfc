"""`cluener.v1`: CLUENER2020, fine-grained Chinese NER (ten entity types).

Reads `train.json`, `dev.json` and `test.json` (JSON lines; test has `id` and `text` only)
from `path` under the data root. When the folder is missing and `download` allows it (by
default: when `path` is relative, a folder under the data root), the public release is fetched
from `url`, and every file is checked against its published sha256 before it is kept.
"""

from __future__ import annotations

import hashlib
import json
import zipfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from pydantic import Field

from nlpfw import textfile
from nlpfw.data import resolve, under_root
from nlpfw.errors import DataError
from nlpfw.hookspecs import hookimpl
from nlpfw.interfaces import Config, Dataset, Example, Reference, Span

CLUENER_URL = "https://storage.googleapis.com/cluebenchmark/tasks/cluener_public.zip"
SHA256 = {
    "train.json": "60299d202779dc84f3c3bd81f4dc08f5323d0dbf762cb50cd62dd51aa9a871f8",
    "dev.json": "90036b59832e007c45d11eafe5ed80549f58a18a29aaa7fe8b1229622c69ec38",
    "test.json": "5ca36f6fbe29230a6e3244110fcd9487fc2f5a672f5bfeba82a30f0ece72aa69",
}
ENTITY_TYPES = [
    "address", "book", "company", "game", "government",
    "movie", "name", "organization", "position", "scene",
]  # fmt: skip


class CluenerConfig(Config):
    path: str = Field(default="cluener", description="folder under the data root (or absolute)")
    limit: int | None = Field(default=None, ge=1, description="read at most N lines of each split")
    download: bool | None = Field(
        default=None, description="fetch the public release (checked file by file) if the folder is missing: true, "
        "false, or unset: only where path is relative (a folder under the data root)",
    )  # fmt: skip
    url: str = Field(default=CLUENER_URL, description="where download fetches the release zip from: a URL or a local path")
    not_content = frozenset({"download", "url"})  # the files' own digests key the caches


class Cluener(Dataset):
    config_model = CluenerConfig
    config: CluenerConfig

    def splits(self) -> tuple[str, ...]:
        return ("train", "dev", "test")

    def labels(self) -> list[str]:
        return list(ENTITY_TYPES)

    def folder(self) -> Path:
        target = under_root(self.config.path, self.data_root)
        fetch = self.config.download if self.config.download is not None else not Path(self.config.path).expanduser().is_absolute()
        if fetch and not target.is_dir():
            download(self.config.url, target)
        return resolve(self.config.path, self.data_root, "dataset.path", directory=True)

    def files(self, split: str) -> list[Path]:
        if split not in self.splits():
            raise DataError(f"cluener has no split {split!r}; splits: {', '.join(self.splits())}")
        return [resolve(self.folder() / f"{split}.json", self.data_root, "dataset.path")]

    def load(self, split: str) -> list[Example]:
        [path] = self.files(split)
        examples = []
        with textfile.open_text(path) as lines:
            for number, line in lines:
                if self.config.limit is not None and len(examples) >= self.config.limit:
                    break
                if line.strip():
                    examples.append(parse_line(line, f"{path}:{number}"))
        return examples

    def reference(self) -> Reference:
        return REFERENCE

    def submission(self, examples: Sequence[Example], records: Sequence[dict[str, Any]]) -> tuple[str, list[str]]:
        """The CLUENER2020 leaderboard file, `cluener_predict.json`: one line a text,
        `{"id": ..., "label": {type: {entity: [[start, end]]}}}` with CLUENER's inclusive ends."""
        return "cluener_predict.json", list(submission_lines(examples, [r["entities"] for r in records]))


def parse_line(line: str, where: str) -> Example:
    """One CLUENER JSON line; offsets in the file are inclusive, ours are end-exclusive."""
    try:
        record = json.loads(line)
    except json.JSONDecodeError as error:
        raise DataError(f"{where}: not valid JSON: {error}") from None
    if not isinstance(record, dict) or not isinstance(record.get("text"), str):
        raise DataError(f"{where}: expected an object with a string 'text'")
    text = record["text"]
    if (problem := textfile.surrogate_problem(text)) is not None:
        raise DataError(f"{where}: {problem}")
    if "label" not in record:
        return Example(text, None, record.get("id"))
    spans = []
    for label, entities in record["label"].items():
        if label not in ENTITY_TYPES:
            raise DataError(f"{where}: unknown entity type {label!r}; types: {', '.join(ENTITY_TYPES)}")
        for surface, positions in entities.items():
            for start, end in positions:
                if not (0 <= start <= end < len(text)) or text[start : end + 1] != surface:
                    raise DataError(
                        f"{where}: {label} span [{start}, {end}] is "
                        f"{text[start : end + 1]!r} in the text, not {surface!r}"
                    )
                spans.append(Span(start, end + 1, label))
    return Example(text, sorted(spans), record.get("id"))


def download(url: str, folder: Path) -> None:
    """Fetch the release zip (an URL or a local path) with a progress bar, check each file's
    sha256, and write the three files as `folder`, whole or not at all."""
    from nlpfw.download import copy_tree_atomically, fetch

    folder.parent.mkdir(parents=True, exist_ok=True)
    zipped = folder.parent / f".{folder.name}-release.zip"
    hint = f"download it elsewhere and unpack train/dev/test.json into {folder}, or set dataset.url to a local copy of the zip"
    try:
        fetch(url, zipped, None, "dataset.url")  # the zip itself has no published digest; its files do
    except DataError as error:
        raise DataError(f"{error}; {hint}") from None
    try:
        try:
            archive = zipfile.ZipFile(zipped)
        except zipfile.BadZipFile as error:
            raise DataError(f"dataset.url: {url} is not a zip archive ({error}); {hint}") from None
        with archive:
            members = {Path(name).name: name for name in archive.namelist()}
            contents = {}
            for name, digest in SHA256.items():
                if name not in members:
                    raise DataError(f"dataset.url: {url} has no {name}; {hint}")
                data = archive.read(members[name])
                actual = hashlib.sha256(data).hexdigest()
                if actual != digest:
                    raise DataError(f"dataset.url: {name} from {url} fails its sha256 check (expected {digest}, "
                                    f"got {actual}); nothing was kept. {hint[0].upper()}{hint[1:]}")  # fmt: skip
                contents[name] = data
        copy_tree_atomically(contents, folder)
    finally:
        zipped.unlink(missing_ok=True)


_PUBLISHED = {  # entity: (bert-base-chinese+CRF dev, bert-base, roberta-wwm-large-ext, BiLSTM+CRF, human)
    "name": (87.75, 88.75, 89.09, 74.04, 74.49),
    "organization": (78.58, 79.43, 82.34, 75.96, 65.41),
    "position": (80.60, 78.89, 79.62, 70.16, 55.38),
    "company": (79.69, 81.42, 83.02, 72.27, 49.32),
    "address": (63.71, 60.89, 62.63, 45.50, 43.04),
    "game": (85.67, 86.42, 86.80, 85.27, 80.39),
    "government": (83.53, 87.03, 88.17, 77.25, 79.27),
    "scene": (72.86, 65.10, 70.49, 52.42, 51.85),
    "book": (82.67, 73.68, 74.60, 67.20, 71.70),
    "movie": (86.87, 85.82, 87.46, 78.97, 63.21),
    "overall": (79.92, 78.82, 80.42, 70.00, 63.41),
}
_COLUMNS = ("bert-base-chinese+CRF", "bert-base", "roberta-wwm-large-ext", "BiLSTM+CRF", "human")

REFERENCE = Reference(
    source="reference run (dev) and CLUENER2020 paper (test)",
    speed_setup="bert-base-chinese + CRF, batch 24, about 448 steps an epoch",
    speed={
        "RTX 2070 (ref)": {
            "train_step_time": 0.182, "train_epoch_time": 81.0,
            "valid_step_time": 0.0631, "valid_epoch_time": 3.0,
        },
        "M1 Air (ref)": {
            "train_step_time": 1.1, "train_epoch_time": 495.0,
            "valid_step_time": 0.3521, "valid_epoch_time": 19.0,
        },
    },  # fmt: skip
    model={"bert-base-chinese+CRF (ref)": {"precision": 0.7977, "recall": 0.8008, "f1": 0.7992, "loss": 8.5201}},
    per_label={
        column: {entity: scores[i] / 100 for entity, scores in _PUBLISHED.items()}
        for i, column in enumerate(_COLUMNS)
    },
)


@hookimpl
def register_datasets(register):
    register("cluener.v1", Cluener)


def submission_lines(examples: Sequence[Example], predicted: Sequence[Sequence[dict[str, Any]]]) -> Iterator[str]:
    """CLUENER2020 leaderboard lines: `{"id": ..., "label": {type: {entity: [[start, end]]}}}`,
    with CLUENER's inclusive end offsets."""
    for example, entities in zip(examples, predicted):
        label: dict[str, dict[str, list[list[int]]]] = {}
        for entity in entities:
            label.setdefault(entity["type"], {}).setdefault(entity["text"], []).append(
                [entity["start"], entity["end"] - 1]
            )
        yield json.dumps({"id": example.id, "label": label}, ensure_ascii=False)
