"""Labels onto frames of any front-end: nearest centre, by hand and against a brute-force search."""

from __future__ import annotations

import pytest
import torch

from ssl_audio.models.hubert import LABEL_PAD, frame_targets
from ssl_audio.models.label_frames import label_indices

# (hop, window) of each front-end: conv stack, Whisper stem, conv2d stem, 16 x 16 patches
GEOMETRY = {"conv": (320, 400), "whisper": (320, 1040), "conv2d": (640, 1360), "patch": (2560, 2800)}
CENTRED_WHISPER = -520  # offset of Whisper's own (centred, padded) front-end: frame t centred on sample 320 t


@pytest.mark.parametrize(
    ("name", "rate", "rule"),
    [
        ("conv", 100.0, lambda t: 2 * t),  # today's rule, unchanged
        ("conv", 50.0, lambda t: t),
        ("conv", 25.0, lambda t: t // 2),
        ("whisper", 100.0, lambda t: 2 * t + 2),  # centre 320t + 520 = label centre 160j + 200
        ("conv2d", 100.0, lambda t: 4 * t + 3),  # centre 640t + 680
        ("patch", 100.0, lambda t: 16 * t + 7),  # centre 2560t + 1400: labels 16t + 7 and + 8 tie, the earlier
    ],
)
def test_mfcc_labels_onto_each_front_end_by_hand(name: str, rate: float, rule) -> None:  # noqa: ANN001
    hop, window = GEOMETRY[name]
    index = label_indices(6, hop=hop, window=window, label_rate=rate)
    assert index.tolist() == [rule(t) for t in range(6)]


@pytest.mark.parametrize("name", list(GEOMETRY))
@pytest.mark.parametrize(("rate", "label_window"), [(100.0, 400), (50.0, 400), (50.0, 1040), (25.0, 1360)])
def test_nearest_centre_against_brute_force(name: str, rate: float, label_window: int) -> None:
    hop, window = GEOMETRY[name]
    step = round(16_000 / rate)
    got = label_indices(40, hop=hop, window=window, label_rate=rate, label_window=label_window).tolist()
    for t, j in enumerate(got):
        centre = t * hop + window / 2
        distances = [abs(centre - (k * step + label_window / 2)) for k in range(2000)]
        assert j == distances.index(min(distances)), t  # index() takes the earlier of a tie


@pytest.mark.parametrize("name", list(GEOMETRY))
def test_every_frame_of_the_audio_has_an_mfcc_label(name: str) -> None:
    # 100 Hz kaldi MFCC labels of S samples: floor((S - 400) / 160) + 1; the front-end's frames:
    # floor((S - window) / hop) + 1. The last frame's label lies within the labels, whatever S.
    hop, window = GEOMETRY[name]
    for samples in range(window, window + 3 * hop + 1, 7):
        frames = (samples - window) // hop + 1
        labels = torch.arange((samples - 400) // 160 + 1)[None]
        targets = frame_targets(labels, frames, 100.0, 16_000 / hop, window=window)
        assert (targets != LABEL_PAD).all(), samples
        last_label_end = targets[0, -1].item() * 160 + 400
        assert abs(last_label_end - ((frames - 1) * hop + window)) <= max(window, 400)


def test_mfcc_labels_onto_whisper_centred_front_end_by_hand() -> None:
    # Frame t is centred on 320 t; MFCC label j on 160 j + 200. Nearest: 160 j + 200 = 320 t -> j = 2t - 1.25, so
    # label 2t - 1 (centre 320 t + 40) beats 2t - 2 (320 t - 120); frame 0 (centre 0) takes label 0 (centre 200).
    index = label_indices(6, hop=320, window=1040, label_rate=100.0, offset=CENTRED_WHISPER)
    assert index.tolist() == [0, 1, 3, 5, 7, 9]
    # the uncentred rule, 2t + 2, was 3 labels (30 ms) late
    assert (label_indices(6, hop=320, window=1040, label_rate=100.0) - index)[1:].tolist() == [3] * 5


def test_labels_from_the_same_centred_front_end_map_one_to_one() -> None:
    index = label_indices(
        8, hop=320, window=1040, label_rate=50.0, label_window=1040, offset=CENTRED_WHISPER,
        label_offset=CENTRED_WHISPER,
    )  # fmt: skip
    assert index.tolist() == list(range(8))


@pytest.mark.parametrize(("offset", "label_offset"), [(-520, 0), (0, -520), (-520, -520), (-200, 40)])
@pytest.mark.parametrize(("rate", "label_window"), [(100.0, 400), (50.0, 1040)])
def test_offsets_against_brute_force(offset: int, label_offset: int, rate: float, label_window: int) -> None:
    step = round(16_000 / rate)
    got = label_indices(
        40, hop=320, window=1040, label_rate=rate, label_window=label_window, offset=offset, label_offset=label_offset
    ).tolist()
    for t, j in enumerate(got):
        centre = offset + t * 320 + 520
        distances = [abs(centre - (label_offset + k * step + label_window / 2)) for k in range(2000)]
        assert j == distances.index(min(distances)), t


def test_frame_targets_offsets_default_to_the_frames_own() -> None:
    labels = torch.arange(20)[None]
    centred = frame_targets(labels, 4, 100.0, 50.0, window=1040, offset=CENTRED_WHISPER, label_offset=0)
    assert centred.tolist() == [[0, 1, 3, 5]]
    # label_offset None (older label files): the labels are taken as framed like the model, the old mapping
    assert frame_targets(labels, 4, 100.0, 50.0, window=1040, offset=CENTRED_WHISPER).tolist() == [[2, 4, 6, 8]]
