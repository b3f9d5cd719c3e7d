"""Greedy and beam search for the attention decoder, with optional joint CTC/attention scoring in the beam.

A hypothesis y is scored λ·ctc(y) + (1 − λ)·att(y): att is Σ log p_att(y_i | y_<i, x), plus log p_att(eos | y)
once finished; ctc is the CTC prefix score (ctc_prefix_score.py), the full CTC log p(y | x) once finished
(Watanabe et al. 2017; ESPnet's `ctc_weight` in decoding). Without CTC, λ = 0. Every hypothesis ends with eos
by `max_len` labels at the latest (eos is the only choice there), its score included.

Shapes: B batch, T encoder frames, M encoder width, V vocabulary, N live hypotheses.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from ssl_audio.models.ctc_prefix_score import CTCPrefixScorer, CTCPrefixState
from ssl_audio.models.seq2seq import Seq2SeqDecoder

NEG_INF = float("-inf")


@dataclass(frozen=True, kw_only=True)
class Seq2SeqHypothesis:
    tokens: tuple[int, ...]  # labels, without sos and eos
    score: float  # what the beam ranked by: the joint score, / (len(tokens) + 1) with length_norm
    attention: float  # Σ log p_att over the labels and the final eos
    ctc: float | None  # CTC log p(tokens | x); None when decoding without CTC


def _banned(decoder: Seq2SeqDecoder) -> list[int]:
    """Ids the decoder never emits: the CTC blank, and the start symbol when it is not also the end."""
    config = decoder.config
    return [config.blank_id] + ([config.sos] if config.sos != config.eos else [])


def _check_memory(memory: Tensor, lengths: Tensor | None) -> None:
    if memory.dim() != 3:
        raise ValueError(f"encoder memory must be (B, T, M), got shape {tuple(memory.shape)}")
    if lengths is not None and tuple(lengths.shape) != (memory.shape[0],):
        raise ValueError(f"memory lengths of shape {tuple(lengths.shape)} do not match memory {tuple(memory.shape)}")


@torch.no_grad()
def greedy_search(
    decoder: Seq2SeqDecoder, memory: Tensor, lengths: Tensor | None = None, *, max_len: int
) -> list[list[int]]:
    """The most likely next token at every step, batched: memory (B, T, M) with (B,) valid frame counts;
    at most `max_len` labels per utterance. Returns the labels of each utterance, without sos/eos."""
    _check_memory(memory, lengths)
    config = decoder.config
    batch = memory.shape[0]
    padding = None
    if lengths is not None:
        padding = torch.arange(memory.shape[1], device=memory.device)[None, :] >= lengths[:, None]  # (B, T)
    tokens = torch.full((batch, 1), config.sos, dtype=torch.long, device=memory.device)
    done = torch.zeros(batch, dtype=torch.bool, device=memory.device)
    banned = _banned(decoder)
    cache = decoder.memory_cache(memory)
    state = decoder.initial_state(batch, memory.device, memory.dtype)
    for _ in range(max_len):
        logits, state = decoder.step(tokens[:, -1], state, memory, padding, cache=cache)  # (B, V)
        logits[:, banned] = NEG_INF
        step = torch.where(done, config.eos, logits.argmax(-1))
        tokens = torch.cat([tokens, step[:, None]], dim=1)
        done |= step == config.eos
        if bool(done.all()):
            break
    out = []
    for row in tokens[:, 1:].tolist():
        out.append(row[: row.index(config.eos)] if config.eos in row else row)
    return out


@dataclass(frozen=True)
class _Live:
    tokens: tuple[int, ...]
    attention: float  # Σ log p_att so far
    ctc_state: CTCPrefixState | None
    joint: float  # the score the beam ranked it by
    row: int  # its row in the decoder state of the step that made it


@torch.no_grad()
def beam_search(
    decoder: Seq2SeqDecoder,
    memory: Tensor,
    *,
    beam: int,
    max_len: int,
    ctc_log_probs: Tensor | None = None,
    ctc_weight: float = 0.0,
    length_norm: bool = False,
    pre_beam: int | None = None,
) -> list[Seq2SeqHypothesis]:
    """Beam search for one utterance: memory (T, M) of its valid frames; ctc_log_probs (T', V) of its valid
    CTC frames for joint scoring at weight `ctc_weight` (V wide, or V − 1 when the end symbol is the last id and
    the CTC head has no unit for it). Returns at most `beam` finished hypotheses, best first. Call it on a
    decoder in eval mode (dropout would make the search random).

    `pre_beam` scores with CTC only each hypothesis's `pre_beam` most likely next tokens by attention (ESPnet
    uses 1.5 × beam; None scores all). Without length_norm the search stops as soon as the best finished
    hypothesis beats every live one, which loses nothing since scores only fall as hypotheses grow.
    """
    if memory.dim() != 2:
        raise ValueError(f"beam search reads one utterance's (T, M) memory, got shape {tuple(memory.shape)}")
    if beam < 1 or max_len < 0:
        raise ValueError(f"beam must be >= 1 and max_len >= 0, got beam {beam}, max_len {max_len}")
    if not 0.0 <= ctc_weight <= 1.0:
        raise ValueError(f"ctc_weight must be in [0, 1], got {ctc_weight}")
    if ctc_weight > 0 and ctc_log_probs is None:
        raise ValueError(f"ctc_weight {ctc_weight} needs ctc_log_probs")
    config = decoder.config
    use_ctc = ctc_log_probs is not None and ctc_weight > 0
    if use_ctc and ctc_log_probs.shape[-1] == config.vocab_size - 1 == max(config.sos, config.eos):
        # a CTC head without the end symbol's unit (blank + labels): that unit's log-prob is -inf
        ctc_log_probs = torch.nn.functional.pad(ctc_log_probs, (0, 1), value=NEG_INF)
    if use_ctc and ctc_log_probs.shape[-1] != config.vocab_size:
        raise ValueError(
            f"CTC log-probs {tuple(ctc_log_probs.shape)} do not share the decoder's vocabulary of {config.vocab_size}"
            " (or that less its last id, the end symbol)"
        )
    scorer = CTCPrefixScorer(ctc_log_probs, eos=config.eos, blank=config.blank_id) if use_ctc else None
    weight = ctc_weight if use_ctc else 0.0
    banned = _banned(decoder)
    cache = decoder.memory_cache(memory[None])  # each (2, 1, H, T, E), expanded over the live hypotheses
    state = decoder.initial_state(1, memory.device, memory.dtype)
    live = [_Live((), 0.0, scorer.initial() if scorer is not None else None, 0.0, 0)]
    finished: list[Seq2SeqHypothesis] = []
    for step in range(max_len + 1):
        state = state.select(torch.tensor([h.row for h in live], device=memory.device))
        newest = torch.tensor([h.tokens[-1] if h.tokens else config.sos for h in live], device=memory.device)
        shared = [kv.expand(-1, len(live), -1, -1, -1) for kv in cache]
        memories = memory[None].expand(len(live), -1, -1)
        logits, state = decoder.step(newest, state, memories, cache=shared)  # (N, V)
        log_probs = logits.double().log_softmax(-1)
        log_probs[:, banned] = NEG_INF
        if step == max_len:  # at the length limit only the end symbol is left
            keep = log_probs[:, config.eos].clone()
            log_probs.fill_(NEG_INF)
            log_probs[:, config.eos] = keep
        candidates = []  # (index of the live hypothesis, token, attention score)
        for i, row in enumerate(log_probs):
            allowed = torch.nonzero(row > NEG_INF).flatten()
            if pre_beam is not None and len(allowed) > pre_beam:
                allowed = allowed[row[allowed].topk(pre_beam).indices]
            candidates += [(i, c, live[i].attention + row[c].item()) for c in allowed.tolist()]
        if scorer is not None:
            states = [live[i].ctc_state for i, _, _ in candidates]
            ctc_scores, ctc_states = scorer.extend(states, [c for _, c, _ in candidates])
        else:
            ctc_scores, ctc_states = [0.0] * len(candidates), [None] * len(candidates)
        scored = []
        for (i, c, att), ctc, ctc_state in zip(candidates, ctc_scores, ctc_states):
            joint = weight * ctc + (1.0 - weight) * att if weight < 1.0 else ctc  # λ = 1 ignores att (may be -inf)
            if joint > NEG_INF:
                scored.append((joint, i, c, att, ctc, ctc_state))
        scored.sort(key=lambda item: item[0], reverse=True)
        previous, live = live, []
        for joint, i, c, att, ctc, ctc_state in scored[:beam]:
            tokens = previous[i].tokens
            if c == config.eos:
                score = joint / (len(tokens) + 1) if length_norm else joint
                finished.append(
                    Seq2SeqHypothesis(
                        tokens=tokens, score=score, attention=att, ctc=ctc if scorer is not None else None
                    )
                )
            else:
                live.append(_Live(tokens + (c,), att, ctc_state, joint, i))
        if not live:
            break
        if not length_norm and finished and max(h.score for h in finished) >= live[0].joint:
            break  # live scores only fall from here: none can overtake the best finished one
    return sorted(finished, key=lambda h: h.score, reverse=True)[:beam]


@torch.no_grad()
def beam_search_batch(
    decoder: Seq2SeqDecoder,
    memory: Tensor,
    lengths: Tensor | None = None,
    *,
    beam: int,
    max_len: int,
    ctc_log_probs: Tensor | None = None,
    ctc_lengths: Tensor | None = None,
    ctc_weight: float = 0.0,
    length_norm: bool = False,
    pre_beam: int | None = None,
) -> list[list[Seq2SeqHypothesis]]:
    """beam_search for each utterance of memory (B, T, M) with (B,) valid frames; ctc_log_probs (B, T', V) with
    (B,) ctc_lengths (default: lengths)."""
    _check_memory(memory, lengths)
    frames = [memory.shape[1]] * memory.shape[0] if lengths is None else lengths.tolist()
    if ctc_log_probs is not None and (ctc_log_probs.dim() != 3 or ctc_log_probs.shape[0] != memory.shape[0]):
        raise ValueError(f"CTC log-probs {tuple(ctc_log_probs.shape)} do not match memory {tuple(memory.shape)}")
    ctc_frames = frames if ctc_lengths is None else ctc_lengths.tolist()
    out = []
    for b, valid in enumerate(frames):
        ctc = None if ctc_log_probs is None else ctc_log_probs[b, : ctc_frames[b]]
        out.append(
            beam_search(
                decoder,
                memory[b, :valid],
                beam=beam,
                max_len=max_len,
                ctc_log_probs=ctc,
                ctc_weight=ctc_weight,
                length_norm=length_norm,
                pre_beam=pre_beam,
            )
        )
    return out
