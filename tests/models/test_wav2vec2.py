"""wav2vec 2.0 objective: packing, negative sampling, logits, and the full loss against independent oracles.

The oracles are written out here with plain numpy/torch math from the paper and fairseq's
`Wav2Vec2Model.forward` + `Wav2vecCriterion`: they never call the function under test for the value they check.
"""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest
import torch

import ssl_audio.models.wav2vec2 as w2v
from ssl_audio.models.output import Output
from ssl_audio.models.step_context import StepContext
from ssl_audio.models.wav2vec2 import (
    Wav2Vec2,
    Wav2Vec2Config,
    contrastive_logits,
    gather_masked,
    sample_negatives,
    wav2vec2_tiny,
)

LENGTHS = (16_000, 11_000)  # samples; the tiny extractor (stride 320, field 400) gives 49 and 34 frames
FRAMES = (49, 34)  # floor((S - 400) / 320) + 1, worked by hand


def _model(seed: int = 0, *, loud: bool = False, **changes: object) -> Wav2Vec2:
    """The tiny preset. `loud` doubles conv layers 2-7 (x64 overall): conv features of order 0.1 instead of 1e-4,
    so that the feature penalty is a visible term of the loss."""
    torch.manual_seed(seed)
    cfg = wav2vec2_tiny()
    model = Wav2Vec2(replace(cfg, **changes) if changes else cfg)
    if loud:
        with torch.no_grad():
            for block in model.encoder.extractor.blocks[1:]:
                block.conv.weight.mul_(2.0)
    return model


def _batch(seed: int = 0, lengths: tuple[int, ...] = LENGTHS) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, max length) waveforms; rows shorter than the batch are padded with noise (it must not matter)."""
    g = torch.Generator().manual_seed(seed)
    return torch.randn(len(lengths), max(lengths), generator=g), torch.tensor(lengths)


SHORT = (8_000, 6_000)  # 24 and 18 frames: for the tests that need no hand-checked frame counts


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# ---------------------------------------------------------------------------------------------- gather_masked


def test_gather_masked_hand_case_ragged_rows() -> None:
    x = torch.arange(2 * 5 * 2, dtype=torch.float32).view(2, 5, 2)  # x[b, t] = [10b + 2t, 10b + 2t + 1]
    mask = torch.tensor([[False, True, False, True, True], [True, False, False, False, False]])
    packed, valid = gather_masked(x, mask)
    assert packed.shape == (2, 3, 2)
    assert valid.tolist() == [[True, True, True], [True, False, False]]
    assert packed[0].tolist() == [[2.0, 3.0], [6.0, 7.0], [8.0, 9.0]]  # frames 1, 3, 4 in order
    assert packed[1, 0].tolist() == [10.0, 11.0]  # frame 0 of row 1; slots 1, 2 are filler
    # 2-D and 4-D inputs pack the same frames
    packed2, _ = gather_masked(x[..., 0], mask)
    assert packed2[valid].tolist() == [2.0, 6.0, 8.0, 10.0]
    packed4, _ = gather_masked(x[..., None].expand(-1, -1, -1, 3), mask)
    assert torch.equal(packed4[..., 1], packed)


def test_gather_masked_empty_row_and_random_order() -> None:
    mask = torch.tensor([[False, False, False, False], [False, True, True, False]])
    x = torch.randn(2, 4, 3)
    packed, valid = gather_masked(x, mask)
    assert valid.tolist() == [[False, False], [True, True]]
    assert torch.equal(packed[1], x[1, 1:3])
    # random masks: the valid slots of each row are exactly the masked frames, in time order
    g = _gen(3)
    mask = torch.rand(5, 37, generator=g) < 0.4
    x = torch.randn(5, 37, 2, generator=g)
    packed, valid = gather_masked(x, mask)
    for b in range(5):
        expected = x[b, mask[b]]
        assert valid[b].sum() == len(expected)
        assert torch.equal(packed[b, : len(expected)], expected)
        assert not valid[b, len(expected) :].any()


# ------------------------------------------------------------------------------------------- sample_negatives


def test_sample_negatives_valid_slots_of_own_row_never_itself_and_uniform() -> None:
    counts = [6, 3, 2]  # masked frames per row; width 6
    valid = torch.arange(6)[None, :] < torch.tensor(counts)[:, None]
    draws = 3000
    index = sample_negatives(valid, draws, generator=_gen(0))
    assert index.shape == (3, 6, draws) and index.dtype == torch.long
    for b, count in enumerate(counts):
        for m in range(count):
            row = index[b, m]
            assert int(row.min()) >= 0 and int(row.max()) < count, "a negative outside the row's valid slots"
            assert not (row == m).any(), "a slot drew itself"
            # uniform over the count - 1 other slots: Pearson chi-square, df = count - 2
            observed = torch.bincount(row, minlength=count).double()
            others = [j for j in range(count) if j != m]
            expected = draws / (count - 1)
            chi2 = float(((observed[others] - expected) ** 2 / expected).sum())
            assert chi2 < 25.0, f"row {b} slot {m}: chi2 {chi2:.1f}, counts {observed.tolist()}"  # p < 1e-4 at df 4
    # a row of two masked frames has exactly one distractor: the other frame
    assert (index[2, 0] == 1).all() and (index[2, 1] == 0).all()


def test_sample_negatives_reproducible_with_generator() -> None:
    valid = torch.tensor([[True] * 7, [True] * 4 + [False] * 3])
    a = sample_negatives(valid, 50, generator=_gen(11))
    b = sample_negatives(valid, 50, generator=_gen(11))
    c = sample_negatives(valid, 50, generator=_gen(12))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_sample_negatives_row_with_single_masked_frame_stays_in_bounds() -> None:
    # A lone masked frame (row 0) has no distractor; its slot is dropped from the loss by the model. Its indices
    # only need to be gather-safe (< width); the other row is unaffected.
    valid = torch.tensor([[True, False, False], [True, True, True]])
    index = sample_negatives(valid, 40, generator=_gen(0))
    assert int(index.max()) < 3 and int(index.min()) >= 0
    for m in range(3):
        assert not (index[1, m] == m).any()


def test_sample_negatives_lone_frame_rows_get_index_zero() -> None:
    # docstring: "rows with fewer than 2 masked frames get index 0". With width 1 (every row has <= 1 masked
    # frame), index 1 makes `targets.gather` in Wav2Vec2.forward fail with "index 1 is out of bounds".
    index = sample_negatives(torch.tensor([[True], [False]]), 4, generator=_gen(0))
    assert (index == 0).all()


def test_forward_batch_of_one_frame_utterances() -> None:
    model = _model().eval()
    out = model(torch.randn(2, 500), torch.tensor([500, 450]), context=StepContext(generator=_gen(0)))  # one frame each
    assert int(out.sample_size) == 0  # one masked frame per row: nothing to contrast
    assert out.loss.item() == 0.0


# ----------------------------------------------------------------------------------------- contrastive_logits


def test_contrastive_logits_hand_case() -> None:
    x = torch.tensor([[[1.0, 0.0], [3.0, 4.0]]])  # (B=1, M=2, F=2)
    targets = torch.tensor([[[1.0, 1.0], [4.0, -3.0]]])
    negatives = torch.tensor(
        [
            [
                [[0.0, 1.0], [-1.0, 0.0], [1.0, 1.0], [2.0, 2.0]],  # last two: equal to the target, parallel to it
                [[3.0, 4.0], [0.0, 2.0], [4.0, -3.0], [-3.0, -4.0]],
            ]
        ]
    )  # (1, 2, K=4, 2)
    logits = contrastive_logits(x, targets, negatives, temperature=0.5)
    s = math.sqrt(2.0)
    # cos([1,0],[1,1]) = 1/sqrt2 -> /0.5 = sqrt2; cos with [0,1] = 0, with [-1,0] = -1; [1,1] equals the target
    # -> -inf; [2,2] is only parallel, so it is a real distractor with the target's logit
    expected0 = [s, 0.0, -2.0, float("-inf"), s]
    # cos([3,4],[4,-3]) = 0; [3,4] -> 1; [0,2] -> 8/10; [4,-3] equals the target -> -inf; [-3,-4] -> -1
    expected1 = [0.0, 2.0, 1.6, float("-inf"), -2.0]
    assert logits.shape == (1, 2, 5)
    torch.testing.assert_close(logits[0, 0], torch.tensor(expected0))
    torch.testing.assert_close(logits[0, 1], torch.tensor(expected1))


# -------------------------------------------------------------------------------------- the full forward: oracle


def _trace(model: Wav2Vec2, monkeypatch: pytest.MonkeyPatch) -> dict[str, torch.Tensor]:
    """Capture intermediates of the next forward: conv features, mask, context, quantizer input, negatives."""
    trace: dict[str, torch.Tensor] = {}

    def on_extractor(_m, _a, out):  # noqa: ANN001, ANN202
        trace["features"] = out[0].detach()

    def on_masker(_m, _a, out):  # noqa: ANN001, ANN202
        trace["mask"] = out[1]

    def on_transformer(_m, _a, out):  # noqa: ANN001, ANN202
        trace["context"] = out.last.detach()

    def on_quantizer(_m, args, kwargs):  # noqa: ANN001, ANN202
        trace["q_input"] = args[0].detach()
        trace["q_padding"] = kwargs["padding_mask"]

    model.encoder.extractor.register_forward_hook(on_extractor)
    model.masker.register_forward_hook(on_masker)
    model.encoder.transformer.register_forward_hook(on_transformer)
    model.quantizer.register_forward_pre_hook(on_quantizer, with_kwargs=True)
    original = w2v.sample_negatives

    def spy(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        trace["index"] = original(*args, **kwargs)
        return trace["index"]

    monkeypatch.setattr(w2v, "sample_negatives", spy)
    return trace


def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().double().numpy()


def _oracle(model: Wav2Vec2, trace: dict[str, torch.Tensor], frames: tuple[int, ...]) -> dict[str, float]:
    """fairseq's wav2vec 2.0 loss in eval mode, recomputed in float64 from conv features, context and negatives."""
    cfg = model.cfg
    groups, entries = cfg.quantizer.num_groups, cfg.quantizer.num_entries
    feats, mask, context, index = _np(trace["features"]), trace["mask"], _np(trace["context"]), trace["index"]
    ln_w, ln_b = _np(model.encoder.projection.norm.weight), _np(model.encoder.projection.norm.bias)
    q_w, q_b = _np(model.quantizer.logits.weight), _np(model.quantizer.logits.bias)
    codebook = _np(model.quantizer.codevectors)[0]  # (G*V, E), entry v of group g at row g*V + v
    t_w, t_b = _np(model.project_targets.weight), _np(model.project_targets.bias)
    c_w, c_b = _np(model.project_context.weight), _np(model.project_context.bias)

    def cos(a: np.ndarray, b: np.ndarray) -> float:
        return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))

    contrastive, correct, count, same_code = 0.0, 0, 0, 0
    probs_sum = np.zeros((groups, entries))
    for b in range(mask.shape[0]):
        times = [t for t in range(mask.shape[1]) if mask[b, t]]
        assert times and max(times) < frames[b], "a padded frame was masked"
        # quantiser input: LayerNorm of the conv features at the masked frames (eval: no feature dropout)
        f = feats[b, times]  # (M_b, C)
        normed = (f - f.mean(-1, keepdims=True)) / np.sqrt(f.var(-1, keepdims=True) + 1e-5) * ln_w + ln_b
        np.testing.assert_allclose(_np(trace["q_input"][b, : len(times)]), normed, rtol=1e-4, atol=1e-4)
        logits = (normed @ q_w.T + q_b).reshape(len(times), groups, entries)
        probs = np.exp(logits - logits.max(-1, keepdims=True))
        probs_sum += (probs / probs.sum(-1, keepdims=True)).sum(0)
        codes = logits.argmax(-1)  # (M_b, G): eval picks the argmax entry of each group
        quantized = np.concatenate([codebook[g * entries + codes[:, g]] for g in range(groups)], axis=-1)
        targets = quantized @ t_w.T + t_b  # (M_b, F)
        predicted = context[b, times] @ c_w.T + c_b  # (M_b, F)
        for m in range(len(times)):
            negs = index[b, m].tolist()
            assert all(0 <= j < len(times) and j != m for j in negs)
            row = [cos(predicted[m], targets[m])]
            row += [
                -math.inf if np.array_equal(targets[j], targets[m]) else cos(predicted[m], targets[j]) for j in negs
            ]
            same_code += sum(math.isinf(v) for v in row)
            row = np.array(row) / cfg.logit_temp
            top = row.max()
            contrastive += -(row[0] - top - math.log(np.exp(row - top).sum()))
            correct += int(row.argmax() == 0)
            count += 1
    mean = probs_sum / count
    prob_perplexity = float(np.exp(-(mean * np.log(mean)).sum(-1)).sum())
    num_codes = groups * entries
    diversity = cfg.diversity_weight * (num_codes - prob_perplexity) / num_codes * count
    penalty = cfg.feature_penalty_weight * float((feats**2).mean()) * count  # padded frames included, as fairseq
    return {
        "contrastive": contrastive,
        "diversity": diversity,
        "penalty": penalty,
        "loss": contrastive + diversity + penalty,
        "sample_size": count,
        "accuracy": correct / count,
        "prob_perplexity": prob_perplexity,
        "same_code_negatives": same_code,
    }


@pytest.mark.parametrize("few_codes", [False, True], ids=["spread_codes", "few_codes"])
def test_forward_loss_terms_match_independent_recomputation(monkeypatch: pytest.MonkeyPatch, few_codes: bool) -> None:
    model = _model(loud=True).eval()
    if few_codes:  # group 0 picks among entries 0-2, group 1 always entry 0: many negatives share the target's code
        with torch.no_grad():
            model.quantizer.logits.bias[:3] = 30.0
            model.quantizer.logits.bias[64] = 100.0
    trace = _trace(model, monkeypatch)
    wave, lengths = _batch()
    out = model(wave, lengths, context=StepContext(generator=_gen(0)))
    assert isinstance(out, Output)
    mask = trace["mask"]
    assert tuple(trace["features"].shape[:2]) == (2, FRAMES[0])
    assert not mask[1, FRAMES[1] :].any(), "padding was masked"
    assert mask.sum(1).min() >= 2
    expected = _oracle(model, trace, FRAMES)

    assert int(out.sample_size) == expected["sample_size"] == int(mask.sum())
    assert int(out.metrics["masked_frames"]) == int(mask.sum())
    # Error bounds of the fp32 terms (eps 6e-8): contrastive, ~50 CEs of logits <= 10: a few ulp(10) each, < 1e-6 rel;
    # penalty, torch's cascade sum of 6272 squares: ~log2(n) x eps = 1e-6 rel; prob perplexity, exp(entropy) of a
    # mean of ~50 softmaxes over 64 entries: abs error of the entropy < (64 + 50) x eps x 3 = 2e-5 = rel error of the
    # perplexity. Diversity, (GV - ppl) / GV: the difference scales that by ppl / (GV - ppl), which is < 1 while
    # ppl < GV / 2 (checked below). rel 1e-4 is 5x the largest bound and 100x below a factor or an off-by-one frame.
    num_codes = model.cfg.quantizer.num_groups * model.cfg.quantizer.num_entries
    assert expected["prob_perplexity"] < num_codes / 2, "diversity would be a difference of near-equal numbers"
    for name in ("contrastive", "diversity", "penalty"):
        assert out.losses[name].dtype == torch.float32
        assert out.losses[name].item() == pytest.approx(expected[name], rel=1e-4), name
    # every term is far above the tolerance of the total (the total: the penalty's 1e-6 bound dominates; rel 1e-5)
    assert expected["penalty"] > 0.1 and expected["diversity"] > 0.01 and expected["contrastive"] > 10
    assert out.loss.item() == pytest.approx(expected["loss"], rel=1e-5)
    assert out.loss.item() == pytest.approx(sum(v.item() for v in out.losses.values()), rel=1e-6)
    assert out.metrics["prob_perplexity"].item() == pytest.approx(expected["prob_perplexity"], rel=1e-4)
    assert out.metrics["accuracy"].item() == pytest.approx(expected["accuracy"], abs=1e-6)
    assert out.mean_loss.item() == pytest.approx(expected["loss"] / expected["sample_size"], rel=1e-5)
    # with few codes, negatives that share the target's code get -inf (the path is exercised)
    assert (expected["same_code_negatives"] > 100) == few_codes


def test_forward_without_lengths_masks_whole_rows(monkeypatch: pytest.MonkeyPatch) -> None:
    model = _model().eval()
    trace = _trace(model, monkeypatch)
    wave, _ = _batch(1)
    out = model(wave, None, context=StepContext(generator=_gen(2)))
    expected = _oracle(model, trace, (FRAMES[0], FRAMES[0]))
    assert int(out.sample_size) == expected["sample_size"]
    assert out.loss.item() == pytest.approx(expected["loss"], rel=1e-5)


def test_padding_never_masked_over_many_seeds() -> None:
    model = _model().eval()
    wave, lengths = _batch(0, (16_000, 11_000, 4_000))  # 49, 34, 12 frames
    masks: list[torch.Tensor] = []
    model.masker.register_forward_hook(lambda _m, _a, o: masks.append(o[1]))
    for seed in range(4):
        out = model(wave, lengths, context=StepContext(generator=_gen(seed)))
        assert not masks[-1][1, 34:].any() and not masks[-1][2, 12:].any()
        assert int(out.sample_size) == int(masks[-1].sum())


def test_backward_gives_finite_gradient_to_every_parameter() -> None:
    model = _model().train()
    wave, lengths = _batch(0, SHORT)
    torch.manual_seed(0)
    out = model(wave, lengths, context=StepContext(generator=_gen(0), layerdrop_seed=0))
    assert torch.isfinite(out.loss)
    out.loss.backward()
    for name, p in model.named_parameters():
        assert p.grad is not None, f"{name} got no gradient"
        assert torch.isfinite(p.grad).all(), name
    assert model.quantizer.logits.weight.grad.abs().sum() > 0  # straight-through Gumbel reaches the logits
    assert model.masker.mask_embedding.grad.abs().sum() > 0


def test_feature_grad_mult_scales_extractor_gradient_only() -> None:
    wave, lengths = _batch(0, SHORT)
    grads = []
    # 0.25, not BASE's 0.1: scaling by a power of two is exact in binary floating point, and every op of the
    # extractor's backward is linear in the incoming gradient, so the scaled gradients are bit for bit 0.25 x the
    # others. With 0.1 (itself inexact) the conv weight gradients, sums of ~1600 products that cancel, moved by up
    # to 8 ulp of their largest entry: 0.77 of the former atol 1e-7 + rtol 1e-4 under ATEN_CPU_CAPABILITY=avx2.
    for mult in (1.0, 0.25):
        model = _model(seed=5, feature_grad_mult=mult).eval()
        model(wave, lengths, context=StepContext(generator=_gen(0))).loss.backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
    assert grads[0].keys() == grads[1].keys()
    for name, g in grads[0].items():
        factor = 0.25 if name.startswith("encoder.extractor.") else 1.0
        assert torch.equal(grads[1][name], factor * g), name


def test_bf16_autocast_keeps_loss_maths_fp32_and_close() -> None:
    model = _model().eval()
    wave, lengths = _batch()
    ref = model(wave, lengths, context=StepContext(generator=_gen(0)))
    dtypes: dict[str, torch.dtype] = {}
    for name in ("encoder.transformer.layers.0.feed_forward.fc1", "quantizer.logits", "project_context"):
        model.get_submodule(name).register_forward_hook(lambda _m, _a, o, name=name: dtypes.update({name: o.dtype}))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(wave, lengths, context=StepContext(generator=_gen(0)))
    # the trunk and the quantiser ran in bf16 (a no-op autocast would leave fp32), the loss projections in fp32
    assert dtypes == {
        "encoder.transformer.layers.0.feed_forward.fc1": torch.bfloat16,
        "quantizer.logits": torch.bfloat16,
        "project_context": torch.float32,
    }
    assert out.loss.dtype == torch.float32
    assert all(v.dtype == torch.float32 for v in out.losses.values())
    assert int(out.sample_size) == int(ref.sample_size)  # the mask does not depend on the dtype
    # bf16 trunk (8-bit mantissa): the context and some argmax codes move; the loss stays within a few percent
    assert out.loss.item() == pytest.approx(ref.loss.item(), rel=0.05)
    assert out.losses["penalty"].item() == pytest.approx(ref.losses["penalty"].item(), rel=0.05)
    out.loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_gumbel_temperature_follows_step() -> None:
    model = _model().train()
    wave, lengths = _batch(0, SHORT)
    # max(2 * 0.999995**step, 0.5); 0.999995**1e5 = exp(1e5 ln 0.999995); the floor is reached after ~277k steps
    cases = [(0, 2.0), (1_000, 2 * 0.999995**1_000), (100_000, 2 * math.exp(100_000 * math.log(0.999995)))]
    cases += [(10**7, 0.5), (0, 2.0)]  # and back: the temperature is a function of `step`, not of the call count
    for step, expected in cases:
        out = model(wave, lengths, context=StepContext(step=step, generator=_gen(0)))
        assert out.metrics["temperature"].item() == pytest.approx(expected, rel=1e-6), step
        assert model.quantizer.temperature == pytest.approx(expected, rel=1e-12), step


def test_eval_is_deterministic_given_generator() -> None:
    model = _model().eval()
    wave, lengths = _batch(0, SHORT)
    a = model(wave, lengths, context=StepContext(generator=_gen(4)))
    torch.manual_seed(123)  # the global RNG must not matter in eval
    b = model(wave, lengths, context=StepContext(generator=_gen(4)))
    assert torch.equal(a.loss, b.loss) and torch.equal(a.sample_size, b.sample_size)
    assert all(torch.equal(a.losses[k], b.losses[k]) for k in a.losses)
    c = model(wave, lengths, context=StepContext(generator=_gen(5)))
    assert not torch.equal(a.loss, c.loss)  # another mask and other negatives


def test_training_is_reproducible_with_seeds() -> None:
    model = _model(encoder=replace(wav2vec2_tiny().encoder, layerdrop=0.3)).train()
    wave, lengths = _batch(0, SHORT)
    runs = []
    for _ in range(2):
        torch.manual_seed(9)  # dropout
        runs.append(model(wave, lengths, context=StepContext(generator=_gen(1), layerdrop_seed=3)).loss)
    assert torch.equal(runs[0], runs[1])


def test_a_few_adam_steps_reduce_the_loss() -> None:
    model = _model(seed=2).train()
    wave, lengths = _batch(0, SHORT)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    losses = []
    for step in range(8):
        torch.manual_seed(step)
        out = model(
            wave, lengths, context=StepContext(step=step, generator=_gen(0))
        )  # the same mask and negatives every step
        optimizer.zero_grad()
        out.mean_loss.backward()
        optimizer.step()
        losses.append(out.mean_loss.item())
    assert losses[-1] < 0.9 * losses[0], losses  # about 3.2 -> 2.3


def test_config_defaults_are_base() -> None:
    cfg = Wav2Vec2Config()
    assert (cfg.masking.mask_prob, cfg.masking.mask_length, cfg.masking.min_masks) == (0.65, 10, 2)
    assert (cfg.quantizer.num_groups, cfg.quantizer.num_entries) == (2, 320)
    assert (cfg.num_negatives, cfg.logit_temp, cfg.final_dim) == (100, 0.1, 256)
    assert (cfg.diversity_weight, cfg.feature_penalty_weight, cfg.feature_grad_mult) == (0.1, 10.0, 0.1)
