"""HuBERT: predict the k-means label of each masked frame (cosine logits against label embeddings).
WavLM is the same objective on an encoder with gated relative position bias (see wavlm.py).

Shapes: B batch, S samples, T frames, D model width, F final dim, L label frames, N classes of one set.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from ssl_audio.audio import SAMPLE_RATE
from ssl_audio.checks import fail, require_count, require_non_negative, require_positive
from ssl_audio.models.encoder import Encoder, EncoderConfig
from ssl_audio.models.label_frames import LABEL_WINDOW, label_hop, label_indices
from ssl_audio.models.output import Output
from ssl_audio.models.step_context import EVAL, StepContext
from ssl_audio.models.wav2vec2 import tiny_encoder  # the demo trunk, shared by every family's tiny preset
from ssl_audio.nn.conv_extractor import ConvFrontendConfig
from ssl_audio.nn.masking import MaskingConfig, SpanMasker

COSINE_EPS = 1e-8  # as torch.cosine_similarity
LABEL_PAD = -100  # a frame with no label (padding); data/collate.py pads label rows with it


@dataclass(frozen=True, kw_only=True)
class HubertConfig:
    """Defaults: HuBERT BASE pretraining, iteration 2 (fairseq hubert_base_librispeech.yaml)."""

    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    masking: MaskingConfig = field(default_factory=lambda: MaskingConfig(mask_prob=0.8))  # span 10, min 2
    num_classes: tuple[int, ...] = (500,)  # clusters of each label set (iteration 1: 100 from MFCC)
    label_rate: float = 50.0  # Hz of the label sequences (iteration 1: 100, iteration 2: 50)
    # Samples one label frame covers: 400 (25 ms) for MFCC labels and labels from a conv-stack model's layer;
    # labels from a log-mel or patch model's layer cover that model's window (models/label_frames.py). Taken from
    # the label header where it says it (a recipe's own setting must then agree).
    label_window: int = LABEL_WINDOW
    # Sample where label frame 0's window starts: 0 for MFCC and unpadded front-ends, -520 for labels from a layer
    # of Whisper's centred front-end. None (label files written before headers said it): the model's own offset,
    # the mapping as it was before front-ends had one. Both are filled from the label header when it has them.
    label_offset: int | None = None
    final_dim: int = 256  # F; LARGE 768
    untie_final_proj: bool = True  # one projection per label set
    logit_temp: float = 0.1
    masked_weight: float = 1.0  # fairseq pred_masked_weight
    unmasked_weight: float = 0.0  # fairseq pred_nomask_weight
    feature_grad_mult: float = 0.1  # LARGE 1.0
    feature_penalty_weight: float = 10.0  # times the number of predicted frames

    def __post_init__(self) -> None:
        if not self.num_classes:
            fail(self, "num_classes", "must list the clusters of at least one label set, got none")
        require_count(self, "num_classes", "final_dim", "label_window")
        require_positive(self, "label_rate", "logit_temp")
        require_non_negative(self, "masked_weight", "unmasked_weight", "feature_grad_mult", "feature_penalty_weight")


def frame_targets(
    labels: Tensor,
    num_frames: int,
    label_rate: float,
    frame_rate: float,
    *,
    window: int = LABEL_WINDOW,
    label_window: int = LABEL_WINDOW,
    offset: int = 0,
    label_offset: int | None = None,
) -> Tensor:
    """Labels (B, L) at `label_rate` -> (B, T) targets of frames at `frame_rate` that see `window` samples from
    `offset` on: frame t takes the label centred nearest it (models/label_frames.py; floor(t * ratio) for 25 ms
    frames). `label_offset` None: the frames' own `offset`.

    Frames past the end of the labels get LABEL_PAD (they are not predicted).
    """
    hop = label_hop(frame_rate)
    index = label_indices(
        num_frames,
        hop=hop,
        window=window,
        label_rate=label_rate,
        label_window=label_window,
        offset=offset,
        label_offset=offset if label_offset is None else label_offset,
        device=labels.device,
    )  # (T,)
    inside = index < labels.shape[1]
    targets = labels[:, index.clamp(max=labels.shape[1] - 1)]
    return targets.masked_fill(~inside[None, :], LABEL_PAD)


class Hubert(nn.Module):
    """Trunk + span masker + projection(s) + one embedding per cluster of each label set."""

    def __init__(self, cfg: HubertConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.encoder = Encoder(cfg.encoder)
        self.masker = SpanMasker(cfg.encoder.dim, cfg.masking)
        num_sets = len(cfg.num_classes) if cfg.untie_final_proj else 1
        self.final_proj = nn.Linear(cfg.encoder.dim, cfg.final_dim * num_sets)
        self.label_embeddings = nn.Parameter(torch.empty(sum(cfg.num_classes), cfg.final_dim).uniform_())

    @property
    def frame_rate(self) -> float:
        return SAMPLE_RATE / self.cfg.encoder.hop

    def forward(
        self,
        wave: Tensor,
        lengths: Tensor | None,
        labels: Sequence[Tensor],
        context: StepContext = EVAL,
    ) -> Output:
        """(B, S) waveforms, (B,) lengths and one (B, L) label tensor per label set (LABEL_PAD = none).

        Label values are not checked here (that would cost host syncs every step): load_labels checks them
        against the file's k, and the family config takes its classes from the same headers."""
        cfg, generator = self.cfg, context.generator
        if len(labels) != len(cfg.num_classes):
            raise ValueError(f"expected {len(cfg.num_classes)} label sets, got {len(labels)}")
        front = self.encoder.extract(wave, lengths, grad_mult=cfg.feature_grad_mult)
        x, mask = self.masker(front.projected, front.lengths, generator=generator)  # (B, T, D), (B, T)
        encoded = self.encoder.transformer(x, front.padding_mask, layerdrop_seed=context.layerdrop_seed).last
        frames = encoded.shape[1]
        valid_frames = torch.ones_like(mask) if front.padding_mask is None else ~front.padding_mask

        losses: dict[str, Tensor] = {}
        metrics: dict[str, Tensor] = {}
        with torch.autocast(device_type=wave.device.type, enabled=False):  # loss maths in fp32
            projected = self.final_proj(encoded.float())  # (B, T, F * sets)
            chunks = projected.chunk(len(cfg.num_classes), dim=-1) if cfg.untie_final_proj else None
            embeddings = self.label_embeddings.float().split(list(cfg.num_classes), dim=0)
            total = projected.new_zeros(())
            sample_size = torch.zeros((), dtype=torch.long, device=wave.device)
            for i, (set_labels, table) in enumerate(zip(labels, embeddings)):
                if set_labels.ndim != 2 or set_labels.shape[0] != wave.shape[0]:
                    raise ValueError(f"label set {i}: expected shape (batch, frames), got {tuple(set_labels.shape)}")
                targets = frame_targets(
                    set_labels.to(wave.device),
                    frames,
                    cfg.label_rate,
                    self.frame_rate,
                    window=self.encoder.window,
                    label_window=cfg.label_window,
                    offset=self.encoder.offset,
                    label_offset=cfg.label_offset,
                )
                has_label = valid_frames & (targets != LABEL_PAD)
                proj = chunks[i] if chunks is not None else projected  # (B, T, F)
                # cosine similarity as a matmul of unit vectors: never materialises (B, T, classes, F)
                unit_proj = nn.functional.normalize(proj, dim=-1, eps=COSINE_EPS)
                unit_table = nn.functional.normalize(table, dim=-1, eps=COSINE_EPS)
                logits = unit_proj @ unit_table.T / cfg.logit_temp  # (B, T, classes)
                parts = (("masked", mask, cfg.masked_weight), ("unmasked", ~mask, cfg.unmasked_weight))
                for name, where, weight in parts:
                    chosen = has_label & where
                    picked, wanted = logits[chosen], targets[chosen]  # (N, classes), (N,)
                    term = nn.functional.cross_entropy(picked, wanted, reduction="sum")
                    if weight > 0:
                        total = total + weight * term
                        losses[f"{name}_{i}"] = (weight * term).detach()
                    with torch.no_grad():
                        correct = (picked.argmax(dim=-1) == wanted).sum().float()
                        metrics[f"accuracy_{name}_{i}"] = correct / max(int(chosen.sum()), 1)
                    if i == 0 and weight > 0:  # fairseq: frames of the first label set, masked and/or unmasked
                        sample_size = sample_size + chosen.sum()
            penalty = cfg.feature_penalty_weight * front.penalty * sample_size
            loss = total + penalty
        losses["penalty"] = penalty.detach()
        metrics["masked_frames"] = mask.sum().detach()
        return Output(loss=loss, sample_size=sample_size, losses=losses, metrics=metrics)


def hubert_base(num_classes: tuple[int, ...] = (500,), label_rate: float = 50.0) -> HubertConfig:
    return HubertConfig(num_classes=num_classes, label_rate=label_rate)


def hubert_large(num_classes: tuple[int, ...] = (500,), label_rate: float = 50.0) -> HubertConfig:
    """LARGE (fairseq hubert_large_ll60k.yaml): layer_norm extractor, pre-LN, 24 x 1024."""
    return HubertConfig(
        encoder=EncoderConfig(
            frontend=ConvFrontendConfig(mode="layer_norm"), dim=1024, num_layers=24, num_heads=16, ffn_dim=4096,
            pre_ln=True, dropout=0.0, attention_dropout=0.1, projection_dropout=0.0, layerdrop=0.1,
        ),
        num_classes=num_classes,
        label_rate=label_rate,
        final_dim=768,
        feature_grad_mult=1.0,
    )  # fmt: skip


def hubert_tiny(num_classes: tuple[int, ...] = (100,), label_rate: float = 100.0) -> HubertConfig:
    return HubertConfig(encoder=tiny_encoder(), num_classes=num_classes, label_rate=label_rate, final_dim=64)
