"""The seq2seq decoder's analytic FLOPs against torch's FlopCounterMode on a real forward and backward."""

from __future__ import annotations

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from ssl_audio.models.finetune import FineTune
from ssl_audio.models.flops import TRAINING_FACTOR, decoder_flops, forward_flops
from ssl_audio.models.registry import ModelConfig, family_config
from ssl_audio.models.seq2seq import Seq2SeqConfig, Seq2SeqDecoder
from ssl_audio.models.step_context import StepContext


@pytest.mark.parametrize(("positions", "frames"), [(7, 23), (30, 5)])
def test_decoder_flops_match_the_counter(positions: int, frames: int) -> None:
    # Attention dropout > 0 takes SDPA's math path, whose products the counter sees (the fused CPU kernel it
    # does not count); dropout changes values, not products.
    cfg = Seq2SeqConfig(vocab_size=11, memory_dim=24, dim=16, layers=2, heads=2, ffn=40, dropout=0.1)
    torch.manual_seed(0)
    decoder = Seq2SeqDecoder(cfg).train()
    tokens = torch.randint(1, cfg.vocab_size, (1, positions))
    memory = torch.randn(1, frames, cfg.memory_dim, requires_grad=True)  # the encoder's output gets a gradient
    with FlopCounterMode(display=False) as forward:
        logits = decoder(tokens, memory)
    with FlopCounterMode(display=False) as backward:
        logits.square().sum().backward()
    expected = decoder_flops(cfg, positions, frames)
    assert forward.get_total_flops() == pytest.approx(expected, rel=1e-6)  # the same products
    total = forward.get_total_flops() + backward.get_total_flops()
    assert total == pytest.approx(TRAINING_FACTOR * expected, rel=0.05)


def test_a_seq2seq_fine_tuning_forward_counts_its_decoder() -> None:
    vocab = ["<pad>", "<s>", "</s>", "<unk>", "|", "A", "B", "C"]
    decoder = {"dim": 16, "layers": 1, "heads": 2, "ffn": 32, "dropout": 0.1}
    # attention dropout everywhere for the counted math path (see above); no masking, so no mask embedding
    config = {"vocab": vocab, "encoder": {"num_layers": 1, "attention_dropout": 0.1}, "head": "seq2seq",
              "masking": {"mask_prob": 0.0, "channel_prob": 0.0}, "decoder": decoder}  # fmt: skip
    cfg = family_config(ModelConfig(family="finetune", preset="tiny", config=config))
    torch.manual_seed(0)
    model = FineTune(cfg).train()
    wave, lengths = torch.randn(1, 4800) * 0.1, torch.tensor([4800])
    labels = torch.tensor([[5, 6, 4, 7, 7]])
    with FlopCounterMode(display=False) as counter:
        model(wave, lengths, [labels], context=StepContext(step=10_000))
    with_decoder = forward_flops(cfg, [4800], masked_frames=0, label_lengths=[5])
    assert with_decoder > forward_flops(cfg, [4800], masked_frames=0)
    assert with_decoder == pytest.approx(counter.get_total_flops(), rel=1e-6)
