"""`textcat.v1`: classification of whole texts, and `classifier.v1`, the pooled classifier decoder.

A gold annotation is a list of class names: exactly one for single-label classification
(softmax over the classes), any number for multi-label classification (`multi_label = true`:
one independent sigmoid per class, a class predicted when its probability reaches
`threshold`). The task gives decoders the target `class` (one class id per text) or `classes`
(a multi-hot row per text); `classifier.v1` learns from either.

A text longer than the encoder's window is never cut: each window is classified, and the text's
class probabilities are the windows' averaged, each weighted by the characters it owns (so every
character counts once).

Confidence (for `nlpfw predict --rank uncertainty` and the annotation tools' pre-annotations):
single-label, the probability of the predicted class (the top one); multi-label, the least
certain of the per-class decisions, `min over classes of max(p, 1 - p)`: a class whose
probability sits near the threshold's 0.5 makes the text doubtful, whether it was chosen or not.
Both come from the text's averaged probabilities, so they are the `scores` the record shows.

Scores: accuracy (exact match of the class set for multi-label), macro-F1 (the mean of the
classes' F1), micro-F1 (from the summed counts; for single-label it equals accuracy), and per
class precision, recall, F1 and support. The main score is `main_score`: by default accuracy
for single-label, macro-F1 for multi-label.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from pydantic import Field
from torch import nn

from nlpfw.hookspecs import hookimpl
from nlpfw.interfaces import Config, Decoder, Encoded, Encoder, Evaluation, Example, Task, Window, input_ids
from nlpfw.metrics import Counts
from nlpfw_plugins.losses import Loss, LossConfig
from nlpfw_plugins.ner import CONFIDENCE_DIGITS, pad

MainScore = Literal["accuracy", "macro_f1", "micro_f1"]


class TextcatConfig(Config):
    multi_label: bool = Field(default=False, description="several classes per text (sigmoids) instead of one (softmax)")
    threshold: float = Field(default=0.5, gt=0, lt=1, description="multi-label: a class is predicted from this probability")
    main_score: MainScore | None = Field(
        default=None,
        description="the score the best epoch and early stopping go by (default: accuracy, or macro_f1 for multi-label)",
    )


@dataclass
class Classes:
    """A prediction: the predicted classes (one for single-label) and every class's probability."""

    labels: list[str]
    scores: dict[str, float]


class TextcatTask(Task):
    """Text classification, single-label or multi-label."""

    config_model = TextcatConfig
    config: TextcatConfig
    label_kind = "class"

    def __init__(self, config: TextcatConfig, labels: Sequence[str]):
        super().__init__(config, labels)
        if not self.labels:
            raise ValueError("textcat.v1 needs at least one class; the dataset gave none")
        self._index = {label: i for i, label in enumerate(self.labels)}

    @property
    def target(self) -> str:
        return "classes" if self.config.multi_label else "class"

    def targets(self) -> tuple[str, ...]:
        return (self.target,)

    def target_labels(self, target: str) -> list[str]:
        return list(self.labels)

    def encode(self, example: Example, encoder: Encoder) -> Encoded:
        encoded = Encoded(columns={"input_ids": input_ids(encoder, example.text)})
        if example.gold is not None:
            gold = list(example.gold)
            unknown = [label for label in gold if label not in self._index]
            if unknown:
                raise ValueError(f"classes {unknown} are not among the task's {self.labels}")
            if self.config.multi_label:
                row = np.zeros(len(self.labels), dtype=np.float32)
                row[[self._index[label] for label in gold]] = 1.0
                encoded.values["classes"] = row
            else:
                if len(gold) != 1:
                    raise ValueError(f"a single-label text has {len(gold)} classes ({gold}); set task.multi_label = true")
                encoded.values["class"] = np.asarray(self._index[gold[0]], dtype=np.int64)
            encoded.annotations = len(gold)
        return encoded

    def collate(self, windows: Sequence[dict[str, np.ndarray]]) -> dict[str, torch.Tensor]:
        width = max(len(w["input_ids"]) for w in windows)
        lengths = torch.tensor([len(w["input_ids"]) for w in windows])
        batch = {"input_ids": pad([w["input_ids"] for w in windows], width), "mask": torch.arange(width) < lengths.unsqueeze(1)}
        for name in ("class", "classes"):
            if all(name in w for w in windows):
                batch[name] = torch.from_numpy(np.stack([w[name] for w in windows]))
        return batch

    def combine(self, text: str, windows: Sequence[Window], target: str) -> Classes:
        """The windows' class probabilities averaged, weighted by the characters each owns."""
        if not windows:  # an empty text: nothing to classify
            return Classes([], {label: 0.0 for label in self.labels})
        weights = np.asarray([w.owned[1] - w.owned[0] for w in windows], dtype=np.float64)
        probabilities = np.average(np.stack([w.output for w in windows]).astype(np.float64), axis=0, weights=weights)
        scores = {label: round(float(p), 6) for label, p in zip(self.labels, probabilities)}
        if self.config.multi_label:
            chosen = [label for label, p in zip(self.labels, probabilities) if p >= self.config.threshold]
        else:
            chosen = [self.labels[int(np.argmax(probabilities))]]
        return Classes(chosen, scores)

    def score(self, gold: Sequence[Any], predicted: Sequence[Classes]) -> Evaluation:
        counts = {label: Counts() for label in self.labels}
        exact = 0
        for gold_labels, prediction in zip(gold, predicted):
            g, p = set(gold_labels), set(prediction.labels)
            exact += g == p
            for outcome, labels in (("tp", g & p), ("fp", p - g), ("fn", g - p)):
                for label in labels:
                    counts[label].add(outcome)
        total = Counts(*(sum(getattr(c, k) for c in counts.values()) for k in ("tp", "fp", "fn")))
        summary = {
            "accuracy": exact / len(gold) if gold else 0.0,
            "macro_f1": float(np.mean([c.f1 for c in counts.values()])),
            "micro_f1": total.f1,
        }
        per_label = {label: _figures(c) for label, c in counts.items()}
        main = self.config.main_score or ("macro_f1" if self.config.multi_label else "accuracy")
        kind = "multi-label (a class set is accurate only when it is exactly the gold set)" if self.config.multi_label else "single-label"
        return Evaluation(
            main=main, summary=summary, per_label={**per_label, "overall": _figures(total)},
            details={"texts": len(gold), "exact": exact}, label_kind="class",
            note=f"{kind} classification of whole texts; macro-F1 is the mean of the classes' F1, micro-F1 from the summed counts",
        )  # fmt: skip

    def file_dataset(self, path: Path, dataset_type: str, dataset_config: Config) -> tuple[str, dict[str, Any]]:
        """The model's dataset pointed at the file (the default), less the annotation tools'
        `split`, which would cut the file in two: `nlpfw evaluate --data export.json` scores it whole."""
        if getattr(dataset_config, "split", None) is None:
            return super().file_dataset(path, dataset_type, dataset_config)
        options = {k: v for k, v in dataset_config.model_dump().items() if k not in ("split", "seed")}
        options.update(path=str(path.parent.absolute()), train=path.name, dev=path.name)
        return dataset_type, options

    def output(self, text: str, prediction: Classes) -> dict[str, Any]:
        if self.config.multi_label:
            return {"labels": prediction.labels, "scores": prediction.scores}
        return {"label": prediction.labels[0] if prediction.labels else None, "scores": prediction.scores}

    def confidence(self, text: str, prediction: Classes, windows: Sequence[Window], target: str) -> tuple[dict[str, Any], float]:
        """The prediction's record fields and the text's confidence: the top class's probability
        (single-label), or `min(max(p, 1 - p))` over the classes (multi-label); 1 for an empty
        text, which has nothing to doubt. `prediction.scores` already are the windows' averaged
        probabilities, so `windows` (the decoder's `confidence`, the same probabilities) add nothing."""
        fields = self.output(text, prediction)
        if not text:
            return fields, 1.0
        probabilities = np.asarray([prediction.scores[label] for label in self.labels], dtype=np.float64)
        if self.config.multi_label:
            score = float(np.maximum(probabilities, 1.0 - probabilities).min())
        else:
            score = float(probabilities.max())
        return fields, round(score, CONFIDENCE_DIGITS)


def _figures(counts: Counts) -> dict[str, float]:
    return {"precision": counts.precision, "recall": counts.recall, "f1": counts.f1, "support": counts.support}


class ClassifierConfig(LossConfig):
    pooling: Literal["first", "mean", "max", "mean_max"] = Field(
        default="mean",
        description="how a window's character vectors become one: the first's, their mean, their maximum, or both concatenated",
    )


class ClassifierDecoder(Decoder):
    """Pooling over the mask, dropout and a linear layer: softmax over the classes (target
    `class`) or one sigmoid per class (target `classes`). `decode` returns the probabilities
    [batch, classes]. The loss (cross-entropy or focal, label smoothing, class weights) is
    `nlpfw_plugins.losses`', as `softmax.v1`'s."""

    config_model = ClassifierConfig
    config: ClassifierConfig
    targets = ("class", "classes")
    output_name = "scores"

    def __init__(self, config: ClassifierConfig, input_dim: int, labels: Sequence[str], target: str = "class"):
        super().__init__(config, input_dim, labels, target)
        self.criterion = Loss(config, self.labels, multi_label=target == "classes", always_weigh=True)
        self.dropout = nn.Dropout(config.dropout)
        width = 2 * input_dim if config.pooling == "mean_max" else input_dim
        self.classifier = nn.Linear(width, self.num_labels)

    def pool(self, hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """One vector per window [batch, width] from its characters' vectors."""
        mask = mask.bool()
        hidden = hidden.float()
        kind = self.config.pooling
        if kind == "first":
            return hidden[:, 0]
        parts = []
        if kind in ("mean", "mean_max"):
            on = mask.unsqueeze(2).to(hidden.dtype)
            parts.append((hidden * on).sum(dim=1) / on.sum(dim=1).clamp(min=1.0))
        if kind in ("max", "mean_max"):
            parts.append(hidden.masked_fill(~mask.unsqueeze(2), torch.finfo(hidden.dtype).min).amax(dim=1))
        return torch.cat(parts, dim=1) if len(parts) > 1 else parts[0]

    def logits(self, hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.dropout(self.pool(hidden, mask))).float()

    def loss(self, hidden: torch.Tensor, gold: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        logits = self.logits(hidden, mask)
        with torch.autocast(device_type=logits.device.type, enabled=False):
            if self.target == "classes":
                return self.criterion.multi(logits, gold.float())
            return self.criterion.single(logits, gold.long())

    def decode(self, hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        logits = self.logits(hidden, mask)
        return logits.sigmoid() if self.target == "classes" else logits.softmax(dim=-1)

    def confidence(self, hidden: torch.Tensor, mask: torch.Tensor, output: torch.Tensor) -> torch.Tensor:
        """The probability of each choice `decode` made: its output is already the classes'
        probabilities [batch, classes] (the task reads the chosen ones off them)."""
        return output

    def unbatch(self, output: torch.Tensor, lengths: Sequence[int]) -> list[np.ndarray]:
        """Each window's class probabilities [classes]."""
        return list(output.float().cpu().numpy())


@hookimpl
def register_tasks(register):
    register("textcat.v1", TextcatTask)


@hookimpl
def register_decoders(register):
    register("classifier.v1", ClassifierDecoder)
