"""ids_to_text against transformers' real Wav2Vec2CTCTokenizer.decode on hand id sequences."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ssl_audio.models.ctc import ids_to_text

transformers = pytest.importorskip("transformers")

VOCAB = ("<pad>", "<s>", "</s>", "<unk>", "|", "A", "B", "C", ".", "'")  # finetune/vocab.py's layout
PAD, BOS, EOS, UNK, BAR, A, B, C, DOT, APOS = range(len(VOCAB))

CASES = [
    [A, A, PAD, A, B],  # repeats grouped; the blank splits a real double letter
    [BAR, A, BAR, PAD, BAR, B, BAR],  # "| <pad> |": two delimiters survive the grouping, two spaces
    [BAR, BAR, A, BAR, BAR, B, BAR, BAR],  # repeated delimiters grouped; edges stripped
    [A, UNK, UNK, B],  # <unk> kept as text (skip_special_tokens is False by default), grouped
    [A, BAR, UNK, BAR, B],
    [A, BOS, EOS, B],  # the other specials too
    [UNK, A, UNK],
    [PAD, PAD],
    [BAR],
    [],
    [A, PAD, PAD, A],
    [A, BAR, DOT, BAR, APOS, B],  # no clean-up of the space before punctuation
    [C, C, C, PAD, PAD, C, BAR, PAD, A],
]


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory: pytest.TempPathFactory):  # noqa: ANN201 - transformers' class
    folder: Path = tmp_path_factory.mktemp("tok")
    (folder / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(VOCAB)}), encoding="utf-8")
    return transformers.Wav2Vec2CTCTokenizer(str(folder / "vocab.json"))


@pytest.mark.parametrize("ids", CASES)
def test_grouped_decoding_equals_the_tokenizer(tokenizer, ids: list[int]) -> None:  # noqa: ANN001
    assert ids_to_text(ids, VOCAB) == tokenizer.decode(ids)


@pytest.mark.parametrize("ids", CASES)
def test_ungrouped_decoding_equals_the_tokenizer(tokenizer, ids: list[int]) -> None:  # noqa: ANN001
    assert ids_to_text(ids, VOCAB, group_tokens=False) == tokenizer.decode(ids, group_tokens=False)


def test_hand_values_and_a_bad_id() -> None:
    # independent of transformers: the behaviour spelled out
    assert ids_to_text([BAR, A, BAR, PAD, BAR, B, BAR], VOCAB) == "A  B"
    assert ids_to_text([A, UNK, UNK, B], VOCAB) == "A<unk>B"
    assert ids_to_text([A, A, B], VOCAB, group_tokens=False) == "AAB"
    with pytest.raises(ValueError, match="token id 10 is outside the vocabulary of 10"):
        ids_to_text([A, 10], VOCAB)
