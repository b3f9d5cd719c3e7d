"""CTC decoding: best-path (greedy) and prefix beam search over per-frame log-probabilities.

Shapes: B batch, T frames, V vocabulary (the blank included, at `blank`, 0 by default).

Prefix beam search keeps, for every label prefix, the log-probability of all alignments of frames [0, t) that
collapse to it, split by whether the last frame was a blank (`blank`) or the prefix's last label (`label`);
a repeated label needs a blank in between, so it extends only the blank-ending part. With a beam at least as
large as the number of distinct prefixes the search is exact: each hypothesis's score is the sum over all of
its alignments, log p(y | x) of CTC.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from torch import Tensor

NEG_INF = float("-inf")


@dataclass(frozen=True, kw_only=True)
class CTCHypothesis:
    tokens: tuple[int, ...]  # label ids, blank and repeats already collapsed
    log_prob: float  # log p(tokens | x): the sum over all of its alignments
    score: float  # what the beam was ranked by: log_prob, or log_prob / max(1, len(tokens)) with length_norm


def _log_add(a: float, b: float) -> float:
    """log(exp(a) + exp(b)) without overflow; -inf is the additive zero."""
    if a == NEG_INF:
        return b
    if b == NEG_INF:
        return a
    high, low = (a, b) if a >= b else (b, a)
    return high + math.log1p(math.exp(low - high))


def _merge(beams: dict[tuple[int, ...], list[float]], prefix: tuple[int, ...], blank: float, label: float) -> None:
    """Add alignment mass ending in a blank / in the last label to `prefix` (prefixes reached twice merge)."""
    entry = beams.setdefault(prefix, [NEG_INF, NEG_INF])
    entry[0] = _log_add(entry[0], blank)
    entry[1] = _log_add(entry[1], label)


def _check(log_probs: Tensor, length: int | Tensor | None, blank: int) -> int:
    """The valid frame count of a (T, V) log-prob matrix; ValueError naming the bad shape or value."""
    if log_probs.dim() != 2:
        raise ValueError(f"CTC decoding wants (T, V) log-probs, got shape {tuple(log_probs.shape)}")
    frames, vocab = log_probs.shape
    if not 0 <= blank < vocab:
        raise ValueError(f"blank id {blank} is outside the vocabulary of {vocab} (log-probs {tuple(log_probs.shape)})")
    valid = frames if length is None else int(length)
    if not 0 <= valid <= frames:
        raise ValueError(f"valid length {valid} is outside [0, {frames}] for log-probs {tuple(log_probs.shape)}")
    return valid


def _check_batch(log_probs: Tensor, lengths: Tensor | None) -> None:
    if log_probs.dim() != 3:
        raise ValueError(f"batched CTC decoding wants (B, T, V) log-probs, got shape {tuple(log_probs.shape)}")
    if lengths is not None and tuple(lengths.shape) != (log_probs.shape[0],):
        raise ValueError(f"lengths of shape {tuple(lengths.shape)} do not match log-probs {tuple(log_probs.shape)}")


def collapse(ids: list[int], blank: int = 0) -> list[int]:
    """Per-frame ids -> labels: merge repeats, then drop blanks ([a a _ a b b] -> [a a b])."""
    out, previous = [], None
    for token in ids:
        if token != previous and token != blank:
            out.append(token)
        previous = token
    return out


def ctc_greedy(log_probs: Tensor, length: int | Tensor | None = None, *, blank: int = 0) -> list[int]:
    """Best path: the argmax id of each valid frame, collapsed. log_probs (T, V); length frames to read."""
    valid = _check(log_probs, length, blank)
    return collapse(log_probs[:valid].argmax(-1).tolist(), blank)


def ctc_greedy_batch(log_probs: Tensor, lengths: Tensor | None = None, *, blank: int = 0) -> list[list[int]]:
    """ctc_greedy for each row of (B, T, V) log-probs with (B,) valid frame counts."""
    _check_batch(log_probs, lengths)
    ids = log_probs.argmax(-1).tolist()  # (B, T): one argmax pass for the whole batch
    frames = [log_probs.shape[1]] * len(ids) if lengths is None else lengths.tolist()
    for valid in frames:
        _check(log_probs[0], valid, blank)  # every row shares the (T, V) shape: check each length against it
    return [collapse(row[:valid], blank) for row, valid in zip(ids, frames)]


def ctc_prefix_beam_search(
    log_probs: Tensor,
    length: int | Tensor | None = None,
    *,
    beam: int = 10,
    blank: int = 0,
    length_norm: bool = False,
    token_beam: int | None = None,
) -> list[CTCHypothesis]:
    """Prefix beam search over (T, V) log-probs (log-softmax output); hypotheses best first, at most `beam`.

    Pruning ranks prefixes by their raw log-probability (every prefix alive at frame t covers the same frames);
    `length_norm` only changes the final ranking, by log_prob / max(1, length), which offsets the bias of raw
    scores towards short outputs. `token_beam` extends each prefix only by the frame's `token_beam` most likely
    labels (faster on large vocabularies; None tries every label).
    """
    if beam < 1:
        raise ValueError(f"beam width must be >= 1, got {beam}")
    if token_beam is not None and token_beam < 1:
        raise ValueError(f"token_beam must be >= 1 or None, got {token_beam}")
    valid = _check(log_probs, length, blank)
    frames = log_probs[:valid].double().tolist()  # python floats: the search is scalar bookkeeping per prefix
    vocab = log_probs.shape[1]
    labels_all = [c for c in range(vocab) if c != blank]
    # prefix -> (log p ending in blank, log p ending in its last label)
    beams: dict[tuple[int, ...], tuple[float, float]] = {(): (0.0, NEG_INF)}
    for row in frames:
        if token_beam is None:
            labels = labels_all
        else:
            ranked = sorted(labels_all, key=row.__getitem__, reverse=True)
            labels = ranked[:token_beam]
        grown: dict[tuple[int, ...], list[float]] = {}
        for prefix, (p_blank, p_label) in beams.items():
            total = _log_add(p_blank, p_label)
            _merge(grown, prefix, total + row[blank], NEG_INF)  # a blank frame keeps the prefix
            last = prefix[-1] if prefix else None
            if last is not None:
                _merge(grown, prefix, NEG_INF, p_label + row[last])  # the last label repeated collapses into itself
            for c in labels:
                # after a blank, a repeat of the last label is a new label; right after the label it is not
                source = p_blank if c == last else total
                if source != NEG_INF:  # no alignment reaches it (a repeat with no frame left for the blank)
                    _merge(grown, prefix + (c,), NEG_INF, source + row[c])
        reachable = [item for item in grown.items() if _log_add(*item[1]) != NEG_INF]  # -inf log-probs (masked ids)
        ranked_prefixes = sorted(reachable, key=lambda item: _log_add(*item[1]), reverse=True)
        beams = {prefix: (parts[0], parts[1]) for prefix, parts in ranked_prefixes[:beam]}
    hypotheses = []
    for prefix, parts in beams.items():
        log_prob = _log_add(*parts)
        score = log_prob / max(1, len(prefix)) if length_norm else log_prob
        hypotheses.append(CTCHypothesis(tokens=prefix, log_prob=log_prob, score=score))
    return sorted(hypotheses, key=lambda h: h.score, reverse=True)


def ctc_beam_search_batch(
    log_probs: Tensor,
    lengths: Tensor | None = None,
    *,
    beam: int = 10,
    blank: int = 0,
    length_norm: bool = False,
    token_beam: int | None = None,
) -> list[list[CTCHypothesis]]:
    """ctc_prefix_beam_search for each row of (B, T, V) log-probs with (B,) valid frame counts."""
    _check_batch(log_probs, lengths)
    rows = log_probs.detach().cpu()
    frames = [rows.shape[1]] * rows.shape[0] if lengths is None else lengths.tolist()
    return [
        ctc_prefix_beam_search(row, valid, beam=beam, blank=blank, length_norm=length_norm, token_beam=token_beam)
        for row, valid in zip(rows, frames)
    ]


def best_tokens(hypotheses: list[list[CTCHypothesis]]) -> list[list[int]]:
    """The top hypothesis of each utterance as a list of label ids (empty when the beam is empty)."""
    return [list(beams[0].tokens) if beams else [] for beams in hypotheses]
