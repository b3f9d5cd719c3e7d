import math
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from ssl_audio.audio import SAMPLE_RATE
from ssl_audio.data.collate import Batch
from ssl_audio.data.manifest import write_manifest
from ssl_audio.data.mixing import KIND_NOISE, KIND_NONE, KIND_SPEECH, Mixer, MixingConfig, NoiseBank, mix_batch
from tests.tool_loader import load_tool


def speech_batch(lengths: list[int], seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Gaussian rows with a different level each (about -40 to 0 dBFS), zero padded to the longest."""
    gen = torch.Generator().manual_seed(seed)
    waves = torch.zeros(len(lengths), max(lengths))
    for row, n in enumerate(lengths):
        level = 10 ** (-2 * torch.rand((), generator=gen))
        waves[row, :n] = level * torch.randn(n, generator=gen)
    return waves, torch.tensor(lengths)


def noise_bank(seed: int = 0) -> NoiseBank:
    gen = torch.Generator().manual_seed(seed)
    return NoiseBank([0.1 * torch.randn(n, generator=gen) for n in (300, 1700, 5000)])


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def random_lengths(batch: int, seed: int, low: int = 400, high: int = 6000) -> list[int]:
    return torch.randint(low, high, (batch,), generator=gen(seed)).tolist()


@pytest.mark.parametrize(
    "kwargs",
    [
        {"prob": 1.5},
        {"noise_prob": -0.1},
        {"speech_ratio_db": (5.0, -5.0)},
        {"noise_snr_db": (0.0, math.inf)},
        {"max_overlap": 0.0},
        {"max_overlap": 1.5},
        {"noise_max_seconds": 0.0},
    ],
)
def test_config_rejects_bad_values(kwargs):
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        MixingConfig(**kwargs)


def test_prob_zero_changes_nothing():
    waves, lengths = speech_batch([4000, 3000, 1200])
    out, info = mix_batch(waves, lengths, MixingConfig(prob=0.0), generator=gen(0), noise=noise_bank())
    assert out is waves and torch.equal(out, speech_batch([4000, 3000, 1200])[0])
    assert not info.mixed.any() and info.kind.tolist() == [KIND_NONE] * 3
    assert info.partner.tolist() == [-1] * 3 and info.length.tolist() == [0] * 3
    assert info.target_db.isnan().all() and info.achieved_db.isnan().all()


def test_noise_needs_a_bank():
    waves, lengths = speech_batch([1000, 1000])
    with pytest.raises(ValueError, match="noise_prob 0.5 needs noise clips"):
        mix_batch(waves, lengths, MixingConfig(prob=0.5), generator=gen(0), noise=None)
    with pytest.raises(ValueError, match="noise_manifest"):
        Mixer(MixingConfig(prob=0.5))
    Mixer(MixingConfig(prob=0.5, noise_prob=0.0))  # speech only: fine without noise
    Mixer(MixingConfig(prob=0.0))  # disabled: fine


def test_bad_shapes_are_named():
    with pytest.raises(ValueError, match=r"\(B, S\).*\(3,\)"):
        mix_batch(torch.zeros(3), torch.tensor([3]), MixingConfig(), generator=gen(0), noise=None)
    with pytest.raises(ValueError, match=r"lengths must be in \[1, 100\]"):
        mix_batch(torch.zeros(2, 100), torch.tensor([100, 101]), MixingConfig(), generator=gen(0), noise=None)


@pytest.mark.parametrize("seed", range(5))
def test_achieved_ratio_equals_target(seed):
    waves, lengths = speech_batch(random_lengths(64, seed), seed)
    cfg = MixingConfig(prob=0.6, noise_prob=0.5)
    out, info = mix_batch(waves, lengths, cfg, generator=gen(seed), noise=noise_bank(seed))
    assert (info.kind == KIND_SPEECH).sum() > 5 and (info.kind == KIND_NOISE).sum() > 5
    mixed = info.mixed
    assert torch.allclose(info.achieved_db[mixed], info.target_db[mixed], atol=0.01, rtol=0)
    # Recompute from the signals: energy = mean square over the primary's valid samples / over the segment.
    for row in torch.nonzero(mixed).squeeze(1).tolist():
        n, start, size = int(lengths[row]), int(info.start[row]), int(info.length[row])
        primary = waves[row, :n].double().pow(2).mean()
        added = (out[row, start : start + size].double() - waves[row, start : start + size].double()).pow(2).mean()
        assert float(10 * torch.log10(primary / added)) == pytest.approx(float(info.target_db[row]), abs=0.01)


def test_target_ratios_cover_the_configured_ranges():
    cfg = MixingConfig(prob=0.8, noise_prob=0.5, speech_ratio_db=(-5.0, 5.0), noise_snr_db=(-5.0, 20.0))
    speech, noise = [], []
    for seed in range(4):
        waves, lengths = speech_batch([800] * 640, seed)
        _, info = mix_batch(waves, lengths, cfg, generator=gen(seed), noise=noise_bank())
        speech.append(info.target_db[info.kind == KIND_SPEECH])
        noise.append(info.target_db[info.kind == KIND_NOISE])
    speech, noise = torch.cat(speech), torch.cat(noise)
    assert len(speech) > 500 and len(noise) > 500  # about 1000 each
    assert -5.0 <= speech.min() < -4.8 and 4.8 < speech.max() <= 5.0
    assert abs(float(speech.mean())) < 0.4  # midpoint 0; std of the mean about 0.1
    assert -5.0 <= noise.min() < -4.5 and 19.5 < noise.max() <= 20.0
    assert abs(float(noise.mean()) - 7.5) < 1.0  # midpoint 7.5; std of the mean about 0.25


@pytest.mark.parametrize("max_overlap", [0.5, 0.2, 1.0])
def test_segments_stay_inside_the_valid_region(max_overlap):
    waves, lengths = speech_batch(random_lengths(48, 7, low=400, high=5000), 7)
    cfg = MixingConfig(prob=0.5, noise_prob=0.5, max_overlap=max_overlap)
    position = torch.arange(waves.shape[1])[None, :]  # (1, S)
    overlap = []
    for seed in range(4):
        out, info = mix_batch(waves, lengths, cfg, generator=gen(seed), noise=noise_bank())
        mixed, start, size = info.mixed, info.start, info.length
        assert (size[mixed] >= 1).all() and (size[mixed] <= (max_overlap * lengths[mixed]).floor().clamp(min=1)).all()
        assert (start >= 0).all() and (start + size <= lengths).all()
        padding = position >= lengths[:, None]  # (B, S)
        assert torch.equal(out[padding], torch.zeros(int(padding.sum())))  # padding stays exactly 0
        segment = (position >= start[:, None]) & (position < (start + size)[:, None])  # (B, S)
        assert torch.equal(out[~segment], waves[~segment])  # only the segment changed; unmixed rows bit-identical
        overlap.append(size[mixed] / lengths[mixed])
        for row in torch.nonzero(info.kind == KIND_SPEECH).squeeze(1).tolist():  # delta = partner's segment, scaled
            partner, source, n = int(info.partner[row]), int(info.source_start[row]), int(size[row])
            assert source >= 0 and source + n <= int(lengths[partner])
            delta = out[row, start[row] : start[row] + n] - waves[row, start[row] : start[row] + n]
            taken = waves[partner, source : source + n]
            assert torch.allclose(delta, float(delta @ taken / (taken @ taken)) * taken, atol=1e-6, rtol=1e-4)
    overlap = torch.cat(overlap)
    assert overlap.max() <= max_overlap and overlap.max() > 0.8 * max_overlap  # U(0, max_overlap * T)
    assert float(overlap.mean()) == pytest.approx(max_overlap / 2, rel=0.25)


def test_a_shorter_partner_is_taken_whole():
    waves, lengths = speech_batch([10_000] * 8 + [1_000] * 8)  # rows 8..15 are shorter than most overlaps
    cfg = MixingConfig(prob=0.5, noise_prob=0.0)
    whole = 0
    for seed in range(10):
        out, info = mix_batch(waves, lengths, cfg, generator=gen(seed), noise=None)
        for row in torch.nonzero(info.kind[:8] == KIND_SPEECH).squeeze(1).tolist():
            partner = int(info.partner[row])
            if partner < 8:
                continue
            assert int(info.length[row]) <= 1_000
            if int(info.length[row]) == 1_000:  # drawn length above the partner's: all of the partner
                assert int(info.source_start[row]) == 0
                start = int(info.start[row])
                delta = out[row, start : start + 1_000] - waves[row, start : start + 1_000]
                expected = waves[partner, :1_000]
                assert torch.allclose(delta / delta.norm(), expected / expected.norm(), atol=1e-5)
                whole += 1
    assert whole >= 5  # about 10 x 8 x 1/2 (speech) x 1/2 (short partner) x 4/5 (drawn > 1000 of up to 5000)


def test_partners_are_other_unmixed_rows():
    speech_rows = 0
    for seed in range(8):
        waves, lengths = speech_batch(random_lengths(32, seed), seed)
        cfg = MixingConfig(prob=0.5, noise_prob=0.3)
        _, info = mix_batch(waves, lengths, cfg, generator=gen(seed), noise=noise_bank())
        for row in torch.nonzero(info.kind == KIND_SPEECH).squeeze(1).tolist():
            partner = int(info.partner[row])
            assert partner != row  # never itself
            assert not info.mixed[partner] and info.kind[partner] == KIND_NONE  # never a row that is mixed
            speech_rows += 1
        assert (info.partner[info.kind != KIND_SPEECH] == -1).all()
    assert speech_rows > 50


def test_when_every_row_mixes_speech_falls_back_to_noise_or_nothing():
    # prob 1: no row is left unmixed to be a partner, so no row is ever mixed with speech.
    waves, lengths = speech_batch([3000, 2000])
    for seed in range(5):
        out, info = mix_batch(waves, lengths, MixingConfig(prob=1.0, noise_prob=0.0), generator=gen(seed), noise=None)
        assert out is waves and not info.mixed.any()
        out, info = mix_batch(
            waves, lengths, MixingConfig(prob=1.0, noise_prob=0.0), generator=gen(seed), noise=noise_bank()
        )
        assert info.kind.tolist() == [KIND_NOISE, KIND_NOISE] and (info.partner == -1).all()
        assert torch.allclose(info.achieved_db, info.target_db, atol=0.01, rtol=0)
    # Batch of 2, prob 0.5, speech only: at most one row is a primary, and its partner is the other one.
    for seed in range(20):
        _, info = mix_batch(waves, lengths, MixingConfig(prob=0.5, noise_prob=0.0), generator=gen(seed), noise=None)
        assert int(info.mixed.sum()) <= 1
        for row in torch.nonzero(info.mixed).squeeze(1).tolist():
            assert int(info.partner[row]) == 1 - row


def test_same_seed_same_mixture():
    waves, lengths = speech_batch(random_lengths(16, 3), 3)
    cfg = MixingConfig(prob=0.5)
    a, info_a = mix_batch(waves, lengths, cfg, generator=gen(11), noise=noise_bank())
    b, info_b = mix_batch(waves, lengths, cfg, generator=gen(11), noise=noise_bank())
    c, _ = mix_batch(waves, lengths, cfg, generator=gen(12), noise=noise_bank())
    assert torch.equal(a, b) and not torch.equal(a, c)
    for name in ("mixed", "kind", "partner", "source_start", "start", "length"):
        assert torch.equal(getattr(info_a, name), getattr(info_b, name))
    assert torch.equal(info_a.target_db.nan_to_num(), info_b.target_db.nan_to_num())


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_waves_with_a_host_generator_match_the_host():
    waves, lengths = speech_batch(random_lengths(16, 5), 5)
    cfg = MixingConfig(prob=0.5)
    host, host_info = mix_batch(waves, lengths, cfg, generator=gen(2), noise=noise_bank())
    bank = NoiseBank([0.1 * torch.randn(n, generator=gen(0)) for n in (300, 1700, 5000)], device="cuda")
    dev, dev_info = mix_batch(waves.cuda(), lengths.cuda(), cfg, generator=gen(2), noise=bank)
    assert torch.equal(host_info.start, dev_info.start) and torch.equal(host_info.partner, dev_info.partner)
    assert torch.allclose(dev.cpu(), host, atol=1e-6)
    cuda_gen = torch.Generator(device="cuda").manual_seed(2)
    _, info = mix_batch(waves.cuda(), lengths.cuda(), cfg, generator=cuda_gen, noise=bank)
    assert torch.allclose(info.achieved_db[info.mixed], info.target_db[info.mixed], atol=0.01, rtol=0)


def test_silent_segment_adds_nothing():
    waves, lengths = speech_batch([2000, 2000])
    waves[1] = 0.0  # a silent partner
    for seed in range(8):
        out, info = mix_batch(waves, lengths, MixingConfig(prob=0.5, noise_prob=0.0), generator=gen(seed), noise=None)
        if info.kind[0] == KIND_SPEECH:
            assert torch.equal(out[0], waves[0]) and math.isinf(float(info.achieved_db[0]))
        assert torch.isfinite(out).all()


def test_noise_bank_loops_short_clips():
    clip = torch.arange(1, 1001, dtype=torch.float32)  # 1..1000: a sample's value names its position
    bank = NoiseBank([clip])
    cut = bank.segments(torch.tensor([3500, 200]), generator=gen(0))
    assert cut.shape == (2, 3500)
    looped = cut[0]
    first = int(looped[0]) - 1
    assert looped.tolist() == [float((first + k) % 1000 + 1) for k in range(3500)]  # clip, clip, ... wrapped
    assert torch.equal(looped[:2500], looped[1000:3500])
    short = cut[1, :200]
    assert torch.equal(short - short[0], torch.arange(200, dtype=torch.float32))  # a clip this long never wraps
    assert int(short[0]) + 199 <= 1000
    assert not cut[1, 200:].any()  # zero past its length


def test_noise_bank_draws_every_clip_and_offset():
    # Clip c holds c * 10_000 + position, so a sample names its clip and where in it it came from.
    sizes = (500, 700, 900)
    bank = NoiseBank([c * 10_000 + torch.arange(n, dtype=torch.float32) for c, n in enumerate(sizes)])
    cut = bank.segments(torch.full((600,), 100), generator=gen(0)).long()  # (600, 100)
    clip, offset = cut[:, 0] // 10_000, cut[:, 0] % 10_000
    assert (torch.bincount(clip, minlength=3) > 150).all()  # about 200 each
    assert torch.equal(cut - cut[:, :1], torch.arange(100).expand(600, 100))  # long enough clips never wrap
    for c, n in enumerate(sizes):  # offsets uniform over [0, n - 100]
        drawn = offset[clip == c]
        assert drawn.min() < 20 and n - 100 - 20 < drawn.max() <= n - 100
        assert float((drawn == n - 100).float().mean()) < 0.05  # no pile-up at the last start


def write_clips(folder: Path, seconds: list[float]) -> Path:
    audio = folder / "audio"
    audio.mkdir(parents=True)
    rows = []
    for i, s in enumerate(seconds):
        n = round(s * SAMPLE_RATE)
        sf.write(audio / f"n{i}.wav", 0.1 * np.random.default_rng(i).standard_normal(n), SAMPLE_RATE, subtype="FLOAT")
        rows.append((f"n{i}.wav", n))
    write_manifest(folder / "train.tsv", audio, rows)
    return folder


def test_noise_bank_from_manifest_caps_the_seconds(tmp_path):
    folder = write_clips(tmp_path, [0.5, 1.0, 1.0])
    bank = NoiseBank.from_manifest(folder, max_seconds=1.25)
    assert len(bank) == 2 and bank.clip_lengths.tolist() == [8000, 12000] and bank.seconds == 1.25
    assert len(NoiseBank.from_manifest(folder / "train.tsv")) == 3


def test_missing_or_empty_noise_manifest_names_the_path(tmp_path):
    with pytest.raises(ValueError, match=f"noise manifest {tmp_path / 'nope.tsv'} does not exist"):
        NoiseBank.from_manifest(tmp_path / "nope.tsv")
    with pytest.raises(ValueError, match=f"{tmp_path / 'train.tsv'} does not exist"):
        NoiseBank.from_manifest(tmp_path)  # a folder without train.tsv
    (tmp_path / "empty.tsv").write_text("")
    with pytest.raises(ValueError, match=f"{tmp_path / 'empty.tsv'}:1: empty manifest"):
        NoiseBank.from_manifest(tmp_path / "empty.tsv")
    (tmp_path / "root_only.tsv").write_text(f"{tmp_path}\n")
    with pytest.raises(ValueError, match=f"{tmp_path / 'root_only.tsv'}: manifest has a root but no rows"):
        NoiseBank.from_manifest(tmp_path / "root_only.tsv")
    with pytest.raises(ValueError, match="no noise clips"):
        NoiseBank([])


def spectral_slope(wave: np.ndarray, low_hz: float = 50.0, high_hz: float = 4000.0) -> float:
    """Slope of log10 power against log10 frequency (Welch: Hann windows of 4096, averaged)."""
    size = 4096
    frames = wave[: len(wave) // size * size].reshape(-1, size) * np.hanning(size)
    power = (np.abs(np.fft.rfft(frames, axis=1)) ** 2).mean(axis=0)
    freqs = np.fft.rfftfreq(size, d=1.0 / SAMPLE_RATE)
    band = (freqs >= low_hz) & (freqs <= high_hz)
    return float(np.polyfit(np.log10(freqs[band]), np.log10(power[band]), 1)[0])


@pytest.mark.parametrize(("colour", "slope"), [("white", 0.0), ("pink", -1.0), ("brown", -2.0)])
def test_noise_colours_have_their_spectral_slope(colour, slope):
    tool = load_tool("make_noise_manifest")
    wave = tool.coloured_noise(2**17, tool.COLOURS[colour], np.random.default_rng(0))
    assert wave.dtype == np.float32 and abs(float(wave.mean())) < 1e-3
    assert 20 * math.log10(float(np.sqrt(np.mean(wave.astype(np.float64) ** 2)))) == pytest.approx(
        tool.CLIP_RMS_DBFS, abs=0.01
    )
    assert spectral_slope(wave) == pytest.approx(slope, abs=0.3)


def test_noise_tool_writes_a_loadable_manifest(tmp_path, capsys):
    tool = load_tool("make_noise_manifest")
    tool.main(["--out", str(tmp_path), "--seconds", "6", "--clips", "3", "--seed", "1"])
    assert "wrote 3 clips of 2.00 s (1 white, 1 pink, 1 brown)" in capsys.readouterr().out
    lines = (tmp_path / "train.tsv").read_text().splitlines()
    assert lines[0] == str((tmp_path / "audio").resolve()) and len(lines) == 4
    assert sorted(line.split("\t")[0] for line in lines[1:]) == ["brown_002.wav", "pink_001.wav", "white_000.wav"]
    bank = NoiseBank.from_manifest(tmp_path)
    assert len(bank) == 3 and bank.seconds == 6.0
    rms_db = 20 * torch.log10(bank.samples.pow(2).mean().sqrt())
    assert float(rms_db) == pytest.approx(tool.CLIP_RMS_DBFS, abs=0.1)  # 16-bit PCM keeps the level
    # The brown clip still falls as 1/f^2 after 16-bit quantisation.
    brown, _ = sf.read(tmp_path / "audio" / "brown_002.wav")
    assert spectral_slope(brown) == pytest.approx(-2.0, abs=0.3)


def test_mixer_replaces_only_the_waves(tmp_path):
    load_tool("make_noise_manifest").write_noise(tmp_path, seconds=3.0, clips=3, seed=0)
    waves, lengths = speech_batch([4000, 3500, 3000, 2500])
    labels = (torch.arange(8).reshape(4, 2),)
    batch = Batch(
        waves=waves, lengths=lengths, indices=torch.tensor([5, 6, 7, 8]), offsets=torch.zeros(4, dtype=torch.long),
        labels=labels,
    )  # fmt: skip
    mixer = Mixer(MixingConfig(prob=0.5, noise_manifest=str(tmp_path)))
    assert mixer.enabled and mixer.noise is not None and len(mixer.noise) == 3
    out = mixer(batch, gen(1))
    info = mixer.last_info
    assert info.mixed.any()
    assert out.lengths is batch.lengths and out.indices is batch.indices and out.labels is batch.labels
    assert out.offsets is batch.offsets and batch.waves is waves  # the input batch is not modified
    assert torch.equal(out.waves[~info.mixed], waves[~info.mixed]) and not torch.equal(out.waves, waves)
    metrics = info.metrics(lengths)
    assert metrics["mix_speech_fraction"] + metrics["mix_noise_fraction"] == float(info.mixed.float().mean())
    assert 0 < metrics["mix_overlap_fraction"] <= 0.5
    assert not Mixer(MixingConfig(prob=0.0)).enabled
