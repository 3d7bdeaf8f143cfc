"""bilstm.v1: the vocabulary from the training texts, unknowns, pretrained vectors, saving, batching."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import torch

from nlpfw.errors import DataError, NlpfwError
from nlpfw_plugins.bilstm import PAD, UNK, BiLstmConfig, BiLstmEncoder

TRAIN = ["张三在北京工作", "李四在上海的ABC公司", "我用iPhone6s 在CSOL里"]


def fitted(texts=TRAIN, **options) -> BiLstmEncoder:
    torch.manual_seed(0)
    encoder = BiLstmEncoder.from_config(BiLstmConfig(**{"embedding_size": 8, "hidden_size": 6, **options}), Path("."))
    encoder.fit_texts(texts)
    return encoder.eval()


def test_vocabulary_is_the_training_characters_and_others_are_unknown():
    encoder = fitted()
    assert encoder.chars[:2] == [PAD, UNK]
    assert set(encoder.chars[2:]) == {c.lower() for text in TRAIN for c in text}
    ids = encoder.char_ids("张三去广州")  # 去 and 广州 never occur in training
    assert ids.tolist()[:2] == [encoder.chars.index("张"), encoder.chars.index("三")]
    assert ids.tolist()[2:] == [1, 1, 1]
    text = "北京😀 ABC\t"  # one id per character, whatever the character
    assert len(encoder.char_ids(text)) == len(text)


def test_lookup_folds_width_case_and_whitespace():
    encoder = fitted()
    folded = encoder.char_ids("ＣｓｏＬ\u3000\t").tolist()
    assert folded == encoder.char_ids("csol  ").tolist()
    assert 1 not in folded  # every one of them was seen in training (as C, S, O, L and a space)


def test_min_freq_leaves_rare_characters_unknown():
    encoder = fitted(min_freq=2)
    assert encoder.chars[2:] == ["c", "o", "s", "在"]  # each seen at least twice (folded: C/c, S/s, O/o)
    assert encoder.char_ids("在张S").tolist() == [5, 1, 4]


def test_char_ids_before_the_vocabulary_is_an_error():
    encoder = BiLstmEncoder.from_config(BiLstmConfig(), Path("."))
    with pytest.raises(NlpfwError, match="the vocabulary is not built yet"):
        encoder.char_ids("张三")
    assert encoder.fingerprint() is None  # nothing to cache under


def test_fingerprint_follows_the_vocabulary():
    assert fitted().fingerprint() == fitted().fingerprint()
    assert fitted().fingerprint() != fitted(TRAIN[:2]).fingerprint()


def test_save_and_from_saved_rebuild_the_same_encoder(tmp_path):
    encoder = fitted()
    encoder.save(tmp_path)
    loaded = BiLstmEncoder.from_saved(encoder.config, tmp_path).eval()
    loaded.load_state_dict(encoder.state_dict())
    text = "张三在CSOL里，去广州"
    assert loaded.char_ids(text).tolist() == encoder.char_ids(text).tolist()
    assert loaded.fingerprint() == encoder.fingerprint()
    ids = torch.from_numpy(encoder.char_ids(text)).long().unsqueeze(0)
    mask = torch.ones_like(ids, dtype=torch.bool)
    torch.testing.assert_close(loaded(ids, mask), encoder(ids, mask), rtol=0, atol=0)


def test_output_of_a_text_does_not_depend_on_its_batch():
    encoder = fitted(num_layers=2)
    short, long = encoder.char_ids("张三"), encoder.char_ids("李四在上海的ABC公司")
    alone = encoder(torch.from_numpy(short).long().unsqueeze(0), torch.ones(1, 2, dtype=torch.bool))
    batch = torch.zeros(2, len(long), dtype=torch.long)
    batch[0, :2], batch[1] = torch.from_numpy(short), torch.from_numpy(long)
    mask = torch.arange(len(long)) < torch.tensor([[2], [len(long)]])
    together = encoder(batch, mask)
    assert together.shape == (2, len(long), 12)  # 2 x hidden_size
    torch.testing.assert_close(together[0, :2], alone[0], rtol=1e-5, atol=1e-6)


def test_unk_dropout_replaces_training_characters_only_in_training():
    encoder = fitted(unk_dropout=0.5, dropout=0.0)
    ids = torch.from_numpy(encoder.char_ids(TRAIN[1])).long().unsqueeze(0)
    mask = torch.ones_like(ids, dtype=torch.bool)
    assert torch.equal(encoder(ids, mask), encoder(ids, mask))  # eval: no dropout at all
    encoder.train()
    torch.manual_seed(1)
    assert not torch.equal(encoder(ids, mask), encoder(ids, mask))


def write_vectors(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_pretrained_vectors_initialise_the_embedding_and_join_the_vocabulary(tmp_path):
    vectors = write_vectors(tmp_path / "chars.vec", [
        "4 3", "张 1 2 3", "广 0.5 -0.5 0", "Ｃ 7 8 9", "北京 4 4 4",
    ])  # fmt: skip
    encoder = fitted(vectors=str(vectors), embedding_size=3)
    weight = encoder.embedding.weight
    assert weight[encoder.chars.index("张")].tolist() == [1, 2, 3]
    assert weight[encoder.chars.index("广")].tolist() == [0.5, -0.5, 0]  # unseen in training, kept for its vector
    assert weight[encoder.chars.index("c")].tolist() == [7, 8, 9]  # folded like the texts
    assert "北京" not in encoder.chars  # a word, not a character
    assert encoder.char_ids("广").tolist() != [1]
    assert weight.requires_grad
    frozen = fitted(vectors=str(vectors), embedding_size=3, freeze_vectors=True)
    assert not frozen.embedding.weight.requires_grad


def test_bad_vectors_files_name_the_line(tmp_path):
    short = write_vectors(tmp_path / "short.vec", ["张 1 2 3", "三 1 2"])
    with pytest.raises(DataError, match=r"short.vec:2: 2 values for '三'; encoder.embedding_size is 3"):
        fitted(vectors=str(short), embedding_size=3)
    text = write_vectors(tmp_path / "text.vec", ["张 1 x 3"])
    with pytest.raises(DataError, match=r"text.vec:1: the values for '张' are not all numbers"):
        fitted(vectors=str(text), embedding_size=3)
    with pytest.raises(DataError, match=r"encoder.vectors: file not found: .*missing.vec"):
        BiLstmEncoder.from_config(BiLstmConfig(vectors=str(tmp_path / "missing.vec")), tmp_path)


def test_bigrams_of_the_training_texts_have_their_own_vectors(tmp_path):
    encoder = fitted(["北京北京上海", "北京", "南京"], bigram_size=4, bigram_min_freq=2)
    ids = {c: encoder.chars.index(c) for c in "北京上海"}
    vocabulary = len(encoder.chars)
    # 北京 three times, 京[PAD] (a text ending in 京) twice; every other bigram once
    assert encoder.bigrams == sorted([ids["北"] * vocabulary + ids["京"], ids["京"] * vocabulary])
    table = encoder.bigram_embedding.weight
    assert table.shape == (3, 4)  # the two kept, and one for all the others
    ids = torch.from_numpy(encoder.char_ids("北京海北")).long().unsqueeze(0)
    mask = torch.ones_like(ids, dtype=torch.bool)
    before = encoder(ids, mask)
    with torch.no_grad():
        table[0] += 1.0  # the shared "unknown bigram" vector: 京海, 海北 and 北[PAD] use it
    after = encoder(ids, mask)
    assert not torch.equal(before, after)
    encoder.save(tmp_path)
    loaded = BiLstmEncoder.from_saved(encoder.config, tmp_path).eval()
    assert loaded.bigrams == encoder.bigrams
    loaded.load_state_dict(encoder.state_dict())
    torch.testing.assert_close(loaded(ids, mask), after, rtol=0, atol=0)


def test_the_export_path_gives_the_packed_lstms_output_and_searchsorted():
    """Exporting to ONNX runs the BiLSTM unpacked and the bigram lookup as a fixed binary search:
    both must give exactly what the training path gives."""
    from nlpfw_plugins.bilstm import binary_search, unpacked_bilstm

    torch.manual_seed(0)
    lstm = torch.nn.LSTM(6, 5, num_layers=2, batch_first=True, bidirectional=True).eval()
    x = torch.randn(4, 9, 6)
    mask = torch.arange(9) < torch.tensor([9, 1, 5, 8]).unsqueeze(1)
    packed = torch.nn.utils.rnn.pack_padded_sequence(x, mask.sum(1), batch_first=True, enforce_sorted=False)
    expected, _ = torch.nn.utils.rnn.pad_packed_sequence(lstm(packed)[0], batch_first=True, total_length=9)
    with torch.no_grad():
        torch.testing.assert_close(unpacked_bilstm(lstm, x, mask), expected, atol=1e-6, rtol=1e-5)
    generator = torch.Generator().manual_seed(1)
    for size in (0, 1, 2, 3, 7, 1000, 4097):
        for _ in range(10):
            table = torch.randint(0, 50_000, (size,), generator=generator).unique()
            keys = torch.randint(-5, 50_010, (4, 33), generator=generator)
            keys[0, : min(size, 33)] = table[:33]  # exact hits too
            assert torch.equal(binary_search(table, keys), torch.searchsorted(table, keys)), size


class _Tiny(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.lstm = torch.nn.LSTM(3, 4, batch_first=True, bidirectional=True)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        from nlpfw_plugins.bilstm import unpacked_bilstm

        return unpacked_bilstm(self.lstm, x, mask)


def test_the_bilstm_exports_with_a_dynamic_length_also_the_second_time_in_a_process(tmp_path):
    """torch.export decomposes `aten.lstm` into one step per character of the example, and
    torch.onnx's while-loop replacement for it is skipped once `aten.lstm` has been traced in
    the process; torch.onnx then fixed `chars` to the example's length without a word (issue 19:
    the lexicon test's export failed in CI after earlier exports). The export path's own scan
    keeps the length dynamic every time, and `_check_dynamic` refuses a graph that has it fixed."""
    pytest.importorskip("onnxruntime")
    import onnxruntime

    from nlpfw.export import _check_dynamic

    torch.manual_seed(0)
    model = _Tiny().eval().requires_grad_(False)
    example = (torch.randn(2, 5, 3), torch.arange(5) < torch.tensor([5, 3]).unsqueeze(1))
    batch, chars = torch.export.Dim("batch"), torch.export.Dim("chars")
    dynamic = {"x": {0: batch, 1: chars}, "mask": {0: batch, 1: chars}}
    for attempt in range(2):
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch.onnx's notes on axis names and pytree
            program = torch.onnx.export(
                model, example, input_names=["x", "mask"], dynamic_shapes=dynamic, dynamo=True, verbose=False
            )
        _check_dynamic(program, tmp_path)
        program.save(str(tmp_path / f"{attempt}.onnx"))
        session = onnxruntime.InferenceSession(str(tmp_path / f"{attempt}.onnx"), providers=["CPUExecutionProvider"])
        for lengths in ([7, 2, 6], [1], [12, 12]):
            x = torch.randn(len(lengths), max(lengths), 3)
            mask = torch.arange(max(lengths)) < torch.tensor(lengths).unsqueeze(1)
            (got,) = session.run(None, {"x": x.numpy(), "mask": mask.numpy()})
            with torch.no_grad():
                torch.testing.assert_close(torch.from_numpy(got), model(x, mask), atol=1e-5, rtol=1e-4)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fixed = torch.onnx.export(model, example, input_names=["x", "mask"], dynamo=True, verbose=False)
    with pytest.raises(NlpfwError, match=r"the exported ONNX graph's x has batch = 2, chars = 5 instead of a dynamic size"):
        _check_dynamic(fixed, tmp_path)
