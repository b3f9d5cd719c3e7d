"""A small transformer decoder with cross-attention to the encoder, and the hybrid CTC/attention loss
λ·CTC + (1 − λ)·attention (Watanabe et al. 2017; ESPnet's `ctc_weight`).

One vocabulary of V units serves both heads (ESPnet's layout): the CTC blank at `blank_id` (0), the labels,
and the start/end symbol (`sos_id` = `eos_id` = V − 1 by default). The decoder never emits the blank or a
separate start symbol; the CTC head never needs sos/eos. Search lives in seq2seq_search.py.

Shapes: B batch, T encoder frames, M encoder width, U decoder positions (labels + 1), D decoder width,
V vocabulary.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from einops import rearrange
from torch import Tensor, nn

from ssl_audio.nn.attention import SelfAttention
from ssl_audio.nn.cross_attention import CrossAttention, causal_bias
from ssl_audio.nn.transformer import FeedForward

IGNORE = -100  # target id that the cross-entropy skips (padding after the end symbol)
POSITIONS = ("sinusoidal", "learned")


@dataclass(frozen=True, kw_only=True)
class Seq2SeqConfig:
    """Defaults: ESPnet egs2/librispeech_100/asr1 conf/tuning/train_asr_conformer.yaml (decoder_conf, model_conf;
    its decoder width is the encoder's output_size, 256)."""

    vocab_size: int  # V: blank + labels + sos/eos
    memory_dim: int  # M: width of the encoder output the decoder attends to
    dim: int = 256  # D: ESPnet output_size 256
    layers: int = 6  # ESPnet num_blocks 6
    heads: int = 4  # ESPnet attention_heads 4
    ffn: int = 2048  # ESPnet linear_units 2048
    dropout: float = 0.1  # residual, attention and embedding dropout (ESPnet dropout_rate 0.1)
    positions: str = "sinusoidal"  # "sinusoidal" (Vaswani et al.; any length) or "learned" (up to max_positions)
    max_positions: int = 512  # rows of the learned position table: the longest decoder input
    blank_id: int = 0  # CTC blank in the shared vocabulary; never emitted by the decoder
    sos_id: int | None = None  # None: V - 1
    eos_id: int | None = None  # None: V - 1 (one symbol starts and ends, as in ESPnet)
    label_smoothing: float = 0.1  # ESPnet lsm_weight 0.1
    ctc_weight: float = 0.3  # λ of λ·CTC + (1 − λ)·attention in training; ESPnet ctc_weight 0.3

    def __post_init__(self) -> None:
        if self.vocab_size < 3:
            raise ValueError(f"seq2seq.vocab_size must be >= 3 (blank, a label, sos/eos), got {self.vocab_size}")
        for key in ("memory_dim", "dim", "layers", "heads", "ffn", "max_positions"):
            if getattr(self, key) < 1:
                raise ValueError(f"seq2seq.{key} must be >= 1, got {getattr(self, key)}")
        if self.dim % self.heads:
            raise ValueError(f"seq2seq.dim {self.dim} is not divisible by seq2seq.heads {self.heads}")
        if self.positions not in POSITIONS:
            raise ValueError(f"seq2seq.positions must be one of {POSITIONS}, got {self.positions!r}")
        for key in ("blank_id", "sos_id", "eos_id"):
            value = getattr(self, key)
            if value is not None and not 0 <= value < self.vocab_size:
                raise ValueError(f"seq2seq.{key} {value} is outside the vocabulary of {self.vocab_size}")
        if self.blank_id in (self.sos, self.eos):
            raise ValueError(f"seq2seq.blank_id {self.blank_id} must differ from sos {self.sos} and eos {self.eos}")
        if not 0.0 <= self.dropout < 1.0 or not 0.0 <= self.label_smoothing < 1.0:
            raise ValueError(
                f"seq2seq.dropout and seq2seq.label_smoothing must be in [0, 1), got {self.dropout}, "
                f"{self.label_smoothing}"
            )
        if not 0.0 <= self.ctc_weight <= 1.0:
            raise ValueError(f"seq2seq.ctc_weight must be in [0, 1], got {self.ctc_weight}")

    @property
    def sos(self) -> int:
        return self.vocab_size - 1 if self.sos_id is None else self.sos_id

    @property
    def eos(self) -> int:
        return self.vocab_size - 1 if self.eos_id is None else self.eos_id


def sinusoids(length: int, dim: int, device: torch.device | None = None) -> Tensor:
    """(U, D) fixed positions: sin on even channels, cos on odd, wavelengths 2π ... 10000·2π (Vaswani et al.)."""
    position = torch.arange(length, dtype=torch.float32, device=device)[:, None]
    rate = torch.exp(torch.arange(0, dim, 2, dtype=torch.float32, device=device) * (-math.log(10_000.0) / dim))
    table = torch.zeros(length, dim, device=device)
    table[:, 0::2] = torch.sin(position * rate)
    table[:, 1::2] = torch.cos(position * rate)[:, : dim // 2]
    return table


class DecoderLayer(nn.Module):
    """Pre-LN: causal self-attention, cross-attention to the memory, feed-forward; each with a residual."""

    def __init__(
        self, attention: SelfAttention, cross: CrossAttention, feed_forward: FeedForward, *, dropout: float
    ) -> None:
        super().__init__()
        dim = attention.out.out_features
        self.attention, self.cross, self.feed_forward = attention, cross, feed_forward
        self.attention_norm, self.cross_norm, self.ffn_norm = nn.LayerNorm(dim), nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.dropout = nn.Dropout(dropout)

    def forward(
        self, x: Tensor, causal: Tensor, memory: Tensor, memory_padding: Tensor | None, keys_values: Tensor | None
    ) -> Tensor:
        x = x + self.dropout(self.attention(self.attention_norm(x), None, causal))
        x = x + self.dropout(self.cross(self.cross_norm(x), memory, memory_padding, keys_values))
        return x + self.feed_forward(self.ffn_norm(x))

    def step(
        self, x: Tensor, past: tuple[Tensor, Tensor], memory: Tensor, memory_padding: Tensor | None, keys_values: Tensor
    ) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        """One new position x (N, 1, D) against the self-attention keys and values of the earlier ones, past
        (2 of (N, H, u, E)) -> its output and the keys and values with it appended. Causal by construction: the
        new position is the last one, so it may see them all."""
        h = self.attention_norm(x)
        q, k, v = rearrange(
            self.attention.qkv(h), "b t (three h e) -> three b h t e", three=3, h=self.attention.num_heads
        )
        k, v = torch.cat([past[0], k], dim=2), torch.cat([past[1], v], dim=2)
        y = nn.functional.scaled_dot_product_attention(q, k, v)  # (N, H, 1, E)
        x = x + self.attention.out(rearrange(y, "b h t e -> b t (h e)"))
        x = x + self.cross(self.cross_norm(x), memory, memory_padding, keys_values)
        return x + self.feed_forward(self.ffn_norm(x)), (k, v)


@dataclass(frozen=True, kw_only=True)
class DecoderState:
    """What incremental decoding keeps between steps: every layer's self-attention keys and values so far."""

    past: list[tuple[Tensor, Tensor]]  # per layer, 2 of (N, H, u, E)
    length: int  # u: positions decoded so far

    def select(self, rows: Tensor) -> DecoderState:
        """The states of hypotheses `rows` (a beam's surviving parents, repeats allowed)."""
        return DecoderState(past=[(k[rows], v[rows]) for k, v in self.past], length=self.length)


class Seq2SeqDecoder(nn.Module):
    """Token embedding (scaled by √D) + positions, pre-LN layers, final LayerNorm, output projection to V."""

    def __init__(self, config: Seq2SeqConfig) -> None:
        super().__init__()
        self.config = config
        d = config.dim
        self.embedding = nn.Embedding(config.vocab_size, d)
        # N(0, 1/D), so that the √D-scaled embedding has unit variance like the positions (fairseq's transformer)
        nn.init.normal_(self.embedding.weight, mean=0.0, std=d**-0.5)
        self.learned_positions = nn.Embedding(config.max_positions, d) if config.positions == "learned" else None
        self.layers = nn.ModuleList(
            DecoderLayer(
                SelfAttention(d, config.heads, dropout=config.dropout),
                CrossAttention(d, config.heads, memory_dim=config.memory_dim, dropout=config.dropout),
                FeedForward(d, config.ffn, dropout=config.dropout),
                dropout=config.dropout,
            )
            for _ in range(config.layers)
        )
        self.norm = nn.LayerNorm(d)
        self.out = nn.Linear(d, config.vocab_size)
        self.dropout = nn.Dropout(config.dropout)

    def memory_cache(self, memory: Tensor) -> list[Tensor]:
        """Every layer's cross-attention keys and values of a (B, T, M) memory: a search computes them once, not
        once per step (at T = 250, M = 768 they are most of a step's cost)."""
        return [layer.cross.keys_values(memory) for layer in self.layers]

    def forward(
        self,
        tokens: Tensor,
        memory: Tensor,
        memory_padding: Tensor | None = None,
        *,
        cache: list[Tensor] | None = None,
    ) -> Tensor:
        """tokens (B, U) starting with sos; memory (B, T, M); memory_padding (B, T) True at padded frames;
        cache: `memory_cache(memory)`, if at hand -> logits (B, U, V), position u predicting token u + 1."""
        batch, length = tokens.shape
        if memory.dim() != 3 or memory.shape[0] != batch or memory.shape[2] != self.config.memory_dim:
            raise ValueError(
                f"decoder memory must be (B={batch}, T, M={self.config.memory_dim}), got {tuple(memory.shape)}"
            )
        if memory_padding is not None and memory_padding.shape != memory.shape[:2]:
            raise ValueError(
                f"memory padding {tuple(memory_padding.shape)} does not match memory {tuple(memory.shape)}"
            )
        x = self.embedding(tokens) * math.sqrt(self.config.dim)
        if self.learned_positions is None:
            x = x + sinusoids(length, self.config.dim, tokens.device).to(x.dtype)
        else:
            if length > self.config.max_positions:
                raise ValueError(
                    f"decoder input of {length} tokens exceeds seq2seq.max_positions {self.config.max_positions}"
                )
            x = x + self.learned_positions.weight[:length]
        x = self.dropout(x)
        causal = causal_bias(length, tokens.device, x.dtype)
        for i, layer in enumerate(self.layers):
            x = layer(x, causal, memory, memory_padding, None if cache is None else cache[i])
        return self.out(self.norm(x))

    def initial_state(
        self, batch: int, device: torch.device | None = None, dtype: torch.dtype | None = None
    ) -> DecoderState:
        """The state before the start symbol: no positions yet."""
        heads = self.config.heads
        empty = torch.zeros(batch, heads, 0, self.config.dim // heads, device=device, dtype=dtype)
        return DecoderState(past=[(empty, empty) for _ in self.layers], length=0)

    def step(
        self,
        tokens: Tensor,
        state: DecoderState,
        memory: Tensor,
        memory_padding: Tensor | None = None,
        *,
        cache: list[Tensor],
    ) -> tuple[Tensor, DecoderState]:
        """Incremental decoding (inference): the newest token (N,) of each hypothesis, its state, the memory
        (N, T, M) and its `memory_cache` -> next-token logits (N, V) and the state with the token in it. Equal to
        forward's last position on the whole prefix; a step costs one position, not the whole prefix."""
        u = state.length
        x = self.embedding(tokens[:, None]) * math.sqrt(self.config.dim)  # (N, 1, D)
        if self.learned_positions is None:
            x = x + sinusoids(u + 1, self.config.dim, tokens.device)[u:].to(x.dtype)
        else:
            if u >= self.config.max_positions:
                raise ValueError(f"decoder position {u} exceeds seq2seq.max_positions {self.config.max_positions}")
            x = x + self.learned_positions.weight[u : u + 1]
        past = []
        for i, layer in enumerate(self.layers):
            x, kv = layer.step(x, state.past[i], memory, memory_padding, cache[i])
            past.append(kv)
        return self.out(self.norm(x))[:, 0], DecoderState(past=past, length=u + 1)


@dataclass(frozen=True, kw_only=True)
class DecoderTargets:
    inputs: Tensor  # (B, U + 1): sos, labels, then eos as filler (never read before the label it predicts)
    outputs: Tensor  # (B, U + 1): labels, eos, then IGNORE


def decoder_targets(labels: Tensor, lengths: Tensor, *, sos: int, eos: int) -> DecoderTargets:
    """Teacher forcing from padded (B, U) labels with (B,) lengths: input [sos y], output [y eos]."""
    if labels.dim() != 2 or lengths.shape != (labels.shape[0],):
        raise ValueError(
            f"labels must be (B, U) with (B,) lengths, got {tuple(labels.shape)} and {tuple(lengths.shape)}"
        )
    if lengths.numel() and (int(lengths.max()) > labels.shape[1] or int(lengths.min()) < 0):
        raise ValueError(f"label lengths {lengths.tolist()} do not fit labels of shape {tuple(labels.shape)}")
    batch, width = labels.shape
    position = torch.arange(width + 1, device=labels.device)[None, :]  # (1, U + 1)
    padded = torch.cat([labels, labels.new_full((batch, 1), eos)], dim=1)  # (B, U + 1)
    inside = position < lengths[:, None]
    outputs = torch.where(inside, padded, torch.where(position == lengths[:, None], eos, IGNORE))
    inputs = torch.cat([labels.new_full((batch, 1), sos), torch.where(inside[:, :-1], labels, eos)], dim=1)
    return DecoderTargets(inputs=inputs, outputs=outputs)


@dataclass(frozen=True, kw_only=True)
class HybridLoss:
    loss: Tensor  # λ·ctc + (1 − λ)·attention
    ctc: Tensor  # CTC negative log-likelihood summed over an utterance, mean over utterances
    attention: Tensor  # label-smoothed cross-entropy summed over an utterance's [y eos], mean over utterances
    accuracy: Tensor  # fraction of decoder output tokens predicted right (teacher-forced)


def _at_least_fp32(x: Tensor) -> Tensor:
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x


def hybrid_loss(
    ctc_logits: Tensor,
    frame_lengths: Tensor,
    decoder_logits: Tensor,
    targets: DecoderTargets,
    labels: Tensor,
    label_lengths: Tensor,
    *,
    ctc_weight: float,
    label_smoothing: float,
    blank: int = 0,
) -> HybridLoss:
    """ctc_logits (B, T, V) with (B,) frame_lengths; decoder_logits (B, U + 1, V) from targets.inputs; labels
    (B, U) with (B,) label_lengths. Both terms are per utterance, summed over its tokens and averaged over the
    batch (ESPnet's `length_normalized_loss: false`, fairseq's `sentence_avg`), so λ weighs like quantities.
    Both run in fp32 or wider, outside autocast; CTC with zero_infinity, so an utterance with more labels than
    frames adds 0 instead of inf."""
    vocab = ctc_logits.shape[-1]
    inside = torch.arange(labels.shape[1], device=labels.device)[None, :] < label_lengths[:, None]  # (B, U)
    bad = inside & ((labels == blank) | (labels < 0) | (labels >= vocab))
    if bool(bad.any()):
        b, u = (int(i) for i in bad.nonzero()[0])
        raise ValueError(
            f"label {int(labels[b, u])} at utterance {b}, position {u} is the blank ({blank}) or outside the "
            f"vocabulary of {vocab}"
        )
    if decoder_logits.shape[:2] != targets.outputs.shape:
        raise ValueError(
            f"decoder logits {tuple(decoder_logits.shape)} do not match decoder targets {tuple(targets.outputs.shape)}"
        )
    with torch.autocast(device_type=ctc_logits.device.type, enabled=False):
        log_probs = _at_least_fp32(ctc_logits).log_softmax(-1).transpose(0, 1)  # (T, B, V) as ctc_loss wants
        batch = max(1, labels.shape[0])
        ctc = (
            nn.functional.ctc_loss(
                log_probs, labels, frame_lengths, label_lengths, blank=blank, reduction="sum", zero_infinity=True
            )
            / batch
        )
        logits = _at_least_fp32(decoder_logits)
        attention = (
            nn.functional.cross_entropy(
                logits.flatten(0, 1),
                targets.outputs.flatten(),
                ignore_index=IGNORE,
                label_smoothing=label_smoothing,
                reduction="sum",
            )
            / batch
        )
        counted = targets.outputs != IGNORE
        right = ((logits.argmax(-1) == targets.outputs) & counted).sum().to(logits.dtype)
        accuracy = right / counted.sum().clamp(min=1)
    return HybridLoss(
        loss=ctc_weight * ctc + (1.0 - ctc_weight) * attention, ctc=ctc, attention=attention, accuracy=accuracy
    )
