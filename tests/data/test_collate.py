import numpy as np
import pytest
import soundfile as sf
import torch

from ssl_audio.audio import SAMPLE_RATE
from ssl_audio.data.collate import CROP_STREAM, LABEL_PAD, Collator
from ssl_audio.data.dataset import BadUtterance, FrameLabels, Item, crop_offset
from ssl_audio.data.loader import make_file_loader, set_epoch
from ssl_audio.data.manifest import load_manifest, write_manifest

SCALE = 2.0**-17  # ramp step: sample i holds i * SCALE, exact in float32 for i < 2**24


def ramp(num_samples: int) -> torch.Tensor:
    return torch.arange(num_samples, dtype=torch.float32) * SCALE


def ramp_item(index: int, length: int, hop: int | None = None, offset: int = 0) -> Item:
    """A ramp utterance whose label j (one per `hop` samples) is j."""
    labels = (torch.arange(length // hop),) if hop else ()
    return Item(
        wave=ramp(length), length=length, index=index, offset=offset, labels=labels, label_hops=(hop,) * bool(hop)
    )


def test_pad_mode_pads_with_zeros():
    items = [
        Item(wave=torch.tensor([1.0, 2.0, 3.0]), length=3, index=5, labels=(torch.tensor([7, 8]),), label_hops=(160,)),
        Item(
            wave=torch.tensor([4.0, 5.0]), length=2, index=7, offset=320, labels=(torch.tensor([9]),), label_hops=(160,)
        ),
    ]
    batch = Collator("pad")(items)
    assert batch.waves.tolist() == [[1.0, 2.0, 3.0], [4.0, 5.0, 0.0]]
    assert batch.waves.dtype == torch.float32
    assert batch.lengths.tolist() == [3, 2] and batch.lengths.dtype == torch.long
    assert batch.indices.tolist() == [5, 7] and batch.offsets.tolist() == [0, 320]
    assert batch.padding_mask.tolist() == [[False, False, False], [False, False, True]]
    assert len(batch.labels) == 1 and batch.labels[0].tolist() == [[7, 8], [9, LABEL_PAD]]
    moved = batch.to("cpu")
    assert torch.equal(moved.waves, batch.waves) and torch.equal(moved.labels[0], batch.labels[0])


@pytest.mark.parametrize("epoch", [0, 1, 2])
def test_crop_mode_cuts_to_the_shortest_with_aligned_labels(epoch):
    items = [ramp_item(0, 4000, hop=160), ramp_item(1, 2560, hop=160), ramp_item(2, 3200, hop=160, offset=480)]
    collator = Collator("crop", seed=4)
    collator.set_epoch(epoch)
    batch = collator(items)
    assert batch.waves.shape == (3, 2560) and batch.lengths.tolist() == [2560] * 3
    assert not batch.padding_mask.any()
    for row, item in enumerate(items):
        offset = crop_offset(item.length - 2560, seed=4, epoch=epoch, index=item.index, step=160, stream=CROP_STREAM)
        assert offset % 160 == 0
        assert int(batch.offsets[row]) == item.offset + offset  # offsets count from the file's start
        assert torch.equal(batch.waves[row], ramp(item.length)[offset : offset + 2560])
        labels = batch.labels[0][row]
        assert labels.tolist() == list(range(offset // 160, offset // 160 + 16))  # round(2560 / 160) = 16 frames
        assert round(float(batch.waves[row, 0]) / SCALE) == int(labels[0]) * 160
    assert batch.offsets.tolist()[1] == 0  # the shortest item is whole


def test_crop_mode_eval_crops_from_the_start():
    items = [ramp_item(0, 1000), ramp_item(1, 600)]
    batch = Collator("crop", random_crop=False)(items)
    assert batch.offsets.tolist() == [0, 0]
    assert torch.equal(batch.waves, torch.stack([ramp(600), ramp(600)]))


def test_collator_rejects_mixed_label_sets_and_bad_mode():
    with pytest.raises(ValueError, match="item 1 has label hops"):
        Collator()([ramp_item(0, 800, hop=160), ramp_item(1, 800)])
    with pytest.raises(ValueError, match="'trim'"):
        Collator("trim")


def test_bad_utterances_are_left_out_and_listed():
    bad = BadUtterance(index=3, path="/a/utt3.wav", reason="silent", detail="peak 0.00e+00 is below -80 dBFS")
    batch = Collator("pad")([ramp_item(0, 500), bad, ramp_item(5, 300)])
    assert batch.indices.tolist() == [0, 5] and batch.lengths.tolist() == [500, 300]
    assert torch.equal(batch.waves, torch.stack([ramp(500), torch.cat([ramp(300), torch.zeros(200)])]))
    assert batch.skipped == (bad,) and batch.to("cpu").skipped == (bad,) and len(batch) == 2
    only_bad = Collator("crop")([bad])
    assert len(only_bad) == 0 and only_bad.skipped == (bad,) and only_bad.waves.shape == (0, 0)
    assert only_bad.indices.tolist() == only_bad.lengths.tolist() == only_bad.offsets.tolist() == []


# -- through make_file_loader: dataset + sampler + collator ------------------------------------------------

LENGTHS = [8000, 12_000, 16_000, 4000, 6400]


@pytest.fixture
def manifest(tmp_path):
    root = tmp_path / "audio"
    root.mkdir()
    rows = []
    for i, n in enumerate(LENGTHS):
        sf.write(root / f"utt{i}.wav", ramp(n).numpy(), SAMPLE_RATE, subtype="FLOAT")
        rows.append((f"utt{i}.wav", n))
    write_manifest(tmp_path / "train.tsv", root, rows)
    return load_manifest(tmp_path / "train.tsv")


def offsets_by_index(loader) -> dict[int, int]:
    return {int(i): int(o) for batch in loader for i, o in zip(batch.indices, batch.offsets)}


def test_loader_batches_are_true_slices(manifest):
    labels = [FrameLabels(rate=50.0, per_utterance=[np.arange(n // 320) for n in LENGTHS], name="units")]
    loader = make_file_loader(
        manifest, max_samples=5000, random_crop=True, max_batch_seconds=10_000 / SAMPLE_RATE, seed=2, labels=labels
    )
    seen = []
    for batch in loader:
        assert len(batch) * batch.waves.shape[1] <= 10_000
        for row in range(len(batch)):
            index, offset, length = int(batch.indices[row]), int(batch.offsets[row]), int(batch.lengths[row])
            seen.append(index)
            assert length == min(LENGTHS[index], 5000) and offset % 320 == 0
            assert torch.equal(batch.waves[row, :length], ramp(LENGTHS[index])[offset : offset + length])
            assert not batch.waves[row, length:].any()
            assert int(batch.labels[0][row, 0]) * 320 == offset
    assert sorted(seen) == list(range(len(LENGTHS)))


def test_persistent_workers_follow_set_epoch(manifest):
    kwargs = dict(max_samples=3000, random_crop=True, max_batch_seconds=6000 / SAMPLE_RATE, seed=9)
    inline = make_file_loader(manifest, **kwargs)
    workers = make_file_loader(manifest, **kwargs, num_workers=2)
    per_epoch = []
    for epoch in range(3):
        set_epoch(inline, epoch)
        set_epoch(workers, epoch)
        per_epoch.append(offsets_by_index(inline))
        assert offsets_by_index(workers) == per_epoch[-1]  # same crops whichever process cut them
    assert per_epoch[0] != per_epoch[1] != per_epoch[2]


def test_loader_resumes_after_prefetching_workers(manifest):
    kwargs = dict(max_samples=3000, random_crop=True, max_batch_seconds=3000 / SAMPLE_RATE, seed=5, epoch=1)
    loader = make_file_loader(manifest, **kwargs, num_workers=2)
    full = [batch.indices.tolist() for batch in loader]
    assert len(full) == len(loader) == 5
    taken = []
    for batch in loader:
        taken.append(batch.indices.tolist())
        if len(taken) == 2:
            break
    assert loader.batch_sampler.position > 2  # workers have prefetched beyond the loop
    state = loader.state_dict()
    assert (state["epoch"], state["position"]) == (1, 2)  # what the loop received, not what workers prefetched
    resumed = make_file_loader(manifest, **kwargs)
    resumed.load_state_dict(state)
    rest = [batch.indices.tolist() for batch in resumed]
    assert taken + rest == full
    set_epoch(resumed, 2)
    assert resumed.state_dict()["position"] == 0 and len([*resumed]) == 5
