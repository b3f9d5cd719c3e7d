"""`ProbeConfig`: one probing run, built like every other config (`ssl_audio.configs.from_dict(...,
schema=ProbeConfig)`) and range-checked when built, so a bad value fails before any audio is encoded."""

from __future__ import annotations

from dataclasses import dataclass

from ssl_audio.checks import fail, require_count, require_positive, require_range
from ssl_audio.probe.task_names import TASK_MODULES

HEADS = ("linear", "stats")
STATS_HEAD_TASKS = ("classify", "verify", "noisy")  # the utterance-level tasks


@dataclass(frozen=True, kw_only=True)
class ProbeConfig:
    """One probing run: task, data, which layers, and the head's training."""

    task: str  # a name in ssl_audio.probe.task_names.TASK_MODULES
    train: str  # tsv with a header row; `path` relative to the tsv's folder
    test: str
    label_column: str | None = None  # None: the task's default (classify the last column, verify `speaker`, ...)
    alignments: str | None = None  # frames: alignments.jsonl (ssl_audio.data.alignments) covering both tsvs
    layer: int | None = None  # probe this layer alone (0 = the transformer input)
    weighted: bool = False  # learn a softmax-weighted sum of all layers (SUPERB)
    all_layers: bool = False  # also probe every layer on its own and plot the metric against the layer
    # linear: pool each layer, mix the pooled vectors, linear; stats: mix the layers per frame, then mean + std
    # pooling, linear (SUPERB's SID/ASV heads; ssl_audio.probe.stats_head). Utterance-level tasks only.
    head: str = "linear"
    by_snr: bool = False  # also report the metrics per SNR bucket of the test table's snr_db (ssl_audio.probe.snr)
    epochs: int | None = None  # None: the task's default
    lr: float | None = None  # Adam learning rate; None: the task's default
    batch_size: int = 32  # utterances per update
    seed: int = 0  # head initialisation, batch order, trial subsampling
    seeds: int = 1  # train the head this many times (seed, seed + 1, ...): metrics are the mean, with the std
    p_target: float = 0.01  # verify minDCF: prior of a target trial (VoxCeleb / SUPERB: 0.01)
    c_miss: float = 1.0
    c_fa: float = 1.0
    max_trials: int | None = None  # verify: balanced random subset of this many trials; None: every pair
    trials: str | None = None  # verify: a trial list (`label enroll test`, VoxCeleb's format) instead of pairs

    def __post_init__(self) -> None:
        if self.task not in TASK_MODULES:
            fail(self, "task", f"must be one of {', '.join(TASK_MODULES)}, got {self.task!r}")
        require_count(self, "epochs", "batch_size", "seeds", "max_trials")
        require_count(self, "layer", minimum=0)
        require_positive(self, "lr", "c_miss", "c_fa")  # minDCF divides by the cheaper trivial system's cost
        require_range(self, "p_target", low=0, high=1, low_open=True, high_open=True)  # minDCF's prior
        if self.layer is not None and self.weighted:
            fail(self, "weighted", "excludes layer: probe one layer (--layer) or the weighted sum (--weighted)")
        if self.head not in HEADS:
            fail(self, "head", f"must be one of {', '.join(HEADS)}, got {self.head!r}")
        if self.head == "stats" and self.task not in STATS_HEAD_TASKS:
            fail(self, "head", f"stats pools utterances: tasks {', '.join(STATS_HEAD_TASKS)}, not {self.task!r}")
        if self.by_snr and self.trials is not None:
            fail(self, "by_snr", "draws the trials of each SNR bucket; it cannot use a trial list (--trials)")
        if self.trials is not None and self.max_trials is not None:
            fail(
                self, "max_trials", "give a trial list (--trials) or a number of random trials (--max-trials), not both"
            )
