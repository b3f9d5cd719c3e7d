"""The standard probing metrics, in numpy: classification, speaker verification, retrieval, recognition.

- classification: accuracy, macro-F1 (sklearn's ``f1_score(average="macro", zero_division=0)``).
- verification (SUPERB ASV, VoxCeleb): ROC points, equal error rate, NIST SRE normalised minimum DCF,
  and the trial list those are computed over. A trial is accepted when ``score >= threshold``;
  targets are 1 for same-speaker trials, 0 otherwise.
- retrieval: Recall@K under cosine similarity.
- recognition: Levenshtein distance, WER and CER with their substitution / deletion / insertion counts
  (jiwer's alignment, with none of jiwer's default text normalisation).

Shapes: N items / trials, D embedding dimension, C classes.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Sequence
from dataclasses import dataclass

import jiwer
import numpy as np

RETRIEVAL_CHUNK = 1024  # query rows per similarity block: 1024 x N floats stays small for N up to ~10^5
ENUMERATE_PAIRS_LIMIT = 2_000_000  # below this many pairs, subsample by enumerating them all


# ---------------------------------------------------------------- classification


def _label_pair(y_true: Sequence | np.ndarray, y_pred: Sequence | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    yt, yp = np.asarray(y_true), np.asarray(y_pred)
    if yt.ndim != 1 or yt.shape != yp.shape:
        raise ValueError(f"y_true {yt.shape} and y_pred {yp.shape} must be 1-D of equal length")
    if yt.size == 0:
        raise ValueError("y_true is empty")
    return yt, yp


def accuracy(y_true: Sequence[int] | np.ndarray, y_pred: Sequence[int] | np.ndarray) -> float:
    """Share of predictions equal to the truth."""
    yt, yp = _label_pair(y_true, y_pred)
    return float(np.mean(yt == yp))


def _class_codes(y: np.ndarray, classes: np.ndarray) -> np.ndarray:
    """Index of each y in classes, -1 where y is not one of them."""
    order = np.argsort(classes, kind="stable")
    ranked = classes[order]
    pos = np.clip(np.searchsorted(ranked, y), 0, len(ranked) - 1)
    return np.where(ranked[pos] == y, order[pos], -1)


def macro_f1(
    y_true: Sequence[int] | np.ndarray, y_pred: Sequence[int] | np.ndarray, labels: Sequence[int] | None = None
) -> float:
    """Unweighted mean of per-class F1 over ``labels`` (default: classes seen in y_true or y_pred).

    Undefined precision or recall counts as 0, as sklearn's ``zero_division=0``. A class in ``labels``
    with neither true nor predicted samples is left out of the mean (sklearn would count it as F1 = 0):
    nothing about it was measured, and a split that happens to miss a class should not be penalised.
    """
    yt, yp = _label_pair(y_true, y_pred)
    if labels is None:
        classes = np.unique(np.concatenate([yt, yp]))
    else:
        classes = np.asarray(labels)
        if classes.ndim != 1 or classes.size == 0:
            raise ValueError(f"labels must be a non-empty 1-D sequence, got shape {classes.shape}")
        if np.unique(classes).size != classes.size:
            raise ValueError(f"labels contain duplicates: {classes.tolist()}")
    t, p = _class_codes(yt, classes), _class_codes(yp, classes)
    n = classes.size
    tp = np.bincount(t[(t == p) & (t >= 0)], minlength=n)
    true_count = np.bincount(t[t >= 0], minlength=n)
    pred_count = np.bincount(p[p >= 0], minlength=n)
    seen = (true_count + pred_count) > 0
    if not seen.any():
        raise ValueError(f"none of labels {classes.tolist()} occurs in y_true or y_pred")
    # F1 = 2PR / (P + R) = 2 tp / (true + predicted); 0 whenever tp = 0, as with zero_division=0
    f1 = 2 * tp[seen] / (true_count[seen] + pred_count[seen])
    return float(f1.mean())


# ---------------------------------------------------------------- verification


def _scores_targets(
    scores: Sequence[float] | np.ndarray, targets: Sequence[int] | np.ndarray
) -> tuple[np.ndarray, ...]:
    s, t = np.asarray(scores, dtype=np.float64), np.asarray(targets)
    if s.ndim != 1 or s.shape != t.shape:
        raise ValueError(f"scores {s.shape} and targets {t.shape} must be 1-D of equal length")
    if not np.isin(t, (0, 1)).all():
        raise ValueError(f"targets must be 0/1 (1 = same speaker), got values {np.unique(t)[:5].tolist()}")
    if not np.isfinite(s).all():
        raise ValueError("scores contain NaN or inf")
    t = t.astype(bool)
    if t.all() or not t.any():
        raise ValueError(f"need both target and non-target trials, got {int(t.sum())} targets of {t.size}")
    return s, t


def _roc_counts(
    scores: Sequence[float] | np.ndarray, targets: Sequence[int] | np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, int, int]:
    """Accepted non-targets and targets at each distinct threshold, high to low, after a reject-all point."""
    s, t = _scores_targets(scores, targets)
    order = np.argsort(-s, kind="stable")
    s, t = s[order], t[order]
    tp = np.cumsum(t)
    fp = np.arange(1, t.size + 1) - tp
    last = np.flatnonzero(np.r_[s[1:] != s[:-1], True])  # last trial of each run of tied scores
    fps = np.r_[0, fp[last]]
    tps = np.r_[0, tp[last]]
    thresholds = np.r_[np.inf, s[last]]
    return fps, tps, thresholds, int(fps[-1]), int(tps[-1])


def roc_curve_points(
    scores: Sequence[float] | np.ndarray, targets: Sequence[int] | np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(fpr, tpr, thresholds), one point per distinct score, thresholds decreasing from +inf.

    Same points as ``sklearn.metrics.roc_curve(targets, scores, drop_intermediate=False)``: the first
    point (threshold +inf) rejects everything, the last accepts everything.
    """
    fps, tps, thresholds, n_non, n_tar = _roc_counts(scores, targets)
    return fps / n_non, tps / n_tar, thresholds


def eer(scores: np.ndarray, targets: np.ndarray) -> tuple[float, float]:
    """Equal error rate and the threshold where it holds.

    Convention: the ROC points are joined by straight lines in (false-accept, false-reject) space and
    the EER is where that polyline crosses FAR = FRR; when a point lies exactly on the diagonal, that
    point's rate and threshold are returned. The threshold is interpolated linearly between the two
    points' thresholds with the same weight (when the crossing lies next to the reject-all point, whose
    threshold is +inf, the highest score is returned instead).
    """
    fps, tps, thresholds, n_non, n_tar = _roc_counts(scores, targets)
    # FRR - FAR scaled by n_tar * n_non, in integers so that "exactly on the diagonal" is exact;
    # it falls from +n_tar*n_non (reject all) to -n_tar*n_non (accept all)
    gap = (n_tar - tps) * n_non - fps * n_tar
    i = int(np.argmax(gap <= 0))
    far = fps / n_non
    if gap[i] == 0:
        return float(far[i]), float(thresholds[i])
    w = gap[i - 1] / (gap[i - 1] - gap[i])  # fraction of the way from point i-1 to point i
    rate = far[i - 1] + w * (far[i] - far[i - 1])
    if i == 1:
        return float(rate), float(thresholds[1])
    return float(rate), float(thresholds[i - 1] + w * (thresholds[i] - thresholds[i - 1]))


def min_dcf(
    scores: np.ndarray,
    targets: np.ndarray,
    *,
    p_target: float = 0.01,
    c_miss: float = 1.0,
    c_fa: float = 1.0,
) -> float:
    """Normalised minimum detection cost function (NIST SRE).

    DCF(threshold) = c_miss * P_miss * p_target + c_fa * P_fa * (1 - p_target), divided by the cost of the
    best trivial system, min(c_miss * p_target, c_fa * (1 - p_target)), and minimised over all thresholds,
    the reject-all and accept-all extremes included (so the result is at most 1).
    """
    if not 0.0 < p_target < 1.0:
        raise ValueError(f"p_target must lie in (0, 1), got {p_target}")
    if c_miss <= 0 or c_fa <= 0:
        raise ValueError(f"costs must be positive, got c_miss={c_miss}, c_fa={c_fa}")
    fps, tps, _, n_non, n_tar = _roc_counts(scores, targets)
    p_miss, p_fa = 1.0 - tps / n_tar, fps / n_non
    dcf = c_miss * p_miss * p_target + c_fa * p_fa * (1.0 - p_target)
    return float(dcf.min() / min(c_miss * p_target, c_fa * (1.0 - p_target)))


def _codes(labels: Iterable[Hashable]) -> np.ndarray:
    """Integer code per label, by first occurrence (labels need only be hashable, not orderable)."""
    index: dict[Hashable, int] = {}
    return np.array([index.setdefault(label, len(index)) for label in labels], dtype=np.int64)


def trial_pairs(
    labels: Sequence[Hashable], *, max_pairs: int | None = None, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Verification trials from utterance labels: (i, j, targets) with i < j and targets 1 for same label.

    All N(N-1)/2 pairs by default. With ``max_pairs``, a seeded subsample of min(max_pairs, all) pairs that
    is balanced: half target pairs, half non-target, topped up from the other kind when one runs short.
    Pairs come back sorted by (i, j).
    """
    codes = _codes(labels)
    n = codes.size
    if n < 2:
        raise ValueError(f"need at least 2 labels to form a pair, got {n}")
    if max_pairs is None:
        i, j = np.triu_indices(n, k=1)
        return i, j, (codes[i] == codes[j]).astype(np.int64)
    if max_pairs < 1:
        raise ValueError(f"max_pairs must be positive, got {max_pairs}")
    rng = np.random.default_rng(seed)

    # target pairs are few (sum over classes of n_c^2 / 2): enumerate them per class
    tar_i, tar_j = [], []
    for code in np.unique(codes):
        members = np.flatnonzero(codes == code)
        a, b = np.triu_indices(members.size, k=1)
        tar_i.append(members[a])
        tar_j.append(members[b])
    tar = np.stack([np.concatenate(tar_i), np.concatenate(tar_j)])  # (2, targets)
    n_tar_all = tar.shape[1]
    n_non_all = n * (n - 1) // 2 - n_tar_all

    n_tar = min(n_tar_all, max_pairs // 2)
    n_non = min(n_non_all, max_pairs - n_tar)
    n_tar = min(n_tar_all, max_pairs - n_non)  # top up targets when non-targets ran short
    tar = tar[:, rng.choice(n_tar_all, size=n_tar, replace=False)]
    non = _sample_non_targets(codes, n_non, n_non_all, rng)

    i, j = np.concatenate([tar[0], non[0]]), np.concatenate([tar[1], non[1]])
    targets = np.r_[np.ones(n_tar, dtype=np.int64), np.zeros(n_non, dtype=np.int64)]
    order = np.lexsort((j, i))
    return i[order], j[order], targets[order]


def _sample_non_targets(codes: np.ndarray, count: int, available: int, rng: np.random.Generator) -> np.ndarray:
    """(2, count) distinct different-label pairs i < j, uniformly without replacement."""
    n = codes.size
    if available <= ENUMERATE_PAIRS_LIMIT or count > available // 2:
        i, j = np.triu_indices(n, k=1)
        keep = np.flatnonzero(codes[i] != codes[j])
        pick = keep[rng.choice(keep.size, size=count, replace=False)]
        return np.stack([i[pick], j[pick]])
    # too many pairs to list: draw ordered pairs, keep different-label ones, drop repeats; at most half of
    # the pairs are wanted, so each round keeps a good share of its draws
    keys = np.empty(0, dtype=np.int64)
    while keys.size < count:
        a, b = rng.integers(0, n, size=(2, 2 * count))
        a, b = np.minimum(a, b), np.maximum(a, b)
        fresh = (a != b) & (codes[a] != codes[b])
        keys = np.concatenate([keys, a[fresh] * n + b[fresh]])
        _, first = np.unique(keys, return_index=True)
        keys = keys[np.sort(first)]  # keep draw order so the first `count` are a uniform sample
    keys = keys[:count]
    return np.stack([keys // n, keys % n])


# ---------------------------------------------------------------- retrieval


def recall_at_k(
    embeddings: np.ndarray,
    labels: Sequence[Hashable],
    ks: Sequence[int] = (1, 5, 10),
    *,
    chunk_size: int = RETRIEVAL_CHUNK,
) -> dict[int, float]:
    """Recall@K for cosine-similarity retrieval: {k: share of queries with a same-label item in their top k}.

    Every item queries all the others (itself excluded). Items whose label occurs only once have nothing to
    find and are skipped as queries (they remain in the gallery). A k at or above N - 1 looks at everything.
    Ties in similarity are broken arbitrarily.
    """
    emb = np.asarray(embeddings)
    if emb.ndim != 2:
        raise ValueError(f"embeddings must be (N, D), got shape {emb.shape}")
    codes = _codes(labels)
    if codes.size != emb.shape[0]:
        raise ValueError(f"{codes.size} labels for {emb.shape[0]} embeddings")
    if not ks or any(int(k) != k or k < 1 for k in ks):
        raise ValueError(f"ks must be positive integers, got {list(ks)}")
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be positive, got {chunk_size}")
    if not np.issubdtype(emb.dtype, np.floating):
        emb = emb.astype(np.float64)
    norms = np.linalg.norm(emb, axis=1, keepdims=True)
    if (norms == 0).any():
        raise ValueError(f"embedding {int(np.flatnonzero(norms[:, 0] == 0)[0])} is all zeros: no cosine similarity")
    unit = emb / norms

    queries = np.flatnonzero(np.bincount(codes)[codes] >= 2)
    if queries.size == 0:
        raise ValueError("no valid query: every label occurs only once")
    n = codes.size
    k_max = min(max(ks), n - 1)
    first_hit = np.empty(queries.size, dtype=np.int64)  # rank (0-based) of the first same-label item
    for start in range(0, queries.size, chunk_size):
        q = queries[start : start + chunk_size]
        sim = unit[q] @ unit.T  # (chunk, N)
        sim[np.arange(q.size), q] = -np.inf  # never retrieve the query itself
        top = np.argpartition(-sim, k_max - 1, axis=1)[:, :k_max]  # (chunk, k_max), unordered
        rank = np.argsort(-np.take_along_axis(sim, top, axis=1), axis=1, kind="stable")
        top = np.take_along_axis(top, rank, axis=1)
        hits = codes[top] == codes[q][:, None]
        first_hit[start : start + q.size] = np.where(hits.any(axis=1), hits.argmax(axis=1), k_max)
    return {int(k): float(np.mean(first_hit < min(k, k_max))) for k in ks}


# ---------------------------------------------------------------- recognition


@dataclass(frozen=True, kw_only=True)
class EditCounts:
    """Totals of a minimal alignment of hypotheses to references (jiwer's, over all utterances).

    hits + substitutions + deletions is the reference length, hits + substitutions + insertions the
    hypothesis length, and substitutions + deletions + insertions the Levenshtein distance. Which of
    several minimal alignments splits the distance into S, D and I is jiwer's (rapidfuzz's) choice.
    """

    hits: int
    substitutions: int
    deletions: int
    insertions: int

    @property
    def errors(self) -> int:
        return self.substitutions + self.deletions + self.insertions

    @property
    def reference_length(self) -> int:
        return self.hits + self.substitutions + self.deletions

    @property
    def rate(self) -> float:
        """Errors over reference length (can exceed 1)."""
        return self.errors / self.reference_length


_SPLIT_ON_SPACES = jiwer.ReduceToListOfListOfWords()  # no other normalisation: jiwer's defaults strip
_EACH_CHARACTER = jiwer.ReduceToListOfListOfChars()


def _jiwer_counts(refs: list[str], hyps: list[str], transform: jiwer.AbstractTransform) -> EditCounts:
    out = jiwer.process_words(refs, hyps, reference_transform=transform, hypothesis_transform=transform)
    counts = {name: getattr(out, name) for name in ("hits", "substitutions", "deletions", "insertions")}
    return EditCounts(**counts)


def _check_pairs(refs: Sequence[Sequence[Hashable]], hyps: Sequence[Sequence[Hashable]]) -> None:
    if len(refs) != len(hyps):
        raise ValueError(f"{len(refs)} references but {len(hyps)} hypotheses")
    if len(refs) == 0:
        raise ValueError("no references")
    for index, ref in enumerate(refs):
        if len(ref) == 0:
            raise ValueError(f"reference {index} is empty")


def edit_counts(refs: Sequence[Sequence[Hashable]], hyps: Sequence[Sequence[Hashable]]) -> EditCounts:
    """Corpus hits, substitutions, deletions and insertions for utterances of any hashable tokens."""
    _check_pairs(refs, hyps)
    codes = [str(code) for code in _codes(token for utterance in (*refs, *hyps) for token in utterance)]
    bounds = np.cumsum([0, *(len(utterance) for utterance in (*refs, *hyps))])
    joined = [" ".join(codes[start:end]) for start, end in zip(bounds[:-1], bounds[1:])]  # codes hold no spaces
    return _jiwer_counts(joined[: len(refs)], joined[len(refs) :], _SPLIT_ON_SPACES)


def edit_distance(ref: Sequence[Hashable], hyp: Sequence[Hashable]) -> int:
    """Levenshtein distance with unit substitution, insertion and deletion costs."""
    if len(ref) == 0:
        return len(hyp)
    return edit_counts([ref], [hyp]).errors


def error_rate(refs: Sequence[Sequence[Hashable]], hyps: Sequence[Sequence[Hashable]]) -> float:
    """Corpus error rate: total edit distance over total reference length (can exceed 1)."""
    return edit_counts(refs, hyps).rate


def _check_utterances(refs: Sequence[str], hyps: Sequence[str]) -> None:
    if isinstance(refs, str) or isinstance(hyps, str):
        raise ValueError("refs and hyps must be sequences of utterances, not a single string")


def word_errors(refs: Sequence[str], hyps: Sequence[str]) -> EditCounts:
    """Word-level counts; words are split on whitespace, with no other normalisation."""
    _check_utterances(refs, hyps)
    refs, hyps = [" ".join(ref.split()) for ref in refs], [" ".join(hyp.split()) for hyp in hyps]
    _check_pairs(refs, hyps)
    return _jiwer_counts(refs, hyps, _SPLIT_ON_SPACES)


def char_errors(refs: Sequence[str], hyps: Sequence[str]) -> EditCounts:
    """Character-level counts over the strings as given: spaces count as characters, nothing is normalised."""
    _check_utterances(refs, hyps)
    _check_pairs(refs, hyps)
    return _jiwer_counts(list(refs), list(hyps), _EACH_CHARACTER)


def wer(refs: Sequence[str], hyps: Sequence[str]) -> float:
    """Word error rate; words are split on whitespace, with no other normalisation."""
    return word_errors(refs, hyps).rate


def cer(refs: Sequence[str], hyps: Sequence[str]) -> float:
    """Character error rate over the strings as given: spaces count as characters, nothing is normalised."""
    return char_errors(refs, hyps).rate
