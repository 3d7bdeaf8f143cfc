"""`bert.v1`: a BERT-family encoder from transformers, one hidden vector per character.

`pretrained` is a hub name (`bert-base-chinese`) or a local directory, loaded with the Auto
classes, or an nlpfw run folder (or its `model/`, or `model/encoder/`) whose BERT encoder it
takes, weights included (e.g. one pretrained by `mlm.v1`); or, with `vocab` instead, a BERT is
built from scratch from the size settings (for offline and CPU runs). `init_from` starts such a
from-scratch BERT from another's weights (an nlpfw run folder or a local Hugging Face folder)
instead of random ones: the recipe keeps its size settings, and they must match the weights'.
With `download = true` a missing `vocab` file is fetched from
`vocab_url` (bert-base-chinese's, from the Hub) and checked against `vocab_sha256`. Characters
are looked up one by one in the vocabulary (a word-piece tokenizer would merge `CSOL` into
`cs ##ol` and break offsets); whitespace maps to `[unused1]`, since BERT's tokenizer would
drop it.
"""

from __future__ import annotations

import hashlib
import json
import unicodedata
from pathlib import Path
from typing import Any

import numpy as np
import torch
import transformers
import transformers.masking_utils
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from pydantic import Field, model_validator
from torch import nn

from nlpfw import textfile
from nlpfw.data import resolve, under_root
from nlpfw.download import fetch
from nlpfw.dropout import Dropout as FastDropout
from nlpfw.dropout import dropout as fast_dropout
from nlpfw.errors import DataError
from nlpfw.hookspecs import hookimpl
from nlpfw.interfaces import Encoder, EncoderConfig
from nlpfw.model import WEIGHTS  # the model folder's weights file

SIZE_DEFAULTS = {  # from-scratch architecture: bert-base's unless the recipe says otherwise
    "hidden_size": 768, "num_layers": 12, "num_heads": 12, "intermediate_size": 3072,
    "max_position_embeddings": 512, "hidden_dropout": 0.1, "attention_dropout": 0.1,
}  # fmt: skip
VOCAB_URL = "hub://google-bert/bert-base-chinese/vocab.txt"  # bert-base-chinese's 21,128-entry vocabulary
VOCAB_SHA256 = "45bbac6b341c319adc98a532532882e91a9cefc0329aa57bac9ae761c27b291c"
SPACE_TOKEN = "[unused1]"
LOOKUP_VERSION = 1  # bump when the character lookup rules change (keys the corpus cache)


class BertEncoderConfig(EncoderConfig):
    pretrained: str | None = Field(default=None, description="hub name or local directory", examples=["bert-base-chinese"])
    vocab: str | None = Field(
        default=None, description="vocab.txt for a from-scratch model (instead of pretrained)",
        examples=["bert-base-chinese-vocab/vocab.txt"],
    )  # fmt: skip
    download: bool = Field(default=False, description="fetch vocab from vocab_url when the file is missing")
    vocab_url: str = Field(
        default=VOCAB_URL, description="where download fetches vocab from: hub://OWNER/REPO/FILE (the Hugging Face "
        "Hub, or $HF_ENDPOINT), an http(s) URL or a local path",
    )  # fmt: skip
    vocab_sha256: str = Field(
        default=VOCAB_SHA256, pattern=r"^([0-9a-fA-F]{64})?$",
        description="the sha256 a downloaded vocab must have (\"\": not checked)",
    )  # fmt: skip
    # Size settings apply to from-scratch models only; a pretrained model keeps its own.
    hidden_size: int | None = Field(default=None, ge=1, description="from scratch only (default 768)")
    num_layers: int | None = Field(default=None, ge=1, description="from scratch only (default 12)")
    num_heads: int | None = Field(default=None, ge=1, description="from scratch only (default 12)")
    intermediate_size: int | None = Field(default=None, ge=1, description="from scratch only (default 3072)")
    max_position_embeddings: int | None = Field(default=None, ge=3, description="from scratch only (default 512)")
    hidden_dropout: float | None = Field(default=None, ge=0, lt=1, description="from scratch only (default 0.1)")
    attention_dropout: float | None = Field(default=None, ge=0, lt=1, description="from scratch only (default 0.1)")
    dropout: float = Field(default=0.1, ge=0, lt=1, description="dropout on the encoder output")
    bilstm: bool = Field(default=False, description="a BiLSTM layer on top of BERT")
    lstm_hidden_size: int = Field(default=256, ge=1, description="BiLSTM size per direction")
    lstm_layers: int = Field(default=1, ge=1, description="BiLSTM layers")
    trust_remote_code: bool = Field(default=False, description="let transformers run code shipped with a checkpoint (only for checkpoints you trust)")
    init_from: str | None = Field(
        default=None,
        description="from scratch: start from the weights of this nlpfw run folder (or a local "
        "Hugging Face folder) instead of random ones; its sizes and vocabulary must match",
    )

    @model_validator(mode="before")
    @classmethod
    def _size_defaults(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("vocab") is not None and data.get("pretrained") is None:
            return {**SIZE_DEFAULTS, **data}
        return data

    @model_validator(mode="after")
    def _one_source(self) -> BertEncoderConfig:
        if (self.pretrained is None) == (self.vocab is None):
            raise ValueError("set either 'pretrained' (hub name or directory) or 'vocab' (from scratch)")
        size_keys = [key for key in SIZE_DEFAULTS if getattr(self, key) is not None]
        if self.pretrained is not None and size_keys:
            raise ValueError(
                f"{', '.join(size_keys)} only apply to from-scratch models; "
                "a pretrained model keeps its own architecture"
            )
        if self.vocab is not None and self.hidden_size % self.num_heads:
            raise ValueError(f"hidden_size {self.hidden_size} is not a multiple of num_heads {self.num_heads}")
        if self.init_from is not None and self.pretrained is not None:
            raise ValueError("init_from starts a from-scratch model (vocab and size settings); with pretrained, leave it out")
        return self


class BertEncoder(Encoder):
    config_model = BertEncoderConfig
    config: BertEncoderConfig

    def __init__(self, config: BertEncoderConfig, bert: nn.Module, tokenizer: Any):
        super().__init__(config)
        self.bert = bert
        self.tokenizer = tokenizer
        if getattr(bert.config, "_attn_implementation", None) == "sdpa":
            bert.set_attn_implementation(ATTENTION)  # SDPA, but nlpfw.dropout's masks in CPU training
        hidden = bert.config.hidden_size
        self.max_chars = bert.config.max_position_embeddings - 2
        self.lstm = None
        if config.bilstm:
            self.lstm = nn.LSTM(
                hidden, config.lstm_hidden_size, num_layers=config.lstm_layers,
                batch_first=True, bidirectional=True,
            )  # fmt: skip
            hidden = 2 * config.lstm_hidden_size
        self.dropout = nn.Dropout(config.dropout)
        self.output_dim = hidden
        self._vocab: dict[str, int] = tokenizer.get_vocab()
        self._ids = _CharTable(self._lookup)
        self.unk_id = self._vocab[tokenizer.unk_token]
        self.cls_id = self._vocab[tokenizer.cls_token]
        self.sep_id = self._vocab[tokenizer.sep_token]
        self.space_id = self._vocab.get(SPACE_TOKEN, self.unk_id)

    @classmethod
    def configured_max_chars(cls, config: BertEncoderConfig, data_root: Path) -> int | None:
        """The longest text the encoder takes, from its settings alone, for `nlpfw validate`
        (None: only the model knows, e.g. a hub name)."""
        if config.vocab is not None:
            return (config.max_position_embeddings or SIZE_DEFAULTS["max_position_embeddings"]) - 2
        assert config.pretrained is not None
        path = Path(config.pretrained).expanduser()
        model_folder = nlpfw_model_folder(path)
        for folder in (path, data_root / config.pretrained, *([model_folder / "encoder"] if model_folder else [])):
            try:
                size = json.loads((folder / "config.json").read_text(encoding="utf-8")).get("max_position_embeddings")
            except (OSError, ValueError):
                continue
            return size - 2 if isinstance(size, int) else None
        return None

    @classmethod
    def from_config(cls, config: BertEncoderConfig, data_root: Path) -> BertEncoder:
        if config.vocab is not None:
            if config.download and not under_root(config.vocab, data_root).is_file():
                fetch(config.vocab_url, under_root(config.vocab, data_root), config.vocab_sha256, "encoder.vocab_url")
            vocab = resolve(config.vocab, data_root, "encoder.vocab")
            _check_vocab(vocab)
            tokenizer = _tokenizer_from_vocab(vocab)
            bert_config = transformers.BertConfig(
                vocab_size=len(tokenizer.get_vocab()),
                hidden_size=config.hidden_size,
                num_hidden_layers=config.num_layers,
                num_attention_heads=config.num_heads,
                intermediate_size=config.intermediate_size,
                max_position_embeddings=config.max_position_embeddings,
                hidden_dropout_prob=config.hidden_dropout,
                attention_probs_dropout_prob=config.attention_dropout,
            )
            bert = transformers.BertModel(bert_config, add_pooling_layer=False)
            if config.init_from is not None:
                _init_from(bert, tokenizer, config.init_from)
            return cls(config, bert, tokenizer)
        model_folder = nlpfw_model_folder(Path(config.pretrained).expanduser())
        if model_folder is not None:
            tokenizer, bert = _load_nlpfw_bert(model_folder, config.trust_remote_code, "encoder.pretrained")
            return cls(config, bert, tokenizer)
        source = _pretrained_source(config.pretrained)
        remote = {"trust_remote_code": config.trust_remote_code}
        try:
            tokenizer = transformers.AutoTokenizer.from_pretrained(source, **remote)
            auto_config = transformers.AutoConfig.from_pretrained(source, **remote)
            bert = transformers.AutoModel.from_pretrained(
                source, config=auto_config, **_no_pooler(auto_config), **remote
            )
        except OSError as error:
            raise DataError(
                f"encoder.pretrained: cannot load {config.pretrained!r}: {error}\n"
                "Without network access, download the model elsewhere and set "
                "encoder.pretrained to its local directory (HF_HUB_OFFLINE=1 skips the retries)."
            ) from None
        return cls(config, bert, tokenizer)

    @classmethod
    def from_saved(cls, config: BertEncoderConfig, directory: Path) -> BertEncoder:
        remote = {"trust_remote_code": config.trust_remote_code}
        tokenizer = transformers.AutoTokenizer.from_pretrained(directory, **remote)
        auto_config = transformers.AutoConfig.from_pretrained(directory, **remote)
        bert = transformers.AutoModel.from_config(auto_config, **_no_pooler(auto_config), **remote)
        return cls(config, bert, tokenizer)

    def save(self, directory: Path) -> None:
        self.bert.config.save_pretrained(directory)
        self.tokenizer.save_pretrained(directory)

    def char_id(self, char: str) -> int:
        return self._ids[char]

    # What a masked-LM task and head need (`mlm.v1`, `mlm_head.v1`).

    @property
    def mask_id(self) -> int | None:
        """The id of the `[MASK]` token, or None if the vocabulary has none."""
        return self.tokenizer.mask_token_id

    def special_ids(self) -> set[int]:
        """Ids that are never a character of the text: special tokens, and whitespace's."""
        return set(self.tokenizer.all_special_ids) | {self.space_id, self.unk_id}

    def vocabulary(self) -> list[str]:
        """The tokens in id order (the embedding matrix's rows)."""
        size = self.bert.get_input_embeddings().num_embeddings
        tokens = {index: token for token, index in self._vocab.items()}
        return [tokens.get(index, f"[id {index}]") for index in range(size)]

    def input_embeddings(self) -> nn.Embedding:
        """The input token embeddings, for an output layer tied to them."""
        return self.bert.get_input_embeddings()

    def _lookup(self, char: str) -> int:
        if char.isspace() or unicodedata.category(char) in ("Zs", "Cc", "Cf"):
            return self.space_id
        folded = unicodedata.normalize("NFKC", char).lower()
        stripped = "".join(c for c in unicodedata.normalize("NFD", folded) if unicodedata.category(c) != "Mn")
        for candidate in (char, char.lower(), folded, stripped):
            if candidate in self._vocab:
                return self._vocab[candidate]
        return self.unk_id

    def char_ids(self, text: str) -> np.ndarray:
        return np.fromiter(map(self._ids.__getitem__, text), dtype=np.int32, count=len(text))

    def fingerprint(self) -> str:
        rules = [LOOKUP_VERSION, SPACE_TOKEN, self.unk_id, sorted(self._vocab.items())]
        return hashlib.sha256(json.dumps(rules, ensure_ascii=False).encode()).hexdigest()

    def forward(self, input_ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        batch, width = input_ids.shape
        lengths = mask.sum(dim=1)
        ids = torch.full((batch, width + 2), self.tokenizer.pad_token_id or 0, dtype=torch.long, device=input_ids.device)
        ids[:, 0] = self.cls_id
        ids[:, 1 : width + 1] = torch.where(mask, input_ids, ids[:, 1 : width + 1])
        ids.scatter_(1, (lengths + 1).unsqueeze(1), self.sep_id)
        attention = (torch.arange(width + 2, device=ids.device) < (lengths + 2).unsqueeze(1)).long()
        hidden = self.bert(input_ids=ids, attention_mask=attention).last_hidden_state[:, 1 : width + 1]
        if self.lstm is not None:
            packed = nn.utils.rnn.pack_padded_sequence(
                hidden, lengths.cpu(), batch_first=True, enforce_sorted=False
            )
            output, _ = self.lstm(packed)
            hidden, _ = nn.utils.rnn.pad_packed_sequence(output, batch_first=True, total_length=width)
        return self.dropout(hidden)


ATTENTION = "nlpfw_sdpa"


def _attention(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float | None = None,
    dropout: float = 0.0,
    **kwargs: Any,
) -> tuple[torch.Tensor, None]:
    """transformers' SDPA attention, except in training on a CPU with attention dropout and the
    trainer's fast dropout (`nlpfw.dropout.Dropout` as the module's `dropout`): there SDPA takes
    its math path anyway and draws the mask with `bernoulli_`; this is the same math path with
    `nlpfw.dropout`'s cheaper mask."""
    ours = (
        dropout > 0.0 and module.training and query.device.type == "cpu"
        and isinstance(getattr(module, "dropout", None), FastDropout)
        and not kwargs.get("is_causal") and not getattr(module, "is_causal", False)  # an encoder's attention,
        and key.shape[1] == query.shape[1]  # every head with its own keys (no grouped-query attention)
    )  # fmt: skip
    if not ours:
        return sdpa_attention_forward(module, query, key, value, attention_mask, scaling=scaling, dropout=dropout, **kwargs)
    scores = torch.matmul(query, key.transpose(2, 3)) * (query.shape[-1] ** -0.5 if scaling is None else scaling)
    if attention_mask is not None:  # sdpa_mask's: True where a query may attend to a key
        if attention_mask.dtype == torch.bool:
            scores = scores.masked_fill(~attention_mask, torch.finfo(scores.dtype).min)
        else:
            scores = scores + attention_mask
    probs = fast_dropout(torch.softmax(scores, dim=-1), dropout)
    return torch.matmul(probs.to(value.dtype), value).transpose(1, 2).contiguous(), None


transformers.AttentionInterface.register(ATTENTION, _attention)
transformers.masking_utils.AttentionMaskInterface.register(ATTENTION, transformers.masking_utils.sdpa_mask)


class _CharTable(dict):
    """Character -> id, looked up by `lookup` on first sight (a plain dict read after that)."""

    def __init__(self, lookup: Any):
        super().__init__()
        self.lookup = lookup

    def __missing__(self, char: str) -> int:
        self[char] = value = self.lookup(char)
        return value


PREFIX = "encoder.bert."  # the BERT's weights in an nlpfw model's model.safetensors


def nlpfw_model_folder(path: Path) -> Path | None:
    """The nlpfw model folder (`model.safetensors` with `encoder/` beside it) that `path` names:
    a run folder, its `model/`, or `model/encoder/`; None if it is none of these."""
    candidates = [path / "model", path] + ([path.parent] if path.name == "encoder" else [])
    for folder in candidates:
        if (folder / WEIGHTS).is_file() and (folder / "encoder" / "config.json").is_file():
            return folder
    return None


def _bert_weights(folder: Path, key: str) -> dict[str, torch.Tensor]:
    """The BERT's weights of an nlpfw model folder, named as in the BERT itself."""
    import safetensors.torch

    weights = safetensors.torch.load_file(str(folder / WEIGHTS))
    state = {name[len(PREFIX) :]: value for name, value in weights.items() if name.startswith(PREFIX)}
    if not state:
        raise DataError(f"{key}: {folder / WEIGHTS} holds no BERT encoder weights ({PREFIX}*)")
    return state


def _load_nlpfw_bert(folder: Path, trust_remote_code: bool, key: str) -> tuple[Any, nn.Module]:
    """The tokenizer and BERT, weights loaded, of an nlpfw model folder."""
    remote = {"trust_remote_code": trust_remote_code}
    tokenizer = transformers.AutoTokenizer.from_pretrained(folder / "encoder", **remote)
    auto_config = transformers.AutoConfig.from_pretrained(folder / "encoder", **remote)
    bert = transformers.AutoModel.from_config(auto_config, **_no_pooler(auto_config), **remote)
    _load_state(bert, _bert_weights(folder, key), f"{key}: {folder}")
    return tokenizer, bert


def _load_state(bert: nn.Module, state: dict[str, torch.Tensor], where: str) -> None:
    """Load `state` into `bert`, naming any weight that is missing or has another shape."""
    own = bert.state_dict()
    for name, value in state.items():
        if name in own and own[name].shape != value.shape:
            raise DataError(
                f"{where}: {name} has shape {tuple(value.shape)}, the model {tuple(own[name].shape)}; "
                "the size settings (hidden_size, num_layers, ...) and vocabulary must match the weights'"
            )
    missing = [name for name in own if name not in state and not name.endswith("position_ids")]
    if missing:
        raise DataError(f"{where}: lacks {len(missing)} of the model's weights, e.g. {missing[0]} (another architecture?)")
    extra = [name for name in state if name not in own and not name.endswith("position_ids")]
    if extra:
        raise DataError(f"{where}: has {len(extra)} weights the model lacks, e.g. {extra[0]} (more layers than num_layers?)")
    bert.load_state_dict(state, strict=False)


REMOTE_OFF: dict[str, Any] = {"trust_remote_code": False}  # init_from never runs a checkpoint's code


def _init_from(bert: nn.Module, tokenizer: Any, source: str) -> None:
    """`encoder.init_from`: copy another BERT's weights into the from-scratch `bert`."""
    path = Path(source).expanduser()
    folder = nlpfw_model_folder(path)
    key = "encoder.init_from"
    if folder is not None:
        theirs = transformers.AutoTokenizer.from_pretrained(folder / "encoder", **REMOTE_OFF)
        state = _bert_weights(folder, key)
    elif path.is_dir():
        try:
            theirs = transformers.AutoTokenizer.from_pretrained(path, **REMOTE_OFF)
            state = transformers.AutoModel.from_pretrained(path, **REMOTE_OFF).state_dict()
            state = {name: value for name, value in state.items() if not name.startswith("pooler.")}
        except OSError as error:
            raise DataError(f"{key}: cannot load {path}: {error}") from None
    else:
        raise DataError(f"{key}: not an nlpfw run or model folder, nor a local model folder: {path}")
    if theirs.get_vocab() != tokenizer.get_vocab():
        raise DataError(f"{key}: {path} has another vocabulary than encoder.vocab; character ids would not match")
    _load_state(bert, state, f"{key}: {path}")


def _no_pooler(auto_config: Any) -> dict[str, Any]:
    # The pooler is for sentence classification; leaving it out keeps every parameter trained.
    return {"add_pooling_layer": False} if auto_config.model_type == "bert" else {}


def _pretrained_source(pretrained: str | None) -> str:
    assert pretrained is not None
    path = Path(pretrained).expanduser()
    if path.is_dir():
        return str(path)
    if pretrained.startswith((".", "/", "~")) or path.is_absolute():
        raise DataError(f"encoder.pretrained: directory not found: {path}")
    return pretrained


SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]")


def _check_vocab(vocab: Path) -> None:
    """A vocabulary a BERT can be built from: tokens, the special ones among them (an empty
    file would silently give a model of 5 ids that knows no character)."""
    with textfile.open_text(vocab) as lines:
        tokens = {line.strip() for _, line in lines if line and line.strip()}
    if not tokens:
        raise DataError(f"encoder.vocab: {vocab} is empty; give a vocab.txt with one token a line")
    missing = [token for token in SPECIAL_TOKENS if token not in tokens]
    if missing:
        raise DataError(f"encoder.vocab: {vocab} lacks {', '.join(missing)}, which a BERT vocabulary holds")


def _tokenizer_from_vocab(vocab: Path) -> Any:
    # transformers 5 names the argument `vocab`; 4.x called it `vocab_file`.
    if int(transformers.__version__.split(".")[0]) >= 5:
        return transformers.BertTokenizer(vocab=str(vocab))
    return transformers.BertTokenizerFast(vocab_file=str(vocab))


@hookimpl
def register_encoders(register):
    register("bert.v1", BertEncoder)
