"""Whisper's encoder against transformers' WhisperEncoder (random weights): every layer, both clip modes; the
folder round trip; the log-mel against WhisperFeatureExtractor.

Tolerances: hidden states are O(1) and pass through 2 layers of fp32 matmuls over <= 1536 terms (rounding ~1e-6
relative per op, summed): 1e-5 absolute. Log-mel: ours is fp32 torch, transformers' float64 numpy; a log10 of a
power with ~1e-6 relative error moves by ~1e-6 / ln 10, then / 4, far under 1e-4 (the floor and max are exact).
"""

from pathlib import Path

import numpy as np
import pytest
import torch
import transformers
from safetensors.torch import load_file

from ssl_audio.interop.convert import convert
from ssl_audio.interop.hf_whisper import read_hf_whisper
from ssl_audio.interop.imported import complete_state
from ssl_audio.models.loading import load_model
from ssl_audio.models.registry import FAMILIES
from ssl_audio.models.whisper import with_clip
from ssl_audio.nn.positions import sinusoids

LAYERS, DIM, HEADS, MELS = 2, 384, 6, 80  # tiny's width, heads and bins; 2 of its 4 layers
CLIP = 7 * 16_000  # a clip under 30 s
ATOL = 1e-5


def whisper_folder(folder: Path, *, positions: int = 1500, seed: int = 0) -> transformers.WhisperModel:
    """A random WhisperModel (every parameter moved off its init, so a swapped key cannot hide) saved in `folder`."""
    torch.manual_seed(seed)
    config = transformers.WhisperConfig(
        d_model=DIM, encoder_layers=LAYERS, encoder_attention_heads=HEADS, encoder_ffn_dim=4 * DIM, num_mel_bins=MELS,
        max_source_positions=positions, decoder_layers=1, decoder_attention_heads=HEADS, decoder_ffn_dim=64,
        vocab_size=64, max_target_positions=16, pad_token_id=0, bos_token_id=1, eos_token_id=2,
        decoder_start_token_id=1,
    )  # fmt: skip
    model = transformers.WhisperModel(config).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "embed_positions" not in name:
                p.add_(0.1 * torch.randn_like(p))
    model.save_pretrained(folder)
    return model


def our_model(folder: Path, clip: str = "pad") -> torch.nn.Module:
    imported = read_hf_whisper(folder)
    cfg = imported.config.__class__(**{**imported.config.__dict__, "encoder": with_clip(imported.config.encoder, clip)})
    model = FAMILIES["whisper"].model_class(cfg)
    state, _ = complete_state(imported)
    model.load_state_dict(state)
    return model.eval()


def wave(samples: int = CLIP, seed: int = 1) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return 0.1 * torch.randn(1, samples, generator=generator)


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("whisper")
    whisper_folder(path)
    return path


def test_positions_are_whispers_sinusoids(folder: Path) -> None:
    theirs = transformers.WhisperModel.from_pretrained(folder).encoder.embed_positions.weight
    assert torch.allclose(sinusoids(1500, DIM), theirs, atol=1e-6)


def test_log_mel_equals_the_feature_extractor(folder: Path) -> None:
    x = wave()
    extractor = transformers.WhisperFeatureExtractor(feature_size=MELS)
    theirs = extractor(x[0].numpy(), sampling_rate=16_000, return_tensors="np").input_features  # (1, N, 3000)
    mel, _ = our_model(folder).encoder.extractor.features(x)
    assert mel.shape == theirs.shape
    np.testing.assert_allclose(mel.numpy(), theirs, atol=1e-4, rtol=0)


def test_every_layer_equals_transformers_on_a_padded_clip(folder: Path) -> None:
    hf = transformers.WhisperModel.from_pretrained(folder).encoder.eval()
    ours = our_model(folder, "pad").encoder
    mel, _ = ours.extractor.features(wave())
    with torch.no_grad():
        expected = hf(mel, output_hidden_states=True).hidden_states  # [input, layer 1, ..., LN(layer L)]
        front = ours.extract(wave(), torch.tensor([CLIP]))
        got = ours.transformer(front.projected, front.padding_mask)
    assert len(expected) == len(got.hidden_states) == LAYERS + 1
    for layer, (a, b) in enumerate(zip(got.hidden_states[:LAYERS], expected[:LAYERS])):
        assert a.shape == b.shape == (1, 1500, DIM)
        assert (a - b).abs().max() < ATOL, f"layer {layer}"
    assert (got.last - expected[LAYERS]).abs().max() < ATOL  # transformers' last hidden state is after the norm
    assert front.lengths.tolist() == [CLIP // 320]  # the clip's own frames, for pooling and losses


def test_waveform_to_output_equals_feature_extractor_then_transformers(folder: Path) -> None:
    """The whole path: our log-mel (off by ~3e-6 from the extractor's float64) through the encoder; the layers'
    gain on that input difference (measured ~2x) leaves it far under 1e-4."""
    extractor = transformers.WhisperFeatureExtractor(feature_size=MELS)
    features = extractor(wave()[0].numpy(), sampling_rate=16_000, return_tensors="pt").input_features
    hf = transformers.WhisperModel.from_pretrained(folder).encoder.eval()
    with torch.no_grad():
        expected = hf(features).last_hidden_state
        got = our_model(folder, "pad").encoder(wave(), torch.tensor([CLIP])).last
    assert (got - expected).abs().max() < 1e-4


def test_trimmed_clip_equals_transformers_with_its_table_sliced(tmp_path: Path, folder: Path) -> None:
    """Trim mode: the clip's own 350 frames and the first 350 rows of the table; the oracle is transformers'
    encoder with max_source_positions 350 and embed_positions cut to those rows."""
    frames = CLIP // 320
    hf_full = transformers.WhisperModel.from_pretrained(folder)
    sliced = whisper_folder(tmp_path, positions=frames)
    table = hf_full.encoder.embed_positions.weight[:frames]
    sliced.load_state_dict({**hf_full.state_dict(), "encoder.embed_positions.weight": table})
    ours = our_model(folder, "trim").encoder
    mel, _ = ours.extractor.features(wave())
    assert mel.shape == (1, MELS, 2 * frames)
    with torch.no_grad():
        expected = sliced.encoder(mel, output_hidden_states=True).hidden_states
        got = ours(wave(), torch.tensor([CLIP]))
    for a, b in zip(got.hidden_states[:LAYERS], expected[:LAYERS]):
        assert a.shape == b.shape == (1, frames, DIM)
        assert (a - b).abs().max() < ATOL
    assert (got.last - expected[LAYERS]).abs().max() < ATOL
    # and trimming is not padding: the two modes differ (attention sees 1500 frames in one, 350 in the other)
    padded = our_model(folder, "pad").encoder(wave(), torch.tensor([CLIP])).last[:, :frames]
    assert (padded - got.last).abs().max() > 1e-2


def test_import_export_round_trip(tmp_path: Path, folder: Path) -> None:
    """transformers folder -> step folder -> transformers folder: the encoder weights come back exactly (less
    transformers' absent k_proj bias), and the exported folder's encoder equals ours layer by layer."""
    convert(folder, tmp_path / "run")
    model, model_cfg = load_model(tmp_path / "run" / "step_00000000")
    assert model_cfg.family == "whisper" and model_cfg.config["encoder"]["frontend"]["kind"] == "whisper"
    convert(tmp_path / "run" / "step_00000000", tmp_path / "back", target="hf")
    original, back = load_file(folder / "model.safetensors"), load_file(tmp_path / "back" / "model.safetensors")
    encoder_keys = {k for k in original if k.startswith("encoder.")}
    assert encoder_keys == {k for k in back if k.startswith("encoder.")}
    for key in encoder_keys:
        assert torch.equal(original[key], back[key]) or key.endswith("embed_positions.weight"), key
    hf = transformers.WhisperModel.from_pretrained(tmp_path / "back").encoder.eval()
    mel, _ = model.encoder.extractor.features(wave())
    with torch.no_grad():
        expected = hf(mel).last_hidden_state
        got = model.encoder(wave(), torch.tensor([CLIP])).last
    assert (got - expected).abs().max() < ATOL


def test_a_folder_with_other_positions_is_refused(tmp_path: Path) -> None:
    model = whisper_folder(tmp_path)
    with torch.no_grad():
        model.encoder.embed_positions.weight.add_(0.5)
    model.save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="embed_positions.weight is not Whisper's sinusoid table"):
        read_hf_whisper(tmp_path)


def test_the_encoder_of_a_conditional_generation_folder(tmp_path: Path, folder: Path) -> None:
    """WhisperForConditionalGeneration keeps the encoder under model.encoder.: the same weights come out."""
    base = transformers.WhisperModel.from_pretrained(folder)
    generation = transformers.WhisperForConditionalGeneration(base.config)
    generation.model.load_state_dict(base.state_dict())
    generation.save_pretrained(tmp_path)
    ours, theirs = read_hf_whisper(folder), read_hf_whisper(tmp_path)
    assert ours.state.keys() == theirs.state.keys() and ours.config == theirs.config
    assert all(torch.equal(ours.state[k], theirs.state[k]) for k in ours.state)
    assert any("decoder and LM head" in note for note in theirs.notes)
