"""HuBERT / WavLM objective: label resampling and the masked-prediction loss against independent oracles.

The oracle follows fairseq's `HubertModel.compute_nce` + `HubertCriterion`: logits are cosine similarities
between the projected context and every label embedding, divided by 0.1; the loss is the summed cross-entropy
over the masked (and, with a weight, the unmasked) frames that have a label.
"""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest
import soundfile as sf
import torch

from ssl_audio.audio import SAMPLE_RATE
from ssl_audio.data.labels import load_labels, write_labels
from ssl_audio.data.manifest import build_manifests, load_manifest
from ssl_audio.models.encoder import Encoder
from ssl_audio.models.hubert import (
    LABEL_PAD,
    Hubert,
    HubertConfig,
    frame_targets,
    hubert_base,
    hubert_large,
    hubert_tiny,
)
from ssl_audio.models.step_context import StepContext
from ssl_audio.models.wavlm import WavLM, wavlm_base, wavlm_base_plus, wavlm_large, wavlm_tiny

LENGTHS = (16_000, 11_000)  # samples -> 49 and 34 frames at 50 Hz (tiny extractor: stride 320, field 400)
FRAMES = (49, 34)


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _model(cfg: HubertConfig, seed: int = 0) -> Hubert:
    torch.manual_seed(seed)
    return Hubert(cfg)


def _wave(seed: int = 0, lengths: tuple[int, ...] = LENGTHS) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(len(lengths), max(lengths), generator=g), torch.tensor(lengths)


def _labels(num_classes: int, rate_factor: int, seed: int = 0) -> torch.Tensor:
    """(2, 50 * rate_factor) labels for LENGTHS at 50 * rate_factor Hz; row 1 padded after its 34 frames."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, num_classes, (2, 50 * rate_factor), generator=g)
    labels[1, 34 * rate_factor :] = LABEL_PAD
    return labels


# ------------------------------------------------------------------------------------------------ frame_targets


def test_frame_targets_100hz_takes_every_second_label() -> None:
    labels = torch.tensor([[0, 1, 2, 3, 4, 5, 6, 7], [10, 11, 12, 13, 14, 15, LABEL_PAD, LABEL_PAD]])
    P = LABEL_PAD
    # frame t <- label 2t; frame 4 would need label 8, past the end
    assert frame_targets(labels, 5, 100.0, 50.0).tolist() == [[0, 2, 4, 6, P], [10, 12, 14, P, P]]
    assert frame_targets(labels, 3, 100.0, 50.0).tolist() == [[0, 2, 4], [10, 12, 14]]


def test_frame_targets_50hz_identity_and_padding_past_the_end() -> None:
    labels = torch.tensor([[3, 1, 4, 1, 5], [9, 2, 6, LABEL_PAD, LABEL_PAD]])
    assert torch.equal(frame_targets(labels, 5, 50.0, 50.0), labels)
    P = LABEL_PAD
    assert frame_targets(labels, 7, 50.0, 50.0).tolist() == [[3, 1, 4, 1, 5, P, P], [9, 2, 6, P, P, P, P]]
    assert frame_targets(labels, 2, 50.0, 50.0).tolist() == [[3, 1], [9, 2]]
    # a slower label stream repeats: frame t <- label floor(t / 2)
    assert frame_targets(labels[:1], 6, 25.0, 50.0).tolist() == [[3, 3, 1, 1, 4, 4]]


# ----------------------------------------------------------------------------------------- the forward: oracle


def _trace(model: Hubert) -> dict[str, torch.Tensor]:
    trace: dict[str, torch.Tensor] = {}

    def on_extractor(_m, _a, out):  # noqa: ANN001, ANN202
        trace["features"] = out[0].detach()

    def on_masker(_m, _a, out):  # noqa: ANN001, ANN202
        trace["mask"] = out[1]

    def on_proj(_m, _a, out):  # noqa: ANN001, ANN202
        trace["projected"] = out.detach()

    model.encoder.extractor.register_forward_hook(on_extractor)
    model.masker.register_forward_hook(on_masker)
    model.final_proj.register_forward_hook(on_proj)
    return trace


def _oracle(model: Hubert, trace: dict[str, torch.Tensor], labels: list[torch.Tensor], rate_factor: int) -> dict:
    """Per label set: summed CE and accuracy over masked / unmasked labelled valid frames, in float64."""
    cfg = model.cfg
    mask = trace["mask"]
    projected = trace["projected"].double().numpy()  # (B, T, F * sets)
    table = model.label_embeddings.detach().double().numpy()
    out: dict[str, float] = {}
    offset = 0
    for i, (set_labels, classes) in enumerate(zip(labels, cfg.num_classes)):
        emb = table[offset : offset + classes]
        offset += classes
        emb = emb / np.linalg.norm(emb, axis=-1, keepdims=True)
        width = cfg.final_dim
        proj = projected[..., i * width : (i + 1) * width] if cfg.untie_final_proj else projected
        for name, where in (("masked", mask), ("unmasked", ~mask)):
            loss, correct, count = 0.0, 0, 0
            for b in range(mask.shape[0]):
                for t in range(FRAMES[b]):  # padded frames are never predicted
                    index = t * rate_factor  # frame t at 50 Hz <- label t * rate_factor
                    label = int(set_labels[b, index]) if index < set_labels.shape[1] else LABEL_PAD
                    if not where[b, t] or label == LABEL_PAD:
                        continue
                    p = proj[b, t] / np.linalg.norm(proj[b, t])
                    logits = emb @ p / cfg.logit_temp
                    top = logits.max()
                    loss += -(logits[label] - top - math.log(np.exp(logits - top).sum()))
                    correct += int(logits.argmax() == label)
                    count += 1
            out[f"{name}_{i}"] = loss
            out[f"accuracy_{name}_{i}"] = correct / max(count, 1)
            out[f"count_{name}_{i}"] = count
    out["mean_square"] = float((trace["features"].double() ** 2).mean())
    return out


def test_forward_masked_loss_matches_recomputation_and_unmasked_weight_zero() -> None:
    model = _model(hubert_tiny(num_classes=(100,), label_rate=100.0)).eval()
    trace = _trace(model)
    wave, lengths = _wave()
    labels = _labels(100, 2)
    labels[0, 10:20] = LABEL_PAD  # frames 5..9 of row 0 have no label: never predicted
    out = model(wave, lengths, [labels], context=StepContext(generator=_gen(0)))
    mask = trace["mask"]
    assert not mask[1, FRAMES[1] :].any()
    assert mask[0, 5:10].any()  # the unlabelled stretch is partly masked, so the exclusion is exercised
    expected = _oracle(model, trace, [labels], 2)

    assert set(out.losses) == {"masked_0", "penalty"}  # weight 0: no unmasked term at all
    assert out.losses["masked_0"].item() == pytest.approx(expected["masked_0"], rel=1e-5)
    assert int(out.sample_size) == expected["count_masked_0"]
    assert int(out.sample_size) == int(mask.sum()) - int(mask[0, 5:10].sum())
    penalty = 10.0 * expected["mean_square"] * expected["count_masked_0"]
    assert out.losses["penalty"].item() == pytest.approx(penalty, rel=1e-4)
    assert out.loss.item() == pytest.approx(expected["masked_0"] + penalty, rel=1e-5)
    # accuracies are reported for both parts; the unmasked one without any loss
    assert out.metrics["accuracy_masked_0"].item() == pytest.approx(expected["accuracy_masked_0"], abs=1e-6)
    assert out.metrics["accuracy_unmasked_0"].item() == pytest.approx(expected["accuracy_unmasked_0"], abs=1e-6)
    assert expected["count_unmasked_0"] > 10
    assert int(out.metrics["masked_frames"]) == int(mask.sum())


def test_forward_unmasked_weight_adds_the_unmasked_term() -> None:
    cfg = replace(hubert_tiny(num_classes=(100,), label_rate=100.0), unmasked_weight=0.5)
    model = _model(cfg).eval()
    trace = _trace(model)
    wave, lengths = _wave()
    labels = _labels(100, 2, seed=1)
    out = model(wave, lengths, [labels], context=StepContext(generator=_gen(1)))
    expected = _oracle(model, trace, [labels], 2)
    assert out.losses["masked_0"].item() == pytest.approx(expected["masked_0"], rel=1e-5)
    assert out.losses["unmasked_0"].item() == pytest.approx(0.5 * expected["unmasked_0"], rel=1e-5)
    # the penalty scales with whatever sample_size is (fairseq's convention: see test_sample_size_follows_fairseq)
    penalty = 10.0 * expected["mean_square"] * int(out.sample_size)
    assert out.losses["penalty"].item() == pytest.approx(penalty, rel=1e-4)
    total = expected["masked_0"] + 0.5 * expected["unmasked_0"] + penalty
    assert out.loss.item() == pytest.approx(total, rel=1e-5)


def test_forward_two_label_sets_untied_projections() -> None:
    cfg = hubert_tiny(num_classes=(100, 50), label_rate=50.0)
    model = _model(cfg).eval()
    assert model.final_proj.out_features == 2 * cfg.final_dim
    assert model.label_embeddings.shape == (150, cfg.final_dim)
    trace = _trace(model)
    wave, lengths = _wave()
    labels = [_labels(100, 1, seed=2), _labels(50, 1, seed=3)]
    labels[1][0, :25] = LABEL_PAD  # the second set misses labels the first has
    out = model(wave, lengths, labels, context=StepContext(generator=_gen(2)))
    expected = _oracle(model, trace, labels, 1)
    for i in (0, 1):
        assert out.losses[f"masked_{i}"].item() == pytest.approx(expected[f"masked_{i}"], rel=1e-5)
        assert out.metrics[f"accuracy_masked_{i}"].item() == pytest.approx(expected[f"accuracy_masked_{i}"], abs=1e-6)
    assert expected["count_masked_1"] < expected["count_masked_0"]
    # the two heads differ: set 1's loss is not set 0's projection scored against set 1's table
    assert not torch.allclose(trace["projected"][..., :64], trace["projected"][..., 64:])
    penalty_per_frame = 10.0 * expected["mean_square"]
    assert out.loss.item() == pytest.approx(
        expected["masked_0"] + expected["masked_1"] + penalty_per_frame * int(out.sample_size), rel=1e-5
    )


@pytest.mark.parametrize(
    ("num_classes", "unmasked_weight"), [((100, 50), 0.0), ((100,), 0.5)], ids=["two_sets", "unmasked_weight"]
)
def test_sample_size_follows_fairseq(num_classes: tuple[int, ...], unmasked_weight: float) -> None:
    cfg = replace(hubert_tiny(num_classes=num_classes, label_rate=50.0), unmasked_weight=unmasked_weight)
    model = _model(cfg).eval()
    trace = _trace(model)
    wave, lengths = _wave()
    labels = [_labels(100, 1, seed=2), _labels(50, 1, seed=3)][: len(num_classes)]
    out = model(wave, lengths, labels, context=StepContext(generator=_gen(2)))
    expected = _oracle(model, trace, labels, 1)
    # fairseq: `sample_size += targ_m_list[0].numel()` if pred_masked_weight > 0, then
    # `sample_size += targ_u_list[0].numel()` if pred_nomask_weight > 0; the penalty is times that sample_size
    count = expected["count_masked_0"] + (expected["count_unmasked_0"] if unmasked_weight > 0 else 0)
    assert int(out.sample_size) == count
    assert out.losses["penalty"].item() == pytest.approx(10.0 * expected["mean_square"] * count, rel=1e-4)


def test_tied_projection_scores_every_set_with_one_head() -> None:
    cfg = replace(hubert_tiny(num_classes=(100, 50), label_rate=50.0), untie_final_proj=False)
    model = _model(cfg).eval()
    assert model.final_proj.out_features == cfg.final_dim
    trace = _trace(model)
    wave, lengths = _wave()
    labels = [_labels(100, 1, seed=4), _labels(50, 1, seed=5)]
    out = model(wave, lengths, labels, context=StepContext(generator=_gen(3)))
    expected = _oracle(model, trace, labels, 1)
    for i in (0, 1):
        assert out.losses[f"masked_{i}"].item() == pytest.approx(expected[f"masked_{i}"], rel=1e-5)


def _perfect_model(num_classes: int = 8) -> Hubert:
    """final_proj outputs e_2 (a one-hot) for every frame; label embedding k is e_2 + 0.75 e_k (k != 2), e_2 for k = 2.

    Cosine logits / 0.1: 10 for class 2 and 8 (cos 1 / 1.25) for every other class, whatever the audio. A gap of 2,
    not 10: the CE of a right frame, log(1 + 7 e^-2) = 0.67, is then well conditioned in fp32 (log1p(7 e^-10) = 3e-4
    comes out of log(1.0003), a number that fp32 holds to only ~2e-4 relative).
    """
    model = _model(hubert_tiny(num_classes=(num_classes,), label_rate=50.0)).eval()
    with torch.no_grad():
        model.final_proj.weight.zero_()
        model.final_proj.bias.copy_(torch.nn.functional.one_hot(torch.tensor(2), 64).float())
        table = 0.75 * torch.eye(num_classes, 64)  # 0.75 and its norm 1.25 with e_2 are exact in fp32
        table[:, 2] = 1.0
        model.label_embeddings.copy_(table)
    return model


def test_accuracy_and_loss_hand_case_perfect_and_mixed() -> None:
    model = _perfect_model()
    wave, lengths = _wave()
    trace = _trace(model)
    labels = torch.full((2, 50), 2)
    labels[1, 34:] = LABEL_PAD
    out = model(wave, lengths, [labels], context=StepContext(generator=_gen(0)))
    n = int(trace["mask"].sum())
    assert int(out.sample_size) == n
    assert out.metrics["accuracy_masked_0"].item() == 1.0
    assert out.metrics["accuracy_unmasked_0"].item() == 1.0
    # CE of logits (10, 8 x 7) at the right class: log(1 + 7 e^-2) per frame. Error bound: logits within ~2 ulp(10)
    # = 2e-6, log_softmax a few ulp(10) more: < 1e-5 of 0.67 per frame (1.5e-5 rel); the fp32 sum of n ~ 60 terms
    # adds < n x eps 6e-8 = 4e-6. rel 5e-5 is 2.5x that bound and still fails on one frame more or less (1/n ~ 2%).
    right_ce = math.log1p(7 * math.exp(-2))
    assert out.losses["masked_0"].item() == pytest.approx(n * right_ce, rel=5e-5)

    # now the second half of each row is labelled 5: those frames are wrong, at CE log(e^10 + 7 e^8) - 8 each
    labels[:, 17:] = 5
    labels[1, 34:] = LABEL_PAD
    out = model(wave, lengths, [labels], context=StepContext(generator=_gen(0)))
    mask = trace["mask"]
    right = int(mask[:, :17].sum())
    wrong = n - right
    assert 0 < right < n
    assert out.metrics["accuracy_masked_0"].item() == pytest.approx(right / n, abs=1e-6)
    unmasked_valid = FRAMES[0] + FRAMES[1] - n
    unmasked_right = 2 * 17 - right
    assert out.metrics["accuracy_unmasked_0"].item() == pytest.approx(unmasked_right / unmasked_valid, abs=1e-6)
    wrong_ce = 2.0 + right_ce  # log(e^10 + 7 e^8) - 8 = 2 + log(1 + 7 e^-2)
    assert out.losses["masked_0"].item() == pytest.approx(right * right_ce + wrong * wrong_ce, rel=5e-5)


# ---------------------------------------------------------------------------------------------- bad input, presets


@pytest.mark.parametrize("bad", [50, -1])  # == k, and negative (not LABEL_PAD)
def test_label_values_are_checked_where_labels_are_loaded(tmp_path, bad: int) -> None:  # noqa: ANN001
    """Forward no longer checks label values (two host syncs per step): load_labels refuses them, naming the line."""
    audio = tmp_path / "audio"
    audio.mkdir()
    sf.write(audio / "a.wav", np.zeros(16_000, dtype=np.float32), SAMPLE_RATE)
    build_manifests([audio], tmp_path / "manifest", valid_fraction=0.0, seed=0)
    manifest = load_manifest(tmp_path / "manifest" / "train.tsv")
    path = tmp_path / "train.km"
    write_labels(path, manifest, [np.arange(50) % 50], k=50, rate=50)
    header, row = path.read_text().splitlines()
    path.write_text(f"{header}\n{' '.join(['3'] * 49 + [str(bad)])}\n")
    with pytest.raises(ValueError, match=r"train.km:2 \(.*a.wav\): labels outside \[0, 50\)"):
        load_labels(path, manifest)


def test_wrong_number_of_label_sets_raises() -> None:
    model = _model(hubert_tiny(num_classes=(100,), label_rate=50.0)).eval()
    wave, lengths = _wave()
    with pytest.raises(ValueError, match="expected 1 label sets, got 2"):
        model(wave, lengths, [_labels(100, 1), _labels(100, 1)])
    with pytest.raises(ValueError, match="expected 1 label sets, got 0"):
        model(wave, lengths, [])
    with pytest.raises(ValueError, match=r"label set 0.*\(50,\)"):
        model(wave, lengths, [_labels(100, 1)[0]])  # (L,) instead of (B, L)


def test_backward_finite_gradients_and_training_mode() -> None:
    model = _model(wavlm_tiny(num_classes=(100,), label_rate=100.0)).train()
    wave, lengths = _wave(0, (8_000, 6_000))
    labels = torch.randint(0, 100, (2, 50))
    torch.manual_seed(0)
    out = model(wave, lengths, [labels], context=StepContext(generator=_gen(0), layerdrop_seed=0))
    assert torch.isfinite(out.loss) and out.loss.dtype == torch.float32
    out.loss.backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
    assert model.encoder.transformer.relative_bias.embedding.weight.grad.abs().sum() > 0


def test_bf16_autocast_loss_in_fp32() -> None:
    model = _model(hubert_tiny(num_classes=(100,), label_rate=100.0)).eval()
    wave, lengths = _wave(0, (8_000, 6_000))
    labels = torch.randint(0, 100, (2, 50), generator=_gen(1))
    ref = model(wave, lengths, [labels], context=StepContext(generator=_gen(0)))
    dtypes: dict[str, torch.dtype] = {}
    for name in ("encoder.transformer.layers.0.feed_forward.fc1", "final_proj"):
        model.get_submodule(name).register_forward_hook(lambda _m, _a, o, name=name: dtypes.update({name: o.dtype}))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(wave, lengths, [labels], context=StepContext(generator=_gen(0)))
    # the trunk ran in bf16 (a no-op autocast would leave fp32); the projection to the cosine logits in fp32
    assert dtypes == {"encoder.transformer.layers.0.feed_forward.fc1": torch.bfloat16, "final_proj": torch.float32}
    assert out.loss.dtype == torch.float32 and all(v.dtype == torch.float32 for v in out.losses.values())
    assert out.loss.item() == pytest.approx(ref.loss.item(), rel=0.02)


def _count(cfg: HubertConfig) -> int:
    with torch.device("meta"):
        return sum(p.numel() for p in Hubert(cfg).parameters())


@pytest.mark.parametrize(
    ("hubert", "wavlm"),
    [
        (hubert_tiny(), wavlm_tiny()),
        (hubert_base(), wavlm_base()),
        (hubert_base(), wavlm_base_plus()),
        (hubert_large(), wavlm_large()),
    ],
    ids=["tiny", "base", "base_plus", "large"],
)
def test_wavlm_is_hubert_plus_gated_relative_bias(hubert: HubertConfig, wavlm: HubertConfig) -> None:
    enc = wavlm.encoder
    assert enc.relative_bias and (enc.num_buckets, enc.max_distance) == (320, 800)
    assert not hubert.encoder.relative_bias
    heads, head_dim = enc.num_heads, enc.dim // enc.num_heads
    # one (320, H) bucket embedding shared by the layers; per layer a Linear(E, 8) gate and an (H,) gate scale
    extra = heads * 320 + enc.num_layers * (head_dim * 8 + 8 + heads)
    assert _count(wavlm) == _count(hubert) + extra
    assert WavLM is Hubert


def test_encoder_parameter_counts_match_torchaudio() -> None:
    # torchaudio.models.{hubert_base, wavlm_base, wavlm_large}() parameter counts (aux head absent)
    presets = {"hubert_base": hubert_base, "wavlm_base": wavlm_base, "wavlm_large": wavlm_large}
    with torch.device("meta"):
        counts = {name: sum(p.numel() for p in Encoder(f().encoder).parameters()) for name, f in presets.items()}
    assert counts == {"hubert_base": 94_370_944, "wavlm_base": 94_381_168, "wavlm_large": 315_452_096}
    assert counts["wavlm_base"] - counts["hubert_base"] == 12 * 320 + 12 * (64 * 8 + 8 + 12)  # 10,224
