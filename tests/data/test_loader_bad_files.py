"""Bad files the header-only manifest accepted (silent, truncated, deleted later) cost their utterance, not the run."""

from __future__ import annotations

import io
import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from ssl_audio.audio import SAMPLE_RATE, AudioError
from ssl_audio.data.loader import TooManyBadUtterances, make_file_loader, set_epoch
from ssl_audio.data.manifest import build_manifests, load_manifest

SCALE = 2.0**-17  # ramp step: sample i holds i * SCALE, exact in float32 (and in a FLOAT wav) for i < 2**24
GOOD = {"utt0.wav": 8000, "utt1.wav": 12_000, "utt2.wav": 16_000, "utt3.wav": 4000, "utt4.wav": 6400}
BAD = {"deleted.wav": "unreadable", "silent.wav": "silent", "truncated.flac": "unreadable"}  # file -> reason
REPO = Path(__file__).resolve().parents[2]


def ramp(num_samples: int) -> np.ndarray:
    return (np.arange(num_samples) * SCALE).astype(np.float32)


def noise(num_samples: int, seed: int) -> np.ndarray:
    return (0.3 * np.random.default_rng(seed).standard_normal(num_samples)).astype(np.float32)


def write_bad_corpus(root: Path, good: dict[str, int], bad=tuple(BAD)) -> Path:
    """audio/ with `good` ramps plus the `bad` files of BAD, and manifest/train.tsv built over all of them (the
    header-only scan accepts every one). Delete deleted.wav once the manifest is loaded."""
    audio = root / "audio"
    audio.mkdir()
    for name, n in good.items():
        sf.write(audio / name, ramp(n), SAMPLE_RATE, subtype="FLOAT")
    if "silent.wav" in bad:
        sf.write(audio / "silent.wav", np.zeros(8000, dtype=np.float32), SAMPLE_RATE, subtype="PCM_16")
    if "deleted.wav" in bad:
        sf.write(audio / "deleted.wav", noise(9000, seed=1), SAMPLE_RATE, subtype="PCM_16")
    if "truncated.flac" in bad:
        flac = io.BytesIO()
        sf.write(flac, noise(16_000, seed=2), SAMPLE_RATE, format="FLAC")
        (audio / "truncated.flac").write_bytes(flac.getvalue()[: len(flac.getvalue()) // 3])  # header survives
    summary = build_manifests([audio], root / "manifest", valid_fraction=0.0)
    assert summary["train_files"] == len(good) + len(bad)  # the manifest accepted them all
    return root / "manifest" / "train.tsv"


@pytest.fixture
def manifest(tmp_path):
    loaded = load_manifest(write_bad_corpus(tmp_path, GOOD))
    (tmp_path / "audio" / "deleted.wav").unlink()  # mid-run: after the run checked its manifest
    return loaded


def rows(manifest, names) -> set[int]:
    return {manifest.paths.index(name) for name in names}


def passes(loader, epochs: int) -> list[list[tuple[list[int], list[int], torch.Tensor]]]:
    """Per epoch, per yielded batch: its rows, the rows skipped with it, and its waves; and the bad count after
    each epoch."""
    seen = []
    for epoch in range(epochs):
        set_epoch(loader, epoch)
        seen.append([(b.indices.tolist(), [s.index for s in b.skipped], b.waves) for b in loader])
        seen[-1].append(([], [], torch.tensor(loader.utterances_bad)))
    return seen


def test_audio_error_survives_pickling():
    err = AudioError("/data/a.flac", "unreadable", "flac decoder lost sync")
    back = pickle.loads(pickle.dumps(err))
    assert type(back) is AudioError and str(back) == "/data/a.flac: unreadable (flac decoder lost sync)"
    assert (back.path, back.reason, back.detail) == ("/data/a.flac", "unreadable", "flac decoder lost sync")
    assert str(pickle.loads(pickle.dumps(AudioError("b.wav", "silent")))) == "b.wav: silent"


@pytest.mark.parametrize("collate_mode", ["pad", "crop"])
def test_bad_files_are_skipped_alike_with_and_without_workers(manifest, collate_mode):
    kwargs = dict(max_samples=None, random_crop=True, max_batch_seconds=1.0, seed=4, collate_mode=collate_mode)
    inline, workers = make_file_loader(manifest, **kwargs), make_file_loader(manifest, **kwargs, num_workers=2)
    reports: dict[str, list[str]] = {"inline": [], "workers": []}
    inline.report, workers.report = reports["inline"].append, reports["workers"].append
    a, b = passes(inline, 2), passes(workers, 2)
    flat_a, flat_b = [x for epoch in a for x in epoch], [x for epoch in b for x in epoch]
    assert [(i, s) for i, s, _ in flat_a] == [(i, s) for i, s, _ in flat_b]  # the same rows in the same batches
    assert all(torch.equal(x, y) for (_, _, x), (_, _, y) in zip(flat_a, flat_b))
    good, bad = rows(manifest, GOOD), rows(manifest, BAD)
    for epoch, batches in enumerate(a):  # every good row once per epoch, every bad row skipped once per epoch
        assert sorted(r for i, _, _ in batches for r in i) == sorted(good)
        assert {r for _, s, _ in batches for r in s} <= bad  # (a batch of bad rows alone is not yielded)
        assert int(batches[-1][2]) == 3 * (epoch + 1)
    if collate_mode == "pad":  # waves are the files' own samples
        for indices, _, waves in flat_a:
            for row, index in enumerate(indices):
                n = GOOD[manifest.paths[index]]
                assert torch.equal(waves[row, :n], torch.from_numpy(ramp(n)))
    for loader, lines in ((inline, reports["inline"]), (workers, reports["workers"])):
        assert (loader.utterances_seen, loader.utterances_bad, loader.bad_files) == (2 * len(manifest), 6, 3)
        assert len(lines) == 3  # each bad file told once, not once per epoch
        for name, reason in BAD.items():
            [line] = [x for x in lines if f"{name}: " in x]
            assert str(manifest.audio_path(manifest.paths.index(name))) in line and f": {reason}" in line
            assert "\n" not in line


def test_a_batch_of_only_bad_files_is_not_yielded(manifest):
    loader = make_file_loader(manifest, max_samples=None, random_crop=False, max_batch_seconds=1.0, max_batch_size=1)
    loader.report = lambda line: None
    yielded = [batch.indices.tolist() for batch in loader]
    assert len(loader) == len(manifest) and sorted(yielded) == [[r] for r in sorted(rows(manifest, GOOD))]
    assert loader.state_dict()["position"] == len(manifest)  # the skipped batches count as done


def test_resume_gives_the_same_batches_and_counts(manifest, tmp_path):
    kwargs = dict(max_samples=5000, random_crop=True, max_batch_seconds=6000 / SAMPLE_RATE, seed=5, epoch=1)
    full_loader = make_file_loader(manifest, **kwargs, num_workers=2)
    full_lines: list[str] = []
    full_loader.report = full_lines.append
    full = [(b.indices.tolist(), [s.index for s in b.skipped]) for b in full_loader]
    loader = make_file_loader(manifest, **kwargs, num_workers=2)
    first_lines: list[str] = []
    loader.report = first_lines.append
    taken = []
    for batch in loader:
        taken.append((batch.indices.tolist(), [s.index for s in batch.skipped]))
        if len(taken) == 3:
            break
    torch.save(loader.state_dict(), tmp_path / "state.pt")
    state = torch.load(tmp_path / "state.pt", weights_only=True)  # as a checkpoint holds it
    assert state["utterances_seen"] == sum(len(i) + len(s) for i, s in taken)
    resumed = make_file_loader(manifest, **kwargs)
    resumed.load_state_dict(state)
    later_lines: list[str] = []
    resumed.report = later_lines.append
    rest = [(b.indices.tolist(), [s.index for s in b.skipped]) for b in resumed]
    assert taken + rest == full
    assert sorted(first_lines + later_lines) == sorted(full_lines) and len(full_lines) == 3  # none told twice
    assert resumed.state_dict() | {"position": 0} == full_loader.state_dict() | {"position": 0}
    assert (resumed.utterances_seen, resumed.utterances_bad, resumed.bad_files) == (len(manifest), 3, 3)


def test_too_many_bad_files_stop_with_one_line(manifest):
    n = len(manifest)  # 8 rows, 3 of them bad
    kwargs = dict(max_samples=None, random_crop=False, max_batch_seconds=1.0, max_batch_size=1, bad_fraction_after=n)
    loader = make_file_loader(manifest, **kwargs, max_bad_fraction=0.3)
    loader.report = lambda line: None
    order = [row for batch in loader.batch_sampler for row in batch]
    last_bad = next(row for row in reversed(order) if row in rows(manifest, BAD))
    got = []
    with pytest.raises(TooManyBadUtterances) as info:
        got.extend(batch.indices.tolist() for batch in loader)
    message = str(info.value)
    assert isinstance(info.value, ValueError) and "\n" not in message
    assert message.startswith(f"3 of {n} utterances loaded so far were unusable (37.5%, 3 distinct files), ")
    assert "more than data.max_bad_fraction=0.3; " in message
    assert f"last: row {last_bad}: {manifest.audio_path(last_bad)}: " in message
    # Judged only at the last batch, the 8th utterance: every good one before it came through.
    assert len(got) == len(GOOD) - (order[-1] in rows(manifest, GOOD))
    under = make_file_loader(manifest, **kwargs, max_bad_fraction=0.375)  # 3/8 is not more than 0.375
    under.report = lambda line: None
    assert len([*under]) == len(GOOD)
    with pytest.raises(ValueError, match=r"data.max_bad_fraction must be in \[0, 1\), got 1.0"):
        make_file_loader(manifest, **kwargs, max_bad_fraction=1.0)


def test_default_limit_tolerates_a_bad_file_early_in_a_run(manifest):
    loader = make_file_loader(manifest, max_samples=None, random_crop=False, max_batch_seconds=1.0)
    loader.report = lambda line: None
    assert sorted(r for batch in loader for r in batch.indices.tolist()) == sorted(rows(manifest, GOOD))
    assert loader.utterances_bad == 3  # 3 of 8: far over 1 %, but too few utterances seen to judge


def run_pretrain(corpus: Path, run_dir: Path, *extra: str) -> subprocess.CompletedProcess:
    overrides = [
        "train.cpu=true", "seed=3", "data.max_samples=16000", "data.max_batch_seconds=2.0", "data.num_workers=1",
        "model.family=wav2vec2", "model.preset=tiny", "schedule.warmup_updates=1", "train.max_updates=3",
        "train.log_every=1", "train.valid_every=1000", "train.save_every=1000",
        f"data.manifest_dir={corpus / 'manifest'}", f"run_dir={run_dir}", *extra,
    ]  # fmt: skip
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", CUDA_VISIBLE_DEVICES="", TQDM_DISABLE="1")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p)
    recipe = corpus / "recipe.yaml"
    recipe.write_text("{}\n")  # everything comes from the overrides
    command = [sys.executable, "-m", "ssl_audio.cli", "pretrain", str(recipe), *overrides]
    return subprocess.run(command, env=env, cwd=REPO, capture_output=True, text=True, timeout=300)


@pytest.mark.slow
def test_pretrain_skips_a_truncated_file_and_stops_when_all_are_gone(tmp_path):
    good = {f"clip{i}.wav": 12_000 + 1000 * i for i in range(6)}
    write_bad_corpus(tmp_path, good, bad=("truncated.flac",))
    # 1 of 7 files is bad, over the 1 % default: the run must still finish, as it is too early to judge.
    done = run_pretrain(tmp_path, tmp_path / "run")
    assert done.returncode == 0, done.stderr[-4000:]
    assert "pretrain: 3 updates" in done.stdout
    log = (tmp_path / "run" / "train.log").read_text()
    assert log.count("skipped unusable utterance") == 1
    assert f"{tmp_path / 'audio' / 'truncated.flac'}: unreadable" in log
    assert sorted(p.name for p in (tmp_path / "run").glob("step_*")) == ["step_00000003"]
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    scalars = EventAccumulator(str(tmp_path / "run" / "tensorboard")).Reload().Scalars("train/bad_files")
    assert [s.step for s in scalars] == [1, 2, 3] and scalars[-1].value == 1.0
    # Every file now silent: the loader skips epoch after epoch, then stops with one line and exit 2.
    for name, n in good.items():
        sf.write(tmp_path / "audio" / name, np.zeros(n, dtype=np.float32), SAMPLE_RATE, subtype="FLOAT")
    gone = run_pretrain(tmp_path, tmp_path / "run_gone")
    assert gone.returncode == 2, gone.stderr[-4000:]
    last = gone.stderr.strip().splitlines()[-1]
    assert last.startswith("ssl-audio pretrain: error: 500 of 500 utterances loaded so far were unusable (100.0%")
    assert "data.max_bad_fraction=0.01; last: row " in last and "Traceback" not in gone.stderr
