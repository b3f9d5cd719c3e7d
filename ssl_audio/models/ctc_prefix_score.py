"""CTC prefix scores for joint CTC/attention decoding (Watanabe et al. 2017, "Hybrid CTC/attention
architecture for end-to-end speech recognition", Algorithm 2).

The prefix score of h is log Σ p(y | x) over every label sequence y that starts with h; for h ending in eos
it is the full-sequence CTC log p(g | x) of the labels g before it. Both only fall as h grows, so a beam
ranked by them can stop once a finished hypothesis beats every live one.

A prefix's state is, per frame t, the log-probability of its alignments over frames [0, t] that end in its
last label (`label`) or in a blank (`blank`). Shapes: T frames, V vocabulary, N prefixes, C candidates.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from torch import Tensor

NEG_INF = float("-inf")


@dataclass(frozen=True, kw_only=True)
class CTCPrefixState:
    label: np.ndarray  # (T,) log p(frames [0, t] align to the prefix, ending in its last label)
    blank: np.ndarray  # (T,) the same, ending in a blank
    last: int | None  # the prefix's last label; None for the empty prefix
    score: float  # the prefix score of this prefix


class CTCPrefixScorer:
    """Prefix scores of one utterance's (T, V) CTC log-probs (valid frames only), kept in fp64 numpy (the
    frame loop is many tiny vector operations, which numpy runs with far less overhead per call than torch)."""

    def __init__(self, log_probs: Tensor, *, eos: int, blank: int = 0) -> None:
        if log_probs.dim() != 2 or log_probs.shape[0] < 1:
            raise ValueError(f"CTC prefix scoring wants (T >= 1, V) log-probs, got shape {tuple(log_probs.shape)}")
        for name, value in (("eos", eos), ("blank", blank)):
            if not 0 <= value < log_probs.shape[1]:
                raise ValueError(f"{name} id {value} is outside the vocabulary of log-probs {tuple(log_probs.shape)}")
        self.log_probs = log_probs.detach().double().cpu().numpy()
        self.eos, self.blank = eos, blank

    def initial(self) -> CTCPrefixState:
        """The empty prefix: every frame so far is a blank."""
        frames = self.log_probs.shape[0]
        return CTCPrefixState(
            label=np.full(frames, NEG_INF), blank=np.cumsum(self.log_probs[:, self.blank]), last=None, score=0.0
        )

    def extend(self, states: list[CTCPrefixState], tokens: list[int]) -> tuple[list[float], list[CTCPrefixState]]:
        """Prefix score and state of states[i] + tokens[i] for every pair i (N pairs at once).

        eos ends the prefix: its score is the full CTC log-probability, its state is returned unchanged.
        """
        if len(states) != len(tokens):
            raise ValueError(f"{len(states)} prefixes but {len(tokens)} candidate tokens")
        if not states:
            return [], []
        lp = self.log_probs
        frames = lp.shape[0]
        label = np.stack([s.label for s in states], axis=1)  # (T, N)
        blank = np.stack([s.blank for s in states], axis=1)  # (T, N)
        token = np.array(tokens)  # (N,)
        repeat = np.array([s.last == c for s, c in zip(states, tokens)])  # (N,)
        empty = np.array([s.last is None for s in states])
        # mass that may move on to a new label c at the next frame: a repeat of the last label needs a blank first
        phi = np.where(repeat[None, :], blank, np.logaddexp(label, blank))  # (T, N)
        emit = lp[:, token]  # (T, N): log p(c at t)
        new_label = np.full((frames, len(states)), NEG_INF)
        new_blank = np.full_like(new_label, NEG_INF)
        new_label[0] = np.where(empty, emit[0], NEG_INF)
        for t in range(1, frames):
            new_label[t] = np.logaddexp(new_label[t - 1], phi[t - 1]) + emit[t]
            new_blank[t] = np.logaddexp(new_blank[t - 1], new_label[t - 1]) + lp[t, self.blank]
        # the prefix score: the new label is first emitted at some frame t, anything may follow
        first = np.concatenate([new_label[:1], phi[:-1] + emit[1:]], axis=0)  # (T, N)
        scores = np.logaddexp.reduce(first, axis=0)  # (N,)
        full = np.logaddexp(label[-1], blank[-1])  # (N,): the prefix as a whole sequence
        scores = np.where(token == self.eos, full, scores).tolist()
        grown = []
        for i, (state, c) in enumerate(zip(states, tokens)):
            if c == self.eos:
                grown.append(state)
            else:
                grown.append(CTCPrefixState(label=new_label[:, i], blank=new_blank[:, i], last=c, score=scores[i]))
        return scores, grown
