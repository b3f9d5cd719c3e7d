"""FrameBank: padded batches of per-item frames by one gather, against a batch built by hand with numpy."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ssl_audio.probe.heads import FrameBank, LinearProbe, pad_frames


def _items(rng: np.random.Generator, lengths: list[int], dtype: type = np.float16) -> list[np.ndarray]:
    return [rng.standard_normal((3, n, 4)).astype(dtype) for n in lengths]  # (K, T_i, D)


def _by_hand(items: list[np.ndarray], order: list[int]) -> np.ndarray:
    """(B, T, K, D) float32, zeros past each item's end."""
    longest = max(items[i].shape[1] for i in order)
    out = np.zeros((len(order), longest, 3, 4), dtype=np.float32)
    for b, i in enumerate(order):
        out[b, : items[i].shape[1]] = items[i].astype(np.float32).transpose(1, 0, 2)
    return out


@pytest.mark.parametrize("dtype", [np.float16, np.float32])
def test_batch_is_the_padded_items_in_order(dtype: type) -> None:
    items = _items(np.random.default_rng(0), [5, 2, 7, 1], dtype)
    bank = FrameBank(items)
    order = [2, 0, 3]
    x, lengths = bank.batch(torch.tensor(order))
    assert x.dtype == torch.float32 and tuple(x.shape) == (3, 7, 3, 4)
    assert lengths.tolist() == [7, 5, 1]
    # float16 -> float32 is exact, and padding is exactly zero: equal to the bit
    np.testing.assert_array_equal(x.numpy(), _by_hand(items, order))
    np.testing.assert_array_equal(pad_frames([items[i] for i in order])[0].numpy(), _by_hand(items, order))


def test_probe_on_a_bank_batch_matches_a_contiguous_batch() -> None:
    """The (B, T, D, K) storage behind the view changes no value of the head's output or gradient."""
    items = _items(np.random.default_rng(1), [6, 3, 4], np.float32)
    x, _ = FrameBank(items).batch([0, 1, 2])
    torch.manual_seed(0)
    head = LinearProbe(torch.randn(3, 4), torch.rand(3, 4) + 0.5, 5)
    head.mix.logits.data = torch.tensor([0.3, -0.2, 0.9])
    out = head(x)
    out.square().sum().backward()
    grad = head.mix.logits.grad.clone()
    head.zero_grad()
    reference = head(torch.from_numpy(_by_hand(items, [0, 1, 2])))
    reference.square().sum().backward()
    # sums of K = 3 products then D = 4: a few fp32 roundings (~1e-7 relative each) whatever the summation order
    torch.testing.assert_close(out, reference, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(grad, head.mix.logits.grad, rtol=1e-5, atol=1e-5)
