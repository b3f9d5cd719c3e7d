"""Sharded input: a small manifest packed by pack_shards, read back by make_shard_loader and compared with the
files themselves (load_audio, AudioDataset, the label file)."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from ssl_audio.audio import SAMPLE_RATE, load_audio
from ssl_audio.data import shard_dataset
from ssl_audio.data.dataset import AudioDataset
from ssl_audio.data.labels import load_labels, manifest_hash, write_labels
from ssl_audio.data.loader import make_file_loader, set_epoch
from ssl_audio.data.manifest import build_manifests, load_manifest
from ssl_audio.data.shard_dataset import ShardError, make_shard_loader
from ssl_audio.data.shards import load_shard_index, pack_shards, split_into_shards

NUM_ROWS = 24
MAX_SAMPLES = 12_000  # crops most rows: the crop draw is tested, not only whole files
HOP = 320  # samples per label frame at 50 Hz
LOADER = dict(max_samples=MAX_SAMPLES, random_crop=True, max_batch_seconds=3.0, seed=7)


def write_corpus(root: Path) -> Path:
    """NUM_ROWS files of 0.4 to 2 s in three codings (FLAC 16 kHz, PCM wav at 8 kHz, stereo float wav), their
    train.tsv, and a label file whose frame j of row i holds (13 i + j) mod 100."""
    audio = root / "audio"
    audio.mkdir()
    rng = np.random.default_rng(0)
    for i in range(NUM_ROWS):
        seconds = 0.4 + 1.6 * rng.random()
        if i % 3 == 0:
            sf.write(audio / f"u{i:02d}.flac", 0.3 * rng.standard_normal(int(seconds * 16_000)), 16_000)
        elif i % 3 == 1:
            sf.write(audio / f"u{i:02d}.wav", 0.3 * rng.standard_normal(int(seconds * 8000)), 8000, subtype="PCM_16")
        else:
            data = (0.2 * rng.standard_normal((int(seconds * 16_000), 2))).astype(np.float32)
            sf.write(audio / f"u{i:02d}.wav", data, 16_000, subtype="FLOAT")
    build_manifests([audio], root / "manifest", valid_fraction=0.0)
    manifest = load_manifest(root / "manifest" / "train.tsv")
    rows = [(13 * i + np.arange(n // HOP)) % 100 for i, n in enumerate(manifest.num_samples)]
    write_labels(root / "km.labels", manifest, rows, k=100, rate=50.0, source="test")
    return root / "manifest" / "train.tsv"


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(train.tsv, shard folder): the corpus packed with its labels into 6 shards."""
    root = tmp_path_factory.mktemp("corpus")
    tsv = write_corpus(root)
    seconds = load_manifest(tsv).seconds
    index = pack_shards(tsv, root / "shards", shard_seconds=seconds / 6 + 1e-3, labels=[root / "km.labels"])
    assert len(index.shards) == 6
    return tsv, root / "shards"


def epoch_batches(loader, epoch: int) -> list:
    set_epoch(loader, epoch)
    return list(loader)


def utterances(batches) -> list[tuple[int, int, torch.Tensor, tuple[torch.Tensor, ...]]]:
    """(row, offset, wave, labels) of every utterance, in delivery order."""
    out = []
    for batch in batches:
        for b in range(len(batch)):
            n = int(batch.lengths[b])
            labels = tuple(set_[b][set_[b] != -100] for set_ in batch.labels)
            out.append((int(batch.indices[b]), int(batch.offsets[b]), batch.waves[b, :n], labels))
    return out


def test_equal_shards_from_the_arithmetic():
    # 10 rows of 1 s, shards of 3 s: ceil(10 / 3) = 4 shards of 2.5 s; a row goes where its middle falls
    # (0.5 s, 1.5 s, ...), a middle on a boundary (2.5 s, 7.5 s) to the later shard.
    assert split_into_shards([16_000] * 10, 3.0) == [range(0, 2), range(2, 5), range(5, 7), range(7, 10)]
    assert split_into_shards([16_000] * 3, 100.0) == [range(0, 3)]
    assert split_into_shards([16_000] * 2, 0.1) == [range(0, 1), range(1, 2)]  # never more shards than rows


def test_pack_keeps_each_file_s_bytes_and_records_its_row(corpus):
    tsv, folder = corpus
    manifest = load_manifest(tsv)
    index = load_shard_index(folder)
    assert index.manifest_hash == manifest_hash(manifest) and index.num_rows == NUM_ROWS
    assert [(s.name, s.rate, s.k) for s in index.labels] == [("km", 50.0, 100)]
    labels = load_labels(tsv.parents[1] / "km.labels", manifest)
    seen = []
    for shard in index.shards:
        with tarfile.open(folder / shard.name) as tar:
            names = tar.getnames()
            assert (folder / shard.name).stat().st_size == shard.size
            for row, n in zip(shard.rows, shard.num_samples):
                suffix = Path(manifest.paths[row]).suffix
                meta = json.loads(tar.extractfile(f"{row:06d}.json").read())
                assert meta == {
                    "row": row, "path": manifest.paths[row], "num_samples": manifest.num_samples[row],
                    "labels": {"km": labels.per_utterance[row].tolist()},
                }  # fmt: skip
                assert n == manifest.num_samples[row]
                assert tar.extractfile(f"{row:06d}{suffix}").read() == manifest.audio_path(row).read_bytes()
                seen.append(row)
            assert names == [
                f"{row:06d}{ext}" for row in shard.rows for ext in (".json", Path(manifest.paths[row]).suffix)
            ]
    assert seen == list(range(NUM_ROWS))  # manifest order, each row once


def test_every_row_once_per_epoch_with_the_file_loader_s_waves_and_crops(corpus):
    tsv, folder = corpus
    manifest = load_manifest(tsv)
    loader = make_shard_loader(folder, **LOADER, label_sets=())
    files = AudioDataset(manifest, max_samples=MAX_SAMPLES, random_crop=True, seed=LOADER["seed"])
    for epoch in (0, 1):
        got = utterances(epoch_batches(loader, epoch))
        assert sorted(row for row, *_ in got) == list(range(NUM_ROWS))
        files.set_epoch(epoch)
        for row, offset, wave, _ in got:
            item = files[row]
            assert (offset, wave.shape[0]) == (item.offset, item.length)
            assert torch.equal(wave, item.wave)  # bit for bit: the same bytes through the same decoder
            assert torch.equal(wave, load_audio(manifest.audio_path(row))[offset : offset + item.length])
    cropped = [row for row, n in enumerate(manifest.num_samples) if n > MAX_SAMPLES]
    assert len(cropped) > NUM_ROWS // 2 and {o for _, o, *_ in got} != {0}  # the crop draw was exercised


def test_batches_stay_within_the_padded_bound(corpus):
    _, folder = corpus
    for batch in make_shard_loader(folder, **LOADER):
        assert batch.waves.numel() <= LOADER["max_batch_seconds"] * SAMPLE_RATE
        assert batch.waves.shape[1] == int(batch.lengths.max())


def test_epoch_order_is_fixed_by_seed_and_epoch(corpus):
    _, folder = corpus

    def order(seed: int, epoch: int) -> list[list[int]]:
        loader = make_shard_loader(folder, **{**LOADER, "seed": seed}, shuffle_buffer=8, bucket_window=8)
        return [batch.indices.tolist() for batch in epoch_batches(loader, epoch)]

    first = order(7, 0)
    assert order(7, 0) == first  # a second loader, the same batches
    assert order(7, 1) != first and order(8, 0) != first
    assert sorted(sum(order(7, 1), [])) == sorted(sum(first, []))


def test_two_ranks_are_disjoint_cover_every_row_and_take_equal_steps(corpus):
    _, folder = corpus
    ranks = [make_shard_loader(folder, **LOADER, rank=r, world_size=2) for r in (0, 1)]
    for epoch in (0, 3):
        rows = [[row for batch in epoch_batches(loader, epoch) for row in batch.indices.tolist()] for loader in ranks]
        assert set(rows[0]).isdisjoint(rows[1]) and sorted(rows[0] + rows[1]) == list(range(NUM_ROWS))
        assert len(ranks[0]) == len(ranks[1])
        shards = [
            load_shard_index(folder).shards[s].rows for s in ranks[0].batch_sampler.planner.epoch_plan(epoch)[0].shards
        ]
        assert set(rows[0]) == {row for shard in shards for row in shard}  # rank 0 reads whole shards of its own


def test_resume_mid_epoch_equals_the_straight_pass_without_decoding_what_was_done(corpus, tmp_path, monkeypatch):
    _, folder = corpus
    straight = utterances(epoch_batches(make_shard_loader(folder, **LOADER), 1))
    loader = make_shard_loader(folder, **LOADER, epoch=1)
    first = []
    for batch in loader:
        first.append(batch)
        if len(first) == 3:
            break
    torch.save(loader.state_dict(), tmp_path / "state.pt")
    state = torch.load(tmp_path / "state.pt", weights_only=True)
    assert (state["epoch"], state["position"]) == (1, 3)
    decoded = []
    real_decode = shard_dataset.decode_audio
    monkeypatch.setattr(
        shard_dataset, "decode_audio", lambda data, name, **kw: decoded.append(name) or real_decode(data, name, **kw)
    )
    resumed = make_shard_loader(folder, **LOADER)
    resumed.load_state_dict(state)
    rest = utterances(resumed)
    got = utterances(first) + rest
    assert [(r, o) for r, o, *_ in got] == [(r, o) for r, o, *_ in straight]
    assert all(torch.equal(a[2], b[2]) for a, b in zip(got, straight))
    assert len(decoded) == len(rest)  # the three batches before the resume point were not decoded again


def test_resume_passes_over_finished_shards_and_members_without_reading_them(corpus, monkeypatch):
    _, folder = corpus
    kwargs = dict(**LOADER, shuffle_buffer=0, bucket_window=2, epoch=1)  # windows of 2 rows: shards finish early
    loader = make_shard_loader(folder, **kwargs)
    plan = loader.batch_sampler.rank_rows(1)
    index = load_shard_index(folder)

    def later_rows(position: int) -> set[int]:
        return {row for batch in plan[position:] for row in batch}

    def partly_done(position: int) -> bool:  # a shard some of whose rows come before `position`, some after
        return any(0 < len(later_rows(position) & set(s.rows)) < len(s.rows) for s in index.shards)

    resume_at = next(p for p in range(len(plan) // 3, len(plan)) if partly_done(p))
    later = later_rows(resume_at)
    needed = [s.name for s in index.shards if later & set(s.rows)]
    assert len(needed) < len(index.shards)  # some shards hold only rows of batches before the resume point
    opened, audio_read = [], []
    real_open, real_read = open, shard_dataset.StreamReader._read
    monkeypatch.setattr(
        shard_dataset,
        "open",
        lambda path, *a, **kw: opened.append(path.name) or real_open(path, *a, **kw),
        raising=False,
    )

    def read(reader, info):
        if not info.name.endswith(".json"):
            audio_read.append(int(info.name.split(".")[0]))
        return real_read(reader, info)

    monkeypatch.setattr(shard_dataset.StreamReader, "_read", read)
    state = loader.state_dict() | {"position": resume_at}
    resumed = make_shard_loader(folder, **kwargs)
    resumed.load_state_dict(state)
    rest = [tuple(batch.indices.tolist()) for batch in resumed]
    assert rest == plan[resume_at:]
    assert sorted(opened) == needed and sorted(audio_read) == sorted(later)


def test_labels_stay_aligned_with_their_rows(corpus):
    tsv, folder = corpus
    manifest = load_manifest(tsv)
    labels = load_labels(tsv.parents[1] / "km.labels", manifest)
    files = AudioDataset(manifest, max_samples=MAX_SAMPLES, random_crop=True, seed=LOADER["seed"], labels=[labels])
    files.set_epoch(2)
    got = utterances(epoch_batches(make_shard_loader(folder, **LOADER), 2))
    assert len(got) == NUM_ROWS
    for row, offset, wave, (frames,) in got:
        assert offset % HOP == 0  # crops start on a label frame
        expected = labels.per_utterance[row][offset // HOP : offset // HOP + round(wave.shape[0] / HOP)]
        assert frames.tolist() == expected.tolist()
        assert frames.tolist() == ((13 * row + offset // HOP + np.arange(len(frames))) % 100).tolist()
        assert torch.equal(frames, files[row].labels[0])


def test_a_truncated_shard_is_named_in_one_line(corpus, tmp_path):
    _, folder = corpus
    copy = tmp_path / "shards"
    copy.mkdir()
    for path in folder.iterdir():
        (copy / path.name).write_bytes(path.read_bytes())
    victim = copy / "shard-000002.tar"
    victim.write_bytes(victim.read_bytes()[: victim.stat().st_size // 2])
    with pytest.raises(ShardError) as info:
        list(make_shard_loader(copy, **LOADER))
    message = str(info.value)
    assert "\n" not in message and message.startswith(f"{victim}: truncated: ")
    assert "index.json says" in message


def test_a_corrupt_member_header_is_named_with_its_shard(corpus, tmp_path):
    _, folder = corpus
    copy = tmp_path / "shards"
    copy.mkdir()
    for path in folder.iterdir():
        (copy / path.name).write_bytes(path.read_bytes())
    victim = copy / "shard-000001.tar"
    data = bytearray(victim.read_bytes())
    with tarfile.open(victim) as tar:
        third = tar.getmembers()[2].offset  # the second row's JSON header
    data[third : third + 100] = b"x" * 100  # same size: only the tar structure tells
    victim.write_bytes(bytes(data))
    with pytest.raises(ShardError, match=rf"^{victim}: found the end of the shard where index.json expects member "):
        list(make_shard_loader(copy, **LOADER))


def test_bad_members_are_skipped_and_counted_as_the_file_loader_counts_them(tmp_path):
    audio = tmp_path / "audio"
    audio.mkdir()
    rng = np.random.default_rng(1)
    for i in range(6):
        sf.write(audio / f"good{i}.flac", 0.3 * rng.standard_normal(8000 + 1000 * i), 16_000)
    sf.write(audio / "silent.wav", np.zeros(8000, dtype=np.float32), 16_000, subtype="PCM_16")
    flac = io.BytesIO()
    sf.write(flac, 0.3 * rng.standard_normal(16_000), 16_000, format="FLAC")
    (audio / "truncated.flac").write_bytes(flac.getvalue()[: len(flac.getvalue()) // 3])  # the header survives
    build_manifests([audio], tmp_path / "m", valid_fraction=0.0)
    manifest = load_manifest(tmp_path / "m" / "train.tsv")
    pack_shards(tmp_path / "m" / "train.tsv", tmp_path / "shards", shard_seconds=1.0)
    kwargs = dict(max_samples=None, random_crop=False, max_batch_seconds=1.0)
    shards, files = make_shard_loader(tmp_path / "shards", **kwargs), make_file_loader(manifest, **kwargs)
    told: dict[str, list[str]] = {"shards": [], "files": []}
    shards.report, files.report = told["shards"].append, told["files"].append
    for epoch in (0, 1):
        for loader in (shards, files):
            set_epoch(loader, epoch)
            rows = [row for batch in loader for row in batch.indices.tolist()]
            assert sorted(rows) == sorted(manifest.paths.index(f"good{i}.flac") for i in range(6))
    assert (shards.utterances_seen, shards.utterances_bad, shards.bad_rows) == (
        files.utterances_seen, files.utterances_bad, files.bad_rows,
    )  # fmt: skip
    assert files.bad_rows == {manifest.paths.index("silent.wav"), manifest.paths.index("truncated.flac")}
    assert len(told["shards"]) == 2 and all("\n" not in line for line in told["shards"])
    assert any(": silent (" in line and "shard-" in line for line in told["shards"])


def test_fewer_shards_than_ranks_times_workers_are_refused(corpus):
    _, folder = corpus
    with pytest.raises(ValueError, match=r"6 shards cannot give each of 2 ranks x 4 loader workers a shard of its own"):
        make_shard_loader(folder, **LOADER, world_size=2, num_workers=4)


def test_a_state_of_another_plan_is_refused(corpus):
    _, folder = corpus
    state = make_shard_loader(folder, **LOADER).state_dict()
    other = make_shard_loader(folder, **{**LOADER, "max_batch_seconds": 2.0})
    with pytest.raises(ValueError, match=r"sampler state has fingerprint"):
        other.load_state_dict(state)


def test_a_shard_run_resumed_on_another_number_of_processes_is_refused(corpus):
    _, folder = corpus
    states = [make_shard_loader(folder, **LOADER, rank=r, world_size=2).state_dict() for r in range(2)]
    with pytest.raises(ValueError, match=r"shard folder: saved on 2 process\(es\), resuming on 1: the shards are"):
        make_shard_loader(folder, **LOADER).load_state_dicts_of_world(states)


def test_a_file_unreadable_while_packing_leaves_the_earlier_packing(corpus, tmp_path, monkeypatch):
    tsv, _ = corpus
    out = tmp_path / "shards"
    pack_shards(tsv, out, shard_seconds=5.0)
    before = {path.name: path.read_bytes() for path in out.iterdir()}
    manifest = load_manifest(tsv)
    victim = manifest.audio_path(20)  # in the last shard: earlier ones are written by then
    real_read = Path.read_bytes

    def read_bytes(path: Path) -> bytes:
        if path == victim:
            raise PermissionError(13, "Permission denied", str(path))
        return real_read(path)

    monkeypatch.setattr(Path, "read_bytes", read_bytes)
    with pytest.raises(ValueError) as info:
        pack_shards(tsv, out, shard_seconds=1.0)
    assert str(info.value) == f"{tsv}:22: {victim}: cannot read (Permission denied)"
    monkeypatch.undo()
    assert {path.name: path.read_bytes() for path in out.iterdir()} == before  # no temp file left either


@pytest.mark.parametrize("seconds", [0, -1.0, float("nan"), float("inf")])
def test_shard_seconds_must_be_finite_and_positive(corpus, tmp_path, seconds):
    with pytest.raises(ValueError, match=rf"^--shard-seconds must be finite and > 0, got {seconds}$"):
        pack_shards(corpus[0], tmp_path / "shards", shard_seconds=seconds)
    assert not (tmp_path / "shards").exists()


def test_repacking_with_bad_labels_keeps_the_old_shards(corpus, tmp_path):
    tsv, folder = corpus
    out = tmp_path / "shards"
    pack_shards(tsv, out, shard_seconds=5.0)
    before = {path.name: path.read_bytes() for path in out.iterdir()}
    foreign = tmp_path / "foreign.labels"
    small = load_manifest(tsv)
    small = type(small)(root=small.root, paths=small.paths[:2], num_samples=small.num_samples[:2])
    write_labels(foreign, small, [np.zeros(n // HOP, dtype=int) for n in small.num_samples], k=2, rate=50.0)
    with pytest.raises(ValueError, match="labels were made for another manifest"):
        pack_shards(tsv, out, shard_seconds=1.0, labels=[foreign])
    assert {path.name: path.read_bytes() for path in out.iterdir()} == before
    index = pack_shards(tsv, out, shard_seconds=1e9)  # one shard now: the old tail goes
    assert (
        sorted(path.name for path in out.iterdir())
        == ["index.json", "shard-000000.tar"]
        == ["index.json", index.shards[0].name]
    )


# -- with DataLoader workers ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def four_shards(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("corpus")
    tsv = write_corpus(root)
    pack_shards(tsv, root / "shards", shard_seconds=load_manifest(tsv).seconds / 4 + 1e-3)
    return root / "shards"


def inline_batches(loader, epoch: int) -> list:
    """The loader's batches computed in this process, position by position: the oracle for the workers."""
    set_epoch(loader, epoch)
    return [loader.collate_fn([loader.dataset[p]]) for p in range(len(loader))]


def same(a, b) -> bool:
    return len(a) == len(b) and all(
        x.indices.tolist() == y.indices.tolist() and torch.equal(x.offsets, y.offsets) and torch.equal(x.waves, y.waves)
        for x, y in zip(a, b)
    )


@pytest.mark.slow  # worker processes start (and import torch) per loader
def test_workers_deliver_the_plan_in_order(four_shards):
    loader = make_shard_loader(four_shards, **LOADER, num_workers=2)
    for epoch in (0, 1):
        set_epoch(loader, epoch)
        got = list(loader)
        assert [tuple(b.indices.tolist()) for b in got] == loader.batch_sampler.rank_rows(epoch)
        assert sorted(r for b in got for r in b.indices.tolist()) == list(range(NUM_ROWS))
        assert same(got, inline_batches(make_shard_loader(four_shards, **LOADER, num_workers=2), epoch))


@pytest.mark.slow
def test_resume_with_workers_equals_the_straight_pass(four_shards, tmp_path):
    straight = inline_batches(make_shard_loader(four_shards, **LOADER, num_workers=2), 1)
    loader = make_shard_loader(four_shards, **LOADER, num_workers=2, epoch=1)
    first = []
    for batch in loader:
        first.append(batch)
        if len(first) == 3:  # odd: the resumed run's worker 0 now reads stream 1
            break
    torch.save(loader.state_dict(), tmp_path / "state.pt")
    resumed = make_shard_loader(four_shards, **LOADER, num_workers=2)
    resumed.load_state_dict(torch.load(tmp_path / "state.pt", weights_only=True))
    assert same(first + list(resumed), straight)


@pytest.mark.slow
def test_a_truncated_shard_read_by_a_worker_is_one_line(four_shards, tmp_path):
    copy = tmp_path / "shards"
    copy.mkdir()
    for path in four_shards.iterdir():
        (copy / path.name).write_bytes(path.read_bytes())
    victim = copy / "shard-000003.tar"
    victim.write_bytes(victim.read_bytes()[:-2000])
    with pytest.raises(ShardError) as info:
        list(make_shard_loader(copy, **LOADER, num_workers=2))
    assert "\n" not in str(info.value) and str(info.value).startswith(f"{victim}: truncated: ")
