"""fairseq checkpoints in: written here in fairseq's layout (plain containers, so weights_only can read them),
checked against independent key mappings (torchaudio's fairseq importer, transformers' WavLM conversion table)."""

import argparse
import fractions
import sys
import types

import numpy as np
import pytest
import torch
import transformers
from torchaudio.models import wav2vec2_model
from torchaudio.models.wav2vec2.utils.import_fairseq import _convert_state_dict

from ssl_audio.cli import main
from ssl_audio.interop.convert import convert
from ssl_audio.interop.fairseq import parse_layers
from ssl_audio.models.loading import load_model

CONV = [(32, 10, 5)] + [(32, 3, 2)] * 4 + [(32, 2, 2)] * 2
CONV_TEXT = "[(32, 10, 5)] + [(32, 3, 2)] * 4 + [(32, 2, 2)] * 2"
DIM, FFN, LAYERS, HEADS, KERNEL, GROUPS = 64, 128, 2, 4, 16, 4
LENGTHS = torch.tensor([6_400, 4_800, 3_200])


def model_cfg(family: str, mode: str = "default", pre_ln: bool = False) -> dict:
    """fairseq's model section (field names as in its Wav2Vec2Config / HubertConfig, unilm's WavLMConfig)."""
    cfg = dict(
        extractor_mode=mode, conv_feature_layers=CONV_TEXT, conv_bias=mode == "layer_norm", encoder_layers=LAYERS,
        encoder_embed_dim=DIM, encoder_ffn_embed_dim=FFN, encoder_attention_heads=HEADS, activation_fn="gelu",
        layer_norm_first=pre_ln, conv_pos=KERNEL, conv_pos_groups=GROUPS, dropout=0.1, attention_dropout=0.1,
        activation_dropout=0.0, dropout_input=0.1, encoder_layerdrop=0.05, feature_grad_mult=0.1,
        mask_prob=0.65, mask_length=10, mask_selection="static", no_mask_overlap=False, mask_min_space=1,
        mask_channel_prob=0.0, mask_channel_length=10, final_dim=24, logit_temp=0.1,
    )  # fmt: skip
    if family == "wav2vec2":
        cfg.update(_name="wav2vec2", latent_vars=16, latent_groups=2, latent_dim=0, quantize_targets=True,
                   latent_temp=[2.0, 0.25, 0.9999], num_negatives=50, dropout_features=0.1)  # fmt: skip
    elif family == "hubert":
        cfg.update(_name="hubert", label_rate=50.0, untie_final_proj=False, skip_masked=False)
    else:  # unilm's WavLM: no _name
        cfg.update(relative_position_embedding=True, num_buckets=320, max_distance=800, gru_rel_pos=True)
    return cfg


def fairseq_state(family: str, mode: str = "default", *, weight_norm: str = "legacy", seed: int = 0) -> dict:
    """Random weights under fairseq's key names and shapes."""
    generator = torch.Generator().manual_seed(seed)

    def r(*shape: int, scale: float = 0.2) -> torch.Tensor:
        return scale * torch.randn(*shape, generator=generator)

    def norm(prefix: str, dim: int) -> None:
        state[f"{prefix}.weight"], state[f"{prefix}.bias"] = 1 + r(dim), r(dim)

    def linear(prefix: str, out: int, inp: int) -> None:
        state[f"{prefix}.weight"], state[f"{prefix}.bias"] = r(out, inp), r(out)

    state: dict[str, torch.Tensor] = {}
    channels = 1
    for i, (c, k, _) in enumerate(CONV):
        state[f"feature_extractor.conv_layers.{i}.0.weight"] = r(c, channels, k, scale=0.5)
        if mode == "layer_norm":
            state[f"feature_extractor.conv_layers.{i}.0.bias"] = r(c)
            norm(f"feature_extractor.conv_layers.{i}.2.1", c)  # Sequential(TransposeLast, LayerNorm, TransposeLast)
        elif i == 0:
            norm("feature_extractor.conv_layers.0.2", c)  # GroupNorm
        channels = c
    norm("layer_norm", channels)
    linear("post_extract_proj", DIM, channels)
    state["mask_emb"] = r(DIM)
    g, v = r(1, 1, KERNEL).abs() + 0.5, r(DIM, DIM // GROUPS, KERNEL)
    if weight_norm == "legacy":  # torch.nn.utils.weight_norm
        state["encoder.pos_conv.0.weight_g"], state["encoder.pos_conv.0.weight_v"] = g, v
    else:  # torch.nn.utils.parametrizations.weight_norm
        state["encoder.pos_conv.0.parametrizations.weight.original0"] = g
        state["encoder.pos_conv.0.parametrizations.weight.original1"] = v
    state["encoder.pos_conv.0.bias"] = r(DIM)
    for i in range(LAYERS):
        layer = f"encoder.layers.{i}"
        for name in ("k_proj", "v_proj", "q_proj", "out_proj"):
            linear(f"{layer}.self_attn.{name}", DIM, DIM)
        if family == "wavlm":
            linear(f"{layer}.self_attn.grep_linear", 8, DIM // HEADS)
            state[f"{layer}.self_attn.grep_a"] = 1 + r(1, HEADS, 1, 1)
            if i == 0:
                state[f"{layer}.self_attn.relative_attention_bias.weight"] = r(320, HEADS)
        norm(f"{layer}.self_attn_layer_norm", DIM)
        linear(f"{layer}.fc1", FFN, DIM)
        linear(f"{layer}.fc2", DIM, FFN)
        norm(f"{layer}.final_layer_norm", DIM)
    norm("encoder.layer_norm", DIM)
    if family == "wav2vec2":
        state["quantizer.vars"] = r(1, 2 * 16, 24 // 2)
        linear("quantizer.weight_proj", 2 * 16, channels)
        linear("project_q", 24, 24)
        linear("final_proj", 24, DIM)
    elif family == "hubert":
        state["label_embs_concat"] = r(100, 24)
        linear("final_proj", 24, DIM)
    return state


def save(path, checkpoint: dict) -> str:
    torch.save(checkpoint, path)
    return str(path)


def waves(lengths: torch.Tensor) -> torch.Tensor:
    x = torch.randn(len(lengths), int(lengths.max()), generator=torch.Generator().manual_seed(1))
    return x * (torch.arange(x.shape[1])[None, :] < lengths[:, None])


def assert_same(theirs: list[torch.Tensor], ours: list[torch.Tensor], frames: list[int]) -> None:
    assert len(theirs) == len(ours)
    for layer, (a, b) in enumerate(zip(theirs, ours)):
        for row, n in enumerate(frames):
            torch.testing.assert_close(b[row, :n], a[row, :n], atol=1e-5, rtol=0, msg=f"layer {layer}, row {row}")


def torchaudio_reference(state: dict, mode: str, pre_ln: bool) -> torch.nn.Module:
    """torchaudio's model loaded through torchaudio's own fairseq key mapping."""
    model = wav2vec2_model(
        extractor_mode="group_norm" if mode == "default" else "layer_norm", extractor_conv_layer_config=CONV,
        extractor_conv_bias=mode == "layer_norm", encoder_embed_dim=DIM, encoder_projection_dropout=0.1,
        encoder_pos_conv_kernel=KERNEL, encoder_pos_conv_groups=GROUPS, encoder_num_layers=LAYERS,
        encoder_num_heads=HEADS, encoder_attention_dropout=0.1, encoder_ff_interm_features=FFN,
        encoder_ff_interm_dropout=0.0, encoder_dropout=0.1, encoder_layer_norm_first=pre_ln, encoder_layer_drop=0.05,
        aux_num_out=None,
    )  # fmt: skip
    converted = _convert_state_dict(state)
    converted.pop("label_embs_concat", None)
    model.load_state_dict(converted)
    return model.eval()


@pytest.mark.parametrize(
    ("family", "mode", "pre_ln", "weight_norm"),
    [("wav2vec2", "default", False, "legacy"), ("wav2vec2", "layer_norm", True, "parametrizations"),
     ("hubert", "default", False, "legacy"), ("hubert", "layer_norm", True, "legacy")],
)  # fmt: skip
def test_every_layer_matches_torchaudio_loaded_by_its_own_mapping(tmp_path, family, mode, pre_ln, weight_norm):
    state = fairseq_state(family, mode, weight_norm=weight_norm)
    cfg = {"model": model_cfg(family, mode, pre_ln), "criterion": {"loss_weights": [0.2, 5.0]}, "task": {}}
    result = convert(save(tmp_path / "ckpt.pt", {"cfg": cfg, "model": state}), tmp_path / "run")
    assert result.fresh == () and result.dropped == ()
    model, run_cfg = load_model(result.path)
    assert run_cfg.family == family
    legacy = {k.replace("parametrizations.weight.original0", "weight_g"): v for k, v in state.items()}
    legacy = {k.replace("parametrizations.weight.original1", "weight_v"): v for k, v in legacy.items()}
    reference = torchaudio_reference(legacy, mode, pre_ln)
    with torch.no_grad():
        theirs, frames = reference.extract_features(waves(LENGTHS), LENGTHS)
        out = model.encoder(waves(LENGTHS), LENGTHS)
    assert_same(theirs, out.hidden_states[1:], frames.tolist())


def test_wav2vec2_heads_and_settings_land(tmp_path):
    state = fairseq_state("wav2vec2")
    cfg = {"model": model_cfg("wav2vec2"), "criterion": {"loss_weights": [0.2, 5.0]}}
    model, _ = load_model(convert(save(tmp_path / "w.pt", {"cfg": cfg, "model": state}), tmp_path / "run").path)
    ours = model.state_dict()
    for mine, theirs in [
        ("quantizer.codevectors", "quantizer.vars"), ("quantizer.logits.weight", "quantizer.weight_proj.weight"),
        ("quantizer.logits.bias", "quantizer.weight_proj.bias"), ("project_targets.weight", "project_q.weight"),
        ("project_context.weight", "final_proj.weight"), ("project_context.bias", "final_proj.bias"),
        ("masker.mask_embedding", "mask_emb"), ("encoder.projection.norm.weight", "layer_norm.weight"),
    ]:  # fmt: skip
        assert torch.equal(ours[mine], state[theirs]), mine
    qkv = ours["encoder.transformer.layers.1.attention.qkv.weight"]
    q, k, v = (state[f"encoder.layers.1.self_attn.{n}_proj.weight"] for n in ("q", "k", "v"))
    assert torch.equal(qkv, torch.cat([q, k, v]))
    c = model.cfg
    assert (c.quantizer.num_groups, c.quantizer.num_entries, c.quantizer.code_dim, c.final_dim) == (2, 16, 24, 24)
    assert (c.quantizer.temp_start, c.quantizer.temp_end, c.quantizer.temp_decay) == (2.0, 0.25, 0.9999)
    assert (c.diversity_weight, c.feature_penalty_weight, c.num_negatives, c.feature_dropout) == (0.2, 5.0, 50, 0.1)
    assert (c.masking.mask_prob, c.masking.min_space, c.encoder.layerdrop, c.feature_grad_mult) == (0.65, 1, 0.05, 0.1)


def test_hubert_heads_land(tmp_path):
    state = fairseq_state("hubert")
    cfg = {"model": model_cfg("hubert"), "criterion": {"pred_masked_weight": 1.0, "pred_nomask_weight": 0.5}}
    model, _ = load_model(convert(save(tmp_path / "h.pt", {"cfg": cfg, "model": state}), tmp_path / "run").path)
    assert torch.equal(model.label_embeddings, state["label_embs_concat"])
    assert torch.equal(model.final_proj.weight, state["final_proj.weight"])
    assert model.cfg.num_classes == (100,) and model.cfg.final_dim == 24 and model.cfg.unmasked_weight == 0.5


def wavlm_to_hf(state: dict) -> dict:
    """unilm WavLM keys -> transformers', by the MAPPING table of transformers'
    convert_wavlm_original_pytorch_checkpoint_to_pytorch.py (plus its feature-extractor rules)."""
    mapping = {
        "post_extract_proj": "feature_projection.projection", "encoder.pos_conv.0": "encoder.pos_conv_embed.conv",
        "self_attn.k_proj": "encoder.layers.*.attention.k_proj",
        "self_attn.v_proj": "encoder.layers.*.attention.v_proj",
        "self_attn.q_proj": "encoder.layers.*.attention.q_proj",
        "self_attn.out_proj": "encoder.layers.*.attention.out_proj",
        "self_attn.grep_linear": "encoder.layers.*.attention.gru_rel_pos_linear",
        "self_attn.relative_attention_bias": "encoder.layers.*.attention.rel_attn_embed",
        "self_attn.grep_a": "encoder.layers.*.attention.gru_rel_pos_const",
        "self_attn_layer_norm": "encoder.layers.*.layer_norm",
        "fc1": "encoder.layers.*.feed_forward.intermediate_dense",
        "fc2": "encoder.layers.*.feed_forward.output_dense", "final_layer_norm": "encoder.layers.*.final_layer_norm",
        "encoder.layer_norm": "encoder.layer_norm", "w2v_model.layer_norm": "feature_projection.layer_norm",
        "mask_emb": "masked_spec_embed",
    }  # fmt: skip
    out = {}
    for name, value in state.items():
        if name.startswith("feature_extractor."):
            parts = name.split(".")  # feature_extractor.conv_layers.I.0.weight | .I.2.weight | .I.2.1.weight
            layer, kind = parts[2], "conv" if parts[3] == "0" else "layer_norm"
            out[f"feature_extractor.conv_layers.{layer}.{kind}.{parts[-1]}"] = value
            continue
        for key, mapped in mapping.items():
            if key in name or key.split("w2v_model.")[-1] == name.split(".")[0]:
                if "*" in mapped:
                    mapped = mapped.replace("*", name.split(key)[0].split(".")[-2])
                suffix = name.split(key)[-1] if key in name else name[len(name.split(".")[0]) :]
                out[mapped + suffix] = value
                break
    return out


@pytest.mark.parametrize(("mode", "pre_ln"), [("default", False), ("layer_norm", True)])
def test_wavlm_matches_transformers_loaded_by_its_conversion_table(tmp_path, mode, pre_ln):
    state = fairseq_state("wavlm", mode)
    result = convert(
        save(tmp_path / "wavlm.pt", {"cfg": model_cfg("wavlm", mode, pre_ln), "model": state}), tmp_path / "run"
    )
    assert result.fresh == ("final_proj", "label_embeddings")  # unilm's checkpoints carry no heads
    model, run_cfg = load_model(result.path)
    assert run_cfg.family == "wavlm" and model.cfg.encoder.relative_bias
    config = transformers.WavLMConfig(
        hidden_size=DIM, num_hidden_layers=LAYERS, num_attention_heads=HEADS, intermediate_size=FFN,
        conv_dim=[c for c, _, _ in CONV], num_conv_pos_embeddings=KERNEL, num_conv_pos_embedding_groups=GROUPS,
        feat_extract_norm="group" if mode == "default" else "layer", conv_bias=mode == "layer_norm",
        do_stable_layer_norm=pre_ln,
    )  # fmt: skip
    reference = transformers.WavLMModel(config).eval()
    missing, unexpected = reference.load_state_dict(wavlm_to_hf(state), strict=False)
    assert not missing and not unexpected
    x = waves(LENGTHS)
    mask = (torch.arange(x.shape[1])[None, :] < LENGTHS[:, None]).long()
    with torch.no_grad():
        theirs = reference(x, attention_mask=mask, output_hidden_states=True).hidden_states
        out = model.encoder(x, LENGTHS)
    assert_same(list(theirs), out.hidden_states, out.lengths.tolist())


def test_pre_hydra_args_checkpoint_with_numpy_statistics(tmp_path):
    args = argparse.Namespace(**model_cfg("wav2vec2"), arch="wav2vec2", loss_weights=[0.1, 10.0])
    checkpoint = {
        "args": args, "model": fairseq_state("wav2vec2"), "optimizer_history": [{"num_updates": 400_000}],
        "extra_state": {"val_loss": np.float64(2.5), "train_iterator": {"epoch": np.int64(3)}},
    }  # fmt: skip
    model, _ = load_model(convert(save(tmp_path / "old.pt", checkpoint), tmp_path / "run").path)
    assert model.cfg.quantizer.num_entries == 16 and model.cfg.feature_penalty_weight == 10.0


def test_fine_tuned_checkpoint_gives_its_trunk_and_drops_the_ctc_head(tmp_path):
    inner = fairseq_state("wav2vec2")
    state = {f"w2v_encoder.w2v_model.{k}": v for k, v in inner.items()}
    state["w2v_encoder.proj.weight"], state["w2v_encoder.proj.bias"] = torch.randn(32, DIM), torch.zeros(32)
    cfg = {"model": {"_name": "wav2vec_ctc", "w2v_args": {"model": model_cfg("wav2vec2")}}}
    result = convert(save(tmp_path / "ctc.pt", {"cfg": cfg, "model": state}), tmp_path / "run")
    assert result.dropped == ("w2v_encoder.proj.weight", "w2v_encoder.proj.bias")
    model, _ = load_model(result.path)
    assert torch.equal(
        model.encoder.transformer.layers[0].feed_forward.fc1.weight, inner["encoder.layers.0.fc1.weight"]
    )


def test_missing_post_extract_proj_is_the_identity_when_widths_match(tmp_path):
    state = fairseq_state("hubert")
    del state["post_extract_proj.weight"], state["post_extract_proj.bias"]
    cfg = model_cfg("hubert")
    cfg["conv_feature_layers"] = CONV_TEXT.replace("32", str(DIM))
    for i, (_, k, _) in enumerate(CONV):  # widen the extractor to the model width
        state[f"feature_extractor.conv_layers.{i}.0.weight"] = torch.randn(DIM, 1 if i == 0 else DIM, k)
    state["feature_extractor.conv_layers.0.2.weight"], state["feature_extractor.conv_layers.0.2.bias"] = (
        torch.ones(DIM),
        torch.zeros(DIM),
    )
    state["layer_norm.weight"], state["layer_norm.bias"] = torch.ones(DIM), torch.zeros(DIM)
    model, _ = load_model(
        convert(save(tmp_path / "h.pt", {"cfg": {"model": cfg}, "model": state}), tmp_path / "run").path
    )
    assert torch.equal(model.encoder.projection.linear.weight, torch.eye(DIM))


class Touch:
    """A pickle that creates a file when loaded."""

    def __init__(self, path) -> None:
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_a_pickle_that_runs_code_is_refused_and_does_nothing(tmp_path, capsys):
    target = tmp_path / "pwned.txt"
    path = save(tmp_path / "evil.pt", {"cfg": {"model": model_cfg("hubert")}, "model": {}, "payload": Touch(target)})
    with pytest.raises(ValueError, match=r"evil\.pt: refused to unpickle io\.open.*--trust-pickle"):
        convert(path, tmp_path / "run")
    assert main(["convert", path, str(tmp_path / "run")]) == 2
    assert "io.open" in capsys.readouterr().err
    assert not target.exists() and not (tmp_path / "run").exists()


def test_trust_pickle_reads_what_the_allow_list_refuses(tmp_path):
    checkpoint = {
        "cfg": {"model": model_cfg("hubert")},
        "model": fairseq_state("hubert"),
        "lr": fractions.Fraction(1, 3),
    }
    path = save(tmp_path / "h.pt", checkpoint)
    with pytest.raises(ValueError, match="fractions.Fraction"):
        convert(path, tmp_path / "run")
    assert convert(path, tmp_path / "run", trust_pickle=True).path.is_dir()


def test_omegaconf_configs_need_trust_and_omegaconf(tmp_path, monkeypatch):
    """A stand-in omegaconf module, present only while saving: loading sees omegaconf's global names."""
    package, module = types.ModuleType("omegaconf"), types.ModuleType("omegaconf.dictconfig")
    DictConfig = type("DictConfig", (dict,), {"__module__": "omegaconf.dictconfig"})
    module.DictConfig, package.dictconfig = DictConfig, module
    with monkeypatch.context() as patch:
        patch.setitem(sys.modules, "omegaconf", package)
        patch.setitem(sys.modules, "omegaconf.dictconfig", module)
        path = save(tmp_path / "hydra.pt", {"cfg": DictConfig(model=model_cfg("hubert")), "model": {}})
    with pytest.raises(ValueError, match="omegaconf.dictconfig.DictConfig.*needs omegaconf, which is not installed"):
        convert(path, tmp_path / "run")
    with pytest.raises(ValueError, match="needs the module 'omegaconf'"):
        convert(path, tmp_path / "run", trust_pickle=True)


def test_conv_layers_are_parsed_without_eval():
    assert parse_layers(CONV_TEXT, source="x") == tuple(CONV)
    with pytest.raises(ValueError, match="conv_feature_layers"):
        parse_layers("__import__('os').system('touch pwned')", source="x")


def test_cli_fairseq_to_ours_to_transformers_keeps_the_quantizer(tmp_path, capsys):
    state = fairseq_state("wav2vec2", "layer_norm")
    path = save(tmp_path / "w.pt", {"cfg": {"model": model_cfg("wav2vec2", "layer_norm", True)}, "model": state})
    assert main(["convert", path, str(tmp_path / "run")]) == 0
    step = tmp_path / "run" / "step_00000000"
    assert f"convert: wrote {step}" in capsys.readouterr().out
    assert main(["convert", str(step), str(tmp_path / "hf"), "--to", "hf"]) == 0
    exported = transformers.Wav2Vec2ForPreTraining.from_pretrained(tmp_path / "hf")
    assert torch.equal(exported.quantizer.codevectors, state["quantizer.vars"])
    assert torch.equal(exported.project_q.weight, state["project_q.weight"])
    assert torch.equal(exported.project_hid.weight, state["final_proj.weight"])
    assert exported.config.do_stable_layer_norm and exported.config.feat_extract_norm == "layer"
    assert main(["convert", path, str(tmp_path / "hf2"), "--to", "hf"]) == 0  # straight from fairseq
