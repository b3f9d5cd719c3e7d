"""Audio by spans: a training crop at the cost of the crop, a whole-file check at the memory of one block.

`AudioSource` reads a span of a file (a training crop) at the cost of the span, not of the file: it seeks to
the source frames the span needs, plus the resampler's filter length on each side, so the span equals the
same span of `load_audio`'s whole-file wave (bit for bit at 16 kHz). `measure_audio` walks a whole file in
blocks (`BLOCK_SAMPLES`) for `load_audio`'s verdicts and loudness with memory bounded by one block.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import soundfile as sf
import torch

from ssl_audio.audio import (
    _READ_ERRORS,
    SAMPLE_RATE,
    AudioError,
    _resampler,
    check_counts,
    check_not_empty_file,
    check_samples,
    resample,
    resampled_length,
)
from ssl_audio.loudness import BLOCK_STEPS, BLOCKS_PER_SECOND, gated_loudness, k_weighted

BLOCK_SAMPLES = 60 * SAMPLE_RATE  # blocked whole-file passes decode about this much audio at a time
# K-weighting restarts this many samples before each block: its slowest poles (radius 0.985 at 16 kHz) leave
# n 0.985^n < 1e-90 of the state behind after one second, far below float64 resolution.
LOUDNESS_WARMUP = SAMPLE_RATE


def _groups(orig_rate: int, new_rate: int) -> tuple[int, int, int]:
    """(source frames per group, output samples per group, margin groups) of torchaudio's polyphase resampler.

    Output group g (samples [g n, (g + 1) n)) is computed from source frames [g o - w, (g + 1) o + w) alone,
    w the filter's half-length; `margin` whole groups cover w.
    """
    resampler = _resampler(orig_rate, new_rate)
    o, n = orig_rate // resampler.gcd, new_rate // resampler.gcd
    return o, n, -(-resampler.width // o)


def source_span(offset: int, length: int, orig_rate: int, frames: int, new_rate: int = SAMPLE_RATE) -> tuple[int, int]:
    """Source frames [start, stop) whose resampling holds output samples [offset, offset + length) exactly as the
    whole file's does; they begin at output sample `start * new / orig` (start is a whole group)."""
    if orig_rate == new_rate:
        return offset, offset + length
    o, n, margin = _groups(orig_rate, new_rate)
    first, last = offset // n, (offset + length - 1) // n  # the groups the span touches
    # Both ends a margin away from the span, so every window the span uses lies inside what is read;
    # at the file's ends the resampler's zero padding stands in, as it does for the whole file.
    return max(0, first - margin) * o, min(frames, (last + 1 + margin) * o)


class AudioSource:
    """An open audio file read by spans of its mono `sample_rate` wave; use as a context manager.

    `num_samples` comes from the header, as a header-only manifest's count does. A read that finds fewer
    frames than the header promises raises AudioError 'unreadable', as a whole-file decode of it would.
    """

    def __init__(self, path: str | Path, sample_rate: int = SAMPLE_RATE) -> None:
        check_not_empty_file(path)
        self.path = str(path)
        try:
            self._file = sf.SoundFile(self.path)
        except _READ_ERRORS as err:
            raise AudioError(path, "unreadable", str(err).strip()) from None
        self.rate, self.frames, self.sample_rate = self._file.samplerate, self._file.frames, sample_rate
        if self.frames <= 0:
            self.close()
            raise AudioError(path, "empty", "no samples")
        self.num_samples = resampled_length(self.frames, self.rate, sample_rate)

    def __enter__(self) -> AudioSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._file.close()

    def _read(self, count: int) -> torch.Tensor:
        """Up to `count` frames (n, C) from the current position; decoder errors raise AudioError."""
        try:
            return torch.from_numpy(self._file.read(count, dtype="float32", always_2d=True))
        except _READ_ERRORS as err:
            raise AudioError(self.path, "unreadable", " ".join(str(err).split())) from None

    def read(self, offset: int, length: int) -> torch.Tensor:
        """Samples [offset, offset + length) of the mono wave (length,), decoding only the frames they need.

        Checked like `load_audio` checks a file, on what was read: NaN/Inf raise; silence does not (a quiet
        span of a file is still audio; whether the whole file is silent is `measure_audio`'s question).
        """
        if offset < 0 or length < 1 or offset + length > self.num_samples:
            raise ValueError(
                f"{self.path}: span [{offset}, {offset + length}) is outside its {self.num_samples} samples"
            )
        start, stop = source_span(offset, length, self.rate, self.frames, self.sample_rate)
        try:
            self._file.seek(start)
        except _READ_ERRORS as err:
            raise AudioError(self.path, "unreadable", " ".join(str(err).split())) from None
        data = self._read(stop - start)  # (stop - start, C)
        if data.shape[0] < stop - start:
            raise AudioError(
                self.path, "unreadable", f"decoding stopped at frame {start + data.shape[0]} of {self.frames}"
            )
        if not torch.isfinite(data).all():
            check_samples(self.path, data.T)  # names the NaN count before the downmix spreads it
        skip = offset - resampled_length(start, self.rate, self.sample_rate)  # start is a whole group: exact
        wave = resample(data.mean(dim=1), self.rate, self.sample_rate)[skip : skip + length]  # (length,)
        if not torch.isfinite(wave).all():
            check_samples(self.path, wave)
        return wave.contiguous()

    def raw_blocks(self, block_frames: int) -> Iterator[torch.Tensor]:
        """The file from its first frame as (n, C) blocks, until the decoder stops."""
        try:
            self._file.seek(0)
        except _READ_ERRORS as err:
            raise AudioError(self.path, "unreadable", " ".join(str(err).split())) from None
        while True:
            data = self._read(block_frames)
            if data.shape[0]:
                yield data
            if data.shape[0] < block_frames:
                return

    def blocks(self, block_samples: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """(raw (n, C), wave (k,)) pairs from the start: the raw blocks concatenate to the decoded file, the waves
        to `load_audio`'s wave (resampled with the same windows, a margin of frames carried between blocks)."""
        if self.rate == self.sample_rate:
            for raw in self.raw_blocks(block_samples):
                yield raw, raw.mean(dim=1)
            return
        o, n, margin = _groups(self.rate, self.sample_rate)
        width = _resampler(self.rate, self.sample_rate).width
        kept, kept_group, done = torch.zeros(0), 0, 0  # kept[0] is frame kept_group * o; groups < done are out
        for raw in self.raw_blocks(max(1, block_samples // n) * o):
            kept = torch.cat([kept, raw.mean(dim=1)])
            ready = max(done, (kept_group * o + kept.shape[0] - width) // o)  # groups whose window is all read
            wave = kept[:0]
            if ready > done:
                wave = resample(kept, self.rate, self.sample_rate)[(done - kept_group) * n : (ready - kept_group) * n]
            done = ready
            drop = max(0, done - margin) - kept_group
            kept, kept_group = kept[drop * o :], kept_group + drop
            yield raw, wave
        if kept.shape[0]:  # the end: the resampler's zero padding and length cut are the whole file's
            yield (
                torch.zeros(0, self._file.channels),
                resample(kept, self.rate, self.sample_rate)[(done - kept_group) * n :],
            )


@dataclass(frozen=True, kw_only=True)
class AudioStats:
    """A whole file measured block by block: what `load_audio`'s checks and loudness need."""

    frames: int  # decoded source frames
    raw_non_finite: int  # NaN/Inf among the decoded source samples
    raw_peak: float  # max |x| of the source samples (nan when some are not finite)
    num_samples: int = 0  # of the mono wave at 16 kHz (0 when not resampled)
    non_finite: int = 0
    peak: float = 0.0
    lufs: float | None = None  # integrated loudness of the mono wave, when measured


def measure_audio(
    path: str | Path, *, resampled: bool = True, with_loudness: bool = False, block_samples: int | None = None
) -> AudioStats:
    """Walk `path` in blocks of about `block_samples` (default BLOCK_SAMPLES); `resampled=False` measures the
    source samples only (no downmix, no resampling)."""
    block_samples = block_samples or BLOCK_SAMPLES
    frames = raw_bad = num_samples = bad = 0
    raw_peak = peak = 0.0
    meter = LoudnessMeter(SAMPLE_RATE) if with_loudness and resampled else None
    with AudioSource(path) as source:
        pairs = source.blocks(block_samples) if resampled else ((raw, None) for raw in source.raw_blocks(block_samples))
        for raw, wave in pairs:
            if raw.numel():
                frames += raw.shape[0]
                raw_bad += int((~torch.isfinite(raw)).sum())
                raw_peak = math.nan if raw_bad else max(raw_peak, float(raw.abs().max()))
            if wave is not None and wave.numel():
                num_samples += wave.shape[0]
                bad += int((~torch.isfinite(wave)).sum())
                peak = math.nan if bad else max(peak, float(wave.abs().max()))
                if meter is not None and not bad:
                    meter.feed(wave)
    if frames == 0:
        raise AudioError(path, "empty", "no samples")
    lufs = meter.lufs() if meter is not None and not bad else None
    return AudioStats(
        frames=frames,
        raw_non_finite=raw_bad,
        raw_peak=raw_peak,
        num_samples=num_samples,
        non_finite=bad,
        peak=peak,
        lufs=lufs,
    )


def check_stats(path: str | Path, stats: AudioStats, *, raw: bool = False) -> None:
    """`load_audio`'s checks, in its order, on a measured file; `raw` checks the source samples instead."""
    if raw or stats.raw_non_finite:
        check_counts(path, non_finite=stats.raw_non_finite, length=stats.frames, peak=stats.raw_peak)
    else:
        check_counts(path, non_finite=stats.non_finite, length=stats.num_samples, peak=stats.peak)


class LoudnessMeter:
    """`integrated_loudness` of a mono wave fed in pieces, holding one piece in memory.

    K-weighting restarts LOUDNESS_WARMUP samples before each piece, and the gating blocks (4 steps of 100 ms)
    are summed from per-step energies, so only whole steps count, as they do for the whole wave.
    """

    def __init__(self, sample_rate: int = SAMPLE_RATE) -> None:
        if sample_rate % BLOCKS_PER_SECOND:
            raise ValueError(f"loudness: {sample_rate} Hz is not a whole number of samples per 100 ms step")
        self.sample_rate, self.step = sample_rate, sample_rate // BLOCKS_PER_SECOND
        self.history = torch.zeros(0, dtype=torch.float64)  # the last LOUDNESS_WARMUP input samples
        self.pending = torch.zeros(0, dtype=torch.float64)  # weighted samples short of a whole step
        self.steps: list[torch.Tensor] = []  # energy of each whole step
        self.energy, self.count = 0.0, 0  # of everything, for a wave shorter than one block

    def feed(self, wave: torch.Tensor) -> None:
        x = torch.cat([self.history, wave.to(torch.float64)])
        weighted = k_weighted(x, self.sample_rate)[self.history.shape[0] :]
        self.history = x[-LOUDNESS_WARMUP:]
        self.energy += float(weighted.square().sum())
        self.count += weighted.shape[0]
        pending = torch.cat([self.pending, weighted])
        whole = pending.shape[0] // self.step * self.step
        self.steps.append(pending[:whole].square().view(-1, self.step).sum(dim=1))
        self.pending = pending[whole:]

    def lufs(self) -> float:
        steps = torch.cat(self.steps) if self.steps else torch.zeros(0, dtype=torch.float64)
        if steps.shape[0] < BLOCK_STEPS:  # shorter than one block: one block over everything
            return gated_loudness(torch.tensor([self.energy / max(self.count, 1)], dtype=torch.float64))
        blocks = steps.shape[0] - BLOCK_STEPS + 1
        powers = sum(steps[i : i + blocks] for i in range(BLOCK_STEPS)) / (BLOCK_STEPS * self.step)
        return gated_loudness(powers)
