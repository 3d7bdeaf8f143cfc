"""Entity-level scores: exact matching of spans (type, start, end).

A predicted entity counts only if a gold entity has the same type and the same start and
end. With tags read strictly (`nlpfw_plugins.tags`, mode `strict`) this is what seqeval computes
in strict IOB2 mode; with tags read as conlleval does, it is seqeval's default mode.
`seqeval_scores` is kept beside it so the two can be checked against each other.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from nlpfw.interfaces import Span
from nlpfw.metrics import Counts


@dataclass
class EntityScores:
    overall: Counts = field(default_factory=Counts)
    by_type: dict[str, Counts] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "overall": self.overall.to_dict(),
            "by_type": {label: c.to_dict() for label, c in self.by_type.items()},
        }


def score_spans(
    gold: Sequence[Iterable[Span]], pred: Sequence[Iterable[Span]], types: Iterable[str] = ()
) -> EntityScores:
    """Micro-averaged and per-type strict span scores over parallel lists of documents."""
    if len(gold) != len(pred):
        raise ValueError(f"{len(gold)} gold documents but {len(pred)} predicted")
    scores = EntityScores(by_type={t: Counts() for t in types})
    for gold_spans, pred_spans in zip(gold, pred):
        g, p = set(gold_spans), set(pred_spans)
        for outcome, spans in (("tp", g & p), ("fp", p - g), ("fn", g - p)):
            for span in spans:
                scores.overall.add(outcome)
                scores.by_type.setdefault(span.label, Counts()).add(outcome)
    return scores


def seqeval_scores(
    gold_tags: list[list[str]], pred_tags: list[list[str]], mode: str = "strict", scheme: str = "BIO"
) -> dict[str, dict[str, float]]:
    """seqeval's scores, {'overall'|type: {precision, recall, f1, support}}: its strict mode
    (IOB2 or IOBES) for `mode="strict"`, its default mode for `mode="conlleval"`."""
    from seqeval.metrics import classification_report
    from seqeval.scheme import IOB2, IOBES

    options: dict[str, Any] = {"mode": "strict", "scheme": IOBES if scheme == "BIOES" else IOB2} if mode == "strict" else {}
    report = classification_report(gold_tags, pred_tags, output_dict=True, zero_division=0, **options)
    out = {k: {m: v[m.replace("f1", "f1-score")] for m in ("precision", "recall", "f1", "support")} for k, v in report.items()}
    out["overall"] = out.pop("micro avg")
    return out
