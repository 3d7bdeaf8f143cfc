"""SoftLexicon features of bilstm.v1: dictionary matching against a brute-force search, the word
sets of each character, the pooled vectors, pretrained rows, and saving."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
import torch

from nlpfw.errors import DataError, NlpfwError
from nlpfw_plugins.bilstm import BiLstmConfig, BiLstmEncoder
from nlpfw_plugins.lexicon import Lexicon, jieba_dictionary, read_dictionary


def brute_matches(text: str, words: list[str]) -> list[tuple[int, int, int]]:
    return sorted(
        (start, start + len(word), index)
        for index, word in enumerate(words, 1)
        for start in range(len(text) - len(word) + 1)
        if word and text[start : start + len(word)] == word
    )


def brute_sets(text: str, words: list[str], per_set: int, rank: np.ndarray) -> list[list[list[int]]]:
    """Each character's B/M/E/S word ids by the definitions (Ma et al. 2020), best `per_set`."""
    found = [[[], [], [], []] for _ in text]
    for start, end, index in brute_matches(text, words):
        for i in range(start, end):
            kind = 3 if end - start == 1 else 0 if i == start else 2 if i == end - 1 else 1
            found[i][kind].append(index)
    return [[sorted(ids, key=lambda w: (rank[w], w))[:per_set] for ids in groups] for groups in found]


def test_matching_equals_a_brute_force_search_on_random_texts_and_dictionaries():
    generator = random.Random(19)
    for case in range(300):
        alphabet = "北京大学生中国人"[: generator.randint(1, 8)]
        words = sorted({"".join(generator.choices(alphabet, k=generator.randint(1, 5))) for _ in range(generator.randint(0, 25))})
        text = "".join(generator.choices(alphabet + "，x", k=generator.randint(0, 40)))
        lexicon = Lexicon(words)
        assert sorted(lexicon.matches(text)) == brute_matches(text, words), (case, text, words)
        per_set = generator.randint(1, 4)
        rank = np.asarray([0, *generator.sample(range(len(words)), len(words))])  # word id -> rank (0: none)
        sets = lexicon.sets(text, per_set, rank)
        assert sets.shape == (len(text), 4, per_set)
        expected = brute_sets(text, words, per_set, rank)
        for i in range(len(text)):
            for kind in range(4):
                got = [w for w in sets[i, kind].tolist() if w]
                assert sorted(got, key=lambda w: (rank[w], w)) == expected[i][kind], (case, text, words, i, kind)


def test_the_word_sets_of_a_sentence():
    words = ["中国", "中国人", "国人", "人", "北京", "北京大学", "大学", "学生", "大学生"]
    text = "北京大学生是中国人"
    lexicon = Lexicon(words)
    rank = np.arange(len(words) + 1)
    sets = lexicon.sets(text, 4, rank)

    def named(i: int, kind: int) -> list[str]:
        return sorted(words[w - 1] for w in sets[i, kind].tolist() if w)

    assert [named(2, k) for k in range(4)] == [["大学", "大学生"], ["北京大学"], [], []]  # 大
    assert [named(3, k) for k in range(4)] == [["学生"], ["大学生"], ["北京大学", "大学"], []]  # 学
    assert [named(8, k) for k in range(4)] == [[], [], ["中国人", "国人"], ["人"]]  # 人
    assert [named(5, k) for k in range(4)] == [[], [], [], []]  # 是


def write(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_dictionary_files_jieba_form_and_word_lists(tmp_path):
    jieba_form = write(tmp_path / "dict.txt", ["北京 3000 ns", "北京大学 200 nt", "", "# a note", "ＡＢＣ 5"])
    assert read_dictionary(jieba_form, str.lower) == {"北京": 3000.0, "北京大学": 200.0, "ａｂｃ": 5.0}
    plain = write(tmp_path / "words.txt", ["上海", "上海", "浦东 2.5"])
    assert read_dictionary(plain) == {"上海": 2.0, "浦东": 2.5}
    bad = write(tmp_path / "bad.txt", ["北京 3", "上海 many"])
    with pytest.raises(DataError, match=r"bad.txt:2: 'many' after '上海' is not a frequency"):
        read_dictionary(bad)
    negative = write(tmp_path / "negative.txt", ["北京 -3"])
    with pytest.raises(DataError, match=r"negative.txt:1: the frequency of '北京' must be a positive number, not -3"):
        read_dictionary(negative)
    (tmp_path / "latin1.txt").write_bytes("北京".encode("gb18030"))
    with pytest.raises(DataError, match=r"latin1.txt: not UTF-8 text"):
        read_dictionary(tmp_path / "latin1.txt")
    with pytest.raises(DataError, match=r"empty.txt: no words in the dictionary"):
        read_dictionary(write(tmp_path / "empty.txt", ["# nothing"]))
    assert len(read_dictionary(jieba_dictionary())) > 300_000


TRAIN = ["张三在北京大学读书", "李四去上海", "ＡＢＣ公司在北京"]


def lexicon_encoder(tmp_path: Path, **options) -> BiLstmEncoder:
    dictionary = write(tmp_path / "words.txt", ["北京 100", "北京大学 10", "大学 50", "上海 80", "abc公司 5", "南京 30", "读书 1"])
    config = BiLstmConfig(**{"embedding_size": 4, "hidden_size": 6, "lexicon": str(dictionary), "lexicon_size": 3, **options})
    torch.manual_seed(0)
    encoder = BiLstmEncoder.from_config(config, tmp_path)
    encoder.fit_texts(TRAIN)
    return encoder.eval()


def test_lexicon_rows_one_per_character_with_the_words_of_the_training_texts(tmp_path):
    encoder = lexicon_encoder(tmp_path, lexicon_per_set=2)
    assert encoder.words == ["abc公司", "上海", "北京", "北京大学", "大学", "读书"]  # 南京 is not in the training texts
    text = "在北京大学 ＡＢＣ公司"
    rows = encoder.char_ids(text)
    assert rows.shape == (len(text), 1 + 4 * 2)
    assert rows[:, 0].tolist() == [encoder._id(c) for c in text]
    word = {w: i for i, w in enumerate(encoder.words, 1)}
    assert rows[1].tolist()[1:] == [word["北京"], word["北京大学"], 0, 0, 0, 0, 0, 0]  # 北: B = 北京, 北京大学
    assert rows[2].tolist()[1:] == [0, 0, word["北京大学"], 0, word["北京"], 0, 0, 0]  # 京: M, E
    assert rows[3].tolist()[1:] == [word["大学"], 0, word["北京大学"], 0, 0, 0, 0, 0]  # 大: B, M
    assert rows[6].tolist()[1:] == [word["abc公司"], 0, 0, 0, 0, 0, 0, 0]  # Ａ folds to a
    assert rows[0].tolist()[1:] == [0] * 8
    assert encoder.char_ids("").shape == (0, 9)


def test_a_full_set_keeps_its_most_frequent_words(tmp_path):
    encoder = lexicon_encoder(tmp_path, lexicon_per_set=1)
    word = {w: i for i, w in enumerate(encoder.words, 1)}
    assert encoder.char_ids("北京大学")[0].tolist()[1:] == [word["北京"], 0, 0, 0]  # 北京 (100) over 北京大学 (10)


def test_soft_lexicon_pools_each_set_by_frequency(tmp_path):
    encoder = lexicon_encoder(tmp_path, lexicon_weights="frequency")
    word = {w: i for i, w in enumerate(encoder.words, 1)}
    rows = torch.from_numpy(encoder.char_ids("北京大学")).long().unsqueeze(0)
    pooled = encoder.soft_lexicon(rows[..., 1:])[0].detach()
    vector = encoder.word_embedding.weight.detach()
    # 北: B = {北京 100, 北京大学 10}; Z = 110, each set scaled by 4 / Z
    expected = 4 * (100 * vector[word["北京"]] + 10 * vector[word["北京大学"]]) / 110
    torch.testing.assert_close(pooled[0, :3], expected)
    torch.testing.assert_close(pooled[0, 3:], torch.zeros(9))
    # 学: E = {北京大学 10, 大学 50}
    torch.testing.assert_close(pooled[3, 6:9], 4 * (10 * vector[word["北京大学"]] + 50 * vector[word["大学"]]) / 60)
    uniform = lexicon_encoder(tmp_path, lexicon_weights="uniform")
    pooled = uniform.soft_lexicon(rows[..., 1:])[0].detach()
    torch.testing.assert_close(pooled[0, :3], 2 * (uniform.word_embedding.weight[word["北京"]] + uniform.word_embedding.weight[word["北京大学"]]).detach())


def test_pretrained_word_and_bigram_vectors_fill_exactly_their_rows(tmp_path):
    words = write(tmp_path / "words.vec", ["3 3", "南京 1 2 3", "北京 4 5 6", "不在词典 7 8 9"])
    bigrams = write(tmp_path / "bigrams.vec", ["北京 0.5 0.25", "京大 -1 1", "天津 3 3", "北 9 9"])
    encoder = lexicon_encoder(tmp_path, lexicon_vectors=str(words), bigram_size=2, bigram_vectors=str(bigrams))
    assert "南京" in encoder.words and "不在词典" not in encoder.words  # a vector joins only a dictionary word
    table = encoder.word_embedding.weight
    assert table[encoder.words.index("南京") + 1].tolist() == [1, 2, 3]
    assert table[encoder.words.index("北京") + 1].tolist() == [4, 5, 6]
    assert encoder.char_ids("去南京")[1, 1] == encoder.words.index("南京") + 1  # unseen in training, matched for its vector
    vocabulary = len(encoder.chars)
    ids = {c: encoder.chars.index(c) for c in "北京大"}
    for pair, vector in (("北京", [0.5, 0.25]), ("京大", [-1, 1])):
        key = ids[pair[0]] * vocabulary + ids[pair[1]]
        assert encoder.bigram_embedding.weight[encoder.bigrams.index(key) + 1].tolist() == vector
    assert all(key // vocabulary > 1 for key in encoder.bigrams)  # 天津: unknown characters, no bigram


def test_lexicon_save_and_from_saved_give_the_same_outputs(tmp_path):
    encoder = lexicon_encoder(tmp_path, bigram_size=2)
    encoder.save(tmp_path / "saved")
    loaded = BiLstmEncoder.from_saved(encoder.config, tmp_path / "saved").eval()
    loaded.load_state_dict(encoder.state_dict())
    text = "张三在北京大学和上海"
    assert np.array_equal(loaded.char_ids(text), encoder.char_ids(text))
    rows = torch.from_numpy(encoder.char_ids(text)).long().unsqueeze(0)
    mask = torch.ones(rows.shape[:2], dtype=torch.bool)
    torch.testing.assert_close(loaded(rows, mask), encoder(rows, mask), rtol=0, atol=0)
    assert loaded.fingerprint() == encoder.fingerprint()
    assert lexicon_encoder(tmp_path, lexicon_per_set=2).fingerprint() != encoder.fingerprint()


def test_lexicon_options_are_checked(tmp_path):
    with pytest.raises(ValueError, match="lexicon_vectors needs lexicon"):
        BiLstmConfig(lexicon_vectors="words.vec")
    with pytest.raises(ValueError, match="bigram_vectors needs bigram_size"):
        BiLstmConfig(bigram_vectors="bigrams.vec")
    with pytest.raises(DataError, match=r"encoder.lexicon: file not found: .*missing.txt"):
        BiLstmEncoder.from_config(BiLstmConfig(lexicon="missing.txt"), tmp_path)
    encoder = lexicon_encoder(tmp_path)
    with pytest.raises(NlpfwError, match=r"with a lexicon, input_ids are \[batch, chars, 1 \+ 4 \* lexicon_per_set\] rows"):
        encoder(torch.ones(1, 3, dtype=torch.long), torch.ones(1, 3, dtype=torch.bool))


def test_frozen_lexicon_vectors_leave_the_character_vectors_trainable(tmp_path):
    encoder = lexicon_encoder(tmp_path, freeze_lexicon_vectors=True)
    assert not encoder.word_embedding.weight.requires_grad and encoder.embedding.weight.requires_grad
    assert lexicon_encoder(tmp_path).word_embedding.weight.requires_grad


def test_rows_of_ids_are_windowed_padded_and_keep_one_shape():
    from nlpfw.corpus import encode_split
    from nlpfw.interfaces import Encoded, Example
    from nlpfw_plugins.ner import pad

    def encode(example, k=3):
        return Encoded(columns={"input_ids": np.arange(len(example.text) * k).reshape(-1, k)})

    split = encode_split([Example("abcdef"), Example("gh")], encode, 4, 2)
    assert split[1]["input_ids"].tolist() == np.arange(18).reshape(6, 3)[2:6].tolist()  # the second window of abcdef
    batch = pad([split[0]["input_ids"], split[2]["input_ids"]], 4)
    assert batch.shape == (2, 4, 3) and batch[1, 2:].tolist() == [[0, 0, 0], [0, 0, 0]]
    with pytest.raises(ValueError, match=r"column 'input_ids' has rows of shape \(2,\) here, \(3,\) before"):
        encode_split([Example("abc"), Example("de")], lambda e: encode(e, 3 if e.text == "abc" else 2), None, 0)
