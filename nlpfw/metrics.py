"""Scores every task can use: precision, recall and F1 from true/false positive counts.

Tasks build their own scores from these (the NER plugin counts exact spans per entity type,
the classifier counts per class); the core itself scores nothing.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Counts:
    tp: int = 0
    fp: int = 0
    fn: int = 0

    def add(self, outcome: str) -> None:
        setattr(self, outcome, getattr(self, outcome) + 1)

    @property
    def precision(self) -> float:
        return self.tp / (self.tp + self.fp) if self.tp + self.fp else 0.0

    @property
    def recall(self) -> float:
        return self.tp / (self.tp + self.fn) if self.tp + self.fn else 0.0

    @property
    def f1(self) -> float:
        p, r = self.precision, self.recall
        return 2 * p * r / (p + r) if p + r else 0.0

    @property
    def support(self) -> int:
        return self.tp + self.fn

    def to_dict(self) -> dict[str, float]:
        return {
            "precision": self.precision, "recall": self.recall, "f1": self.f1,
            "support": self.support, "tp": self.tp, "fp": self.fp, "fn": self.fn,
        }  # fmt: skip
