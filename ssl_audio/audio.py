"""Audio in: read with soundfile, downmix, resample, normalise loudness, trim silence, validate.

Every function returns mono float32 tensors of shape (S,) (S samples). Bad files raise `AudioError`,
which names the file and a short reason key that manifests count.
Reading a span of a file, or a whole file in blocks: `ssl_audio.audio_spans`.
"""

from __future__ import annotations

import functools
import itertools
import math
from collections.abc import Callable
from pathlib import Path

import soundfile as sf
import torch
import torchaudio.transforms as AT

from ssl_audio.audio_formats import AUDIO_EXTENSIONS  # noqa: F401  (re-exported: the one list of extensions)
from ssl_audio.loudness import integrated_loudness

SAMPLE_RATE = 16_000  # Hz: the rate every model in ssl_audio consumes
# The shortest clip the data pipeline keeps: 25 ms, one analysis window (and the standard conv stack's receptive
# field). A model whose front-end needs more (`encoder.min_samples`) is checked against the data at start-up.
MIN_SAMPLES = 400
SILENT_PEAK_DB = -80.0  # dBFS: a file whose peak stays below this is treated as all silent
_READ_ERRORS = (sf.LibsndfileError, RuntimeError, TypeError, ValueError)


class AudioError(ValueError):
    """A file that cannot be used as training audio. `reason` is a short key, `detail` the specifics."""

    def __init__(self, path: str | Path, reason: str, detail: str = "") -> None:
        self.path = str(path)
        self.reason = reason
        self.detail = detail
        super().__init__(f"{path}: {reason}" + (f" ({detail})" if detail else ""))

    def __reduce__(self) -> tuple[type[AudioError], tuple[str, str, str]]:
        # Exceptions unpickle as cls(*args), and args holds only the message: rebuild from the parts instead,
        # so an AudioError survives a process pool or a DataLoader worker.
        return type(self), (self.path, self.reason, self.detail)


def resampled_length(num_samples: int, orig_rate: int, new_rate: int = SAMPLE_RATE) -> int:
    """Length after resampling, exactly as torchaudio's resampler produces it: ceil(S * new / orig)."""
    return -(-num_samples * new_rate // orig_rate)


@functools.lru_cache(maxsize=32)
def _resampler(orig_rate: int, new_rate: int) -> AT.Resample:
    # The sinc kernel depends only on the rate pair; building it costs more than applying it.
    return AT.Resample(orig_rate, new_rate)


def resample(wave: torch.Tensor, orig_rate: int, new_rate: int = SAMPLE_RATE) -> torch.Tensor:
    """Resample (..., S) float audio with torchaudio's windowed-sinc resampler (cached per rate pair)."""
    if orig_rate == new_rate:
        return wave
    return _resampler(orig_rate, new_rate)(wave)


def check_not_empty_file(path: str | Path) -> None:
    """A zero-byte file is 'empty', not 'unreadable': say so, since it usually means an interrupted copy."""
    try:
        size = Path(path).stat().st_size
    except OSError as err:
        raise AudioError(path, "unreadable", err.strerror or str(err)) from None
    if size == 0:
        raise AudioError(path, "empty", "0 bytes")


def read_audio(path: str | Path) -> tuple[torch.Tensor, int]:
    """Read a file as (S, C) float32 and its native rate; unreadable or empty files raise AudioError."""
    check_not_empty_file(path)
    try:
        data, rate = sf.read(str(path), dtype="float32", always_2d=True)
    except _READ_ERRORS as err:
        raise AudioError(path, "unreadable", str(err).strip()) from None
    if data.shape[0] == 0:
        raise AudioError(path, "empty", "no samples")
    return torch.from_numpy(data), rate


def check_samples(path: str | Path, wave: torch.Tensor) -> None:
    """Raise AudioError unless `wave` holds finite, not-all-silent audio of at least MIN_SAMPLES at 16 kHz."""
    bad = 0 if torch.isfinite(wave).all() else int((~torch.isfinite(wave)).sum())
    check_counts(path, non_finite=bad, length=wave.shape[-1], peak=lambda: float(wave.abs().max()))


def check_counts(path: str | Path, *, non_finite: int, length: int, peak: float | Callable[[], float]) -> None:
    """`check_samples` on what was counted of a wave (`peak` may be a callable, evaluated only when needed)."""
    if non_finite:
        raise AudioError(path, "non_finite", f"{non_finite} NaN/Inf samples")
    if length < MIN_SAMPLES:
        raise AudioError(path, "too_short", f"{length} samples at 16 kHz, fewer than {MIN_SAMPLES}")
    peak = peak() if callable(peak) else peak
    if is_silent(peak):
        raise AudioError(path, "silent", f"peak {peak:.2e} is below {SILENT_PEAK_DB:.0f} dBFS")


def is_silent(peak: float) -> bool:
    return peak <= 10 ** (SILENT_PEAK_DB / 20)


def load_audio(
    path: str | Path,
    sample_rate: int = SAMPLE_RATE,
    *,
    target_lufs: float | None = None,
    trim: bool = False,
    validate: bool = True,
) -> torch.Tensor:
    """Load `path` as mono float32 (S,) at `sample_rate`.

    Channels are averaged. `target_lufs` normalises loudness (peak-safe); `trim` removes leading,
    trailing and long internal silence. With `validate`, NaN/Inf, all-silent and too-short audio raise.
    """
    data, rate = read_audio(path)
    if validate and not torch.isfinite(data).all():
        check_samples(path, data.T)  # names the NaN count before the downmix spreads it
    wave = resample(data.mean(dim=1), rate, sample_rate)  # (S,)
    if validate:
        check_samples(path, wave)
    if trim:
        wave = trim_silence(wave, sample_rate)
        if validate and wave.shape[-1] < MIN_SAMPLES:
            raise AudioError(path, "too_short", f"{wave.shape[-1]} samples left after trimming silence")
    if target_lufs is not None:
        wave = normalize_loudness(wave, sample_rate, target_lufs)
    return wave.contiguous()


def loudness(wave: torch.Tensor, sample_rate: int = SAMPLE_RATE) -> float:
    """Integrated loudness in LUFS (ITU-R BS.1770-4, see ssl_audio/loudness.py); -inf for silence.

    A clip shorter than one 400 ms gating block is measured as one block over its whole length.
    """
    return integrated_loudness(wave, sample_rate)


def normalize_loudness(
    wave: torch.Tensor, sample_rate: int = SAMPLE_RATE, target_lufs: float = -23.0, max_peak: float = 0.99
) -> torch.Tensor:
    """Scale to `target_lufs`, but never so far that the peak exceeds `max_peak` (no clipping)."""
    measured = loudness(wave, sample_rate)
    if not math.isfinite(measured):  # silence: nothing to scale
        return wave
    return wave * loudness_gain(measured, float(wave.abs().max()), target_lufs, max_peak)


def loudness_gain(measured: float, peak: float, target_lufs: float, max_peak: float = 0.99) -> float:
    """The factor `normalize_loudness` scales by, from a wave's loudness (LUFS) and peak; 1 for silence."""
    if not math.isfinite(measured):
        return 1.0
    gain = 10 ** ((target_lufs - measured) / 20)
    if peak * gain > max_peak:
        gain = max_peak / peak
    return gain


def trim_silence(
    wave: torch.Tensor,
    sample_rate: int = SAMPLE_RATE,
    *,
    threshold_db: float = -40.0,
    frame_seconds: float = 0.025,
    hop_seconds: float = 0.010,
    margin_seconds: float = 0.05,
    max_pause_seconds: float = 0.5,
) -> torch.Tensor:
    """Energy-based trimming: drop leading/trailing silence (keeping `margin_seconds`) and shorten
    internal pauses longer than `max_pause_seconds` to that length (margins included).

    A frame is silent when its RMS is `threshold_db` or more below the loudest frame.
    """
    frame, hop = round(frame_seconds * sample_rate), round(hop_seconds * sample_rate)
    if wave.shape[-1] < frame:
        return wave
    # Frame i is centred on the hop block [i*hop, (i+1)*hop) and decides whether that block is voiced.
    side = (frame - hop) // 2
    padded = torch.nn.functional.pad(wave, (side, frame))
    num_blocks = -(-wave.shape[-1] // hop)
    frames = padded.unfold(0, frame, hop)[:num_blocks]  # (F, frame)
    energy_db = 10 * torch.log10(frames.pow(2).mean(dim=1) + 1e-12)  # (F,)
    voiced = energy_db > energy_db.max() + threshold_db  # (F,)
    if not voiced.any():
        return wave
    # A sample is kept when it lies in a voiced block widened by the margin on both sides.
    margin = round(margin_seconds * sample_rate)
    starts = torch.nonzero(voiced).squeeze(1) * hop
    keep = torch.zeros(wave.shape[-1] + 1, dtype=torch.int32)
    keep.index_add_(0, (starts - margin).clamp(min=0), torch.ones_like(starts, dtype=torch.int32))
    ends = (starts + hop + margin).clamp(max=wave.shape[-1])
    keep.index_add_(0, ends, -torch.ones_like(ends, dtype=torch.int32))
    keep = keep.cumsum(0)[:-1] > 0  # (S,)
    # Internal pauses: a pause (its two margins included) keeps at most max_pause samples.
    max_pause = max(round(max_pause_seconds * sample_rate) - 2 * margin, 0)
    changes = torch.nonzero(keep[1:] != keep[:-1]).squeeze(1) + 1
    bounds = [0, *changes.tolist(), wave.shape[-1]]
    pieces = []
    for start, end in itertools.pairwise(bounds):
        if keep[start]:
            pieces.append(wave[start:end])
        elif start > 0 and end < wave.shape[-1]:  # an internal pause: keep its two ends
            half = min(end - start, max_pause) // 2
            pieces.append(wave[start : start + half])
            pieces.append(wave[end - (min(end - start, max_pause) - half) : end])
    return torch.cat(pieces)
