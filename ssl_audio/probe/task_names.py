"""Which probing tasks exist: task name -> the module that holds its `TASK` record (`ssl_audio.probe.task.ProbeTask`).

A new task is one module plus one entry here; the driver, the config and the command line take the names from
this table (a leaf, so the config can check a name without importing any task).
"""

from __future__ import annotations

TASK_MODULES: dict[str, str] = {
    "classify": "ssl_audio.probe.tasks.classify",
    "verify": "ssl_audio.probe.tasks.verify",
    "ctc": "ssl_audio.probe.tasks.ctc",
    "frames": "ssl_audio.probe.tasks.frames",
    "noisy": "ssl_audio.probe.tasks.noisy",
}
