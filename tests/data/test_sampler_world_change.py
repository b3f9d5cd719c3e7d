"""A sampler resumed on another number of ranks finishes the epoch with exactly the utterances the old ranks had
left (none twice, none lost), split deterministically; the next epoch is the new world size's own."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from ssl_audio.audio import SAMPLE_RATE
from ssl_audio.data.loader import ResumableLoader
from ssl_audio.data.sampler import BucketBatchSampler

HAND = [100, 400, 200, 300, 100, 400]  # test_sampler's hand-computed case: bound 800 samples, no shuffling
HAND_KW = {"max_batch_seconds": 800 / SAMPLE_RATE, "shuffle": False}
KW = {"max_batch_seconds": 6.0, "seed": 5}


def lengths(n: int = 41) -> list[int]:
    return np.random.default_rng(7).integers(SAMPLE_RATE // 2, 4 * SAMPLE_RATE, n).tolist()


def run_ranks(items, world: int, positions: list[int], epoch: int = 0, states=None, **kw) -> tuple[list, list]:
    """Rank r of `world` draws positions[r] batches (after taking over `states` if given): (drawn, states)."""
    drawn, saved = [], []
    for rank in range(world):
        sampler = BucketBatchSampler(items, rank=rank, world_size=world, **kw)
        sampler.set_epoch(epoch)
        if states is not None:
            sampler.load_state_dict(sampler.state_for_world(states))
        it = iter(sampler)
        drawn += [next(it) for _ in range(positions[rank])]
        saved.append(sampler.state_dict())
    return drawn, saved


def rest(items, world: int, states, **kw) -> list[list[list[int]]]:
    """What each rank of `world` yields for the rest of the epoch after taking over `states`."""
    out = []
    for rank in range(world):
        sampler = BucketBatchSampler(items, rank=rank, world_size=world, **kw)
        sampler.set_epoch(states[0]["epoch"])
        sampler.load_state_dict(sampler.state_for_world(states))
        out.append(list(sampler))
    return out


def test_hand_computed_hand_overs() -> None:
    # Two ranks: global batches [0] [4, 2] [3, 1] [5]; rank 0 holds [0] [3, 1], rank 1 holds [4, 2] [5].
    _, states = run_ranks(HAND, 2, [1, 0], **HAND_KW)  # rank 0 took [0]; rank 1 nothing (its batch was all bad)
    assert rest(HAND, 1, states, **HAND_KW) == [[[4, 2], [3, 1], [5]]]  # what was left, in global order
    _, states = run_ranks(HAND, 2, [1, 1], **HAND_KW)  # [3, 1] [5] left: three ranks need 3 batches
    assert rest(HAND, 3, states, **HAND_KW) == [[[3]], [[1]], [[5]]]  # the largest split, as _even_out does


@pytest.mark.parametrize(("old", "positions", "new"), [(2, [4, 3], 1), (1, [5], 2), (2, [2, 2], 3), (3, [1, 2, 1], 2)])
def test_every_utterance_once_per_epoch_across_the_change(old: int, positions: list[int], new: int) -> None:
    items = lengths()
    drawn, states = run_ranks(items, old, positions, **KW)
    after = rest(items, new, states, **KW)
    assert len({len(part) for part in after}) == 1  # ranks stay in lockstep
    seen = Counter(i for batch in drawn + [b for part in after for b in part] for i in batch)
    assert seen == Counter(range(len(items)))
    bound = round(KW["max_batch_seconds"] * SAMPLE_RATE)
    assert all(len(b) * max(items[i] for i in b) <= bound for part in after for b in part)


def test_chained_changes_and_a_saved_hand_over_resume_alike() -> None:
    items = lengths()
    drawn, states = run_ranks(items, 2, [3, 3], **KW)
    more, states = run_ranks(items, 1, [4], states=states, **KW)  # 2 -> 1, four batches, saved mid-hand-over
    assert states[0]["segments"] == [[2, [3, 3]]]
    again = []  # the same 1-rank state loaded as it is (same world size): continues where it stopped
    sampler = BucketBatchSampler(items, **KW)
    sampler.load_state_dict(states[0])
    again = list(sampler)
    after = rest(items, 3, states, **KW)  # 1 -> 3
    seen = Counter(i for batch in drawn + more + [b for part in after for b in part] for i in batch)
    assert seen == Counter(range(len(items)))
    assert Counter(i for b in again for i in b) == Counter(i for part in after for b in part for i in b)


def test_next_epoch_is_the_new_world_sizes_own() -> None:
    items = lengths()
    _, states = run_ranks(items, 2, [3, 3], **KW)
    sampler = BucketBatchSampler(items, rank=1, world_size=3, **KW)
    sampler.load_state_dict(sampler.state_for_world(states))
    list(sampler)
    sampler.set_epoch(1)
    assert sampler.state_dict()["segments"] == []
    assert list(sampler) == BucketBatchSampler(items, world_size=3, **KW).global_batches(1)[1::3]


def test_states_that_disagree_or_belong_to_another_sampler_are_refused() -> None:
    items = lengths()
    _, states = run_ranks(items, 2, [3, 3], **KW)
    sampler = BucketBatchSampler(items, **KW)
    with pytest.raises(ValueError, match=r"sampler states of ranks 0 and 1 differ in epoch \(0 vs 1\)"):
        sampler.state_for_world([states[0], {**states[1], "epoch": 1}])
    with pytest.raises(ValueError, match=r"need one sampler state per rank 0\.\.0, got ranks \[1\]"):
        sampler.state_for_world(states[1:])
    other = BucketBatchSampler(items, max_batch_seconds=5.0, seed=5)
    with pytest.raises(ValueError, match="sampler state has fingerprint"):
        other.state_for_world(states)


class Epochs:
    """A dataset / collate_fn stand-in: set_epoch is all that loading a state touches."""

    def __init__(self) -> None:
        self.epoch = None

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __call__(self, items):  # pragma: no cover - never iterated here
        return items


def test_loader_hands_bad_file_counts_to_rank_0_and_every_bad_row_to_all() -> None:
    items = lengths()
    _, states = run_ranks(items, 2, [3, 3], **KW)
    counts = [{"utterances_seen": 30, "utterances_bad": 2, "bad_rows": [4, 9], "last_bad": "b.wav"},
              {"utterances_seen": 28, "utterances_bad": 1, "bad_rows": [9], "last_bad": "a.wav"}]  # fmt: skip
    states = [{**state, **c} for state, c in zip(states, counts, strict=True)]
    taken = []
    for rank in range(3):
        sampler = BucketBatchSampler(items, rank=rank, world_size=3, **KW)
        loader = ResumableLoader(Epochs(), batch_sampler=sampler, collate_fn=Epochs())
        loader.load_state_dicts_of_world(states)
        taken.append((loader.utterances_seen, loader.utterances_bad, loader.bad_rows, loader.dataset.epoch))
    assert taken == [(58, 3, {4, 9}, 0), (0, 0, {4, 9}, 0), (0, 0, {4, 9}, 0)]
