"""AudioDataset crops read only their span, and give the items the whole-file path gave."""

from __future__ import annotations

import math

import numpy as np
import pytest
import soundfile as sf
import torch

import ssl_audio.data.dataset as dataset_module
from ssl_audio.audio import SAMPLE_RATE, _resampler, load_audio, loudness, normalize_loudness, resampled_length
from ssl_audio.data.dataset import AudioDataset, BadUtterance, FrameLabels, Item, crop_item, crop_offset
from ssl_audio.data.manifest import load_manifest, write_manifest

CROP = 8000  # samples: half a second
U32 = 2.0**-24


def write(path, data: np.ndarray, rate: int = SAMPLE_RATE, subtype: str = "FLOAT") -> None:
    sf.write(path, data.astype(np.float32), rate, subtype=subtype)


def noise(frames: int, channels: int = 1, seed: int = 0) -> np.ndarray:
    return 0.3 * np.random.default_rng(seed).standard_normal((frames, channels))


def manifest_of(tmp_path, files: dict[str, tuple[np.ndarray, int]]):
    audio = tmp_path / "audio"
    audio.mkdir()
    rows = []
    for name, (data, rate) in files.items():
        write(audio / name, data, rate)
        rows.append((name, resampled_length(data.shape[0], rate)))  # as a header-only scan counts it
    write_manifest(tmp_path / "train.tsv", audio, rows)
    return load_manifest(tmp_path / "train.tsv")


def whole_file_item(dataset: AudioDataset, index: int, epoch: int) -> Item:
    """What the dataset returned before spans: the whole file loaded, then `crop_item` at the same offset."""
    manifest = dataset.manifest
    wave = load_audio(manifest.audio_path(index), target_lufs=dataset.target_lufs)
    labels = tuple(torch.as_tensor(np.asarray(s.per_utterance[index])) for s in dataset.labels)
    item = Item(wave=wave, length=wave.shape[0], index=index, labels=labels, label_hops=dataset.label_hops)
    if item.length <= dataset.max_samples:
        return item
    excess = wave.shape[0] - dataset.max_samples
    offset = crop_offset(excess, seed=dataset.seed, epoch=epoch, index=index, step=dataset.crop_step)
    return crop_item(item, offset=offset, length=dataset.max_samples)


def resampler_bound(rate: int, wave: torch.Tensor) -> float:
    """Two float32 evaluations of one resampled sample (the same K taps and frames, any summation order)
    differ by at most 2 gamma_K max_j ||w_j||_1 max|x|; nothing is resampled at 16 kHz."""
    if rate == SAMPLE_RATE:
        return 0.0
    kernel = _resampler(rate, SAMPLE_RATE).kernel  # (n, 1, K)
    gamma = kernel.shape[-1] * U32 / (1 - kernel.shape[-1] * U32)
    return 2 * gamma * float(kernel.abs().sum(dim=-1).max()) * 1.01 * float(wave.abs().max())


@pytest.mark.parametrize(("rate", "channels"), [(16_000, 1), (16_000, 2), (44_100, 2), (8000, 1)])
def test_crops_equal_the_whole_file_path_with_labels_aligned(tmp_path, rate, channels):
    manifest = manifest_of(
        tmp_path, {"long.wav": (noise(rate * 4 + 77, channels), rate), "short.wav": (noise(6000), SAMPLE_RATE)}
    )
    long_row = manifest.paths.index("long.wav")
    frames50 = [np.arange(n // 320) for n in manifest.num_samples]
    frames100 = [np.arange(n // 160) * 7 for n in manifest.num_samples]
    labels = [FrameLabels(rate=50, per_utterance=frames50), FrameLabels(rate=100, per_utterance=frames100, name="b")]
    dataset = AudioDataset(manifest, max_samples=CROP, random_crop=True, seed=3, labels=labels)
    bound = resampler_bound(rate, load_audio(manifest.audio_path(long_row)))
    offsets = set()
    for epoch in range(6):
        dataset.set_epoch(epoch)
        for index in range(len(manifest)):
            got, expected = dataset[index], whole_file_item(dataset, index, epoch)
            assert (got.index, got.offset, got.length, got.label_hops) == (
                expected.index, expected.offset, expected.length, expected.label_hops
            )  # fmt: skip
            assert all(torch.equal(a, b) for a, b in zip(got.labels, expected.labels, strict=True))
            if rate == SAMPLE_RATE or index != long_row:
                assert torch.equal(got.wave, expected.wave)
            else:
                assert float((got.wave - expected.wave).abs().max()) <= bound
            if index == long_row:
                offsets.add(got.offset)
    assert len(offsets) == 6 and all(offset % 320 == 0 for offset in offsets)  # random, on whole frames


def test_a_crop_reads_only_its_frames(tmp_path, monkeypatch):
    manifest = manifest_of(tmp_path, {"long.wav": (noise(SAMPLE_RATE * 60, 2), SAMPLE_RATE)})
    requested = []
    real_read = sf.SoundFile.read

    def spy(self, frames=-1, *args, **kwargs):
        requested.append(frames)
        return real_read(self, frames, *args, **kwargs)

    monkeypatch.setattr(sf.SoundFile, "read", spy)
    dataset = AudioDataset(manifest, max_samples=CROP, random_crop=True)
    for epoch in range(3):
        dataset.set_epoch(epoch)
        assert dataset[0].length == CROP
    assert requested == [CROP] * 3  # not the 960 000 frames of the file


def test_a_silent_crop_of_a_speaking_file_is_audio_and_a_silent_file_is_bad_once(tmp_path, monkeypatch):
    pause_then_speech = np.concatenate([np.zeros((3 * SAMPLE_RATE, 1)), noise(SAMPLE_RATE)])
    files = {"pause.wav": (pause_then_speech, SAMPLE_RATE), "silent.wav": (np.zeros((4 * SAMPLE_RATE, 1)), 8000)}
    manifest = manifest_of(tmp_path, files)
    measured = []
    real_measure = dataset_module.measure_audio

    def counting(path, **kwargs):
        measured.append(path.name)
        return real_measure(path, **kwargs)

    monkeypatch.setattr(dataset_module, "measure_audio", counting)
    dataset = AudioDataset(manifest, max_samples=CROP, skip_bad=True)  # eval: crops from the start
    pause, silent = manifest.paths.index("pause.wav"), manifest.paths.index("silent.wav")
    for epoch in range(3):
        dataset.set_epoch(epoch)
        item = dataset[pause]
        assert isinstance(item, Item) and torch.equal(item.wave, torch.zeros(CROP))
        bad = dataset[silent]
        assert isinstance(bad, BadUtterance) and (bad.reason, bad.detail) == (
            "silent",
            "peak 0.00e+00 is below -80 dBFS",
        )
    assert sorted(measured) == ["pause.wav", "silent.wav"]  # once per file, then from the worker's cache
    with pytest.raises(Exception, match=r"silent\.wav: silent \(peak 0\.00e\+00 is below -80 dBFS\)"):
        AudioDataset(manifest, max_samples=CROP)[silent]


def loudness_gain_bound(rate: int, wave: torch.Tensor, lufs: float) -> float:
    """Relative gap between the whole-file and the blocked gain. The blocked loudness sees samples within
    `resampler_bound` d of the whole file's: block powers move by at most 2 d / rms + (d / rms)^2 relatively,
    the float64 sums by 2 S^2 u / B (B = 6400 samples per block), each LUFS value is rounded by |lufs| u; a
    gain of 10^(dLU / 20) is then off by ln 10 / 20 dLU."""
    d, rms = resampler_bound(rate, wave), float(wave.square().mean().sqrt())
    relative = 2 * d / rms + (d / rms) ** 2 + 2 * wave.shape[0] ** 2 * 2.0**-53 / 6400
    delta_lu = 10 / math.log(10) * 2 * relative + 2 * abs(lufs) * 2.0**-53
    return math.log(10) / 20 * delta_lu


@pytest.mark.parametrize("rate", [16_000, 48_000])
def test_loudness_normalisation_uses_the_whole_files_loudness(tmp_path, rate):
    quiet_then_loud = np.concatenate([0.4 * noise(rate * 3, seed=1), noise(rate * 3, seed=2)])  # 8 dB: both gated in
    manifest = manifest_of(tmp_path, {"a.wav": (quiet_then_loud, rate)})
    dataset = AudioDataset(manifest, max_samples=CROP, random_crop=True, target_lufs=-30.0)
    plain = load_audio(manifest.audio_path(0))
    gain_bound = loudness_gain_bound(rate, plain, loudness(plain))
    one_sided = 0
    for epoch in range(8):
        dataset.set_epoch(epoch)
        got, expected = dataset[0], whole_file_item(dataset, 0, epoch)
        assert got.offset == expected.offset
        # each sample: the gain's gap times the sample, the resampler's gap times the gain, one rounding
        gain = float(expected.wave.abs().max() / plain[got.offset : got.offset + CROP].abs().max())
        tolerance = gain_bound * float(expected.wave.abs().max()) + gain * resampler_bound(rate, plain)
        tolerance += U32 * float(expected.wave.abs().max())
        assert float((got.wave - expected.wave).abs().max()) <= tolerance
        if got.offset + CROP <= 3 * SAMPLE_RATE or got.offset >= 3 * SAMPLE_RATE:
            # the file's gain, not the crop's own: a crop of one half alone would be scaled 2.4 or 5.6 dB apart
            alone = normalize_loudness(plain[got.offset : got.offset + CROP], target_lufs=-30.0)
            assert abs(float(alone.norm() / got.wave.norm()) - 1) > 0.2
            one_sided += 1
    assert one_sided > 0


def test_nan_in_the_crop_is_bad_and_nan_elsewhere_does_not_touch_it(tmp_path):
    data = noise(4 * SAMPLE_RATE)
    data[3 * SAMPLE_RATE + 5, 0] = np.nan
    root = tmp_path / "audio"
    root.mkdir()
    write(root / "nan.wav", data)
    write_manifest(tmp_path / "t.tsv", root, [("nan.wav", 4 * SAMPLE_RATE)])  # a scan would have skipped it
    manifest = load_manifest(tmp_path / "t.tsv")
    first = AudioDataset(manifest, max_samples=CROP, skip_bad=True)[0]  # eval crop [0, CROP): clean
    assert isinstance(first, Item) and torch.equal(first.wave, torch.from_numpy(data[:CROP, 0].astype(np.float32)))
    whole = AudioDataset(manifest, max_samples=5 * SAMPLE_RATE, skip_bad=True)[0]  # fits: loaded whole, as before
    assert isinstance(whole, BadUtterance) and (whole.reason, whole.detail) == ("non_finite", "1 NaN/Inf samples")
    dataset = AudioDataset(manifest, max_samples=2 * SAMPLE_RATE, random_crop=True, skip_bad=True)
    seen = set()
    for epoch in range(40):
        dataset.set_epoch(epoch)
        item = dataset[0]
        touches = isinstance(item, BadUtterance)
        offset = crop_offset(2 * SAMPLE_RATE, seed=0, epoch=epoch, index=0)
        assert touches == (offset <= 3 * SAMPLE_RATE + 5 < offset + 2 * SAMPLE_RATE)
        if touches:
            assert (item.reason, item.detail) == ("non_finite", "1 NaN/Inf samples")
        seen.add(touches)
    assert seen == {True, False}
    with_loudness = AudioDataset(manifest, max_samples=CROP, skip_bad=True, target_lufs=-23.0)[0]
    assert isinstance(with_loudness, BadUtterance) and with_loudness.reason == "non_finite"  # whole file measured


def test_a_changed_file_is_named_with_both_lengths(tmp_path):
    root = tmp_path / "audio"
    root.mkdir()
    write(root / "a.wav", noise(3 * SAMPLE_RATE))
    write_manifest(tmp_path / "t.tsv", root, [("a.wav", 3 * SAMPLE_RATE + 9)])
    bad = AudioDataset(load_manifest(tmp_path / "t.tsv"), max_samples=CROP, skip_bad=True)[0]
    assert isinstance(bad, BadUtterance) and bad.reason == "changed"
    assert bad.detail == (
        "the header gives 48000 samples but the manifest says 48009; the file changed since the manifest was built"
    )


def test_a_truncated_flac_is_unreadable_where_the_crop_falls_past_the_cut(tmp_path):
    root = tmp_path / "audio"
    root.mkdir()
    write(root / "full.flac", noise(6 * SAMPLE_RATE), subtype="PCM_16")
    encoded = (root / "full.flac").read_bytes()
    (root / "cut.flac").write_bytes(encoded[: len(encoded) // 3])  # the header still says 6 s
    write_manifest(tmp_path / "t.tsv", root, [("cut.flac", 6 * SAMPLE_RATE)])
    manifest = load_manifest(tmp_path / "t.tsv")
    dataset = AudioDataset(manifest, max_samples=CROP, random_crop=True, skip_bad=True)
    reasons = set()
    for epoch in range(20):
        dataset.set_epoch(epoch)
        item = dataset[0]
        offset = crop_offset(6 * SAMPLE_RATE - CROP, seed=0, epoch=epoch, index=0)
        if offset > 3 * SAMPLE_RATE:  # well past the cut at about 2 s
            assert isinstance(item, BadUtterance) and item.reason == "unreadable", (offset, item)
            assert "\n" not in item.detail
        reasons.add(item.reason if isinstance(item, BadUtterance) else "ok")
    assert "unreadable" in reasons
