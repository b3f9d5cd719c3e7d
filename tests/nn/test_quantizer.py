from __future__ import annotations

import math

import pytest
import torch

from ssl_audio.nn.quantizer import (
    GumbelVectorQuantizer,
    QuantizerConfig,
    diversity_loss,
    gumbel_temperature,
)

G, V = 2, 4  # tiny codebook for hand cases


def _identity_quantizer(code_dim: int = 6) -> GumbelVectorQuantizer:
    """Logits equal the input: x of dim G*V picks, per group, the entry of its largest channel."""
    quantizer = GumbelVectorQuantizer(G * V, QuantizerConfig(num_groups=G, num_entries=V, code_dim=code_dim))
    with torch.no_grad():
        quantizer.logits.weight.copy_(torch.eye(G * V))
        quantizer.logits.bias.zero_()
    return quantizer.eval()


def _frames(codes: list[tuple[int, int]]) -> torch.Tensor:
    """(1, T, G*V) input whose argmax in group g is codes[t][g]."""
    rows = [torch.cat([torch.nn.functional.one_hot(torch.tensor(c), V).float() for c in frame]) for frame in codes]
    return torch.stack(rows)[None]


def test_temperature_schedule_hand_values() -> None:
    assert gumbel_temperature(0) == 2.0
    # 2 * 0.999995**1e5 = 2 * exp(1e5 * ln 0.999995) = 2 * exp(-0.50000125) = 1.2130598...
    assert gumbel_temperature(100_000) == pytest.approx(2 * math.exp(-0.50000125), rel=1e-9)
    assert gumbel_temperature(100_000) == pytest.approx(1.21306, abs=1e-5)
    assert gumbel_temperature(10_000_000) == 0.5  # 2 * exp(-50) is far below the floor
    # LARGE: end 0.1, reached after ln(20) / 5e-6 ~ 599k updates
    assert gumbel_temperature(1_000_000, 2.0, 0.999995, 0.1) == 0.1
    assert gumbel_temperature(500_000, 2.0, 0.999995, 0.1) == pytest.approx(2 * math.exp(-2.5000063), rel=1e-6)
    quantizer = GumbelVectorQuantizer(8, QuantizerConfig())
    assert quantizer.temperature == 2.0
    quantizer.set_step(100_000)
    assert quantizer.temperature == gumbel_temperature(100_000)
    assert quantizer(torch.randn(1, 3, 8)).temperature == quantizer.temperature


def test_code_perplexity_uniform_and_collapsed() -> None:
    quantizer = _identity_quantizer()
    uniform = _frames([(v, (v + 1) % V) for v in range(V)] * 3)  # each entry used 3 times in each group
    assert quantizer(uniform).code_perplexity.item() == pytest.approx(G * V, rel=1e-6)
    collapsed = _frames([(2, 1)] * 12)
    assert quantizer(collapsed).code_perplexity.item() == pytest.approx(G, rel=1e-6)
    # half the frames on one entry, the rest spread: exp(entropy) = exp(0.5 ln 2 + 3 * (1/6) ln 6) per group
    mixed = _frames([(0, 0)] * 3 + [(1, 1), (2, 2), (3, 3)])
    expected = G * math.exp(0.5 * math.log(2) + 0.5 * math.log(6))
    assert quantizer(mixed).code_perplexity.item() == pytest.approx(expected, rel=1e-6)


def test_prob_perplexity_of_uniform_logits_is_codebook_size() -> None:
    quantizer = GumbelVectorQuantizer(16, QuantizerConfig())  # 2 x 320
    with torch.no_grad():
        quantizer.logits.weight.zero_()
    out = quantizer(torch.randn(2, 7, 16))
    assert out.prob_perplexity.item() == pytest.approx(640.0, rel=1e-5)
    assert diversity_loss(out.prob_perplexity, 2, 320).item() == pytest.approx(0.0, abs=1e-5)


def test_prob_perplexity_matches_direct_formula() -> None:
    torch.manual_seed(0)
    quantizer = GumbelVectorQuantizer(5, QuantizerConfig(num_groups=G, num_entries=V, code_dim=4)).eval()
    x = torch.randn(3, 6, 5)
    probs = (x @ quantizer.logits.weight.T + quantizer.logits.bias).reshape(18, G, V).softmax(-1).mean(0)
    expected = sum(math.exp(-sum(p * math.log(p) for p in group.tolist())) for group in probs)
    assert quantizer(x).prob_perplexity.item() == pytest.approx(expected, rel=1e-5)


def test_diversity_loss_hand_values() -> None:
    assert diversity_loss(640.0, 2, 320) == 0.0
    assert diversity_loss(2.0, 2, 320) == pytest.approx(638 / 640)
    assert diversity_loss(torch.tensor(G * V * 1.0), G, V).item() == 0.0


def test_padded_frames_do_not_count() -> None:
    quantizer = _identity_quantizer()
    valid = [(v, (v + 1) % V) for v in range(V)]
    x = _frames(valid + [(0, 0)] * 4)  # 4 uniform frames, then 4 padded frames that would skew code 0
    x[0, V:] += 100.0  # padded frames hold large garbage (makes their softmax far from the valid frames')
    padding_mask = torch.arange(2 * V)[None, :] >= V
    masked = quantizer(x, padding_mask)
    assert masked.code_perplexity.item() == pytest.approx(G * V, rel=1e-6)
    assert quantizer(x).code_perplexity.item() < G * V - 0.5
    valid_only = quantizer(x[:, :V])
    assert masked.prob_perplexity.item() == pytest.approx(valid_only.prob_perplexity.item(), rel=1e-6)
    with pytest.raises(ValueError, match="padding_mask must be bool"):
        quantizer(x, padding_mask.long())


def test_eval_is_deterministic_argmax() -> None:
    torch.manual_seed(1)
    quantizer = GumbelVectorQuantizer(12, QuantizerConfig(num_groups=G, num_entries=V, code_dim=6)).eval()
    x = torch.randn(2, 5, 12)
    first, second = quantizer(x), quantizer(x)
    assert torch.equal(first.quantized, second.quantized) and torch.equal(first.codes, second.codes)
    logits = (x @ quantizer.logits.weight.T + quantizer.logits.bias).reshape(2, 5, G, V)
    assert torch.equal(first.codes, logits.argmax(-1))
    assert first.codes.dtype == torch.long and first.codes.shape == (2, 5, G)
    codebook = quantizer.codevectors.reshape(G, V, 3)
    expected = torch.cat([codebook[g][first.codes[..., g]] for g in range(G)], dim=-1)  # (2, 5, 6)
    assert torch.equal(first.quantized, expected)


def test_training_is_straight_through() -> None:
    torch.manual_seed(2)
    quantizer = GumbelVectorQuantizer(12, QuantizerConfig(num_groups=G, num_entries=V, code_dim=6)).train()
    x = torch.randn(2, 50, 12)
    out = quantizer(x, generator=torch.Generator().manual_seed(0))
    codebook = quantizer.codevectors.detach().reshape(G, V, 3)
    expected = torch.cat([codebook[g][out.codes[..., g]] for g in range(G)], dim=-1)
    assert torch.equal(out.quantized.detach(), expected)  # forward: exactly the hard selection
    # Gumbel noise makes some picks differ from the argmax at temperature 2
    logits = (x @ quantizer.logits.weight.T + quantizer.logits.bias).reshape(2, 50, G, V)
    assert not torch.equal(out.codes, logits.argmax(-1))
    again = quantizer(x, generator=torch.Generator().manual_seed(0))
    assert torch.equal(again.codes, out.codes)  # seeded noise is reproducible

    (out.quantized * torch.randn_like(out.quantized)).sum().backward()
    assert quantizer.logits.weight.grad is not None and quantizer.logits.weight.grad.abs().sum() > 0
    assert quantizer.codevectors.grad.abs().sum() > 0


def test_diversity_loss_gradient_reaches_logits_and_collapse_value() -> None:
    quantizer = _identity_quantizer()
    out = quantizer(_frames([(1, 3)] * 5) * 50.0)  # near-one-hot softmax: prob perplexity ~ G
    loss = diversity_loss(out.prob_perplexity, G, V)
    assert loss.item() == pytest.approx((G * V - G) / (G * V), abs=1e-4)
    quantizer.logits.weight.requires_grad_(True)
    quantizer(torch.randn(1, 4, G * V)).prob_perplexity.backward()
    assert quantizer.logits.weight.grad.abs().sum() > 0


def test_bad_shapes_and_configs_raise() -> None:
    with pytest.raises(ValueError, match="code_dim 255 must be a positive multiple of num_groups 2"):
        QuantizerConfig(code_dim=255)
    quantizer = GumbelVectorQuantizer(8, QuantizerConfig())
    with pytest.raises(ValueError, match=r"x must be \(B, T, 8\)"):
        quantizer(torch.randn(2, 3, 9))
    with pytest.raises(ValueError, match="step must be >= 0"):
        gumbel_temperature(-1)
