"""CTC decoding: best-path (greedy) and prefix beam search over per-frame log-probabilities.

Shapes: B batch, T frames, V vocabulary (the blank included, at `blank`, 0 by default).

Prefix beam search keeps, for every label prefix, the log-probability of all alignments of frames [0, t) that
collapse to it, split by whether the last frame was a blank (`blank`) or the prefix's last label (`label`);
a repeated label needs a blank in between, so it extends only the blank-ending part. With a beam at least as
large as the number of distinct prefixes the search is exact: each hypothesis's score is the sum over all of
its alignments, log p(y | x) of CTC.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

NEG_INF = float("-inf")


@dataclass(frozen=True, kw_only=True)
class CTCHypothesis:
    tokens: tuple[int, ...]  # label ids, blank and repeats already collapsed
    log_prob: float  # log p(tokens | x): the sum over all of its alignments
    score: float  # what the beam was ranked by: log_prob, or log_prob / max(1, len(tokens)) with length_norm


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


def blank_only_fraction(log_probs: Tensor, lengths: Tensor | None = None, *, blank: int = 0) -> float:
    """Fraction of the (B, T, V) batch whose best path is blank on every valid frame: the symptom of CTC stuck
    at WER 100 (worth a warning when it persists past the unfreeze point)."""
    _check_batch(log_probs, lengths)
    frames = torch.arange(log_probs.shape[1], device=log_probs.device)[None, :]
    valid = frames < (log_probs.shape[1] if lengths is None else lengths[:, None])  # (B, T)
    blank_everywhere = ((log_probs.argmax(-1) == blank) | ~valid).all(dim=1)  # (B,)
    return float(blank_everywhere.float().mean()) if len(blank_everywhere) else 0.0


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
    frames = log_probs[:valid].detach().double().cpu().numpy()  # (T, V): the bookkeeping is in fp64
    label_ids = np.array([c for c in range(log_probs.shape[1]) if c != blank])
    prefixes: list[tuple[int, ...]] = [()]
    p_blank = np.zeros(1)  # (N,): log p(alignments of frames so far collapse to the prefix, last frame blank)
    p_label = np.full(1, NEG_INF)  # (N,): the same, last frame on the prefix's last label
    for row in frames:
        ids = label_ids if token_beam is None else label_ids[np.argsort(-row[label_ids], kind="stable")[:token_beam]]
        total = np.logaddexp(p_blank, p_label)
        last = np.array([prefix[-1] if prefix else -1 for prefix in prefixes], dtype=np.int64)  # (N,), -1: empty
        stay_blank = total + row[blank]  # a blank frame keeps the prefix
        stay_label = np.where(last >= 0, p_label + row[np.maximum(last, 0)], NEG_INF)  # a repeat collapses
        # a new label c: after a blank a repeat of the last label is a new label; right after the label it is not
        source = np.where(ids[None, :] == last[:, None], p_blank[:, None], total[:, None])  # (N, C)
        grown = source + row[ids][None, :]  # (N, C)
        # prefix + c may already be in the beam (as prefix q with parent prefix): merge its mass into q's stay
        index = {prefix: k for k, prefix in enumerate(prefixes)}
        column = {c: j for j, c in enumerate(ids.tolist())}
        for k, prefix in enumerate(prefixes):
            parent, j = (index.get(prefix[:-1]), column.get(prefix[-1])) if prefix else (None, None)
            if parent is not None and j is not None:
                stay_label[k] = np.logaddexp(stay_label[k], grown[parent, j])
                grown[parent, j] = NEG_INF
        scores = np.concatenate([np.logaddexp(stay_blank, stay_label), grown.ravel()])  # (N + N·C,)
        order = np.argsort(-scores, kind="stable")[:beam]
        order = order[np.isfinite(scores[order])]  # -inf: unreachable (masked ids, no frame left for a blank)
        kept, blanks, labels = [], [], []
        for position in order.tolist():
            if position < len(prefixes):
                kept.append(prefixes[position])
                blanks.append(stay_blank[position])
                labels.append(stay_label[position])
            else:
                k, j = divmod(position - len(prefixes), len(ids))
                kept.append(prefixes[k] + (int(ids[j]),))
                blanks.append(NEG_INF)
                labels.append(grown[k, j])
        prefixes, p_blank, p_label = kept, np.array(blanks), np.array(labels)
    hypotheses = []
    for prefix, log_prob in zip(prefixes, np.logaddexp(p_blank, p_label).tolist()):
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
