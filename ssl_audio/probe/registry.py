"""Which probing tasks exist: task name -> the module that holds its `TASK` record (`ssl_audio.probe.task.ProbeTask`).

A new task is one module plus one entry here; the driver, the config and the command line take the names from
this table. Modules are imported on first use, so `ssl-audio probe --help` lists the tasks without importing torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ssl_audio.probe.task import ProbeTask

TASK_MODULES: dict[str, str] = {
    "classify": "ssl_audio.probe.tasks.classify",
    "verify": "ssl_audio.probe.tasks.verify",
    "ctc": "ssl_audio.probe.tasks.ctc",
    "frames": "ssl_audio.probe.tasks.frames",
}


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
