"""Analytic FLOPs of the pretraining families, for throughput and model-FLOPs utilisation (MFU).

Counts matrix products and convolutions only, two FLOPs per multiply-add, as `torch.utils.flop_counter`
does; norms, activations, softmax and other elementwise work are left out (under 1 % of a BASE step).
Counted per utterance at its own length ("useful" FLOPs: padding is waste, not work). A training update
costs three forward passes: the backward of a product is two products of the same size (Kaplan et al. 2020;
PaLM's MFU), which the frozen first-conv input gradient makes a slight overestimate (<0.1 % for BASE).

Shapes: S samples, T frames, C conv channels, D model width, F final dim, M masked frames.
"""

from __future__ import annotations

from collections.abc import Iterable

from ssl_audio.models.bestrq import MEL_BINS, MEL_HOP, MEL_WINDOW, BestRqConfig
from ssl_audio.models.ctc import target_lengths
from ssl_audio.models.encoder import EncoderConfig
from ssl_audio.models.finetune import LABEL_PAD, FineTuneConfig, seq2seq_config
from ssl_audio.models.hubert import HubertConfig
from ssl_audio.models.seq2seq import Seq2SeqConfig
from ssl_audio.models.wav2vec2 import Wav2Vec2Config

TRAINING_FACTOR = 3  # forward + backward (twice the forward)
FFT_BINS = 257  # kaldi's fbank: a 512-point FFT of each 400-sample window, times the (257, mel) filterbank


def extractor_flops(cfg: EncoderConfig, samples: int) -> tuple[float, int]:
    """FLOPs of the front-end on one utterance of `samples`, and the frames it yields (its config counts them)."""
    return cfg.frontend.flops(samples)


def transformer_flops(cfg: EncoderConfig, frames: int) -> float:
    """Feature projection, positional convolution and every layer on one utterance of `frames`."""
    dim, t = cfg.dim, frames
    channels = cfg.frontend.out_channels
    flops = 2.0 * channels * dim * t if cfg.feature_projection else 0.0  # feature projection (none in Whisper)
    if cfg.positions == "conv":  # Whisper's sinusoids are a table: no products
        pos_frames = t + 2 * (cfg.pos_conv_kernel // 2) - cfg.pos_conv_kernel + 1  # an even kernel gives one extra
        flops += 2.0 * dim * (dim // cfg.pos_conv_groups) * cfg.pos_conv_kernel * pos_frames
    per_layer = 2.0 * t * (4 * dim * dim + 2 * dim * cfg.ffn_dim)  # QKV, output, two FFN matrices
    per_layer += 4.0 * t * t * dim  # scores Q K^T and the weighted sum of V, over all heads
    if cfg.relative_bias:  # WavLM's gate: a (D/H -> 8) linear per head and frame
        per_layer += 2.0 * t * dim * 8
    return flops + cfg.num_layers * per_layer


def decoder_flops(cfg: Seq2SeqConfig, positions: int, frames: int) -> float:
    """The seq2seq decoder's forward on one utterance: U = `positions` (labels + 1) against T = `frames`."""
    d, u, t = cfg.dim, positions, frames
    self_attention = 2.0 * u * 4 * d * d + 4.0 * u * u * d  # QKV and output; scores and weighted sum (causal: full)
    cross = 2.0 * u * 2 * d * d + 2.0 * t * cfg.memory_dim * 2 * d + 4.0 * u * t * d  # Q, out; K V of the memory
    ffn = 2.0 * u * 2 * d * cfg.ffn
    return cfg.layers * (self_attention + cross + ffn) + 2.0 * u * d * cfg.vocab_size  # output projection


def decoder_label_lengths(cfg: object, labels: list) -> list[int] | None:
    """Target tokens per utterance of a host batch's labels when `cfg` has a seq2seq decoder, else None."""
    if not isinstance(cfg, FineTuneConfig) or cfg.head != "seq2seq" or not labels:
        return None
    return target_lengths(labels[0], LABEL_PAD).tolist()


def masked_frames_expected(frames: int, mask_prob: float) -> float:
    """About how many frames span masking covers (the caller passes the real count when it has it)."""
    return min(frames, mask_prob * frames)


def bestrq_target_flops(cfg: BestRqConfig, samples: int, frames: int) -> float:
    """BEST-RQ's targets on one utterance: the mel filterbank product, the projection and the codeword match."""
    mel_frames = max((samples - MEL_WINDOW) // MEL_HOP + 1, 0)
    stacked = cfg.encoder.hop // MEL_HOP * MEL_BINS
    per_frame = 2.0 * cfg.num_codebooks * cfg.code_dim * (stacked + cfg.codebook_size)  # every frame, stack or not
    return 2.0 * mel_frames * FFT_BINS * MEL_BINS + frames * per_frame


def head_flops(cfg: HubertConfig | Wav2Vec2Config | BestRqConfig, frames: int, masked: float) -> float:
    """The objective's projections and logits on one utterance."""
    dim = cfg.encoder.dim
    if isinstance(cfg, BestRqConfig):  # a softmax head per codebook on the masked frames
        return 2.0 * masked * dim * cfg.num_codebooks * cfg.codebook_size
    if isinstance(cfg, FineTuneConfig):  # CTC/seq2seq: CTC logits on every frame; classify: one row
        return 2.0 * frames * dim * len(cfg.vocab) if cfg.head != "classify" else 0.0  # the decoder: decoder_flops
    if isinstance(cfg, HubertConfig):
        sets = len(cfg.num_classes) if cfg.untie_final_proj else 1
        projection = 2.0 * frames * dim * cfg.final_dim * sets
        return projection + sum(2.0 * frames * cfg.final_dim * n for n in cfg.num_classes)  # logits on every frame
    q, channels = cfg.quantizer, cfg.encoder.frontend.out_channels
    quantizer = 2.0 * masked * channels * q.num_groups * q.num_entries  # codeword logits
    quantizer += 2.0 * masked * q.num_entries * q.code_dim  # one-hot times codebook
    projections = 2.0 * masked * (q.code_dim + dim) * cfg.final_dim  # targets and context into F
    logits = 2.0 * masked * (1 + cfg.num_negatives) * cfg.final_dim  # cosine against target + K negatives
    return quantizer + projections + logits


def forward_flops(
    cfg: HubertConfig | Wav2Vec2Config | BestRqConfig,
    sample_lengths: Iterable[int],
    masked_frames: float | None = None,
    label_lengths: Iterable[int] | None = None,
) -> float:
    """FLOPs of one forward pass over utterances of these lengths (samples).

    `masked_frames`: the batch's masked-frame count (wav2vec 2.0's heads work on masked frames only);
    None estimates it from the mask probability. `label_lengths`: each utterance's target tokens, for a
    seq2seq fine-tuning head's decoder (fed sos + labels); None leaves the decoder out.
    """
    lengths = [int(s) for s in sample_lengths]
    fronts = [extractor_flops(cfg.encoder, s) for s in lengths]
    total_frames = sum(t for _, t in fronts)
    if masked_frames is None:
        masked_frames = sum(masked_frames_expected(t, cfg.masking.mask_prob) for _, t in fronts)
    flops = 0.0
    for conv, t in fronts:
        share = masked_frames * t / total_frames if total_frames else 0.0  # this utterance's masked frames
        flops += conv + transformer_flops(cfg.encoder, t) + head_flops(cfg, t, share)
    if isinstance(cfg, FineTuneConfig) and cfg.head == "seq2seq" and label_lengths is not None:
        decoder = seq2seq_config(cfg)
        flops += sum(decoder_flops(decoder, n + 1, t) for n, (_, t) in zip(label_lengths, fronts, strict=True))
    if isinstance(cfg, BestRqConfig):  # its targets are computed from the audio in forward (no gradient)
        flops += sum(bestrq_target_flops(cfg, s, t) for s, (_, t) in zip(lengths, fronts))
    return flops


def training_flops(
    cfg: HubertConfig | Wav2Vec2Config | BestRqConfig,
    sample_lengths: Iterable[int],
    masked_frames: float | None = None,
    label_lengths: Iterable[int] | None = None,
) -> float:
    """FLOPs of one forward and backward pass (3x the forward)."""
    return TRAINING_FACTOR * forward_flops(cfg, sample_lengths, masked_frames, label_lengths)
