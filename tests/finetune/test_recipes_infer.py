"""The fine-tuning recipes carry fairseq's published settings; long audio is encoded in stitched chunks."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from ssl_audio.finetune.infer import encoded_frames, transcribe_wave
from ssl_audio.models.finetune import FineTune
from ssl_audio.models.registry import ModelConfig, family_config
from ssl_audio.train.config import load_config

RECIPES = Path(__file__).resolve().parents[2] / "recipes"
VOCAB = ["<pad>", "<s>", "</s>", "<unk>", "|", "A", "B"]

# fairseq examples/wav2vec/config/finetuning/base_*.yaml: lr, max_update, freeze_finetune_updates,
# mask_channel_prob, layerdrop
FAIRSEQ = {
    "10m": (5e-5, 13000, 10000, 0.25, 0.1),
    "1h": (5e-5, 13000, 10000, 0.25, 0.1),
    "10h": (5e-5, 20000, 10000, 0.5, 0.05),
    "100h": (3e-5, 80000, 0, 0.5, 0.1),
}


@pytest.mark.parametrize("name", sorted(FAIRSEQ))
def test_paper_presets(name: str) -> None:
    cfg = load_config(RECIPES / f"finetune_w2v2_base_{name}.yaml")
    model = family_config(ModelConfig(family="finetune", preset="base", config={**cfg.model.config, "vocab": VOCAB}))
    lr, updates, freeze, channel, layerdrop = FAIRSEQ[name]
    assert (cfg.optim.lr, cfg.train.max_updates, model.freeze_updates) == (lr, updates, freeze)
    assert (model.masking.channel_prob, model.encoder.layerdrop) == (channel, layerdrop)
    assert (model.masking.mask_prob, model.masking.channel_length, model.freeze_frontend) == (0.65, 64, True)
    assert cfg.train.target_seconds_per_update == 1600.0  # 2 GPUs x update_freq 4 x 3.2M samples
    assert (cfg.schedule.kind, cfg.optim.eps, cfg.optim.weight_decay) == ("tri_stage", 1e-8, 0.0)


def test_long_audio_is_chunked_without_a_frame_lost() -> None:
    cfg = family_config(
        ModelConfig(family="finetune", preset="tiny", config={"vocab": VOCAB, "encoder": {"num_layers": 1}})
    )
    model = FineTune(cfg).eval()
    wave = torch.randn(16000 * 65) * 0.1  # 65 s: three 30 s chunks
    frames = encoded_frames(model, wave)
    assert frames.shape == ((wave.shape[0] - 400) // 320 + 1, cfg.encoder.dim)  # the conv stack: window 400, hop 320
    short = wave[: 16000 * 5]
    one_pass = model.encode(short[None], None)[0][0]
    assert torch.equal(encoded_frames(model, short), one_pass)  # under a chunk: one pass
    # an untrained head: any token but the blank, printed as transformers' tokenizer does (<s>, <unk> as text)
    assert set(transcribe_wave(model, wave)) <= set("".join(VOCAB[1:]).replace("|", " "))
