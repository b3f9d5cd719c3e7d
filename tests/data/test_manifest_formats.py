"""The manifest scanner lists every format load_audio reads, and the CLI help names the same list."""

import math

import numpy as np
import pytest
import soundfile as sf

from ssl_audio.audio import AUDIO_EXTENSIONS, load_audio
from ssl_audio.cli import main
from ssl_audio.data.manifest import scan

# How libsndfile writes each extension: an oracle kept apart from the list under test.
WRITERS = {
    ".wav": ("WAV", "PCM_16"),
    ".flac": ("FLAC", "PCM_16"),
    ".ogg": ("OGG", "VORBIS"),
    ".opus": ("OGG", "OPUS"),
    ".mp3": ("MP3", "MPEG_LAYER_III"),
    ".aiff": ("AIFF", "PCM_16"),
    ".aif": ("AIFF", "PCM_16"),
    ".caf": ("CAF", "PCM_16"),
    ".w64": ("W64", "PCM_16"),
    ".au": ("AU", "PCM_16"),
}


def test_the_list_holds_mp3_and_opus_and_every_entry_is_tested():
    assert {".mp3", ".opus"} <= set(AUDIO_EXTENSIONS)
    assert set(WRITERS) == set(AUDIO_EXTENSIONS)


@pytest.mark.parametrize("ext", sorted(WRITERS))
def test_each_listed_format_is_scanned_with_the_length_load_audio_yields(tmp_path, ext):
    file_format, subtype = WRITERS[ext]
    t = np.arange(12_000) / 24_000  # 0.5 s at 24 kHz, a rate every codec here takes, Opus included
    wave = 0.3 * np.sin(2 * math.pi * 440 * t)
    sf.write(tmp_path / f"clip{ext.upper()}", wave, 24_000, format=file_format, subtype=subtype)
    result = scan([tmp_path])
    assert result.skipped == []
    assert result.kept == [(f"clip{ext.upper()}", 8000)]  # the extension matches in any case
    assert load_audio(tmp_path / f"clip{ext.upper()}").numel() == 8000


def test_cli_help_names_each_extension(capsys):
    with pytest.raises(SystemExit) as info:
        main(["manifest", "--help"])
    assert info.value.code == 0
    help_text = " ".join(capsys.readouterr().out.split())  # argparse wraps lines
    listed = ", ".join(ext.lstrip(".") for ext in AUDIO_EXTENSIONS)
    assert f"for {listed}" in help_text and "mp3" in help_text and "opus" in help_text
