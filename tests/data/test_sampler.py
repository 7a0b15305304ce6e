from collections import Counter
from itertools import islice

import numpy as np
import pytest
from torch.utils.data import DataLoader, Dataset

from paravec.data.sampler import GlobalBatchSampler

SIZES = [13, 7, 20]  # dataset indices: subset 0 -> [0, 13), 1 -> [13, 20), 2 -> [20, 40)
BOUNDS = np.cumsum([0] + SIZES)


def take(sampler, count):
    return list(islice(iter(sampler), count))


def subset_of(index):
    return int(np.searchsorted(BOUNDS, index, side="right")) - 1


@pytest.mark.parametrize("mode", ["mixed", "per_subset"])
def test_same_seed_same_batches_other_seed_other_batches(mode):
    first = take(GlobalBatchSampler(SIZES, 4, mode=mode, seed=5), 30)
    assert first == take(GlobalBatchSampler(SIZES, 4, mode=mode, seed=5), 30)
    assert first != take(GlobalBatchSampler(SIZES, 4, mode=mode, seed=6), 30)


def test_mixed_drop_last_epoch_has_no_repeats_and_reshuffles():
    sampler = GlobalBatchSampler(SIZES, 6, mode="mixed", seed=0, drop_last=True)
    assert sampler.batches_per_epoch == 40 // 6
    epochs = [take(sampler, 2 * sampler.batches_per_epoch)[e * 6:(e + 1) * 6] for e in range(2)]
    for epoch in epochs:
        flat = [i for batch in epoch for i in batch]
        assert all(len(batch) == 6 for batch in epoch)
        assert len(set(flat)) == len(flat) == 36 and set(flat) <= set(range(40))
    assert epochs[0] != epochs[1]


def test_mixed_without_drop_last_covers_every_pair_with_full_batches():
    sampler = GlobalBatchSampler(SIZES, 6, mode="mixed", seed=0, drop_last=False)
    assert sampler.batches_per_epoch == 7  # ceil(40 / 6)
    epoch = take(sampler, 7)
    counts = Counter(i for batch in epoch for i in batch)
    assert all(len(batch) == 6 for batch in epoch)
    assert set(counts) == set(range(40)) and sum(counts.values()) == 42
    assert sorted(counts.values())[-2:] == [2, 2]  # the two filler rows are repeats


@pytest.mark.parametrize("drop_last", [True, False])
def test_per_subset_batches_are_pure(drop_last):
    sampler = GlobalBatchSampler(SIZES, 4, mode="per_subset", seed=1, drop_last=drop_last)
    expected = sum(s // 4 if drop_last else -(-s // 4) for s in SIZES)
    assert sampler.batches_per_epoch == expected
    epoch = take(sampler, expected)
    seen = Counter()
    for batch in epoch:
        subsets = {subset_of(i) for i in batch}
        assert len(subsets) == 1 and len(batch) == 4
        seen[subsets.pop()] += 1
    assert seen == Counter({s: (size // 4 if drop_last else -(-size // 4)) for s, size in enumerate(SIZES)})
    flat = [i for batch in epoch for i in batch]
    if drop_last:
        assert len(set(flat)) == len(flat)
    else:
        assert set(flat) == set(range(40))
    # Subsets interleave: the batches are not grouped by subset.
    order = [subset_of(batch[0]) for batch in epoch]
    assert order != sorted(order)


def test_per_subset_reports_subsets_too_small_for_a_batch():
    sampler = GlobalBatchSampler(SIZES, 8, mode="per_subset", drop_last=True)
    assert sampler.subsets_without_batches == [1]
    assert all(subset_of(batch[0]) != 1 for batch in take(sampler, 20))
    with pytest.raises(ValueError, match="leaves no batch"):
        GlobalBatchSampler(SIZES, 21, mode="per_subset", drop_last=True)


@pytest.mark.parametrize("mode", ["mixed", "per_subset"])
@pytest.mark.parametrize("world_size", [2, 4])
def test_rank_slices_tile_the_global_batch(mode, world_size):
    global_batches = take(GlobalBatchSampler(SIZES, 8, mode=mode, seed=2), 25)
    per_rank = [take(GlobalBatchSampler(SIZES, 8, mode=mode, seed=2, rank=r, world_size=world_size), 25)
                for r in range(world_size)]
    for step, global_batch in enumerate(global_batches):
        slices = [per_rank[r][step] for r in range(world_size)]
        assert all(len(s) == 8 // world_size for s in slices)
        assert [i for s in slices for i in s] == global_batch


def test_rank_arguments_checked():
    with pytest.raises(ValueError, match="not divisible"):
        GlobalBatchSampler(SIZES, 6, world_size=4)
    with pytest.raises(ValueError, match="rank 2"):
        GlobalBatchSampler(SIZES, 8, rank=2, world_size=2)


@pytest.mark.parametrize("mode", ["mixed", "per_subset"])
def test_resume_continues_with_exactly_the_same_batches(mode):
    reference = take(GlobalBatchSampler(SIZES, 4, mode=mode, seed=9), 40)
    first = GlobalBatchSampler(SIZES, 4, mode=mode, seed=9)
    consumed = 13  # crosses an epoch boundary (10 or 9 batches an epoch)
    assert take(first, consumed) == reference[:consumed]
    state = first.state_dict(consumed)
    assert (state["epoch"], state["batch"]) == divmod(consumed, first.batches_per_epoch)
    resumed = GlobalBatchSampler(SIZES, 4, mode=mode, seed=9)
    resumed.load_state_dict(state)
    assert take(resumed, 27) == reference[consumed:]
    # A second resume counts from the loaded position.
    again = GlobalBatchSampler(SIZES, 4, mode=mode, seed=9)
    again.load_state_dict(resumed.state_dict(5))
    assert take(again, 3) == reference[consumed + 5: consumed + 8]


def test_resume_on_another_world_size_sees_the_same_global_batches():
    reference = take(GlobalBatchSampler(SIZES, 8, seed=4), 12)
    single = GlobalBatchSampler(SIZES, 8, seed=4)
    state = single.state_dict(6)
    ranks = []
    for r in range(2):
        sampler = GlobalBatchSampler(SIZES, 8, seed=4, rank=r, world_size=2)
        sampler.load_state_dict(state)
        ranks.append(take(sampler, 6))
    assert [a + b for a, b in zip(*ranks)] == reference[6:]


class _Identity(Dataset):
    def __len__(self):
        return sum(SIZES)

    def __getitem__(self, index):
        return index


def test_resume_is_exact_behind_a_prefetching_dataloader():
    """Workers pull batches ahead of the loop; the position is what the loop consumed."""

    def loader(sampler):
        return DataLoader(_Identity(), batch_sampler=sampler, num_workers=2, prefetch_factor=4,
                          collate_fn=list)

    reference = take(GlobalBatchSampler(SIZES, 4, seed=1), 20)
    sampler = GlobalBatchSampler(SIZES, 4, seed=1)
    batches = iter(loader(sampler))
    assert [next(batches) for _ in range(7)] == reference[:7]
    state = sampler.state_dict(7)
    del batches
    resumed = GlobalBatchSampler(SIZES, 4, seed=1)
    resumed.load_state_dict(state)
    batches = iter(loader(resumed))
    assert [next(batches) for _ in range(5)] == reference[7:12]


@pytest.mark.parametrize("change", [
    {"seed": 10}, {"global_batch_size": 8}, {"mode": "per_subset"}, {"drop_last": False}, {"subset_sizes": [13, 7, 21]},
])
def test_resume_refuses_a_changed_batch_plan(change):
    settings = {"subset_sizes": SIZES, "global_batch_size": 4, "mode": "mixed", "seed": 0, "drop_last": True}
    state = GlobalBatchSampler(**settings).state_dict(3)
    changed = {**settings, **change}
    with pytest.raises(ValueError, match=f"{next(iter(change))}: saved"):
        GlobalBatchSampler(**changed).load_state_dict(state)
