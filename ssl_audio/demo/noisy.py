"""Noisy copies of labelled sets and corpora: synthetic white, pink or brown noise added at a chosen SNR.

    make_noisy_copy(tsv, out_dir, snr_range=(0.0, 10.0), seed=0)   # a labelled tsv -> its noisy twin
    make_noisy_twin(corpus_dir, out_dir, ...)                        # a corpus folder -> its noisy twin

SNR is 10 log10(Ps / Pn) with P the mean square over the whole utterance (its silences included), the same
definition as WavLM's mixing (ssl_audio.data.mixing); `mix_at_snr` meets it exactly in floating point.
Each utterance draws its SNR ~ U(snr_range), its colour and its noise from a generator seeded by
(seed, its relative path): a row's noise does not depend on the other rows, their order or their number,
and one file listed in two tables gets the same noise in both.

Copies keep the relative layout: `audio/x/y.wav` of the source becomes `<out_dir>/audio/x/y.wav`, written
as 16 kHz mono PCM-16 wav like the demo corpus (a flac or ogg source keeps its name, with a .wav suffix).
The copied tsv has the source's columns with `snr_db` inserted after `path`: the last column stays the label,
which the classify probe takes by default.
"""

from __future__ import annotations

import hashlib
import io
import os
from pathlib import Path, PurePosixPath

import numpy as np
import soundfile as sf

from ssl_audio.audio import AUDIO_EXTENSIONS, SAMPLE_RATE, load_audio
from ssl_audio.data.probe_table import PATH_COLUMN, SNR_COLUMN, read_table
from ssl_audio.demo.coloured_noise import COLOURS, coloured_noise

INT16_MAX = 32767  # PCM-16 full scale, as the demo corpus writes it
SNR_DECIMALS = 3  # dB written to the tsv


def mix_at_snr(speech: np.ndarray, noise: np.ndarray, snr_db: float) -> np.ndarray:
    """(S,) float64 speech + g * noise, with g such that 10 log10(mean(speech^2) / mean((g noise)^2)) = snr_db.

    If the mixture's peak exceeds 1 (full scale), the whole mixture is scaled down to a peak of 1 so that
    PCM-16 does not clip it; a common scale of speech and noise leaves the SNR unchanged.
    """
    speech, noise = np.asarray(speech, dtype=np.float64), np.asarray(noise, dtype=np.float64)
    if speech.ndim != 1 or speech.shape != noise.shape:
        raise ValueError(f"speech and noise must be equal (S,) arrays, got {speech.shape} and {noise.shape}")
    if not np.isfinite(snr_db):
        raise ValueError(f"snr_db must be finite, got {snr_db}")
    speech_power, noise_power = float(np.mean(speech**2)), float(np.mean(noise**2))
    if speech_power == 0.0 or noise_power == 0.0:
        raise ValueError(f"speech power {speech_power} and noise power {noise_power} must both be > 0")
    gain = np.sqrt(speech_power / (noise_power * 10 ** (snr_db / 10)))
    mixture = speech + gain * noise
    peak = float(np.abs(mixture).max())
    return mixture / peak if peak > 1.0 else mixture


def _row_rng(seed: int, relative_path: str) -> np.random.Generator:
    """A generator of its own per (seed, file): stable across processes (unlike hash()) and row orders."""
    digest = hashlib.sha256(relative_path.encode("utf-8")).digest()
    return np.random.default_rng([seed, int.from_bytes(digest[:8], "little")])


def _check_snr_range(snr_range: tuple[float, float]) -> tuple[float, float]:
    low, high = (float(x) for x in snr_range)
    if not (np.isfinite(low) and np.isfinite(high) and low <= high):
        raise ValueError(f"snr_range must be finite (low, high) with low <= high, got {tuple(snr_range)}")
    return low, high


def _check_relative(path: str, where: str) -> str:
    """A path that stays inside its folder, in '/' form (the key of the row's noise)."""
    posix = PurePosixPath(path.replace(os.sep, "/"))
    if posix.is_absolute() or ".." in posix.parts or Path(path).is_absolute():
        raise ValueError(f"{where}: audio path {path!r} must be relative and inside its folder to be copied")
    return str(posix)


def _target(out_dir: Path, key: str) -> Path:
    return (out_dir / key).with_suffix(".wav")  # written as wav whatever the source's format


def _write_noisy(source: Path, target: Path, key: str, snr_range: tuple[float, float], seed: int) -> float:
    """Write `source` with noise added as `target` (PCM-16 wav); returns the SNR drawn, in dB."""
    if target.resolve() == source.resolve():
        raise ValueError(f"{source}: the noisy copy would overwrite its source; choose another out_dir")
    rng = _row_rng(seed, key)
    snr_db = round(float(rng.uniform(*snr_range)), SNR_DECIMALS)  # the tsv's value is exactly the one used
    colour = list(COLOURS)[int(rng.integers(len(COLOURS)))]
    speech = load_audio(source).numpy()  # (S,) at 16 kHz; unusable files raise AudioError naming them
    mixture = mix_at_snr(speech, coloured_noise(len(speech), COLOURS[colour], rng), snr_db)
    pcm = np.round(mixture * INT16_MAX).astype(np.int16)  # peak <= 1: no clipping
    target.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()  # as the corpus builder: soundfile's close() would fsync every small file
    sf.write(buffer, pcm, SAMPLE_RATE, format="WAV", subtype="PCM_16")
    target.write_bytes(buffer.getvalue())
    return snr_db


def make_noisy_copy(
    tsv: str | Path,
    out_dir: str | Path,
    snr_range: tuple[float, float] = (0.0, 10.0),
    seed: int = 0,
    *,
    table_out: str | Path | None = None,
) -> Path:
    """Noisy copy of a labelled tsv's audio under `out_dir` (same relative paths) and its table; returns the table.

    The table goes to `table_out` (default `out_dir / tsv.name`) with the source's columns and `snr_db` after
    `path`; its paths are relative to its own folder. Every audio file is checked before anything is written: a
    missing one raises ValueError naming the tsv line and the file.
    """
    snr_range = _check_snr_range(snr_range)
    table = read_table(tsv)  # checks the header, the field counts and that every audio file exists
    if SNR_COLUMN in table.columns:
        raise ValueError(f"{table.source}:1: already has a {SNR_COLUMN!r} column; copy the clean table instead")
    out_dir = Path(out_dir)
    table_out = Path(table_out) if table_out is not None else out_dir / table.source.name
    if table_out.resolve() == table.source.resolve():
        raise ValueError(f"{table.source}: the noisy table would overwrite its source; choose another table_out")
    keys = [_check_relative(path, table.where(i)) for i, path in enumerate(table.paths)]
    path_column = table.columns.index(PATH_COLUMN)
    rows = []
    for i, key in enumerate(keys):
        target = _target(out_dir, key)
        snr_db = _write_noisy(table.audio_path(i), target, key, snr_range, seed)
        cells = list(table.cells[i])
        cells[path_column] = Path(os.path.relpath(target, table_out.parent)).as_posix()
        cells.insert(path_column + 1, f"{snr_db:.{SNR_DECIMALS}f}")
        rows.append("\t".join(cells))
    columns = list(table.columns)
    columns.insert(path_column + 1, SNR_COLUMN)
    table_out.parent.mkdir(parents=True, exist_ok=True)
    table_out.write_text("\t".join(columns) + "\n" + "\n".join(rows) + "\n", encoding="utf-8")
    return table_out


def make_noisy_twin(
    corpus_dir: str | Path,
    out_dir: str | Path,
    *,
    tables: tuple[str, ...] = ("keywords_train.tsv", "keywords_test.tsv"),
    audio_dirs: tuple[str, ...] = ("audio/unlabeled",),
    snr_range: tuple[float, float] = (0.0, 10.0),
    seed: int = 0,
) -> Path:
    """A corpus folder's noisy twin: every audio file under `audio_dirs` and every table in `tables` (with its
    audio), at the same relative paths under `out_dir`. The same voices and words at a lower SNR: pretrain
    on `<out_dir>/audio/unlabeled`, probe on `<out_dir>/keywords_*.tsv`. Returns `out_dir`."""
    corpus_dir, out_dir = Path(corpus_dir), Path(out_dir)
    snr_range = _check_snr_range(snr_range)
    for name in audio_dirs:
        folder = corpus_dir / name
        if not folder.is_dir():
            raise ValueError(f"{folder}: no such audio folder in {corpus_dir}")
        files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in AUDIO_EXTENSIONS and p.is_file())
        if not files:
            raise ValueError(f"{folder}: holds no audio files ({', '.join(AUDIO_EXTENSIONS)})")
        for path in files:
            key = path.relative_to(corpus_dir).as_posix()  # the key a table at the corpus root would give
            _write_noisy(path, _target(out_dir, key), key, snr_range, seed)
    for name in tables:
        make_noisy_copy(corpus_dir / name, out_dir, snr_range, seed)
    return out_dir
