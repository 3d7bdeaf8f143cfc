"""Encoded corpora: a split's texts as flat arrays, cut into overlapping windows.

A task encodes each text into per-character columns (1-D numpy arrays as long as the text:
`input_ids`, `tags`, ...). They are concatenated into one flat array per column, so a corpus
of millions of characters costs a few bytes per character, not a Python object each. A task
may also give span tables (2-D [n, 3] arrays of (start, end, label id) rows: `spans`, the gold
spans a span decoder learns from); they are kept flat too, with text-global offsets, and a
window gets the rows that lie wholly inside it, shifted to window offsets. A gold span cut by
a window's edge is left out of that window, as its tags are cut there; an overlap at least
as long as the span holds it whole in the neighbouring window.

A text longer than the window is cut into windows of `window` characters that overlap by
`stride` characters (the last window is aligned to the end of the text). Windows are views
into the flat arrays; nothing is copied and nothing is cut off. Predictions are merged back
onto the whole text: each character belongs to the window in which it is farthest from a
cut edge (the boundary between two windows is the middle of their overlap), and a window's
predicted entity is kept only if it starts in a part that window owns. An entity no longer
than half the overlap therefore lies whole inside the window that keeps it: none is lost
and none is counted twice.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from nlpfw.errors import NlpfwError
from nlpfw.interfaces import Example, Span

DTYPES = {"input_ids": np.int32, "tags": np.int16}  # other columns are stored as int32


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
    labelled: int = 0  # non-empty texts with gold spans (possibly none)
    spans: int = 0
    dropped: int = 0  # gold spans the task could not hold (e.g. nested ones in flat BIO)
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
    examples_loader: Callable[[], list[Example]] | None = None
    _examples: list[Example] | None = None

    @property
    def examples(self) -> list[Example]:
        """The split's texts and gold spans (rebuilt on first use when read from the cache)."""
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
        return item

    def merge(self, window_spans: Sequence[Sequence[Span]]) -> list[list[Span]]:
        """Each text's entities from its windows' (window-relative) entities."""
        merged: list[list[Span]] = [[] for _ in range(len(self.text_starts) - 1)]
        for text, rows in self._windows_by_text():
            length = int(self.text_starts[text + 1] - self.text_starts[text])
            starts = [int(self.window_start[r]) for r in rows]
            for row, start, (lo, hi) in zip(rows, starts, owned_ranges(starts, length, self.window)):
                merged[text].extend(
                    Span(s.start + start, s.end + start, s.label)
                    for s in window_spans[row]
                    if lo <= s.start + start < hi
                )
        return merged

    def _windows_by_text(self) -> Iterator[tuple[int, list[int]]]:
        row, total = 0, len(self.window_text)
        while row < total:
            text, first = int(self.window_text[row]), row
            while row < total and self.window_text[row] == text:
                row += 1
            yield text, list(range(first, row))


def encode_split(
    examples: list[Example],
    encode: Callable[[Example], dict[str, Any]],
    window: int | None,
    stride: int,
) -> EncodedSplit:
    """Encode every example with the task's `encode` and cut the texts into windows."""
    text_starts = np.zeros(len(examples) + 1, dtype=np.int64)
    np.cumsum([len(e.text) for e in examples], out=text_starts[1:])
    columns: dict[str, np.ndarray] = {}
    filled: dict[str, int] = {}  # texts written into each column (or table)
    tables: dict[str, list[np.ndarray]] = {}
    table_counts: dict[str, np.ndarray] = {}  # rows of each table per text
    window_text: list[int] = []
    window_start: list[int] = []
    window_length: list[int] = []
    stats = Stats(examples=len(examples), chars=int(text_starts[-1]))
    for index, example in enumerate(examples):
        feature = encode(example)
        begin, end = int(text_starts[index]), int(text_starts[index + 1])
        for name, values in feature.items():
            if isinstance(values, np.ndarray) and values.ndim == 2:
                _check_table(name, values, end - begin)
                tables.setdefault(name, []).append(values.astype(np.int32) + np.asarray([begin, begin, 0], np.int32))
                table_counts.setdefault(name, np.zeros(len(examples), dtype=np.int64))[index] = len(values)
                filled[name] = filled.get(name, 0) + 1
            elif isinstance(values, np.ndarray):
                if len(values) != end - begin:
                    raise ValueError(f"column {name!r} has {len(values)} values for {end - begin} characters")
                if name not in columns:
                    columns[name] = np.zeros(stats.chars, dtype=DTYPES.get(name, np.int32))
                columns[name][begin:end] = values
                filled[name] = filled.get(name, 0) + 1
        stats.spans += len(example.spans or ())
        stats.labelled += bool(end - begin) and example.spans is not None
        stats.dropped += len(feature.get("dropped", ()))
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
    )
    split._examples = examples
    return split


def _check_table(name: str, values: np.ndarray, length: int) -> None:
    """A span table is [n, 3] integer (start, end, label id) rows inside a text of `length`."""
    if values.shape[1:] != (3,) or not np.issubdtype(values.dtype, np.integer):
        raise ValueError(f"span table {name!r} must be an integer array of shape [n, 3], not {values.dtype} {values.shape}")
    if len(values) and not ((values[:, 0] >= 0).all() and (values[:, 0] < values[:, 1]).all() and (values[:, 1] <= length).all()):
        raise ValueError(f"span table {name!r} has rows outside a text of {length} characters or empty")
