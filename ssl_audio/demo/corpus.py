"""Build the demo corpus: synthetic English speech from espeak-ng with exact phone alignments.

A speaker is an espeak voice ("accent+variant") with its own pitch, pitch range and speaking rate. Test
speakers use variants that no train or pretraining speaker uses, so they are unseen voices. Parts:
  unlabeled  1-3 grammar sentences per file, from train and pretrain-only speakers (never test speakers)
  sentences  one sentence per file with its character transcript, train and test speakers
  keywords   one word from KEYWORDS per file, train and test speakers
Layout under the output directory:
  audio/<part>/<speaker>/<utterance>.wav   16 kHz mono PCM-16
  sentences_{train,test}.tsv               path, speaker, transcript (paths relative to the directory)
  keywords_{train,test}.tsv                path, speaker, keyword
  keywords_test_noisy.tsv                  path, snr_db, speaker, keyword: the keyword test set with white,
                                           pink or brown noise at U(0, 10) dB SNR (ssl_audio.demo.noisy),
                                           audio under noisy/audio/keywords/...; `add_noisy_keywords`
                                           adds it to a corpus built before it existed
  speakers.tsv                             speaker, voice, pitch, pitch_range, rate, split
  alignments.jsonl                         every utterance, see ssl_audio.data.alignments
  corpus.json                              config, counts, seconds per part, phone inventory

Determinism: everything random is drawn while planning, in this process, from the seed; workers only render.
espeak carries synthesis state from one call to the next, so each chunk (all of one speaker's files) is
rendered in a fresh worker process: the output is byte-identical for a seed whatever the number of workers.
"""

from __future__ import annotations

import io
import json
import multiprocessing
import random
import shutil
from collections import Counter
from dataclasses import asdict, dataclass, field
from itertools import groupby
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from ssl_audio.audio import SAMPLE_RATE, resample
from ssl_audio.data.alignments import SILENCE, Alignment, frame_labels, load_alignments, write_alignments
from ssl_audio.demo import espeak
from ssl_audio.demo.grammar import KEYWORDS, sentence
from ssl_audio.demo.noisy import make_noisy_copy

__all__ = [
    "CorpusConfig", "CorpusSummary", "Speaker", "add_noisy_keywords", "build_corpus", "tiny_config", "load_alignments",
    "frame_labels",
]  # fmt: skip

ACCENTS = ("en", "en-us", "en-gb-scotland", "en-gb-x-rp", "en-gb-x-gbclan", "en-gb-x-gbcwmd", "en-029", "en-us-nyc")
# espeak-ng-data/voices/!v, leaving out whisper, robot and novelty variants.
VARIANTS = (
    "m1", "m2", "m3", "m4", "m5", "m6", "m7", "m8", "f1", "f2", "f3", "f4", "f5", "klatt", "klatt2", "klatt3",
    "Andy", "Annie", "Alex", "adam", "aunty", "david", "ed", "linda", "max", "michel", "paul", "robert", "steph",
    "travis", "victor", "john", "iven", "quincy", "benjamin", "belinda", "boris", "norbert", "rob", "grandpa",
)  # fmt: skip
PARTS = ("unlabeled", "sentences", "keywords")

PITCH_CHOICES = (25, 75)  # espeak pitch 0-100 (50 = the variant's own), per speaker
RANGE_CHOICES = (30, 80)  # espeak pitch range 0-100, per speaker
RATE_CHOICES = (140, 200)  # words per minute, per speaker
RATE_JITTER = 0.08  # per utterance, relative: repeats of one keyword by one speaker must differ
PITCH_JITTER = 4  # per utterance, espeak pitch units
PAD_SECONDS = (0.15, 0.45)  # silence added before and after the speech, each drawn per utterance
PEAK_DBFS = (-12.0, -2.0)  # per-utterance peak level
NOISE_DBFS = -62.0  # RMS of the white noise floor added everywhere, so silence is not digital zero
QUIET_DB = -45.0  # relative to the utterance peak: below this a stretch of espeak output counts as silent
MIN_GAP_SECONDS = 0.005  # shorter silent tails are left where espeak put them
INT16_MAX = 32767
# Planning estimate of seconds per word at 1 word/min, fitted on espeak's English voices; only sizes the
# unlabeled pool (the real duration is measured and reported).
SECONDS_PER_WORD_AT_1_WPM = 60.0 * 0.78
SENTENCE_PAUSE_SECONDS = 0.35
NOISY_DIR = "noisy"  # audio of the noisy keyword test set, same layout as audio/
NOISY_KEYWORDS_TEST = "keywords_test_noisy.tsv"
# dB, uniform per utterance. Hard for probes trained on the clean keywords_train.tsv: on the demo corpus
# MFCC fell from 0.95 to 0.28 accuracy, tiny HuBERT (quickstart, iteration 2) from 0.98 to 0.11.
NOISY_SNR_DB = (0.0, 10.0)


@dataclass(frozen=True, kw_only=True)
class CorpusConfig:
    seed: int = 0
    unlabeled_hours: float = 1.0  # target; the real length lands within a few percent
    train_speakers: int = 40  # in the unlabeled pool and in the labelled train sets
    test_speakers: int = 10  # only in the labelled test sets, with variants unseen elsewhere
    pretrain_speakers: int = 30  # only in the unlabeled pool
    test_variants: int = 8  # espeak variants reserved for test speakers
    sentences_per_speaker: int = 10  # labelled sentences per train and per test speaker
    keywords_per_speaker: int = 24  # keyword files per train and per test speaker, cycling through KEYWORDS
    max_sentences_per_utterance: int = 3  # unlabeled files hold 1..this many sentences

    def __post_init__(self) -> None:
        for name in ("train_speakers", "test_speakers", "test_variants", "sentences_per_speaker"):
            if getattr(self, name) < 1:
                raise ValueError(f"CorpusConfig.{name} must be >= 1, got {getattr(self, name)}")
        for name in ("pretrain_speakers", "keywords_per_speaker"):
            if getattr(self, name) < 0:
                raise ValueError(f"CorpusConfig.{name} must be >= 0, got {getattr(self, name)}")
        if self.unlabeled_hours <= 0 or self.max_sentences_per_utterance < 1:
            raise ValueError("CorpusConfig.unlabeled_hours must be > 0 and max_sentences_per_utterance >= 1")
        if self.test_variants >= len(VARIANTS):
            raise ValueError(f"CorpusConfig.test_variants={self.test_variants} leaves no variant for training")
        if self.test_speakers > len(ACCENTS) * self.test_variants:
            raise ValueError(f"CorpusConfig.test_speakers={self.test_speakers} exceeds the test voices available")
        if self.train_speakers + self.pretrain_speakers > len(ACCENTS) * (len(VARIANTS) - self.test_variants):
            raise ValueError("CorpusConfig.train_speakers + pretrain_speakers exceeds the voices available")


def tiny_config(seed: int = 0) -> CorpusConfig:
    """A few dozen short files: enough for tests, built in a few seconds."""
    return CorpusConfig(
        seed=seed, unlabeled_hours=0.004, train_speakers=3, test_speakers=2, pretrain_speakers=2, test_variants=2,
        sentences_per_speaker=2, keywords_per_speaker=3, max_sentences_per_utterance=1,
    )  # fmt: skip


@dataclass(frozen=True, kw_only=True)
class Speaker:
    name: str
    voice: str  # espeak "accent+variant"
    pitch: int
    pitch_range: int
    rate: int  # words per minute
    split: str  # "train", "test" or "pretrain"


@dataclass(frozen=True, kw_only=True)
class Utterance:
    path: str  # relative to the corpus directory
    part: str
    split: str  # "train" or "test" for the labelled parts, "" for unlabeled
    speaker: Speaker
    text: str  # spoken by espeak
    label: str  # transcript, keyword, or "" for unlabeled
    seed: int  # draws the per-utterance jitter, padding, level and noise


@dataclass(frozen=True, kw_only=True)
class CorpusSummary:
    """What corpus.json holds (no timings, so that equal seeds give equal files)."""

    config: CorpusConfig
    sample_rate: int
    espeak_sample_rate: int
    speakers: dict[str, int]  # split -> count
    files: dict[str, int]  # "unlabeled", "sentences_train", ... -> count
    seconds: dict[str, float]  # part -> total audio seconds
    keywords: tuple[str, ...]
    phones: dict[str, int] = field(default_factory=dict)  # phone inventory -> segment count

    @property
    def hours(self) -> float:
        return sum(self.seconds.values()) / 3600

    def to_json(self) -> dict:
        return {**asdict(self), "seed": self.config.seed, "keywords": list(self.keywords)}


def _make_speakers(config: CorpusConfig) -> list[Speaker]:
    rng = random.Random(f"{config.seed}/speakers")
    variants = list(VARIANTS)
    rng.shuffle(variants)
    test_variants, train_variants = variants[: config.test_variants], variants[config.test_variants :]
    test_voices = [f"{a}+{v}" for a in ACCENTS for v in test_variants]
    train_voices = [f"{a}+{v}" for a in ACCENTS for v in train_variants]
    rng.shuffle(test_voices)
    rng.shuffle(train_voices)
    splits = ["train"] * config.train_speakers + ["pretrain"] * config.pretrain_speakers
    voices = train_voices[: len(splits)] + test_voices[: config.test_speakers]
    splits += ["test"] * config.test_speakers
    order = list(range(len(voices)))
    rng.shuffle(order)  # names in random order, so a speaker's number says nothing about its split
    speakers = [
        Speaker(
            name=f"spk{order[i]:03d}",
            voice=voice,
            split=split,
            pitch=rng.randint(*PITCH_CHOICES),
            pitch_range=rng.randint(*RANGE_CHOICES),
            rate=rng.randint(*RATE_CHOICES),
        )
        for i, (voice, split) in enumerate(zip(voices, splits))
    ]
    return sorted(speakers, key=lambda s: s.name)


def _estimated_seconds(text: str, rate: int) -> float:
    words = len(text.split())
    sentences = text.count(".") + text.count("?")
    return words * SECONDS_PER_WORD_AT_1_WPM / rate + sentences * SENTENCE_PAUSE_SECONDS + sum(PAD_SECONDS)


def _plan(config: CorpusConfig, speakers: list[Speaker]) -> list[Utterance]:
    """Every utterance, grouped by speaker (in name order), then by part in PARTS order."""
    plan: list[Utterance] = []

    def add(part: str, split: str, speaker: Speaker, index: int, text: str, label: str, rng: random.Random) -> None:
        utt = f"{speaker.name}-{part[0]}{index:04d}"
        path = f"audio/{part}/{speaker.name}/{utt}.wav"
        plan.append(Utterance(path=path, part=part, split=split, speaker=speaker, text=text, label=label,
                              seed=rng.getrandbits(32)))  # fmt: skip

    # Unlabeled: round-robin over the pool until the estimated duration reaches the target.
    rng = random.Random(f"{config.seed}/unlabeled")
    pool = [s for s in speakers if s.split in ("train", "pretrain")]
    rng.shuffle(pool)
    texts: dict[str, list[str]] = {s.name: [] for s in pool}
    total, target, turn = 0.0, config.unlabeled_hours * 3600, 0
    while total < target:
        speaker = pool[turn % len(pool)]
        text = " ".join(sentence(rng).text for _ in range(rng.randint(1, config.max_sentences_per_utterance)))
        texts[speaker.name].append(text)
        total += _estimated_seconds(text, speaker.rate)
        turn += 1
    for speaker in sorted(pool, key=lambda s: s.name):
        for index, text in enumerate(texts[speaker.name]):
            add("unlabeled", "", speaker, index, text, "", rng)

    labelled = [s for s in speakers if s.split in ("train", "test")]
    rng = random.Random(f"{config.seed}/sentences")
    for speaker in labelled:
        for index in range(config.sentences_per_speaker):
            item = sentence(rng)
            add("sentences", speaker.split, speaker, index, item.text, item.transcript, rng)
    rng = random.Random(f"{config.seed}/keywords")
    for speaker in labelled:
        order = list(KEYWORDS)
        rng.shuffle(order)  # each speaker cycles through all keywords, starting somewhere different
        for index in range(config.keywords_per_speaker):
            keyword = order[index % len(order)]
            add("keywords", speaker.split, speaker, index, keyword, keyword, rng)
    return sorted(plan, key=lambda u: u.speaker.name)  # stable: parts and indices keep their order


def _to_rate(position: int, native_rate: int) -> int:
    """A native-rate sample position at 16 kHz, rounded half up, in integers."""
    return (2 * position * SAMPLE_RATE + native_rate) // (2 * native_rate)


def _is_pause(name: str) -> bool:
    return name.startswith("_")  # espeak's pause phonemes: "_", "_:", "_!", ...


def _move_closures(phones: list[tuple[str, int]], samples: np.ndarray, native_rate: int) -> list[tuple[str, int]]:
    """Give each phone's silent tail to the next phone.

    espeak emits a phoneme's event after its pre-pause, so a stop's closure (and the gap before a word-initial
    fricative) would end the previous phone. Here a phone's trailing stretch quieter than QUIET_DB moves to the
    following phone, as in TIMIT-style labels where the closure belongs to the stop. A phone that is silent
    throughout (a post-vocalic l or r that espeak folds into the vowel's end) takes the last part of the
    previous phone, up to half of it, and hands its silence on.
    """
    if not phones:
        return phones
    threshold = float(np.abs(samples).max(initial=0.0)) * 10 ** (QUIET_DB / 20)
    min_gap = round(MIN_GAP_SECONDS * native_rate)
    starts = [min(max(position, 0), len(samples)) for _, position in phones]
    ends = starts[1:] + [len(samples)]
    sounding_end: list[int | None] = []  # one past the last loud sample of each phone, None if all quiet
    for start, end in zip(starts, ends):
        loud = np.flatnonzero(np.abs(samples[start:end]) > threshold)
        sounding_end.append(start + int(loud[-1]) + 1 if len(loud) else None)
    names = [name for name, _ in phones]
    new = list(starts)
    for i in range(len(phones) - 1):
        end = sounding_end[i]
        if not _is_pause(names[i]) and end is not None and ends[i] - end >= min_gap:
            new[i + 1] = end
    for i in range(1, len(phones) - 1):
        if _is_pause(names[i]) or sounding_end[i] is not None or _is_pause(names[i - 1]):
            continue
        if sounding_end[i - 1] is None:
            continue
        take = min(ends[i] - starts[i], (new[i] - new[i - 1]) // 2)
        new[i + 1] = new[i]  # the silence goes on to the next phone
        new[i] -= take
    return list(zip(names, new))


def _segments(
    phones: list[tuple[str, int]], native_length: int, native_rate: int, lead: int, speech: int, total: int
) -> tuple[list[str], list[int], list[int]]:
    """espeak events (name, native start) -> contiguous 16 kHz segments of the padded file, pauses as SILENCE.

    The file is `lead` samples of padding, `speech` samples of resampled espeak output, then padding up to
    `total`. Each event lasts until the next; the last one ends where espeak's output ends.
    """
    names = [SILENCE, SILENCE] + [SILENCE if _is_pause(name) else name for name, _ in phones] + [SILENCE]
    starts = [0, lead]
    for _, position in phones:
        starts.append(lead + min(_to_rate(min(max(position, 0), native_length), native_rate), speech))
    starts.append(lead + speech)
    if any(b < a for a, b in zip(starts, starts[1:])):
        raise RuntimeError(f"espeak phoneme events are out of order: {phones}")
    ends = starts[1:] + [total]
    out_phones: list[str] = []
    out_starts: list[int] = []
    out_ends: list[int] = []
    for name, start, end in zip(names, starts, ends):
        if end == start:
            continue
        if out_phones and name == SILENCE and out_phones[-1] == SILENCE:
            out_ends[-1] = end  # merge pauses with the silence around them
            continue
        out_phones.append(name)
        out_starts.append(start)
        out_ends.append(end)
    return out_phones, out_starts, out_ends


def _render(out_dir: Path, utt: Utterance) -> Alignment:
    """Synthesize, resample, pad, level and write one utterance; return its alignment."""
    rng = np.random.default_rng(utt.seed)
    speaker = utt.speaker
    rate = int(np.clip(round(speaker.rate * rng.uniform(1 - RATE_JITTER, 1 + RATE_JITTER)), *espeak.RATE_LIMITS))
    pitch = int(np.clip(speaker.pitch + rng.integers(-PITCH_JITTER, PITCH_JITTER + 1), *espeak.PITCH_LIMITS))
    synthesis = espeak.synthesize(utt.text, speaker.voice, rate=rate, pitch=pitch, pitch_range=speaker.pitch_range)
    native_rate = espeak.native_sample_rate()
    speech = resample(torch.from_numpy(synthesis.samples), native_rate, SAMPLE_RATE).numpy()  # (S,)
    lead, trail = (round(rng.uniform(*PAD_SECONDS) * SAMPLE_RATE) for _ in range(2))
    peak = 10 ** (rng.uniform(*PEAK_DBFS) / 20)
    audio = np.zeros(lead + len(speech) + trail, dtype=np.float64)
    audio[lead : lead + len(speech)] = speech * (peak / max(float(np.abs(speech).max()), 1e-9))
    audio += rng.normal(0.0, 10 ** (NOISE_DBFS / 20), size=len(audio))
    pcm = np.clip(np.round(audio * INT16_MAX), -INT16_MAX - 1, INT16_MAX).astype(np.int16)
    path = out_dir / utt.path
    path.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()  # soundfile's close() fsyncs a real file: 7 ms a file, a third of the build
    sf.write(buffer, pcm, SAMPLE_RATE, format="WAV", subtype="PCM_16")
    path.write_bytes(buffer.getvalue())
    events = _move_closures(synthesis.phones, synthesis.samples, native_rate)
    phones, starts, ends = _segments(events, len(synthesis.samples), native_rate, lead, len(speech), len(pcm))
    return Alignment(path=utt.path, num_samples=len(pcm), phones=tuple(phones), starts=tuple(starts), ends=tuple(ends))


def _render_chunk(task: tuple[str, list[Utterance]]) -> list[Alignment]:
    """Render one chunk in order, in a process that has not used espeak yet (see the module docstring)."""
    out_dir, chunk = task
    assert not espeak.initialised(), "a chunk must start in a fresh worker process"
    torch.set_num_threads(1)  # workers are the parallelism
    espeak.seed_noise(chunk[0].seed)
    return [_render(Path(out_dir), utt) for utt in chunk]


def _write_tsv(path: Path, header: tuple[str, ...], rows: list[tuple]) -> None:
    with open(path, "w", encoding="utf-8") as f:
        f.write("\t".join(header) + "\n")
        for row in rows:
            f.write("\t".join(str(x) for x in row) + "\n")


OUTPUT_FILES = (
    "sentences_train.tsv", "sentences_test.tsv", "keywords_train.tsv", "keywords_test.tsv", "speakers.tsv",
    "alignments.jsonl", "corpus.json", NOISY_KEYWORDS_TEST,
)  # fmt: skip


def _prepare(out_dir: Path, overwrite: bool) -> None:
    existing = [name for name in ("audio", NOISY_DIR, *OUTPUT_FILES) if (out_dir / name).exists()]
    if existing and not overwrite:
        found = ", ".join(existing)
        raise ValueError(f"{out_dir}: already holds a corpus ({found}); pass overwrite=True (--overwrite) to replace")
    for name in existing:  # only what a build writes
        target = out_dir / name
        shutil.rmtree(target) if target.is_dir() else target.unlink()
    out_dir.mkdir(parents=True, exist_ok=True)


def build_corpus(
    out_dir: str | Path, config: CorpusConfig = CorpusConfig(), *, workers: int = 2, overwrite: bool = False
) -> CorpusSummary:
    """Build the corpus described by `config` under `out_dir` with `workers` processes; see the module docstring.

    Workers start from a forkserver, which imports the caller's main module again (as multiprocessing's spawn
    does): call this from `python -c`, a notebook, or a script under `if __name__ == "__main__":`.
    """
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    out_dir = Path(out_dir)
    _prepare(out_dir, overwrite)
    speakers = _make_speakers(config)
    plan = _plan(config, speakers)
    chunks = [list(group) for _, group in groupby(plan, key=lambda u: u.speaker.name)]
    # forkserver: workers fork from a clean server (torch imported once), never from a parent that may have
    # used espeak; one chunk per worker process so that espeak state never crosses chunks.
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload([__name__])
    with context.Pool(processes=min(workers, len(chunks)), maxtasksperchild=1) as pool:
        alignments = [a for chunk in pool.imap(_render_chunk, [(str(out_dir), c) for c in chunks]) for a in chunk]
    native_rate = espeak.native_sample_rate()  # loads espeak here too; workers fork from the server, not from us

    write_alignments(out_dir / "alignments.jsonl", alignments)
    for part, header in (("sentences", "transcript"), ("keywords", "keyword")):
        for split in ("train", "test"):
            rows = [(u.path, u.speaker.name, u.label) for u in plan if u.part == part and u.split == split]
            _write_tsv(out_dir / f"{part}_{split}.tsv", ("path", "speaker", header), rows)
    _write_tsv(
        out_dir / "speakers.tsv",
        ("speaker", "voice", "pitch", "pitch_range", "rate", "split"),
        [(s.name, s.voice, s.pitch, s.pitch_range, s.rate, s.split) for s in speakers],
    )
    files = Counter(u.part if u.part == "unlabeled" else f"{u.part}_{u.split}" for u in plan)
    seconds = Counter()
    for utt, alignment in zip(plan, alignments):
        seconds[utt.part] += alignment.num_samples / SAMPLE_RATE
    phones = Counter(p for a in alignments for p in a.phones)
    summary = CorpusSummary(
        config=config,
        sample_rate=SAMPLE_RATE,
        espeak_sample_rate=native_rate,
        speakers=dict(sorted(Counter(s.split for s in speakers).items())),
        files={k: files[k] for k in ("unlabeled", *(f"{p}_{s}" for p in PARTS[1:] for s in ("train", "test")))},
        seconds={part: round(seconds[part], 3) for part in PARTS},
        keywords=KEYWORDS,
        phones=dict(sorted(phones.items())),
    )
    with open(out_dir / "corpus.json", "w", encoding="utf-8") as f:
        json.dump(summary.to_json(), f, indent=1)
        f.write("\n")
    add_noisy_keywords(out_dir, seed=config.seed)
    return summary


def add_noisy_keywords(out_dir: str | Path, *, seed: int) -> Path:
    """Write keywords_test_noisy.tsv and its audio under noisy/ (replacing them), from keywords_test.tsv of the
    corpus in `out_dir`; returns the table. Deterministic in `seed` (the corpus's: build_corpus passes it)."""
    out_dir = Path(out_dir)
    if (out_dir / NOISY_DIR).exists():
        shutil.rmtree(out_dir / NOISY_DIR)  # no stale files from an earlier corpus
    return make_noisy_copy(
        out_dir / "keywords_test.tsv", out_dir / NOISY_DIR, NOISY_SNR_DB, seed, table_out=out_dir / NOISY_KEYWORDS_TEST
    )
