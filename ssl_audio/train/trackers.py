"""Experiment trackers through accelerate's tracker classes (`train.log_with`): TensorBoard by default, wandb and
mlflow when installed. The resolved run config goes to each as hyperparameters, flattened to dotted scalars.

Only the main process builds trackers (Telemetry is a no-op elsewhere). TensorBoard writes <run_dir>/tensorboard,
mlflow <run_dir>/mlruns; wandb logs to project "ssl_audio" with the run folder's name.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from accelerate.tracking import GeneralTracker, MLflowTracker, TensorBoardTracker, WandBTracker
from accelerate.utils import is_mlflow_available, is_tensorboard_available, is_wandb_available

TRACKERS = ("tensorboard", "wandb", "mlflow")
PROJECT = "ssl_audio"  # wandb project and mlflow experiment
_AVAILABLE = {"tensorboard": is_tensorboard_available, "wandb": is_wandb_available, "mlflow": is_mlflow_available}


def check_trackers(names: Sequence[str]) -> None:
    """Refuse, before any work, a tracker that is unknown or not installed."""
    for name in names:
        if name not in TRACKERS:
            raise ValueError(f"train.log_with: {name!r} is not one of {list(TRACKERS)}")
        if not _AVAILABLE[name]():
            raise ValueError(f"train.log_with: {name} is not installed (pip install {name}), or drop it from the list")


def start_trackers(names: Sequence[str], run_dir: Path, hparams: Mapping[str, Any]) -> list[GeneralTracker]:
    """Started trackers, each given `hparams` (already flat: see `hyperparameters`)."""
    check_trackers(names)
    trackers: list[GeneralTracker] = []
    for name in dict.fromkeys(names):  # a repeated name is one tracker
        if name == "tensorboard":
            tracker = TensorBoardTracker(run_name="tensorboard", logging_dir=run_dir)
        elif name == "wandb":
            tracker = WandBTracker(PROJECT, name=run_dir.name, dir=str(run_dir))
        else:
            tracker = MLflowTracker(experiment_name=PROJECT, logging_dir=str(run_dir / "mlruns"), run_name=run_dir.name)
        tracker.start()
        tracker.store_init_configuration(dict(hparams))
        trackers.append(tracker)
    return trackers


def hyperparameters(config: Mapping[str, Any], prefix: str = "") -> dict[str, bool | int | float | str]:
    """A nested config dict as dotted keys with scalar values (what every tracker accepts as hyperparameters).

    Lists and tuples become their text ("[0.9, 0.98]"); None values are left out (no tracker types them)."""
    flat: dict[str, bool | int | float | str] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(hyperparameters(value, prefix=f"{name}."))
        elif isinstance(value, (list, tuple)):
            flat[name] = str(list(value))
        elif isinstance(value, (bool, int, float, str)):
            flat[name] = value
    return flat
