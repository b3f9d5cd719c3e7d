"""Cluster quality (HuBERT paper, section IV-F): purities and PNMI against hand computations and sklearn.

Tables are (phones, clusters) frame counts. With p = counts / total:
    phone purity   = sum_z max_y p(y, z)
    cluster purity = sum_y max_z p(y, z)
    PNMI           = I(y; z) / H(y)
"""

from __future__ import annotations

from collections import Counter
from math import log

import numpy as np
import pytest
from scipy.stats import entropy
from sklearn.metrics import mutual_info_score

from ssl_audio.cluster.quality import cluster_quality, joint_counts, quality_against_alignments
from ssl_audio.data.alignments import Alignment, frame_labels, write_alignments


def test_hand_computed_2x2():
    counts = np.array([[4, 1], [2, 1]])  # 8 frames; phone 0 has 5, phone 1 has 3; cluster 0 has 6, cluster 1 has 2
    q = cluster_quality(counts)
    assert q.frames == 8
    assert q.phone_purity == pytest.approx((4 + 1) / 8)  # column maxima
    assert q.cluster_purity == pytest.approx((4 + 2) / 8)  # row maxima
    mutual = (
        4 / 8 * log((4 / 8) / (5 / 8 * 6 / 8))
        + 1 / 8 * log((1 / 8) / (5 / 8 * 2 / 8))
        + 2 / 8 * log((2 / 8) / (3 / 8 * 6 / 8))
        + 1 / 8 * log((1 / 8) / (3 / 8 * 2 / 8))
    )
    h_phone = -(5 / 8 * log(5 / 8) + 3 / 8 * log(3 / 8))
    assert q.pnmi == pytest.approx(mutual / h_phone)
    # By hand: I = 0.0322693 - 0.0278929 - 0.0294458 + 0.0359603 = 0.0108908 nats, H(y) = 0.6615632 nats.
    assert q.pnmi == pytest.approx(0.0108908 / 0.6615632, abs=1e-6)  # 0.01646: a weak clustering


def test_hand_computed_2x3():
    counts = np.array([[4, 1, 0], [0, 2, 3]])  # p(y) = (1/2, 1/2), p(z) = (0.4, 0.3, 0.3)
    q = cluster_quality(counts)
    assert q.phone_purity == pytest.approx(0.9)  # (4 + 2 + 3) / 10
    assert q.cluster_purity == pytest.approx(0.7)  # (4 + 3) / 10
    # I = 0.4 ln 2 + 0.1 ln(2/3) + 0.2 ln(4/3) + 0.3 ln 2 and H(y) = ln 2, so PNMI = 1.2 - 0.3 log2(3).
    assert q.pnmi == pytest.approx(1.2 - 0.3 * np.log2(3))


def test_hand_computed_3x3():
    counts = np.array([[6, 4, 0], [0, 1, 0], [0, 0, 5]])  # p(y) = (10, 1, 5) / 16, p(z) = (6, 5, 5) / 16
    q = cluster_quality(counts)
    assert q.frames == 16
    assert q.phone_purity == pytest.approx(15 / 16)  # 6 + 4 + 5
    assert q.cluster_purity == pytest.approx(12 / 16)  # 6 + 1 + 5
    mutual = (
        6 / 16 * log(16 / 10)  # p = 6/16 over p(y) p(z) = (10/16)(6/16)
        + 4 / 16 * log(64 / 50)  # (4/16) / ((10/16)(5/16))
        + 1 / 16 * log(16 / 5)  # (1/16) / ((1/16)(5/16))
        + 5 / 16 * log(16 / 5)  # (5/16) / ((5/16)(5/16))
    )
    h_phone = -(10 / 16 * log(10 / 16) + 1 / 16 * log(1 / 16) + 5 / 16 * log(5 / 16))
    assert q.pnmi == pytest.approx(mutual / h_phone)


@pytest.mark.parametrize("seed", range(5))
def test_random_tables_match_sklearn_and_frame_level_purities(seed: int):
    rng = np.random.default_rng(seed)
    phones, clusters = rng.integers(2, 12), rng.integers(2, 30)
    counts = rng.integers(0, 20, size=(phones, clusters)) * (rng.random((phones, clusters)) < 0.6)
    counts[:, 0] += 1  # every phone occurs
    q = cluster_quality(counts)
    assert q.pnmi == pytest.approx(mutual_info_score(None, None, contingency=counts) / entropy(counts.sum(axis=1)))
    # Purities as frame accuracies: each frame guessed as the majority phone of its cluster, and vice versa.
    y, z = np.nonzero(counts)
    y, z = np.repeat(y, counts[y, z]), np.repeat(z, counts[y, z])
    majority_phone = {c: Counter(y[z == c]).most_common(1)[0][0] for c in set(z.tolist())}
    majority_cluster = {p: Counter(z[y == p]).most_common(1)[0][0] for p in set(y.tolist())}
    assert q.phone_purity == pytest.approx(np.mean([majority_phone[c] == p for p, c in zip(y, z)]))
    assert q.cluster_purity == pytest.approx(np.mean([majority_cluster[p] == c for p, c in zip(y, z)]))
    assert q.frames == counts.sum()


def test_perfect_refined_and_independent_clusterings():
    rng = np.random.default_rng(0)
    phones = rng.integers(0, 8, size=20_000)
    perfect = cluster_quality(joint_counts([(phones * 5 + 3) % 8], [phones.astype(str)])[0])  # a relabelling
    assert (perfect.pnmi, perfect.phone_purity, perfect.cluster_purity) == pytest.approx((1.0, 1.0, 1.0))
    split = rng.integers(0, 2, size=phones.shape)  # every phone split over two clusters at random
    refined = cluster_quality(joint_counts([phones * 2 + split], [phones.astype(str)])[0])
    assert refined.pnmi == pytest.approx(1.0) and refined.phone_purity == pytest.approx(1.0)
    assert refined.cluster_purity == pytest.approx(0.5, abs=0.02)
    independent = cluster_quality(joint_counts([rng.integers(0, 50, size=phones.shape)], [phones.astype(str)])[0])
    assert 0 <= independent.pnmi < 0.01
    assert independent.phone_purity == pytest.approx(1 / 8, abs=0.05)


def test_joint_counts_cuts_each_utterance_to_the_shorter_sequence():
    clusters = [np.array([0, 0, 2, 1]), np.array([1, 2]), np.array([2, 2, 2])]
    phones = [["a", "b", "a"], ["b", "b", "a"], ["c", "c", "c"]]  # lengths 3/4, 3/2, 3/3
    counts, names = joint_counts(clusters, phones)
    assert names == ["a", "b", "c"]
    expected = np.zeros((3, 3), np.int64)
    for z, y in zip(clusters, phones):
        for zi, yi in zip(z, y):  # zip stops at the shorter one
            expected[names.index(yi), zi] += 1
    np.testing.assert_array_equal(counts, expected)
    assert counts.sum() == 3 + 2 + 3


def test_degenerate_inputs():
    one_phone = cluster_quality(np.array([[3, 5, 2]]))
    assert one_phone.pnmi == 0.0 and one_phone.phone_purity == 1.0 and one_phone.cluster_purity == 0.5
    with pytest.raises(ValueError, match="no frames"):
        cluster_quality(np.zeros((2, 3), np.int64))
    with pytest.raises(ValueError):
        joint_counts([np.array([0])], [])  # utterance counts differ


# 1600 samples: sil [0, 300), a [300, 700), sil [700, 1600)
ALIGNMENT = Alignment(path="x.wav", num_samples=1600, phones=("sil", "a", "sil"), starts=(0, 300, 700),
                      ends=(300, 700, 1600))  # fmt: skip


def test_frame_labels_of_centred_frames_by_hand():
    # Whisper's front-end: frame t covers [-520 + 320 t, 520 + 320 t), centred on 0, 320, 640, 960, 1280 (the
    # audio padded by 520 at each end gives 1600 // 320 + 1 = 6 frames; the sixth, centred on 1600, is past it)
    assert frame_labels(ALIGNMENT, 50, window=1040, offset=-520) == ["sil", "a", "a", "sil", "sil"]
    assert frame_labels(ALIGNMENT, 50, window=1040) == ["a", "sil"]  # uncentred: centres 520, 840
    assert frame_labels(ALIGNMENT, 100) == ["sil", "a", "a", "a"] + ["sil"] * 4  # MFCC: 200 + 160 j, unchanged
    with pytest.raises(ValueError, match="centred before the audio"):
        frame_labels(ALIGNMENT, 50, window=400, offset=-520)


def test_quality_uses_the_labels_own_frames(tmp_path):
    write_alignments(tmp_path / "alignments.jsonl", [ALIGNMENT])
    labels = [np.array([0, 1, 1, 0, 0])]  # one cluster per phone, on Whisper's centred frames
    args = (labels, ["x.wav"], str(tmp_path), str(tmp_path / "alignments.jsonl"), 50.0)
    exact = quality_against_alignments(*args, window=1040, offset=-520)
    assert (exact.phone_purity, exact.frames) == (1.0, 5)
    assert exact.pnmi == pytest.approx(1.0, abs=1e-12)  # I(y; z) = H(y), up to rounding of the two logs
    # the old assumption, 400-sample frames from sample 0: centres 200, 520, 840, 1160 -> sil, a, sil, sil
    # against clusters 0, 1, 1, 0: cluster 1 holds an a and a sil, so phone purity (2 + 1) / 4
    assumed = quality_against_alignments(*args)
    assert (assumed.phone_purity, assumed.frames) == (0.75, 4)


def test_audio_outside_the_alignments_corpus_is_named(tmp_path):
    corpus, other = tmp_path / "corpus", tmp_path / "noisy"
    corpus.mkdir()
    write_alignments(corpus / "alignments.jsonl", [ALIGNMENT])
    args = ([np.array([0, 1])], ["x.wav"], str(other), str(corpus / "alignments.jsonl"), 50.0)
    with pytest.raises(ValueError, match=r"alignments\.jsonl: describes .*corpus, but .*noisy/x\.wav is outside it"):
        quality_against_alignments(*args)
