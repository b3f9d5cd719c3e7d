"""Noisy copies (ssl_audio.demo.noisy): exact SNR, seeded per row, tables preserved, errors that name the file.

The oracles are independent of the code under test: SNR is recomputed from the clean and noisy samples
(noise = noisy - clean, or a least-squares fit of the noisy file on clean speech and the noise given), and
the expected table is built from the source table by hand.
"""

from __future__ import annotations

import csv
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from ssl_audio.audio import SAMPLE_RATE
from ssl_audio.demo.coloured_noise import COLOURS, coloured_noise
from ssl_audio.demo.corpus import build_corpus, tiny_config
from ssl_audio.demo.noisy import make_noisy_copy, make_noisy_twin, mix_at_snr
from tests.tool_loader import load_tool

SECONDS = 0.5
QUANTISATION_DB = 0.01  # dB: PCM-16 rounding of a ~-30 dBFS noise changes the measured SNR by far less


def _power_db(x: np.ndarray) -> float:
    return 10 * math.log10(float(np.mean(np.asarray(x, dtype=np.float64) ** 2)))


def _speech_like(rng: np.random.Generator, amplitude: float, seconds: float = SECONDS) -> np.ndarray:
    """A 300 Hz tone with a silent first quarter (so the whole-length power counts silence too)."""
    n = round(seconds * SAMPLE_RATE)
    wave = amplitude * np.sin(2 * np.pi * 300 * np.arange(n) / SAMPLE_RATE + rng.uniform(0, 2 * np.pi))
    wave[: n // 4] = 0.0
    return wave


def _read_tsv(path: Path) -> tuple[list[str], list[list[str]]]:
    with open(path, encoding="utf-8") as f:
        rows = list(csv.reader(f, delimiter="\t"))
    return rows[0], rows[1:]


@pytest.fixture
def labelled(tmp_path: Path) -> Path:
    """corpus/keywords.tsv: 6 quiet tones (peak 0.05) in two speaker folders, with speaker and keyword columns."""
    root = tmp_path / "corpus"
    rng = np.random.default_rng(5)
    lines = ["path\tspeaker\tkeyword"]
    for i in range(6):
        relative = f"audio/keywords/spk{i % 2}/utt{i}.wav"
        (root / relative).parent.mkdir(parents=True, exist_ok=True)
        sf.write(root / relative, _speech_like(rng, 0.05), SAMPLE_RATE, subtype="PCM_16")
        lines.append(f"{relative}\tspk{i % 2}\tword{i % 3}")
    (root / "keywords.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return root / "keywords.tsv"


# --- mixing ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("colour", list(COLOURS))
@pytest.mark.parametrize("snr_db", [-5.0, 0.0, 3.7, 10.0, 20.0])
def test_mix_at_snr_is_exact(colour: str, snr_db: float) -> None:
    rng = np.random.default_rng(0)
    speech = _speech_like(rng, 0.1)
    noise = coloured_noise(len(speech), COLOURS[colour], rng)
    mixture = mix_at_snr(speech, noise, snr_db)
    assert np.abs(mixture).max() <= 1.0  # quiet speech: no rescaling, so mixture - speech is the added noise
    added = mixture - speech
    assert _power_db(speech) - _power_db(added) == pytest.approx(snr_db, abs=1e-3)
    assert np.corrcoef(added, noise)[0, 1] == pytest.approx(1.0, abs=1e-9)  # the noise given, only scaled


def test_a_mixture_over_full_scale_is_scaled_down_keeping_the_snr() -> None:
    rng = np.random.default_rng(1)
    speech = _speech_like(rng, 0.9)
    noise = coloured_noise(len(speech), COLOURS["white"], rng)
    mixture = mix_at_snr(speech, noise, -5.0)  # noise 5 dB louder than a 0.9-peak tone: would clip
    assert float(np.abs(mixture).max()) == pytest.approx(1.0, abs=1e-12)
    # mixture = a * speech + b * noise exactly; then the SNR of the mixture is Ps a^2 / (Pn b^2).
    (a, b), residual, *_ = np.linalg.lstsq(np.stack([speech, noise], axis=1), mixture, rcond=None)
    assert 0 < a < 1 and residual[0] < 1e-20
    snr = _power_db(speech) + 20 * math.log10(a) - _power_db(noise) - 20 * math.log10(abs(b))
    assert snr == pytest.approx(-5.0, abs=1e-3)


def test_mix_at_snr_rejects_bad_input() -> None:
    speech = np.ones(400)
    with pytest.raises(ValueError, match=r"\(400,\) and \(399,\)"):
        mix_at_snr(speech, np.ones(399), 0.0)
    with pytest.raises(ValueError, match="speech power 0.0"):
        mix_at_snr(np.zeros(400), np.ones(400), 0.0)
    with pytest.raises(ValueError, match="finite"):
        mix_at_snr(speech, np.ones(400), float("nan"))


# --- noisy copies of a table ---------------------------------------------------------------------------


def test_copy_keeps_the_columns_and_meets_each_rows_snr(labelled: Path, tmp_path: Path) -> None:
    out = tmp_path / "noisy"
    table = make_noisy_copy(labelled, out, snr_range=(0.0, 10.0), seed=3)
    assert table == out / "keywords.tsv"
    header, rows = _read_tsv(labelled)
    new_header, new_rows = _read_tsv(table)
    assert new_header == ["path", "snr_db", "speaker", "keyword"]  # the label stays last (classify's default)
    assert [[row[0], *row[2:]] for row in new_rows] == rows  # same paths (relative to the new table), same labels
    snrs = [float(row[1]) for row in new_rows]
    assert all(0.0 <= s <= 10.0 for s in snrs) and len(set(snrs)) == len(snrs)
    for row, snr in zip(rows, snrs):
        clean, rate = sf.read(labelled.parent / row[0], dtype="float64")
        noisy, noisy_rate = sf.read(out / row[0], dtype="float64")
        assert sf.info(str(out / row[0])).subtype == "PCM_16" and rate == noisy_rate == SAMPLE_RATE
        assert noisy.shape == clean.shape
        assert _power_db(clean) - _power_db(noisy - clean) == pytest.approx(snr, abs=QUANTISATION_DB)


def test_copy_writes_the_table_elsewhere_with_paths_relative_to_it(labelled: Path) -> None:
    root = labelled.parent
    table = make_noisy_copy(labelled, root / "noisy", seed=0, table_out=root / "keywords_noisy.tsv")
    _, rows = _read_tsv(table)
    assert rows[0][0] == "noisy/audio/keywords/spk0/utt0.wav" and (root / rows[0][0]).is_file()


def _tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_copies_are_deterministic_in_the_seed_and_differ_across_seeds(labelled: Path, tmp_path: Path) -> None:
    make_noisy_copy(labelled, tmp_path / "a", seed=7)
    make_noisy_copy(labelled, tmp_path / "b", seed=7)
    make_noisy_copy(labelled, tmp_path / "c", seed=8)
    a, b, c = (_tree(tmp_path / name) for name in "abc")
    assert a == b
    assert a.keys() == c.keys() and all(a[name] != c[name] for name in a)  # every wav and the table differ


def test_a_rows_noise_depends_on_the_row_not_on_the_others(labelled: Path, tmp_path: Path) -> None:
    header, *rows = labelled.read_text(encoding="utf-8").splitlines()
    subset = labelled.parent / "subset.tsv"
    subset.write_text("\n".join([header, rows[4], rows[1]]) + "\n", encoding="utf-8")  # reordered, fewer rows
    make_noisy_copy(labelled, tmp_path / "all", seed=2)
    make_noisy_copy(subset, tmp_path / "some", seed=2)
    _, all_rows = _read_tsv(tmp_path / "all" / "keywords.tsv")
    _, some_rows = _read_tsv(tmp_path / "some" / "subset.tsv")
    assert some_rows == [all_rows[4], all_rows[1]]
    for row in some_rows:
        assert (tmp_path / "some" / row[0]).read_bytes() == (tmp_path / "all" / row[0]).read_bytes()


def test_a_missing_audio_file_is_named_before_anything_is_written(labelled: Path, tmp_path: Path) -> None:
    (labelled.parent / "audio/keywords/spk1/utt3.wav").unlink()
    with pytest.raises(ValueError, match=r"keywords.tsv:5: audio file .*spk1/utt3.wav does not exist"):
        make_noisy_copy(labelled, tmp_path / "noisy")
    assert not (tmp_path / "noisy").exists()


def test_copy_refuses_what_it_cannot_do_safely(labelled: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"snr_range .* \(10.0, 0.0\)"):
        make_noisy_copy(labelled, tmp_path / "noisy", snr_range=(10.0, 0.0))
    with pytest.raises(ValueError, match="overwrite its source"):
        make_noisy_copy(labelled, labelled.parent)  # the table onto itself
    table = make_noisy_copy(labelled, tmp_path / "noisy")
    with pytest.raises(ValueError, match="already has a 'snr_db' column"):
        make_noisy_copy(table, tmp_path / "noisier")
    outside = labelled.parent / "outside.tsv"
    outside.write_text("path\tkeyword\n../corpus/audio/keywords/spk0/utt0.wav\tword0\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"outside.tsv:2: audio path '../corpus/.*' must be relative and inside"):
        make_noisy_copy(outside, tmp_path / "escaped")


# --- noisy twin of a corpus folder ----------------------------------------------------------------------


def test_twin_copies_the_audio_folders_and_tables_with_one_noise_per_file(labelled: Path, tmp_path: Path) -> None:
    root = labelled.parent
    (root / "audio/unlabeled/spk9").mkdir(parents=True)
    sf.write(root / "audio/unlabeled/spk9/u.wav", _speech_like(np.random.default_rng(0), 0.05), SAMPLE_RATE)
    twin = make_noisy_twin(root, tmp_path / "twin", tables=("keywords.tsv",), snr_range=(0.0, 5.0), seed=4)
    assert sorted(_tree(twin)) == sorted(["keywords.tsv", *(f"audio/{p}" for p in _tree(root / "audio"))])
    # The twin's table audio is exactly what make_noisy_copy writes for the same seed.
    make_noisy_copy(labelled, tmp_path / "copy", snr_range=(0.0, 5.0), seed=4)
    assert _tree(tmp_path / "copy") == {k: v for k, v in _tree(twin).items() if "unlabeled" not in k}
    with pytest.raises(ValueError, match="no such audio folder"):
        make_noisy_twin(root, tmp_path / "other", audio_dirs=("audio/missing",))


# --- the demo corpus's noisy keyword test set ------------------------------------------------------------


def test_the_demo_corpus_has_a_noisy_keyword_test_set_that_the_tool_can_add_again(tmp_path: Path) -> None:
    corpus = tmp_path / "tiny"
    build_corpus(corpus, tiny_config(seed=0), workers=2)
    header, rows = _read_tsv(corpus / "keywords_test.tsv")
    noisy_header, noisy_rows = _read_tsv(corpus / "keywords_test_noisy.tsv")
    assert noisy_header == ["path", "snr_db", *header[1:]] and len(noisy_rows) == len(rows) > 0
    for row, noisy in zip(rows, noisy_rows):
        assert noisy[0] == f"noisy/{row[0]}" and noisy[2:] == row[1:]
        assert 0.0 <= float(noisy[1]) <= 10.0
        assert sf.info(str(corpus / noisy[0])).frames == sf.info(str(corpus / row[0])).frames
    built = _tree(corpus / "noisy"), (corpus / "keywords_test_noisy.tsv").read_bytes()
    shutil.rmtree(corpus / "noisy")
    (corpus / "keywords_test_noisy.tsv").unlink()
    load_tool("make_demo_corpus").main(["--out", str(corpus), "--noisy-only"])  # an existing corpus, without a rebuild
    assert (_tree(corpus / "noisy"), (corpus / "keywords_test_noisy.tsv").read_bytes()) == built
