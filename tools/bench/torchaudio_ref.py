"""torchaudio's models, built from our config (torchaudio has no wav2vec 2.0 pretraining head)."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from ssl_audio.models.encoder import EncoderConfig
from ssl_audio.models.hubert import HubertConfig

from .common import Batch, Built


def encoder_kwargs(enc: EncoderConfig) -> dict[str, Any]:
    """The trunk arguments of torchaudio's wav2vec2_model / hubert_pretrain_model for our EncoderConfig."""
    if enc.relative_bias:
        raise ValueError("torchaudio's wav2vec2_model has no relative position bias (use its wavlm_model)")
    return dict(
        extractor_mode=enc.frontend.mode,
        extractor_conv_layer_config=list(enc.frontend.layers),
        extractor_conv_bias=enc.frontend.bias,
        encoder_embed_dim=enc.dim,
        encoder_projection_dropout=enc.projection_dropout,
        encoder_pos_conv_kernel=enc.pos_conv_kernel,
        encoder_pos_conv_groups=enc.pos_conv_groups,
        encoder_num_layers=enc.num_layers,
        encoder_num_heads=enc.num_heads,
        encoder_attention_dropout=enc.attention_dropout,
        encoder_ff_interm_features=enc.ffn_dim,
        encoder_ff_interm_dropout=enc.activation_dropout,
        encoder_dropout=enc.dropout,
        encoder_layer_norm_first=enc.pre_ln,
        encoder_layer_drop=enc.layerdrop,
    )


def hubert_model(cfg: HubertConfig) -> nn.Module:
    """torchaudio's HuBERTPretrainModel for our config: masking inside forward, logits for masked and unmasked
    frames (as its hubert_pretrain_base: skip_nomask False, although our unmasked weight 0 leaves them unused)."""
    import torchaudio

    if len(cfg.num_classes) != 1:
        raise ValueError(f"torchaudio's HuBERT predicts one label set, got num_classes {cfg.num_classes}")
    masking = cfg.masking
    return torchaudio.models.hubert_pretrain_model(
        **encoder_kwargs(cfg.encoder),
        mask_prob=masking.mask_prob,
        mask_selection="static",
        mask_other=0.0,
        mask_length=masking.mask_length,
        no_mask_overlap=masking.no_overlap,
        mask_min_space=masking.min_space,
        mask_channel_prob=masking.channel_prob,
        mask_channel_selection="static",
        mask_channel_other=0.0,
        mask_channel_length=masking.channel_length,
        no_mask_channel_overlap=False,
        mask_channel_min_space=1,
        skip_masked=False,
        skip_nomask=False,
        num_classes=cfg.num_classes[0],
        final_dim=cfg.final_dim,
        feature_grad_mult=cfg.feature_grad_mult,
    )


def build_hubert(cfg: HubertConfig, batch: Batch) -> Built:
    """loss = (CE(logit_m, 0) summed + penalty weight * penalty * masked frames) / masked frames: torchaudio's
    example hubert_loss with unmasked weight 0, its term left out as fairseq does."""
    model = hubert_model(cfg)

    def loss(step: int, _: object) -> Tensor:
        logit_m, _logit_u, penalty = model(batch.wave, batch.labels, batch.lengths)
        count = logit_m.shape[0]
        target = torch.zeros(count, dtype=torch.long, device=logit_m.device)  # the true class is column 0
        total = nn.functional.cross_entropy(logit_m, target, reduction="sum")
        return (total + cfg.feature_penalty_weight * penalty * count) / count

    return Built(model, loss, None)


def wav2vec2_model(cfg: EncoderConfig) -> nn.Module:
    """torchaudio's Wav2Vec2Model (no aux head) for our EncoderConfig."""
    import torchaudio

    return torchaudio.models.wav2vec2_model(**encoder_kwargs(cfg), aux_num_out=None)


def build_trunk(cfg: EncoderConfig, batch: Batch) -> Built:
    """Encoder only; loss = mean square of the last hidden state."""
    model = wav2vec2_model(cfg)

    def loss(step: int, _: object) -> Tensor:
        return model(batch.wave, batch.lengths)[0].float().pow(2).mean()

    return Built(model, loss, None)
