"""The audio events set of the demo corpus: synthetic clip-level sound classes over a noise background.

Classes (EVENT_CLASSES): steady tones with harmonics, chirps (exponential sweeps of an octave or more),
sirens (a tone whose pitch swings slowly), click trains, bursts of white/pink/brown noise, chords (a
major or minor triad), and speech (a stretch of one of the corpus's keyword files, spoken by espeak).
Each clip is CLIP_SECONDS of coloured background noise (a random colour at BACKGROUND_DBFS) with events
placed at random onsets; an event's SNR is the power of its active stretch over the background's, U(SNR_DB).

  single-label  one event per clip, every class equally often: events_{train,test}.tsv  path, snr_db, event
  multi-label   1-3 distinct classes per clip, overlapping:     events_multi_{train,test}.tsv  path, events
                (`events` holds the sorted class names joined by MULTI_LABEL_SEPARATOR, the probes' multi-label form)

Train and test clips come from different generator seeds (the corpus seed with the split's name), and their
speech from different speakers (keywords_train.tsv vs keywords_test.tsv), so test clips are new draws, not
copies. Everything is numpy: the set builds in seconds (`add_events(corpus_dir, seed)`; the tool's
`--events-only` adds it to a built corpus). Audio lies under events/ as 16 kHz PCM-16 wav.

Shapes: S samples.
"""

from __future__ import annotations

import io
import json
import shutil
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

from ssl_audio.audio import SAMPLE_RATE, load_audio
from ssl_audio.data.probe_table import MULTI_LABEL_SEPARATOR, read_table
from ssl_audio.demo.coloured_noise import COLOURS, coloured_noise

EVENT_CLASSES = ("chirp", "chord", "clicks", "noise_burst", "siren", "speech", "tone")
EVENTS_DIR = "events"
CLIP_SECONDS = 2.0
EVENT_SECONDS = (0.4, 1.6)  # duration of one event, uniform
BACKGROUND_DBFS = -40.0  # RMS of the background noise
SNR_DB = (0.0, 20.0)  # event over background, uniform per event
MULTI_COUNTS = (1, 2, 3)  # events in a multi-label clip ...
MULTI_WEIGHTS = (0.3, 0.4, 0.3)  # ... drawn with these probabilities
FADE_SECONDS = 0.01  # raised-cosine onset and offset of every event (no clicks from the cut itself)
PEAK_LIMIT = 0.98  # a clip louder than this is scaled down as a whole (its SNRs unchanged)
INT16_MAX = 32767
SPEECH_TABLES = {"train": "keywords_train.tsv", "test": "keywords_test.tsv"}
SPEECH_QUIET_DB = -30.0  # relative to a keyword file's peak: its quieter ends are trimmed before use


@dataclass(frozen=True, kw_only=True)
class EventsConfig:
    single_per_class: dict[str, int]  # split -> single-label clips of each class
    multi: dict[str, int]  # split -> multi-label clips

    def __post_init__(self) -> None:
        for name in ("single_per_class", "multi"):
            counts = getattr(self, name)
            if set(counts) != {"train", "test"} or any(n < 1 for n in counts.values()):
                raise ValueError(f"EventsConfig.{name} must give train and test counts >= 1, got {counts}")


DEFAULT_EVENTS = EventsConfig(single_per_class={"train": 40, "test": 15}, multi={"train": 300, "test": 100})
TINY_EVENTS = EventsConfig(single_per_class={"train": 3, "test": 2}, multi={"train": 12, "test": 8})


def _fade(x: np.ndarray) -> np.ndarray:
    n = min(round(FADE_SECONDS * SAMPLE_RATE), len(x) // 2)
    ramp = 0.5 - 0.5 * np.cos(np.pi * np.arange(n) / n)
    x = x.copy()
    x[:n] *= ramp
    x[len(x) - n :] *= ramp[::-1]
    return x


def _log_uniform(rng: np.random.Generator, low: float, high: float) -> float:
    return float(np.exp(rng.uniform(np.log(low), np.log(high))))


def _harmonics(phase: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """1-3 harmonics of a phase track, amplitudes falling as 1/k."""
    count = int(rng.integers(1, 4))
    return sum(np.sin(k * phase) / k for k in range(1, count + 1))


def tone(n: int, rng: np.random.Generator) -> np.ndarray:
    f0 = _log_uniform(rng, 200.0, 2000.0)
    return _harmonics(2 * np.pi * f0 * np.arange(n) / SAMPLE_RATE, rng)


def chirp(n: int, rng: np.random.Generator) -> np.ndarray:
    """An exponential sweep over at least an octave, up or down."""
    f0 = _log_uniform(rng, 200.0, 1000.0)
    f1 = f0 * 2 ** rng.uniform(1.0, 2.5)
    if rng.random() < 0.5:
        f0, f1 = f1, f0
    t, seconds = np.arange(n) / SAMPLE_RATE, n / SAMPLE_RATE
    rate = np.log(f1 / f0) / seconds
    return np.sin(2 * np.pi * f0 * (np.exp(rate * t) - 1) / rate)  # phase = 2 pi * integral of f0 e^(rate t)


def siren(n: int, rng: np.random.Generator) -> np.ndarray:
    """A tone whose frequency swings sinusoidally by 20-40 % at 0.5-4 Hz."""
    centre, depth, swing = _log_uniform(rng, 500.0, 1500.0), rng.uniform(0.2, 0.4), rng.uniform(0.5, 4.0)
    t = np.arange(n) / SAMPLE_RATE
    start = rng.uniform(0, 2 * np.pi)
    # f(t) = centre (1 + depth sin(2 pi swing t + start)); the phase is its integral
    phase = (
        2 * np.pi * centre * (t - depth * (np.cos(2 * np.pi * swing * t + start) - np.cos(start)) / (2 * np.pi * swing))
    )
    return np.sin(phase)


def clicks(n: int, rng: np.random.Generator) -> np.ndarray:
    """5-30 clicks a second (10 % timing jitter), each a 2 ms damped burst of noise."""
    rate = rng.uniform(5.0, 30.0)
    out = np.zeros(n)
    length = round(0.002 * SAMPLE_RATE)
    click = rng.standard_normal(length) * np.exp(-np.arange(length) / (0.3 * length))
    position = rng.uniform(0, SAMPLE_RATE / rate)
    while position < n - length:
        start = int(position)
        out[start : start + length] += click
        position += SAMPLE_RATE / rate * rng.uniform(0.9, 1.1)
    return out


def noise_burst(n: int, rng: np.random.Generator) -> np.ndarray:
    """White, pink or brown noise switched on and off in 50-200 ms bursts (a steady background is not one)."""
    noise = coloured_noise(n, COLOURS[str(rng.choice(sorted(COLOURS)))], rng).astype(np.float64)
    gate, position, on = np.zeros(n), 0, True
    while position < n:
        length = round(rng.uniform(0.05, 0.2) * SAMPLE_RATE)
        if on:
            gate[position : position + length] = _fade(np.ones(min(length, n - position)))
        position, on = position + length, not on
    return noise * gate


def chord(n: int, rng: np.random.Generator) -> np.ndarray:
    """A major or minor triad (equal temperament) on a root of 150-600 Hz, two harmonics per note."""
    root = _log_uniform(rng, 150.0, 600.0)
    steps = (0, 4, 7) if rng.random() < 0.5 else (0, 3, 7)
    t = np.arange(n) / SAMPLE_RATE
    return sum(np.sin(2 * np.pi * root * 2 ** (s / 12) * t) + 0.5 * np.sin(4 * np.pi * root * 2 ** (s / 12) * t)
               for s in steps)  # fmt: skip


SYNTHETIC: dict[str, Callable[[int, np.random.Generator], np.ndarray]] = {
    "chirp": chirp, "chord": chord, "clicks": clicks, "noise_burst": noise_burst, "siren": siren, "tone": tone,
}  # fmt: skip


def _trimmed(wave: np.ndarray) -> np.ndarray:
    """A keyword file without its quiet lead and tail (the padding and noise floor of the corpus)."""
    loud = np.flatnonzero(np.abs(wave) > np.abs(wave).max() * 10 ** (SPEECH_QUIET_DB / 20))
    return wave[loud[0] : loud[-1] + 1] if len(loud) else wave


def _event(name: str, n: int, rng: np.random.Generator, speech: list[np.ndarray]) -> np.ndarray:
    """(n,) float64 of class `name`, faded in and out; speech is a stretch of a random keyword (zero-padded when
    the word is shorter than n, so its active stretch is the word)."""
    if name == "speech":
        word = speech[int(rng.integers(len(speech)))]
        if len(word) >= n:
            start = int(rng.integers(len(word) - n + 1))
            return _fade(word[start : start + n])
        out = np.zeros(n)
        out[: len(word)] = _fade(word)
        return out
    return _fade(SYNTHETIC[name](n, rng))


def active_power(x: np.ndarray) -> float:
    """Mean square from the first to the last non-zero sample (an event's SNR is over that stretch)."""
    nonzero = np.flatnonzero(x)
    return float(np.mean(x[nonzero[0] : nonzero[-1] + 1] ** 2)) if nonzero.size else 0.0


@dataclass(frozen=True, kw_only=True)
class ClipParts:
    """A clip before mixing: the background and each event placed in a clip-long array, with its SNR."""

    background: np.ndarray  # (S,) float64
    events: list[np.ndarray]  # (S,) float64 each, zero outside the event
    snr_db: list[float]

    def mixed(self) -> np.ndarray:
        """(S,) the sum, scaled down as a whole when its peak would pass PEAK_LIMIT (the SNRs stay)."""
        clip = self.background + sum(self.events)
        peak = float(np.abs(clip).max())
        return clip * (PEAK_LIMIT / peak) if peak > PEAK_LIMIT else clip


def render_parts(names: tuple[str, ...], rng: np.random.Generator, speech: list[np.ndarray]) -> ClipParts:
    """One event of each class in `names` at a random onset and SNR over CLIP_SECONDS of coloured noise."""
    total = round(CLIP_SECONDS * SAMPLE_RATE)
    colour = COLOURS[str(rng.choice(sorted(COLOURS)))]
    background = coloured_noise(total, colour, rng, rms_dbfs=BACKGROUND_DBFS).astype(np.float64)
    power = float(np.mean(background**2))
    events, snrs = [], []
    for name in names:
        n = round(rng.uniform(*EVENT_SECONDS) * SAMPLE_RATE)
        start = int(rng.integers(total - n + 1))
        event = _event(name, n, rng, speech)
        snr = float(rng.uniform(*SNR_DB))
        placed = np.zeros(total)
        placed[start : start + n] = event * np.sqrt(power * 10 ** (snr / 10) / active_power(event))
        events.append(placed)
        snrs.append(snr)
    return ClipParts(background=background, events=events, snr_db=snrs)


def _speech_pool(corpus: Path, split: str) -> list[np.ndarray]:
    table = read_table(corpus / SPEECH_TABLES[split])
    return [_trimmed(load_audio(table.audio_path(i)).numpy().astype(np.float64)) for i in range(len(table))]


def _write_wav(path: Path, clip: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pcm = np.clip(np.round(clip * INT16_MAX), -INT16_MAX - 1, INT16_MAX).astype(np.int16)
    buffer = io.BytesIO()  # one write per file, as corpus.py
    sf.write(buffer, pcm, SAMPLE_RATE, format="WAV", subtype="PCM_16")
    path.write_bytes(buffer.getvalue())


def _write_tsv(path: Path, header: tuple[str, ...], rows: list[tuple]) -> None:
    lines = ["\t".join(header)] + ["\t".join(str(x) for x in row) for row in rows]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def add_events(corpus: str | Path, *, seed: int, config: EventsConfig = DEFAULT_EVENTS) -> dict[str, int]:
    """Write the events set into the corpus folder `corpus` (replacing an earlier one); returns clips per table.

    Needs the corpus's keywords_{train,test}.tsv (the speech class); deterministic in `seed`."""
    corpus = Path(corpus)
    if (corpus / EVENTS_DIR).exists():
        shutil.rmtree(corpus / EVENTS_DIR)  # no stale clips from an earlier build
    counts = {}
    for split in ("train", "test"):
        rng = np.random.default_rng([seed, int.from_bytes(f"events/{split}".encode(), "little")])
        speech = _speech_pool(corpus, split)
        single = [name for name in EVENT_CLASSES for _ in range(config.single_per_class[split])]
        rows = []
        for i, name in enumerate(single):
            parts = render_parts((name,), rng, speech)
            path = f"{EVENTS_DIR}/single_{split}/{i:05d}.wav"
            _write_wav(corpus / path, parts.mixed())
            rows.append((path, f"{parts.snr_db[0]:.2f}", name))
        _write_tsv(corpus / f"events_{split}.tsv", ("path", "snr_db", "event"), rows)
        counts[f"events_{split}"] = len(rows)
        rows = []
        for i in range(config.multi[split]):
            count = int(rng.choice(MULTI_COUNTS, p=MULTI_WEIGHTS))
            names = tuple(sorted(rng.choice(EVENT_CLASSES, size=count, replace=False).tolist()))
            path = f"{EVENTS_DIR}/multi_{split}/{i:05d}.wav"
            _write_wav(corpus / path, render_parts(names, rng, speech).mixed())
            rows.append((path, MULTI_LABEL_SEPARATOR.join(names)))
        _write_tsv(corpus / f"events_multi_{split}.tsv", ("path", "events"), rows)
        counts[f"events_multi_{split}"] = len(rows)
    info = {"seed": seed, "classes": list(EVENT_CLASSES), "clip_seconds": CLIP_SECONDS, "snr_db": list(SNR_DB),
            "config": asdict(config), "files": counts}  # fmt: skip
    (corpus / EVENTS_DIR / "events.json").write_text(json.dumps(info, indent=1) + "\n", encoding="utf-8")
    return counts
