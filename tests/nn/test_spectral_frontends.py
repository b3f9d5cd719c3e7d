"""The log-mel and patch front-ends: framing contract, padding, patch order and frame view, patch masking."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from ssl_audio.data.alignments import Alignment, frame_labels
from ssl_audio.models.chunked import frames_in_chunks
from ssl_audio.nn.frontends import build_frontend
from ssl_audio.nn.logmel_frontend import LogMelFrontendConfig
from ssl_audio.nn.patch_frontend import PatchFrontend, PatchFrontendConfig
from ssl_audio.nn.patch_masking import mask_patches

# Kaldi features without normalisation: a frame's value depends on its own samples only (Whisper's clamp and
# the utterance norm read the whole utterance, by design).
FRONTENDS = {
    "whisper-stem": (LogMelFrontendConfig(features="kaldi", stem="whisper", width=8), 320, 1040),
    "conv2d-stem": (LogMelFrontendConfig(features="kaldi", stem="conv2d", width=32, num_mels=16), 640, 1360),
    "patch": (PatchFrontendConfig(num_mels=32, dim=8, normalize="none"), 2560, 2800),
    # 16 bins x 4 mel frames: hop 4 x 160, window 400 + 3 x 160
    "patch-16x4": (PatchFrontendConfig(num_mels=32, patch_time=4, dim=8, normalize="none"), 640, 880),
}


@pytest.mark.parametrize("name", list(FRONTENDS))
def test_framing_contract_hop_window_and_lengths(name: str) -> None:
    cfg, hop, window = FRONTENDS[name]
    torch.manual_seed(0)
    frontend = build_frontend(cfg).eval()
    # hop: 160 x the strides; window: 400 + 160 (receptive field in mel frames - 1)
    assert (cfg.hop, cfg.window) == (frontend.hop, frontend.window) == (hop, window)
    assert frontend.min_samples == window
    samples = window + 2 * hop + 77
    frames = 3  # floor((S - window) / hop) + 1
    wave = torch.randn(1, samples)
    with torch.no_grad():
        out, lengths = frontend(wave, torch.tensor([samples]))
        assert out.shape == (1, frames, cfg.out_channels) and lengths.tolist() == [frames]
        for s in (window - 1, window, window + hop - 1, window + hop, samples):
            assert frontend.output_lengths(torch.tensor([s])).item() == max((s - window) // hop + 1, 0)
        # frame 1 covers samples [hop, hop + window): changing a sample outside leaves it, inside changes it. The
        # window's last sample has povey weight 0 and reaches the frame only through the frame's DC removal, a change
        # of poke / 400 per sample: a poke of 1 moved the conv2d stem's output by about 1e-6, at rounding level on
        # some CPU kernels, so poke by 1000 (outside samples never enter the frame: exactly no change at any size).
        for position, inside in ((hop - 1, False), (hop, True), (hop + window - 1, True), (hop + window, False)):
            poked = wave.clone()
            poked[0, position] += 1000.0
            changed = not torch.allclose(frontend(poked)[0][0, 1], out[0, 1], atol=1e-6, rtol=0)
            assert changed == inside, (position, inside)
    with pytest.raises(ValueError, match=f"fewer than one frame \\({window}\\)"):
        frontend(torch.randn(1, window - 1))


PADDED = [cfg for cfg, _, _ in FRONTENDS.values()] + [
    LogMelFrontendConfig(features="whisper", stem="conv2d", width=8, num_mels=16, normalize="utterance"),
    LogMelFrontendConfig(features="whisper", width=8),  # the max - 8 clamp over valid frames only
    PatchFrontendConfig(num_mels=32, dim=8),  # the utterance norm over valid frames only
]


@pytest.mark.parametrize("cfg", PADDED, ids=lambda c: f"{c.kind}-{c.features}-{c.normalize}")
def test_padded_rows_give_the_frames_of_the_row_alone(cfg: object) -> None:
    torch.manual_seed(1)
    frontend = build_frontend(cfg).eval()
    short, long = 6000, 9000
    batch = torch.randn(2, long)
    batch[0, short:] = 0.0
    with torch.no_grad():
        alone, alone_len = frontend(batch[:1, :short], torch.tensor([short]))
        padded, lengths = frontend(batch, torch.tensor([short, long]))
    assert lengths[0] == alone_len[0] == alone.shape[1]
    torch.testing.assert_close(padded[0, : alone.shape[1]], alone[0], atol=1e-5, rtol=0)


def test_patch_tokens_time_major_and_the_frame_view_by_hand() -> None:
    torch.manual_seed(2)
    cfg = PatchFrontendConfig(num_mels=32, patch=16, dim=4)  # F = 2 bands
    frontend = PatchFrontend(cfg).eval()
    wave = torch.randn(1, 2800 + 2 * 2560 + 500)  # 3 time steps
    with torch.no_grad():
        mel = frontend.mel(wave, None)[0]  # (M, 32)
        tokens, _ = frontend.tokens(wave)
        frames, _ = frontend(wave)
    assert tokens.shape == (1, 3, 2, 4) and frames.shape == (1, 3, 4)
    weight, bias = frontend.embed.weight[:, 0], frontend.embed.bias  # (C, 16 time, 16 mel), (C,)
    sequence = tokens.flatten(1, 2)[0]  # time-major: token t * F + f
    for t in range(3):
        for f in range(2):
            patch = mel[16 * t : 16 * (t + 1), 16 * f : 16 * (f + 1)]  # mel frames x bins of step t, band f
            expected = (weight * patch).sum(dim=(1, 2)) + bias + frontend.band_embedding[f]
            torch.testing.assert_close(sequence[t * 2 + f], expected, atol=1e-4, rtol=1e-5)
        view = (nn.functional.gelu(sequence[2 * t]) + nn.functional.gelu(sequence[2 * t + 1])) / 2
        torch.testing.assert_close(frames[0, t], view, atol=1e-6, rtol=1e-6)


def test_rectangular_patches_cover_patch_time_frames_by_patch_bins_by_hand() -> None:
    torch.manual_seed(3)
    frontend = PatchFrontend(PatchFrontendConfig(num_mels=32, patch=16, patch_time=4, dim=4)).eval()
    wave = torch.randn(1, 880 + 4 * 640)  # 5 time steps of 4 mel frames
    with torch.no_grad():
        mel = frontend.mel(wave, None)[0]
        tokens, _ = frontend.tokens(wave)
    assert frontend.embed.weight.shape == (4, 1, 4, 16) and tokens.shape == (1, 5, 2, 4)
    weight, bias = frontend.embed.weight[:, 0], frontend.embed.bias
    for t in range(5):
        for f in range(2):
            patch = mel[4 * t : 4 * (t + 1), 16 * f : 16 * (f + 1)]
            expected = (weight * patch).sum(dim=(1, 2)) + bias + frontend.band_embedding[f]
            torch.testing.assert_close(tokens[0, t, f], expected, atol=1e-4, rtol=1e-5)


def test_random_patch_masking_masks_exactly_the_ratio_of_valid_tokens() -> None:
    steps = torch.tensor([10, 7, 0])
    g = torch.Generator().manual_seed(0)
    mask = mask_patches(steps, 10, 8, ratio=0.75, mode="random", generator=g)
    assert mask.shape == (3, 10, 8)
    assert mask.flatten(1).sum(1).tolist() == [60, 42, 0]  # round(0.75 * steps * 8)
    assert not mask[1, 7:].any()
    again = mask_patches(steps, 10, 8, ratio=0.75, mode="random", generator=torch.Generator().manual_seed(0))
    assert torch.equal(mask, again)


def test_time_patch_masking_masks_whole_steps_in_spans() -> None:
    steps = torch.tensor([20, 9])
    mask = mask_patches(steps, 20, 4, ratio=0.5, mode="time", span=3, generator=torch.Generator().manual_seed(3))
    columns = mask[..., 0]
    assert torch.equal(mask, columns[..., None].expand_as(mask))  # every band of a masked step
    # round(0.5 * 20 / 3) = 3 spans of 3; round(0.5 * 9 / 3) = 2 spans (1.5 rounds to 2)
    assert columns.sum(1).tolist() == [9, 6]
    assert not columns[1, 9:].any()
    for row in columns:  # runs of masked steps come in multiples of the span
        runs, count = [], 0
        for value in row.tolist() + [False]:
            if value:
                count += 1
            elif count:
                runs.append(count)
                count = 0
        assert all(r % 3 == 0 for r in runs), runs


@pytest.mark.parametrize("name", list(FRONTENDS))
def test_chunked_stitching_gives_the_whole_utterances_frames(name: str) -> None:
    # A frame depends on its own samples only (these front-ends), so frames computed chunk by chunk and stitched
    # must equal the frames of the whole wave: the framing contract is what chunks align on.
    cfg, hop, window = FRONTENDS[name]
    torch.manual_seed(3)
    frontend = build_frontend(cfg).eval()
    wave = torch.randn(window + 40 * hop + 123)

    def frames(segment: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return frontend(segment[None])[0][0]

    whole = frames(wave)
    stitched = frames_in_chunks(frames, wave, window=window, hop=hop, chunk_samples=7 * hop, context_samples=2 * hop)
    assert stitched.shape == whole.shape == (41, cfg.out_channels)
    torch.testing.assert_close(stitched, whole, atol=1e-5, rtol=0)


def test_frame_labels_of_the_patch_frames_by_hand() -> None:
    # An alignment probed at the patch front-end's frames: the phone at each frame's centre t * 2560 + 1400.
    cfg = PatchFrontendConfig()
    alignment = Alignment(path="x.wav", num_samples=8000, phones=("sil", "a", "b"), starts=(0, 1500, 4000),
                          ends=(1500, 4000, 8000))  # fmt: skip
    labels = frame_labels(alignment, 16_000 / cfg.hop, cfg.window)
    assert labels == ["sil", "a", "b"]  # centres 1400, 3960, 6520; (8000 - 2800) // 2560 + 1 = 3 frames
