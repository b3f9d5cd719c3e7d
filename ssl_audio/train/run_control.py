"""How a run ends early: a TrainingError when it cannot go on; a stop signal when the cluster asks it to stop.

SIGTERM or SIGUSR1 ends the update in progress, writes a checkpoint and leaves with REQUEUE_EXIT_CODE, so a job
script can requeue and resume (`--resume auto`).

SLURM sends SIGUSR1 ahead of the time limit with `#SBATCH --signal=USR1@SECONDS`, and SIGTERM on `scancel` or
preemption (then SIGKILL after its KillWait, 30 s by default). Every process of the run gets the signal, or only
some: the loop sums the flag over processes in the reduce it already does per update, so all stop together.
DataLoader workers ignore SIGUSR1 (data/loader.py `die_with_parent`), so with SLURM's `--signal=USR1@SECONDS`
the main process decides when to stop; a SIGTERM sent to every process also ends the workers, so the update in
progress completes only if its batches were already fetched (use SIGUSR1 for the time limit).
"""

from __future__ import annotations

import contextlib
import signal
import threading
from types import FrameType

REQUEUE_EXIT_CODE = 75  # EX_TEMPFAIL (sysexits.h): "try again later"
STOP_SIGNALS = (signal.SIGTERM, signal.SIGUSR1)


class TrainingError(RuntimeError):
    """The run cannot go on (e.g. too many non-finite updates in a row, or an optimizer step that made the
    weights non-finite). The newest checkpoint then holds the last finite weights."""


class StopRequest:
    """The name of the first stop signal received, once its handler is installed."""

    def __init__(self) -> None:
        self.signal: str | None = None

    def install(self, held: contextlib.ExitStack) -> None:
        """Catch the stop signals until `held` closes (then the previous handlers come back). Main thread only:
        elsewhere (a training call from a worker thread) Python cannot install handlers, and none are."""
        if threading.current_thread() is not threading.main_thread():
            return
        for number in STOP_SIGNALS:
            previous = signal.signal(number, self._handle)
            held.callback(signal.signal, number, previous)

    def _handle(self, number: int, frame: FrameType | None) -> None:
        if self.signal is None:
            self.signal = signal.Signals(number).name
