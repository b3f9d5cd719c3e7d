import numpy as np
import pytest
import soundfile as sf
import torch

from ssl_audio.audio import SAMPLE_RATE, AudioError
from ssl_audio.data.dataset import AudioDataset, BadUtterance, FrameLabels, Item, crop_item, crop_offset
from ssl_audio.data.manifest import load_manifest, write_manifest

SCALE = 2.0**-17  # ramp step: sample i holds i * SCALE, exact in float32 (and in a FLOAT wav) for i < 2**24
LENGTHS = [8000, 12_000, 16_000, 4000, 6400]  # samples


def ramp(num_samples: int) -> np.ndarray:
    return (np.arange(num_samples) * SCALE).astype(np.float32)


def sample_index(value: float) -> int:
    """Which file sample a ramp value came from."""
    return round(value / SCALE)


def make_manifest(tmp_path, lengths=LENGTHS, claimed=None):
    root = tmp_path / "audio"
    root.mkdir(exist_ok=True)
    rows = []
    for i, n in enumerate(lengths):
        sf.write(root / f"utt{i}.wav", ramp(n), SAMPLE_RATE, subtype="FLOAT")
        rows.append((f"utt{i}.wav", (claimed or lengths)[i]))
    write_manifest(tmp_path / "train.tsv", root, rows)
    return load_manifest(tmp_path / "train.tsv")


@pytest.fixture
def manifest(tmp_path):
    return make_manifest(tmp_path)


def frame_index_labels(rate: float, name: str) -> FrameLabels:
    """Label j of every utterance is j: a label names the frame it belongs to."""
    hop = round(SAMPLE_RATE / rate)
    return FrameLabels(rate=rate, per_utterance=[np.arange(n // hop) for n in LENGTHS], name=name)


def test_whole_utterances_without_max_samples(manifest):
    dataset = AudioDataset(manifest)
    assert len(dataset) == 5 and dataset.sizes == tuple(LENGTHS)
    item = dataset[1]
    assert (item.index, item.length, item.offset, item.labels) == (1, 12_000, 0, ())
    assert item.wave.dtype == torch.float32
    np.testing.assert_array_equal(item.wave.numpy(), ramp(12_000))


def test_sizes_are_cropped_lengths(manifest):
    assert AudioDataset(manifest, max_samples=5000).sizes == (5000, 5000, 5000, 4000, 5000)


def test_crop_offset_depends_on_seed_epoch_index_only():
    keys = [(seed, epoch, index) for seed in (0, 1) for epoch in range(3) for index in range(20)]
    forward = [crop_offset(10_000, seed=s, epoch=e, index=i) for s, e, i in keys]
    backward = [crop_offset(10_000, seed=s, epoch=e, index=i) for s, e, i in reversed(keys)]
    assert forward == backward[::-1]  # call order does not matter
    assert all(0 <= offset <= 10_000 for offset in forward)
    by_epoch = [[crop_offset(10_000, seed=0, epoch=e, index=i) for i in range(20)] for e in range(3)]
    assert by_epoch[0] != by_epoch[1] != by_epoch[2]
    snapped = [crop_offset(10_000, seed=0, epoch=0, index=i, step=320) for i in range(50)]
    assert all(offset % 320 == 0 and offset <= 10_000 for offset in snapped)
    assert crop_offset(0, seed=0, epoch=0, index=0) == 0
    assert crop_offset(319, seed=0, epoch=0, index=0, step=320) == 0  # no whole step fits


def test_random_crops_are_deterministic_slices(manifest):
    dataset = AudioDataset(manifest, max_samples=3000, random_crop=True, seed=3)
    again = AudioDataset(manifest, max_samples=3000, random_crop=True, seed=3)
    offsets = {}
    for epoch in range(3):
        dataset.set_epoch(epoch)
        again.set_epoch(epoch)
        for index in reversed(range(len(dataset))):  # any order: offsets depend on (seed, epoch, index)
            item = dataset[index]
            excess = LENGTHS[index] - 3000
            assert item.offset == crop_offset(excess, seed=3, epoch=epoch, index=index)
            assert item.offset == again[index].offset
            assert item.length == 3000 and item.wave.shape == (3000,)
            np.testing.assert_array_equal(item.wave.numpy(), ramp(LENGTHS[index])[item.offset : item.offset + 3000])
            offsets[epoch, index] = item.offset
    assert [offsets[e, 2] for e in range(3)] != [offsets[0, 2]] * 3  # epochs crop differently


def test_eval_crops_from_the_start(manifest):
    dataset = AudioDataset(manifest, max_samples=3000, random_crop=False, seed=3)
    dataset.set_epoch(5)
    for index in range(len(dataset)):
        item = dataset[index]
        assert item.offset == 0
        np.testing.assert_array_equal(item.wave.numpy(), ramp(LENGTHS[index])[:3000])


@pytest.mark.parametrize("rates,step", [((100.0,), 160), ((100.0, 50.0), 320), ((100.0, SAMPLE_RATE / 240), 480)])
def test_labels_stay_aligned_under_crops(manifest, rates, step):
    labels = [frame_index_labels(rate, f"set{k}") for k, rate in enumerate(rates)]
    dataset = AudioDataset(manifest, max_samples=3000, random_crop=True, seed=1, labels=labels)
    assert dataset.crop_step == step
    seen_offsets = set()
    for epoch in range(4):
        dataset.set_epoch(epoch)
        for index in range(len(dataset)):
            item = dataset[index]
            assert item.offset % step == 0
            seen_offsets.add(item.offset)
            first_sample = sample_index(float(item.wave[0]))
            assert first_sample == item.offset
            for label_set, seq in zip(labels, item.labels):
                hop = label_set.hop
                assert seq.dtype == torch.long
                assert int(seq[0]) * hop == first_sample  # label[0] == offset * rate / 16 kHz
                available = len(label_set.per_utterance[index]) - item.offset // hop
                assert len(seq) == min(round(3000 / hop), available)
                assert seq.tolist() == list(range(item.offset // hop, item.offset // hop + len(seq)))
                # every label frame starts on the sample it names
                for j in (0, len(seq) - 1):
                    assert sample_index(float(item.wave[j * hop])) == int(seq[j]) * hop
    assert len(seen_offsets) > 3


def test_uncropped_items_keep_all_labels(manifest):
    labels = [frame_index_labels(100.0, "mfcc")]
    item = AudioDataset(manifest, max_samples=5000, random_crop=True, labels=labels)[3]  # 4000 samples: no crop
    assert item.offset == 0 and item.labels[0].tolist() == list(range(25))


def test_label_count_mismatch_names_the_set(manifest):
    bad = FrameLabels(rate=50.0, per_utterance=[[0, 1]] * 4, name="km500")
    with pytest.raises(ValueError, match=r"label set 'km500': 4 label sequences but the manifest has 5 rows"):
        AudioDataset(manifest, labels=[frame_index_labels(100.0, "mfcc"), bad])


def test_label_rate_must_divide_the_sample_rate():
    with pytest.raises(ValueError, match=r"label set 'odd': rate 49.9 Hz"):
        FrameLabels(rate=49.9, per_utterance=[], name="odd")
    assert FrameLabels(rate=50, per_utterance=[]).hop == 320


def test_changed_file_names_both_lengths(tmp_path):
    manifest = make_manifest(tmp_path, lengths=[8000, 12_000], claimed=[8000, 12_005])
    dataset = AudioDataset(manifest)
    dataset[0]
    with pytest.raises(AudioError, match=r"utt1.wav: changed \(loaded 12000 samples but the manifest says 12005"):
        dataset[1]
    bad = AudioDataset(manifest, skip_bad=True)[1]
    assert bad == BadUtterance(
        index=1,
        path=str(manifest.audio_path(1)),
        reason="changed",
        detail="loaded 12000 samples but the manifest says 12005; the file changed since the manifest was built",
    )


def test_skip_bad_returns_what_was_wrong_in_place_of_the_item(manifest):
    manifest.audio_path(2).unlink()  # deleted after the manifest was checked
    sf.write(manifest.audio_path(3), np.zeros(4000, dtype=np.float32), SAMPLE_RATE, subtype="FLOAT")
    with pytest.raises(AudioError, match=r"utt2.wav: unreadable \(No such file or directory\)"):
        AudioDataset(manifest)[2]
    dataset = AudioDataset(manifest, skip_bad=True)
    gone, silent = dataset[2], dataset[3]
    assert (gone.index, gone.path, gone.reason) == (2, str(manifest.audio_path(2)), "unreadable")
    assert str(gone) == f"row 2: {manifest.audio_path(2)}: unreadable (No such file or directory)"
    assert (silent.index, silent.reason) == (3, "silent")
    np.testing.assert_array_equal(dataset[1].wave.numpy(), ramp(12_000))  # good rows are untouched


def test_crop_item_composes_offsets():
    wave = torch.from_numpy(ramp(2000))
    item = Item(wave=wave, length=2000, index=4, labels=(torch.arange(12),), label_hops=(160,))
    once = crop_item(item, offset=320, length=1200)
    twice = crop_item(once, offset=160, length=800)
    assert twice.offset == 480 and sample_index(float(twice.wave[0])) == 480
    assert twice.labels[0].tolist() == [3, 4, 5, 6, 7]  # round(800 / 160) = 5 frames from frame 480 / 160
    with pytest.raises(ValueError, match="item 4: crop offset 100 is not a multiple of the label frame step 160"):
        crop_item(item, offset=100, length=800)
    with pytest.raises(ValueError, match=r"item 4: crop \[1500, 2500\) is outside its 2000 samples"):
        crop_item(item, offset=1500, length=1000)
