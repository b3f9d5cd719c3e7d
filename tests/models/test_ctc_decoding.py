"""CTC greedy decoding on hand cases; prefix beam search against brute-force enumeration of every alignment."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from ssl_audio.models.ctc_decoding import (
    best_tokens,
    blank_only_fraction,
    collapse,
    ctc_beam_search_batch,
    ctc_greedy,
    ctc_greedy_batch,
    ctc_prefix_beam_search,
)


def peaked(path: list[int], vocab: int) -> torch.Tensor:
    """(T, V) log-probs whose argmax at frame t is path[t]."""
    logits = torch.full((len(path), vocab), -3.0)
    logits[torch.arange(len(path)), torch.tensor(path)] = 3.0
    return logits.log_softmax(-1)


def brute_force(log_probs: torch.Tensor, blank: int = 0) -> dict[tuple[int, ...], float]:
    """log p(y | x) for every label sequence y: logsumexp over all V^T paths that collapse to y (fp64)."""
    rows = log_probs.double()
    frames, vocab = rows.shape
    totals: dict[tuple[int, ...], list[float]] = {}
    for path in itertools.product(range(vocab), repeat=frames):
        score = sum(rows[t, c].item() for t, c in enumerate(path))
        totals.setdefault(tuple(collapse(list(path), blank)), []).append(score)
    return {y: torch.logsumexp(torch.tensor(scores, dtype=torch.float64), 0).item() for y, scores in totals.items()}


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ([1, 1, 0, 1, 2, 2], [1, 1, 2]),  # a blank separates a real repeat
        ([0, 0, 0], []),  # blank only
        ([2, 2, 2, 2], [2]),
        ([0, 1, 2, 1, 0], [1, 2, 1]),
        ([1, 0, 0, 1, 1, 0], [1, 1]),
    ],
)
def test_greedy_hand_cases(path: list[int], expected: list[int]) -> None:
    assert ctc_greedy(peaked(path, 3)) == expected


def test_greedy_reads_only_valid_frames_and_batches() -> None:
    first = peaked([1, 0, 2, 2, 1, 1], 3)
    second = peaked([2, 2, 0, 0, 0, 0], 3)
    assert ctc_greedy(first, 3) == [1, 2]  # frames 3.. are padding
    batch = torch.stack([first, second])
    assert ctc_greedy_batch(batch, torch.tensor([6, 2])) == [[1, 2, 1], [2]]
    assert ctc_greedy_batch(batch) == [[1, 2, 1], [2]]


def test_nonzero_blank_id() -> None:
    assert ctc_greedy(peaked([2, 1, 1, 2, 0, 2, 0], 3), blank=2) == [1, 0, 0]


def test_beam_beats_greedy_on_the_textbook_case() -> None:
    # two frames, p(blank) = 0.6, p(a) = 0.4 each: the best path is blank-blank (0.36), but "a" collects
    # aa + a_ + _a = 0.16 + 0.24 + 0.24 = 0.64
    log_probs = torch.tensor([[0.6, 0.4], [0.6, 0.4]], dtype=torch.float64).log()
    assert ctc_greedy(log_probs) == []
    best = ctc_prefix_beam_search(log_probs, beam=2)
    assert best[0].tokens == (1,)
    assert best[0].log_prob == pytest.approx(math.log(0.64), abs=1e-12)
    assert best[1].tokens == () and best[1].log_prob == pytest.approx(math.log(0.36), abs=1e-12)


@pytest.mark.parametrize(("frames", "seed"), [(4, 0), (4, 1), (5, 2), (5, 3), (5, 4)])
def test_wide_beam_equals_exhaustive_search(frames: int, seed: int) -> None:
    generator = torch.Generator().manual_seed(seed)
    log_probs = (2.0 * torch.randn(frames, 3, generator=generator)).log_softmax(-1)
    exact = brute_force(log_probs)
    # 2 labels and T <= 5 frames give at most 2^0 + ... + 2^5 = 63 prefixes: a beam of 64 keeps them all
    hypotheses = ctc_prefix_beam_search(log_probs, beam=64)
    found = {h.tokens: h.log_prob for h in hypotheses}
    assert found.keys() == exact.keys()
    for tokens, log_prob in exact.items():  # fp64 sums of <= 5 terms over <= 3^5 paths, reordered
        assert found[tokens] == pytest.approx(log_prob, abs=1e-10)
    top = max(exact, key=exact.__getitem__)
    assert hypotheses[0].tokens == top
    assert hypotheses[0].score == pytest.approx(exact[top], abs=1e-10)
    # every path counted once: the total is the product over frames of each fp32 softmax row's sum, each
    # 1 within about V * 2^-24, so within T * V * 2^-24 < 1e-6 of 1
    assert math.fsum(math.exp(v) for v in found.values()) == pytest.approx(1.0, abs=1e-6)


def test_narrow_beam_finds_the_best_on_peaked_input_with_a_lower_bound_score() -> None:
    # pruned prefixes take their alignments with them, so a narrow beam's scores can only be lower
    log_probs = (peaked([1, 1, 0, 2, 2], 3) * 0.5).log_softmax(-1)
    exact = brute_force(log_probs)
    top = max(exact, key=exact.__getitem__)
    hypotheses = ctc_prefix_beam_search(log_probs, beam=3)
    assert len(hypotheses) == 3
    assert hypotheses[0].tokens == top == (1, 2)
    for h in hypotheses:
        assert h.log_prob <= exact[h.tokens] + 1e-12
    assert hypotheses[0].log_prob == pytest.approx(exact[top], abs=1e-3)


def test_length_norm_ranks_by_mean_log_prob() -> None:
    generator = torch.Generator().manual_seed(7)
    log_probs = torch.randn(5, 3, generator=generator).log_softmax(-1)
    exact = brute_force(log_probs)
    hypotheses = ctc_prefix_beam_search(log_probs, beam=64, length_norm=True)
    normalised = {y: v / max(1, len(y)) for y, v in exact.items()}
    assert hypotheses[0].tokens == max(normalised, key=normalised.__getitem__)
    for h in hypotheses:
        assert h.score == pytest.approx(normalised[h.tokens], abs=1e-10)
        assert h.log_prob == pytest.approx(exact[h.tokens], abs=1e-10)
    assert [h.score for h in hypotheses] == sorted((h.score for h in hypotheses), reverse=True)


def test_valid_length_and_batch_match_single_calls() -> None:
    generator = torch.Generator().manual_seed(3)
    batch = torch.randn(2, 5, 4, generator=generator).log_softmax(-1)
    lengths = torch.tensor([5, 3])
    beams = ctc_beam_search_batch(batch, lengths, beam=5)
    for row, valid, got in zip(batch, lengths.tolist(), beams):
        alone = ctc_prefix_beam_search(row[:valid], beam=5)
        assert [(h.tokens, h.log_prob) for h in got] == [(h.tokens, h.log_prob) for h in alone]
    # the shortened row against brute force over its 3 valid frames
    exact = brute_force(batch[1, :3])
    assert beams[1][0].tokens == max(exact, key=exact.__getitem__)
    assert best_tokens(beams) == [list(beams[0][0].tokens), list(beams[1][0].tokens)]


def test_token_beam_covering_every_label_changes_nothing() -> None:
    log_probs = torch.randn(5, 4, generator=torch.Generator().manual_seed(5)).log_softmax(-1)
    full = ctc_prefix_beam_search(log_probs, beam=4)
    pruned = ctc_prefix_beam_search(log_probs, beam=4, token_beam=3)
    assert [(h.tokens, h.log_prob) for h in full] == [(h.tokens, h.log_prob) for h in pruned]
    greedyish = ctc_prefix_beam_search(log_probs, beam=4, token_beam=1)
    assert all(h.log_prob <= full[0].log_prob + 1e-12 for h in greedyish)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: ctc_greedy(torch.zeros(2, 3, 4)), r"\(T, V\).*\(2, 3, 4\)"),
        (lambda: ctc_greedy(torch.zeros(3, 4), 5), "valid length 5"),
        (lambda: ctc_greedy(torch.zeros(3, 4), blank=4), "blank id 4"),
        (lambda: ctc_greedy_batch(torch.zeros(2, 3, 4), torch.tensor([1])), r"lengths of shape \(1,\)"),
        (lambda: ctc_greedy_batch(torch.zeros(2, 3, 4), torch.tensor([1, 4])), "valid length 4"),
        (lambda: ctc_prefix_beam_search(torch.zeros(3, 4), beam=0), "beam width"),
    ],
)
def test_bad_input_names_the_problem(call, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        call()


def test_masked_ids_never_appear() -> None:
    log_probs = torch.randn(4, 4, generator=torch.Generator().manual_seed(9)).log_softmax(-1)
    log_probs[:, 3] = float("-inf")  # an id the model may not emit
    log_probs[1:, 2] = float("-inf")
    exact = brute_force(log_probs)
    hypotheses = ctc_prefix_beam_search(log_probs, beam=1000)
    assert {h.tokens for h in hypotheses} == {y for y, v in exact.items() if v != float("-inf")}
    assert all(3 not in h.tokens for h in hypotheses)


def test_all_masked_input_gives_no_hypothesis() -> None:
    log_probs = torch.full((3, 3), float("-inf"))
    assert ctc_prefix_beam_search(log_probs, beam=4) == []
    assert best_tokens([[]]) == [[]]


def test_blank_only_fraction_counts_utterances_with_no_label_on_valid_frames() -> None:
    batch = torch.stack([peaked([0, 0, 0, 1], 3), peaked([0, 2, 0, 0], 3), peaked([0, 0, 0, 0], 3)])
    assert blank_only_fraction(batch) == pytest.approx(1 / 3)
    # the label of utterance 0 lies in its padding: blank-only within its 3 valid frames
    assert blank_only_fraction(batch, torch.tensor([3, 4, 4])) == pytest.approx(2 / 3)
    assert blank_only_fraction(batch, torch.tensor([3, 4, 4])) == pytest.approx(
        sum(not labels for labels in ctc_greedy_batch(batch, torch.tensor([3, 4, 4]))) / 3
    )
