"""The heads' losses and metrics: a too-long target is left out (not NaN), classification metrics against
probe/metrics.py (sklearn's definitions), the init from a pretraining checkpoint keeps its encoder only (and
the loop starts from exactly its weights)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from finetune_helpers import ft_overrides, write_corpus
from safetensors.torch import load_file

from ssl_audio.finetune.init import encoder_from_checkpoint
from ssl_audio.finetune.targets import target_vocab, write_split_manifests
from ssl_audio.models.ctc import ctc_loss_sum
from ssl_audio.models.finetune import FineTune, summarise
from ssl_audio.models.registry import ModelConfig, family_config
from ssl_audio.models.step_context import StepContext
from ssl_audio.probe.metrics import macro_f1
from ssl_audio.train.config import load_config
from ssl_audio.train.loop import train

VOCAB = ["<pad>", "<s>", "</s>", "<unk>", "|", "A", "B", "C"]
FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "checkpoints" / "hubert" / "step_00000001"


def tiny(**changes) -> FineTune:
    config = {"vocab": VOCAB, "encoder": {"num_layers": 1}, "masking": {"mask_prob": 0.0, "channel_prob": 0.0},
              **changes}  # fmt: skip
    torch.manual_seed(0)
    return FineTune(family_config(ModelConfig(family="finetune", preset="tiny", config=config)))


def test_too_long_target_is_skipped_not_nan() -> None:
    model = tiny().eval()
    wave = torch.randn(2, 3200, generator=torch.Generator().manual_seed(0)) * 0.1  # 9 frames each
    lengths = torch.tensor([3200, 3200])
    long = torch.tensor([[5, 6] * 8, [5, 6, 7] + [-100] * 13])  # row 0: 16 tokens > 9 frames
    out = model(wave, lengths, [long])
    assert out.sample_size.item() == 1 and out.metrics["skipped_targets"].item() == 1
    assert torch.isfinite(out.loss)
    encoded, frames, _ = model.encode(wave, lengths)
    alone = ctc_loss_sum(model.head(encoded[1:]), frames[1:], long[1:, :3], torch.tensor([3]))
    assert out.loss.item() == pytest.approx(alone.item(), rel=1e-6)


@pytest.mark.parametrize("pooling", ["mean", "attentive"])
def test_classify_metrics_match_sklearn_definitions(pooling: str) -> None:
    model = tiny(head="classify", vocab=["yes", "no", "up", "down"], pooling=pooling).eval()
    wave = torch.randn(6, 4000, generator=torch.Generator().manual_seed(1))
    classes = torch.tensor([[0], [1], [2], [3], [0], [1]])
    out = model(wave, torch.full((6,), 4000), [classes])
    logits = model.head(*model.encode(wave, torch.full((6,), 4000))[::2])
    predicted = logits.argmax(1)
    means = summarise(model.cfg, {k: float(v) for k, v in out.metrics.items()})
    assert means["accuracy"] == pytest.approx(float((predicted == classes[:, 0]).float().mean()))
    assert means["macro_f1"] == pytest.approx(macro_f1(classes[:, 0].numpy(), predicted.numpy()))
    expected = torch.nn.functional.cross_entropy(logits.double(), classes[:, 0], reduction="sum")
    assert out.loss.item() == pytest.approx(expected.item(), rel=1e-5)


def test_multilabel_bce() -> None:
    model = tiny(head="classify", vocab=["a", "b", "c"], multilabel=True).eval()
    wave = torch.randn(2, 4000, generator=torch.Generator().manual_seed(2))
    labels = torch.tensor([[0, 2], [1, -100]])
    out = model(wave, torch.full((2,), 4000), [labels])
    logits = model.head(*model.encode(wave, torch.full((2,), 4000))[::2])
    hot = torch.tensor([[1.0, 0, 1], [0, 1, 0]])
    expected = torch.nn.functional.binary_cross_entropy_with_logits(logits.double(), hot.double(), reduction="sum")
    assert out.loss.item() == pytest.approx(expected.item(), rel=1e-5)


def test_encoder_comes_from_a_pretraining_checkpoint(tmp_path: Path) -> None:
    model_cfg = ModelConfig(family="finetune", preset="tiny", config={"vocab": VOCAB})
    encoder = encoder_from_checkpoint(model_cfg, str(FIXTURE))
    assert encoder["dim"] == 16 and encoder["num_layers"] == 1  # the fixture's trunk
    assert encoder["dropout"] == 0.0 and encoder["layerdrop"] == 0.0  # the tiny fine-tuning preset's regularisation
    cfg = family_config(ModelConfig(family="finetune", preset="tiny", config={"vocab": VOCAB, "encoder": encoder}))
    state = load_file(FIXTURE / "model.safetensors")
    model = FineTune(cfg)
    own = model.state_dict()
    assert all(own[k].shape == v.shape for k, v in state.items() if k.startswith("encoder."))
    assert sum(k.startswith("encoder.") for k in own) == sum(k.startswith("encoder.") for k in state)
    out = model(torch.randn(1, 4000), None, [torch.tensor([[5, 6]])], context=StepContext())
    assert torch.isfinite(out.loss)


def test_loop_starts_from_the_checkpoints_encoder(tmp_path: Path) -> None:
    corpus = write_corpus(tmp_path / "c", train=3, valid=1)
    overrides = ft_overrides(corpus, tmp_path / "run", "train.max_updates=0", f"init.checkpoint={FIXTURE}")
    cfg = load_config(None, [o for o in overrides if not o.startswith("model.config.encoder.num_layers")])
    write_split_manifests(cfg.finetune, cfg.data.manifest_dir)
    result = train(cfg)
    saved = load_file(result.checkpoint / "model.safetensors")
    pretrained = load_file(FIXTURE / "model.safetensors")
    for key, value in pretrained.items():
        if key.startswith(("encoder.", "masker.")):
            assert torch.equal(saved[key], value), key
    assert not any(k.startswith(("final_proj", "label_embeddings")) for k in saved)
    assert saved["head.proj.weight"].shape == (len(target_vocab(cfg.finetune)), 16)  # the fixture's width
