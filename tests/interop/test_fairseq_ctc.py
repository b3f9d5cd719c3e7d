"""fairseq fine-tuned CTC checkpoints (wav2vec_ctc) in, with their head and dict.ltr.txt: the logits are those of
torchaudio's model loaded through torchaudio's own fairseq key mapping (w2v_model.* and proj -> aux)."""

import pytest
import torch
from torchaudio.models import wav2vec2_model
from torchaudio.models.wav2vec2.utils.import_fairseq import _convert_state_dict

from ssl_audio.cli import main
from ssl_audio.finetune.infer import load_finetuned
from ssl_audio.interop.convert import convert
from tests.interop.test_fairseq import CONV, DIM, FFN, GROUPS, HEADS, KERNEL, LAYERS, fairseq_state, model_cfg, save

LETTERS = ("|", "E", "T", "A", "O")
DICT_TEXT = "".join(f"{c} {100 - i}\n" for i, c in enumerate(LETTERS))
ROWS = 4 + len(LETTERS) + 3  # fairseq's 4 specials, the letters, 3 madeupword fillers (padding_factor)
LENGTHS = torch.tensor([6_400, 4_800, 3_200])
PRETRAINING_ONLY = ("quantizer.", "project_q.", "final_proj.")  # removed by fairseq's remove_pretraining_modules


def fine_tuned(mode: str = "default", pre_ln: bool = False, seed: int = 0) -> dict:
    """A wav2vec_ctc checkpoint dict: the trunk under w2v_encoder.w2v_model., the projection at w2v_encoder.proj."""
    inner = fairseq_state("wav2vec2", mode, seed=seed)
    state = {f"w2v_encoder.w2v_model.{k}": v for k, v in inner.items() if not k.startswith(PRETRAINING_ONLY)}
    generator = torch.Generator().manual_seed(seed + 1)
    state["w2v_encoder.proj.weight"] = 0.3 * torch.randn(ROWS, DIM, generator=generator)
    state["w2v_encoder.proj.bias"] = 0.1 * torch.randn(ROWS, generator=generator)
    outer = dict(
        _name="wav2vec_ctc", w2v_args={"model": model_cfg("wav2vec2", mode, pre_ln)}, apply_mask=True,
        mask_prob=0.5, mask_length=10, mask_channel_prob=0.25, mask_channel_length=64, dropout=0.0,
        attention_dropout=0.0, activation_dropout=0.1, dropout_input=0.0, layerdrop=0.05, final_dropout=0.0,
        feature_grad_mult=0.0, freeze_finetune_updates=10_000,
    )  # fmt: skip
    return {"cfg": {"model": outer, "task": {"_name": "audio_finetuning"}}, "model": state}


def torchaudio_ctc(state: dict, mode: str, pre_ln: bool) -> torch.nn.Module:
    model = wav2vec2_model(
        extractor_mode="group_norm" if mode == "default" else "layer_norm", extractor_conv_layer_config=CONV,
        extractor_conv_bias=mode == "layer_norm", encoder_embed_dim=DIM, encoder_projection_dropout=0.0,
        encoder_pos_conv_kernel=KERNEL, encoder_pos_conv_groups=GROUPS, encoder_num_layers=LAYERS,
        encoder_num_heads=HEADS, encoder_attention_dropout=0.0, encoder_ff_interm_features=FFN,
        encoder_ff_interm_dropout=0.0, encoder_dropout=0.0, encoder_layer_norm_first=pre_ln, encoder_layer_drop=0.0,
        aux_num_out=ROWS,
    )  # fmt: skip
    encoder_state = {k.removeprefix("w2v_encoder."): v for k, v in state.items()}  # Wav2VecEncoder's own keys
    model.load_state_dict(_convert_state_dict(encoder_state))
    return model.eval()


def waves(lengths: torch.Tensor) -> torch.Tensor:
    x = torch.randn(len(lengths), int(lengths.max()), generator=torch.Generator().manual_seed(1))
    return x * (torch.arange(x.shape[1])[None, :] < lengths[:, None])


@pytest.mark.parametrize(("mode", "pre_ln"), [("default", False), ("layer_norm", True)])
def test_fine_tuned_import_gives_torchaudios_logits(tmp_path, mode, pre_ln):
    checkpoint = fine_tuned(mode, pre_ln)
    (tmp_path / "dict.ltr.txt").write_text(DICT_TEXT)
    result = convert(save(tmp_path / "ctc.pt", checkpoint), tmp_path / "run")
    assert result.dropped == () and result.fresh == ()
    ours = load_finetuned(result.path)
    # fairseq's ids 0-3 are <s> (the blank), <pad>, </s>, <unk>: the blank is named <pad> here, rows unchanged.
    assert ours.cfg.vocab == ("<pad>", "<s>", "</s>", "<unk>", *LETTERS, *(f"<madeupword000{i}>" for i in range(3)))
    reference = torchaudio_ctc(checkpoint["model"], mode, pre_ln)
    lengths = LENGTHS if mode == "layer_norm" else None  # group norm spans padding in both: compare unpadded rows
    x = waves(LENGTHS) if lengths is not None else waves(LENGTHS)[:, :3_200]
    with torch.no_grad():
        theirs, frames = reference(x, lengths)
        encoded, our_frames, _ = ours.encode(x, lengths)
        logits = ours.head(encoded)
    counts = our_frames.tolist() if frames is None else frames.tolist()
    assert our_frames.tolist() == counts
    for row, n in enumerate(counts):  # 2 layers of fp32 arithmetic, O(1) logits: ~1e-6 apart
        torch.testing.assert_close(logits[row, :n], theirs[row, :n], atol=1e-5, rtol=0, msg=f"row {row}")


def test_fine_tuning_settings_come_from_the_outer_config(tmp_path):
    (tmp_path / "dict.ltr.txt").write_text(DICT_TEXT)
    cfg = load_finetuned(convert(save(tmp_path / "ctc.pt", fine_tuned()), tmp_path / "run").path).cfg
    assert (cfg.masking.mask_prob, cfg.masking.channel_prob, cfg.masking.channel_length) == (0.5, 0.25, 64)
    assert (cfg.encoder.dropout, cfg.encoder.activation_dropout, cfg.encoder.layerdrop) == (0.0, 0.1, 0.05)
    assert cfg.freeze_updates == 10_000 and cfg.freeze_frontend and cfg.head == "ctc"


def test_cli_dict_option_and_its_errors(tmp_path, capsys):
    path = save(tmp_path / "ctc.pt", fine_tuned())
    (tmp_path / "letters.txt").write_text(DICT_TEXT)
    assert main(["convert", path, str(tmp_path / "run"), "--dict", str(tmp_path / "letters.txt")]) == 0
    assert load_finetuned(tmp_path / "run" / "step_00000000").cfg.vocab[4:9] == LETTERS
    (tmp_path / "bad.txt").write_text("| 5\nE\n")
    assert main(["convert", path, str(tmp_path / "run2"), "--dict", str(tmp_path / "bad.txt")]) != 0
    assert "bad.txt:2: expected 'SYMBOL COUNT'" in capsys.readouterr().err
    (tmp_path / "long.txt").write_text("".join(f"{c} 1\n" for c in "ABCDEFGHIJ"))
    assert main(["convert", path, str(tmp_path / "run3"), "--dict", str(tmp_path / "long.txt")]) != 0
    assert "w2v_encoder.proj.weight has 12 rows, the dictionary needs 14" in capsys.readouterr().err


def test_without_a_dictionary_only_the_trunk_comes_in_with_a_note(tmp_path):
    result = convert(save(tmp_path / "ctc.pt", fine_tuned()), tmp_path / "run")
    assert result.dropped == ("w2v_encoder.proj.weight", "w2v_encoder.proj.bias")
    assert any("dict.ltr.txt" in note for note in result.notes)
