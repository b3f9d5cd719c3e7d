"""The four probing tasks on frozen features, and `run_probe`, which runs one (optionally for every layer).

    classify  utterance labels: linear head on mean+std pooled frames (Adam, cross-entropy); accuracy, macro-F1
    verify    speakers, no training: mean-pooled embeddings centred by the training-set mean, cosine scores
              over trial pairs of the test set; EER, minDCF, Recall@K
    ctc       characters: linear CTC head over frames (blank 0), best-path decoding; CER, WER
    frames    frame labels from phone alignments: linear head per frame; frame accuracy, macro-F1

Which layers: `layer=k` probes layer k (0 = the transformer input); `weighted` learns a softmax-weighted
sum of all layers (SUPERB). Defaults: the weighted sum for the trained tasks, the middle layer for verify.
With `all_layers`, every layer is also probed on its own from the same cached features.

Shapes: N items, T frames, K layers, D feature dimension, C classes.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from ssl_audio.demo.alignment import FRAME_WINDOW, frame_labels, load_alignments
from ssl_audio.probe.data import PATH_COLUMN, ProbeTable, read_table, read_trials
from ssl_audio.probe.featurizer import Featurizer, table_features
from ssl_audio.probe.heads import LinearProbe, ctc_greedy, fit, layer_stats, pad_frames, pool_mean, pool_mean_std
from ssl_audio.probe.metrics import accuracy, char_errors, eer, macro_f1, min_dcf, recall_at_k, trial_pairs, word_errors

TASKS = ("classify", "verify", "ctc", "frames")
HEADLINE = {"classify": "accuracy", "verify": "eer", "ctc": "cer", "frames": "accuracy"}  # the per-layer plot's metric
DEFAULT_COLUMN = {"verify": "speaker", "ctc": "transcript"}  # classify: the last column; frames: --alignments
DEFAULT_EPOCHS = {"classify": 100, "verify": 100, "ctc": 100, "frames": 50}  # verify trains only with `weighted`
DEFAULT_LR = {"classify": 1e-2, "verify": 1e-2, "ctc": 1e-2, "frames": 1e-2}  # Adam on standardised features
RECALL_KS = (1, 5, 10)
EVAL_BATCH = 64  # utterances per forward pass at test time


@dataclass(frozen=True, kw_only=True)
class ProbeConfig:
    """One probing run: task, data, which layers, and the head's training."""

    task: str  # one of TASKS
    train: str  # tsv with a header row; `path` relative to the tsv's folder
    test: str
    label_column: str | None = None  # None: classify the last column, verify `speaker`, ctc `transcript`
    alignments: str | None = None  # frames: alignments.jsonl (ssl_audio.demo.alignment) covering both tsvs
    layer: int | None = None  # probe this layer alone (0 = the transformer input)
    weighted: bool = False  # learn a softmax-weighted sum of all layers (SUPERB)
    all_layers: bool = False  # also probe every layer on its own and plot the metric against the layer
    epochs: int | None = None  # None: DEFAULT_EPOCHS of the task
    lr: float | None = None  # Adam learning rate; None: DEFAULT_LR of the task
    batch_size: int = 32  # utterances per update
    seed: int = 0  # head initialisation, batch order, trial subsampling
    seeds: int = 1  # train the head this many times (seed, seed + 1, ...): metrics are the mean, with the std
    p_target: float = 0.01  # verify minDCF: prior of a target trial (VoxCeleb / SUPERB: 0.01)
    c_miss: float = 1.0
    c_fa: float = 1.0
    max_trials: int | None = None  # verify: balanced random subset of this many trials; None: every pair
    trials: str | None = None  # verify: a trial list (`label enroll test`, VoxCeleb's format) instead of pairs


@dataclass(frozen=True, kw_only=True)
class Targets:
    """Labels of both splits, as the task's head consumes them."""

    column: str  # the tsv column (frames: the alignments file)
    names: tuple[str, ...]  # classes, or the CTC vocabulary without the blank (character i is id i + 1)
    train: list[Any]  # class index, id list (ctc) or (T,) class array (frames) per training row
    test: list[Any]
    test_labels: list[str]  # test labels as written in the tsv (speakers, transcripts)
    trials: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None  # verify: (enroll row, test row, target)


@dataclass(frozen=True, kw_only=True)
class Outcome:
    metrics: dict[str, float]
    layer_weights: list[float] | None = None  # softmax weights of a weighted sum
    losses: list[float] = field(default_factory=list)  # mean training loss per epoch
    details: dict[str, Any] = field(default_factory=dict)


# ---------------------------------------------------------------- labels, checked before any encoding


def _class_index(table: ProbeTable, column: str, classes: tuple[str, ...], *, what: str = "class") -> list[int]:
    """Index of each row's label in `classes`; a label outside them raises, naming the line and the label."""
    index = {name: i for i, name in enumerate(classes)}
    codes = []
    for i, label in enumerate(table.column(column)):
        if label not in index:
            raise ValueError(f"{table.where(i)}: {what} {label!r} (column {column!r}) never occurs in the training set")
        codes.append(index[label])
    return codes


def _check_not_empty(table: ProbeTable, column: str) -> list[str]:
    values = table.column(column)
    for i, value in enumerate(values):
        if not value.strip():
            raise ValueError(f"{table.where(i)}: empty {column!r}")
    return values


def _class_targets(cfg: ProbeConfig, train: ProbeTable, test: ProbeTable) -> Targets:
    column = cfg.label_column or train.columns[-1]
    if column == PATH_COLUMN:
        raise ValueError(f"{train.source}: no label column besides {PATH_COLUMN!r}; name one with --label-column")
    classes = tuple(sorted(set(_check_not_empty(train, column))))
    if len(classes) < 2:
        raise ValueError(f"{train.source}: column {column!r} holds a single class {classes[0]!r}")
    return Targets(
        column=column,
        names=classes,
        train=_class_index(train, column, classes),
        test=_class_index(test, column, classes),
        test_labels=_check_not_empty(test, column),
    )


def _speaker_targets(cfg: ProbeConfig, train: ProbeTable, test: ProbeTable) -> Targets:
    """Test speakers need not occur in training (they usually must not); training speakers serve `weighted`."""
    column = cfg.label_column or DEFAULT_COLUMN["verify"]
    speakers = _check_not_empty(test, column)
    classes = tuple(sorted(set(_check_not_empty(train, column)))) if cfg.weighted else ()
    if cfg.weighted and len(classes) < 2:
        raise ValueError(f"{train.source}: --weighted verify learns layer weights from >= 2 training speakers")
    train_codes = _class_index(train, column, classes, what="speaker") if cfg.weighted else []
    if cfg.trials is not None and cfg.max_trials is not None:
        raise ValueError("give a trial list (--trials) or a number of random trials (--max-trials), not both")
    trials = read_trials(cfg.trials, test) if cfg.trials is not None else None
    return Targets(column=column, names=classes, train=train_codes, test=[], test_labels=speakers, trials=trials)


def _ctc_targets(cfg: ProbeConfig, train: ProbeTable, test: ProbeTable) -> Targets:
    """Characters of the training transcripts (space included, case kept) are the vocabulary."""
    column = cfg.label_column or DEFAULT_COLUMN["ctc"]
    train_text, test_text = _check_not_empty(train, column), _check_not_empty(test, column)
    vocabulary = tuple(sorted(set("".join(train_text))))
    ids = {char: i + 1 for i, char in enumerate(vocabulary)}  # 0 is the blank
    for i, text in enumerate(test_text):
        unknown = sorted(set(text) - set(ids))
        if unknown:
            raise ValueError(
                f"{test.where(i)}: character(s) {''.join(unknown)!r} of the transcript never occur in the "
                f"training transcripts ({train.source}), so a CTC head cannot emit them"
            )
    return Targets(
        column=column,
        names=vocabulary,
        train=[[ids[c] for c in text] for text in train_text],
        test=[[ids[c] for c in text] for text in test_text],
        test_labels=test_text,
    )


def _alignment_of(alignments: dict, table: ProbeTable, i: int, source: str) -> Any:
    """Alignments are keyed by path relative to their file's folder; the tsv's own path string also works."""
    relative = os.path.relpath(table.audio_path(i).resolve(), Path(source).resolve().parent).replace(os.sep, "/")
    for key in (relative, table.paths[i]):
        if key in alignments:
            return alignments[key]
    raise ValueError(f"{table.where(i)}: {table.paths[i]!r} has no alignment in {source}")


def _frame_targets(cfg: ProbeConfig, featurizer: Featurizer, train: ProbeTable, test: ProbeTable) -> Targets:
    if cfg.alignments is None:
        raise ValueError("the frames task needs --alignments (alignments.jsonl of the corpus)")
    if featurizer.window != FRAME_WINDOW:
        raise ValueError(f"{featurizer.name}: frames of {featurizer.window} samples; alignments assume {FRAME_WINDOW}")
    alignments = load_alignments(cfg.alignments)
    labels = {}  # split -> the phone of every frame of every row
    for split, table in (("train", train), ("test", test)):
        rows = (_alignment_of(alignments, table, i, cfg.alignments) for i in range(len(table)))
        labels[split] = [frame_labels(alignment, featurizer.frame_rate) for alignment in rows]
    classes = tuple(sorted({phone for row in labels["train"] for phone in row}))
    index = {name: c for c, name in enumerate(classes)}
    for i, row in enumerate(labels["test"]):
        unseen = sorted(set(row) - set(index))
        if unseen:
            raise ValueError(f"{test.where(i)}: phone(s) {', '.join(unseen)} never occur in the training alignments")
    return Targets(
        column=str(cfg.alignments),
        names=classes,
        train=[np.array([index[p] for p in row], dtype=np.int64) for row in labels["train"]],
        test=[np.array([index[p] for p in row], dtype=np.int64) for row in labels["test"]],
        test_labels=[],
    )


def _check_frame_counts(table: ProbeTable, features: list[np.ndarray], labels: list[np.ndarray], rate: float) -> None:
    for i, (feats, row) in enumerate(zip(features, labels)):
        if feats.shape[1] != len(row):
            raise ValueError(
                f"{table.where(i)}: {feats.shape[1]} feature frames but {len(row)} frame labels at {rate:g} Hz "
                "(the alignment does not describe this audio)"
            )


def _check_ctc_lengths(table: ProbeTable, features: list[np.ndarray], targets: list[list[int]]) -> None:
    """CTC needs a frame per character plus a blank between repeated characters."""
    for i, (feats, ids) in enumerate(zip(features, targets)):
        needed = len(ids) + sum(a == b for a, b in zip(ids, ids[1:]))
        if feats.shape[1] < needed:
            raise ValueError(f"{table.where(i)}: {feats.shape[1]} frames cannot emit a {len(ids)}-character transcript")


# ---------------------------------------------------------------- heads


def _head(cfg: ProbeConfig, mean: Tensor, std: Tensor, num_outputs: int, device: torch.device) -> LinearProbe:
    with torch.random.fork_rng(devices=[]):  # seeded init, the caller's random state untouched
        torch.manual_seed(cfg.seed)
        return LinearProbe(mean, std, num_outputs).to(device)


def _fit(cfg: ProbeConfig, head: nn.Module, num_items: int, batch_loss: Callable[[Tensor], Tensor]) -> list[float]:
    epochs = cfg.epochs if cfg.epochs is not None else DEFAULT_EPOCHS[cfg.task]
    lr = cfg.lr if cfg.lr is not None else DEFAULT_LR[cfg.task]
    return fit(head, num_items, batch_loss, epochs=epochs, batch_size=cfg.batch_size, lr=lr, seed=cfg.seed)


def _pooled_classifier(
    cfg: ProbeConfig, x: np.ndarray, y: list[int], num_classes: int, device: torch.device
) -> tuple[LinearProbe, list[float]]:
    """Linear classifier of pooled vectors x (N, K, F), trained with cross-entropy."""
    mean, std = layer_stats(list(x))
    head = _head(cfg, mean, std, num_classes, device)
    inputs, labels = torch.from_numpy(x).to(device), torch.tensor(y, device=device)
    losses = _fit(cfg, head, len(y), lambda idx: nn.functional.cross_entropy(head(inputs[idx]), labels[idx]))
    return head, losses


def classify(
    cfg: ProbeConfig, train: list[np.ndarray], test: list[np.ndarray], targets: Targets, device: torch.device
) -> Outcome:
    """Utterance classification from mean+std statistics of every layer, mixed after standardisation."""
    x_train = np.stack([pool_mean_std(f) for f in train])  # (N, K, 2D)
    x_test = torch.from_numpy(np.stack([pool_mean_std(f) for f in test])).to(device)
    head, losses = _pooled_classifier(cfg, x_train, targets.train, len(targets.names), device)
    with torch.no_grad():
        predicted = head(x_test).argmax(dim=-1).cpu().numpy()
    metrics = {
        "accuracy": accuracy(targets.test, predicted),
        "macro_f1": macro_f1(targets.test, predicted, labels=list(range(len(targets.names)))),
    }
    weights = head.mix.weights if x_train.shape[1] > 1 else None
    return Outcome(metrics=metrics, layer_weights=weights, losses=losses)


def verify(
    cfg: ProbeConfig, train: list[np.ndarray], test: list[np.ndarray], targets: Targets, device: torch.device
) -> Outcome:
    """Cosine scoring of centred mean embeddings of one layer. With several layers (`weighted`), their weights
    come from a linear speaker classifier trained on the training speakers (the embedding is the standardised,
    mixed layer means, and the classifier itself is discarded): the layers that separate known speakers best
    are trusted for unseen ones."""
    e_train = np.stack([pool_mean(f) for f in train])  # (N, K, D)
    e_test = np.stack([pool_mean(f) for f in test])
    weights, losses = None, []
    if e_train.shape[1] > 1:
        head, losses = _pooled_classifier(cfg, e_train, targets.train, len(targets.names), device)
        head = head.cpu()
        with torch.no_grad():
            e_train, e_test = (
                head.mix((torch.from_numpy(e) - head.mean) / head.std).numpy() for e in (e_train, e_test)
            )
        weights = head.mix.weights
    else:
        e_train, e_test = e_train[:, 0], e_test[:, 0]  # (N, D)
    e_test = e_test - e_train.mean(axis=0)  # centring by the training mean removes what every utterance shares
    unit = e_test / np.maximum(np.linalg.norm(e_test, axis=1, keepdims=True), 1e-12)
    if targets.trials is not None:
        i, j, trial_targets = targets.trials
    else:
        i, j, trial_targets = trial_pairs(targets.test_labels, max_pairs=cfg.max_trials, seed=cfg.seed)
    scores = (unit[i] * unit[j]).sum(axis=1)  # cosine similarity per trial
    rate, threshold = eer(scores, trial_targets)
    metrics = {
        "eer": rate,
        "min_dcf": min_dcf(scores, trial_targets, p_target=cfg.p_target, c_miss=cfg.c_miss, c_fa=cfg.c_fa),
    }
    metrics |= {f"recall@{k}": v for k, v in recall_at_k(e_test, targets.test_labels, RECALL_KS).items()}
    details = {"eer_threshold": threshold, "trials": int(len(scores)), "target_trials": int(trial_targets.sum())}
    return Outcome(metrics=metrics, layer_weights=weights, losses=losses, details=details)


def _frame_stats(train: list[np.ndarray]) -> tuple[Tensor, Tensor]:
    return layer_stats(train, frame_axis=1)  # (K, D) over every training frame


def ctc(
    cfg: ProbeConfig, train: list[np.ndarray], test: list[np.ndarray], targets: Targets, device: torch.device
) -> Outcome:
    """Linear CTC head over frames; greedy decoding; character and word error rates."""
    mean, std = _frame_stats(train)
    head = _head(cfg, mean, std, len(targets.names) + 1, device)
    ctc_loss = nn.CTCLoss(blank=0, zero_infinity=True)

    def batch_loss(idx: Tensor) -> Tensor:
        x, lengths = pad_frames([train[i] for i in idx], device)  # (B, T, K, D), (B,)
        log_probs = head(x).log_softmax(dim=-1).transpose(0, 1)  # (T, B, C)
        ids = [targets.train[i] for i in idx]
        flat = torch.tensor([c for row in ids for c in row], device=device)
        return ctc_loss(log_probs, flat, lengths, torch.tensor([len(row) for row in ids], device=device))

    losses = _fit(cfg, head, len(train), batch_loss)
    hypotheses = []
    with torch.no_grad():
        for start in range(0, len(test), EVAL_BATCH):
            x, lengths = pad_frames(test[start : start + EVAL_BATCH], device)
            best = head(x).argmax(dim=-1).cpu()  # (B, T)
            for row, n in zip(best, lengths.tolist()):
                hypotheses.append("".join(targets.names[c - 1] for c in ctc_greedy(row[:n])))
    refs = targets.test_labels
    chars, words = char_errors(refs, hypotheses), word_errors(refs, hypotheses)
    metrics = {"cer": chars.rate, "wer": words.rate}
    examples = [{"ref": r, "hyp": h} for r, h in zip(refs[:5], hypotheses[:5])]
    # hits, substitutions, deletions, insertions: what kind of errors the rates are made of
    details = {"examples": examples, "cer_counts": dataclasses.asdict(chars), "wer_counts": dataclasses.asdict(words)}
    return Outcome(metrics=metrics, losses=losses, details=details, layer_weights=_weights(head, mean))


def frames(
    cfg: ProbeConfig, train: list[np.ndarray], test: list[np.ndarray], targets: Targets, device: torch.device
) -> Outcome:
    """Linear classifier of every frame against its aligned phone."""
    mean, std = _frame_stats(train)
    head = _head(cfg, mean, std, len(targets.names), device)

    def batch_loss(idx: Tensor) -> Tensor:
        x, lengths = pad_frames([train[i] for i in idx], device)  # (B, T, K, D)
        y = torch.full(x.shape[:2], -100, dtype=torch.long)  # (B, T): padding is ignored
        for b, i in enumerate(idx.tolist()):
            y[b, : len(targets.train[i])] = torch.from_numpy(targets.train[i])
        return nn.functional.cross_entropy(head(x).flatten(0, 1), y.flatten().to(device), ignore_index=-100)

    losses = _fit(cfg, head, len(train), batch_loss)
    predicted = []
    with torch.no_grad():
        for start in range(0, len(test), EVAL_BATCH):
            x, lengths = pad_frames(test[start : start + EVAL_BATCH], device)
            best = head(x).argmax(dim=-1).cpu().numpy()  # (B, T)
            predicted += [row[:n] for row, n in zip(best, lengths.tolist())]
    truth, predicted = np.concatenate(targets.test), np.concatenate(predicted)
    metrics = {
        "accuracy": accuracy(truth, predicted),
        "macro_f1": macro_f1(truth, predicted, labels=list(range(len(targets.names)))),
    }
    details = {"test_frames": int(truth.size), "classes": len(targets.names)}
    return Outcome(metrics=metrics, losses=losses, details=details, layer_weights=_weights(head, mean))


def _weights(head: LinearProbe, mean: Tensor) -> list[float] | None:
    return head.mix.weights if mean.shape[0] > 1 else None


EVALUATE = {"classify": classify, "verify": verify, "ctc": ctc, "frames": frames}


# ---------------------------------------------------------------- the driver


def _main_layer(cfg: ProbeConfig, featurizer: Featurizer) -> int | None:
    """The layer of the headline probe; None for the weighted sum."""
    if cfg.layer is not None and cfg.weighted:
        raise ValueError("--layer and --weighted exclude each other")
    if cfg.layer is not None:
        featurizer.check_layers([cfg.layer])
        return cfg.layer
    if featurizer.num_layers == 1:
        return 0  # MFCC / log-mel: the only "layer"
    if cfg.weighted or cfg.task != "verify":
        return None
    return (featurizer.num_layers - 1) // 2  # verify without training: the middle transformer layer


def _targets(cfg: ProbeConfig, featurizer: Featurizer, train: ProbeTable, test: ProbeTable) -> Targets:
    if cfg.task == "classify":
        return _class_targets(cfg, train, test)
    if cfg.task == "verify":
        return _speaker_targets(cfg, train, test)
    if cfg.task == "ctc":
        return _ctc_targets(cfg, train, test)
    return _frame_targets(cfg, featurizer, train, test)


def _mean_metrics(outcomes: list[Outcome]) -> dict[str, float]:
    return {name: float(np.mean([o.metrics[name] for o in outcomes])) for name in outcomes[0].metrics}


def _std_metrics(outcomes: list[Outcome]) -> dict[str, float]:
    """Sample standard deviation (ddof 1) of each metric over the seeds."""
    return {name: float(np.std([o.metrics[name] for o in outcomes], ddof=1)) for name in outcomes[0].metrics}


def run_probe(
    cfg: ProbeConfig,
    featurizer: Featurizer,
    *,
    cache_dir: str | Path | None = None,
    device: str | torch.device = "cpu",
    progress: bool = False,
) -> dict[str, Any]:
    """Run one probe (and, with `all_layers`, one per layer); returns the results as written to results.json."""
    if cfg.task not in TASKS:
        raise ValueError(f"unknown task {cfg.task!r}; expected one of {', '.join(TASKS)}")
    if cfg.seeds < 1:
        raise ValueError(f"seeds must be at least 1, got {cfg.seeds}")
    device = torch.device(device)
    train_table, test_table = read_table(cfg.train), read_table(cfg.test)
    targets = _targets(cfg, featurizer, train_table, test_table)  # label errors surface before any encoding
    main = _main_layer(cfg, featurizer)
    every = tuple(range(featurizer.num_layers))
    loaded = every if main is None or cfg.all_layers else (main,)
    train = table_features(featurizer, train_table, loaded, cache_dir=cache_dir, progress=progress)
    test = table_features(featurizer, test_table, loaded, cache_dir=cache_dir, progress=progress)
    if cfg.task == "frames":
        _check_frame_counts(train_table, train, targets.train, featurizer.frame_rate)
        _check_frame_counts(test_table, test, targets.test, featurizer.frame_rate)
    if cfg.task == "ctc":
        _check_ctc_lengths(train_table, train, targets.train)

    def run(layer: int | None, run_cfg: ProbeConfig = cfg) -> Outcome:
        if layer is None:
            return EVALUATE[cfg.task](run_cfg, train, test, targets, device)
        k = loaded.index(layer)
        pick_train, pick_test = [f[k : k + 1] for f in train], [f[k : k + 1] for f in test]
        return EVALUATE[cfg.task](run_cfg, pick_train, pick_test, targets, device)

    outcomes = []
    for seed in range(cfg.seed, cfg.seed + cfg.seeds):
        outcomes.append(run(main, dataclasses.replace(cfg, seed=seed)))
    outcome = outcomes[0]  # layer weights, losses and details are the first seed's
    results: dict[str, Any] = {
        "task": cfg.task,
        "featurizer": featurizer.name,
        "featurizer_id": featurizer.cache_id,
        "frame_rate": featurizer.frame_rate,
        "num_layers": featurizer.num_layers,
        "probe": "weighted" if main is None else f"layer {main}",
        "label_column": targets.column,
        "num_train": len(train_table),
        "num_test": len(test_table),
        "headline": HEADLINE[cfg.task],
        "metrics": _mean_metrics(outcomes),
        "layer_weights": outcome.layer_weights,
        "losses": outcome.losses,
        "details": outcome.details,
        "config": dataclasses.asdict(cfg),
    }
    if cfg.seeds > 1:
        results["metrics_std"] = _std_metrics(outcomes)
        results["metrics_per_seed"] = [o.metrics for o in outcomes]
    if cfg.all_layers:  # the first seed only
        per_layer = [outcome if k == main else run(k) for k in every]
        results["per_layer"] = [{"layer": k, "metrics": o.metrics} for k, o in zip(every, per_layer)]
    return results
