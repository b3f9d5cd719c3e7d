"""Probing tasks end to end on synthetic audio with the MFCC baseline, the CLI, the report, and bad input."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from PIL import Image

from ssl_audio.audio import SAMPLE_RATE
from ssl_audio.cli import main
from ssl_audio.data.alignments import Alignment, write_alignments
from ssl_audio.data.probe_table import read_table
from ssl_audio.probe.featurizer import mfcc_featurizer
from ssl_audio.probe.heads import LayerMix, ctc_greedy, layer_stats, pool_mean_std
from ssl_audio.probe.report import compare_runs, plot_layers, results_markdown
from ssl_audio.probe.tasks import ProbeConfig, run_probe


def _tone(rng: np.random.Generator, freqs: list[float], seconds: float, amps: list[float] | None = None) -> np.ndarray:
    t = np.arange(round(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    amps = amps or [1.0] * len(freqs)
    wave = sum(a * np.sin(2 * np.pi * f * t + rng.uniform(0, 2 * np.pi)) for f, a in zip(freqs, amps))
    return 0.3 * wave / max(np.abs(wave).max(), 1e-9)


def _write(root: Path, name: str, wave: np.ndarray, rng: np.random.Generator) -> str:
    noisy = wave + 0.003 * rng.standard_normal(wave.shape)
    sf.write(root / "audio" / name, noisy.astype(np.float32), SAMPLE_RATE, subtype="FLOAT")
    return f"audio/{name}"


def _tsv(path: Path, header: str, rows: list[tuple]) -> str:
    path.write_text("\n".join([header, *("\t".join(map(str, row)) for row in rows)]) + "\n", encoding="utf-8")
    return str(path)


KEYWORDS = {"low": 300.0, "mid": 700.0, "high": 1500.0}  # a "keyword" is a tone


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """keywords_*.tsv (3 tones), speakers_*.tsv (harmonic voices), letters_*.tsv (tone sequences), phones_*.tsv
    with alignments.jsonl (tones and silences per segment)."""
    root = tmp_path_factory.mktemp("probe_corpus")
    (root / "audio").mkdir()
    rng = np.random.default_rng(0)
    for split, count in (("train", 5), ("test", 3)):
        rows = []
        for keyword, freq in KEYWORDS.items():
            for i in range(count):
                wave = _tone(rng, [freq * rng.uniform(0.97, 1.03)], rng.uniform(0.4, 0.7))
                rows.append((_write(root, f"kw_{split}_{keyword}_{i}.wav", wave, rng), f"spk{i}", keyword))
        _tsv(root / f"keywords_{split}.tsv", "path\tspeaker\tkeyword", rows)

    # Speakers: their own pitch and spectral tilt; utterances jitter the pitch by 2%.
    voices = {f"s{k}": (110.0 * 1.35**k, 0.5 + 0.1 * k) for k in range(8)}
    for split, names in (("train", ["s0", "s2", "s4", "s6"]), ("test", ["s1", "s3", "s5", "s7"])):
        rows = []
        for name in names:
            f0, tilt = voices[name]
            for i in range(4):
                pitch = f0 * rng.uniform(0.98, 1.02)
                wave = _tone(rng, [pitch * h for h in range(1, 6)], 0.5, [tilt**h for h in range(5)])
                rows.append((_write(root, f"sv_{name}_{i}.wav", wave, rng), name))
        _tsv(root / f"speakers_{split}.tsv", "path\tspeaker", rows)

    # Letters: a, b, c are tones of 0.12 s, each followed by 0.06 s of near-silence.
    letters = {"a": 500.0, "b": 1200.0, "c": 2500.0}
    for split, count in (("train", 40), ("test", 10)):
        rows = []
        for i in range(count):
            text = "".join(rng.choice(list(letters), size=rng.integers(2, 5)))
            gap = np.zeros(round(0.06 * SAMPLE_RATE))
            wave = np.concatenate([gap] + [np.concatenate([_tone(rng, [letters[c]], 0.12), gap]) for c in text])
            rows.append((_write(root, f"ctc_{split}_{i}.wav", wave, rng), f"spk{i % 3}", text))
        _tsv(root / f"letters_{split}.tsv", "path\tspeaker\ttranscript", rows)

    # Phones: segments of silence, x (600 Hz) and y (1800 Hz) of 0.1-0.3 s, with their alignment.
    phones, alignments = {"sil": None, "x": 600.0, "y": 1800.0}, []
    for split, count in (("train", 10), ("test", 4)):
        rows = []
        for i in range(count):
            labels = ["sil", *rng.choice(["x", "y", "sil"], size=5), "x", "y", "sil"]
            pieces = [
                np.zeros(n) if phones[p] is None else _tone(rng, [phones[p]], n / SAMPLE_RATE)
                for p, n in zip(labels, rng.integers(1600, 4800, size=len(labels)))
            ]
            ends = np.cumsum([len(piece) for piece in pieces]).tolist()
            path = _write(root, f"ph_{split}_{i}.wav", np.concatenate(pieces), rng)
            alignments.append(
                Alignment(
                    path=path,
                    num_samples=ends[-1],
                    phones=tuple(labels),
                    starts=tuple([0, *ends[:-1]]),
                    ends=tuple(ends),
                )
            )
            rows.append((path, f"spk{i}"))
        _tsv(root / f"phones_{split}.tsv", "path\tspeaker", rows)
    write_alignments(root / "alignments.jsonl", alignments)
    return root


def _cfg(corpus: Path, task: str, stem: str, **changes: object) -> ProbeConfig:
    return ProbeConfig(
        task=task, train=str(corpus / f"{stem}_train.tsv"), test=str(corpus / f"{stem}_test.tsv"), **changes
    )


def test_classify_separable_tones_with_mfcc_is_perfect(corpus: Path, tmp_path: Path) -> None:
    results = run_probe(_cfg(corpus, "classify", "keywords"), mfcc_featurizer(), cache_dir=tmp_path)
    assert results["metrics"] == {"accuracy": 1.0, "macro_f1": 1.0}
    assert results["label_column"] == "keyword" and results["probe"] == "layer 0"
    assert results["losses"][-1] < results["losses"][0]


def test_verify_synthetic_speakers_with_mfcc(corpus: Path, tmp_path: Path) -> None:
    results = run_probe(_cfg(corpus, "verify", "speakers"), mfcc_featurizer(), cache_dir=tmp_path)
    metrics = results["metrics"]
    assert metrics["eer"] < 0.1
    assert 0.0 <= metrics["min_dcf"] <= 1.0
    assert metrics["recall@1"] >= 0.9 and metrics["recall@10"] == 1.0
    assert results["details"]["trials"] == 16 * 15 // 2 and results["details"]["target_trials"] == 4 * 6


def test_ctc_learns_tone_letters(corpus: Path, tmp_path: Path) -> None:
    results = run_probe(_cfg(corpus, "ctc", "letters", epochs=60), mfcc_featurizer(), cache_dir=tmp_path)
    assert results["losses"][-1] < 0.5 * results["losses"][0]
    assert results["metrics"]["cer"] < 0.1, results["details"]["examples"]
    assert set(results["metrics"]) == {"cer", "wer"}
    # the S/D/I counts behind each rate: reference lengths from the test table, rates from the counts
    texts = [line.split("\t")[-1] for line in (corpus / "letters_test.tsv").read_text().splitlines()[1:]]
    for metric, reference_length in (("cer", sum(map(len, texts))), ("wer", len(texts))):  # one word per line
        c = results["details"][f"{metric}_counts"]
        assert c["hits"] + c["substitutions"] + c["deletions"] == reference_length
        errors = c["substitutions"] + c["deletions"] + c["insertions"]
        assert errors / reference_length == pytest.approx(results["metrics"][metric], rel=1e-12)


def test_frames_against_synthetic_alignments(corpus: Path, tmp_path: Path) -> None:
    cfg = _cfg(corpus, "frames", "phones", alignments=str(corpus / "alignments.jsonl"), epochs=30)
    results = run_probe(cfg, mfcc_featurizer(), cache_dir=tmp_path)
    assert results["metrics"]["accuracy"] > 0.9 and results["metrics"]["macro_f1"] > 0.85
    assert results["details"]["classes"] == 3


def test_ctc_greedy_decoding_by_hand() -> None:
    assert ctc_greedy([1, 1, 0, 1, 2, 2, 0, 0, 3]) == [1, 1, 2, 3]  # a a _ a b b _ _ c -> a a b c
    assert ctc_greedy(torch.tensor([0, 0, 0])) == []
    assert ctc_greedy([2, 0, 2, 2, 1], blank=0) == [2, 2, 1]


def test_heads_pooling_statistics_and_layer_weights() -> None:
    frames = np.arange(24, dtype=np.float32).reshape(2, 3, 4)  # (K=2, T=3, D=4)
    pooled = pool_mean_std(frames)
    assert pooled.shape == (2, 8)
    np.testing.assert_allclose(pooled[0, :4], [4, 5, 6, 7])
    np.testing.assert_allclose(pooled[0, 4:], np.full(4, np.sqrt(32 / 3)), rtol=1e-6)
    mean, std = layer_stats([frames, frames + 1], frame_axis=1)
    np.testing.assert_allclose(mean[1], [16.5, 17.5, 18.5, 19.5])
    mix = LayerMix(2)
    assert mix.weights == [0.5, 0.5]
    torch.testing.assert_close(mix(torch.from_numpy(frames).transpose(0, 1)), torch.from_numpy(frames).mean(0))


def test_cli_probe_all_layers_and_report(corpus: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    runs = []
    for baseline in ("mfcc", "logmel"):
        out = tmp_path / baseline
        args = ["probe", "classify", "--baseline", baseline, "--train", str(corpus / "keywords_train.tsv")]
        test = ["--test", str(corpus / "keywords_test.tsv")]
        assert main([*args, *test, "--out", str(out), "--all-layers", "--seeds", "2"]) == 0
        results = json.loads((out / "results.json").read_text())
        assert results["metrics"]["accuracy"] == 1.0 and "accuracy" in (out / "results.md").read_text()
        assert len(results["metrics_per_seed"]) == 2 and results["metrics_std"]["accuracy"] == 0.0
        assert [p["layer"] for p in results["per_layer"]] == [0]
        assert Image.open(out / "layers.png").size == (480, 320)
        assert any((out / "cache").rglob("*.npy"))
        runs.append(str(out))
    capsys.readouterr()
    assert main(["probe-report", *runs]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0] == "|  | mfcc | logmel |"
    assert "| classify accuracy | **1.0000** | **1.0000** |" in table  # a tie: both best


def test_report_side_by_side_fills_missing_metrics(tmp_path: Path) -> None:
    base = {"featurizer": "mfcc", "probe": "layer 0", "config": {}}
    runs = (
        ("a", "classify", {"accuracy": 0.5}),
        ("b", "verify", {"eer": 0.25}),
        ("c", "verify", {"eer": 0.125}),
        ("d", "classify", {"accuracy": 0.75}),
    )
    for name, task, metrics in runs:
        (tmp_path / name).mkdir()
        (tmp_path / name / "results.json").write_text(json.dumps({**base, "task": task, "metrics": metrics}))
    table = compare_runs([tmp_path / name for name, _, _ in runs]).splitlines()
    assert table[0] == "|  | a | b | c | d |"
    assert "| classify accuracy | 0.5000 | - | - | **0.7500** |" in table  # higher is better
    assert "| verify eer | - | 0.2500 | **0.1250** | - |" in table  # lower is better
    with pytest.raises(ValueError, match="no results"):
        compare_runs([tmp_path / "missing"])


def test_report_names_rows_by_folder_when_one_task_has_two_test_sets(tmp_path: Path) -> None:
    base = {"probe": "layer 0", "config": {}, "task": "classify"}
    cells = {("keywords", "mfcc"): 0.9, ("keywords", "model"): 0.95, ("keywords_noisy", "mfcc"): 0.5,
             ("keywords_noisy", "model"): 0.25}  # fmt: skip
    for (group, name), accuracy in cells.items():
        (tmp_path / group / name).mkdir(parents=True)
        result = {**base, "featurizer": name, "metrics": {"accuracy": accuracy}}
        (tmp_path / group / name / "results.json").write_text(json.dumps(result))
    table = compare_runs([tmp_path / group / name for group, name in cells]).splitlines()
    assert table[0] == "|  | mfcc | model |"
    assert "| keywords: classify accuracy | 0.9000 | **0.9500** |" in table
    assert "| keywords_noisy: classify accuracy | **0.5000** | 0.2500 |" in table


def test_plot_layers_draws_points(tmp_path: Path) -> None:
    path = plot_layers(tmp_path / "p.png", [0, 1, 2, 3], [0.2, 0.8, 0.6, 0.6], title="t", ylabel="accuracy")
    image = Image.open(path).convert("RGB")
    assert image.size == (480, 320)
    blue = np.all(np.asarray(image) == (31, 119, 180), axis=-1)
    assert blue.sum() > 100  # the line and its dots are drawn


# ---------------------------------------------------------------- bad input


def _copy_tsv(corpus: Path, name: str, tmp_path: Path, edit) -> str:  # noqa: ANN001
    """A copy of corpus/name in corpus/ (paths stay valid) with edit(lines) applied."""
    lines = (corpus / name).read_text().splitlines()
    path = corpus / f"edited_{tmp_path.name}_{name}"
    path.write_text("\n".join(edit(lines)) + "\n")
    return str(path)


def test_missing_audio_names_the_tsv_line(corpus: Path, tmp_path: Path) -> None:
    def edit(lines: list[str]) -> list[str]:
        return [*lines[:3], "audio/nowhere.wav\tspk0\tlow", *lines[3:]]

    train = _copy_tsv(corpus, "keywords_train.tsv", tmp_path, edit)
    cfg = ProbeConfig(task="classify", train=train, test=str(corpus / "keywords_test.tsv"))
    with pytest.raises(ValueError, match=r"keywords_train\.tsv:4: audio file .*nowhere\.wav does not exist"):
        run_probe(cfg, mfcc_featurizer())


def test_class_only_in_test_is_named(corpus: Path, tmp_path: Path) -> None:
    test = _copy_tsv(
        corpus, "keywords_test.tsv", tmp_path, lambda lines: [*lines, lines[1].rsplit("\t", 1)[0] + "\tloud"]
    )
    cfg = ProbeConfig(task="classify", train=str(corpus / "keywords_train.tsv"), test=test)
    with pytest.raises(ValueError, match=r"keywords_test\.tsv:11: class 'loud' .*never occurs in the training set"):
        run_probe(cfg, mfcc_featurizer())


def test_empty_transcript_and_unknown_character_are_named(corpus: Path, tmp_path: Path) -> None:
    def blank(lines: list[str]) -> list[str]:
        return [lines[0], lines[1], lines[2].rsplit("\t", 1)[0] + "\t ", *lines[3:]]

    train = _copy_tsv(corpus, "letters_train.tsv", tmp_path, blank)
    cfg = ProbeConfig(task="ctc", train=train, test=str(corpus / "letters_test.tsv"))
    with pytest.raises(ValueError, match=r"letters_train\.tsv:3: empty 'transcript'"):
        run_probe(cfg, mfcc_featurizer())
    test = _copy_tsv(corpus, "letters_test.tsv", tmp_path, lambda lines: [lines[0], lines[1] + "z", *lines[2:]])
    cfg = ProbeConfig(task="ctc", train=str(corpus / "letters_train.tsv"), test=test)
    with pytest.raises(ValueError, match=r"letters_test\.tsv:2: character\(s\) 'z'"):
        run_probe(cfg, mfcc_featurizer())


def test_bad_tables_and_options(corpus: Path, tmp_path: Path) -> None:
    short = _copy_tsv(corpus, "keywords_train.tsv", tmp_path, lambda lines: [*lines[:5], "audio/x.wav\tlow"])
    cfg = ProbeConfig(task="classify", train=short, test=str(corpus / "keywords_test.tsv"))
    with pytest.raises(ValueError, match=r":6: 2 fields, expected 3"):
        run_probe(cfg, mfcc_featurizer())
    cfg = _cfg(corpus, "classify", "keywords", label_column="accent")
    with pytest.raises(ValueError, match="no column 'accent'"):
        run_probe(cfg, mfcc_featurizer())
    with pytest.raises(ValueError, match="needs --alignments"):
        run_probe(_cfg(corpus, "frames", "phones"), mfcc_featurizer())
    with pytest.raises(ValueError, match="layer 3 is out of range for mfcc"):
        run_probe(_cfg(corpus, "classify", "keywords", layer=3), mfcc_featurizer())


def test_several_seeds_report_the_mean_and_std_of_single_seed_runs(corpus: Path, tmp_path: Path) -> None:
    """Oracle: three separate single-seed runs; a short CTC training leaves the seeds' CERs apart."""
    cfg = _cfg(corpus, "ctc", "letters", epochs=4, seed=4)
    single = [run_probe(replace(cfg, seed=s), mfcc_featurizer(), cache_dir=tmp_path)["metrics"] for s in (4, 5, 6)]
    results = run_probe(replace(cfg, seeds=3), mfcc_featurizer(), cache_dir=tmp_path)
    assert results["metrics_per_seed"] == single
    cers = [m["cer"] for m in single]
    assert len(set(cers)) > 1  # the seeds differ, so the mean and std say something
    assert results["metrics"]["cer"] == pytest.approx(np.mean(cers))
    assert results["metrics_std"]["cer"] == pytest.approx(np.std(cers, ddof=1))
    markdown = results_markdown(results)
    assert "| metric | mean of 3 seeds | std | seed 4 | seed 5 | seed 6 |" in markdown
    with pytest.raises(ValueError, match=r"ProbeConfig.seeds: must be an integer >= 1, got 0"):
        run_probe(replace(cfg, seeds=0), mfcc_featurizer())


def _trial_lines(table_path: Path, pairs: list[tuple[int, int]]) -> list[str]:
    table = read_table(table_path)
    speakers = table.column("speaker")
    return [f"{int(speakers[i] == speakers[j])} {table.paths[i]} {table.paths[j]}" for i, j in pairs]


def test_verify_on_a_trial_list_scores_exactly_its_trials(corpus: Path, tmp_path: Path) -> None:
    test_path = corpus / "speakers_test.tsv"
    n = len(read_table(test_path))
    every = [(i, j) for i in range(n) for j in range(i + 1, n)]
    shuffled = [every[k] for k in np.random.default_rng(0).permutation(len(every))]
    (tmp_path / "all.txt").write_text("\n".join(_trial_lines(test_path, shuffled)) + "\n")
    pairs = run_probe(_cfg(corpus, "verify", "speakers"), mfcc_featurizer(), cache_dir=tmp_path)
    listed = run_probe(
        _cfg(corpus, "verify", "speakers", trials=str(tmp_path / "all.txt")), mfcc_featurizer(), cache_dir=tmp_path
    )
    assert listed["metrics"] == pytest.approx(pairs["metrics"], abs=1e-12)  # the same scores in another order
    some = every[:40]  # rows 0 and 1 against all later rows, row 2 against 3..13: 6 of them target trials
    (tmp_path / "some.txt").write_text("\n".join(_trial_lines(test_path, some)))
    subset = run_probe(
        _cfg(corpus, "verify", "speakers", trials=str(tmp_path / "some.txt")), mfcc_featurizer(), cache_dir=tmp_path
    )
    assert subset["details"]["trials"] == 40 and subset["details"]["target_trials"] == 6


def test_bad_trial_lists_name_the_line(corpus: Path, tmp_path: Path) -> None:
    test_path = corpus / "speakers_test.tsv"
    good = _trial_lines(test_path, [(0, 1), (0, 5)])
    cases = {
        "missing.txt": (
            [good[0], "1 nowhere.wav " + good[0].split()[2]],
            r"missing\.txt:2: 'nowhere\.wav' is not a row",
        ),
        "label.txt": ([good[0], "2" + good[1][1:]], r"label\.txt:2: label '2' is not 1"),
        "short.txt": (["1 a.wav"], r"short\.txt:1: expected `label enroll test`, got 2 fields"),
        "one_kind.txt": ([good[0]], r"needs both target \(1\) and non-target \(0\) trials"),
    }
    for name, (lines, message) in cases.items():
        (tmp_path / name).write_text("\n".join(lines) + "\n")
        with pytest.raises(ValueError, match=message):
            run_probe(_cfg(corpus, "verify", "speakers", trials=str(tmp_path / name)), mfcc_featurizer())
    with pytest.raises(ValueError, match="not both"):
        run_probe(
            _cfg(corpus, "verify", "speakers", trials=str(tmp_path / "label.txt"), max_trials=5), mfcc_featurizer()
        )
