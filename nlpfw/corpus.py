"""Encoded corpora: a split's texts as flat arrays, cut into overlapping windows.

A task encodes each text (`nlpfw.interfaces.Encoded`) into per-character columns (numpy
arrays as long as the text: `input_ids`, tag ids, ...; 1-D, or one row per character), span tables ([n, 3] arrays of
(start, end, label id) rows) and per-text values (a class id, a multi-hot row). Columns are
concatenated into one flat array each, so a corpus of millions of characters costs a few bytes
per character, not a Python object each; tables are kept flat too, with text-global offsets,
and a window gets the rows that lie wholly inside it, shifted to window offsets (a row cut by a
window's edge is left out of that window, as a tag column is cut there; an overlap at least as
long as the row holds it whole in the neighbouring window); values are stacked, one row per
text, and every window of a text gets its text's value.

A text longer than the window is cut into windows of `window` characters that overlap by
`stride` characters (the last window is aligned to the end of the text). Windows are views
into the flat arrays; nothing is copied and nothing is cut off. Each character is owned by
the window in which it is farthest from a cut edge (the boundary between two windows is the
middle of their overlap); the task combines a text's windows into one prediction knowing
what each owns (`Task.combine`): NER keeps a window's entity only if it starts in a part that
window owns, so an entity no longer than half the overlap lies whole inside the window that
keeps it, none is lost and none is counted twice; a classifier weighs each window's scores
by the characters it owns.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from nlpfw.errors import NlpfwError
from nlpfw.interfaces import Encoded, Example, Task, Window

DTYPES = {"input_ids": np.int32}  # other columns keep the dtype the task gives them


def window_starts(length: int, window: int | None, stride: int) -> list[int]:
    """Start offsets of the windows covering a text of `length` characters."""
    if window is None or length <= window:
        return [0]
    step = window - stride
    starts = list(range(0, length - window, step))
    return [*starts, length - window]


def window_settings(window: int | None, stride: int | None, max_chars: int | None) -> tuple[int | None, int]:
    """The (window, stride) to use: the recipe's, within the encoder's limit `max_chars`."""
    if window is not None and max_chars is not None and window > max_chars:
        raise NlpfwError(f"trainer.window: {window} is longer than the encoder's limit of {max_chars} characters")
    window = window or max_chars
    if window is None:
        return None, 0
    stride = window // 4 if stride is None else stride
    if stride >= window:
        raise NlpfwError(f"trainer.stride: {stride} must be smaller than the window ({window} characters)")
    return window, stride


def owned_ranges(starts: Sequence[int], length: int, window: int | None) -> list[tuple[int, int]]:
    """For each window, the characters `[lo, hi)` it owns: up to the middle of each overlap."""
    ends = [length if window is None else min(s + window, length) for s in starts]
    bounds = [0] + [(starts[k + 1] + ends[k]) // 2 for k in range(len(starts) - 1)] + [length]
    return list(zip(bounds[:-1], bounds[1:]))


@dataclass
class Stats:
    """What encoding a split found, for the run's report."""

    examples: int = 0
    labelled: int = 0  # non-empty texts with a gold annotation
    annotations: int = 0  # gold annotations (entities, classes, ...), as the task counts them
    dropped: int = 0  # gold annotations the targets could not hold (e.g. nested spans in flat BIO)
    windowed: int = 0  # texts longer than one window
    windows: int = 0
    chars: int = 0


@dataclass
class EncodedSplit:
    """One split: its examples and their windows, ready for a DataLoader (map-style)."""

    columns: dict[str, np.ndarray]  # flat per-character columns over all texts
    text_starts: np.ndarray  # int64 [texts + 1]: text i is columns[...][text_starts[i]:text_starts[i+1]]
    window_text: np.ndarray  # int32 [windows]: the text each window belongs to
    window_start: np.ndarray  # int32 [windows]: its first character, as an offset into the text
    window_length: np.ndarray  # int32 [windows]
    window: int | None
    stride: int
    stats: Stats = field(default_factory=Stats)
    tables: dict[str, np.ndarray] = field(default_factory=dict)  # int32 [rows, 3], text-global offsets
    table_starts: dict[str, np.ndarray] = field(default_factory=dict)  # int64 [texts + 1] per table
    values: dict[str, np.ndarray] = field(default_factory=dict)  # [texts, ...]: one row per text
    examples_loader: Callable[[], list[Example]] | None = None
    _examples: list[Example] | None = None

    @property
    def examples(self) -> list[Example]:
        """The split's texts and gold annotations (rebuilt on first use when read from the cache)."""
        if self._examples is None:
            assert self.examples_loader is not None
            self._examples = self.examples_loader()
        return self._examples

    def __len__(self) -> int:
        return len(self.window_text)

    def __getitem__(self, index: int) -> dict[str, np.ndarray]:
        text = int(self.window_text[index])
        begin = int(self.text_starts[text] + self.window_start[index])
        end = begin + int(self.window_length[index])
        item = {name: column[begin:end] for name, column in self.columns.items()}
        for name, table in self.tables.items():
            starts = self.table_starts[name]
            rows = table[int(starts[text]) : int(starts[text + 1])]
            inside = rows[(rows[:, 0] >= begin) & (rows[:, 1] <= end)]
            item[name] = inside - np.asarray([begin, begin, 0], dtype=inside.dtype)
        for name, values in self.values.items():
            item[name] = values[text]
        return item

    def combine(self, task: Task, outputs: Sequence[np.ndarray], target: str, texts: Sequence[int] | None = None) -> list[Any]:
        """Each text's prediction, combined by `task` from its windows' `outputs` (one per
        window, in window order). With `texts`, only those texts' predictions are made (the
        others are None)."""
        combined: list[Any] = [None] * (len(self.text_starts) - 1)
        wanted = None if texts is None else set(int(t) for t in texts)
        examples = self.examples
        for text, rows in self._windows_by_text():
            if wanted is not None and text not in wanted:
                continue
            length = int(self.text_starts[text + 1] - self.text_starts[text])
            starts = [int(self.window_start[r]) for r in rows]
            windows = [
                Window(start, int(self.window_length[row]), owned, outputs[row])
                for row, start, owned in zip(rows, starts, owned_ranges(starts, length, self.window))
            ]
            combined[text] = task.combine(examples[text].text, windows, target)
        for text, example in enumerate(examples):  # an empty text has no window
            if not example.text and (wanted is None or text in wanted):
                combined[text] = task.combine("", [], target)
        return combined

    def _windows_by_text(self) -> Iterator[tuple[int, list[int]]]:
        row, total = 0, len(self.window_text)
        while row < total:
            text, first = int(self.window_text[row]), row
            while row < total and self.window_text[row] == text:
                row += 1
            yield text, list(range(first, row))


def encode_split(
    examples: list[Example],
    encode: Callable[[Example], Encoded],
    window: int | None,
    stride: int,
) -> EncodedSplit:
    """Encode every example with the task's `encode` and cut the texts into windows."""
    text_starts = np.zeros(len(examples) + 1, dtype=np.int64)
    np.cumsum([len(e.text) for e in examples], out=text_starts[1:])
    columns: dict[str, np.ndarray] = {}
    filled: dict[str, int] = {}  # texts written into each column (or table)
    tables: dict[str, list[np.ndarray]] = {}
    values: dict[str, list[np.ndarray]] = {}
    table_counts: dict[str, np.ndarray] = {}  # rows of each table per text
    window_text: list[int] = []
    window_start: list[int] = []
    window_length: list[int] = []
    stats = Stats(examples=len(examples), chars=int(text_starts[-1]))
    for index, example in enumerate(examples):
        feature = encode(example)
        if not isinstance(feature, Encoded):
            raise TypeError(f"Task.encode must return nlpfw.interfaces.Encoded, not {type(feature).__name__}")
        begin, end = int(text_starts[index]), int(text_starts[index + 1])
        for name, table in feature.tables.items():
            _check_table(name, table, end - begin)
            tables.setdefault(name, []).append(table.astype(np.int32) + np.asarray([begin, begin, 0], np.int32))
            table_counts.setdefault(name, np.zeros(len(examples), dtype=np.int64))[index] = len(table)
            filled[name] = filled.get(name, 0) + 1
        for name, column in feature.columns.items():
            column = np.asarray(column)
            if column.ndim < 1 or len(column) != end - begin:
                raise ValueError(f"column {name!r} has shape {column.shape} for {end - begin} characters")
            if name not in columns:
                columns[name] = np.zeros((stats.chars, *column.shape[1:]), dtype=DTYPES.get(name, column.dtype))
            elif column.shape[1:] != columns[name].shape[1:]:
                raise ValueError(f"column {name!r} has rows of shape {column.shape[1:]} here, {columns[name].shape[1:]} before")
            columns[name][begin:end] = column
            filled[name] = filled.get(name, 0) + 1
        for name, value in feature.values.items():
            values.setdefault(name, []).append(np.asarray(value))
            filled[name] = filled.get(name, 0) + 1
        stats.annotations += feature.annotations
        stats.labelled += bool(end - begin) and example.gold is not None
        stats.dropped += feature.dropped
        if end == begin:
            continue  # an empty text has no window and no entity
        starts = window_starts(end - begin, window, stride)
        stats.windowed += len(starts) > 1
        for start in starts:
            window_text.append(index)
            window_start.append(start)
            window_length.append(min(end - begin - start, window or end - begin))
    stats.windows = len(window_text)
    for name, count in filled.items():
        if count != len(examples):
            raise ValueError(f"column {name!r} is in {count} of {len(examples)} encoded texts; it must be in all")
    split = EncodedSplit(
        columns=columns,
        text_starts=text_starts,
        window_text=np.asarray(window_text, dtype=np.int32),
        window_start=np.asarray(window_start, dtype=np.int32),
        window_length=np.asarray(window_length, dtype=np.int32),
        window=window,
        stride=stride,
        stats=stats,
        tables={name: np.concatenate(parts).reshape(-1, 3) for name, parts in tables.items()},
        table_starts={name: np.concatenate([[0], np.cumsum(counts)]) for name, counts in table_counts.items()},
        values={name: _stack(name, rows) for name, rows in values.items()},
    )
    split._examples = examples
    return split


def _stack(name: str, rows: list[np.ndarray]) -> np.ndarray:
    """Per-text values as one array [texts, ...]; every text's value must have one shape."""
    shapes = {row.shape for row in rows}
    if len(shapes) > 1:
        raise ValueError(f"value {name!r} has several shapes across texts: {sorted(shapes)}")
    return np.stack(rows)


def _check_table(name: str, values: np.ndarray, length: int) -> None:
    """A span table is [n, 3] integer (start, end, label id) rows inside a text of `length`."""
    if values.shape[1:] != (3,) or not np.issubdtype(values.dtype, np.integer):
        raise ValueError(f"span table {name!r} must be an integer array of shape [n, 3], not {values.dtype} {values.shape}")
    if len(values) and not ((values[:, 0] >= 0).all() and (values[:, 0] < values[:, 1]).all() and (values[:, 1] <= length).all()):
        raise ValueError(f"span table {name!r} has rows outside a text of {length} characters or empty")
