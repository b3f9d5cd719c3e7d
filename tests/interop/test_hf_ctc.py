"""Fine-tuned CTC models to and from transformers *ForCTC: transformers' own forward and pipeline are the oracle."""

import json
from dataclasses import replace

import numpy as np
import pytest
import soundfile
import torch
import transformers
import yaml
from test_hf import randomize  # one way to fill a model with non-trivial values

from ssl_audio.cli import main
from ssl_audio.configs import to_dict
from ssl_audio.finetune.infer import load_finetuned
from ssl_audio.interop.convert import Imported, convert, run_config, write_step_folder
from ssl_audio.interop.imported import preset
from ssl_audio.models.encoder import EncoderConfig
from ssl_audio.models.finetune import FineTune, FineTuneConfig
from ssl_audio.nn.conv_extractor import ConvFrontendConfig
from ssl_audio.nn.masking import MaskingConfig
from ssl_audio.train.checkpoint import save_checkpoint

SMALL_CONV = ((32, 10, 5),) + ((32, 3, 2),) * 4 + ((32, 2, 2),) * 2
VOCAB = ("<pad>", "<s>", "</s>", "<unk>", "|", "A", "B", "C", "D", "E")
SPECIAL_IDS = [1, 2, 3]  # never a CTC output in practice: kept out of the greedy path
SMALL_HF = dict(
    hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128, conv_dim=(32,) * 7,
    num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=4, vocab_size=len(VOCAB), pad_token_id=0,
)  # fmt: skip
LENGTHS = torch.tensor([6_400, 4_800])


def speaking_head(proj: torch.nn.Linear, seed: int = 3) -> None:
    """A head whose greedy output is neither all blank nor one token (random rows over a random trunk), the
    special tokens kept out of it; logits stay O(10), where fp32 rounding is ~1e-6."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        proj.weight.copy_(0.5 * torch.randn(proj.weight.shape, generator=generator))
        proj.bias.zero_()
        proj.bias[SPECIAL_IDS] = -20.0


def finetune_cfg(norm: str, pre_ln: bool, relative_bias: bool) -> FineTuneConfig:
    encoder = EncoderConfig(
        frontend=ConvFrontendConfig(layers=SMALL_CONV, mode=norm, bias=norm == "layer_norm"), dim=64, num_layers=2,
        num_heads=4, ffn_dim=128, pre_ln=pre_ln, pos_conv_kernel=16, pos_conv_groups=4, relative_bias=relative_bias,
        dropout=0.0, attention_dropout=0.0, activation_dropout=0.0, projection_dropout=0.0, layerdrop=0.0,
    )  # fmt: skip
    masking = MaskingConfig(mask_prob=0.3, mask_length=5, channel_prob=0.1, channel_length=8)
    return FineTuneConfig(encoder=encoder, masking=masking, head="ctc", vocab=VOCAB, freeze_updates=0)


def step_folder(tmp_path, cfg: FineTuneConfig, *, init_family: str | None = None):
    """A fine-tuned step folder; with `init_family`, its config names a step folder of that family as the
    init.checkpoint it was fine-tuned from (the export's choice of architecture)."""
    torch.manual_seed(0)
    model = randomize(FineTune(cfg))
    speaking_head(model.head.proj)
    imported = Imported(family="finetune", config=cfg, state=model.state_dict(), source="test")  # type: ignore[arg-type]
    if init_family is None:
        return write_step_folder(imported, tmp_path / "run").path
    pretrained = replace(preset(init_family, "base"), encoder=cfg.encoder)
    init = write_step_folder(Imported(family=init_family, config=pretrained, state={}, source="test"), tmp_path / "pre")
    run = to_dict(run_config(imported, tmp_path / "run"))
    run["init"]["checkpoint"] = str(init.path)
    text = yaml.safe_dump(run, sort_keys=False)
    return save_checkpoint(tmp_path / "run", 0, model_state=model.state_dict(), train_state={}, config_text=text)


def waves(lengths: torch.Tensor, seed: int = 1) -> torch.Tensor:
    x = torch.randn(len(lengths), int(lengths.max()), generator=torch.Generator().manual_seed(seed))
    return x * (torch.arange(x.shape[1])[None, :] < lengths[:, None])


def our_logits(model: FineTune, x: torch.Tensor, lengths: torch.Tensor | None) -> tuple[torch.Tensor, list[int]]:
    with torch.no_grad():
        encoded, frames, _ = model.eval().encode(x, lengths)
        return model.head(encoded), frames.tolist()


def assert_same_logits(ours: torch.Tensor, theirs: torch.Tensor, frames: list[int]) -> None:
    # 2 layers of 64-wide fp32 arithmetic on O(1) activations, logits O(10): ~1e-6 apart; 1e-5 holds.
    for row, n in enumerate(frames):
        torch.testing.assert_close(ours[row, :n], theirs[row, :n], atol=1e-5, rtol=0, msg=f"row {row}")


EXPORT_CASES = [
    ("group_norm", False, False, None, "Wav2Vec2ForCTC"),
    ("layer_norm", True, False, "wav2vec2", "Wav2Vec2ForCTC"),
    ("layer_norm", False, False, "hubert", "HubertForCTC"),
    ("group_norm", False, True, "wavlm", "WavLMForCTC"),
]


@pytest.mark.parametrize(("norm", "pre_ln", "relative_bias", "init_family", "architecture"), EXPORT_CASES)
def test_export_gives_the_same_logits_and_pipeline_text(
    tmp_path, capsys, norm, pre_ln, relative_bias, init_family, architecture
):
    step = step_folder(tmp_path, finetune_cfg(norm, pre_ln, relative_bias), init_family=init_family)
    out = convert(step, tmp_path / "hf", target="hf")
    assert out.dropped == () and out.fresh == ()
    assert json.loads((tmp_path / "hf" / "vocab.json").read_text()) == {t: i for i, t in enumerate(VOCAB)}
    theirs = transformers.AutoModelForCTC.from_pretrained(tmp_path / "hf").eval()
    assert type(theirs).__name__ == architecture
    ours = load_finetuned(step)
    lengths = LENGTHS if norm == "layer_norm" else None  # group norm spans padding in both: compare unpadded rows
    x = waves(LENGTHS) if lengths is not None else waves(LENGTHS)[:, :4_000]
    mask = None if lengths is None else (torch.arange(x.shape[1])[None, :] < lengths[:, None]).long()
    logits, frames = our_logits(ours, x, lengths)
    with torch.no_grad():
        reference = theirs(x, attention_mask=mask).logits
    assert_same_logits(logits, reference, frames)

    # The same text from `ssl-audio transcribe`'s code path and transformers' pipeline, on wav files.
    paths = []
    for i, n in enumerate((8_000, 12_000)):
        paths.append(str(tmp_path / f"w{i}.wav"))
        soundfile.write(paths[-1], 0.3 * waves(torch.tensor([n]), seed=10 + i)[0].numpy(), 16_000, subtype="FLOAT")
    capsys.readouterr()
    assert main(["transcribe", str(step), *paths]) == 0
    ours_text = dict(line.split("\t") for line in capsys.readouterr().out.splitlines())
    pipe = transformers.pipeline("automatic-speech-recognition", model=str(tmp_path / "hf"), device="cpu")
    for path in paths:
        wave, rate = soundfile.read(path, dtype="float32")
        text = pipe({"raw": np.asarray(wave), "sampling_rate": rate})["text"]
        assert text == ours_text[path]
        assert len(set(text) - {" "}) >= 2, f"trivial text {text!r}: the test would not tell decodings apart"


def hf_ctc(arch: str, norm: str, stable: bool) -> torch.nn.Module:
    config_class = {"Wav2Vec2": transformers.Wav2Vec2Config, "Hubert": transformers.HubertConfig,
                    "WavLM": transformers.WavLMConfig}[arch]  # fmt: skip
    config = config_class(**SMALL_HF, feat_extract_norm=norm, conv_bias=norm == "layer", do_stable_layer_norm=stable)
    torch.manual_seed(0)
    return randomize(getattr(transformers, f"{arch}ForCTC")(config))


IMPORT_CASES = [("Wav2Vec2", "group", False), ("Hubert", "layer", True), ("WavLM", "group", False)]


@pytest.mark.parametrize(("arch", "norm", "stable"), IMPORT_CASES)
def test_import_of_a_for_ctc_folder_gives_transformers_logits(tmp_path, arch, norm, stable):
    theirs = hf_ctc(arch, norm, stable)
    theirs.save_pretrained(tmp_path / "hf")
    (tmp_path / "hf" / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(VOCAB)}))
    transformers.Wav2Vec2FeatureExtractor(do_normalize=True).save_pretrained(tmp_path / "hf")  # as published ones
    result = convert(tmp_path / "hf", tmp_path / "run")
    assert result.dropped == () and result.fresh == ()
    assert any("do_normalize" in note for note in result.notes)
    ours = load_finetuned(result.path)
    assert ours.cfg.vocab == VOCAB and ours.cfg.head == "ctc"
    assert ours.cfg.encoder.relative_bias == (arch == "WavLM")
    lengths = LENGTHS if norm == "layer" else None
    x = waves(LENGTHS) if lengths is not None else waves(LENGTHS)[:, :4_000]
    mask = None if lengths is None else (torch.arange(x.shape[1])[None, :] < lengths[:, None]).long()
    logits, frames = our_logits(ours, x, lengths)
    with torch.no_grad():
        reference = theirs(x, attention_mask=mask).logits
    assert_same_logits(logits, reference, frames)


def test_import_refuses_a_blank_that_is_not_id_0(tmp_path):
    theirs = hf_ctc("Wav2Vec2", "group", False)
    theirs.config.pad_token_id = 4
    theirs.save_pretrained(tmp_path / "hf")
    (tmp_path / "hf" / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(VOCAB)}))
    with pytest.raises(ValueError, match="pad_token_id .* is 4"):
        convert(tmp_path / "hf", tmp_path / "run")


def test_import_without_vocab_json_keeps_the_trunk_and_says_so(tmp_path):
    hf_ctc("Wav2Vec2", "group", False).save_pretrained(tmp_path / "hf")
    result = convert(tmp_path / "hf", tmp_path / "run")
    assert result.dropped == ("lm_head.bias", "lm_head.weight")
    assert any("no vocab.json" in note for note in result.notes)


def test_import_needs_vocab_json_of_the_heads_size(tmp_path):
    hf_ctc("Wav2Vec2", "group", False).save_pretrained(tmp_path / "hf")
    (tmp_path / "hf" / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(VOCAB[:-1])}))
    with pytest.raises(ValueError, match="9 tokens, but lm_head has 10 outputs"):
        convert(tmp_path / "hf", tmp_path / "run")


def test_export_then_import_round_trips_config_and_weights(tmp_path):
    cfg = finetune_cfg("group_norm", False, False)
    step = step_folder(tmp_path, cfg)
    convert(step, tmp_path / "hf", target="hf")
    back = convert(tmp_path / "hf", tmp_path / "again")
    assert load_finetuned(back.path).cfg == cfg
    before, after = load_finetuned(step).state_dict(), load_finetuned(back.path).state_dict()
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)
    assert to_dict(cfg)["vocab"] == list(VOCAB)


def test_a_classifier_is_refused_with_its_head_kind(tmp_path):
    cfg = replace(finetune_cfg("group_norm", False, False), head="classify", vocab=("yes", "no"))
    torch.manual_seed(0)
    imported = Imported(family="finetune", config=cfg, state=FineTune(cfg).state_dict(), source="test")  # type: ignore[arg-type]
    step = write_step_folder(imported, tmp_path / "run").path
    with pytest.raises(ValueError, match="a classify model; only CTC models export"):
        convert(step, tmp_path / "hf", target="hf")
    assert not (tmp_path / "hf").exists() and not (tmp_path / ".hf.tmp").exists()
