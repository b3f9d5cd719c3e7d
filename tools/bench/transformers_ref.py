"""transformers' models, built from our config through ssl_audio.interop.hf.config_to_hf. Masks and negatives
are drawn outside the timed step with its numpy helpers, as its data collator does."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from ssl_audio.interop.hf import config_to_hf
from ssl_audio.models.encoder import EncoderConfig
from ssl_audio.models.hubert import COSINE_EPS, HubertConfig
from ssl_audio.models.wav2vec2 import Wav2Vec2Config
from ssl_audio.nn.conv_extractor import scale_grad
from ssl_audio.nn.masking import MaskingConfig

from .common import Batch, Built, Prepare


def hf_fields(family: str, cfg: Any, masking: MaskingConfig | None) -> dict[str, Any]:
    """config_to_hf's fields plus transformers' time masking (none when `masking` is None)."""
    fields = config_to_hf(family, cfg, architecture="")
    del fields["architectures"], fields["ssl_audio"]  # what a saved folder records, not the architecture
    if masking is None:
        return fields | dict(mask_time_prob=0.0)
    return fields | dict(
        mask_time_prob=masking.mask_prob, mask_time_length=masking.mask_length, mask_time_min_masks=masking.min_masks
    )


def attention_mask(batch: Batch) -> Tensor | None:
    """transformers' sample-level mask (B, S): 1 = valid, or None when running without lengths."""
    if batch.lengths is None:
        return None
    samples = torch.arange(batch.wave.shape[1], device=batch.wave.device)
    return (samples[None, :] < batch.lengths[:, None]).long()


def mask_drawer(config: Any, batch: Batch, *, negatives: bool) -> Prepare:
    """step -> time mask (B, T) bool [, negative indices (B, T, K)], from transformers' numpy helpers."""
    from transformers.models.wav2vec2.modeling_wav2vec2 import _compute_mask_indices, _sample_negative_indices

    rng = np.random.default_rng(0)
    shape = (batch.wave.shape[0], batch.frames)

    def prepare(step: int) -> object:
        np.random.seed(int(rng.integers(2**31)))  # both helpers draw from numpy's global state
        mask = _compute_mask_indices(
            shape, config.mask_time_prob, config.mask_time_length, None, config.mask_time_min_masks
        )
        if not negatives:
            return torch.from_numpy(mask)
        index = _sample_negative_indices(shape, config.num_negatives, mask)
        return torch.from_numpy(mask), torch.from_numpy(index).long()

    return prepare


def build_wav2vec2(cfg: Wav2Vec2Config, batch: Batch) -> Built:
    """Wav2Vec2ForPreTraining: its own objective (contrastive + diversity, logits and quantiser for every frame;
    no feature penalty and no feature_grad_mult, whose cost is negligible)."""
    from transformers import Wav2Vec2Config as HFWav2Vec2Config
    from transformers import Wav2Vec2ForPreTraining

    config = HFWav2Vec2Config(**hf_fields("wav2vec2", cfg, cfg.masking))
    model = Wav2Vec2ForPreTraining(config)
    mask_in = attention_mask(batch)

    def loss(step: int, prepared: object) -> Tensor:
        mask, negatives = prepared  # type: ignore[misc]
        out = model(batch.wave, attention_mask=mask_in, mask_time_indices=mask, sampled_negative_indices=negatives)
        return out.loss / mask.sum()  # their example: outputs.loss / num_losses

    return Built(model, loss, mask_drawer(config, batch, negatives=True))


class HubertPretraining(nn.Module):
    """HubertModel + a head built like ours (transformers ships no HuBERT pretraining head): final projection,
    label embeddings, cosine / logit_temp as a matmul of unit vectors, CE on masked frames, feature penalty
    and grad mult through a hook on its conv extractor."""

    def __init__(self, cfg: HubertConfig) -> None:
        super().__init__()
        from transformers import HubertConfig as HFHubertConfig
        from transformers import HubertModel

        if len(cfg.num_classes) != 1:
            raise ValueError(f"this head predicts one label set, got num_classes {cfg.num_classes}")
        self.cfg = cfg
        self.config = HFHubertConfig(**hf_fields("hubert", cfg, cfg.masking))
        self.encoder = HubertModel(self.config)
        self.final_proj = nn.Linear(self.config.hidden_size, cfg.final_dim)
        self.label_embeddings = nn.Parameter(torch.rand(cfg.num_classes[0], cfg.final_dim))
        self.penalty: Tensor | None = None
        self.encoder.feature_extractor.register_forward_hook(self._feature_hook)

    def _feature_hook(self, module: nn.Module, inputs: object, features: Tensor) -> Tensor:
        """(B, C, T) conv features: record the feature penalty, scale the gradient into the extractor."""
        self.penalty = features.float().pow(2).mean()
        return scale_grad(features, self.cfg.feature_grad_mult)

    def forward(self, wave: Tensor, mask_in: Tensor | None, mask: Tensor, labels: Tensor) -> Tensor:
        hidden = self.encoder(wave, attention_mask=mask_in, mask_time_indices=mask).last_hidden_state  # (B, T, D)
        picked = self.final_proj(hidden[mask])  # (N, F)
        unit_picked = nn.functional.normalize(picked, dim=-1, eps=COSINE_EPS)  # as ours: a matmul of unit vectors
        unit_table = nn.functional.normalize(self.label_embeddings, dim=-1, eps=COSINE_EPS)
        logits = unit_picked @ unit_table.T / self.cfg.logit_temp  # (N, classes)
        count = picked.shape[0]
        total = nn.functional.cross_entropy(logits, labels[mask], reduction="sum")
        assert self.penalty is not None
        return (total + self.cfg.feature_penalty_weight * self.penalty * count) / count


def build_hubert(cfg: HubertConfig, batch: Batch) -> Built:
    model = HubertPretraining(cfg)
    mask_in = attention_mask(batch)

    def loss(step: int, prepared: object) -> Tensor:
        return model(batch.wave, mask_in, prepared, batch.labels)

    return Built(model, loss, mask_drawer(model.config, batch, negatives=False))


def build_trunk(cfg: EncoderConfig, batch: Batch) -> Built:
    """Wav2Vec2Model without masking; loss = mean square of the last hidden state."""
    from transformers import Wav2Vec2Config as HFWav2Vec2Config
    from transformers import Wav2Vec2Model

    model = Wav2Vec2Model(HFWav2Vec2Config(**hf_fields("wav2vec2", Wav2Vec2Config(encoder=cfg), None)))
    mask_in = attention_mask(batch)

    def loss(step: int, _: object) -> Tensor:
        return model(batch.wave, attention_mask=mask_in).last_hidden_state.float().pow(2).mean()

    return Built(model, loss, None)
