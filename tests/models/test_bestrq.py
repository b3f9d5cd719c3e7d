"""BEST-RQ: the frozen quantiser's targets against numpy, the loss on masked frames only, the saved quantiser."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ssl_audio.features import logmel_features
from ssl_audio.models.bestrq import NO_TARGET, BestRq, BestRqConfig, bestrq_tiny, nearest_code
from ssl_audio.models.encoder import Encoder
from ssl_audio.models.step_context import StepContext
from ssl_audio.models.wav2vec2 import tiny_encoder
from ssl_audio.nn.conv_extractor import ConvFrontendConfig
from ssl_audio.nn.masking import MaskingConfig

QUIET = dict(dropout=0.0, attention_dropout=0.0, projection_dropout=0.0, num_layers=1)


def small(**changes: object) -> BestRqConfig:
    base = dict(encoder=tiny_encoder(**QUIET), codebook_size=32, code_dim=4, feature_grad_mult=1.0,
                masking=MaskingConfig(mask_prob=0.4, mask_length=3))  # fmt: skip
    base.update(changes)
    return BestRqConfig(**base)  # type: ignore[arg-type]


def test_nearest_code_hand_case() -> None:
    # P = identity (2 -> 2); codewords at 0, 90 and 180 degrees (unit rows), and a second codebook at +-45 degrees
    projection = torch.eye(2).repeat(2, 1, 1)  # (G=2, P=2, E=2)
    s = 2**-0.5
    codebooks = torch.tensor([[[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]], [[s, s], [s, -s], [-s, -s]]])  # (2, 3, 2)
    x = torch.tensor([[3.0, 0.5], [0.1, 2.0], [-5.0, 1.0], [1.0, -3.0]])  # scale must not matter
    # x at about 9.5, 87, 169 and -72 degrees. Codebook 0 (0, 90, 180): nearest 0, 90, 180, 0 (-72 is 72 from 0,
    # 162 from 90). Codebook 1 (45, -45, -135): 9.5 -> 45 (35.5 away; -45 is 54.5), 87 -> 45, 169 -> -135
    # (56 away; 45 is 124), -72 -> -45 (27 away).
    codes = nearest_code(x, projection, codebooks)
    assert codes.tolist() == [[0, 0], [1, 0], [2, 2], [0, 1]]


def _numpy_targets(model: BestRq, wave: torch.Tensor, num_frames: int) -> np.ndarray:
    """Independent path: features.logmel_features, numpy standardisation, stacking, projection, L2 nearest."""
    mel = logmel_features(wave).numpy().astype(np.float64)  # (M, 80)
    mel = (mel - mel.mean(axis=0)) / np.sqrt(mel.var(axis=0) + 1e-5)
    stack = 2  # 320-sample encoder hop / 160-sample mel hop
    full = min(len(mel) // stack, num_frames)
    stacked = np.stack([np.concatenate([mel[stack * t + j] for j in range(stack)]) for t in range(full)])  # (T, 160)
    projection = model.quantizer.projection.double().numpy()  # (G, 160, E)
    codebooks = model.quantizer.codebooks.double().numpy()  # (G, V, E)
    out = np.full((num_frames, projection.shape[0]), NO_TARGET)
    for g in range(projection.shape[0]):
        z = stacked @ projection[g]
        z /= np.linalg.norm(z, axis=1, keepdims=True)
        distances = ((z[:, None, :] - codebooks[g][None]) ** 2).sum(axis=-1)  # (T, V)
        out[:full, g] = distances.argmin(axis=1)
    return out


def test_targets_equal_numpy_on_stacked_normalised_logmel() -> None:
    model = BestRq(small(num_codebooks=2)).eval()
    assert model.stack == 2
    assert torch.allclose(model.quantizer.codebooks.norm(dim=-1), torch.ones(2, 32), atol=1e-6)
    rng = np.random.default_rng(0)
    t = np.arange(16000) / 16000
    wave = np.sin(2 * np.pi * (300 + 900 * t) * t) + 0.3 * rng.standard_normal(16000)
    waves = torch.tensor(np.stack([wave, np.roll(wave, 4000)]), dtype=torch.float32)
    lengths = torch.tensor([16000, 9000])
    frames = 49  # conv front-end frames of 16000 samples
    got = model.targets(waves, lengths, frames).numpy()  # (B, T, G)
    for b in range(2):
        expected = _numpy_targets(model, waves[b, : int(lengths[b])], frames)
        # float32 against float64: a near tie may flip; allow one frame in a hundred
        assert (got[b] == expected).mean() >= 0.99, (got[b] != expected).sum()
        assert (got[b] == NO_TARGET).all(axis=1).tolist() == (expected == NO_TARGET).all(axis=1).tolist()
    # 9000 samples: 54 mel frames = 27 stacks for its 27 encoder frames; the rest is padding
    assert (got[1, 27:] == NO_TARGET).all() and (got[1, :27] != NO_TARGET).all()


def test_loss_is_cross_entropy_on_masked_frames_only(monkeypatch: pytest.MonkeyPatch) -> None:
    torch.manual_seed(0)
    model = BestRq(small(feature_penalty_weight=0.0, num_codebooks=2)).eval()
    waves = torch.randn(2, 8000, generator=torch.Generator().manual_seed(1))
    lengths = torch.tensor([8000, 6400])
    frames = 24
    targets = torch.randint(0, 32, (2, frames, 2), generator=torch.Generator().manual_seed(2))
    targets[0, -1] = NO_TARGET  # a frame without a full log-mel stack
    seen: dict[str, torch.Tensor] = {}
    monkeypatch.setattr(model, "targets", lambda wave, lengths, num_frames: seen["targets"])
    model.masker.register_forward_hook(lambda m, i, o: seen.__setitem__("mask", o[1]))
    model.encoder.transformer.register_forward_hook(lambda m, i, o: seen.__setitem__("encoded", o.last))

    def run(t: torch.Tensor):
        seen["targets"] = t
        with torch.no_grad():
            return model(waves, lengths, context=_context(5))

    out = run(targets)
    mask, encoded = seen["mask"], seen["encoded"]
    valid = torch.arange(frames)[None] < torch.tensor([24, 19])[:, None]  # frames of 8000 and 6400 samples
    chosen = mask & valid & (targets[..., 0] != NO_TARGET)
    assert 0 < int(chosen.sum()) < int(valid.sum())
    weight, bias = model.heads.weight.detach().double().numpy(), model.heads.bias.detach().double().numpy()
    logits = (encoded[chosen].double().numpy() @ weight.T + bias).reshape(-1, 2, 32)  # (K, G, V)
    wanted = targets[chosen].numpy()
    log_softmax = logits - np.log(np.exp(logits).sum(axis=-1, keepdims=True))
    expected = -np.take_along_axis(log_softmax, wanted[..., None], axis=-1).sum() / 2  # mean over codebooks
    assert int(out.sample_size) == int(chosen.sum())
    assert abs(float(out.loss) - expected) <= 1e-5 * abs(expected)

    other = targets.clone()
    other[~chosen] = (other[~chosen] + 1) % 32  # change every target that is not predicted
    assert float(run(other).loss) == float(out.loss)
    one = targets.clone()
    b, t = chosen.nonzero()[0].tolist()
    one[b, t, 0] = (one[b, t, 0] + 1) % 32
    assert float(run(one).loss) != float(out.loss)


def _context(seed: int) -> StepContext:
    return StepContext(generator=torch.Generator().manual_seed(seed))


def test_quantizer_is_frozen_seeded_and_saved() -> None:
    torch.manual_seed(0)
    a = BestRq(small())
    torch.manual_seed(1)
    b = BestRq(small())
    c = BestRq(small(quantizer_seed=1))
    assert torch.equal(a.quantizer.projection, b.quantizer.projection)  # the trunk's seed does not matter
    assert not torch.equal(a.quantizer.projection, c.quantizer.projection)
    assert {"quantizer.projection", "quantizer.codebooks"} <= set(a.state_dict())
    assert not any(name.startswith("quantizer.") for name, _ in a.named_parameters())  # never trained
    c.load_state_dict(a.state_dict())  # a checkpoint's quantiser wins over the seed
    assert torch.equal(c.quantizer.codebooks, a.quantizer.codebooks)


def test_tiny_preset_and_bad_stride() -> None:
    cfg = bestrq_tiny()
    assert (cfg.codebook_size, cfg.code_dim, cfg.num_codebooks, cfg.encoder.hop) == (256, 16, 1, 320)
    with pytest.raises(ValueError, match="not a multiple of the log-mel hop"):
        BestRqConfig(encoder=tiny_encoder(frontend=ConvFrontendConfig(layers=((64, 10, 5), (64, 3, 2)))))


def test_targets_follow_the_front_end_hop_and_ignore_autocast(monkeypatch: pytest.MonkeyPatch) -> None:
    waves = torch.randn(1, 16000, generator=torch.Generator().manual_seed(4))
    model = BestRq(small())
    ref = model.targets(waves, None, 49)
    with torch.autocast("cpu", dtype=torch.bfloat16):  # targets are fp32 maths whatever the training precision
        assert torch.equal(model.targets(waves, None, 49), ref)
    monkeypatch.setattr(Encoder, "hop", 640, raising=False)  # a front-end at 25 Hz (the seam's `encoder.hop`)
    slow = BestRq(small())
    assert slow.stack == 4 and slow.quantizer.projection.shape == (1, 4 * 80, 4)
    codes = slow.targets(waves, None, 25)  # 98 mel frames = 24 full stacks of 4
    assert (codes[0, :24] != NO_TARGET).all() and (codes[0, 24:] == NO_TARGET).all()
