"""The seq2seq head kind: its loss is λ·CTC + (1 − λ)·label-smoothed attention cross-entropy recomputed by hand
from the model's own outputs; a tiny run's loss falls; validation and `ssl-audio transcribe` decode greedy or by
beam (CTC heads too)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from finetune_helpers import ft_overrides, write_corpus

from ssl_audio import cli
from ssl_audio.finetune.targets import write_split_manifests
from ssl_audio.models.ctc_decoding import ctc_prefix_beam_search
from ssl_audio.models.finetune import FineTune
from ssl_audio.models.registry import ModelConfig, family_config
from ssl_audio.models.seq2seq import decoder_targets, hybrid_loss
from ssl_audio.train.config import load_config
from ssl_audio.train.loop import train

VOCAB = ["<pad>", "<s>", "</s>", "<unk>", "|", "A", "B", "C"]
SOS, EOS = 1, 2
DECODER = {"dim": 32, "layers": 1, "heads": 2, "ffn": 64, "dropout": 0.0, "label_smoothing": 0.1}
SEQ2SEQ = (
    "model.config.head=seq2seq",
    "model.config.decoder={dim: 32, layers: 1, heads: 2, ffn: 64, dropout: 0.0}",
    "model.config.ctc_weight=0.3",
)


def tiny(**changes) -> FineTune:
    # training λ 0.4, not decode.ctc_weight's 0.3: a mix-up of the two fails the loss check
    config = {"vocab": VOCAB, "encoder": {"num_layers": 1}, "masking": {"mask_prob": 0.0, "channel_prob": 0.0},
              "head": "seq2seq", "decoder": DECODER, "ctc_weight": 0.4, **changes}  # fmt: skip
    torch.manual_seed(0)
    return FineTune(family_config(ModelConfig(family="finetune", preset="tiny", config=config)))


def test_loss_is_the_hybrid_loss_by_hand() -> None:
    model = tiny().eval()
    wave = torch.randn(2, 4800, generator=torch.Generator().manual_seed(1)) * 0.1
    lengths = torch.tensor([4800, 3200])  # 14 and 9 frames
    labels = torch.tensor([[5, 6, 4, 7, 7], [6, 5, -100, -100, -100]])
    out = model(wave, lengths, [labels])
    assert out.sample_size.item() == 2

    encoded, frames, pad = model.encode(wave, lengths)
    ctc_logits = model.head(encoded)
    # teacher forcing written out by hand: input [<s> y], output [y </s>], the rest ignored
    inputs = torch.tensor([[SOS, 5, 6, 4, 7, 7], [SOS, 6, 5, EOS, EOS, EOS]])
    outputs = torch.tensor([[5, 6, 4, 7, 7, EOS], [6, 5, EOS, -100, -100, -100]])
    decoder_logits = model.decoder(inputs, encoded, pad)
    log_probs = ctc_logits.log_softmax(-1).transpose(0, 1)
    label_lengths = torch.tensor([5, 2])
    ctc = torch.nn.functional.ctc_loss(log_probs, labels.clamp(min=0), frames, label_lengths, reduction="none")
    attention = torch.nn.functional.cross_entropy(
        decoder_logits.reshape(-1, len(VOCAB)), outputs.reshape(-1), ignore_index=-100, label_smoothing=0.1,
        reduction="sum",
    )  # fmt: skip
    by_hand = 0.4 * ctc.sum() / 2 + 0.6 * attention / 2  # each term summed per utterance, mean over utterances
    mean_loss = out.loss.item() / out.sample_size.item()
    assert mean_loss == pytest.approx(by_hand.item(), rel=1e-5)

    targets = decoder_targets(labels.clamp(min=0), label_lengths, sos=SOS, eos=EOS)
    assert torch.equal(targets.inputs, inputs) and torch.equal(targets.outputs, outputs)
    reference = hybrid_loss(
        ctc_logits, frames, decoder_logits, targets, labels.clamp(min=0), label_lengths, ctc_weight=0.4,
        label_smoothing=0.1,
    )  # fmt: skip
    assert mean_loss == pytest.approx(reference.loss.item(), rel=1e-6)
    assert out.losses["ctc"].item() / 2 == pytest.approx(reference.ctc.item(), rel=1e-6)
    assert {"char_errors", "chars", "word_errors", "words", "blank_only"} <= set(out.metrics)
    assert out.metrics["chars"].item() == len("AB CC") + len("BA")  # validation decodes, against these references


def test_decoder_uses_the_vocabularys_start_and_end() -> None:
    model = tiny()
    assert (model.decoder.config.sos, model.decoder.config.eos, model.decoder.config.blank_id) == (SOS, EOS, 0)
    with pytest.raises(ValueError, match="'<s>' and '</s>'"):
        tiny(vocab=["<pad>", "|", "A", "B"])


def test_ctc_beam_equals_the_prefix_beam_search() -> None:
    model = tiny(head="ctc").eval()
    wave = torch.randn(1, 4800, generator=torch.Generator().manual_seed(2)) * 0.1
    encoded, frames, _ = model.encode(wave, torch.tensor([4800]))
    log_probs = model.head(encoded).log_softmax(-1)[0]
    want = list(ctc_prefix_beam_search(log_probs, int(frames[0]), beam=4)[0].tokens)
    assert model.transcribe_ids(encoded, frames, beam=4) == [want]
    path = log_probs.argmax(-1).tolist()  # best path by hand: repeats merged, then blanks dropped
    greedy = [t for k, t in enumerate(path) if t != 0 and (k == 0 or t != path[k - 1])]
    assert model.transcribe_ids(encoded, frames, beam=1) == [greedy]


def test_tiny_seq2seq_run_loss_falls_then_transcribes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    corpus = write_corpus(tmp_path / "corpus", train=4, valid=2)
    extra = ("train.max_updates=25", "data.max_batch_seconds=20", "model.config.masking.mask_prob=0.0",
             "optim.lr=0.003", "model.config.decode.beam=2", "train.valid_every=25", "train.save_every=25")  # fmt: skip
    cfg = load_config(None, ft_overrides(corpus, tmp_path / "run", *SEQ2SEQ, *extra))
    write_split_manifests(cfg.finetune, cfg.data.manifest_dir)
    result = train(cfg)
    assert result.step == 25 and result.skipped == 0
    first, last = sum(result.losses[:3]) / 3, sum(result.losses[-3:]) / 3  # one batch: the same data every update
    assert last < 0.7 * first, (first, last)
    # validation by joint beam 2: CER/WER, and the teacher-forced accuracy (a barely trained decoder rambles)
    assert {"cer", "wer", "accuracy", "blank_only"} <= set(result.valid) and result.valid["cer"] > 0
    capsys.readouterr()
    files = [str(corpus / "audio" / "valid_00.wav"), str(corpus / "audio" / "valid_01.wav")]
    step = str(tmp_path / "run" / "step_00000025")
    for beam in ("1", "3"):
        assert cli.main(["transcribe", step, *files, "--beam", beam]) == 0
        lines = [line for line in capsys.readouterr().out.splitlines() if line]
        assert [line.partition("\t")[0] for line in lines] == files
        assert all(set(line.partition("\t")[2]) <= set("ABC <unk>") for line in lines)  # <unk> prints as text
    assert cli.main(["classify", step, files[0]]) == 2
    assert "use `ssl-audio transcribe`" in capsys.readouterr().err
