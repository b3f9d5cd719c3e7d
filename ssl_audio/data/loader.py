"""make_loader: manifest + DataConfig -> DataLoader of Batches (AudioDataset + BucketBatchSampler + Collator).

A file that cannot be used (unreadable, truncated, silent, changed or deleted since the manifest was built)
costs its utterance, not the run: the dataset returns a BadUtterance, the collator leaves it out, and the
loader counts it, reports each bad row once, and stops only when too large a fraction of what it loaded was
bad. Which utterances a batch holds depends on the sampler and the files alone, never on workers or timing.
"""

from __future__ import annotations

import ctypes
import functools
import logging
import os
import signal
import sys
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

import torch
from torch.utils.data import DataLoader

from ssl_audio.data.collate import Batch, Collator
from ssl_audio.data.dataset import AudioDataset, FrameLabels
from ssl_audio.data.manifest import Manifest
from ssl_audio.data.sampler import BucketBatchSampler

if TYPE_CHECKING:
    pass

MAX_BAD_FRACTION = 0.01  # default data.max_bad_fraction
# The fraction is judged only after this many utterances: at 1 % it then takes at least 5 bad files to stop,
# so one bad file early in a run (or in a corpus of a few hundred files) is skipped, not fatal.
BAD_FRACTION_AFTER = 500
PR_SET_PDEATHSIG = 1  # linux/prctl.h
logger = logging.getLogger(__name__)


class TooManyBadUtterances(ValueError):
    """More than data.max_bad_fraction of the utterances loaded could not be used."""


def stderr_line(text: str) -> None:
    """Where bad rows are told unless the loop gives its own log (ranks other than 0)."""
    logger.warning(text)


class ResumableLoader(DataLoader):
    """A DataLoader whose state_dict counts the batches the loop has received, and the bad utterances.

    Workers prefetch, so the sampler has handed out a few batches more than the loop has seen; saving
    the sampler's own position would skip those on resume. Bad utterances are counted as batches arrive,
    in sampler order, so the counts (saved with the position) are the same with any number of workers.
    A batch whose every utterance is bad still counts towards the position but is not yielded.
    """

    _epoch: int | None = None  # epoch of the iteration in progress (or last finished)
    _delivered: int = 0  # batches of that epoch the loop has received, counting those before a resume

    def __init__(
        self, *args: Any, max_bad_fraction: float = MAX_BAD_FRACTION, bad_fraction_after: int = BAD_FRACTION_AFTER,
        **kwargs: Any,
    ) -> None:  # fmt: skip
        if not 0 <= max_bad_fraction < 1:
            raise ValueError(f"data.max_bad_fraction must be in [0, 1), got {max_bad_fraction}")
        super().__init__(*args, **kwargs)
        self.max_bad_fraction = max_bad_fraction
        self.bad_fraction_after = bad_fraction_after
        self.report: Callable[[str], None] = stderr_line  # where each new bad row is told; the loop sets its log
        self.utterances_seen = 0  # utterances the loop has received or that were skipped, over all epochs
        self.utterances_bad = 0  # of those, skipped as bad (a bad file counts again every epoch)
        self.bad_rows: set[int] = set()  # manifest rows reported as bad: each is reported once
        self.last_bad = ""  # the newest bad utterance, for the stop message

    @property
    def bad_files(self) -> int:
        return len(self.bad_rows)

    def __iter__(self) -> Iterator[Batch]:
        sampler: BucketBatchSampler = self.batch_sampler
        self._epoch, self._delivered = sampler.epoch, sampler.start_position
        for batch in super().__iter__():
            self._delivered += 1
            self._count(batch)
            if len(batch):
                yield batch

    def _count(self, batch: Batch) -> None:
        self.utterances_seen += len(batch) + len(batch.skipped)
        self.utterances_bad += len(batch.skipped)
        for bad in batch.skipped:
            self.last_bad = str(bad)
            if bad.index not in self.bad_rows:
                self.bad_rows.add(bad.index)
                self.report(f"skipped unusable utterance {bad}")
        seen, count = self.utterances_seen, self.utterances_bad
        if seen >= self.bad_fraction_after and count > self.max_bad_fraction * seen:
            raise TooManyBadUtterances(
                f"{count} of {seen} utterances loaded so far were unusable ({count / seen:.1%}, "
                f"{self.bad_files} distinct files), more than data.max_bad_fraction={self.max_bad_fraction}; "
                f"last: {self.last_bad}; fix or remove those files and rebuild the manifest, or raise the limit"
            )

    def state_dict(self) -> dict[str, Any]:
        state = self.batch_sampler.state_dict()
        if self._epoch == state["epoch"]:
            state["position"] = self._delivered
        state.update(
            utterances_seen=self.utterances_seen,
            utterances_bad=self.utterances_bad,
            bad_rows=sorted(self.bad_rows),
            last_bad=self.last_bad,
        )
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue `state`'s epoch where it stopped: the next pass yields only the remaining batches."""
        self.batch_sampler.load_state_dict(state)
        set_epoch(self, state["epoch"])
        self._epoch = None  # until the next pass, the loaded position is the state
        # Checkpoints from before bad-file counting lack these keys: they start from zero.
        self.utterances_seen = int(state.get("utterances_seen", 0))
        self.utterances_bad = int(state.get("utterances_bad", 0))
        self.bad_rows = {int(row) for row in state.get("bad_rows", ())}
        self.last_bad = str(state.get("last_bad", ""))

    def load_state_dicts_of_world(self, states: Sequence[dict[str, Any]]) -> None:
        """Continue a run saved on another number of processes (`states`: one per old rank): the rest of its epoch
        re-split over this world size (BucketBatchSampler.state_for_world). The bad-utterance counts of all old
        ranks go to rank 0 (the rank that reports them); every rank knows every bad row, so none is told twice."""
        sampler: BucketBatchSampler = self.batch_sampler
        state = sampler.state_for_world(states)
        first = sampler.rank == 0
        self.load_state_dict({
            **state,
            "utterances_seen": sum(int(s.get("utterances_seen", 0)) for s in states) if first else 0,
            "utterances_bad": sum(int(s.get("utterances_bad", 0)) for s in states) if first else 0,
            "bad_rows": sorted({int(row) for s in states for row in s.get("bad_rows", ())}),
            "last_bad": next((str(s["last_bad"]) for s in states if s.get("last_bad")), ""),
        })  # fmt: skip


def set_epoch(loader: DataLoader, epoch: int) -> None:
    """Select `epoch` for the batch order and every crop; call before iterating each epoch."""
    for part in (loader.batch_sampler, loader.dataset, loader.collate_fn):
        part.set_epoch(epoch)


def die_with_parent(parent_pid: int, worker_id: int) -> None:
    """worker_init_fn: on Linux, have the kernel kill this worker as soon as its parent dies; and ignore SIGUSR1,
    which a cluster sends to every process to ask a run to stop before its time limit, and which the main process
    answers by finishing its update and checkpointing (train/run_control.py). SIGTERM keeps its default: Python's
    multiprocessing ends leftover workers at exit with SIGTERM and then waits for them without a time limit.

    Torch's workers notice a dead parent only at their next 5 s poll, holding memory and files meanwhile.
    The signal fires when the thread that started the worker exits; DataLoaders start them from the
    thread that iterates, which in training is the main thread.
    """
    signal.signal(signal.SIGUSR1, signal.SIG_IGN)
    if not sys.platform.startswith("linux"):
        return
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
        return  # not fatal: torch's own poll still ends the worker, only later
    if os.getppid() != parent_pid:  # the parent died before prctl took effect
        os._exit(1)


def worker_options(num_workers: int, seed: int) -> dict[str, Any]:
    """DataLoader options every loader of ours shares: its workers, pinned memory and its own generator."""
    return {
        "num_workers": num_workers,
        "persistent_workers": num_workers > 0,  # worker start-up (imports, fork) once per run, not per epoch
        "pin_memory": torch.cuda.is_available(),
        "worker_init_fn": functools.partial(die_with_parent, os.getpid()) if num_workers > 0 else None,
        # Its own generator: each new iterator draws a worker seed, which must not advance the global RNG
        # (masking, dropout, Gumbel noise) or a resumed run would drift from an uninterrupted one.
        "generator": torch.Generator().manual_seed(seed),
    }


def make_file_loader(
    manifest: Manifest,
    *,
    max_samples: int | None,
    random_crop: bool,
    max_batch_seconds: float,
    bucketing: bool = True,
    num_buckets: int = 0,
    shuffle: bool = True,
    max_batch_size: int | None = None,
    collate_mode: str = "pad",
    seed: int = 0,
    epoch: int = 0,
    rank: int = 0,
    world_size: int = 1,
    num_workers: int = 0,
    labels: Sequence[FrameLabels] | None = None,
    target_lufs: float | None = None,
    max_bad_fraction: float = MAX_BAD_FRACTION,
    bad_fraction_after: int = BAD_FRACTION_AFTER,
) -> ResumableLoader:
    """Batches of this rank's share of `manifest`, ready for `epoch` (use set_epoch for the next ones).

    Every option loose, for tests and tools; code with a DataConfig calls make_loader.
    """
    dataset = AudioDataset(
        manifest, max_samples=max_samples, random_crop=random_crop, seed=seed, target_lufs=target_lufs, labels=labels,
        skip_bad=True,
    )  # fmt: skip
    sampler = BucketBatchSampler(
        dataset.sizes,
        max_batch_seconds=max_batch_seconds,
        bucketing=bucketing,
        num_buckets=num_buckets,
        shuffle=shuffle,
        seed=seed,
        rank=rank,
        world_size=world_size,
        max_batch_size=max_batch_size,
    )
    loader = ResumableLoader(
        dataset,
        batch_sampler=sampler,
        collate_fn=Collator(collate_mode, seed=seed, random_crop=random_crop),
        **worker_options(num_workers, seed),
        max_bad_fraction=max_bad_fraction,
        bad_fraction_after=bad_fraction_after,
    )
    set_epoch(loader, epoch)
    return loader
