"""Vocabularies as transformers' Wav2Vec2CTCTokenizer lays them out, targets aligned with the manifest by file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from finetune_helpers import write_corpus

from ssl_audio.data.collate import Batch
from ssl_audio.data.manifest import load_split
from ssl_audio.finetune.targets import TargetsConfig, load_targets, target_vocab, write_split_manifests
from ssl_audio.finetune.vocab import character_vocab, encode, read_vocab


def test_character_vocab_layout() -> None:
    vocab = character_vocab(["the cat", "a  dog"])
    assert vocab == ("<pad>", "<s>", "</s>", "<unk>", "|", "A", "C", "D", "E", "G", "H", "O", "T")
    assert encode("a dog", vocab, where="x") == [5, 4, 7, 11, 9]
    with pytest.raises(ValueError, match=r"t.tsv:3: character 'Z'"):
        encode("zoo", vocab, where="t.tsv:3")


def test_vocab_json_as_transformers_writes_it(tmp_path: Path) -> None:
    path = tmp_path / "vocab.json"
    path.write_text(json.dumps({"<pad>": 0, "|": 2, "A": 1}))
    assert read_vocab(path) == ("<pad>", "A", "|")
    path.write_text(json.dumps({"A": 0, "<pad>": 1}))
    with pytest.raises(ValueError, match="id 0 must be '<pad>'"):
        read_vocab(path)


def test_targets_follow_the_manifest_rows(tmp_path: Path) -> None:
    corpus = write_corpus(tmp_path / "c", train=4, valid=1)
    cfg = TargetsConfig(train=str(corpus / "train.tsv"), valid=str(corpus / "valid.tsv"))
    write_split_manifests(cfg, corpus / "manifest")
    manifest = load_split(corpus / "manifest", "train")
    vocab = target_vocab(cfg)
    targets = load_targets(cfg, cfg.train, manifest, vocab)
    table = (corpus / "train.tsv").read_text().splitlines()[1:]
    by_path = {line.split("\t")[0]: line.split("\t")[1] for line in table}
    for i, path in enumerate(manifest.paths):
        assert targets.rows[i] == tuple(encode(by_path[path], vocab, where=""))
    batch = Batch(
        waves=torch.zeros(2, 10), lengths=torch.tensor([10, 10]), indices=torch.tensor([2, 1]),
        offsets=torch.zeros(2, dtype=torch.long),
    )  # fmt: skip
    labels = targets.attach(batch).labels[0]
    assert labels[0, : len(targets.rows[2])].tolist() == list(targets.rows[2])
    assert (labels[1, len(targets.rows[1]) :] == -100).all()
    keywords = TargetsConfig(train=cfg.train, column="keyword", kind="label")
    assert target_vocab(keywords) == ("no", "up", "yes")
    with pytest.raises(ValueError, match="no row for"):
        load_targets(cfg, str(corpus / "valid.tsv"), manifest, vocab)
