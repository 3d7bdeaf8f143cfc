"""`peoples_daily_2014.v1`: People's Daily 2014 (LOC, ORG, PER, T), split as the reference did.

Reads the source/target pair (`source_BIO_2014_corpus.txt`: one sentence a line, characters
separated by spaces; `target_BIO_2014_corpus.txt`: its tags, `B_LOC` style) exactly as the
reference processor (davidlight2018/nlp_framework, `processors/daily2014_processor.py`) does:
`str.split()` on each line, `_` replaced by `-` in the tags, the list of pairs shuffled with
seed 2022, dev = the first `int(0.2 * N)` pairs, train = the rest. The real 286,269-line pair
gives the reference's 229,016 / 57,253 sentences.

Gold tags are read conlleval-style: the corpus has entities that start with `I-` (`平壤1月1日`
is `B-LOC I-LOC I-T I-T I-T I-T`), and they are kept as entities.
"""

from __future__ import annotations

import random
from itertools import zip_longest
from pathlib import Path

from pydantic import Field

from nlpfw.data import resolve
from nlpfw.errors import DataError
from nlpfw.hookspecs import hookimpl
from nlpfw.interfaces import Config, Dataset, Example, Reference
from nlpfw_plugins.conll import TagProblem, gold_spans
from nlpfw_plugins.splitfiles import OnError

ENTITY_TYPES = ["LOC", "ORG", "PER", "T"]
SPLITS = ("train", "dev")


class PeoplesDailyConfig(Config):
    path: str = Field(default="people_daily_2014", description="folder under the data root (or absolute)")
    source: str = Field(default="source_BIO_2014_corpus.txt", description="the sentences, in `path`")
    target: str = Field(default="target_BIO_2014_corpus.txt", description="their tags, in `path`")
    seed: int = Field(default=2022, description="seed of the shuffle before the split")
    dev_ratio: float = Field(default=0.2, gt=0, lt=1, description="share of the shuffled lines that make dev")
    limit: int | None = Field(default=None, ge=1, description="keep the first N sentences of each split")
    on_error: OnError = Field(default="raise", description="bad data: raise, or skip the line and count it")


class PeoplesDaily(Dataset):
    """The source/target pair, split into train and dev with the reference's shuffle."""

    config_model = PeoplesDailyConfig
    config: PeoplesDailyConfig

    def __init__(self, config: PeoplesDailyConfig, data_root: Path):
        super().__init__(config, data_root)
        self._split: dict[str, list[Example]] | None = None

    def splits(self) -> tuple[str, ...]:
        return SPLITS

    def labels(self) -> list[str]:
        return list(ENTITY_TYPES)

    def files(self, split: str) -> list[Path]:
        """Both splits come from the whole pair."""
        if split not in SPLITS:
            raise DataError(f"peoples_daily_2014 has no split {split!r}; splits: {', '.join(SPLITS)}")
        folder = resolve(self.config.path, self.data_root, "dataset.path", directory=True)
        return [
            resolve(folder / self.config.source, self.data_root, "dataset.source"),
            resolve(folder / self.config.target, self.data_root, "dataset.target"),
        ]

    def load(self, split: str) -> list[Example]:
        """One split, at most `limit` sentences; the pair is read once for both splits."""
        source, target = self.files(split)
        if self._split is None:
            self._split = self.read(source, target)
        examples = self._split[split]
        return examples if self.config.limit is None else examples[: self.config.limit]

    def read(self, source: Path, target: Path) -> dict[str, list[Example]]:
        """Parse the pair, shuffle and split it. A skipped line keeps its place in the shuffle
        (so the other lines split as in the reference) but gives no example; an empty line is an
        empty example, counted as the reference counts it (it has nothing to tag or score)."""
        pairs: list[Example | None] = []
        with source.open(encoding="utf-8") as sentences, target.open(encoding="utf-8") as tag_lines:
            for number, (sentence, tag_line) in enumerate(zip_longest(sentences, tag_lines), 1):
                if sentence is None or tag_line is None:
                    shorter, longer = (source, target) if sentence is None else (target, source)
                    raise DataError(
                        f"{shorter}:{number}: the file ends here, but {longer} has more lines; "
                        "the source and target files must pair line by line"
                    )
                pairs.append(self.parse(sentence, tag_line, number, source, target))
        random.Random(self.config.seed).shuffle(pairs)
        cut = int(len(pairs) * self.config.dev_ratio)
        return {
            "dev": [e for e in pairs[:cut] if e is not None],
            "train": [e for e in pairs[cut:] if e is not None],
        }

    def parse(self, sentence: str, tag_line: str, number: int, source: Path, target: Path) -> Example | None:
        """Line `number` of the pair; None if it is bad and skipped. `id` is the line number."""
        text = "".join(sentence.split())
        tags = tag_line.replace("_", "-").split()
        where = f"{target}:{number}"
        if len(text) != len(tags):
            message = f"{len(tags)} tags, but line {number} of {source.name} has {len(text)} characters"
            self.bad_data(where, message, self.config.on_error)
            return None
        try:
            spans = gold_spans(tags, "BIO", ENTITY_TYPES)
        except TagProblem as problem:
            self.bad_data(where, f"tag {problem.index + 1}: {problem}", self.config.on_error)
            return None
        return Example(text, spans, number)

    def reference(self) -> Reference:
        return REFERENCE


REFERENCE = Reference(
    source="reference run (dev: 57,253 sentences of the full corpus, not the one-day slice)",
    speed_setup="bert-base-chinese + CRF, batch 24, train_max_seq_length 256, 229,016 / 57,253 sentences",
    speed={
        "RTX 2070 (ref)": {
            "train_step_time": 0.5107, "train_epoch_time": 7310.0,  # 2h01m50s
            "valid_step_time": 0.2230, "valid_epoch_time": 798.0,  # 13m18s
        },
        "RTX 3090 (ref)": {"train_epoch_time": 3808.0, "valid_epoch_time": 375.0},  # 1h03m28s, 6m15s; no step times
    },  # fmt: skip
    model={
        "bert-base-chinese+CRF (ref)": {"precision": 0.9862, "recall": 0.9870, "f1": 0.9866, "loss": 0.6073},
    },
    per_label={
        "bert-base-chinese+CRF (ref)": {
            "LOC": 0.9885, "ORG": 0.9931, "PER": 0.9754, "T": 0.9953, "overall": 0.9866,
        },  # fmt: skip
    },
)


@hookimpl
def register_datasets(register):
    register("peoples_daily_2014.v1", PeoplesDaily)
