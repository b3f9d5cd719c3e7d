"""BEST-RQ (Chiu et al. 2022): predict, at each masked frame, the code that a frozen random-projection quantiser
gives the frame's stacked, normalised log-mel features. No k-means, no second round, nothing of the quantiser
is ever trained: its projection and codebooks are buffers drawn from `quantizer_seed` and saved with the model,
so the targets of a checkpoint are reproducible forever.

Targets: 80-bin kaldi log-mel (25 ms windows every 10 ms, as ssl_audio.features.logmel_features), normalised
per utterance and mel bin over the utterance's frames, `stack` consecutive frames concatenated so that one
stack covers one encoder frame (conv front-end: 320 samples = 2 hops of 160), projected by a Gaussian matrix,
L2-normalised, and matched to the nearest of V unit-norm codewords (nearest in L2 between unit vectors = the
largest cosine). G codebooks (multi-softmax) each have their own projection and codebook.

Masking and the trunk are the other families': span masking of the projected features (a learned mask
embedding), the transformer, then one linear softmax head per codebook; cross-entropy on masked frames only.

Shapes: B batch, S samples, T encoder frames, M log-mel frames, N mel bins, P = stack * N, E code dim,
G codebooks, V codewords per codebook, D model width.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torchaudio.compliance.kaldi as kaldi
from torch import Tensor, nn

from ssl_audio.audio import SAMPLE_RATE
from ssl_audio.checks import fail, require_count, require_non_negative
from ssl_audio.models.encoder import Encoder, EncoderConfig
from ssl_audio.models.output import Output
from ssl_audio.models.step_context import EVAL, StepContext
from ssl_audio.models.wav2vec2 import tiny_encoder
from ssl_audio.nn.masking import MaskingConfig, SpanMasker

# The log-mel of ssl_audio.features.logmel_features (that module imports models/, so models/ cannot import it;
# tests/models/test_bestrq.py checks the two agree).
MEL_BINS = 80
MEL_HOP = 160  # samples: 10 ms at 16 kHz
MEL_WINDOW = 400  # samples: 25 ms
NORM_EPS = 1e-5  # added to the per-bin variance (a constant bin stays finite)
NO_TARGET = -100  # a frame without a full log-mel stack (padding, or the row's last frame): never predicted


@dataclass(frozen=True, kw_only=True)
class BestRqConfig:
    """Defaults: BEST-RQ as published (code dim 16, 8192 codewords, 400 ms spans), on our BASE trunk."""

    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    # 20-frame (400 ms) spans; mask_prob 0.4 masks about a third of the frames (spans overlap), as the
    # paper's 0.01 start probability per 10 ms frame with 400 ms spans
    masking: MaskingConfig = field(default_factory=lambda: MaskingConfig(mask_prob=0.4, mask_length=20))
    num_codebooks: int = 1  # G: independent quantisers and softmax heads (the paper's multi-softmax: up to 16)
    codebook_size: int = 8192  # V (paper: 8192)
    code_dim: int = 16  # E (paper: 16)
    quantizer_seed: int = 0  # draws the projection and codebooks (then saved with the model)
    feature_grad_mult: float = 0.1  # gradient scale into the conv extractor, as HuBERT BASE
    feature_penalty_weight: float = 10.0  # the trunk's mean squared conv feature, times the predicted frames

    def __post_init__(self) -> None:
        require_count(self, "num_codebooks", "codebook_size", "code_dim")
        require_count(self, "quantizer_seed", minimum=0)
        require_non_negative(self, "feature_grad_mult", "feature_penalty_weight")
        if self.encoder.hop % MEL_HOP:
            fail(self, "encoder", f"front-end hop {self.encoder.hop} is not a multiple of the log-mel hop")


def normalised_logmel(wave: Tensor) -> Tensor:
    """(S,) -> (M, N) kaldi log-mel (no dither), each bin standardised over the utterance's frames."""
    mel = kaldi.fbank(wave[None].float(), sample_frequency=SAMPLE_RATE, num_mel_bins=MEL_BINS, dither=0.0)
    mean = mel.mean(dim=0, keepdim=True)
    var = mel.var(dim=0, unbiased=False, keepdim=True)
    return (mel - mean) / torch.sqrt(var + NORM_EPS)


def stack_frames(mel: Tensor, stack: int, num_frames: int) -> tuple[Tensor, Tensor]:
    """(M, N) -> (T, stack * N) with row t = frames [t * stack, (t + 1) * stack), and (T,) True where that stack
    lies inside the M frames (rows past them are zeros)."""
    full = min(mel.shape[0] // stack, num_frames)
    out = mel.new_zeros(num_frames, stack * mel.shape[1])
    out[:full] = mel[: full * stack].reshape(full, stack * mel.shape[1])  # (full, stack * N), frame-major
    return out, torch.arange(num_frames, device=mel.device) < full


def nearest_code(x: Tensor, projection: Tensor, codebooks: Tensor) -> Tensor:
    """(..., P) features, (G, P, E) projections, (G, V, E) unit codebooks -> (..., G) index of the codeword nearest
    to each L2-normalised projection (argmax of the cosine: equal to the smallest L2 distance for unit vectors)."""
    projected = torch.einsum("...p,gpe->...ge", x, projection)  # (..., G, E)
    unit = nn.functional.normalize(projected, dim=-1)
    return torch.einsum("...ge,gve->...gv", unit, codebooks).argmax(dim=-1)


class RandomProjectionQuantizer(nn.Module):
    """The frozen target maker: buffers only (saved with the model, never trained)."""

    def __init__(self, input_dim: int, cfg: BestRqConfig) -> None:
        super().__init__()
        generator = torch.Generator().manual_seed(cfg.quantizer_seed)  # independent of the trunk's init
        projection = torch.randn(cfg.num_codebooks, input_dim, cfg.code_dim, generator=generator)
        codebooks = torch.randn(cfg.num_codebooks, cfg.codebook_size, cfg.code_dim, generator=generator)
        self.register_buffer("projection", projection)  # (G, P, E): its scale is irrelevant (normalised after)
        self.register_buffer("codebooks", nn.functional.normalize(codebooks, dim=-1))  # (G, V, E) unit rows

    def forward(self, stacked: Tensor) -> Tensor:
        """(..., P) -> (..., G) codes."""
        return nearest_code(stacked.float(), self.projection.float(), self.codebooks.float())


class BestRq(nn.Module):
    """Trunk + span masker + frozen random-projection quantiser + one softmax head per codebook."""

    def __init__(self, cfg: BestRqConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.encoder = Encoder(cfg.encoder)
        self.masker = SpanMasker(cfg.encoder.dim, cfg.masking)
        self.stack = self.encoder.hop // MEL_HOP  # log-mel frames per encoder frame
        self.quantizer = RandomProjectionQuantizer(self.stack * MEL_BINS, cfg)
        self.heads = nn.Linear(cfg.encoder.dim, cfg.num_codebooks * cfg.codebook_size)

    @torch.no_grad()
    def targets(self, wave: Tensor, lengths: Tensor | None, num_frames: int) -> Tensor:
        """(B, S) waveforms, (B,) lengths -> (B, T, G) codes of each encoder frame (NO_TARGET: no full stack)."""
        rows = []
        with torch.autocast(device_type=wave.device.type, enabled=False):
            for b in range(wave.shape[0]):
                valid = wave[b] if lengths is None else wave[b, : int(lengths[b])]
                if valid.shape[0] < MEL_WINDOW:
                    raise ValueError(f"row {b}: {valid.shape[0]} samples, under the {MEL_WINDOW}-sample mel window")
                stacked, inside = stack_frames(normalised_logmel(valid), self.stack, num_frames)  # (T, P), (T,)
                rows.append(self.quantizer(stacked).masked_fill(~inside[:, None], NO_TARGET))  # (T, G)
        return torch.stack(rows)

    def forward(self, wave: Tensor, lengths: Tensor | None = None, context: StepContext = EVAL) -> Output:
        cfg = self.cfg
        front = self.encoder.extract(wave, lengths, grad_mult=cfg.feature_grad_mult)
        x, mask = self.masker(front.projected, front.lengths, generator=context.generator)  # (B, T, D), (B, T)
        encoded = self.encoder.transformer(x, front.padding_mask, layerdrop_seed=context.layerdrop_seed).last
        targets = self.targets(wave, lengths, encoded.shape[1])  # (B, T, G)
        valid = torch.ones_like(mask) if front.padding_mask is None else ~front.padding_mask
        predicted = mask & valid & (targets[..., 0] != NO_TARGET)  # (B, T): masked frames with a target

        metrics: dict[str, Tensor] = {}
        with torch.autocast(device_type=wave.device.type, enabled=False):  # loss maths in fp32
            logits = self.heads(encoded[predicted].float())  # (K, G * V) for the K predicted frames
            logits = logits.view(-1, cfg.num_codebooks, cfg.codebook_size)  # (K, G, V)
            wanted = targets[predicted]  # (K, G)
            # mean over codebooks, summed over frames: the loss per frame does not grow with G
            ce = nn.functional.cross_entropy(logits.flatten(0, 1), wanted.flatten(), reduction="sum")
            ce = ce / cfg.num_codebooks
            sample_size = predicted.sum()
            penalty = cfg.feature_penalty_weight * front.penalty * sample_size
            loss = ce + penalty
        with torch.no_grad():
            hits = (logits.argmax(dim=-1) == wanted).float()  # (K, G)
            count = max(int(sample_size), 1)
            for g in range(cfg.num_codebooks):
                metrics[f"accuracy_masked_{g}"] = hits[:, g].sum() / count
            metrics["target_perplexity"] = _code_perplexity(targets[valid & (targets[..., 0] != NO_TARGET)][:, 0],
                                                            cfg.codebook_size)  # fmt: skip
            metrics["masked_frames"] = mask.sum().detach()
        losses = {"masked": ce.detach(), "penalty": penalty.detach()}
        return Output(loss=loss, sample_size=sample_size, losses=losses, metrics=metrics)


def _code_perplexity(codes: Tensor, size: int) -> Tensor:
    """exp(entropy) of the batch's codes of codebook 0: how many codewords the targets use (1 .. V)."""
    if codes.numel() == 0:
        return torch.zeros(())
    p = torch.bincount(codes, minlength=size).float() / codes.numel()
    return torch.exp(-(p * torch.log(p.clamp(min=1e-12))).sum())


def bestrq_base() -> BestRqConfig:
    return BestRqConfig()


def bestrq_tiny() -> BestRqConfig:
    """The demo trunk; 256 codewords (the demo corpus has ~64 phones), masking as tiny HuBERT's recipe."""
    return BestRqConfig(
        encoder=tiny_encoder(),
        masking=MaskingConfig(mask_prob=0.35, mask_length=5),
        codebook_size=256,
        feature_grad_mult=1.0,
    )
