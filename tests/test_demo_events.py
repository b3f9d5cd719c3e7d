"""The demo corpus's audio events set: tables, class balance, labels, SNR of every event, seeds and splits."""

from __future__ import annotations

import csv
import json
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from ssl_audio.audio import SAMPLE_RATE
from ssl_audio.data.probe_table import MULTI_LABEL_SEPARATOR, read_table
from ssl_audio.demo.events import (
    BACKGROUND_DBFS,
    CLIP_SECONDS,
    EVENT_CLASSES,
    SNR_DB,
    TINY_EVENTS,
    EventsConfig,
    active_power,
    add_events,
    render_parts,
)
from tests.tool_loader import load_tool


def _fake_corpus(root: Path) -> Path:
    """keywords_{train,test}.tsv with a few 'spoken' words (noise-modulated harmonics), as the events set needs."""
    rng = np.random.default_rng(5)
    (root / "audio").mkdir(parents=True)
    for split in ("train", "test"):
        lines = ["path\tspeaker\tkeyword"]
        for i in range(3):
            t = np.arange(round(0.6 * SAMPLE_RATE)) / SAMPLE_RATE
            word = np.sin(2 * np.pi * 140 * t) * (0.5 + 0.5 * np.sin(2 * np.pi * 4 * t)) * 0.3
            padded = np.concatenate([np.zeros(2000), word + 0.001 * rng.standard_normal(len(t)), np.zeros(2000)])
            sf.write(root / "audio" / f"{split}{i}.wav", padded.astype(np.float32), SAMPLE_RATE, subtype="PCM_16")
            lines.append(f"audio/{split}{i}.wav\tspk{i}\tword")
        (root / f"keywords_{split}.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return root


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = _fake_corpus(tmp_path_factory.mktemp("events") / "corpus")
    start = time.perf_counter()
    counts = add_events(root, seed=0, config=TINY_EVENTS)
    assert time.perf_counter() - start < 10  # seconds, not minutes
    assert counts == {"events_train": 21, "events_multi_train": 12, "events_test": 14, "events_multi_test": 8}
    return root


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, encoding="utf-8") as f:
        return list(csv.DictReader(f, delimiter="\t"))


def test_tables_are_probe_tables_with_balanced_classes(corpus: Path) -> None:
    for split in ("train", "test"):
        table = read_table(corpus / f"events_{split}.tsv")  # every audio file exists
        assert table.columns == ("path", "snr_db", "event")
        per_class = TINY_EVENTS.single_per_class[split]
        assert sorted(table.column("event")) == sorted(EVENT_CLASSES * per_class)
        assert all(SNR_DB[0] <= float(v) <= SNR_DB[1] for v in table.column("snr_db"))
        multi = read_table(corpus / f"events_multi_{split}.tsv")
        assert multi.columns == ("path", "events")
        for cell in multi.column("events"):
            names = cell.split(MULTI_LABEL_SEPARATOR)
            assert 1 <= len(names) <= 3 and names == sorted(set(names)) and set(names) <= set(EVENT_CLASSES)
        for i in range(len(multi)):
            audio, rate = sf.read(multi.audio_path(i))
            assert rate == SAMPLE_RATE and len(audio) == round(CLIP_SECONDS * SAMPLE_RATE)
            assert np.abs(audio).max() < 1.0
    assert json.loads((corpus / "events" / "events.json").read_text())["classes"] == list(EVENT_CLASSES)


@pytest.mark.parametrize("names", [(name,) for name in EVENT_CLASSES] + [("chord", "clicks", "speech")])
def test_each_event_sits_at_its_snr_over_the_background(names: tuple[str, ...]) -> None:
    speech = [np.sin(np.arange(6000) / 7.0) * np.hanning(6000)]
    parts = render_parts(names, np.random.default_rng(3), speech)
    background = float(np.mean(parts.background**2))
    assert 10 * np.log10(background) == pytest.approx(BACKGROUND_DBFS, abs=1e-6)  # the noise's RMS level
    assert len(parts.events) == len(names)
    for event, snr in zip(parts.events, parts.snr_db):
        nonzero = np.flatnonzero(event)
        assert 0.3 * SAMPLE_RATE < nonzero[-1] - nonzero[0] + 1 <= 1.6 * SAMPLE_RATE  # an active stretch
        assert 10 * np.log10(active_power(event) / background) == pytest.approx(snr, abs=1e-9)
    clip = parts.mixed()
    assert np.abs(clip).max() <= 0.98 + 1e-12
    scale = clip / (parts.background + sum(parts.events))  # one common factor: the SNRs are kept
    assert np.allclose(scale, scale[0])


def test_seeded_and_split_by_seed(corpus: Path, tmp_path: Path) -> None:
    again = _fake_corpus(tmp_path / "again")
    add_events(again, seed=0, config=TINY_EVENTS)
    other = _fake_corpus(tmp_path / "other")
    add_events(other, seed=1, config=TINY_EVENTS)
    name = "events/multi_test/00003.wav"
    assert (again / name).read_bytes() == (corpus / name).read_bytes()
    assert (other / name).read_bytes() != (corpus / name).read_bytes()
    train = sf.read(corpus / "events/single_train/00000.wav")[0]  # the same class and index in the two splits
    test = sf.read(corpus / "events/single_test/00000.wav")[0]
    assert _rows(corpus / "events_train.tsv")[0]["event"] == _rows(corpus / "events_test.tsv")[0]["event"]
    assert not np.allclose(train, test)


def test_bad_config_and_missing_keywords(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="EventsConfig.multi must give train and test counts"):
        EventsConfig(single_per_class={"train": 1, "test": 1}, multi={"train": 0, "test": 1})
    with pytest.raises(ValueError, match="keywords_train.tsv"):
        add_events(tmp_path, seed=0, config=TINY_EVENTS)


def test_the_tool_adds_the_events_set_to_a_corpus(corpus: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    tool = load_tool("make_demo_corpus")
    with pytest.raises(SystemExit):
        tool.main(["--out", str(tmp_path), "--events-only"])
    assert "corpus.json: not found; --events-only needs a corpus built by this tool" in capsys.readouterr().err
    again = _fake_corpus(tmp_path / "again")
    (again / "corpus.json").write_text(json.dumps({"seed": 0}), encoding="utf-8")
    tool.main(["--out", str(again), "--events-only", "--tiny"])  # seeded by corpus.json, as a full build
    assert "events_multi_test.tsv 8" in capsys.readouterr().out
    for name in ("events_train.tsv", "events_multi_test.tsv", "events/multi_train/00011.wav"):
        assert (again / name).read_bytes() == (corpus / name).read_bytes()
