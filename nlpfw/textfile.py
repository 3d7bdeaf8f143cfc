"""The one reader of user text files (datasets, `predict --input`): UTF-8, one line at a time.

Lines end at "\\n" alone ("\\r\\n" too, its "\\r" dropped); a "\\r" inside a line is part of
the text, so a line of input is always one record. A UTF-8 byte-order mark at the start is
dropped. Bytes that are not UTF-8 are named by file, line and byte offset; a dataset with
`on_error = "skip"` leaves the line out and lists it, like any other bad record.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from nlpfw.errors import DataError

BadLine = Callable[[str, str], None]  # (where: "file:line", message); raises, or returns to skip


def decode_problem(raw: bytes, error: UnicodeDecodeError, offset: int) -> str:
    """What is wrong with a line that is not UTF-8, naming the byte."""
    byte = raw[error.start]
    return (f"not UTF-8 text: byte 0x{byte:02x} at byte {offset + error.start} of the file "
            f"(column {error.start + 1} of the line); save the file as UTF-8")  # fmt: skip


@contextmanager
def open_text(path: Path, on_bad: BadLine | None = None, keep_bad: bool = False) -> Iterator[Iterator[tuple[int, str | None]]]:
    """`(line number, text)` of each line of `path`, without its line ending.

    A line that is not UTF-8 goes to `on_bad(where, message)` (default: raise `DataError`);
    if that returns, the line is left out, or, with `keep_bad`, given as `(number, None)` so
    that a reader of multi-line records can leave the whole record out."""

    def lines(stream) -> Iterator[tuple[int, str | None]]:
        offset = 0
        for number, raw in enumerate(stream, 1):
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as error:
                message = decode_problem(raw, error, offset)
                if on_bad is None:
                    raise DataError(f"{path}:{number}: {message}") from None
                on_bad(f"{path}:{number}", message)
                offset += len(raw)
                if keep_bad:
                    yield number, None
                continue
            offset += len(raw)
            if number == 1 and text.startswith("\ufeff"):
                text = text[1:]
            if text.endswith("\n"):
                text = text[:-1]
                if text.endswith("\r"):
                    text = text[:-1]
            yield number, text

    with Path(path).open("rb") as stream:  # binary lines end at b"\n" only
        yield lines(stream)


def surrogate_problem(value: str, what: str = "'text'") -> str | None:
    """A message if `value` holds a lone surrogate (from an unpaired `\\ud800` escape in JSON),
    which no UTF-8 file can hold; None if it is clean."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as error:
        return (f"{what} holds a lone surrogate {value[error.start]!r} at character {error.start}, "
                "which is not text (an unpaired \\ud800-\\udfff escape)")  # fmt: skip
    return None


def fold(char: str) -> str:
    """The form a character is looked up in (bilstm.v1's vocabulary, `nlpfw vectors`): NFKC,
    lower case, whitespace as one space."""
    import unicodedata

    if char.isspace() or unicodedata.category(char) in ("Zs", "Cc", "Cf"):
        return " "
    folded = unicodedata.normalize("NFKC", char).lower()
    return folded if len(folded) == 1 else char
