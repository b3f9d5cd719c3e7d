"""Our encoder equals torchaudio's reference models layer by layer (the independent oracle)."""

import pytest
import torch
from torchaudio.models import (
    hubert_base,
    hubert_pretrain_model,
    wav2vec2_base,
    wav2vec2_large,
    wav2vec2_model,
    wavlm_base,
)
from torchaudio.models import wavlm_model as ta_wavlm_model

from ssl_audio.interop.torchaudio import config_from_torchaudio, from_torchaudio, to_torchaudio
from ssl_audio.models.encoder import Encoder, EncoderConfig
from ssl_audio.nn.conv_extractor import ConvFrontendConfig

SMALL_CONV = [(32, 10, 5), (32, 3, 2), (32, 3, 2), (32, 3, 2), (32, 3, 2), (32, 2, 2), (32, 2, 2)]
LENGTHS = torch.tensor([16_000, 11_000, 7_000])  # a padded batch of unequal lengths


def small_kwargs(mode: str, pre_ln: bool) -> dict:
    return dict(
        extractor_mode=mode,
        extractor_conv_layer_config=SMALL_CONV,
        extractor_conv_bias=mode == "layer_norm",
        encoder_embed_dim=64,
        encoder_projection_dropout=0.1,
        encoder_pos_conv_kernel=16,
        encoder_pos_conv_groups=4,
        encoder_num_layers=3,
        encoder_num_heads=4,
        encoder_attention_dropout=0.1,
        encoder_ff_interm_features=128,
        encoder_ff_interm_dropout=0.0,
        encoder_dropout=0.1,
        encoder_layer_norm_first=pre_ln,
        encoder_layer_drop=0.05,
    )


def randomize(model: torch.nn.Module) -> torch.nn.Module:
    """Non-trivial values everywhere (norm weights and biases too), so a swapped key cannot hide."""
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=generator))
    return model.eval()


def batch() -> torch.Tensor:
    waves = torch.randn(len(LENGTHS), int(LENGTHS.max()), generator=torch.Generator().manual_seed(1))
    return waves * (torch.arange(waves.shape[1])[None, :] < LENGTHS[:, None])


def assert_layers_equal(theirs: list[torch.Tensor], ours: list[torch.Tensor], frames: torch.Tensor) -> None:
    assert len(theirs) == len(ours)
    for layer, (a, b) in enumerate(zip(theirs, ours)):
        for row, n in enumerate(frames.tolist()):
            torch.testing.assert_close(b[row, :n], a[row, :n], atol=1e-5, rtol=0, msg=f"layer {layer + 1}, row {row}")


@pytest.mark.parametrize(("mode", "pre_ln"), [("group_norm", False), ("layer_norm", True), ("group_norm", True)])
def test_wav2vec2_every_layer_matches_torchaudio(mode, pre_ln):
    reference = randomize(wav2vec2_model(**small_kwargs(mode, pre_ln), aux_num_out=None))
    ours = from_torchaudio(reference).eval()
    waves = batch()
    with torch.no_grad():
        theirs, frames = reference.extract_features(waves, LENGTHS)
        final, _ = reference(waves, LENGTHS)
        out = ours(waves, LENGTHS)
    assert torch.equal(out.lengths, frames)
    assert_layers_equal(theirs, out.hidden_states[1:], frames)
    assert_layers_equal([final], [out.last], frames)


def test_hubert_pretrain_model_encoder_matches_torchaudio():
    reference = hubert_pretrain_model(
        **small_kwargs("group_norm", False),
        mask_prob=0.8,
        mask_selection="static",
        mask_other=0.0,
        mask_length=10,
        no_mask_overlap=False,
        mask_min_space=1,
        mask_channel_prob=0.0,
        mask_channel_selection="static",
        mask_channel_other=0.0,
        mask_channel_length=10,
        no_mask_channel_overlap=False,
        mask_channel_min_space=1,
        skip_masked=False,
        skip_nomask=False,
        num_classes=10,
        final_dim=32,
        feature_grad_mult=0.1,
    )
    reference = randomize(reference)
    ours = from_torchaudio(reference).eval()
    with torch.no_grad():
        theirs, frames = reference.wav2vec2.extract_features(batch(), LENGTHS)
        out = ours(batch(), LENGTHS)
    assert_layers_equal(theirs, out.hidden_states[1:], frames)


@pytest.mark.parametrize("pre_ln", [False, True])
def test_wavlm_every_layer_matches_torchaudio(pre_ln):
    kwargs = small_kwargs("layer_norm", pre_ln)
    reference = randomize(ta_wavlm_model(**kwargs, encoder_num_buckets=320, encoder_max_distance=800, aux_num_out=None))
    ours = from_torchaudio(reference).eval()
    assert ours.cfg.relative_bias
    waves = batch()
    with torch.no_grad():
        out = ours(waves, LENGTHS)
        # torchaudio's WavLM takes no lengths: run each utterance alone, unpadded. With a per-frame
        # (layer_norm) extractor the valid frames of a padded batch must equal the unpadded run.
        for row, n in enumerate(LENGTHS.tolist()):
            theirs, _ = reference.extract_features(waves[row : row + 1, :n])
            frames = torch.tensor([theirs[0].shape[1]])
            assert frames.item() == out.lengths[row].item()
            assert_layers_equal(theirs, [h[row : row + 1] for h in out.hidden_states[1:]], frames)


def test_wavlm_group_norm_equal_lengths_matches_torchaudio():
    kwargs = small_kwargs("group_norm", False)
    reference = randomize(ta_wavlm_model(**kwargs, encoder_num_buckets=320, encoder_max_distance=800, aux_num_out=None))
    ours = from_torchaudio(reference).eval()
    waves = torch.randn(2, 12_000, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        theirs, _ = reference.extract_features(waves)
        out = ours(waves)
    assert_layers_equal(theirs, out.hidden_states[1:], torch.tensor([theirs[0].shape[1]] * 2))


@pytest.mark.parametrize("wavlm", [False, True])
def test_round_trip_to_torchaudio_is_exact(wavlm):
    cfg = EncoderConfig(
        frontend=ConvFrontendConfig(layers=tuple(SMALL_CONV)), dim=64, num_layers=2, num_heads=4, ffn_dim=128,
        pos_conv_kernel=16, pos_conv_groups=4, relative_bias=wavlm,
    )  # fmt: skip
    ours = randomize(Encoder(cfg))
    back = from_torchaudio(to_torchaudio(ours))
    assert back.cfg == cfg
    for key, value in ours.state_dict().items():
        assert torch.equal(back.state_dict()[key], value), key


@pytest.mark.parametrize(
    ("builder", "cfg", "count"),
    [
        (wav2vec2_base, EncoderConfig(), 94_370_944),
        (hubert_base, EncoderConfig(), 94_370_944),
        (wav2vec2_large, EncoderConfig(dim=1024, num_layers=24, num_heads=16, ffn_dim=4096, pre_ln=True), 315_427_968),
        (wavlm_base, EncoderConfig(relative_bias=True), 94_381_168),
    ],
)
def test_parameter_counts_equal_torchaudio(builder, cfg, count):
    with torch.device("meta"):
        reference = builder()
        ours = Encoder(cfg)
    assert sum(p.numel() for p in reference.parameters()) == count
    assert sum(p.numel() for p in ours.parameters()) == count
    # The architecture read off the reference is the one we built (dropouts aside).
    assert config_from_torchaudio(reference).frontend == cfg.frontend
