"""ssl_audio's own models, stepped as the training loop steps them (objective inside forward)."""

from __future__ import annotations

import torch
from torch import Tensor

from ssl_audio.models.encoder import Encoder, EncoderConfig
from ssl_audio.models.hubert import Hubert, HubertConfig
from ssl_audio.models.step_context import StepContext
from ssl_audio.models.wav2vec2 import Wav2Vec2, Wav2Vec2Config

from .common import Batch, Built


def build_wav2vec2(cfg: Wav2Vec2Config, batch: Batch) -> Built:
    """Full objective: span masking and negative sampling inside forward, contrastive + diversity + penalty."""
    model = Wav2Vec2(cfg)
    generator = torch.Generator(device=batch.wave.device).manual_seed(0)

    def loss(step: int, _: object) -> Tensor:
        return model(batch.wave, batch.lengths, context=StepContext(step=step, generator=generator)).mean_loss

    return Built(model, loss, None)


def build_hubert(cfg: HubertConfig, batch: Batch) -> Built:
    """Masking inside forward, cosine logits against label embeddings, CE on masked frames, penalty."""
    model = Hubert(cfg)
    generator = torch.Generator(device=batch.wave.device).manual_seed(0)

    def loss(step: int, _: object) -> Tensor:
        context = StepContext(step=step, generator=generator)
        return model(batch.wave, batch.lengths, [batch.labels], context=context).mean_loss

    return Built(model, loss, None)


def build_trunk(cfg: EncoderConfig, batch: Batch) -> Built:
    """Encoder only; loss = mean square of the last hidden state."""
    model = Encoder(cfg)

    def loss(step: int, _: object) -> Tensor:
        return model(batch.wave, batch.lengths).last.float().pow(2).mean()

    return Built(model, loss, None)
