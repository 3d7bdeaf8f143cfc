"""Dictionary words in a text, per character, as SoftLexicon (Ma et al. 2020) reads them.

For each character `c_i`, four sets of the dictionary words found in the text: **B** the words
that begin at `c_i` (`w[i:k]`, k > i + 1), **M** those that hold it strictly inside (`w[j:k]`,
j < i < k - 1), **E** those that end at it (`w[j:i + 1]`, j < i) and **S** the character as a
one-character word. The encoder pools each set's word vectors (weighted by the words'
frequencies) and joins the four pooled vectors to the character's input, so there is still
exactly one input per character and every offset stays exact.

Matching runs an Aho-Corasick automaton (pyahocorasick, C) over the folded text: every
occurrence of every dictionary word in one pass, a few microseconds a character (timed in
docs/performance.md). The result of a corpus is cached with the corpus (`nlpfw.cache`).

A dictionary file is one word a line, optionally followed by its frequency and anything else
(jieba's `dict.txt`: `word frequency part-of-speech`); `jieba` names jieba's bundled
dictionary (about 350,000 words).
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import numpy as np

from nlpfw.errors import DataError, NlpfwError

SETS = ("B", "M", "E", "S")
JIEBA = "jieba"


def jieba_dictionary() -> Path:
    """The path of jieba's bundled `dict.txt` (jieba is found, not imported: importing it
    builds nothing, but finding is enough)."""
    spec = importlib.util.find_spec("jieba")
    if spec is None or spec.origin is None:
        raise NlpfwError("encoder.lexicon = \"jieba\" needs the jieba package: pip install 'nlpfw[vectors]'")
    path = Path(spec.origin).parent / "dict.txt"
    if not path.is_file():
        raise DataError(f"encoder.lexicon: jieba's dictionary is not at {path}")
    return path


def read_dictionary(path: Path, fold: Callable[[str], str] = lambda c: c) -> dict[str, float]:
    """Words (folded character by character) and frequencies of a dictionary file: `word`,
    or `word frequency [anything]` a line; empty lines and lines starting with `#` are left
    out; a word without a frequency counts 1; a word listed twice adds up."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as error:
        raise DataError(f"{path}: not UTF-8 text ({error})") from None
    words: dict[str, float] = {}
    for number, line in enumerate(text.split("\n"), 1):
        parts = line.split()
        if not parts or parts[0].startswith("#"):
            continue
        frequency = 1.0
        if len(parts) > 1:
            try:
                frequency = float(parts[1])
            except ValueError:
                raise DataError(
                    f"{path}:{number}: {parts[1]!r} after {parts[0]!r} is not a frequency "
                    "(a line is `word` or `word frequency [anything]`)"
                ) from None
            if not frequency > 0 or frequency == float("inf"):
                raise DataError(f"{path}:{number}: the frequency of {parts[0]!r} must be a positive number, not {parts[1]}")
        word = "".join(fold(c) for c in parts[0])
        words[word] = words.get(word, 0.0) + frequency
    if not words:
        raise DataError(f"{path}: no words in the dictionary")
    return words


class Lexicon:
    """Words with ids 1..n (0: none) and an automaton that finds them in a text."""

    def __init__(self, words: Sequence[str], max_length: int | None = None):
        import ahocorasick

        self.words = list(words)
        self.max_length = max_length
        self._automaton = ahocorasick.Automaton()
        for index, word in enumerate(self.words, 1):
            if word and (max_length is None or len(word) <= max_length):
                self._automaton.add_word(word, (index, len(word)))
        self._empty = len(self._automaton) == 0
        if not self._empty:
            self._automaton.make_automaton()

    def matches(self, text: str) -> list[tuple[int, int, int]]:
        """Every occurrence of every word in `text`: (start, end, word id) rows, end exclusive."""
        if self._empty or not text:
            return []
        return [(end + 1 - length, end + 1, index) for end, (index, length) in self._automaton.iter(text)]

    def found(self, texts: Iterable[str]) -> set[int]:
        """Ids of the words that occur in any of `texts`."""
        seen: set[int] = set()
        for text in texts:
            seen.update(index for _, _, index in self.matches(text))
        return seen

    def sets(self, text: str, per_set: int, rank: np.ndarray) -> np.ndarray:
        """The B/M/E/S word ids of each character: int32 [len(text), 4, per_set], 0 where a set
        has fewer words. A set with more keeps the `per_set` words of lowest `rank[id]` (ties:
        the lower id)."""
        sets = np.zeros((len(text), 4, per_set), dtype=np.int32)
        if not text:
            return sets
        found: list[list[list[int]]] = [[[], [], [], []] for _ in text]
        for start, end, index in self.matches(text):
            if end - start == 1:
                found[start][3].append(index)
                continue
            found[start][0].append(index)
            found[end - 1][2].append(index)
            for inside in range(start + 1, end - 1):
                found[inside][1].append(index)
        for position, groups in enumerate(found):
            for kind, ids in enumerate(groups):
                if len(ids) > per_set:
                    ids = sorted(ids, key=lambda i: (rank[i], i))[:per_set]
                sets[position, kind, : len(ids)] = ids
        return sets
