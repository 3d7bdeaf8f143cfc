"""Span decoders beside tag decoders: gold span tables through encoding, windows and batches;
the decoder's target choosing what its loss reads and how its output becomes spans."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from nlpfw.corpus import encode_split
from nlpfw.errors import NlpfwError
from nlpfw.interfaces import Decoder, DecoderConfig, Encoded, Example, Span, Task, split_rows
from nlpfw.model import Model, build_decoder, predict_split
from nlpfw_plugins.ner import NerConfig, NerTask

from test_windows import CharEncoder

TASK = NerTask(NerConfig(), ["X", "Y"])
NESTED = Example("甲乙乙文丙丁文甲乙", [Span(0, 3, "X"), Span(1, 3, "X"), Span(4, 6, "Y"), Span(7, 9, "X"), Span(0, 6, "Y")])


def test_ner_gives_every_gold_span_nested_ones_included() -> None:
    feature = TASK.encode(NESTED, CharEncoder())
    assert feature.tables["spans"].tolist() == [[0, 3, 0], [0, 6, 1], [1, 3, 0], [4, 6, 1], [7, 9, 0]]
    assert feature.tables["spans"].dtype == np.int32
    assert feature.dropped == 3 and feature.annotations == 5  # the tags hold two of the five: (0, 6) and (7, 9)
    assert "spans" not in TASK.encode(Example("甲乙"), CharEncoder()).tables  # unlabelled: no table
    assert TASK.encode(Example("文文", []), CharEncoder()).tables["spans"].shape == (0, 3)


def test_windows_get_the_gold_spans_inside_them_shifted() -> None:
    examples = [Example("文文", [Span(0, 1, "Y")]), NESTED]
    split = encode_split(examples, lambda e: TASK.encode(e, CharEncoder()), window=5, stride=3)
    windows = [(int(split.window_text[i]), int(split.window_start[i]), split[i]["spans"].tolist()) for i in range(len(split))]
    assert windows == [
        (0, 0, [[0, 1, 1]]),
        (1, 0, [[0, 3, 0], [1, 3, 0]]),  # (0, 6) and (4, 6) cross the cut at 5
        (1, 2, [[2, 4, 1]]),  # (4, 6) lies in [2, 7); (7, 9) does not
        (1, 4, [[0, 2, 1], [3, 5, 0]]),
    ]
    assert split.table_starts["spans"].tolist() == [0, 1, 6]


def test_collate_batches_span_tables_with_their_row() -> None:
    split = encode_split([NESTED, Example("丙丁", [Span(0, 2, "Y")])], lambda e: TASK.encode(e, CharEncoder()), None, 0)
    batch = TASK.collate([split[1], split[0]])
    assert batch["spans"].dtype == torch.int64
    assert batch["spans"].tolist() == [[0, 0, 2, 1], [1, 0, 3, 0], [1, 0, 6, 1], [1, 1, 3, 0], [1, 4, 6, 1], [1, 7, 9, 0]]
    assert batch["tags"].shape == batch["mask"].shape == (2, 9)
    empty = TASK.collate([TASK.encode(Example("文", []), CharEncoder()).as_window()])
    assert empty["spans"].shape == (0, 4)


@pytest.mark.parametrize(
    ("table", "message"),
    [
        (np.zeros((1, 2), dtype=np.int32), r"span table 'spans' must be an integer array of shape \[n, 3\]"),
        (np.asarray([[0, 5, 0]]), "span table 'spans' has rows outside a text of 3 characters or empty"),
        (np.asarray([[2, 2, 0]]), "span table 'spans' has rows outside a text of 3 characters or empty"),
    ],
)
def test_a_malformed_span_table_is_an_error(table: np.ndarray, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        encode_split([Example("文文文")], lambda e: Encoded({"input_ids": np.zeros(3, np.int32)}, {"spans": table}), None, 0)


class OracleSpanDecoder(Decoder):
    """Predicts the spans it was shown at training time: its output reaches the task as rows."""

    targets = ("spans",)

    def __init__(self, config, input_dim, labels, target="spans"):
        super().__init__(config, input_dim, labels, target)
        self.seen: list[torch.Tensor] = []
        self.weight = torch.nn.Parameter(torch.zeros(()))

    def loss(self, hidden, tags, mask):
        self.seen.append(tags)
        return self.weight * 0 + 1.0

    def decode(self, hidden, mask):
        rows = []  # (row, start, end, type): every 甲-run as X, every 丙丁 as Y
        for row, ids in enumerate(hidden.argmax(-1).tolist()):
            length = int(mask[row].sum())
            for start in range(length):
                if ids[start] == 1:
                    end = start + 1
                    while end < length and ids[end] == 2:
                        end += 1
                    rows.append((row, start, end, 0))
                if ids[start] == 3 and start + 1 < length and ids[start + 1] == 4:
                    rows.append((row, start, start + 2, 1))
        return torch.tensor(rows, dtype=torch.long).reshape(-1, 4)

    def unbatch(self, output, lengths):
        return split_rows(output, len(lengths))


def test_a_span_decoder_learns_from_and_predicts_spans_through_windows() -> None:
    examples = [NESTED, Example("文甲乙文文文文丙丁", [Span(1, 3, "X"), Span(7, 9, "Y")])]
    split = encode_split(examples, lambda e: TASK.encode(e, CharEncoder()), window=5, stride=3)
    decoder = OracleSpanDecoder(DecoderConfig(), 5, ["X", "Y"])
    model = Model(CharEncoder(), decoder)
    spans, loss, batches = predict_split(model, TASK, split, batch_size=2, device=torch.device("cpu"))
    assert loss == 1.0 and batches == 3
    assert spans == [[Span(0, 3, "X"), Span(4, 6, "Y"), Span(7, 9, "X")], [Span(1, 3, "X"), Span(7, 9, "Y")]]
    assert [t.shape[1] for t in decoder.seen] == [4, 4, 4]  # the loss got (row, start, end, type) tables
    model.train()
    batch = TASK.collate([split[0], split[1]])
    assert model(batch).item() == 1.0 and torch.equal(decoder.seen[-1], batch["spans"])


def test_window_spans_reads_tags_or_rows() -> None:
    assert TASK.window_spans("甲乙文", np.asarray([1, 2, 0]), "tags") == [Span(0, 2, "X")]
    assert TASK.window_spans("甲乙文", np.asarray([[1, 3, 1], [0, 2, 0]]), "spans") == [Span(0, 2, "X"), Span(1, 3, "Y")]
    assert TASK.target_labels("spans") == ["X", "Y"] == TASK.labels and TASK.target_labels("tags") == TASK.tags


class TagsOnlyTask(Task):
    def targets(self):
        return ("tags",)

    def target_labels(self, target):
        return ["O"]


def test_a_span_decoder_needs_a_task_that_gives_spans(registry, tmp_path) -> None:
    class Section:  # a recipe section as build_decoder reads it
        type = "oracle.v1"
        config = DecoderConfig()

        class component:
            cls = OracleSpanDecoder

    decoder = build_decoder(Section, CharEncoder(), TASK)
    assert decoder.labels == ["X", "Y"] and decoder.num_labels == 2  # the entity types, not the five tags
    assert decoder.target == "spans"
    with pytest.raises(NlpfwError, match=r"^decoder.type: oracle.v1 learns from spans, which task TagsOnlyTask does not give \(it gives tags\)$"):
        build_decoder(Section, CharEncoder(), TagsOnlyTask(None, ["X"]))

    class Either(OracleSpanDecoder):
        targets = ("chars", "tags")  # the first the task gives is chosen

    Section.component.cls = Either
    assert build_decoder(Section, CharEncoder(), TASK).target == "tags"
    assert build_decoder(Section, CharEncoder(), TASK).labels == TASK.tags
