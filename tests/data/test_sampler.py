import numpy as np
import pytest

from ssl_audio.audio import SAMPLE_RATE
from ssl_audio.data.sampler import BucketBatchSampler


def seconds(samples: int) -> float:
    return samples / SAMPLE_RATE


def spread_lengths(n: int, seed: int = 0) -> list[int]:
    """Lengths spread widely: 0.1 s to 10 s."""
    return np.random.default_rng(seed).integers(SAMPLE_RATE // 10, 10 * SAMPLE_RATE, n).tolist()


def rank_batches(lengths, world_size: int, epoch: int = 0, **kwargs) -> list[list[list[int]]]:
    shards = []
    for rank in range(world_size):
        sampler = BucketBatchSampler(lengths, rank=rank, world_size=world_size, **kwargs)
        sampler.set_epoch(epoch)
        shards.append(list(sampler))
        assert len(sampler) == len(shards[-1])
    return shards


def padded(batches, lengths) -> int:
    return sum(len(b) * max(lengths[i] for i in b) for b in batches)


def test_hand_computed_packing():
    lengths = [100, 400, 200, 300, 100, 400]
    bound = seconds(800)
    # length order 0,4,2,3,1,5 (100,100,200,300,400,400): 3*200 fits, 4*300 does not; 2*400 fits, 3*400 not
    assert rank_batches(lengths, 1, max_batch_seconds=bound, shuffle=False) == [[[0, 4, 2], [3, 1], [5]]]
    # index order: (100,400) (200,300) (100,400)
    random_order = rank_batches(lengths, 1, max_batch_seconds=bound, shuffle=False, bucketing=False)
    assert random_order == [[[0, 1], [2, 3], [4, 5]]]
    assert padded(random_order[0], lengths) == 2200 > padded([[0, 4, 2], [3, 1], [5]], lengths) == 1800
    # two ranks: 3 batches -> split the largest, [0, 4, 2] -> [0] + [4, 2]; ranks take every other batch
    assert rank_batches(lengths, 2, max_batch_seconds=bound, shuffle=False) == [[[0], [3, 1]], [[4, 2], [5]]]


def test_merges_when_splitting_cannot_even_out():
    # index order packs [0] [1] [2] [3, 4]: 4 batches of 5 items; 6 would need more batches than items,
    # so two batches merge instead: [1] + [3, 4] is 3 * 10 = 30 <= 40 samples.
    lengths = [40, 10, 40, 10, 10]
    shards = rank_batches(lengths, 3, max_batch_seconds=seconds(40), shuffle=False, bucketing=False)
    assert shards == [[[0]], [[1, 3, 4]], [[2]]]


def test_impossible_even_split_raises():
    # no two items fit together: 5 singleton batches can never be shared equally by 4 ranks
    with pytest.raises(ValueError, match="multiple of world_size 4"):
        rank_batches([100] * 5, 4, max_batch_seconds=seconds(100))


def test_max_batch_size():
    shards = rank_batches([100] * 10, 1, max_batch_seconds=100.0, max_batch_size=3, shuffle=False)
    assert [len(b) for b in shards[0]] == [3, 3, 3, 1]


@pytest.mark.parametrize("world_size", [1, 2, 3, 4])
@pytest.mark.parametrize("bucketing,num_buckets", [(True, 0), (True, 3), (False, 0)])
@pytest.mark.parametrize("seed", [0, 1, 7])
def test_invariants(world_size, bucketing, num_buckets, seed):
    lengths = spread_lengths(61, seed)
    bound = 25 * SAMPLE_RATE
    for epoch in (0, 1):
        shards = rank_batches(
            lengths,
            world_size,
            epoch,
            max_batch_seconds=seconds(bound),
            bucketing=bucketing,
            num_buckets=num_buckets,
            seed=seed,
        )
        assert len({len(shard) for shard in shards}) == 1  # equal batch counts per rank
        every = [i for shard in shards for batch in shard for i in batch]
        assert sorted(every) == list(range(len(lengths)))  # each item exactly once over all ranks
        for shard in shards:
            for batch in shard:
                assert batch and len(batch) * max(lengths[i] for i in batch) <= bound


@pytest.mark.parametrize("bucketing,num_buckets", [(True, 0), (True, 4), (False, 0)])
def test_orders_depend_on_seed_and_epoch_only(bucketing, num_buckets):
    lengths = spread_lengths(80)
    kwargs = dict(max_batch_seconds=20.0, bucketing=bucketing, num_buckets=num_buckets)
    assert rank_batches(lengths, 2, 3, seed=5, **kwargs) == rank_batches(lengths, 2, 3, seed=5, **kwargs)
    assert rank_batches(lengths, 2, 3, seed=5, **kwargs) != rank_batches(lengths, 2, 4, seed=5, **kwargs)
    assert rank_batches(lengths, 2, 3, seed=5, **kwargs) != rank_batches(lengths, 2, 3, seed=6, **kwargs)


def test_exact_sort_breaks_ties_randomly():
    lengths = [1000] * 12  # all ties: only the tie-break differs between epochs
    orders = [rank_batches(lengths, 1, epoch, max_batch_seconds=seconds(4000))[0] for epoch in (0, 1)]
    assert orders[0] != orders[1]
    assert all(len(batch) == 4 for batch in orders[0] + orders[1])


@pytest.mark.parametrize("world_size", [1, 3])
@pytest.mark.parametrize("stop", [0, 1, 4, "end"])
def test_resume_yields_exactly_the_rest(world_size, stop):
    lengths = spread_lengths(70, 3)
    kwargs = dict(max_batch_seconds=20.0, seed=11, rank=world_size - 1, world_size=world_size)
    sampler = BucketBatchSampler(lengths, **kwargs)
    sampler.set_epoch(2)
    full = list(sampler)
    stop = len(full) if stop == "end" else stop
    iterator = iter(sampler)
    seen = [next(iterator) for _ in range(stop)]
    assert sampler.position == stop  # advances with every yielded batch
    state = sampler.state_dict()
    assert state["epoch"] == 2 and state["position"] == stop

    resumed = BucketBatchSampler(lengths, **kwargs)
    resumed.load_state_dict(state)
    resumed.set_epoch(2)  # the loop's usual call for the current epoch keeps the resume
    assert seen + list(resumed) == full
    assert list(resumed) == full  # a later pass of the same epoch is whole again
    resumed.set_epoch(3)
    fresh = BucketBatchSampler(lengths, **kwargs)
    fresh.set_epoch(3)
    assert list(resumed) == list(fresh)


def test_resume_rejects_another_setup():
    lengths = spread_lengths(40)
    state = BucketBatchSampler(lengths, max_batch_seconds=20.0, world_size=2).state_dict()
    with pytest.raises(ValueError, match="world_size 2"):
        BucketBatchSampler(lengths, max_batch_seconds=20.0, world_size=4).load_state_dict(state)
    with pytest.raises(ValueError, match="fingerprint"):
        BucketBatchSampler(lengths, max_batch_seconds=30.0, world_size=2).load_state_dict(state)
    with pytest.raises(ValueError, match="seed 0"):
        BucketBatchSampler(lengths, max_batch_seconds=20.0, world_size=2, seed=1).load_state_dict(state)
    with pytest.raises(ValueError, match="position 999"):
        BucketBatchSampler(lengths, max_batch_seconds=20.0, world_size=2).load_state_dict({**state, "position": 999})


def test_bucketing_pads_less_than_random_packing():
    lengths = spread_lengths(400)
    bound = 60 * SAMPLE_RATE
    fractions = {}
    for name, kwargs in {"sorted": {}, "buckets": {"num_buckets": 8}, "random": {"bucketing": False}}.items():
        batches = rank_batches(lengths, 1, max_batch_seconds=seconds(bound), **kwargs)[0]
        fractions[name] = 1 - sum(lengths) / padded(batches, lengths)
    assert fractions["sorted"] < 0.05 < 0.3 < fractions["random"]
    assert fractions["sorted"] < fractions["buckets"] < fractions["random"]


def test_bad_input_names_the_item():
    with pytest.raises(ValueError, match=r"item 2 alone has 32000 samples"):
        BucketBatchSampler([100, 200, 32_000], max_batch_seconds=1.0)
    with pytest.raises(ValueError, match="3 items cannot give each of 4 ranks"):
        BucketBatchSampler([100, 200, 300], max_batch_seconds=1.0, world_size=4)
    with pytest.raises(ValueError, match="rank 2"):
        BucketBatchSampler([100, 200, 300], max_batch_seconds=1.0, rank=2, world_size=2)
