"""`text_files.v1`: unlabelled text from files, one text a line, for `mlm.v1` pretraining.

`train` and `dev` list files or glob patterns (`news/*.txt`), under the data root unless
absolute, each a plain path or a table `{path, format, field}`:

- `lines` (the default): each line is a text;
- `jsonl`: each line a JSON object whose `field` (default `text`) is the text (CLUENER,
  the sentiment corpus, ...);
- `segmented`: words separated by whitespace, each optionally tagged `word/TAG` (People's Daily
  1998, pfr1998): the words joined without spaces, tags dropped;
- `spaced`: characters separated by single spaces (People's Daily 2014's source file): the
  spaces dropped.

Blank lines (after reading) are left out. Without `dev` files, `dev_fraction` of the train
lines are held out as dev, chosen by a hash of the line's text (reproducible, and a line that
occurs twice is on one side only). Never list the dev or test text of a corpus you evaluate a
fine-tuned model on. Lines longer than the encoder's window are read in windows by the core.
Bad bytes and bad JSON stop the run naming `file:line`, or, with `on_error = "skip"`, are
left out and counted.
"""

from __future__ import annotations

import glob
import hashlib
import json
from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from nlpfw import textfile
from nlpfw.data import under_root
from nlpfw.errors import DataError
from nlpfw.hookspecs import hookimpl
from nlpfw.interfaces import Config, Dataset, Example

Format = Literal["lines", "jsonl", "segmented", "spaced"]


class TextSource(Config):
    path: str = Field(description="a file or glob pattern, under the data root (or absolute)")
    format: Format = Field(default="lines", description="lines, jsonl, segmented (word/TAG) or spaced (characters)")
    field: str = Field(default="text", min_length=1, description="jsonl: the field holding the text")


class TextFilesConfig(Config):
    train: list[str | TextSource] = Field(min_length=1, description="files or globs of the train texts")
    dev: list[str | TextSource] = Field(default_factory=list, description="files or globs of the dev texts")
    dev_fraction: float | None = Field(
        default=None, gt=0, lt=1, description="without dev files: hold out this share of the train lines (by text hash)"
    )
    limit: int | None = Field(default=None, ge=1, description="read at most N texts of each split")
    on_error: Literal["raise", "skip"] = Field(default="raise", description="bad data: raise, or skip the line and count it")

    @model_validator(mode="after")
    def _one_dev(self) -> TextFilesConfig:
        if bool(self.dev) == (self.dev_fraction is not None):
            raise ValueError("set either 'dev' (files) or 'dev_fraction' (a share of the train lines)")
        return self


def held_out(text: str, fraction: float) -> bool:
    """Whether a line goes to dev under `dev_fraction`: by a hash of its text."""
    digest = hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=8).digest()
    return int.from_bytes(digest, "little") / 2**64 < fraction


class TextFiles(Dataset):
    """Plain texts, no annotation: each example's gold is `True` (the text is its own target)."""

    config_model = TextFilesConfig
    config: TextFilesConfig

    def __init__(self, config: TextFilesConfig, data_root: Path):
        super().__init__(config, data_root)
        self._loaded: dict[str, list[Example]] = {}

    def splits(self) -> tuple[str, ...]:
        return ("train", "dev")

    def sources(self, split: str) -> list[tuple[Path, TextSource]]:
        """Each file of a split, with how to read it: globs expanded (sorted), in the order given."""
        if split not in self.splits():
            raise DataError(f"text_files.v1 has no split {split!r}; splits: train, dev")
        listed = self.config.dev if split == "dev" and self.config.dev else self.config.train
        key = "dev" if split == "dev" and self.config.dev else "train"
        found = []
        for index, entry in enumerate(listed):
            source = entry if isinstance(entry, TextSource) else TextSource(path=entry)
            pattern = under_root(source.path, self.data_root)
            if glob.has_magic(str(pattern)):
                paths = sorted(Path(p) for p in glob.glob(str(pattern)) if Path(p).is_file())
            else:
                paths = [pattern] if pattern.is_file() else []
            if not paths:
                hint = "" if Path(source.path).is_absolute() else " (relative paths are read under the data root; set NLPFW_DATA_ROOT)"
                raise DataError(f"dataset.{key}[{index}]: no file matches {pattern}{hint}")
            found += [(path.absolute(), source) for path in paths]
        return found

    def files(self, split: str) -> list[Path]:
        return [path for path, _ in self.sources(split)]

    def labels(self) -> list[str]:
        return []

    def load(self, split: str) -> list[Example]:
        if split not in self._loaded:
            fraction = None if self.config.dev else self.config.dev_fraction
            examples: list[Example] = []
            for path, source in self.sources(split):
                for where, text in self.read(path, source):
                    if fraction is not None and held_out(text, fraction) != (split == "dev"):
                        continue
                    examples.append(Example(text, True, f"{path.name}:{where.rsplit(':', 1)[1]}"))
                    if self.config.limit is not None and len(examples) >= self.config.limit:
                        break
                if self.config.limit is not None and len(examples) >= self.config.limit:
                    break
            self._loaded[split] = examples
        return self._loaded[split]

    def read(self, path: Path, source: TextSource):
        """(`file:line`, text) of each non-blank text of one file."""
        on_bad = None if self.config.on_error == "raise" else (lambda where, message: self.bad_data(where, message, "skip"))
        with textfile.open_text(path, on_bad) as lines:
            for number, line in lines:
                where = f"{path}:{number}"
                text = self.text_of(line, source, where)
                if text is not None and text.strip():
                    yield where, text

    def text_of(self, line: str, source: TextSource, where: str) -> str | None:
        """The text a line holds, or None (a skipped bad line)."""
        if source.format == "lines":
            return line
        if source.format == "segmented":
            return "".join(word.rsplit("/", 1)[0] if "/" in word[1:] else word for word in line.split())
        if source.format == "spaced":
            return line.replace(" ", "")
        if not line.strip():
            return None
        try:
            record = json.loads(line)
        except ValueError as error:
            self.bad_data(where, f"not JSON: {error}", self.config.on_error)
            return None
        text = record.get(source.field) if isinstance(record, dict) else None
        if not isinstance(text, str):
            self.bad_data(where, f"no text field {source.field!r} (a string) in the record", self.config.on_error)
            return None
        problem = textfile.surrogate_problem(text, f"{source.field!r}")
        if problem:
            self.bad_data(where, problem, self.config.on_error)
            return None
        return text


@hookimpl
def register_datasets(register):
    register("text_files.v1", TextFiles)
