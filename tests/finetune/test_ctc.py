"""CTC pieces against independent oracles: the loss against an exhaustive sum over alignments (fp64), greedy
decoding and feasibility on hand cases, edit counts against jiwer (probe/metrics.py)."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from ssl_audio.models.ctc import BLANK, ctc_loss_sum, edit_counts, frames_needed, ids_to_text
from ssl_audio.models.ctc_decoding import ctc_greedy_batch
from ssl_audio.probe.metrics import char_errors, word_errors


def collapse(path: tuple[int, ...]) -> tuple[int, ...]:
    merged = [k for i, k in enumerate(path) if i == 0 or k != path[i - 1]]
    return tuple(k for k in merged if k != BLANK)


def exhaustive_ctc(logits: torch.Tensor, target: tuple[int, ...]) -> float:
    """-log of the summed probability of every frame path that collapses to `target` (fp64, V^T paths)."""
    log_probs = torch.log_softmax(logits.double(), dim=-1)  # (T, V)
    frames, vocab = log_probs.shape
    scores = [
        sum(float(log_probs[t, k]) for t, k in enumerate(path))
        for path in itertools.product(range(vocab), repeat=frames)
        if collapse(path) == target
    ]
    if not scores:
        return math.inf
    top = max(scores)
    return -(top + math.log(sum(math.exp(s - top) for s in scores)))


@pytest.mark.parametrize("target", [(1,), (1, 2), (2, 2), (1, 2, 1)])
def test_loss_is_the_sum_over_alignments(target: tuple[int, ...]) -> None:
    logits = torch.randn(1, 5, 3, generator=torch.Generator().manual_seed(len(target)), dtype=torch.float64)
    padded = torch.tensor([target], dtype=torch.long)
    ours = ctc_loss_sum(logits.float(), torch.tensor([5]), padded, torch.tensor([len(target)]))
    expected = exhaustive_ctc(logits[0], target)
    # fp32 log-softmax and forward sums over 5 frames: a few 1e-7 relative each
    assert float(ours[0]) == pytest.approx(expected, rel=1e-5)
    reference = torch.nn.functional.ctc_loss(
        torch.log_softmax(logits, -1).transpose(0, 1), padded, torch.tensor([5]), torch.tensor([len(target)]),
        reduction="none",
    )  # fmt: skip
    assert float(reference[0]) == pytest.approx(expected, rel=1e-12)  # torch's fp64 kernel, for the record


def test_infeasible_target_gives_zero_not_inf() -> None:
    logits = torch.randn(1, 3, 3)
    target = torch.tensor([[1, 1, 2]])  # needs 4 frames (a blank between the repeated 1s)
    assert frames_needed(target, torch.tensor([3])).tolist() == [4]
    assert exhaustive_ctc(logits[0], (1, 1, 2)) == math.inf
    assert float(ctc_loss_sum(logits, torch.tensor([3]), target, torch.tensor([3]))[0]) == 0.0  # zero_infinity


def test_loss_in_fp32_under_bf16_autocast() -> None:
    logits = torch.randn(2, 6, 4, generator=torch.Generator().manual_seed(0)).bfloat16()
    targets, frames, lengths = torch.tensor([[1, 2], [3, -100]]), torch.tensor([6, 5]), torch.tensor([2, 1])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        inside = ctc_loss_sum(logits, frames, targets, lengths)
    assert inside.dtype == torch.float32
    outside = ctc_loss_sum(logits.float(), frames, targets, lengths)
    assert torch.equal(inside, outside)  # the same fp32 maths on the same (bf16-rounded) logits


def test_frames_needed_by_hand() -> None:
    targets = torch.tensor([[1, 1, 1, -100], [1, 2, 2, 3], [4, -100, -100, -100]])
    assert frames_needed(targets, torch.tensor([3, 4, 1])).tolist() == [5, 5, 1]


def test_greedy_merges_repeats_then_drops_blanks() -> None:
    path = [1, 1, 0, 1, 2, 2, 0, 0, 3, 9]  # frame 9 is padding
    logits = torch.nn.functional.one_hot(torch.tensor([path]), 10).float()
    assert ctc_greedy_batch(logits.log_softmax(-1), torch.tensor([9])) == [[1, 1, 2, 3]]
    vocab = ("<pad>", "A", "|", "B", "<s>", "<unk>", "C", "D", "E", "F")
    assert ids_to_text([1, 1, 2, 3], vocab, group_tokens=False) == "AA B"
    assert ids_to_text(path[:9], vocab) == "AA B"  # per-frame ids: grouped, then the blank dropped
    assert ids_to_text([2, 1, 2, 2, 3, 2], vocab) == "A B"  # delimiters at the edges stripped, a repeat grouped


def test_edit_counts_match_jiwer() -> None:
    refs = ["THE CAT SAT", "A B", "HELLO"]
    hyps = ["THE CAT SAT ON", "", "HELO WORLD"]
    counts = edit_counts(refs, hyps)
    chars, words = char_errors(refs, hyps), word_errors(refs, hyps)
    assert counts["char_errors"] == chars.substitutions + chars.deletions + chars.insertions
    assert counts["word_errors"] == words.substitutions + words.deletions + words.insertions
    assert counts["chars"] == sum(len(r) for r in refs) and counts["words"] == 6
