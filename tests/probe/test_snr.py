"""SNR buckets, the condition tables, and the per-bucket report of the probe driver.

Oracles: bucket assignment by hand; the SNR of each written copy measured from the audio (numpy); a bucket's
metrics against the same probe run on a table holding that bucket's rows only.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from ssl_audio.audio import load_audio
from ssl_audio.data.probe_table import read_table
from ssl_audio.demo.snr_tables import make_condition_table
from ssl_audio.probe.featurizer import mfcc_featurizer
from ssl_audio.probe.report import compare_runs, results_markdown, write_results
from ssl_audio.probe.snr import bucket_names, bucket_rows, snr_bucket, table_snrs
from ssl_audio.probe.tasks import ProbeConfig, run_probe

BY_HAND = [  # SNR (dB) -> bucket of (0, 5, 10, 20): nearest, a tie to the lower; -2.5 .. 25 dB accepted
    (math.inf, "clean"), (0.0, "0dB"), (-2.5, "0dB"), (2.5, "0dB"), (2.501, "5dB"), (7.5, "5dB"), (7.6, "10dB"),
    (15.0, "10dB"), (15.001, "20dB"), (20.0, "20dB"), (25.0, "20dB"), (4.999, "5dB"),
]  # fmt: skip


@pytest.mark.parametrize(("snr", "bucket"), BY_HAND)
def test_snr_bucket_by_hand(snr: float, bucket: str) -> None:
    assert snr_bucket(snr) == bucket


@pytest.mark.parametrize("snr", [-2.51, 25.01, math.nan, -math.inf])
def test_snr_outside_every_bucket_is_refused(snr: float) -> None:
    with pytest.raises(ValueError, match="bucket"):
        snr_bucket(snr)


def test_bucket_names_go_from_clean_to_the_lowest_snr() -> None:
    assert bucket_names() == ("clean", "20dB", "10dB", "5dB", "0dB")
    assert bucket_names((3.0, -5.0)) == ("clean", "3dB", "-5dB")
    assert snr_bucket(-1.0, (3.0, -5.0)) == "-5dB" and snr_bucket(-1.01, (3.0, -5.0)) == "-5dB"
    assert snr_bucket(-0.99, (3.0, -5.0)) == "3dB"


def test_condition_table_rows_and_the_snr_of_each_copy(noise_corpus: Path) -> None:
    clean, table = read_table(noise_corpus / "clean" / "test.tsv"), read_table(noise_corpus / "snr" / "test_snr.tsv")
    assert table.columns == ("path", "snr_db", "speaker", "keyword")
    n = len(clean)
    assert len(table) == 5 * n
    assert table_snrs(table) == [math.inf] * n + [s for s in (0.0, 5.0, 10.0, 20.0) for _ in range(n)]
    assert (
        table.column("keyword") == clean.column("keyword") * 5
        and table.column("speaker") == clean.column("speaker") * 5
    )
    for i in range(n):
        assert table.audio_path(i).resolve() == clean.audio_path(i).resolve()
    for i in range(n, len(table)):
        speech = load_audio(clean.audio_path(i % n)).double().numpy()
        noise = load_audio(table.audio_path(i)).double().numpy() - speech
        measured = 10 * np.log10(np.mean(speech**2) / np.mean(noise**2))
        assert measured == pytest.approx(table_snrs(table)[i], abs=0.01)  # PCM-16 rounding: ~1e-3 dB at 20 dB
    assert list(bucket_rows(table)) == ["clean", "20dB", "10dB", "5dB", "0dB"]
    assert bucket_rows(table)["5dB"] == list(range(2 * n, 3 * n))  # clean, 0 dB, then 5 dB


def test_bad_condition_tables(noise_corpus: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"test_snr\.tsv:1: already has a 'snr_db' column"):
        make_condition_table(noise_corpus / "snr" / "test_snr.tsv", tmp_path)
    with pytest.raises(ValueError, match="distinct finite"):
        make_condition_table(noise_corpus / "clean" / "test.tsv", tmp_path, snrs=(5.0, 5.0))
    bad = tmp_path / "bad.tsv"
    lines = (noise_corpus / "snr" / "test_snr.tsv").read_text().splitlines()
    fields = lines[3].split("\t")
    lines[3] = "\t".join([str(Path("..") / noise_corpus / "snr" / fields[0]), "loud", *fields[2:]])
    bad.write_text("\n".join([lines[0], lines[3]]) + "\n")
    with pytest.raises(ValueError, match=r"bad\.tsv:2: snr_db 'loud' is not a number of dB"):
        table_snrs(read_table(bad, check_files=False))


def _subset_table(source: Path, rows: list[int], out: Path) -> str:
    lines = source.read_text().splitlines()
    out.write_text("\n".join([lines[0], *(lines[1 + i] for i in rows)]) + "\n")  # same folder: paths stay valid
    return str(out)


@pytest.mark.parametrize("head", ["linear", "stats"])
def test_by_snr_scores_each_bucket_as_a_run_on_its_rows_alone(noise_corpus: Path, tmp_path: Path, head: str) -> None:
    snr = noise_corpus / "snr"
    cfg = ProbeConfig(
        task="classify", train=str(noise_corpus / "clean" / "train.tsv"), test=str(snr / "test_snr.tsv"),
        by_snr=True, seeds=2, head=head, epochs=50,
    )  # fmt: skip
    featurizer, cache = mfcc_featurizer(), noise_corpus / "cache"  # MFCCs shared by the tests of this corpus
    results = run_probe(cfg, featurizer, cache_dir=cache)
    assert [b["bucket"] for b in results["by_snr"]] == ["clean", "20dB", "10dB", "5dB", "0dB"]
    assert [b["num_test"] for b in results["by_snr"]] == [4] * 5
    rows = bucket_rows(read_table(cfg.test))
    for entry in (results["by_snr"][0], results["by_snr"][-1]):  # clean and 0 dB
        alone = ProbeConfig(**{**cfg.__dict__, "by_snr": False, "test": _subset_table(
            Path(cfg.test), rows[entry["bucket"]], snr / f"alone_{head}_{entry['bucket']}.tsv")})  # fmt: skip
        expected = run_probe(alone, featurizer, cache_dir=cache)
        assert entry["metrics"] == expected["metrics"] and entry["metrics_std"] == expected["metrics_std"]
    assert results["by_snr"][0]["metrics"]["accuracy"] == 1.0  # clean tones: the training condition
    assert "## By SNR bucket of the test set" in results_markdown(results)
    assert "| 0dB | 4 | " in results_markdown(results)
    write_results(tmp_path / "run" / "mfcc", results)
    table = compare_runs([tmp_path / "run" / "mfcc"])
    assert f"| classify @0dB accuracy | {results['by_snr'][-1]['metrics']['accuracy']:.4f} |" in table


def test_multi_condition_training_reads_the_condition_table(noise_corpus: Path, tmp_path: Path) -> None:
    snr = noise_corpus / "snr"
    cfg = ProbeConfig(task="classify", train=str(snr / "train_snr.tsv"), test=str(snr / "test_snr.tsv"), epochs=20)
    results = run_probe(cfg, mfcc_featurizer(), cache_dir=noise_corpus / "cache")
    assert results["num_train"] == 30 and results["label_column"] == "keyword"
    assert 0.0 <= results["metrics"]["accuracy"] <= 1.0


def test_verify_by_snr_draws_each_buckets_trials_from_its_rows(noise_corpus: Path) -> None:
    snr = noise_corpus / "snr"
    cfg = ProbeConfig(task="verify", train=str(noise_corpus / "clean" / "train.tsv"), test=str(snr / "test_snr.tsv"))
    featurizer, cache = mfcc_featurizer(), noise_corpus / "cache"
    results = run_probe(ProbeConfig(**{**cfg.__dict__, "by_snr": True}), featurizer, cache_dir=cache)
    rows = bucket_rows(read_table(cfg.test))
    last = results["by_snr"][-1]
    assert last["bucket"] == "0dB"
    alone = ProbeConfig(
        **{**cfg.__dict__, "test": _subset_table(Path(cfg.test), rows["0dB"], snr / "alone_verify.tsv")}
    )
    expected = run_probe(alone, featurizer, cache_dir=cache)
    assert last["metrics"] == expected["metrics"]
    assert expected["details"]["trials"] == 4 * 3 // 2  # pairs among the bucket's 4 rows only
