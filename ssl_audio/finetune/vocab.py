"""Vocabularies of the fine-tuning heads, laid out as transformers' Wav2Vec2CTCTokenizer does (a later export writes
vocab.json directly): id 0 "<pad>" (the CTC blank), 1 "<s>", 2 "</s>", 3 "<unk>", then "|" (the word delimiter,
a space in the text) and the characters seen in the transcripts, sorted.

A vocabulary file: one token per line in id order (id 0 must be "<pad>"), or a JSON object {token: id}
(transformers' vocab.json).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

from ssl_audio.models.ctc import BOS, EOS, PAD, UNK, WORD_DELIMITER

SPECIAL = (PAD, BOS, EOS, UNK)


def normalise(text: str) -> str:
    """Upper case, runs of white space as one word delimiter (fairseq's `ltr` letters, wav2vec 2.0's vocab)."""
    return WORD_DELIMITER.join(text.upper().split())


def character_vocab(transcripts: Iterable[str]) -> tuple[str, ...]:
    chars = sorted({c for text in transcripts for c in normalise(text)} - {WORD_DELIMITER})
    return (*SPECIAL, WORD_DELIMITER, *chars)


def read_vocab(path: str | Path) -> tuple[str, ...]:
    """A vocabulary file (see the module docstring) -> tokens in id order."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise ValueError(f"{path}: cannot read the vocabulary ({getattr(err, 'strerror', None) or err})") from None
    if path.suffix == ".json":
        try:
            table = json.loads(text)
        except json.JSONDecodeError as err:
            raise ValueError(f"{path}:{err.lineno}: not JSON ({err.msg})") from None
        if not isinstance(table, dict) or sorted(table.values()) != list(range(len(table))):
            raise ValueError(f"{path}: expected {{token: id}} with ids 0..n-1, each once")
        tokens = tuple(sorted(table, key=table.__getitem__))
    else:
        tokens = tuple(line for line in text.splitlines() if line)
    if not tokens or tokens[0] != PAD:
        raise ValueError(f"{path}: id 0 must be {PAD!r} (the CTC blank), got {tokens[:1]}")
    if len(set(tokens)) != len(tokens):
        raise ValueError(f"{path}: repeated tokens")
    return tokens


def encode(text: str, vocab: tuple[str, ...], *, where: str) -> list[int]:
    """Characters of the normalised text -> ids; a character outside the vocabulary is an error naming `where`."""
    index = {token: i for i, token in enumerate(vocab)}
    ids = []
    for c in normalise(text):
        if c not in index:
            raise ValueError(f"{where}: character {c!r} is not in the vocabulary")
        ids.append(index[c])
    return ids
