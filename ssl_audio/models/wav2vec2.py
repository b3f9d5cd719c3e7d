"""wav2vec 2.0: predict the quantised latent of each masked frame among K distractors (InfoNCE).

Shapes: B batch, S samples, T frames, C conv channels, D model width, F final dim, M masked frames
per row (padded to the row maximum), K negatives, G/V codebook groups/entries.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from ssl_audio.checks import require_count, require_non_negative, require_positive, require_probability
from ssl_audio.models.encoder import Encoder, EncoderConfig
from ssl_audio.models.output import Output
from ssl_audio.models.step_context import EVAL, StepContext
from ssl_audio.nn.conv_extractor import ConvFrontendConfig
from ssl_audio.nn.masking import MaskingConfig, SpanMasker
from ssl_audio.nn.quantizer import GumbelVectorQuantizer, QuantizerConfig, diversity_loss


@dataclass(frozen=True, kw_only=True)
class Wav2Vec2Config:
    """Defaults: wav2vec 2.0 BASE pretraining (fairseq wav2vec2_base_librispeech.yaml)."""

    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    masking: MaskingConfig = field(default_factory=MaskingConfig)  # 0.65, span 10, min 2 spans
    quantizer: QuantizerConfig = field(default_factory=QuantizerConfig)  # G=2 x V=320, temp (2, 0.5, 0.999995)
    final_dim: int = 256  # F: contrastive space; LARGE 768
    num_negatives: int = 100  # K, drawn from masked frames of the same utterance
    logit_temp: float = 0.1  # cosine similarities are divided by this
    feature_grad_mult: float = 0.1  # gradient scale into the conv extractor; LARGE 1.0
    feature_dropout: float = 0.1  # dropout on the quantiser's input (fairseq dropout_features); LARGE 0.0
    diversity_weight: float = 0.1  # weight of (GV - prob perplexity) / GV, times the masked-frame count
    feature_penalty_weight: float = 10.0  # weight of the mean squared conv feature, times the masked-frame count

    def __post_init__(self) -> None:
        require_count(self, "final_dim", "num_negatives")
        require_positive(self, "logit_temp")
        require_non_negative(self, "feature_grad_mult", "diversity_weight", "feature_penalty_weight")
        require_probability(self, "feature_dropout")


def gather_masked(x: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
    """x (B, T, ...) and mask (B, T) -> masked frames packed to the left (B, M, ...) and their validity (B, M)."""
    counts = mask.sum(dim=1)  # (B,)
    width = int(counts.max())
    order = torch.argsort((~mask).to(torch.int8), dim=1, stable=True)[:, :width]  # masked positions first, in order
    valid = torch.arange(width, device=x.device)[None, :] < counts[:, None]  # (B, M)
    index = order.reshape(*order.shape, *([1] * (x.ndim - 2))).expand(-1, -1, *x.shape[2:])
    return x.gather(1, index), valid


def sample_negatives(valid: Tensor, num_negatives: int, generator: torch.Generator | None = None) -> Tensor:
    """For each valid masked slot (b, m), K indices into the same row's valid slots, never m itself.

    Draws j uniformly from the row's other M_b - 1 slots: j ~ U{0..M_b-2}, then j >= m shifts up by one.
    Returns (B, M, K) long; rows with fewer than 2 masked frames get index 0 (their slots are invalid for loss).
    """
    batch, width = valid.shape
    counts = valid.sum(dim=1)  # (B,)
    others = (counts - 1).clamp(min=1).to(torch.float32)  # (B,)
    u = torch.rand(batch, width, num_negatives, generator=generator, device=valid.device)
    draw = (u * others[:, None, None]).long().clamp(max=(others.long() - 1)[:, None, None])  # (B, M, K)
    slot = torch.arange(width, device=valid.device)[None, :, None]
    return (draw + (draw >= slot).long()).masked_fill((counts < 2)[:, None, None], 0)


def contrastive_logits(x: Tensor, targets: Tensor, negatives: Tensor, temperature: float) -> Tensor:
    """Cosine logits / temperature of each prediction against [its target, K negatives] -> (B, M, 1+K).

    A negative identical to the target (same codevector) is not a distractor: its logit is -inf.
    """
    candidates = torch.cat([targets.unsqueeze(2), negatives], dim=2)  # (B, M, 1+K, F)
    unit_x = nn.functional.normalize(x, dim=-1, eps=1e-8)  # (B, M, F)
    unit_candidates = nn.functional.normalize(candidates, dim=-1, eps=1e-8)  # (B, M, 1+K, F)
    logits = torch.einsum("bmf,bmkf->bmk", unit_x, unit_candidates) / temperature
    same = (negatives == targets.unsqueeze(2)).all(dim=-1)  # (B, M, K)
    return logits.masked_fill(nn.functional.pad(same, (1, 0)), float("-inf"))


class Wav2Vec2(nn.Module):
    """Trunk + span masker + Gumbel quantiser + two projections into the contrastive space."""

    def __init__(self, cfg: Wav2Vec2Config) -> None:
        super().__init__()
        self.cfg = cfg
        self.encoder = Encoder(cfg.encoder)
        self.masker = SpanMasker(cfg.encoder.dim, cfg.masking)
        self.quantizer = GumbelVectorQuantizer(self.encoder.frontend.out_channels, cfg.quantizer)
        self.feature_dropout = nn.Dropout(cfg.feature_dropout)
        self.project_targets = nn.Linear(cfg.quantizer.code_dim, cfg.final_dim)
        self.project_context = nn.Linear(cfg.encoder.dim, cfg.final_dim)

    def forward(self, wave: Tensor, lengths: Tensor | None = None, context: StepContext = EVAL) -> Output:
        """(B, S) waveforms, (B,) lengths; `context.step` (optimizer updates so far) sets the Gumbel temperature."""
        cfg, generator = self.cfg, context.generator
        front = self.encoder.extract(wave, lengths, grad_mult=cfg.feature_grad_mult)
        x, mask = self.masker(front.projected, front.lengths, generator=generator)  # (B, T, D), (B, T)
        encoded = self.encoder.transformer(x, front.padding_mask, layerdrop_seed=context.layerdrop_seed).last

        # Targets: quantised unmasked features at the masked frames, packed per row.
        unmasked, valid = gather_masked(self.feature_dropout(front.normed), mask)  # (B, M, C), (B, M)
        self.quantizer.set_step(context.step)
        quantized = self.quantizer(unmasked, padding_mask=~valid, generator=generator)
        predicted, _ = gather_masked(encoded, mask)  # (B, M, D)

        with torch.autocast(device_type=wave.device.type, enabled=False):  # loss maths in fp32
            targets = self.project_targets(quantized.quantized.float())  # (B, M, F)
            predicted = self.project_context(predicted.float())  # (B, M, F)
            index = sample_negatives(valid, cfg.num_negatives, generator)  # (B, M, K)
            negatives = targets.gather(1, index.flatten(1)[..., None].expand(-1, -1, targets.shape[-1]))
            negatives = negatives.view(*index.shape, -1)  # (B, M, K, F)
            logits = contrastive_logits(predicted, targets, negatives, cfg.logit_temp)  # (B, M, 1+K)
            valid = valid & (valid.sum(dim=1, keepdim=True) > 1)  # a lone masked frame has no distractor
            picked = logits[valid]  # (N, 1+K)
            zeros = torch.zeros(picked.shape[0], dtype=torch.long, device=picked.device)
            contrastive = nn.functional.cross_entropy(picked, zeros, reduction="sum")
            sample_size = valid.sum()
            diversity = diversity_loss(quantized.prob_perplexity, cfg.quantizer.num_groups, cfg.quantizer.num_entries)
            diversity = cfg.diversity_weight * diversity * sample_size
            penalty = cfg.feature_penalty_weight * front.penalty * sample_size
            loss = contrastive + diversity + penalty

        with torch.no_grad():
            correct = (picked.argmax(dim=-1) == 0).sum()
            accuracy = correct.float() / sample_size.clamp(min=1)
        return Output(
            loss=loss,
            sample_size=sample_size,
            losses={"contrastive": contrastive.detach(), "diversity": diversity.detach(), "penalty": penalty.detach()},
            metrics={
                "accuracy": accuracy,
                "code_perplexity": quantized.code_perplexity.detach(),
                "prob_perplexity": quantized.prob_perplexity.detach(),
                "temperature": torch.tensor(quantized.temperature),
                "masked_frames": sample_size.detach(),
            },
        )


def wav2vec2_base() -> Wav2Vec2Config:
    return Wav2Vec2Config()


def wav2vec2_large() -> Wav2Vec2Config:
    """LARGE as pretrained on LibriVox (fairseq wav2vec2_large_librivox.yaml)."""
    return Wav2Vec2Config(
        encoder=EncoderConfig(
            frontend=ConvFrontendConfig(mode="layer_norm", bias=True),
            dim=1024, num_layers=24, num_heads=16, ffn_dim=4096, pre_ln=True,
            dropout=0.0, attention_dropout=0.0, projection_dropout=0.0, layerdrop=0.0,
        ),
        quantizer=QuantizerConfig(code_dim=768, temp_end=0.1),
        final_dim=768,
        feature_grad_mult=1.0,
        feature_dropout=0.0,
        feature_penalty_weight=0.0,
    )  # fmt: skip


def tiny_encoder(**changes: object) -> EncoderConfig:
    """A trunk small enough to pretrain on 2 CPU cores in minutes (the demo recipes)."""
    base = dict(
        frontend=ConvFrontendConfig(layers=((64, 10, 5),) + ((64, 3, 2),) * 4 + ((64, 2, 2),) * 2),
        dim=96, num_layers=4, num_heads=4, ffn_dim=384, pos_conv_kernel=32, pos_conv_groups=4,
        dropout=0.05, attention_dropout=0.05, projection_dropout=0.05, layerdrop=0.0,
    )  # fmt: skip
    base.update(changes)
    return EncoderConfig(**base)  # type: ignore[arg-type]


def wav2vec2_tiny() -> Wav2Vec2Config:
    return Wav2Vec2Config(
        encoder=tiny_encoder(),
        quantizer=QuantizerConfig(num_groups=2, num_entries=64, code_dim=64),
        final_dim=64,
        num_negatives=20,
    )
