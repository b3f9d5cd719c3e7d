"""Task records by name, from the table in task_names.py. Modules are imported on first use, so
`ssl-audio probe --help` lists the tasks without importing torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from ssl_audio.probe.task_names import TASK_MODULES

if TYPE_CHECKING:
    from ssl_audio.probe.task import ProbeTask


def task_names() -> tuple[str, ...]:
    return tuple(TASK_MODULES)


def get_task(name: str) -> ProbeTask:
    """The record of task `name`, importing its module."""
    if name not in TASK_MODULES:
        raise ValueError(f"unknown task {name!r}; expected one of {', '.join(TASK_MODULES)}")
    task = importlib.import_module(TASK_MODULES[name]).TASK
    if task.name != name:  # a registry entry pointing at another task's module
        raise ValueError(f"{TASK_MODULES[name]}: its TASK is {task.name!r}, registered as {name!r}")
    return task
