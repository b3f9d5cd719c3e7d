"""transformers folders in and out: every layer of the converted model equals transformers' own forward."""

import json

import pytest
import torch
import transformers
from safetensors.torch import load_file, save_file

from ssl_audio.interop.convert import Imported, convert, write_step_folder
from ssl_audio.interop.hf import config_from_hf
from ssl_audio.models.encoder import EncoderConfig
from ssl_audio.models.hubert import HubertConfig
from ssl_audio.models.loading import load_model
from ssl_audio.models.registry import FAMILIES
from ssl_audio.models.wav2vec2 import Wav2Vec2Config
from ssl_audio.nn.conv_extractor import ConvFrontendConfig
from ssl_audio.nn.quantizer import QuantizerConfig

SMALL = dict(
    hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128, conv_dim=(32,) * 7,
    num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=4,
)  # fmt: skip
QUANTIZER = dict(codevector_dim=32, proj_codevector_dim=24, num_codevectors_per_group=16)
CONFIGS = {
    "Wav2Vec2": transformers.Wav2Vec2Config,
    "Hubert": transformers.HubertConfig,
    "WavLM": transformers.WavLMConfig,
}
LENGTHS = torch.tensor([6_400, 4_800, 3_200])
SMALL_CONV = ((32, 10, 5),) + ((32, 3, 2),) * 4 + ((32, 2, 2),) * 2


def randomize(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Non-trivial values everywhere (norms and weight-norm gains too), so a swapped key cannot hide."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=generator))
    return model.eval()


def hf_model(arch: str, norm: str, stable: bool) -> torch.nn.Module:
    prefix = arch.removesuffix("Model").removesuffix("ForPreTraining")
    extra = QUANTIZER if prefix == "Wav2Vec2" else {}
    config = CONFIGS[prefix](
        **SMALL, **extra, feat_extract_norm=norm, conv_bias=norm == "layer", do_stable_layer_norm=stable
    )
    torch.manual_seed(0)
    return randomize(getattr(transformers, arch)(config))


def base_of(model: torch.nn.Module) -> torch.nn.Module:
    return getattr(model, "wav2vec2", model)


def waves(lengths: torch.Tensor) -> torch.Tensor:
    x = torch.randn(len(lengths), int(lengths.max()), generator=torch.Generator().manual_seed(1))
    return x * (torch.arange(x.shape[1])[None, :] < lengths[:, None])


def assert_same_layers(ours: torch.nn.Module, theirs: torch.nn.Module, lengths: torch.Tensor | None) -> None:
    """Hidden states of every layer (and the final output) on a batch; padded rows compared on valid frames."""
    x = waves(LENGTHS if lengths is None else lengths)
    if lengths is None:
        x = x[:, :4_000]  # equal lengths, no padding
    mask = None if lengths is None else (torch.arange(x.shape[1])[None, :] < lengths[:, None]).long()
    with torch.no_grad():
        reference = theirs(x, attention_mask=mask, output_hidden_states=True)
        out = ours(x, lengths)
    frames = [out.hidden_states[0].shape[1]] * len(x) if out.lengths is None else out.lengths.tolist()
    pairs = list(zip(reference.hidden_states, out.hidden_states)) + [(reference.last_hidden_state, out.last)]
    assert len(reference.hidden_states) == len(out.hidden_states)
    for layer, (a, b) in enumerate(pairs):
        for row, n in enumerate(frames):
            torch.testing.assert_close(b[row, :n], a[row, :n], atol=1e-5, rtol=0, msg=f"layer {layer}, row {row}")


CASES = [
    ("Wav2Vec2Model", "group", False),
    ("Wav2Vec2Model", "group", True),
    ("Wav2Vec2Model", "layer", False),
    ("Wav2Vec2ForPreTraining", "layer", True),
    ("HubertModel", "group", False),
    ("HubertModel", "layer", True),
    ("WavLMModel", "group", False),
    ("WavLMModel", "layer", True),
]


@pytest.mark.parametrize(("arch", "norm", "stable"), CASES)
def test_import_matches_transformers_every_layer(tmp_path, arch, norm, stable):
    reference = hf_model(arch, norm, stable)
    reference.save_pretrained(tmp_path / "hf")
    result = convert(tmp_path / "hf", tmp_path / "run")
    model, cfg = load_model(result.path)
    assert cfg.family == next(f for f in ("wav2vec2", "hubert", "wavlm") if arch.lower().startswith(f))
    assert model.cfg.encoder.pre_ln == stable and model.cfg.encoder.frontend.layers == SMALL_CONV
    expected_fresh = {
        "Wav2Vec2Model": ("project_context", "project_targets", "quantizer"),
        "Wav2Vec2ForPreTraining": (),
    }.get(arch, ("final_proj", "label_embeddings"))
    assert result.fresh == expected_fresh and result.dropped == ()
    assert_same_layers(model.encoder, base_of(reference), None)  # equal lengths, no attention mask
    # Padded batch with an attention mask. With the group-norm extractor the padding enters the
    # normalisation on both sides alike (which is why transformers does not pass masks to such models).
    assert_same_layers(model.encoder, base_of(reference), LENGTHS)
    assert torch.equal(model.masker.mask_embedding, base_of(reference).masked_spec_embed)


def test_pretraining_heads_match_transformers(tmp_path):
    reference = hf_model("Wav2Vec2ForPreTraining", "group", False)
    reference.save_pretrained(tmp_path / "hf")
    model, _ = load_model(convert(tmp_path / "hf", tmp_path / "run").path)
    x = waves(LENGTHS)[:, :4_000]
    with torch.no_grad():
        features = reference.wav2vec2(x).extract_features  # LayerNorm-ed conv features
        codes, _ = reference.quantizer(features)
        ours = model.quantizer(model.encoder.extract(x).normed)
        torch.testing.assert_close(ours.quantized, codes, atol=1e-6, rtol=0)
        torch.testing.assert_close(model.project_targets(codes), reference.project_q(codes), atol=1e-6, rtol=0)
        hidden = reference.wav2vec2(x).last_hidden_state
        torch.testing.assert_close(model.project_context(hidden), reference.project_hid(hidden), atol=1e-6, rtol=0)
    assert model.cfg.quantizer.num_entries == 16 and model.cfg.final_dim == 24


def ours_random(family: str, *, mode: str, pre_ln: bool) -> Imported:
    """A randomly initialised model of ours with a small config (not read from transformers)."""
    encoder = EncoderConfig(
        frontend=ConvFrontendConfig(layers=SMALL_CONV, mode=mode, bias=mode == "layer_norm"), dim=64, num_layers=2,
        num_heads=4, ffn_dim=128, pre_ln=pre_ln, pos_conv_kernel=16, pos_conv_groups=4, relative_bias=family == "wavlm",
    )  # fmt: skip
    if family == "wav2vec2":
        cfg = Wav2Vec2Config(encoder=encoder, quantizer=QuantizerConfig(num_entries=16, code_dim=32, temp_end=0.25))
    else:
        cfg = HubertConfig(encoder=encoder, num_classes=(20,), final_dim=16, label_rate=100.0)
    torch.manual_seed(3)
    model = randomize(FAMILIES[family].model_class(cfg), seed=3)
    return Imported(family=family, config=cfg, state=model.state_dict(), source="test")


@pytest.mark.parametrize(
    ("family", "mode", "pre_ln"),
    [("wav2vec2", "group_norm", False), ("wav2vec2", "layer_norm", True), ("hubert", "group_norm", True),
     ("wavlm", "layer_norm", False), ("wavlm", "group_norm", True)],
)  # fmt: skip
def test_export_loads_with_automodel_and_matches(tmp_path, family, mode, pre_ln):
    step = write_step_folder(ours_random(family, mode=mode, pre_ln=pre_ln), tmp_path / "run").path
    result = convert(step, tmp_path / "hf", target="hf")
    config = json.loads((tmp_path / "hf" / "config.json").read_text())
    assert config["model_type"] == family
    assert config["feat_extract_norm"] == ("group" if mode == "group_norm" else "layer")
    assert config["do_stable_layer_norm"] == pre_ln and config["conv_dim"] == [32] * 7
    assert config["architectures"] == [
        {"wav2vec2": "Wav2Vec2ForPreTraining", "hubert": "HubertModel", "wavlm": "WavLMModel"}[family]
    ]
    if family == "wavlm":
        assert (config["num_buckets"], config["max_bucket_distance"]) == (320, 800)
    # the published layout of the positional convolution's weight norm
    keys = load_file(tmp_path / "hf" / "model.safetensors").keys()
    assert any(k.endswith("pos_conv_embed.conv.weight_g") for k in keys)
    theirs, info = transformers.AutoModel.from_pretrained(tmp_path / "hf", output_loading_info=True)
    assert (
        type(theirs).__name__ == {"wav2vec2": "Wav2Vec2Model", "hubert": "HubertModel", "wavlm": "WavLMModel"}[family]
    )
    assert not info["missing_keys"] and not info["mismatched_keys"]
    assert result.dropped == (() if family == "wav2vec2" else ("final_proj", "label_embeddings"))
    model, _ = load_model(step)
    assert_same_layers(model.encoder, theirs.eval(), None)
    assert_same_layers(model.encoder, theirs.eval(), LENGTHS)


def test_wav2vec2_round_trip_keeps_every_weight_and_setting(tmp_path):
    original = ours_random("wav2vec2", mode="layer_norm", pre_ln=True)
    step = write_step_folder(original, tmp_path / "run").path
    convert(step, tmp_path / "hf", target="hf")
    back = convert(tmp_path / "hf", tmp_path / "back")
    assert back.fresh == ()
    model, _ = load_model(back.path)
    assert model.cfg == original.config  # masking, Gumbel schedule, loss weights ride along in config.json
    for key, value in original.state.items():
        assert torch.equal(model.state_dict()[key], value), key
    reloaded = transformers.Wav2Vec2ForPreTraining.from_pretrained(tmp_path / "hf")
    assert torch.equal(reloaded.quantizer.codevectors, original.state["quantizer.codevectors"])


def test_hubert_round_trip_keeps_the_trunk_not_the_heads(tmp_path):
    original = ours_random("hubert", mode="group_norm", pre_ln=False)
    convert(write_step_folder(original, tmp_path / "run").path, tmp_path / "hf", target="hf")
    back = convert(tmp_path / "hf", tmp_path / "back")
    assert back.fresh == ("final_proj", "label_embeddings")  # transformers' HubertModel has no label heads
    model, _ = load_model(back.path)
    assert model.cfg == original.config
    for key, value in original.state.items():
        if not key.startswith(("final_proj", "label_embeddings")):
            assert torch.equal(model.state_dict()[key], value), key


def test_legacy_weight_norm_names_and_bin_files_load_alike(tmp_path):
    reference = hf_model("WavLMModel", "layer", True)
    reference.save_pretrained(tmp_path / "hf")
    state = load_file(tmp_path / "hf" / "model.safetensors")
    legacy = {k.replace("parametrizations.weight.original0", "weight_g"): v for k, v in state.items()}
    legacy = {k.replace("parametrizations.weight.original1", "weight_v"): v for k, v in legacy.items()}
    assert legacy.keys() != state.keys()
    (tmp_path / "hf" / "model.safetensors").unlink()
    torch.save(legacy, tmp_path / "hf" / "pytorch_model.bin")
    model, _ = load_model(convert(tmp_path / "hf", tmp_path / "run").path)
    assert_same_layers(model.encoder, reference, LENGTHS)


def test_task_heads_are_dropped_and_named(tmp_path):
    config = transformers.HubertConfig(**SMALL, vocab_size=12)
    torch.manual_seed(0)
    transformers.HubertForCTC(config).save_pretrained(tmp_path / "hf")
    result = convert(tmp_path / "hf", tmp_path / "run")
    assert result.dropped == ("lm_head.bias", "lm_head.weight")
    assert result.fresh == ("final_proj", "label_embeddings")


def test_training_settings_without_our_block_come_from_a_preset():
    hf = transformers.WavLMConfig(**SMALL, do_stable_layer_norm=True, feat_extract_norm="layer", conv_bias=True)
    family, cfg = config_from_hf(hf, source="config.json")
    assert family == "wavlm" and cfg.encoder.relative_bias and cfg.feature_grad_mult == 1.0  # LARGE preset
    assert cfg.final_dim == 768  # LARGE's


@pytest.mark.parametrize(
    ("change", "key"),
    [
        ({"hidden_act": "relu"}, "hidden_act"),
        ({"layer_norm_eps": 1e-6}, "layer_norm_eps"),
        ({"add_adapter": True}, "add_adapter"),
    ],
)
def test_configs_we_cannot_build_are_refused_by_key(tmp_path, change, key):
    reference = hf_model("Wav2Vec2Model", "group", False)
    reference.save_pretrained(tmp_path / "hf")
    config = json.loads((tmp_path / "hf" / "config.json").read_text())
    (tmp_path / "hf" / "config.json").write_text(json.dumps({**config, **change}))
    with pytest.raises(ValueError, match=f"config.json: config key '{key}'"):
        convert(tmp_path / "hf", tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_missing_trunk_weights_are_named(tmp_path):
    hf_model("HubertModel", "group", False).save_pretrained(tmp_path / "hf")
    state = load_file(tmp_path / "hf" / "model.safetensors")
    del state["encoder.layers.1.attention.k_proj.weight"]
    save_file(state, tmp_path / "hf" / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(ValueError, match=r"no weights for .*layers\.1\.attention\.k_proj\.weight"):
        convert(tmp_path / "hf", tmp_path / "run")


def test_torchaudio_state_dict_with_builder(tmp_path, monkeypatch):
    """The torchaudio path, with a small model standing in for the builder (the real ones are BASE size)."""
    import torchaudio.models

    def small_hubert():
        return torchaudio.models.wav2vec2_model(
            extractor_mode="group_norm", extractor_conv_layer_config=list(SMALL_CONV), extractor_conv_bias=False,
            encoder_embed_dim=64, encoder_projection_dropout=0.1, encoder_pos_conv_kernel=16,
            encoder_pos_conv_groups=4, encoder_num_layers=2, encoder_num_heads=4, encoder_attention_dropout=0.1,
            encoder_ff_interm_features=128, encoder_ff_interm_dropout=0.0, encoder_dropout=0.1,
            encoder_layer_norm_first=False, encoder_layer_drop=0.05, aux_num_out=None,
        )  # fmt: skip

    monkeypatch.setattr(torchaudio.models, "hubert_base", small_hubert)
    reference = randomize(small_hubert())
    torch.save(reference.state_dict(), tmp_path / "hubert.pt")
    with pytest.raises(ValueError, match="--builder"):
        convert(tmp_path / "hubert.pt", tmp_path / "run", source="torchaudio")
    result = convert(tmp_path / "hubert.pt", tmp_path / "run", source="torchaudio", builder="hubert_base")
    model, cfg = load_model(result.path)
    assert cfg.family == "hubert" and result.fresh == ("final_proj", "label_embeddings", "masker")
    with torch.no_grad():
        theirs, frames = reference.extract_features(waves(LENGTHS), LENGTHS)
        out = model.encoder(waves(LENGTHS), LENGTHS)
    for a, b in zip(theirs, out.hidden_states[1:]):
        for row, n in enumerate(frames.tolist()):
            torch.testing.assert_close(b[row, :n], a[row, :n], atol=1e-5, rtol=0)
