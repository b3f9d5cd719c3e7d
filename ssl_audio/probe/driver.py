"""`run_probe`: one probing run of any registered task (optionally for every layer). It names no task: what
differs between tasks comes from the task's record (ssl_audio.probe.task.ProbeTask).

Which layers: `layer=k` probes layer k (0 = the transformer input); `weighted` learns a softmax-weighted
sum of all layers (SUPERB); neither: the task's default rule (the weighted sum for the trained tasks, the
middle layer for verify; `head: stats` learns its own weights). With `all_layers`, every layer is also probed on
its own from the same cached features. With `by_snr`, the headline probe is also scored on each SNR bucket of the
test table (ssl_audio.probe.snr): heads trained on the training table as it is (clean, or multi-condition).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ssl_audio.data.probe_table import read_table
from ssl_audio.probe.config import ProbeConfig
from ssl_audio.probe.featurizer import Featurizer, table_features
from ssl_audio.probe.registry import get_task
from ssl_audio.probe.snr import bucket_rows, subset_targets
from ssl_audio.probe.task import Outcome, ProbeTask


def _with_task_defaults(cfg: ProbeConfig, task: ProbeTask) -> ProbeConfig:
    """What the task's functions see: unset epochs, lr and label column taken from the task's record."""
    return dataclasses.replace(
        cfg,
        epochs=cfg.epochs if cfg.epochs is not None else task.epochs,
        lr=cfg.lr if cfg.lr is not None else task.lr,
        label_column=cfg.label_column or task.label_column,
    )


def _main_layer(cfg: ProbeConfig, task: ProbeTask, featurizer: Featurizer) -> int | None:
    """The layer of the headline probe; None for the weighted sum."""
    if cfg.layer is not None:
        featurizer.check_layers([cfg.layer])
        return cfg.layer
    if featurizer.num_layers == 1:
        return 0  # MFCC / log-mel: the only "layer"
    if cfg.weighted or cfg.head == "stats":  # the statistics head learns its layer weights (SUPERB SID / ASV)
        return None
    return task.default_layer(featurizer.num_layers)


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
    task = get_task(cfg.task)
    resolved = _with_task_defaults(cfg, task)
    device = torch.device(device)
    train_table, test_table = read_table(cfg.train), read_table(cfg.test)
    targets = task.targets(resolved, featurizer, train_table, test_table)  # label errors surface before any encoding
    buckets = bucket_rows(test_table) if cfg.by_snr else {}  # so do SNR errors
    main = _main_layer(cfg, task, featurizer)
    every = tuple(range(featurizer.num_layers))
    loaded = every if main is None or cfg.all_layers else (main,)
    train = table_features(featurizer, train_table, loaded, cache_dir=cache_dir, progress=progress)
    test = table_features(featurizer, test_table, loaded, cache_dir=cache_dir, progress=progress)
    task.check_features(targets, train_table, train, test_table, test, featurizer.frame_rate)

    def run(layer: int | None, run_cfg: ProbeConfig = resolved, rows: list[int] | None = None) -> Outcome:
        """The probe of one layer (None: all loaded ones), on the test rows `rows` (None: all)."""
        run_test, run_targets = test, targets
        if rows is not None:
            run_test, run_targets = [test[i] for i in rows], subset_targets(targets, rows)
        if layer is None:
            return task.evaluate(run_cfg, train, run_test, run_targets, device)
        k = loaded.index(layer)
        pick_train, pick_test = [f[k : k + 1] for f in train], [f[k : k + 1] for f in run_test]
        return task.evaluate(run_cfg, pick_train, pick_test, run_targets, device)

    outcomes = []
    for seed in range(cfg.seed, cfg.seed + cfg.seeds):
        outcomes.append(run(main, dataclasses.replace(resolved, seed=seed)))
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
        "headline": outcome.headline or task.headline,
        "metrics": _mean_metrics(outcomes),
        "layer_weights": outcome.layer_weights,
        "losses": outcome.losses,
        "details": outcome.details,
        "config": dataclasses.asdict(cfg),  # as asked for: the task's defaults stay None
    }
    if cfg.seeds > 1:
        results["metrics_std"] = _std_metrics(outcomes)
        results["metrics_per_seed"] = [o.metrics for o in outcomes]
    if cfg.by_snr:  # every seed's head trained again for each bucket's rows: the same heads, seeded alike
        results["by_snr"] = []
        for bucket, rows in buckets.items():
            per_seed = [
                run(main, dataclasses.replace(resolved, seed=s), rows) for s in range(cfg.seed, cfg.seed + cfg.seeds)
            ]
            entry: dict[str, Any] = {"bucket": bucket, "num_test": len(rows), "metrics": _mean_metrics(per_seed)}
            if cfg.seeds > 1:
                entry["metrics_std"] = _std_metrics(per_seed)
            results["by_snr"].append(entry)
    if cfg.all_layers:  # the first seed only
        per_layer = [outcome if k == main else run(k) for k in every]
        results["per_layer"] = [{"layer": k, "metrics": o.metrics} for k, o in zip(every, per_layer)]
    return results
