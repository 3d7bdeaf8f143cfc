"""`bilstm.v1`: character embeddings and stacked BiLSTM layers, trained from scratch.

The model to train with no GPU and no pretrained weights. The vocabulary is the training
split's characters (those seen at least `min_freq` times), built when the run starts
(`Encoder.fit_texts`); any other character reads as `[UNK]`, and `unk_dropout` replaces
training characters with `[UNK]` at random so that its vector is learnt. Characters are
folded before lookup (NFKC, lower case, any whitespace as one space), so full-width `Ｃ`
and `c` share a vector. With `bigram_size`, each character's vector is joined by one for
its bigram with the next character (the training texts' bigrams seen `bigram_min_freq` times;
the rest share one vector), looked up inside `forward` from the character ids, so the
encoder still gives one id per character. Optional pretrained character vectors (`vectors`, a word2vec-style
text file) initialise the embedding of every character they cover, and their characters join
the vocabulary, so a dev character unseen in training still has a vector.
"""

from __future__ import annotations

import hashlib
import json
import unicodedata
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pydantic import Field
from torch import nn

from nlpfw import io
from nlpfw.data import resolve
from nlpfw.errors import DataError, NlpfwError
from nlpfw.hookspecs import hookimpl
from nlpfw.interfaces import Encoder, EncoderConfig

PAD, UNK = "[PAD]", "[UNK]"
VOCAB_FILE = "vocab.json"
LOOKUP_VERSION = 1  # bump when `fold` changes (keys the corpus cache)


class BiLstmConfig(EncoderConfig):
    embedding_size: int = Field(default=128, ge=1, description="character vector size")
    hidden_size: int = Field(default=256, ge=1, description="LSTM size per direction")
    num_layers: int = Field(default=2, ge=1, description="stacked BiLSTM layers")
    dropout: float = Field(default=0.3, ge=0, lt=1, description="on the embeddings, between layers and on the output")
    min_freq: int = Field(default=1, ge=1, description="training characters seen fewer times are [UNK]")
    unk_dropout: float = Field(default=0.0, ge=0, lt=1, description="share of training characters read as [UNK]")
    bigram_size: int = Field(default=0, ge=0, description="size of the character-bigram vectors (0: none)")
    bigram_min_freq: int = Field(default=2, ge=1, description="training bigrams seen fewer times share one vector")
    vectors: str | None = Field(default=None, description="pretrained character vectors (word2vec text format)")
    freeze_vectors: bool = Field(default=False, description="keep the pretrained vectors fixed")


def fold(char: str) -> str:
    """The form a character is looked up in: NFKC, lower case, whitespace as one space."""
    if char.isspace() or unicodedata.category(char) in ("Zs", "Cc", "Cf"):
        return " "
    folded = unicodedata.normalize("NFKC", char).lower()
    return folded if len(folded) == 1 else char


class BiLstmEncoder(Encoder):
    config_model = BiLstmConfig
    config: BiLstmConfig
    needs_training_texts = True

    def __init__(
        self, config: BiLstmConfig, chars: list[str] | None = None, vectors: Path | None = None,
        bigrams: list[int] | None = None,
    ):  # fmt: skip
        super().__init__(config)
        self.vectors_path = vectors
        self.output_dim = 2 * config.hidden_size
        self.embedding: nn.Embedding | None = None
        self.bigram_embedding: nn.Embedding | None = None
        self.lstm = nn.LSTM(
            config.embedding_size + config.bigram_size, config.hidden_size, num_layers=config.num_layers,
            batch_first=True, bidirectional=True, dropout=config.dropout if config.num_layers > 1 else 0.0,
        )  # fmt: skip
        self.dropout = nn.Dropout(config.dropout)
        self.chars: list[str] = []
        self.bigrams: list[int] = []
        self._index: dict[str, int] = {}
        self._ids: dict[str, int] = {}
        if chars is not None:
            self._set_vocabulary(chars, bigrams or [])

    @classmethod
    def from_config(cls, config: BiLstmConfig, data_root: Path) -> BiLstmEncoder:
        vectors = resolve(config.vectors, data_root, "encoder.vectors") if config.vectors else None
        if vectors is not None and not vectors.is_file():
            raise DataError(f"encoder.vectors: file not found: {vectors}")
        return cls(config, vectors=vectors)

    @classmethod
    def from_saved(cls, config: BiLstmConfig, directory: Path) -> BiLstmEncoder:
        saved = json.loads((directory / VOCAB_FILE).read_text(encoding="utf-8"))
        return cls(config, saved["chars"], bigrams=saved.get("bigrams", []))

    def save(self, directory: Path) -> None:
        io.write_json(
            directory / VOCAB_FILE, {"lookup_version": LOOKUP_VERSION, "chars": self.chars, "bigrams": self.bigrams}
        )

    def fit_texts(self, texts: Iterable[str]) -> None:
        """Build the vocabulary from the training texts (and the pretrained vectors' characters),
        then the embedding, initialised from the vectors where they cover a character."""
        texts = list(texts)
        counts = Counter(fold(c) for text in texts for c in text)
        kept = sorted(c for c, n in counts.items() if n >= self.config.min_freq)
        vectors = read_vectors(self.vectors_path, self.config.embedding_size) if self.vectors_path else {}
        chars = [PAD, UNK, *kept, *sorted(set(vectors) - set(kept))]
        bigrams: list[int] = []
        if self.config.bigram_size:
            index = {c: i for i, c in enumerate(chars)}
            pairs: Counter[int] = Counter()
            for text in texts:
                ids = np.fromiter((index.get(fold(c), 1) for c in text), dtype=np.int64, count=len(text))
                pairs.update(bigram_keys(ids, len(chars)).tolist())
            bigrams = sorted(key for key, n in pairs.items() if n >= self.config.bigram_min_freq)
        self._set_vocabulary(chars, bigrams)
        if vectors:
            assert self.embedding is not None
            with torch.no_grad():
                for char, vector in vectors.items():
                    self.embedding.weight[self._index[char]] = torch.from_numpy(vector)
            self.embedding.weight.requires_grad_(not self.config.freeze_vectors)

    def _set_vocabulary(self, chars: list[str], bigrams: list[int]) -> None:
        if chars[:2] != [PAD, UNK]:
            raise NlpfwError(f"bilstm.v1: a vocabulary starts with {PAD} and {UNK}, not {chars[:2]}")
        self.chars, self.bigrams = list(chars), list(bigrams)
        self._index = {c: i for i, c in enumerate(self.chars)}
        self._ids = {}
        self.embedding = nn.Embedding(len(self.chars), self.config.embedding_size, padding_idx=0)
        if self.config.bigram_size:
            # bigram id: 1 + the index of its key in the sorted keys; 0 for a bigram not kept
            self.register_buffer("bigram_table", torch.tensor(self.bigrams or [-1], dtype=torch.long), persistent=False)
            self.bigram_embedding = nn.Embedding(len(self.bigrams) + 1, self.config.bigram_size)

    def char_ids(self, text: str) -> np.ndarray:
        if self.embedding is None:
            raise NlpfwError("bilstm.v1: the vocabulary is not built yet (fit_texts comes first)")
        return np.fromiter(map(self._id, text), dtype=np.int32, count=len(text))

    def _id(self, char: str) -> int:
        found = self._ids.get(char)
        if found is None:
            found = self._ids[char] = self._index.get(fold(char), 1)
        return found

    def fingerprint(self) -> str | None:
        if self.embedding is None:
            return None
        rules = [LOOKUP_VERSION, self.chars]
        return hashlib.sha256(json.dumps(rules, ensure_ascii=False).encode()).hexdigest()

    def forward(self, input_ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        assert self.embedding is not None
        if self.training and self.config.unk_dropout > 0:
            drop = torch.rand(input_ids.shape, device=input_ids.device) < self.config.unk_dropout
            input_ids = torch.where(drop & mask, torch.ones_like(input_ids), input_ids)
        width = input_ids.shape[1]
        embedded = self.embedding(input_ids)
        if self.bigram_embedding is not None:
            keys = bigram_keys(input_ids.long(), len(self.chars))
            search = binary_search if torch.compiler.is_exporting() else torch.searchsorted  # ONNX has no searchsorted
            found = search(self.bigram_table, keys).clamp(max=len(self.bigram_table) - 1)
            ids = torch.where(self.bigram_table[found] == keys, found + 1, 0)
            embedded = torch.cat([embedded, self.bigram_embedding(ids)], dim=-1)
        embedded = self.dropout(embedded)
        if torch.compiler.is_exporting():  # packed sequences do not trace; the same result unpacked
            return self.dropout(unpacked_bilstm(self.lstm, embedded, mask))
        packed = nn.utils.rnn.pack_padded_sequence(
            embedded, mask.sum(dim=1).cpu(), batch_first=True, enforce_sorted=False
        )
        output, _ = self.lstm(packed)
        hidden, _ = nn.utils.rnn.pad_packed_sequence(output, batch_first=True, total_length=width)
        return self.dropout(hidden)


def binary_search(table: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
    """`torch.searchsorted(table, keys)` (the leftmost insertion points in the sorted 1-D
    `table`) as a fixed number of halving steps, each a gather and a comparison, so that it
    traces to ONNX."""
    lo = torch.zeros_like(keys)
    if len(table) == 0:
        return lo
    hi = torch.full_like(keys, len(table))
    for _ in range(len(table).bit_length()):
        mid = (lo + hi) // 2
        right = (lo < hi) & (table[mid.clamp(max=len(table) - 1)] < keys)
        lo, hi = torch.where(right, mid + 1, lo), torch.where(right, hi, mid)
    return lo


def unpacked_bilstm(lstm: nn.LSTM, inputs: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """What `lstm` (bidirectional, batch first, in eval mode) gives on packed rows, computed on
    the padded batch: each direction runs as a one-directional LSTM with its own weights, and
    the backward one reads each row reversed within its length, so padding never reaches a
    character's state. Traces to ONNX (packed sequences do not); 0 at padded positions."""
    lengths = mask.sum(dim=1, keepdim=True)  # [batch, 1]
    steps = torch.arange(inputs.shape[1], device=inputs.device).unsqueeze(0)
    reverse = torch.where(steps < lengths, lengths - 1 - steps, steps)  # [batch, chars]; an involution
    rows = torch.arange(inputs.shape[0], device=inputs.device).unsqueeze(1)
    on = mask.unsqueeze(2).to(inputs.dtype)
    x = inputs
    for layer in range(lstm.num_layers):
        halves = []
        for suffix in ("", "_reverse"):
            weights = [getattr(lstm, f"{name}_l{layer}{suffix}") for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")]
            source = x if not suffix else x[rows, reverse]
            zeros = x.new_zeros(1, x.shape[0], lstm.hidden_size)
            out, _, _ = torch.lstm(source, (zeros, zeros), weights, True, 1, 0.0, False, False, True)
            halves.append(out if not suffix else out[rows, reverse])
        x = torch.cat(halves, dim=2) * on
    return x


def bigram_keys(ids: Any, vocabulary: int) -> Any:
    """Key of each character's bigram with the next one (`[PAD]` after the last), for a 1-D
    numpy array or a [batch, chars] tensor of ids (padding is `[PAD]`, so a text's last
    character pairs with `[PAD]` in a batch as alone)."""
    if isinstance(ids, np.ndarray):
        following = np.concatenate([ids[1:], np.zeros(1, dtype=ids.dtype)])
    else:
        following = torch.nn.functional.pad(ids[:, 1:], (0, 1))
    return ids * vocabulary + following


def read_vectors(path: Path, size: int) -> dict[str, np.ndarray]:
    """Single-character vectors of a word2vec text file (an optional `COUNT DIM` first line,
    then `TOKEN v1 ... vDIM` a line); longer tokens are left out, and a folded character keeps
    its first vector."""
    vectors: dict[str, np.ndarray] = {}
    try:
        lines = path.read_text(encoding="utf-8").split("\n")  # not splitlines: U+2028 may be a token
    except UnicodeDecodeError as error:
        raise DataError(f"{path}: not UTF-8 text ({error})") from None
    for number, line in enumerate(lines, 1):
        parts = line.rstrip("\r").split(" ")
        if number == 1 and len(parts) == 2 and all(p.isdigit() for p in parts):
            continue  # the header
        if not line.strip():
            continue
        token, values = parts[0] or " ", [p for p in parts[1:] if p]  # "" : the space's own vector
        if len(values) != size:
            raise DataError(
                f"{path}:{number}: {len(values)} values for {token!r}; encoder.embedding_size is {size}"
            )
        try:
            vector = np.asarray([float(v) for v in values], dtype=np.float32)
        except ValueError:
            raise DataError(f"{path}:{number}: the values for {token!r} are not all numbers") from None
        if len(token) == 1:
            vectors.setdefault(fold(token), vector)
    return vectors


@hookimpl
def register_encoders(register):
    register("bilstm.v1", BiLstmEncoder)
