"""The espeak demo corpus: binding, grammar, build, alignments against the audio, determinism, frame labels."""

from __future__ import annotations

import csv
import json
import random
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from ssl_audio.audio import SAMPLE_RATE
from ssl_audio.data.alignments import SILENCE, Alignment, frame_labels, load_alignments, num_frames
from ssl_audio.demo import espeak
from ssl_audio.demo.corpus import CorpusConfig, build_corpus, tiny_config
from ssl_audio.demo.grammar import KEYWORDS, sentence, transcript_of

NOISE_MARGIN_DB = 3.0  # every phone's loudest 5 ms must stand this far above the file's noise floor
TYPICAL_MARGIN_DB = 10.0  # ... and nearly all of them this far
EDGE_SILENCE_DB = -35.0  # leading/trailing silence RMS relative to the file's peak
WINDOW = 80  # samples: 5 ms at 16 kHz


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("demo") / "tiny"
    build_corpus(out, tiny_config(seed=0), workers=2)
    return out


def _tsv(path: Path) -> list[dict[str, str]]:
    with open(path, encoding="utf-8") as f:
        return list(csv.DictReader(f, delimiter="\t"))


def _db(x: float) -> float:
    return 20 * np.log10(max(x, 1e-12))


# --- espeak binding ---------------------------------------------------------------------------------


def test_espeak_phone_events_are_ordered_and_span_the_audio() -> None:
    samples, phones = espeak.synthesize("Stop. Did the old man go home?", "en-us+m3", rate=175)
    assert samples.dtype == np.float32 and samples.ndim == 1 and 0.05 < np.abs(samples).max() <= 1.0
    positions = [position for _, position in phones]
    assert positions == sorted(positions) and positions[0] >= 0
    assert positions[-1] == len(samples)  # a voice without echo ends on its final pause event
    assert espeak.native_sample_rate() == 22050
    assert 1.0 < len(samples) / 22050 < 4.0


def test_espeak_echo_voice_rings_past_the_last_event() -> None:
    samples, phones = espeak.synthesize("Yes.", "en-us+f2")
    assert [name for name, _ in phones][:3] == ["j", "E", "s"]
    tail = len(samples) - phones[-1][1]
    assert 0 <= tail <= 0.15 * 22050  # echo variants add up to ~120 ms after the last event


def test_missing_library_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(espeak, "SONAME", "libespeak-ng-missing.so.9")
    monkeypatch.setattr(espeak.ctypes.util, "find_library", lambda name: None)
    with pytest.raises(espeak.EspeakUnavailable, match="apt-get install -y espeak-ng"):
        espeak._load()


def test_espeak_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="no-such-language"):
        espeak.synthesize("hello", "no-such-language")
    with pytest.raises(ValueError, match="rate=20"):
        espeak.synthesize("hello", "en", rate=20)


# --- grammar ----------------------------------------------------------------------------------------


def test_grammar_is_seeded_and_transcripts_are_plain() -> None:
    first = [sentence(random.Random(7)) for _ in range(3)]
    assert first == [sentence(random.Random(7)) for _ in range(3)]
    rng = random.Random(0)
    for item in (sentence(rng) for _ in range(50)):
        assert set(item.transcript) <= set("abcdefghijklmnopqrstuvwxyz' ")
        assert item.transcript == transcript_of(item.text) and item.text[-1] in ".?"
    assert transcript_of("Did the cat, or the DOG, run?") == "did the cat or the dog run"
    assert len(set(KEYWORDS)) == len(KEYWORDS) == 12


# --- the built corpus -------------------------------------------------------------------------------


def test_tiny_corpus_files_match_its_tables(corpus: Path) -> None:
    info = json.loads((corpus / "corpus.json").read_text())
    assert info["seed"] == 0 and info["sample_rate"] == SAMPLE_RATE
    alignments = load_alignments(corpus / "alignments.jsonl")
    wavs = {str(p.relative_to(corpus)) for p in (corpus / "audio").rglob("*.wav")}
    assert wavs == set(alignments) and 25 <= len(wavs) <= 60
    for name in ("sentences_train", "sentences_test", "keywords_train", "keywords_test"):
        rows = _tsv(corpus / f"{name}.tsv")
        assert len(rows) == info["files"][name] > 0
        assert all(row["path"] in wavs for row in rows)
    assert all(row["keyword"] in KEYWORDS for row in _tsv(corpus / "keywords_train.tsv"))
    assert all(row["transcript"] == transcript_of(row["transcript"]) for row in _tsv(corpus / "sentences_test.tsv"))
    unlabeled = [w for w in wavs if w.startswith("audio/unlabeled/")]
    assert len(unlabeled) == info["files"]["unlabeled"]
    seconds = sum(a.num_samples for p, a in alignments.items() if p in unlabeled) / SAMPLE_RATE
    assert seconds == pytest.approx(info["seconds"]["unlabeled"], abs=1e-3)


def test_wavs_are_16k_mono_pcm_with_the_recorded_length(corpus: Path) -> None:
    for path, alignment in load_alignments(corpus / "alignments.jsonl").items():
        info = sf.info(str(corpus / path))
        assert (info.samplerate, info.channels, info.subtype) == (SAMPLE_RATE, 1, "PCM_16")
        assert info.frames == alignment.num_samples


def test_alignments_cover_each_utterance_exactly(corpus: Path) -> None:
    for alignment in load_alignments(corpus / "alignments.jsonl").values():
        assert alignment.starts[0] == 0 and alignment.ends[-1] == alignment.num_samples
        assert all(s == e for s, e in zip(alignment.starts[1:], alignment.ends[:-1]))
        assert all(e > s for s, e in zip(alignment.starts, alignment.ends))
        assert alignment.phones[0] == alignment.phones[-1] == SILENCE
        assert any(p != SILENCE for p in alignment.phones)
        assert not any(a == b == SILENCE for a, b in zip(alignment.phones, alignment.phones[1:]))


def test_alignments_agree_with_the_audio(corpus: Path) -> None:
    """Independent of espeak's events: phones hold sound, the padded edges hold only the noise floor."""
    margins = []
    for path, alignment in load_alignments(corpus / "alignments.jsonl").items():
        wave, _ = sf.read(str(corpus / path), dtype="float64")
        peak = np.abs(wave).max()
        noise = np.sqrt(np.mean(wave[: alignment.ends[0]] ** 2))
        for i, (phone, start, end) in enumerate(zip(alignment.phones, alignment.starts, alignment.ends)):
            segment = wave[start:end]
            if phone == SILENCE:
                if i in (0, len(alignment.phones) - 1):
                    assert end - start >= 0.1 * SAMPLE_RATE, path
                    assert _db(np.sqrt(np.mean(segment**2)) / peak) < EDGE_SILENCE_DB, path
                continue
            windows = segment[: len(segment) // WINDOW * WINDOW].reshape(-1, WINDOW)
            loudest = np.sqrt((windows**2).mean(axis=1)).max() if len(windows) else np.sqrt(np.mean(segment**2))
            margins.append(_db(loudest / noise))
            assert margins[-1] > NOISE_MARGIN_DB, (path, i, phone)
    assert np.mean(np.array(margins) > TYPICAL_MARGIN_DB) > 0.98


def test_test_speakers_are_unseen(corpus: Path) -> None:
    speakers = {row["speaker"]: row for row in _tsv(corpus / "speakers.tsv")}
    test = {s for s, row in speakers.items() if row["split"] == "test"}
    train = {s for s, row in speakers.items() if row["split"] == "train"}
    assert test and train and not test & train
    unlabeled = {p.name for p in (corpus / "audio" / "unlabeled").iterdir()}
    assert not test & unlabeled and train <= unlabeled
    for part in ("sentences", "keywords"):
        assert {row["speaker"] for row in _tsv(corpus / f"{part}_test.tsv")} == test
        assert {row["speaker"] for row in _tsv(corpus / f"{part}_train.tsv")} == train
    variant = {s: row["voice"].split("+")[1] for s, row in speakers.items()}
    assert not {variant[s] for s in test} & {variant[s] for s in speakers if s not in test}


def _tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_builds_are_deterministic_by_seed_whatever_the_workers(corpus: Path, tmp_path: Path) -> None:
    build_corpus(tmp_path / "again", tiny_config(seed=0), workers=1)
    first, again = _tree(corpus), _tree(tmp_path / "again")
    assert first.keys() == again.keys()
    assert [name for name in first if first[name] != again[name]] == []
    build_corpus(tmp_path / "other", tiny_config(seed=1), workers=2)
    other = _tree(tmp_path / "other")
    assert other["speakers.tsv"] != first["speakers.tsv"]
    assert other["alignments.jsonl"] != first["alignments.jsonl"]


def test_build_refuses_to_mix_with_an_existing_corpus(corpus: Path) -> None:
    with pytest.raises(ValueError, match="already holds a corpus"):
        build_corpus(corpus, tiny_config(seed=0))
    with pytest.raises(ValueError, match="test_speakers"):
        CorpusConfig(test_speakers=100, test_variants=2)


# --- alignments and frame labels --------------------------------------------------------------------


def _conv_frames(samples: int) -> int:
    """Frames of the wav2vec 2.0 conv extractor, layer by layer."""
    for kernel, stride in zip((10, 3, 3, 3, 3, 2, 2), (5, 2, 2, 2, 2, 2, 2)):
        samples = (samples - kernel) // stride + 1 if samples >= kernel else 0
    return samples


@pytest.mark.parametrize(
    ("samples", "at_50", "at_100"),
    [(399, 0, 0), (400, 1, 1), (719, 1, 2), (720, 2, 3), (16_000, 49, 98), (48_123, 150, 299)],
)
def test_num_frames_by_hand(samples: int, at_50: int, at_100: int) -> None:
    assert num_frames(samples, 50) == at_50 == _conv_frames(samples)
    assert num_frames(samples, 100.0) == at_100


def test_num_frames_matches_the_conv_extractor() -> None:
    assert all(num_frames(s, 50) == _conv_frames(s) for s in range(0, 5000, 7))


def test_frame_labels_take_the_phone_at_each_frame_centre() -> None:
    alignment = Alignment(path="x.wav", num_samples=1040, phones=("sil", "a", "sil"), starts=(0, 300, 700),
                          ends=(300, 700, 1040))  # fmt: skip
    assert frame_labels(alignment, 50) == ["sil", "a", "sil"]  # centres 200, 520, 840
    assert frame_labels(alignment, 100) == ["sil", "a", "a", "a", "sil"]  # centres 200, 360, 520, 680, 840
    assert frame_labels(alignment, 25) == ["sil", "sil"]  # hop 640: centres 200, 840
    # another front-end's window: the Whisper stem's 1040 samples at 50 Hz, one frame centred at 520
    assert frame_labels(alignment, 50, window=1040) == ["a"]
    assert frame_labels(alignment, 50, window=1041) == []
    with pytest.raises(ValueError, match="frame_rate 30"):  # 533.3 samples per frame
        frame_labels(alignment, 30)


def test_frame_labels_on_the_corpus(corpus: Path) -> None:
    for alignment in load_alignments(corpus / "alignments.jsonl").values():
        for rate in (50, 100):
            labels = frame_labels(alignment, rate)
            assert len(labels) == num_frames(alignment.num_samples, rate) > 0
            assert set(labels) <= set(alignment.phones)


def test_load_alignments_names_the_bad_line(tmp_path: Path) -> None:
    good = {"path": "a.wav", "num_samples": 10, "phones": ["sil", "a"], "starts": [0, 4], "ends": [4, 10]}
    gap = {**good, "path": "b.wav", "starts": [0, 5]}
    path = tmp_path / "alignments.jsonl"
    path.write_text(json.dumps(good) + "\n" + json.dumps(gap) + "\n")
    with pytest.raises(ValueError, match=r"alignments.jsonl:2: .*b.wav.*starts at 5"):
        load_alignments(path)
    path.write_text(json.dumps({k: v for k, v in good.items() if k != "ends"}) + "\n")
    with pytest.raises(ValueError, match=r"alignments.jsonl:1: missing key 'ends'"):
        load_alignments(path)
