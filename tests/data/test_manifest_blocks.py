"""`inspect_file`'s full check decodes in blocks and reaches `load_audio`'s verdicts and lengths."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf

import ssl_audio.audio_spans as audio_module
from ssl_audio.audio import SAMPLE_RATE, AudioError, check_samples, load_audio, read_audio
from ssl_audio.data.manifest import inspect_file

BLOCK = 4000  # samples at 16 kHz: files of a few seconds span many blocks


def noise(frames: int, channels: int = 1, seed: int = 0) -> np.ndarray:
    return (0.3 * np.random.default_rng(seed).standard_normal((frames, channels))).astype(np.float32)


def late(data: np.ndarray, index: int, value: float) -> np.ndarray:
    data = data.copy()
    data[index] = value
    return data


def write_cases(folder) -> list:
    """Files whose verdict lies in a late block, or at a block's seam, plus the ones decided up front."""
    cases = {
        "good16.wav": (noise(50_000), SAMPLE_RATE, "FLOAT"),
        "good44_stereo.wav": (noise(130_001, 2), 44_100, "PCM_16"),
        "good8.flac": (noise(30_000), 8000, "PCM_16"),
        "nan_late.wav": (late(noise(60_000), 57_321, np.nan), SAMPLE_RATE, "FLOAT"),
        "inf_late48.wav": (late(noise(150_000, 2), (149_000, 1), np.inf), 48_000, "FLOAT"),
        "silent.wav": (np.zeros((70_000, 1), np.float32), SAMPLE_RATE, "PCM_16"),
        "silent44.wav": (np.zeros((90_000, 2), np.float32), 44_100, "PCM_16"),
        "click_last_block.wav": (late(np.zeros((70_000, 1), np.float32), 69_999, 0.5), SAMPLE_RATE, "PCM_16"),
        "click_at_seam.wav": (late(np.zeros((70_000, 1), np.float32), 4 * BLOCK, 0.5), SAMPLE_RATE, "PCM_16"),
        "too_short.wav": (noise(399), SAMPLE_RATE, "FLOAT"),
        "too_short8.wav": (noise(150), 8000, "PCM_16"),
    }
    paths = []
    for name, (data, rate, subtype) in cases.items():
        sf.write(folder / name, data, rate, subtype=subtype)
        paths.append(folder / name)
    (folder / "empty.wav").write_bytes(b"")
    (folder / "garbage.wav").write_bytes(b"RIFF not really a wave file at all")
    encoded = (folder / "good8.flac").read_bytes()
    (folder / "cut.flac").write_bytes(encoded[: len(encoded) // 2])
    return [*paths, folder / "empty.wav", folder / "garbage.wav", folder / "cut.flac"]


def outcome(call, path) -> tuple:
    try:
        return ("ok", call(path))
    except AudioError as err:
        return (err.reason, err.detail)


def old_float_check(path) -> int:
    """Before blocks: the whole file read, then checked at its own rate."""
    data, _ = read_audio(path)
    check_samples(path, data.T)
    return data.shape[0]


def test_full_check_verdicts_and_lengths_are_load_audios(tmp_path, monkeypatch):
    monkeypatch.setattr(audio_module, "BLOCK_SAMPLES", BLOCK)
    for path in write_cases(tmp_path):
        expected = outcome(lambda p: int(load_audio(p).shape[0]), path)
        assert outcome(lambda p: inspect_file(p, full_check=True), path) == expected, path.name


def test_the_float_nan_check_keeps_its_verdicts(tmp_path, monkeypatch):
    monkeypatch.setattr(audio_module, "BLOCK_SAMPLES", BLOCK)
    floats = [p for p in write_cases(tmp_path) if p.suffix == ".wav" and p.stat().st_size > 100]
    floats = [p for p in floats if sf.info(p).subtype == "FLOAT"]
    assert [p.name for p in floats] == ["good16.wav", "nan_late.wav", "inf_late48.wav", "too_short.wav"]
    for path in floats:
        got = outcome(lambda p: inspect_file(p), path)
        expected = outcome(old_float_check, path)
        assert got[0] == expected[0] and (got[0] == "ok" or got == expected), (path.name, got, expected)


def test_the_full_check_never_decodes_more_than_a_block(tmp_path, monkeypatch):
    monkeypatch.setattr(audio_module, "BLOCK_SAMPLES", BLOCK)
    sf.write(tmp_path / "long44.wav", noise(441_000, 2), 44_100, subtype="PCM_16")  # 10 s
    sf.write(tmp_path / "long16.wav", noise(160_000), SAMPLE_RATE, subtype="FLOAT")
    requested = []
    real_read = sf.SoundFile.read

    def spy(self, frames=-1, *args, **kwargs):
        requested.append(frames)
        return real_read(self, frames, *args, **kwargs)

    monkeypatch.setattr(sf.SoundFile, "read", spy)
    assert inspect_file(tmp_path / "long44.wav", full_check=True) == 160_000
    assert 0 < max(requested) <= 4000 // 160 * 441 and len(requested) > 40
    requested.clear()
    assert inspect_file(tmp_path / "long16.wav") == 160_000  # FLOAT: the NaN check, also in blocks
    assert max(requested) == BLOCK and len(requested) == 160_000 // BLOCK + 1


@pytest.mark.slow  # starts `ssl-audio`, which imports torch (about 4 s), on two 70 s files
def test_cli_full_check_finds_nan_and_sound_past_the_first_block(tmp_path):
    audio = tmp_path / "audio"
    audio.mkdir()
    seconds = 70  # past the first 60 s block
    sf.write(audio / "nan.wav", late(noise(seconds * SAMPLE_RATE), 65 * SAMPLE_RATE, np.nan), SAMPLE_RATE, "FLOAT")
    clicked = late(np.zeros((seconds * SAMPLE_RATE, 1), np.float32), 66 * SAMPLE_RATE, 0.5)
    sf.write(audio / "click.wav", clicked, SAMPLE_RATE, subtype="PCM_16")
    sf.write(audio / "silent.wav", np.zeros(seconds * SAMPLE_RATE, np.float32), SAMPLE_RATE, subtype="PCM_16")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    command = [sys.executable, "-m", "ssl_audio.cli", "manifest", str(audio), "--out", str(tmp_path / "m")]
    done = subprocess.run([*command, "--full-check", "--valid-fraction", "0"], capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr
    assert "1 train files" in done.stdout and "non_finite: 1, silent: 1" in done.stdout
    assert (tmp_path / "m" / "train.tsv").read_text().splitlines()[1:] == [f"click.wav\t{seconds * SAMPLE_RATE}"]
    skipped = (tmp_path / "m" / "skipped.tsv").read_text().splitlines()[1:]
    assert skipped == [
        f"{audio / 'nan.wav'}\tnon_finite\t1 NaN/Inf samples",
        f"{audio / 'silent.wav'}\tsilent\tpeak 0.00e+00 is below -80 dBFS",
    ]
