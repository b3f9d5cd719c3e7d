"""The shared trunk: early exit, padding invariance, layerdrop, frame counts and bad input."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from ssl_audio.models.encoder import Encoder, EncoderConfig
from ssl_audio.models.wav2vec2 import tiny_encoder
from ssl_audio.nn.conv_extractor import BASE_CONV_LAYERS, ConvFeatureExtractor, ConvFrontendConfig

TINY_FRONT = tiny_encoder().frontend
NO_DROPOUT = dict(dropout=0.0, attention_dropout=0.0, projection_dropout=0.0, activation_dropout=0.0)


def _encoder(seed: int = 0, **changes: object) -> Encoder:
    torch.manual_seed(seed)
    return Encoder(tiny_encoder(**changes))


def _frames(samples: int) -> int:
    """Closed form for the (10,5)(3,2)x4(2,2)x2 stack: receptive field 400, stride 320."""
    return (samples - 400) // 320 + 1


def test_num_layers_returns_a_prefix_of_the_full_run() -> None:
    encoder = _encoder().eval()
    wave, lengths = torch.randn(2, 8_000), torch.tensor([8_000, 5_000])
    full = encoder(wave, lengths)
    assert len(full.hidden_states) == 5  # input + 4 layers
    assert torch.equal(full.last, full.hidden_states[-1])  # post-LN: the last layer's output
    for k in range(5):
        part = encoder(wave, lengths, num_layers=k)
        assert len(part.hidden_states) == k + 1
        for a, b in zip(part.hidden_states, full.hidden_states[: k + 1]):
            torch.testing.assert_close(a, b, rtol=0, atol=1e-6)
        torch.testing.assert_close(part.last, full.hidden_states[k], rtol=0, atol=1e-6)
        assert torch.equal(part.lengths, full.lengths) and torch.equal(part.padding_mask, full.padding_mask)
    with pytest.raises(ValueError, match="num_layers"):
        encoder(wave, lengths, num_layers=5)


def test_pre_ln_last_is_final_layer_norm_of_the_last_layer() -> None:
    encoder = _encoder(pre_ln=True).eval()
    out = encoder(torch.randn(1, 4_000))
    norm = encoder.transformer.norm
    x = out.hidden_states[-1]
    by_hand = (x - x.mean(-1, keepdim=True)) / torch.sqrt(x.var(-1, unbiased=False, keepdim=True) + norm.eps)
    torch.testing.assert_close(out.last, by_hand * norm.weight + norm.bias, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    ("pre_ln", "relative_bias"), [(False, False), (True, False), (False, True)], ids=["post_ln", "pre_ln", "wavlm"]
)
def test_padding_invariance_with_layer_norm_extractor(pre_ln: bool, relative_bias: bool) -> None:
    encoder = _encoder(
        frontend=replace(TINY_FRONT, mode="layer_norm", bias=True), pre_ln=pre_ln, relative_bias=relative_bias
    )
    encoder.eval()
    lengths = [16_000, 9_000, 12_345]
    g = torch.Generator().manual_seed(0)
    rows = [torch.randn(n, generator=g) for n in lengths]
    batch = 100.0 * torch.randn(3, 16_000, generator=g)  # loud garbage in the padding: it must not leak
    for i, row in enumerate(rows):
        batch[i, : len(row)] = row
    out = encoder(batch, torch.tensor(lengths))
    assert out.lengths.tolist() == [_frames(n) for n in lengths] == [49, 27, 38]
    for i, row in enumerate(rows):
        alone = encoder(row[None], torch.tensor([len(row)]))
        frames = _frames(len(row))
        assert alone.hidden_states[0].shape[1] == frames
        # Batch and single row run the convs and matmuls in other blockings: a sum of n = 192 (conv) to 384 (FFN)
        # products moves by up to n x eps 6e-8 = 2e-5 of its terms' size, through 7 convs, the projection and 4
        # blocks on values |x| < 5. Measured 5e-6 under avx2 (half the former atol 1e-5); atol 1e-4. Padding
        # leaking in (garbage x 100) moves the frames by O(1).
        for layer, (a, b) in enumerate(zip(alone.hidden_states, out.hidden_states)):
            torch.testing.assert_close(b[i, :frames], a[0], rtol=0, atol=1e-4, msg=f"row {i} layer {layer}")
        torch.testing.assert_close(out.last[i, :frames], alone.last[0], rtol=0, atol=1e-4)


def test_group_norm_extractor_depends_on_padding_as_fairseq() -> None:
    # BASE's GroupNorm(C, C) after the first conv normalises each channel over the whole padded length (fairseq
    # and torchaudio do the same, and pretrained BASE checkpoints expect it): valid frames of a padded row are not
    # those of the row run alone. Batching BASE models by length (little padding) keeps the effect small.
    encoder = _encoder(frontend=replace(TINY_FRONT, mode="group_norm")).eval()
    row = torch.randn(9_000, generator=torch.Generator().manual_seed(0))
    batch = torch.zeros(2, 16_000)
    batch[0, :9_000] = row
    batch[1] = torch.randn(16_000)
    frames = _frames(9_000)
    padded = encoder(batch, torch.tensor([9_000, 16_000])).hidden_states[0][0, :frames]
    alone = encoder(row[None], torch.tensor([9_000])).hidden_states[0][0]
    assert (padded - alone).abs().max() > 1e-3


def _dropped(hidden: list[torch.Tensor]) -> list[bool]:
    """A dropped layer passes its input through unchanged."""
    return [torch.equal(a, b) for a, b in zip(hidden[:-1], hidden[1:])]


def test_layerdrop_is_seeded_and_off_in_eval() -> None:
    encoder = _encoder(layerdrop=0.5, num_layers=6, **NO_DROPOUT).train()
    wave = torch.randn(1, 4_000)
    x = encoder.extract(wave).projected.detach()

    def run(seed: int) -> list[torch.Tensor]:
        return encoder.transformer(x, layerdrop_seed=seed).hidden_states

    patterns = {}
    for seed in range(12):
        torch.manual_seed(100 + seed)  # the global RNG must not decide
        first = run(seed)
        torch.manual_seed(200 + seed)
        second = run(seed)
        assert all(torch.equal(a, b) for a, b in zip(first, second)), f"seed {seed} differs between calls"
        patterns[seed] = tuple(_dropped(first))
        # the pattern is the seeded draw: layer l is dropped iff U_l < 0.5
        draw = torch.rand(6, generator=torch.Generator().manual_seed(seed)) < 0.5
        assert list(patterns[seed]) == draw.tolist()
    assert len(set(patterns.values())) > 1  # different seeds drop different layers
    dropped = sum(sum(p) for p in patterns.values())
    assert 0.25 < dropped / (12 * 6) < 0.75

    encoder.eval()
    for seed in range(4):
        hidden = encoder.transformer(x, layerdrop_seed=seed).hidden_states
        assert not any(_dropped(hidden))
    reference = _encoder(layerdrop=0.0, num_layers=6, **NO_DROPOUT).eval()
    torch.testing.assert_close(encoder.transformer(x).last, reference.transformer(x).last, rtol=0, atol=0)


@pytest.mark.parametrize(
    "layers", [TINY_FRONT.layers, tuple((4, k, s) for _, k, s in BASE_CONV_LAYERS)], ids=["tiny", "base"]
)
def test_frame_lengths_formula_equals_conv_output(layers: tuple) -> None:
    extractor = ConvFeatureExtractor(layers)
    assert extractor.window == ConvFrontendConfig(layers=layers).window == 400
    assert extractor.hop == ConvFrontendConfig(layers=layers).hop == 320
    g = torch.Generator().manual_seed(0)
    samples = [400, 401, 719, 720, 721, 1039, 1040, 1041, 16_000, 16_001] + list(range(450, 3_300, 97))
    samples += torch.randint(3_300, 40_000, (3,), generator=g).tolist()
    with torch.no_grad():
        for n in samples:
            features, lengths = extractor(torch.zeros(1, n), torch.tensor([n]))
            assert features.shape[1] == int(lengths[0]) == _frames(n), n
    # the formula against the closed form for every length up to 50k samples, and never negative below one frame
    every = torch.arange(400, 50_000)
    assert torch.equal(extractor.output_lengths(every), (every - 400) // 320 + 1)
    counts = extractor.output_lengths(torch.tensor([16_000, 11_000, 400, 399, 0]))
    assert counts.tolist() == [49, 34, 1, 0, 0]


def test_hop_and_base_defaults() -> None:
    assert EncoderConfig().hop == 320 and tiny_encoder().hop == 320
    encoder = Encoder(tiny_encoder())
    assert (encoder.hop, encoder.window, encoder.min_samples) == (320, 400, 400)
    cfg = EncoderConfig()
    assert (cfg.dim, cfg.num_layers, cfg.num_heads, cfg.ffn_dim) == (768, 12, 12, 3072)
    assert cfg.frontend == ConvFrontendConfig(layers=BASE_CONV_LAYERS, mode="group_norm", bias=False)
    assert not cfg.pre_ln and not cfg.relative_bias


def test_forward_returns_lengths_and_padding_mask() -> None:
    encoder = _encoder().eval()
    out = encoder(torch.randn(2, 16_000), torch.tensor([16_000, 11_000]))
    assert out.lengths.tolist() == [49, 34]
    assert out.padding_mask.shape == (2, 49)
    assert out.padding_mask.sum(1).tolist() == [0, 15]
    assert not out.padding_mask[1, :34].any() and out.padding_mask[1, 34:].all()
    assert all(h.shape == (2, 49, 96) for h in out.hidden_states)
    no_lengths = encoder(torch.randn(2, 16_000))
    assert no_lengths.lengths is None and no_lengths.padding_mask is None


def test_bad_input_shapes_raise() -> None:
    encoder = _encoder()
    with pytest.raises(ValueError, match="399"):
        encoder(torch.zeros(2, 399))  # shorter than the 400-sample receptive field
    with pytest.raises(ValueError, match=r"\(16000,\)"):
        encoder(torch.zeros(16_000))  # no batch axis
    with pytest.raises(ValueError, match=r"\(2, 1, 16000\)"):
        encoder(torch.zeros(2, 1, 16_000))  # a channel axis
