"""Probing metrics against independent oracles (scikit-learn, torchaudio, brute force) and worked examples."""

from __future__ import annotations

import numpy as np
import pytest
import torchaudio.functional
from sklearn.metrics import accuracy_score, f1_score, roc_curve

from ssl_audio.probe import metrics
from ssl_audio.probe.metrics import (
    EditCounts,
    accuracy,
    cer,
    char_errors,
    edit_counts,
    edit_distance,
    eer,
    error_rate,
    macro_f1,
    min_dcf,
    recall_at_k,
    roc_curve_points,
    trial_pairs,
    wer,
    word_errors,
)

# ---------------------------------------------------------------- classification


@pytest.mark.parametrize("seed", range(5))
def test_accuracy_matches_sklearn(seed: int) -> None:
    rng = np.random.default_rng(seed)
    y_true, y_pred = rng.integers(0, 4, 50), rng.integers(0, 4, 50)
    assert accuracy(y_true, y_pred) == pytest.approx(accuracy_score(y_true, y_pred))
    assert accuracy(list(y_true), list(y_pred)) == pytest.approx(accuracy_score(y_true, y_pred))


@pytest.mark.parametrize("seed", range(5))
def test_macro_f1_matches_sklearn_with_missing_classes(seed: int) -> None:
    rng = np.random.default_rng(seed)
    y_true = rng.integers(0, 5, 40)  # class 5 is predicted but never true
    y_pred = rng.integers(1, 6, 40)  # class 0 is true but never predicted
    expected = f1_score(y_true, y_pred, average="macro", zero_division=0)
    assert macro_f1(y_true, y_pred) == pytest.approx(expected, abs=1e-12)
    assert macro_f1(y_true.tolist(), y_pred.tolist()) == pytest.approx(expected, abs=1e-12)
    # an explicit subset of the classes: the other classes' samples only count as errors
    subset = [0, 2, 5]
    expected = f1_score(y_true, y_pred, labels=subset, average="macro", zero_division=0)
    assert macro_f1(y_true, y_pred, labels=subset) == pytest.approx(expected, abs=1e-12)


def test_macro_f1_leaves_out_a_class_never_seen() -> None:
    y_true, y_pred = [0, 1, 1], [0, 1, 0]
    # class 0: tp 1, 2 predicted, 1 true -> F1 = 2/3; class 1: tp 1, 1 predicted, 2 true -> F1 = 2/3
    # class 2 has no true and no predicted sample: left out, where sklearn would average in a 0 (-> 4/9)
    assert macro_f1(y_true, y_pred, labels=[0, 1, 2]) == pytest.approx(2 / 3)
    assert macro_f1(y_true, y_pred, labels=[0, 1, 2]) == pytest.approx(
        f1_score(y_true, y_pred, labels=[0, 1], average="macro", zero_division=0)
    )


def test_classification_errors() -> None:
    with pytest.raises(ValueError, match="equal length"):
        accuracy([0, 1], [0])
    with pytest.raises(ValueError, match="empty"):
        macro_f1([], [])
    with pytest.raises(ValueError, match="duplicates"):
        macro_f1([0, 1], [0, 1], labels=[0, 0, 1])


# ---------------------------------------------------------------- verification

# targets 0.9 0.7 0.6 0.4 / non-targets 0.8 0.5 0.2 0.1; sorted: T N T T N T N N.
# (FAR, FRR) as the threshold falls through each score (accept score >= threshold):
#   +inf (0, 1); 0.9 (0, .75); 0.8 (.25, .75); 0.7 (.25, .5); 0.6 (.25, .25); 0.5 (.5, .25);
#   0.4 (.5, 0); 0.2 (.75, 0); 0.1 (1, 0)
HAND_TARGET = [0.9, 0.7, 0.6, 0.4]
HAND_NONTARGET = [0.8, 0.5, 0.2, 0.1]


def hand_trials() -> tuple[np.ndarray, np.ndarray]:
    return np.array(HAND_TARGET + HAND_NONTARGET), np.array([1] * 4 + [0] * 4)


def test_eer_hand_case_on_a_point() -> None:
    # FAR = FRR = 0.25 exactly at threshold 0.6
    assert eer(*hand_trials()) == pytest.approx((0.25, 0.6))


def test_eer_hand_case_interpolated_through_a_tie() -> None:
    # targets 0.9 0.6 0.5 0.2 / non-targets 0.8 0.5 0.3 0.1: a target and a non-target tie at 0.5.
    # (FAR, FRR): +inf (0, 1); 0.9 (0, .75); 0.8 (.25, .75); 0.6 (.25, .5); 0.5 (.5, .25) ...
    # FRR - FAR goes from +.25 at 0.6 to -.25 at 0.5: the crossing is halfway, EER = .375 at threshold 0.55
    scores = [0.9, 0.6, 0.5, 0.2, 0.8, 0.5, 0.3, 0.1]
    targets = [1, 1, 1, 1, 0, 0, 0, 0]
    assert eer(scores, targets) == pytest.approx((0.375, 0.55))


def test_min_dcf_hand_case() -> None:
    # p_target 0.5: DCF / 0.5 = FRR + FAR = 1, .75, 1, .75, .5, .75, .5, .75, 1 over the points above -> 0.5
    assert min_dcf(*hand_trials(), p_target=0.5) == pytest.approx(0.5)
    # p_target 0.01: DCF / 0.01 = FRR + 99 FAR; any false accept costs >= 24.75, so the best is
    # threshold 0.9 with FAR 0, FRR .75 -> 0.75
    assert min_dcf(*hand_trials(), p_target=0.01) == pytest.approx(0.75)
    # c_fa 3, p_target 0.5: DCF = .5 FRR + 1.5 FAR, normalised by min(.5, 1.5) = .5 -> FRR + 3 FAR:
    # 1, .75, 1.5, 1.25, 1, 1.75, 1.5, 2.25, 3 -> 0.75
    assert min_dcf(*hand_trials(), p_target=0.5, c_fa=3.0) == pytest.approx(0.75)


def test_perfect_separation_gives_zero() -> None:
    scores = np.array([3.0, 2.5, 2.0, 1.0, 0.5, -1.0])
    targets = np.array([1, 1, 1, 0, 0, 0])
    rate, threshold = eer(scores, targets)
    assert rate == 0.0 and 1.0 < threshold <= 2.0
    assert min_dcf(scores, targets) == 0.0
    # and perfectly wrong scores give the worst values
    assert eer(-scores, targets)[0] == pytest.approx(1.0)
    assert min_dcf(-scores, targets) == pytest.approx(1.0)


def sklearn_eer(scores: np.ndarray, targets: np.ndarray) -> float:
    """EER where sklearn's (FAR, FRR) polyline crosses the diagonal (points possibly thinned by sklearn)."""
    fpr, tpr, _ = roc_curve(targets, scores)
    fnr = 1 - tpr
    gap = fnr - fpr
    i = int(np.argmax(gap <= 0))
    w = gap[i - 1] / (gap[i - 1] - gap[i])
    return float(fpr[i - 1] + w * (fpr[i] - fpr[i - 1]))


@pytest.mark.parametrize("seed", range(10))
@pytest.mark.parametrize("decimals", [None, 1])  # 1 decimal makes many tied scores
def test_roc_and_eer_match_sklearn(seed: int, decimals: int | None) -> None:
    rng = np.random.default_rng(seed)
    targets = (rng.random(300) < 0.3).astype(int)
    scores = rng.normal(size=300) + 1.2 * targets
    if decimals is not None:
        scores = np.round(scores, decimals)
    fpr, tpr, thresholds = roc_curve_points(scores, targets)
    ref_fpr, ref_tpr, ref_thresholds = roc_curve(targets, scores, drop_intermediate=False)
    np.testing.assert_allclose(fpr, ref_fpr)
    np.testing.assert_allclose(tpr, ref_tpr)
    np.testing.assert_array_equal(thresholds, ref_thresholds)
    assert eer(scores, targets)[0] == pytest.approx(sklearn_eer(scores, targets), abs=1e-6)
    assert eer(list(scores), list(targets))[0] == pytest.approx(sklearn_eer(scores, targets), abs=1e-6)


@pytest.mark.parametrize("seed", range(5))
def test_min_dcf_matches_brute_force(seed: int) -> None:
    rng = np.random.default_rng(seed)
    targets = (rng.random(200) < 0.4).astype(int)
    scores = np.round(rng.normal(size=200) + targets, 1)
    p_target, c_miss, c_fa = 0.05, 1.0, 2.0
    costs = []
    for threshold in [np.inf, *np.unique(scores)]:
        accept = scores >= threshold
        p_miss = np.mean(~accept[targets == 1])
        p_fa = np.mean(accept[targets == 0])
        costs.append(c_miss * p_miss * p_target + c_fa * p_fa * (1 - p_target))
    expected = min(costs) / min(c_miss * p_target, c_fa * (1 - p_target))
    assert min_dcf(scores, targets, p_target=p_target, c_miss=c_miss, c_fa=c_fa) == pytest.approx(expected)


def test_verification_errors() -> None:
    with pytest.raises(ValueError, match="both target and non-target"):
        eer([0.1, 0.2], [1, 1])
    with pytest.raises(ValueError, match="equal length"):
        min_dcf([0.1, 0.2], [1])
    with pytest.raises(ValueError, match="0/1"):
        roc_curve_points([0.1, 0.2], [1, 2])
    with pytest.raises(ValueError, match="p_target"):
        min_dcf([0.1, 0.2], [1, 0], p_target=1.0)


def test_trial_pairs_all() -> None:
    labels = ["a", "a", "b", "b", "b", "c"]
    i, j, targets = trial_pairs(labels)
    assert len(i) == 6 * 5 // 2
    assert (i < j).all() and len(set(zip(i.tolist(), j.tolist()))) == 15
    assert targets.sum() == 1 + 3  # one a-a pair, three b-b pairs
    np.testing.assert_array_equal(targets, [labels[a] == labels[b] for a, b in zip(i, j)])


@pytest.mark.parametrize("enumerate_limit", [metrics.ENUMERATE_PAIRS_LIMIT, 0])  # 0: rejection sampling
def test_trial_pairs_balanced_subsample(monkeypatch: pytest.MonkeyPatch, enumerate_limit: int) -> None:
    monkeypatch.setattr(metrics, "ENUMERATE_PAIRS_LIMIT", enumerate_limit)
    labels = np.repeat(np.arange(20), 5)  # 4950 pairs, 20 * 10 = 200 of them targets
    i, j, targets = trial_pairs(labels, max_pairs=100, seed=3)
    assert len(i) == 100 and targets.sum() == 50
    assert (i < j).all() and len(set(zip(i.tolist(), j.tolist()))) == 100
    np.testing.assert_array_equal(targets, labels[i] == labels[j])
    again = trial_pairs(labels, max_pairs=100, seed=3)
    assert all(np.array_equal(a, b) for a, b in zip((i, j, targets), again))
    assert not np.array_equal(i, trial_pairs(labels, max_pairs=100, seed=4)[0])
    # targets run short: all 200 are used and non-targets fill the rest
    i, j, targets = trial_pairs(labels, max_pairs=1000)
    assert len(i) == 1000 and targets.sum() == 200
    assert len(set(zip(i.tolist(), j.tolist()))) == 1000
    # asking for more than exist gives every pair
    assert len(trial_pairs(labels, max_pairs=10_000)[0]) == 4950


# ---------------------------------------------------------------- retrieval


def test_recall_at_k_hand_case() -> None:
    # unit vectors at these angles; item 4's label "c" occurs once, so it is gallery only
    angles = np.deg2rad([0, 40, 60, 150, 100])
    labels = ["a", "a", "b", "b", "c"]
    emb = np.stack([np.cos(angles), np.sin(angles)], axis=1)
    emb[3] *= 5.0  # cosine similarity ignores the norm
    # query 0 (0 deg): 1 (40) .77, 2 (60) .50, 4 (100) -.17, 3 (150) -.87 -> same label at rank 1
    # query 1 (40):    2 (20 apart) .94, 0 (40) .77, ...                    -> rank 2
    # query 2 (60):    1 (20) .94, 4 (40) .77, 0 (60) .50, 3 (90) 0         -> rank 4
    # query 3 (150):   4 (50) .64, 2 (90) 0, ...                            -> rank 2
    got = recall_at_k(emb, labels, ks=(1, 2, 3, 4, 10))
    assert got == pytest.approx({1: 0.25, 2: 0.75, 3: 0.75, 4: 1.0, 10: 1.0})


@pytest.mark.parametrize("chunk_size", [1, 7, 1000])
def test_recall_at_k_matches_brute_force(chunk_size: int) -> None:
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 12, 60)
    labels[0] = 99  # a singleton, skipped as a query
    emb = rng.normal(size=(60, 8)).astype(np.float32)
    unit = emb / np.linalg.norm(emb, axis=1, keepdims=True)
    sim = unit @ unit.T
    np.fill_diagonal(sim, -np.inf)
    ranked = np.argsort(-sim, axis=1)
    queries = [q for q in range(60) if (labels == labels[q]).sum() > 1]
    expected = {k: np.mean([(labels[ranked[q, :k]] == labels[q]).any() for q in queries]) for k in (1, 5, 10)}
    assert recall_at_k(emb, labels.tolist(), chunk_size=chunk_size) == pytest.approx(expected)


def test_recall_at_k_errors() -> None:
    with pytest.raises(ValueError, match="no valid query"):
        recall_at_k(np.eye(3), ["a", "b", "c"])
    with pytest.raises(ValueError, match="labels for"):
        recall_at_k(np.eye(3), ["a", "a"])
    with pytest.raises(ValueError, match="embedding 1 is all zeros"):
        recall_at_k(np.array([[1.0, 0.0], [0.0, 0.0]]), ["a", "a"])
    with pytest.raises(ValueError, match="ks"):
        recall_at_k(np.eye(3), ["a", "a", "b"], ks=(0,))


# ---------------------------------------------------------------- recognition


def test_edit_distance_matches_torchaudio() -> None:
    rng = np.random.default_rng(0)
    for _ in range(300):
        ref = rng.integers(0, 4, rng.integers(0, 15)).tolist()
        hyp = rng.integers(0, 4, rng.integers(0, 15)).tolist()
        assert edit_distance(ref, hyp) == torchaudio.functional.edit_distance(ref, hyp), (ref, hyp)
    assert edit_distance("kitten", "sitting") == 3
    assert edit_distance(["a", "b"], []) == 2 and edit_distance([], ["x"]) == 1


def test_wer_and_cer_hand_cases() -> None:
    # words: the cat sat -> the bat sat down: substitute cat/bat, insert down = 2 errors / 3 words
    assert wer(["the cat sat"], ["the bat sat down"]) == pytest.approx(2 / 3)
    # characters (11, spaces included): substitute c/b, insert " down" (5) = 6 errors / 11
    assert cer(["the cat sat"], ["the bat sat down"]) == pytest.approx(6 / 11)
    # corpus-level: errors and lengths are summed first: (2 + 0 + 1) / (3 + 2 + 2)
    refs = ["the cat sat", "a dog", "hello world"]
    hyps = ["the bat sat down", "a  dog ", "hello"]  # extra whitespace does not matter for WER
    assert wer(refs, hyps) == pytest.approx(3 / 7)
    # but it does for CER: "a dog" -> "a  dog " is 2 insertions; "hello world" -> "hello" is 6 deletions
    assert cer(refs, hyps) == pytest.approx((6 + 2 + 6) / (11 + 5 + 11))
    assert wer(["a b"], ["c d e f"]) == pytest.approx(2.0)  # an error rate can exceed 1


def test_substitution_deletion_insertion_counts_by_hand() -> None:
    # each of these has a single minimal alignment, so the split into S, D, I is fixed
    refs = ["the cat sat", "a dog", "hello world"]
    hyps = ["the bat sat down", "a  dog ", "hello"]
    # words: cat/bat substituted, down inserted | a dog matched | world deleted
    assert word_errors(refs, hyps) == EditCounts(hits=5, substitutions=1, deletions=1, insertions=1)
    # characters: c/b substituted, " down" inserted | " " and trailing " " inserted | " world" deleted
    assert char_errors(refs, hyps) == EditCounts(hits=10 + 5 + 5, substitutions=1, deletions=6, insertions=5 + 2)
    counts = word_errors(["a b c d"], ["a x c"])  # b -> x, d deleted
    assert (counts.substitutions, counts.deletions, counts.insertions, counts.hits) == (1, 1, 0, 2)
    assert counts.errors == 2 and counts.reference_length == 4 and counts.rate == 0.5
    # tabs and newlines split words like spaces do, and never count as words
    assert word_errors(["a\tb\nc"], [" a  b c "]) == EditCounts(hits=3, substitutions=0, deletions=0, insertions=0)
    assert edit_counts([[1, 2, 3]], [[3, 1, 2, 3, 4]]) == EditCounts(hits=3, substitutions=0, deletions=0, insertions=2)


def numpy_levenshtein(ref: list, hyp: list) -> int:
    """The edit distance ssl_audio had before jiwer (a numpy row recursion): the oracle for the new one."""
    index: dict = {}
    codes = np.array([index.setdefault(token, len(index)) for token in [*ref, *hyp]], dtype=np.int64)
    a, b = codes[: len(ref)], codes[len(ref) :]
    if a.size > b.size:
        a, b = b, a
    if a.size == 0:
        return int(b.size)
    offsets = np.arange(b.size + 1)
    row = offsets.copy()
    for i, token in enumerate(a, start=1):
        new = np.empty_like(row)
        new[0] = i
        new[1:] = np.minimum(row[:-1] + (b != token), row[1:] + 1)
        row = np.minimum.accumulate(new - offsets) + offsets
    return int(row[-1])


@pytest.mark.parametrize("seed", range(3))
def test_counts_agree_with_the_old_edit_distance_on_random_strings(seed: int) -> None:
    rng = np.random.default_rng(seed)
    alphabet = np.array(list("ab c"))  # few symbols and spaces: many ties between alignments
    refs = ["".join(rng.choice(alphabet, rng.integers(1, 30))) for _ in range(60)]
    hyps = ["".join(rng.choice(alphabet, rng.integers(0, 30))) for _ in range(60)]
    refs = [ref if ref.split() else ref + "a" for ref in refs]  # every reference holds a word
    chars = char_errors(refs, hyps)
    assert chars.errors == sum(numpy_levenshtein(list(r), list(h)) for r, h in zip(refs, hyps))
    assert chars.reference_length == sum(map(len, refs))
    assert chars.hits + chars.substitutions + chars.insertions == sum(map(len, hyps))
    words = word_errors(refs, hyps)
    assert words.errors == sum(numpy_levenshtein(r.split(), h.split()) for r, h in zip(refs, hyps))
    assert words.reference_length == sum(len(r.split()) for r in refs)
    assert words.hits + words.substitutions + words.insertions == sum(len(h.split()) for h in hyps)
    assert wer(refs, hyps) == words.errors / words.reference_length
    assert cer(refs, hyps) == chars.errors / chars.reference_length


def test_error_rate_errors() -> None:
    with pytest.raises(ValueError, match="reference 1 is empty"):
        error_rate([[1, 2], []], [[1], [2]])
    with pytest.raises(ValueError, match="reference 1 is empty"):
        wer(["a b", "  "], ["a b", "c"])
    with pytest.raises(ValueError, match="2 references but 1 hypotheses"):
        wer(["a", "b"], ["a"])
    with pytest.raises(ValueError, match="single string"):
        cer("the cat", "the bat")
