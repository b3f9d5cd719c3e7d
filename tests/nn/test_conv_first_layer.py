"""The waveform layer's matmul over strided windows against nn.Conv1d itself (forward and gradients)."""

from __future__ import annotations

import pytest
import torch

from ssl_audio.nn.conv_extractor import ConvBlock


@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize(("kernel", "stride", "samples"), [(10, 5, 4003), (3, 2, 40), (4, 4, 17)])
def test_one_channel_matmul_is_the_convolution(bias: bool, kernel: int, stride: int, samples: int) -> None:
    torch.manual_seed(0)
    block = ConvBlock(1, (8, kernel, stride), norm=None, bias=bias)
    if bias:
        torch.nn.init.normal_(block.conv.bias)
    x = torch.randn(3, 1, samples)
    fast = block.convolve(x)
    grads_fast = torch.autograd.grad(fast.square().sum(), list(block.parameters()))
    reference = block.conv(x)
    grads_reference = torch.autograd.grad(reference.square().sum(), list(block.parameters()))
    assert fast.shape == reference.shape == (3, 8, (samples - kernel) // stride + 1)
    # K products per output (~1e-7 relative rounding each); the weight gradient sums B * T of them
    torch.testing.assert_close(fast, reference, rtol=1e-5, atol=1e-5)
    for g, r in zip(grads_fast, grads_reference):
        torch.testing.assert_close(g, r, rtol=1e-4, atol=1e-4 * float(r.abs().max()))


def test_more_channels_use_the_convolution() -> None:
    block = ConvBlock(4, (8, 3, 2), norm=None, bias=False)
    x = torch.randn(2, 4, 50)
    torch.testing.assert_close(block.convolve(x), block.conv(x), rtol=0, atol=0)
