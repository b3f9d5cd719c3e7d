"""The fine-tuning family: a pretrained encoder (keys `encoder.*` as in every pretraining family) plus a head.

Selective unfreezing is decided inside forward by the update (fairseq's freeze_finetune_updates), with
`torch.no_grad()` around the frozen part: every parameter is in the optimizer and in DDP from the start, a frozen
one just gets no gradient (AdamW then leaves it, and its moments, untouched), and unfreezing needs no re-wrap.

  head ctc       per-frame logits over `vocab` (id 0 = blank/pad, "|" = word delimiter), CTC loss per sentence
  head classify  pooled utterance logits over `vocab` (class names): cross-entropy, or BCE when multilabel
  head seq2seq   the CTC head plus a transformer decoder (models/seq2seq.py) attending to the encoder, trained on
                 λ·CTC + (1 − λ)·attention (hybrid CTC/attention, λ = ctc_weight); the vocabulary's <s> starts and
                 its </s> ends the decoder's output
Validation decodes (CER/WER): greedy, or a beam of decode.beam (CTC prefix beam; seq2seq: attention beam with
joint CTC scoring at decode.ctc_weight).

Shapes: B batch, S samples, T frames, D model width, V vocabulary or classes, L target tokens.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import Tensor, nn

from ssl_audio.checks import fail, require_count, require_non_negative, require_probability
from ssl_audio.models.ctc import (
    BLANK,
    BOS,
    EOS,
    ctc_loss_sum,
    edit_counts,
    frames_needed,
    ids_to_text,
    target_lengths,
)
from ssl_audio.models.ctc_decoding import best_tokens, ctc_beam_search_batch, ctc_greedy_batch
from ssl_audio.models.encoder import Encoder, EncoderConfig
from ssl_audio.models.finetune_heads import ClassifyHead, CTCHead
from ssl_audio.models.output import Output
from ssl_audio.models.seq2seq import Seq2SeqConfig, Seq2SeqDecoder, decoder_targets, hybrid_loss
from ssl_audio.models.seq2seq_search import beam_search_batch, greedy_search
from ssl_audio.models.step_context import EVAL, StepContext
from ssl_audio.models.wav2vec2 import tiny_encoder
from ssl_audio.nn.masking import MaskingConfig, SpanMasker

LABEL_PAD = -100  # past the end of a target row (data/collate.py's padding value for labels)
HEAD_KINDS = ("ctc", "classify", "seq2seq")
TRANSCRIBING = ("ctc", "seq2seq")  # heads that output text


@dataclass(frozen=True, kw_only=True)
class DecoderConfig:
    """The seq2seq head's decoder (models/seq2seq.Seq2SeqConfig less what the vocabulary and the encoder give);
    defaults: ESPnet's librispeech_100 conformer recipe."""

    dim: int = 256
    layers: int = 6
    heads: int = 4
    ffn: int = 2048
    dropout: float = 0.1
    positions: Literal["sinusoidal", "learned"] = "sinusoidal"
    max_positions: int = 512
    label_smoothing: float = 0.1


@dataclass(frozen=True, kw_only=True)
class DecodeConfig:
    """Validation decoding (and `ssl-audio transcribe`'s default)."""

    beam: int = 1  # 1: greedy (CTC best path; seq2seq greedy attention); more: beam search of this width
    ctc_weight: float = 0.3  # seq2seq beam: λ of λ·CTC-prefix + (1 − λ)·attention (ESPnet decode_asr.yaml 0.3)

    def __post_init__(self) -> None:
        require_count(self, "beam", minimum=1)
        require_probability(self, "ctc_weight")


def finetune_encoder(**changes: object) -> EncoderConfig:
    """BASE trunk with fairseq's fine-tuning regularisation (Wav2Vec2AsrConfig: dropout 0, attention dropout 0,
    activation dropout 0.1, dropout_input 0; layerdrop 0.1 in base_10m/1h/100h, 0.05 in base_10h)."""
    values: dict = dict(
        dropout=0.0, attention_dropout=0.0, activation_dropout=0.1, projection_dropout=0.0, layerdrop=0.1
    )
    values.update(changes)
    return EncoderConfig(**values)  # type: ignore[arg-type]


@dataclass(frozen=True, kw_only=True)
class FineTuneConfig:
    """Defaults: fairseq wav2vec 2.0 BASE fine-tuning on 10 min / 1 h (base_10m.yaml, base_1h.yaml)."""

    # The trunk; with init.checkpoint its architecture is the checkpoint's (train/config.py's resolve_config).
    encoder: EncoderConfig = field(default_factory=finetune_encoder)
    # Fine-tuning masks on the encoder input: fairseq mask_prob 0.65, span 10; mask_channel_prob 0.25 (10m, 1h) /
    # 0.5 (10h, 100h), mask_channel_length 64.
    masking: MaskingConfig = field(
        default_factory=lambda: MaskingConfig(mask_prob=0.65, mask_length=10, channel_prob=0.25, channel_length=64)
    )
    head: Literal["ctc", "classify", "seq2seq"] = "ctc"
    vocab: tuple[str, ...] = ()  # ctc: token of each id (0 = "<pad>", the blank); classify: class names
    pooling: Literal["mean", "attentive"] = "mean"  # classify only
    multilabel: bool = False  # classify: several labels per utterance, BCE over classes
    head_dropout: float = 0.0  # fairseq final_dropout: 0.0 in the BASE recipes
    freeze_frontend: bool = True  # the conv front-end never trains (fairseq feature_grad_mult 0.0)
    freeze_updates: int = 10_000  # the whole encoder frozen for these updates (fairseq freeze_finetune_updates)
    trainable_layers: int | None = None  # only the top k transformer layers train; 0: a frozen probe; None: all
    decoder: DecoderConfig = field(default_factory=DecoderConfig)  # seq2seq only
    ctc_weight: float = 0.3  # seq2seq: λ of the training loss λ·CTC + (1 − λ)·attention (ESPnet ctc_weight)
    decode: DecodeConfig = field(default_factory=DecodeConfig)

    def __post_init__(self) -> None:
        if self.head not in HEAD_KINDS:
            fail(self, "head", f"must be one of {', '.join(HEAD_KINDS)}, got {self.head!r}")
        if len(self.vocab) < 2:
            fail(self, "vocab", "needs at least 2 entries (set from the targets: finetune.train / finetune.vocab)")
        if len(set(self.vocab)) != len(self.vocab):
            fail(self, "vocab", "has repeated entries")
        require_probability(self, "head_dropout")
        require_count(self, "freeze_updates", minimum=0)
        require_non_negative(self, "trainable_layers")
        if self.trainable_layers is not None and self.trainable_layers > self.encoder.num_layers:
            fail(self, "trainable_layers", f"must be at most encoder.num_layers={self.encoder.num_layers}")
        require_probability(self, "ctc_weight")
        if self.head == "seq2seq" and (BOS not in self.vocab or EOS not in self.vocab):
            fail(self, "vocab", f"needs {BOS!r} and {EOS!r} for the seq2seq decoder (finetune/vocab.py's layout)")


def seq2seq_config(cfg: FineTuneConfig) -> Seq2SeqConfig:
    """The decoder over the fine-tuning vocabulary: blank <pad> (never emitted), starts at <s>, ends at </s>."""
    d = cfg.decoder
    return Seq2SeqConfig(
        vocab_size=len(cfg.vocab),
        memory_dim=cfg.encoder.dim,
        dim=d.dim,
        layers=d.layers,
        heads=d.heads,
        ffn=d.ffn,
        dropout=d.dropout,
        positions=d.positions,
        max_positions=d.max_positions,
        blank_id=BLANK,
        sos_id=cfg.vocab.index(BOS),
        eos_id=cfg.vocab.index(EOS),
        label_smoothing=d.label_smoothing,
        ctc_weight=cfg.ctc_weight,
    )


def finetune_base() -> FineTuneConfig:
    return FineTuneConfig(vocab=("<pad>", "|"))  # vocab is resolved from the targets


def finetune_tiny() -> FineTuneConfig:
    """The demo trunk (every family's tiny preset) with light masking, no warm-up freeze."""
    return FineTuneConfig(
        encoder=tiny_encoder(dropout=0.0, attention_dropout=0.0, projection_dropout=0.0, layerdrop=0.0),
        masking=MaskingConfig(mask_prob=0.3, mask_length=5, channel_prob=0.1, channel_length=8),
        vocab=("<pad>", "|"),
        freeze_updates=0,
    )


@dataclass(frozen=True, kw_only=True)
class Frozen:
    """What runs without gradients in one forward."""

    frontend: bool  # the conv front-end
    layers: int  # the input stage (projection, mask embedding, positional conv) and the first n layers


def frozen_parts(cfg: FineTuneConfig, step: int, training: bool) -> Frozen:
    num_layers = cfg.encoder.num_layers
    if not training or step < cfg.freeze_updates:
        layers = num_layers
    else:
        layers = num_layers - (num_layers if cfg.trainable_layers is None else cfg.trainable_layers)
    return Frozen(frontend=cfg.freeze_frontend or layers > 0, layers=layers)


def ctc_ids(log_probs: Tensor, frame_lengths: Tensor, beam: int) -> list[list[int]]:
    """(B, T, V) log-probs -> collapsed label ids per row: best path (beam 1) or CTC prefix beam search."""
    if beam == 1:
        return ctc_greedy_batch(log_probs, frame_lengths, blank=BLANK)
    return best_tokens(ctc_beam_search_batch(log_probs, frame_lengths, beam=beam, blank=BLANK))


class FineTune(nn.Module):
    """Encoder + fine-tuning masks + head. forward(wave, lengths, labels, context) -> Output."""

    def __init__(self, cfg: FineTuneConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.encoder = Encoder(cfg.encoder)
        self.masker = SpanMasker(cfg.encoder.dim, cfg.masking)
        dim, size = cfg.encoder.dim, len(cfg.vocab)
        if cfg.head in TRANSCRIBING:
            self.head: nn.Module = CTCHead(dim, size, cfg.head_dropout)
        else:
            self.head = ClassifyHead(dim, size, pooling=cfg.pooling, dropout=cfg.head_dropout)
        self.decoder = Seq2SeqDecoder(seq2seq_config(cfg)) if cfg.head == "seq2seq" else None

    def encode(
        self, wave: Tensor, lengths: Tensor | None, context: StepContext = EVAL
    ) -> tuple[Tensor, Tensor, Tensor | None]:
        """(B, S) -> encoder output (B, T, D), frame lengths (B,), padding mask (B, T); masked while training."""
        frozen = frozen_parts(self.cfg, context.step, self.training)
        outer = torch.is_grad_enabled()
        with torch.set_grad_enabled(outer and frozen.layers == 0):
            front = self.encoder.extract(wave, lengths, grad_mult=0.0 if frozen.frontend else 1.0)
            x = front.projected
            masking = self.cfg.masking
            if self.training and (masking.mask_prob > 0 or masking.channel_prob > 0):
                x, _ = self.masker(x, front.lengths, generator=context.generator)
        out = self.encoder.transformer(
            x, front.padding_mask, layerdrop_seed=context.layerdrop_seed, frozen_layers=frozen.layers
        )
        frame_lengths = front.lengths
        if frame_lengths is None:
            frame_lengths = torch.full((x.shape[0],), x.shape[1], dtype=torch.long, device=x.device)
        return out.last, frame_lengths, front.padding_mask

    def forward(
        self, wave: Tensor, lengths: Tensor | None, labels: Sequence[Tensor], context: StepContext = EVAL
    ) -> Output:
        """labels: one (B, L) tensor, LABEL_PAD past each row's end: token ids (ctc), the class id in column 0
        (classify), or the class ids of each row (multilabel)."""
        if len(labels) != 1 or labels[0].ndim != 2 or labels[0].shape[0] != wave.shape[0]:
            shapes = [tuple(t.shape) for t in labels]
            raise ValueError(f"fine-tuning expects one (batch, tokens) target tensor, got shapes {shapes}")
        encoded, frame_lengths, pad = self.encode(wave, lengths, context)
        targets = labels[0].to(wave.device)
        if self.cfg.head == "ctc":
            return self._ctc(self.head(encoded), frame_lengths, targets)
        if self.cfg.head == "seq2seq":
            return self._seq2seq(encoded, frame_lengths, pad, targets)
        return self._classify(self.head(encoded, pad), targets)

    @torch.no_grad()
    def transcribe_ids(
        self, encoded: Tensor, frame_lengths: Tensor, ctc_logits: Tensor | None = None, *, beam: int | None = None
    ) -> list[list[int]]:
        """Token ids of each row of the (B, T, D) encoder output (already collapsed: ids_to_text with
        group_tokens=False). beam None: decode.beam; 1: greedy."""
        beam = self.cfg.decode.beam if beam is None else beam
        if beam < 1:
            raise ValueError(f"beam width must be >= 1, got {beam}")
        logits = self.head(encoded) if ctc_logits is None else ctc_logits
        log_probs = torch.log_softmax(logits.float(), dim=-1)
        if self.decoder is None:
            return ctc_ids(log_probs, frame_lengths, beam)
        max_len = int(frame_lengths.max()) if frame_lengths.numel() else 0  # more labels than frames: no CTC path
        if beam == 1:
            return greedy_search(self.decoder, encoded, frame_lengths, max_len=max_len)
        found = beam_search_batch(
            self.decoder,
            encoded,
            frame_lengths,
            beam=beam,
            max_len=max_len,
            ctc_log_probs=log_probs,
            ctc_weight=self.cfg.decode.ctc_weight,
            pre_beam=max(beam, round(1.5 * beam)),  # ESPnet's pre_beam_ratio 1.5
        )
        return [list(hyps[0].tokens) if hyps else [] for hyps in found]

    def _text_counts(
        self, hyp_ids: list[list[int]], targets: Tensor, lengths: Tensor, device: torch.device
    ) -> dict[str, Tensor]:
        """CER/WER counts of decoded ids against the targets (host syncs: validation only)."""
        vocab = self.cfg.vocab
        hyps = [ids_to_text(ids, vocab, group_tokens=False) for ids in hyp_ids]
        refs = [
            ids_to_text(row[:n].tolist(), vocab, group_tokens=False)
            for row, n in zip(targets.cpu(), lengths.cpu().tolist())
        ]
        return {k: torch.tensor(float(v), device=device) for k, v in edit_counts(refs, hyps).items()}

    def _seq2seq(self, encoded: Tensor, frame_lengths: Tensor, pad: Tensor | None, targets: Tensor) -> Output:
        assert self.decoder is not None
        config = self.decoder.config
        lengths = target_lengths(targets, LABEL_PAD)
        labels = targets.clamp(min=0)  # padding -> id 0, never read past each row's length
        teacher = decoder_targets(labels, lengths, sos=config.sos, eos=config.eos)
        ctc_logits = self.head(encoded)
        hybrid = hybrid_loss(
            ctc_logits,
            frame_lengths,
            self.decoder(teacher.inputs, encoded, pad),
            teacher,
            labels,
            lengths,
            ctc_weight=config.ctc_weight,
            label_smoothing=config.label_smoothing,
            blank=BLANK,
        )
        rows = targets.shape[0]
        # hybrid_loss is a mean over utterances; the loop divides the summed loss by sample_size (sentence_avg)
        loss = hybrid.loss * rows
        fits = frames_needed(targets, lengths) <= frame_lengths  # the others add 0 to CTC, still train attention
        with torch.no_grad():
            frames = torch.arange(ctc_logits.shape[1], device=ctc_logits.device)[None, :] < frame_lengths[:, None]
            blank_only = ((ctc_logits.argmax(dim=-1) == BLANK) | ~frames).all(dim=1).float().mean()
        metrics = {
            "blank_only": blank_only,
            "skipped_targets": (~fits).sum().float(),
            "masked_frames": torch.zeros((), device=ctc_logits.device),
            "accuracy": hybrid.accuracy.detach(),  # teacher-forced next-token accuracy
        }
        if not self.training:
            hyp_ids = self.transcribe_ids(encoded, frame_lengths, ctc_logits)
            metrics.update(self._text_counts(hyp_ids, targets, lengths, ctc_logits.device))
        losses = {"ctc": hybrid.ctc.detach() * rows, "attention": hybrid.attention.detach() * rows}
        sample_size = torch.tensor(rows, device=ctc_logits.device)
        return Output(loss=loss, sample_size=sample_size, losses=losses, metrics=metrics)

    def _ctc(self, logits: Tensor, frame_lengths: Tensor, targets: Tensor) -> Output:
        lengths = target_lengths(targets, LABEL_PAD)
        # A target longer than its frames has no CTC path: left out (counted), never a NaN or a huge gradient.
        fits = frames_needed(targets, lengths) <= frame_lengths
        per_row = ctc_loss_sum(logits, frame_lengths, targets, lengths)  # (B,) fp32
        loss = torch.where(fits, per_row, torch.zeros_like(per_row)).sum()
        with torch.no_grad():
            frames = torch.arange(logits.shape[1], device=logits.device)[None, :] < frame_lengths[:, None]
            blank_only = ((logits.argmax(dim=-1) == BLANK) | ~frames).all(dim=1).float().mean()
        metrics = {
            "blank_only": blank_only,
            "skipped_targets": (~fits).sum().float(),
            "masked_frames": torch.zeros((), device=logits.device),
        }
        if not self.training:  # CER/WER counts of decode.beam's output (host syncs: validation only)
            hyp_ids = ctc_ids(torch.log_softmax(logits.float(), dim=-1), frame_lengths, self.cfg.decode.beam)
            metrics.update(self._text_counts(hyp_ids, targets, lengths, logits.device))
        return Output(loss=loss, sample_size=fits.sum(), losses={"ctc": loss.detach()}, metrics=metrics)

    def _classify(self, logits: Tensor, targets: Tensor) -> Output:
        size = len(self.cfg.vocab)
        with torch.autocast(device_type=logits.device.type, enabled=False):
            logits = logits.float()
            if self.cfg.multilabel:
                hot = torch.zeros_like(logits)
                valid = targets != LABEL_PAD
                hot.scatter_add_(1, targets.clamp(min=0), valid.float()).clamp_(max=1.0)  # padding adds 0
                loss = nn.functional.binary_cross_entropy_with_logits(logits, hot, reduction="sum")
                predicted, truth = logits > 0, hot > 0
                correct = (predicted == truth).all(dim=1)
            else:
                classes = targets[:, 0]
                loss = nn.functional.cross_entropy(logits, classes, reduction="sum")
                best = logits.argmax(dim=1)
                predicted = nn.functional.one_hot(best, size).bool()
                truth = nn.functional.one_hot(classes, size).bool()
                correct = best == classes
        rows = torch.tensor(float(logits.shape[0]), device=logits.device)
        metrics = {
            "correct": correct.sum().float(),
            "rows": rows,
            "accuracy": correct.float().mean(),
            "masked_frames": torch.zeros((), device=logits.device),
        }
        if not self.training:  # per-class counts: macro-F1 over the validation set
            tp, pred, true = (predicted & truth).sum(0), predicted.sum(0), truth.sum(0)
            for c in range(size):
                metrics[f"tp_{c}"], metrics[f"predicted_{c}"], metrics[f"true_{c}"] = tp[c], pred[c], true[c]
        sample_size = torch.tensor(logits.shape[0], device=logits.device)
        return Output(loss=loss, sample_size=sample_size, losses={"classify": loss.detach()}, metrics=metrics)


def summarise(cfg: FineTuneConfig, means: dict[str, float]) -> dict[str, float]:
    """Task metrics from the summed counts (every count is a mean over batches: their ratio is the ratio of sums);
    the counts themselves, means per batch, are left out."""
    out = dict(means)
    if "chars" in means:
        out["cer"] = means["char_errors"] / max(means["chars"], 1e-12)
        out["wer"] = means["word_errors"] / max(means["words"], 1e-12)
    if "rows" in means:
        out["accuracy"] = means["correct"] / max(means["rows"], 1e-12)
    if "true_0" in means:
        f1 = []
        for c in range(len(cfg.vocab)):
            seen = means[f"true_{c}"] + means[f"predicted_{c}"]
            if seen > 0:  # probe/metrics.py's macro_f1: classes neither true nor predicted are left out
                f1.append(2 * means[f"tp_{c}"] / seen)
        out["macro_f1"] = sum(f1) / max(len(f1), 1)
    counts = ("char_errors", "chars", "word_errors", "words", "correct", "rows", "masked_frames")
    return {k: v for k, v in out.items() if k not in counts and not k.startswith(("tp_", "predicted_", "true_"))}


def best_metric(cfg: FineTuneConfig) -> tuple[str, bool]:
    """The validation metric that picks the best checkpoint, and whether higher is better."""
    if cfg.head in TRANSCRIBING:
        return "cer", False
    return ("macro_f1", True) if cfg.multilabel else ("accuracy", True)


def stuck_warning(cfg: FineTuneConfig, step: int, metrics: dict[str, float], after: int) -> str | None:
    """CTC's usual failure: greedy output still all blank well past the unfreeze point."""
    if cfg.head not in TRANSCRIBING or step < max(cfg.freeze_updates, after) or metrics.get("blank_only", 0.0) < 1.0:
        return None
    return (
        f"update {step}: greedy CTC output is blank-only for every utterance {step - cfg.freeze_updates} updates "
        "after the unfreeze point (raise the learning rate or lower freeze_updates / the masking)"
    )
