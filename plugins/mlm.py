"""`mlm.v1`: masked-LM pretraining of an encoder on plain text, and `mlm_head.v1`, its decoder.

Each character is a token (Chinese text has no word pieces here), so masking is whole-character
masking: each character is chosen with probability `mask_probability` (0.15); a chosen one is
replaced by `[MASK]` (80%), by a random token (10%) or left as it is (10%), and the head learns
to predict the original character at every chosen position. Characters that are not in the
vocabulary (`[UNK]`) and whitespace are never chosen; random tokens are drawn from the ids
after the vocabulary's last special token (bert-base-chinese: after `[MASK]` = 103, so no
`[PAD]`, `[unused*]`, `[UNK]`, `[CLS]` or `[SEP]`).

Masks are reproducible without any random generator's state: each character gets a key from
its text's digest and its offset (`encode`, cached with the corpus), and `collate` hashes the
keys with `seed` (splitmix64). Under evaluation and prediction (`collate` called with
gradients off) that is all, so dev masks are a function of the text: the same every epoch, in
one process or several. Training batches (gradients on) also hash in the batch's composition
(`dynamic_masks`): the trainer's seeded sampler reshuffles the batches every epoch, so a text
is masked afresh each epoch, and a resumed run, which redraws the same batches, draws the same
masks, whatever the global generators hold.

The head (`mlm_head.v1`) is BERT's: a dense layer, GELU and layer norm, then an output layer
over the encoder's vocabulary, tied to the encoder's input embeddings (`tie`). It reads the
batch's masked positions (`Decoder.reads_gold`), so evaluation scores exactly the characters
masked: the main score is the MLM loss (mean cross-entropy per masked character, lower is
better; `mlm_loss`), with masked-character accuracy and perplexity beside it.

Any dataset's texts can be pretrained on (its annotations are ignored); `text_files.v1` reads
plain text files. The run's encoder loads into another recipe with
`encoder.pretrained = "RUN_DIR"` or, for a from-scratch recipe of the same size,
`encoder.init_from = "RUN_DIR"`.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pydantic import Field, model_validator
from torch import nn

from nlpfw.errors import NlpfwError
from nlpfw.hookspecs import hookimpl
from nlpfw.interfaces import Config, Decoder, DecoderConfig, Encoded, Encoder, Evaluation, Example, Task, Window, input_ids

TARGET = "masked_ids"  # [batch, chars]: the original id where a character was masked, -1 elsewhere
NOT_MASKED = -1
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_BITS = 24  # resolution of the probabilities the hash is compared with
_ONE = 1 << _BITS


def mix(values: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser on a uint64 array: well-spread bits from any input, no state."""
    with np.errstate(over="ignore"):
        z = values.astype(np.uint64) + _GOLDEN
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


def char_keys(text: str, maskable: np.ndarray) -> np.ndarray:
    """One nonzero uint32 key per maskable character, from the text's digest and the offset
    (0: never masked)."""
    digest = int.from_bytes(hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=8).digest(), "little")
    with np.errstate(over="ignore"):
        keys = mix(np.uint64(digest) + np.arange(len(text), dtype=np.uint64))
    keys = (keys & np.uint64(0xFFFFFFFF)).astype(np.uint32) | np.uint32(1)
    return np.where(maskable, keys, np.uint32(0)).astype(np.uint32)


class MlmConfig(Config):
    mask_probability: float = Field(default=0.15, gt=0, lt=1, description="share of the characters chosen to be predicted")
    replace_mask: float = Field(default=0.8, ge=0, le=1, description="share of the chosen characters replaced by [MASK]")
    replace_random: float = Field(default=0.1, ge=0, le=1, description="share of the chosen characters replaced by a random token (the rest stay)")
    seed: int = Field(default=0, ge=0, description="seed of the masks (with each text's digest, and the batch in training)")
    dynamic_masks: bool = Field(default=True, description="training: mask each text afresh each epoch (false: the same masks every epoch)")

    @model_validator(mode="after")
    def _shares(self) -> MlmConfig:
        if self.replace_mask + self.replace_random > 1:
            raise ValueError(f"replace_mask + replace_random is {self.replace_mask + self.replace_random:g}; at most 1")
        return self


@dataclass
class Masked:
    """A text's masked characters and what the head made of them: offsets into the text, the
    original and the predicted ids, the predicted character ('' when the token is not one
    character), and the cross-entropy of the original (nats)."""

    offsets: np.ndarray
    gold: np.ndarray
    predicted: np.ndarray
    chars: list[str]
    nll: np.ndarray

    @property
    def correct(self) -> int:
        return int((self.gold == self.predicted).sum())


class MlmTask(Task):
    """Masked-LM pretraining: the target is the text itself."""

    config_model = MlmConfig
    config: MlmConfig
    label_kind = "character"

    def __init__(self, config: MlmConfig, labels: Sequence[str]):
        super().__init__(config, labels)
        self._seed = mix(np.asarray([config.seed], dtype=np.uint64))[0]

    def targets(self) -> tuple[str, ...]:
        return (TARGET,)

    def target_labels(self, target: str) -> list[str]:
        return []  # the head's labels are the encoder's vocabulary (`MlmHead.bind`)

    def _vocabulary(self, encoder: Encoder) -> tuple[np.ndarray, np.ndarray]:
        """(the ids never masked, [mask id, first id random tokens are drawn from, vocabulary
        size]) of `encoder`, worked out once."""
        if getattr(self, "_vocab_of", None) is not encoder:
            mask_id = getattr(encoder, "mask_id", None)
            if mask_id is None or not hasattr(encoder, "special_ids"):
                raise NlpfwError(
                    f"task.type: mlm.v1 needs an encoder with a [MASK] token and a vocabulary (bert.v1); "
                    f"{type(encoder).__name__} has none"
                )
            special = np.asarray(sorted(encoder.special_ids()), dtype=np.int64)
            size = len(encoder.vocabulary())
            low = int(special.max()) + 1 if len(special) and special.max() + 1 < size else 0
            self._vocab_of, self._vocab = encoder, (special, np.asarray([mask_id, low, size], dtype=np.int64))
        return self._vocab

    def encode(self, example: Example, encoder: Encoder) -> Encoded:
        special, vocab = self._vocabulary(encoder)
        ids = input_ids(encoder, example.text)
        maskable = ~np.isin(ids, special)
        encoded = Encoded(
            columns={"input_ids": ids, "mlm_key": char_keys(example.text, maskable)},
            values={"mlm_vocab": vocab},
        )
        encoded.annotations = int(maskable.sum())
        return encoded

    def annotation_count(self, gold: Any) -> int:
        return 0

    def _salt(self, windows: Sequence[dict[str, np.ndarray]]) -> np.uint64:
        """The batch's share of the masks' seed: its windows (their first and last keys and
        lengths), in order."""
        salt = np.zeros(1, dtype=np.uint64)
        with np.errstate(over="ignore"):
            for w in windows:
                keys = w["mlm_key"]
                part = np.uint64(int(keys[0]) << 32 | int(keys[-1])) ^ np.uint64(len(keys))
                salt = mix(salt ^ part)
        return salt[0]

    def masks(self, keys: np.ndarray, vocab: np.ndarray, salt: np.uint64 = np.uint64(0)) -> tuple[np.ndarray, np.ndarray]:
        """For keys [batch, chars] (0: never masked): which characters are chosen, and what each
        is replaced by (-1: [MASK], -2: stays, else a random token id)."""
        cfg = self.config
        hashed = mix(keys.astype(np.uint64) ^ self._seed ^ salt)
        chosen = (keys != 0) & ((hashed >> np.uint64(40)).astype(np.int64) < round(cfg.mask_probability * _ONE))
        kind = ((hashed >> np.uint64(16)) & np.uint64(_ONE - 1)).astype(np.int64)
        _, low, size = (int(v) for v in vocab)
        random_ids = low + (mix(hashed) % np.uint64(max(size - low, 1))).astype(np.int64)
        to_mask = kind < round(cfg.replace_mask * _ONE)
        to_random = ~to_mask & (kind < round((cfg.replace_mask + cfg.replace_random) * _ONE))
        replacement = np.where(to_mask, -1, np.where(to_random, random_ids, -2))
        return chosen, replacement

    def collate(self, windows: Sequence[dict[str, np.ndarray]]) -> dict[str, torch.Tensor]:
        width = max(len(w["input_ids"]) for w in windows)
        ids = np.zeros((len(windows), width), dtype=np.int64)
        keys = np.zeros((len(windows), width), dtype=np.uint32)
        for i, w in enumerate(windows):
            ids[i, : len(w["input_ids"])] = w["input_ids"]
            keys[i, : len(w["mlm_key"])] = w["mlm_key"]
        vocab = windows[0]["mlm_vocab"]
        training = torch.is_grad_enabled() and self.config.dynamic_masks
        chosen, replacement = self.masks(keys, vocab, self._salt(windows) if training else np.uint64(0))
        masked = np.where(chosen & (replacement == -1), int(vocab[0]), ids)
        masked = np.where(chosen & (replacement >= 0), replacement, masked)
        lengths = torch.tensor([len(w["input_ids"]) for w in windows])
        return {
            "input_ids": torch.from_numpy(masked),
            "mask": torch.arange(width) < lengths.unsqueeze(1),
            TARGET: torch.from_numpy(np.where(chosen, ids, NOT_MASKED)),
        }

    def combine(self, text: str, windows: Sequence[Window], target: str) -> Masked:
        """The masked characters each window owns (the head's output rows: predicted id, gold
        id, cross-entropy, predicted code point; gold -1 where nothing was masked)."""
        parts = []
        for w in windows:
            lo, hi = w.owned[0] - w.start, w.owned[1] - w.start
            rows = np.asarray(w.output)[lo:hi]
            picked = np.flatnonzero(rows[:, 1] >= 0)
            parts.append((picked + w.owned[0], rows[picked]))
        offsets = np.concatenate([p for p, _ in parts]) if parts else np.zeros(0, dtype=np.int64)
        rows = np.concatenate([r for _, r in parts]) if parts else np.zeros((0, 4), dtype=np.float32)
        chars = [chr(int(c)) if c > 0 else "" for c in rows[:, 3]]
        return Masked(offsets.astype(np.int64), rows[:, 1].astype(np.int64), rows[:, 0].astype(np.int64), chars, rows[:, 2].astype(np.float64))

    def score(self, gold: Sequence[Any], predicted: Sequence[Masked]) -> Evaluation:
        masked = sum(len(p.gold) for p in predicted)
        correct = sum(p.correct for p in predicted)
        nll = float(sum(p.nll.sum() for p in predicted))
        loss = nll / masked if masked else float("nan")
        accuracy = correct / masked if masked else 0.0
        summary = {"mlm_loss": loss, "accuracy": accuracy, "perplexity": math.exp(min(loss, 50.0)) if masked else float("nan")}
        return Evaluation(
            main="mlm_loss", summary=summary, higher_is_better=False, label_kind="character",
            per_label={"overall": {"accuracy": accuracy, "support": masked}}, per_label_metric="accuracy",
            details={"texts": len(predicted), "masked": masked, "correct": correct, "nll": nll},
            note=f"masked-LM on the dev texts ({self.config.mask_probability:g} of the characters masked, the same "
            "masks every epoch): mlm-loss is the mean cross-entropy per masked character (nats; the dev loss "
            "column averages it per window), accuracy the share predicted exactly",
        )  # fmt: skip

    def output(self, text: str, prediction: Masked) -> dict[str, Any]:
        return {
            "masked": [
                {"start": int(o), "char": text[int(o)], "predicted": c, "correct": bool(g == p)}
                for o, c, g, p in zip(prediction.offsets, prediction.chars, prediction.gold, prediction.predicted)
            ]
        }

    def file_dataset(self, path: Path, dataset_type: str, dataset_config: Config) -> tuple[str, dict[str, Any]]:
        """`nlpfw evaluate --data FILE`: the file's lines as plain text."""
        return "text_files.v1", {"train": [str(path.absolute())], "dev": [str(path.absolute())]}


class MlmHeadConfig(DecoderConfig):
    tie: bool = Field(default=True, description="the output layer shares the encoder's input embeddings")
    dropout: float = Field(default=0.0, ge=0, lt=1, description="dropout before the head")


class MlmHead(Decoder):
    """BERT's masked-LM head over the encoder's vocabulary. `decode` returns, per character,
    (predicted id, original id, cross-entropy, predicted code point): -1, -1, 0, -1 where
    nothing was masked."""

    config_model = MlmHeadConfig
    config: MlmHeadConfig
    targets = (TARGET,)
    output_name = "masked"
    exportable = False
    reads_gold = True
    chunk = 2048  # masked characters scored at once by `decode` (bounds its [chunk, vocab] logits)

    def __init__(self, config: MlmHeadConfig, input_dim: int, labels: Sequence[str], target: str = TARGET):
        super().__init__(config, input_dim, labels, target)
        self.dropout = nn.Dropout(config.dropout)
        self._embeddings: list[nn.Embedding] = []  # a list: the tied weights stay the encoder's parameters

    def bind(self, encoder: Encoder) -> None:
        if not hasattr(encoder, "vocabulary"):
            raise NlpfwError(f"decoder.type: mlm_head.v1 needs an encoder with a vocabulary (bert.v1), not {type(encoder).__name__}")
        self.labels = list(encoder.vocabulary())
        self.num_labels = len(self.labels)
        embeddings = encoder.input_embeddings() if self.config.tie and hasattr(encoder, "input_embeddings") else None
        width = embeddings.embedding_dim if embeddings is not None else self.input_dim
        self.transform = nn.Sequential(nn.Linear(self.input_dim, width), nn.GELU(), nn.LayerNorm(width, eps=1e-12))
        if embeddings is not None:
            self._embeddings = [embeddings]
        else:
            self.output = nn.Linear(width, self.num_labels, bias=False)
        self.bias = nn.Parameter(torch.zeros(self.num_labels))
        points = [ord(t) if len(t) == 1 else -1 for t in self.labels]
        self.register_buffer("code_points", torch.tensor(points, dtype=torch.float32), persistent=False)

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """[n, input_dim] -> [n, vocab]."""
        states = self.transform(self.dropout(hidden))
        weight = self._embeddings[0].weight if self._embeddings else self.output.weight
        return nn.functional.linear(states, weight.to(states.dtype), self.bias.to(states.dtype))

    def loss(self, hidden: torch.Tensor, gold: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        picked = gold >= 0
        logits = self.logits(hidden[picked]).float()
        total = nn.functional.cross_entropy(logits, gold[picked].long(), reduction="sum")
        return total / picked.sum().clamp(min=1)

    def decode(self, hidden: torch.Tensor, mask: torch.Tensor, gold: torch.Tensor | None = None) -> torch.Tensor:
        picked = mask.bool() & (gold >= 0) if gold is not None else mask.bool()
        rows = hidden[picked]
        wanted = gold[picked].long() if gold is not None else None
        parts = []
        for begin in range(0, len(rows), self.chunk):
            logits = self.logits(rows[begin : begin + self.chunk]).float()
            best = logits.argmax(dim=-1)
            if wanted is None:
                original, nll = torch.full_like(best, NOT_MASKED), torch.zeros_like(best, dtype=torch.float32)
            else:
                original = wanted[begin : begin + self.chunk]
                nll = nn.functional.cross_entropy(logits, original, reduction="none")
            parts.append(torch.stack([best.float(), original.float(), nll, self.code_points[best]], dim=1))
        output = torch.tensor([NOT_MASKED, NOT_MASKED, 0.0, -1.0], device=hidden.device).repeat(*mask.shape, 1)
        if parts:
            output[picked] = torch.cat(parts)
        return output


@hookimpl
def register_tasks(register):
    register("mlm.v1", MlmTask)


@hookimpl
def register_decoders(register):
    register("mlm_head.v1", MlmHead)
