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
the vocabulary, so a dev character unseen in training still has a vector; pretrained bigram
vectors (`bigram_vectors`, two-character tokens) do the same for bigrams. `nlpfw vectors
train` writes both from unlabelled text.

With `lexicon` (a dictionary file, or `"jieba"` for jieba's bundled one), each character's
input is joined by SoftLexicon features (Ma et al. 2020, `nlpfw_plugins.lexicon`): the
dictionary words that begin, hold, end or are the character, each set pooled into one
`lexicon_size` vector (a weighted mean of word vectors, `lexicon_weights`), the four
concatenated. The words are matched when the text is encoded (an Aho-Corasick automaton), so
`char_ids` then gives one row per character, `[char id, B words, M words, E words, S words]`
(`lexicon_per_set` word ids a set, 0 for none), still one input per character, and the corpus
cache keeps the matches. The word vocabulary is the dictionary's words found in the training
texts and those with a pretrained vector (`lexicon_vectors`, e.g. `nlpfw vectors train
--words`); other words are not matched.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from pydantic import Field, model_validator
from torch import nn

from nlpfw import io
from nlpfw.data import resolve
from nlpfw.errors import DataError, NlpfwError
from nlpfw.hookspecs import hookimpl
from nlpfw.interfaces import Encoder, EncoderConfig
from nlpfw.textfile import fold
from nlpfw_plugins.lexicon import JIEBA, Lexicon, jieba_dictionary, read_dictionary

PAD, UNK = "[PAD]", "[UNK]"
VOCAB_FILE = "vocab.json"
LEXICON_FILE = "lexicon.json"
LOOKUP_VERSION = 2  # bump when `fold` or the lexicon rows change (keys the corpus cache)


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
    bigram_vectors: str | None = Field(default=None, description="pretrained bigram vectors (two-character tokens, word2vec text format)")
    freeze_vectors: bool = Field(default=False, description="keep the pretrained vectors fixed")
    lexicon: str | None = Field(default=None, description='SoftLexicon features from a dictionary file, or "jieba" for jieba\'s')
    lexicon_size: int = Field(default=50, ge=1, description="size of the lexicon's word vectors")
    lexicon_vectors: str | None = Field(default=None, description="pretrained word vectors for the lexicon (word2vec text format)")
    freeze_lexicon_vectors: bool = Field(default=False, description="keep the lexicon's word vectors fixed (pretrained or random)")
    lexicon_per_set: int = Field(default=4, ge=1, description="words kept per B/M/E/S set of a character (the most frequent)")
    lexicon_weights: Literal["frequency", "log", "uniform"] = Field(
        default="log", description="a word's weight in its set's mean: its dictionary frequency, log(1 + it), or 1"
    )

    @model_validator(mode="after")
    def _needs(self) -> BiLstmConfig:
        if self.bigram_vectors and not self.bigram_size:
            raise ValueError("bigram_vectors needs bigram_size (the vectors' size)")
        if self.lexicon_vectors and not self.lexicon:
            raise ValueError("lexicon_vectors needs lexicon (a dictionary file or \"jieba\")")
        return self


class BiLstmEncoder(Encoder):
    config_model = BiLstmConfig
    config: BiLstmConfig
    needs_training_texts = True

    def __init__(
        self, config: BiLstmConfig, chars: list[str] | None = None, vectors: Path | None = None,
        bigrams: list[int] | None = None, lexicon: tuple[list[str], list[float]] | None = None,
        files: dict[str, Path] | None = None,
    ):  # fmt: skip
        super().__init__(config)
        self.vectors_path = vectors
        self.files = dict(files or {})  # bigram_vectors, lexicon, lexicon_vectors: resolved paths
        self.output_dim = 2 * config.hidden_size
        self.embedding: nn.Embedding | None = None
        self.bigram_embedding: nn.Embedding | None = None
        self.word_embedding: nn.Embedding | None = None
        self.lexicon: Lexicon | None = None
        self.words: list[str] = []
        self.frequencies: list[float] = []
        lexicon_dim = 4 * config.lexicon_size if config.lexicon else 0
        self.lstm = nn.LSTM(
            config.embedding_size + config.bigram_size + lexicon_dim, config.hidden_size, num_layers=config.num_layers,
            batch_first=True, bidirectional=True, dropout=config.dropout if config.num_layers > 1 else 0.0,
        )  # fmt: skip
        self.dropout = nn.Dropout(config.dropout)
        self.chars: list[str] = []
        self.bigrams: list[int] = []
        self._index: dict[str, int] = {}
        self._ids: dict[str, int] = {}
        self._folded: dict[str, str] = {}
        if chars is not None:
            self._set_vocabulary(chars, bigrams or [])
            if config.lexicon:
                words, frequencies = lexicon or ([], [])
                self._set_lexicon(words, frequencies)

    @classmethod
    def from_config(cls, config: BiLstmConfig, data_root: Path) -> BiLstmEncoder:
        vectors = resolve(config.vectors, data_root, "encoder.vectors") if config.vectors else None
        if vectors is not None and not vectors.is_file():
            raise DataError(f"encoder.vectors: file not found: {vectors}")
        files = {}
        for key in ("bigram_vectors", "lexicon", "lexicon_vectors"):
            value = getattr(config, key)
            if value:
                files[key] = jieba_dictionary() if key == "lexicon" and value == JIEBA else resolve(value, data_root, f"encoder.{key}")
        if config.lexicon:
            import_ahocorasick()
        return cls(config, vectors=vectors, files=files)

    @classmethod
    def from_saved(cls, config: BiLstmConfig, directory: Path) -> BiLstmEncoder:
        saved = json.loads((directory / VOCAB_FILE).read_text(encoding="utf-8"))
        lexicon = None
        if config.lexicon:
            entry = json.loads((directory / LEXICON_FILE).read_text(encoding="utf-8"))
            lexicon = (entry["words"], entry["frequencies"])
        return cls(config, saved["chars"], bigrams=saved.get("bigrams", []), lexicon=lexicon)

    def save(self, directory: Path) -> None:
        io.write_json(
            directory / VOCAB_FILE, {"lookup_version": LOOKUP_VERSION, "chars": self.chars, "bigrams": self.bigrams}
        )
        if self.config.lexicon:
            io.write_json(directory / LEXICON_FILE, {"words": self.words, "frequencies": self.frequencies})

    def fit_texts(self, texts: Iterable[str]) -> None:
        """Build the vocabulary from the training texts (and the pretrained vectors' characters),
        then the embedding, initialised from the vectors where they cover a character; likewise
        the bigrams and the lexicon's words."""
        texts = list(texts)
        counts = Counter(fold(c) for text in texts for c in text)
        kept = sorted(c for c, n in counts.items() if n >= self.config.min_freq)
        vectors = read_vectors(self.vectors_path, self.config.embedding_size) if self.vectors_path else {}
        chars = [PAD, UNK, *kept, *sorted(set(vectors) - set(kept))]
        bigrams: list[int] = []
        bigram_vectors: dict[int, np.ndarray] = {}
        if self.config.bigram_size:
            index = {c: i for i, c in enumerate(chars)}
            pairs: Counter[int] = Counter()
            for text in texts:
                ids = np.fromiter((index.get(fold(c), 1) for c in text), dtype=np.int64, count=len(text))
                pairs.update(bigram_keys(ids, len(chars)).tolist())
            if "bigram_vectors" in self.files:
                for pair, vector in read_vectors(
                    self.files["bigram_vectors"], self.config.bigram_size, "encoder.bigram_size", length=2
                ).items():  # fmt: skip
                    first, second = index.get(pair[0], 1), index.get(pair[1], 1)
                    if first > 1 and second > 1:  # a bigram with an unknown character is not one key
                        bigram_vectors.setdefault(first * len(chars) + second, vector)
            bigrams = sorted({key for key, n in pairs.items() if n >= self.config.bigram_min_freq} | set(bigram_vectors))
        self._set_vocabulary(chars, bigrams)
        pretrained: list[tuple[nn.Embedding | None, dict[int, np.ndarray]]] = [
            (self.embedding, {self._index[c]: v for c, v in vectors.items()}),
            (self.bigram_embedding, {1 + i: bigram_vectors[k] for i, k in enumerate(bigrams) if k in bigram_vectors}),
        ]
        if self.config.lexicon:
            pretrained.append(self._fit_lexicon(texts))
        for embedding, rows in pretrained:
            if embedding is None or not rows:
                continue
            with torch.no_grad():
                ids = torch.tensor(sorted(rows), dtype=torch.long)
                embedding.weight[ids] = torch.from_numpy(np.stack([rows[i] for i in sorted(rows)]))
            embedding.weight.requires_grad_(not self.config.freeze_vectors)
        if self.word_embedding is not None and self.config.freeze_lexicon_vectors:
            self.word_embedding.weight.requires_grad_(False)

    def _fit_lexicon(self, texts: list[str]) -> tuple[nn.Embedding | None, dict[int, np.ndarray]]:
        """The lexicon's words: the dictionary's found in `texts`, and those with a pretrained
        vector; returns the word embedding and its pretrained rows."""
        dictionary = read_dictionary(self.files["lexicon"], fold)
        vectors = {}
        if "lexicon_vectors" in self.files:
            vectors = read_vectors(self.files["lexicon_vectors"], self.config.lexicon_size, "encoder.lexicon_size", length=None)
            vectors = {w: v for w, v in vectors.items() if w in dictionary}
        candidates = sorted(dictionary)
        found = Lexicon(candidates).found(self.folded(t) for t in texts)
        words = sorted({candidates[i - 1] for i in found} | set(vectors))
        self._set_lexicon(words, [dictionary[w] for w in words])
        return self.word_embedding, {i: vectors[w] for i, w in enumerate(words, 1) if w in vectors}

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

    def _set_lexicon(self, words: list[str], frequencies: list[float]) -> None:
        self.words, self.frequencies = list(words), [float(f) for f in frequencies]
        self.lexicon = Lexicon(self.words)
        self.word_embedding = nn.Embedding(len(self.words) + 1, self.config.lexicon_size, padding_idx=0)
        frequency = np.asarray([0.0, *self.frequencies], dtype=np.float64)
        weights = {"frequency": frequency, "log": np.log1p(frequency), "uniform": (frequency > 0).astype(np.float64)}
        # a word's weight in its set's mean (0: no word); in the model, so the ONNX graph has it
        self.register_buffer("word_weight", torch.tensor(weights[self.config.lexicon_weights], dtype=torch.float32), persistent=False)
        self._rank = np.argsort(np.argsort(-frequency, kind="stable"), kind="stable")  # 0: the most frequent

    def folded(self, text: str) -> str:
        """`text` with each character folded (as long as `text`)."""
        cache = self._folded
        return "".join([cache.get(c) or cache.setdefault(c, fold(c)) for c in text])

    def char_ids(self, text: str) -> np.ndarray:
        if self.embedding is None:
            raise NlpfwError("bilstm.v1: the vocabulary is not built yet (fit_texts comes first)")
        ids = np.fromiter(map(self._id, text), dtype=np.int32, count=len(text))
        if self.lexicon is None:
            return ids
        sets = self.lexicon.sets(self.folded(text), self.config.lexicon_per_set, self._rank)
        return np.concatenate([ids[:, None], sets.reshape(len(text), 4 * self.config.lexicon_per_set)], axis=1)

    def _id(self, char: str) -> int:
        found = self._ids.get(char)
        if found is None:
            found = self._ids[char] = self._index.get(fold(char), 1)
        return found

    def fingerprint(self) -> str | None:
        if self.embedding is None:
            return None
        rules: list[Any] = [LOOKUP_VERSION, self.chars]
        if self.config.lexicon:
            rules += [self.config.lexicon_per_set, self.words, self.frequencies]
        return hashlib.sha256(json.dumps(rules, ensure_ascii=False).encode()).hexdigest()

    def forward(self, input_ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """`input_ids`: [batch, chars] character ids, or [batch, chars, 1 + 4 * lexicon_per_set]
        rows (the character id, then its B/M/E/S word ids) with a lexicon."""
        assert self.embedding is not None
        words = None
        if input_ids.dim() == 3:
            input_ids, words = input_ids[..., 0], input_ids[..., 1:]
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
        if self.word_embedding is not None:
            if words is None:
                raise NlpfwError("bilstm.v1: with a lexicon, input_ids are [batch, chars, 1 + 4 * lexicon_per_set] rows")
            embedded = torch.cat([embedded, self.soft_lexicon(words.long())], dim=-1)
        embedded = self.dropout(embedded)
        if torch.compiler.is_exporting():  # packed sequences do not trace; the same result unpacked
            return self.dropout(unpacked_bilstm(self.lstm, embedded, mask))
        packed = nn.utils.rnn.pack_padded_sequence(
            embedded, mask.sum(dim=1).cpu(), batch_first=True, enforce_sorted=False
        )
        output, _ = self.lstm(packed)
        hidden, _ = nn.utils.rnn.pad_packed_sequence(output, batch_first=True, total_length=width)
        return self.dropout(hidden)

    def soft_lexicon(self, words: torch.Tensor) -> torch.Tensor:
        """[batch, chars, 4 * lexicon_size] from the B/M/E/S word ids [batch, chars, 4 * k]:
        each set's `(4 / Z) * sum(z(w) * e(w))`, Z the weights' sum over all four sets of
        the character (Ma et al. 2020, eq. 8); zero where a character has no word."""
        assert self.word_embedding is not None
        batch, chars = words.shape[:2]
        words = words.reshape(batch, chars, 4, -1)
        weight = self.word_weight[words]  # [batch, chars, 4, k]
        total = weight.sum(dim=(2, 3), keepdim=True).clamp(min=1e-6)
        pooled = (self.word_embedding(words) * (4 * weight / total).unsqueeze(-1)).sum(dim=3)
        return pooled.reshape(batch, chars, -1)


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
    the padded batch: each direction runs the LSTM recurrence with its own weights
    (`lstm_direction`), and the backward one reads each row reversed within its length, so
    padding never reaches a character's state. Traces to ONNX (packed sequences do not) with
    the length dynamic; 0 at padded positions."""
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
            out = lstm_direction(source, *weights)
            halves.append(out if not suffix else out[rows, reverse])
        x = torch.cat(halves, dim=2) * on
    return x


def lstm_direction(
    inputs: torch.Tensor, weight_ih: torch.Tensor, weight_hh: torch.Tensor, bias_ih: torch.Tensor, bias_hh: torch.Tensor
) -> torch.Tensor:
    """One direction of one LSTM layer from zero states, written out: [batch, chars, hidden]
    for `inputs` [batch, chars, features] (PyTorch's gate order i, f, g, o).

    When exporting, the steps are a `torch.scan` (an ONNX `Scan` over the dynamic length), not
    `torch.lstm`: torch.export decomposes `aten.lstm` into one step per character of the
    example (it turns MKL-DNN off while tracing), and torch.onnx's while-loop replacement for
    that decomposition is skipped once `aten.lstm` has been dispatched under tracing in the
    process (its dispatch cache keeps the first kernel), so a second export in one process
    fixed `chars` to the example's length. Eagerly (tests) the same steps run as a Python loop."""
    hidden = weight_hh.shape[1]
    projected = (inputs @ weight_ih.T + (bias_ih + bias_hh)).transpose(0, 1)  # [chars, batch, 4 * hidden]

    def step(state: torch.Tensor, gates_in: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h, c = state[:, :hidden], state[:, hidden:]
        i, f, g, o = (gates_in + h @ weight_hh.T).chunk(4, dim=1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        h = torch.sigmoid(o) * torch.tanh(c)
        return torch.cat([h, c], dim=1), h.clone()

    init = inputs.new_zeros(inputs.shape[0], 2 * hidden)
    if torch.compiler.is_exporting():
        from torch._higher_order_ops.scan import scan

        _, outs = scan(step, init, projected)
    else:
        state, steps = init, []
        for gates_in in projected.unbind(0):
            state, out = step(state, gates_in)
            steps.append(out)
        outs = torch.stack(steps) if steps else inputs.new_zeros(0, inputs.shape[0], hidden)
    return outs.transpose(0, 1)


def bigram_keys(ids: Any, vocabulary: int) -> Any:
    """Key of each character's bigram with the next one (`[PAD]` after the last), for a 1-D
    numpy array or a [batch, chars] tensor of ids (padding is `[PAD]`, so a text's last
    character pairs with `[PAD]` in a batch as alone)."""
    if isinstance(ids, np.ndarray):
        following = np.concatenate([ids[1:], np.zeros(1, dtype=ids.dtype)])
    else:
        following = torch.nn.functional.pad(ids[:, 1:], (0, 1))
    return ids * vocabulary + following


def read_vectors(
    path: Path, size: int, size_key: str = "encoder.embedding_size", length: int | None = 1
) -> dict[str, np.ndarray]:
    """The vectors of a word2vec text file (an optional `COUNT DIM` first line, then `TOKEN v1
    ... vDIM` a line) whose tokens are `length` characters long (None: any), folded character
    by character; other tokens are left out, and a folded token keeps its first vector."""
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
            raise DataError(f"{path}:{number}: {len(values)} values for {token!r}; {size_key} is {size}")
        try:
            vector = np.asarray([float(v) for v in values], dtype=np.float32)
        except ValueError:
            raise DataError(f"{path}:{number}: the values for {token!r} are not all numbers") from None
        if length is None or len(token) == length:
            vectors.setdefault("".join(fold(c) for c in token), vector)
    return vectors


def import_ahocorasick() -> None:
    """pyahocorasick, or an error saying how to install it."""
    try:
        import ahocorasick  # noqa: F401
    except ImportError:
        raise NlpfwError("encoder.lexicon needs the pyahocorasick package: pip install 'nlpfw[vectors]'") from None


@hookimpl
def register_encoders(register):
    register("bilstm.v1", BiLstmEncoder)
