from __future__ import annotations

import math

import pytest
import torch
from torchaudio.models.wav2vec2.components import _compute_mask_indices

from ssl_audio.nn.masking import (
    MaskingConfig,
    SpanMasker,
    apply_mask,
    compute_channel_mask,
    compute_span_mask,
)


def _runs(row: torch.Tensor) -> list[tuple[int, int]]:
    """(start, length) of every run of True in a 1-D bool tensor."""
    padded = torch.cat([torch.tensor([False]), row, torch.tensor([False])]).int()
    edges = padded.diff()
    starts = (edges == 1).nonzero().flatten()
    ends = (edges == -1).nonzero().flatten()
    return [(int(s), int(e - s)) for s, e in zip(starts, ends)]


def _expected_fraction(frames: int, mask_prob: float, span: int, min_masks: int, num_starts: int) -> float:
    """Exact E[masked fraction] of one row: K distinct uniform starts among `num_starts`, overlap allowed.

    K = max(min_masks, floor(x + u)), x = mask_prob * frames / span. Frame t is unmasked iff none of the
    w_t starts that cover it was drawn: probability C(num_starts - w_t, K) / C(num_starts, K).
    """
    x = mask_prob * frames / span
    floor_x = math.floor(x)
    total = 0.0
    for k, weight in ((max(min_masks, floor_x), 1 - (x - floor_x)), (max(min_masks, floor_x + 1), x - floor_x)):
        k = min(k, num_starts)
        for t in range(frames):
            covering = min(t, num_starts - 1) - max(0, t - span + 1) + 1
            total += weight * (1 - math.comb(num_starts - covering, k) / math.comb(num_starts, k)) / frames
    return total


@pytest.mark.parametrize(("mask_prob", "frames"), [(0.65, 250), (0.65, 50), (0.8, 250), (0.8, 50)])
def test_masked_fraction_matches_closed_form_and_torchaudio(mask_prob: float, frames: int) -> None:
    span, min_masks = 10, 2
    gen = torch.Generator().manual_seed(0)
    ours = compute_span_mask((4000, frames), mask_prob=mask_prob, mask_length=span, min_masks=min_masks, generator=gen)
    # ours: starts in [0, T - L] (T - L + 1 of them); torchaudio/fairseq: [0, T - L - 1]
    ours_expected = _expected_fraction(frames, mask_prob, span, min_masks, frames - span + 1)
    assert ours.float().mean().item() == pytest.approx(ours_expected, abs=0.005)

    torch.manual_seed(0)  # torchaudio's reference draws from the global RNG, one row per call
    reference = torch.cat(
        [_compute_mask_indices((1, frames), None, mask_prob, span, min_masks=min_masks) for _ in range(300)]
    )
    reference_expected = _expected_fraction(frames, mask_prob, span, min_masks, frames - span)
    assert reference.float().mean().item() == pytest.approx(reference_expected, abs=0.015)
    assert ours_expected == pytest.approx(reference_expected, abs=0.006)  # the start range barely matters
    if (mask_prob, frames) == (0.65, 250):
        assert ours_expected == pytest.approx(0.49, abs=0.01)  # wav2vec 2.0's well-known ~49 %


def test_no_overlap_masks_exactly_num_spans_times_length() -> None:
    # 0.4 * 200 / 10 = 8 spans exactly (u < 1 never reaches 9), none overlapping: 80 frames in every row
    gen = torch.Generator().manual_seed(1)
    mask = compute_span_mask((64, 200), mask_prob=0.4, mask_length=10, no_overlap=True, generator=gen)
    assert mask.sum(dim=1).tolist() == [80] * 64
    for row in mask:
        assert all(length % 10 == 0 for _, length in _runs(row))  # touching spans make multiples of 10


def test_no_overlap_with_min_space_gives_runs_of_exactly_one_span() -> None:
    gen = torch.Generator().manual_seed(2)
    lengths = torch.tensor([200, 150, 97, 40])
    mask = compute_span_mask(
        (4, 200),
        mask_prob=0.65,
        mask_length=10,
        min_masks=2,
        lengths=lengths,
        no_overlap=True,
        min_space=1,
        generator=gen,
    )
    for row, length in zip(mask, lengths.tolist()):
        runs = _runs(row)
        assert all(run == 10 for _, run in runs)
        # floor(0.65 * length / 10) or one more (rounding), at least min_masks, at most what fits: (length + 1) // 11
        fits = (length + 1) // 11
        low, high = max(2, math.floor(0.65 * length / 10)), max(2, math.floor(0.65 * length / 10) + 1)
        assert min(low, fits) <= len(runs) <= min(high, fits)


def test_no_overlap_is_uniform_over_positions() -> None:
    # one span of 3 frames in 5: starts 0, 1, 2 equally likely -> frame 2 always masked, frames 0, 4 a third
    gen = torch.Generator().manual_seed(3)
    mask = compute_span_mask((6000, 5), mask_prob=0.2, mask_length=3, min_masks=1, no_overlap=True, generator=gen)
    freq = mask.float().mean(dim=0)
    torch.testing.assert_close(freq, torch.tensor([1 / 3, 2 / 3, 1.0, 2 / 3, 1 / 3]), atol=0.025, rtol=0)


def test_padding_is_never_masked() -> None:
    lengths = torch.tensor([250, 120, 37, 10, 3, 0])
    gen = torch.Generator().manual_seed(4)
    for no_overlap in (False, True):
        mask = compute_span_mask(
            (6, 250),
            mask_prob=0.8,
            mask_length=10,
            min_masks=2,
            lengths=lengths,
            no_overlap=no_overlap,
            generator=gen,
        )
        padded = torch.arange(250)[None, :] >= lengths[:, None]
        assert not mask[padded].any()
        assert mask[:5].any(dim=1).all()  # every non-empty row is masked somewhere
        assert mask[4, :3].all()  # a row shorter than a span gets one clipped span


def test_min_masks_respected_on_short_rows() -> None:
    # 0.05 * 30 / 5 = 0.3 spans on average, but min_masks 3 with no overlap forces 15 masked frames per row
    gen = torch.Generator().manual_seed(5)
    mask = compute_span_mask((200, 30), mask_prob=0.05, mask_length=5, min_masks=3, no_overlap=True, generator=gen)
    assert mask.sum(dim=1).tolist() == [15] * 200
    # with overlap allowed, three distinct starts still cover at least 5 + 1 + 1 frames
    mask = compute_span_mask((200, 30), mask_prob=0.05, mask_length=5, min_masks=3, generator=gen)
    assert mask.sum(dim=1).min() >= 7


def test_require_same_masks_equalises_counts() -> None:
    gen = torch.Generator().manual_seed(6)
    lengths = torch.tensor([250, 200, 180, 240])
    mask = compute_span_mask(
        (4, 250),
        mask_prob=0.65,
        mask_length=10,
        min_masks=2,
        lengths=lengths,
        require_same_masks=True,
        generator=gen,
    )
    counts = mask.sum(dim=1)
    assert counts.unique().numel() == 1 and counts[0] > 0
    assert not mask[torch.arange(250)[None, :] >= lengths[:, None]].any()


def test_seeded_generator_reproduces_and_seeds_differ() -> None:
    def draw(seed: int) -> torch.Tensor:
        return compute_span_mask(
            (8, 100),
            mask_prob=0.65,
            mask_length=10,
            min_masks=2,
            require_same_masks=True,
            generator=torch.Generator().manual_seed(seed),
        )

    assert torch.equal(draw(7), draw(7))
    assert not torch.equal(draw(7), draw(8))


def test_overlapping_spans_are_contiguous_runs_of_at_least_one_span() -> None:
    gen = torch.Generator().manual_seed(9)
    mask = compute_span_mask((32, 250), mask_prob=0.65, mask_length=10, min_masks=2, generator=gen)
    assert all(length >= 10 for row in mask for _, length in _runs(row))


def test_zero_probability_and_min_masks_masks_nothing() -> None:
    mask = compute_span_mask((3, 50), mask_prob=0.0, mask_length=10)
    assert not mask.any()


def test_bad_arguments_raise() -> None:
    with pytest.raises(ValueError, match="lengths must have shape"):
        compute_span_mask((2, 10), mask_prob=0.5, mask_length=2, lengths=torch.tensor([3, 4, 5]))
    with pytest.raises(ValueError, match="lengths must lie"):
        compute_span_mask((2, 10), mask_prob=0.5, mask_length=2, lengths=torch.tensor([3, 11]))
    with pytest.raises(ValueError, match="mask_prob"):
        compute_span_mask((2, 10), mask_prob=1.5, mask_length=2)
    with pytest.raises(ValueError, match="mask_length"):
        MaskingConfig(mask_length=0)


def test_apply_mask_replaces_only_masked_frames() -> None:
    gen = torch.Generator().manual_seed(10)
    x = torch.randn(3, 40, 8, generator=gen)
    x_before = x.clone()
    mask = compute_span_mask((3, 40), mask_prob=0.5, mask_length=4, generator=gen)
    embedding = torch.arange(8, dtype=torch.float32)
    out = apply_mask(x, mask, embedding)
    assert torch.equal(x, x_before)  # not in place
    assert torch.equal(out[~mask], x[~mask])
    assert torch.equal(out[mask], embedding.expand(int(mask.sum()), 8))
    out_bf16 = apply_mask(x.bfloat16(), mask, embedding)
    assert out_bf16.dtype == torch.bfloat16
    with pytest.raises(ValueError, match="mask must be bool of shape"):
        apply_mask(x, mask[:, :10], embedding)


def test_channel_mask_zeroes_whole_channels() -> None:
    cfg = MaskingConfig(mask_prob=0.3, mask_length=5, min_masks=1, channel_prob=0.5, channel_length=4)
    masker = SpanMasker(32, cfg)
    gen = torch.Generator().manual_seed(11)
    x = torch.rand(4, 60, 32, generator=gen) + 1.0  # strictly positive: zeros can only come from channel masking
    out, mask = masker(x, torch.tensor([60, 50, 40, 30]), generator=gen)
    zeroed = (out == 0).all(dim=1)  # (B, D) channels that are zero in every frame
    assert zeroed.any(dim=1).all()
    assert ((out == 0) == zeroed[:, None, :]).all()  # no partly zeroed channel
    keep = ~zeroed[:, None, :]
    expected = torch.where(mask[..., None], masker.mask_embedding.detach(), x)
    assert torch.equal(out.detach()[keep.expand_as(out)], expected[keep.expand_as(out)])

    channels = compute_channel_mask((16, 64), mask_prob=0.5, mask_length=8, no_overlap=True, generator=gen)
    assert channels.shape == (16, 64) and channels.sum(dim=1).tolist() == [32] * 16


def test_span_masker_embedding_gets_gradient() -> None:
    masker = SpanMasker(16, MaskingConfig(require_same_masks=True))
    assert masker.mask_embedding.min() >= 0.0 and masker.mask_embedding.max() < 1.0  # uniform [0, 1) init
    x = torch.randn(2, 100, 16)
    out, mask = masker(x, generator=torch.Generator().manual_seed(12))
    assert mask.sum(dim=1)[0] == mask.sum(dim=1)[1]
    out.sum().backward()
    torch.testing.assert_close(masker.mask_embedding.grad, torch.full((16,), float(mask.sum())))
    with pytest.raises(ValueError, match=r"x must be \(B, T, 16\)"):
        masker(torch.randn(2, 100, 8))
