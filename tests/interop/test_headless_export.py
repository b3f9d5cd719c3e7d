"""A headless transformers model imported and exported again comes back headless (issue 16): as Wav2Vec2Model,
not as Wav2Vec2ForPreTraining with the quantiser and projections our conversion had to initialise at random."""

import json

import torch
import transformers

from ssl_audio.interop.convert import convert
from ssl_audio.step_folder import load_checkpoint
from ssl_audio.train.checkpoint import save_checkpoint
from tests.interop.test_hf import hf_model, waves

LENGTHS = torch.tensor([4_000, 3_200])


def test_headless_wav2vec2_round_trip_is_a_base_model_with_equal_hidden_states(tmp_path):
    theirs = hf_model("Wav2Vec2Model", "layer", True)  # random weights, tiny config
    theirs.save_pretrained(tmp_path / "hf")
    imported = convert(tmp_path / "hf", tmp_path / "run")
    heads = ["project_context", "project_targets", "quantizer"]  # Wav2Vec2Model has masked_spec_embed, no heads
    assert list(imported.fresh) == heads
    assert load_checkpoint(imported.path).train_state == {"untrained_parts": heads}

    exported = convert(imported.path, tmp_path / "out", target="hf")
    assert json.loads((tmp_path / "out" / "config.json").read_text())["architectures"] == ["Wav2Vec2Model"]
    assert exported.fresh == ()
    assert sorted(note.split(":")[0] for note in exported.notes if "never trained" in note) == heads
    back = transformers.AutoModel.from_pretrained(tmp_path / "out").eval()
    assert type(back) is transformers.Wav2Vec2Model
    x = waves(LENGTHS)
    mask = (torch.arange(x.shape[1])[None, :] < LENGTHS[:, None]).long()
    with torch.no_grad():
        a = theirs(x, attention_mask=mask, output_hidden_states=True).hidden_states
        b = back(x, attention_mask=mask, output_hidden_states=True).hidden_states
    assert len(a) == len(b) == 3
    for layer, (p, q) in enumerate(zip(a, b)):
        torch.testing.assert_close(q, p, atol=1e-5, rtol=0, msg=f"layer {layer}")


def test_trained_heads_are_exported(tmp_path):
    """A step folder without the conversion's record (a training run wrote it) keeps its wav2vec 2.0 heads."""
    hf_model("Wav2Vec2Model", "group", False).save_pretrained(tmp_path / "hf")
    imported = convert(tmp_path / "hf", tmp_path / "run")

    checkpoint = load_checkpoint(imported.path)
    trained = save_checkpoint(
        tmp_path / "trained", 5, model_state=checkpoint.model_state, train_state={}, config_text=checkpoint.config_text
    )
    convert(trained, tmp_path / "out", target="hf")
    assert json.loads((tmp_path / "out" / "config.json").read_text())["architectures"] == ["Wav2Vec2ForPreTraining"]
