"""Global batches over concatenated subsets: shuffled, endless, rank-sliced and exactly resumable.

The sampler plans *global* batches (what all ranks together consume in one step) and each rank
yields its contiguous slice: rank ``r`` of ``W`` gets rows ``[r*B/W, (r+1)*B/W)`` of every global
batch. The global sequence depends only on the subset sizes, batch size, mode, seed and
``drop_last``, never on the world size, so a run may resume on a different number of devices and
still see the same global batches.

Modes:

* ``mixed``: one permutation of all pairs per epoch, cut into batches; subsets mix in a batch.
* ``per_subset``: each subset is permuted and cut on its own, then the batches of all subsets are
  shuffled together: every batch comes from one subset (VLM2Vec-style homogeneous batches, whose
  in-batch negatives are all of the same task).

An epoch's order is drawn from ``numpy.random.default_rng([seed, epoch])``, so every epoch is
reshuffled, and any epoch can be rebuilt without replaying the earlier ones. With
``drop_last=True`` the incomplete tail batch (of the epoch, or of each subset in ``per_subset``
mode) is dropped; with ``drop_last=False`` it is filled with the first pairs of the same
permutation, so every batch has exactly ``B`` rows and every pair is seen at least once an epoch.

Resume. The position is a count of global batches since the start of training. A DataLoader with
workers pulls batches from the sampler ahead of the training loop (prefetching), so the sampler
cannot know how many batches the loop has really used; the loop passes that count to
:meth:`GlobalBatchSampler.state_dict`, and :meth:`GlobalBatchSampler.load_state_dict` makes the
next iterator start at exactly that batch.
"""

from __future__ import annotations

from typing import Iterator, Literal, Sequence

import numpy as np
from torch.utils.data import Sampler

SamplingMode = Literal["mixed", "per_subset"]
SAMPLING_MODES = ("mixed", "per_subset")


def _cut_into_batches(order: np.ndarray, batch_size: int, drop_last: bool) -> np.ndarray:
    """Rows of ``order`` as a [num_batches, batch_size] array (tail dropped or filled cyclically)."""
    if drop_last:
        count = len(order) // batch_size
        return order[: count * batch_size].reshape(count, batch_size)
    count = -(-len(order) // batch_size)
    return np.resize(order, count * batch_size).reshape(count, batch_size)


class GlobalBatchSampler(Sampler[list[int]]):
    """Endless batch sampler for a dataset made of subsets laid end to end.

    ``subset_sizes[s]`` is the number of pairs of subset ``s``; dataset indices of subset ``s``
    start at ``sum(subset_sizes[:s])`` (as in :class:`paravec.data.mmeb_train.MMEBTrainDataset`).
    Each new iterator starts at the position set by :meth:`load_state_dict` (or at the start).
    """

    def __init__(
        self,
        subset_sizes: Sequence[int],
        global_batch_size: int,
        *,
        mode: SamplingMode = "mixed",
        seed: int = 0,
        drop_last: bool = True,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        if mode not in SAMPLING_MODES:
            raise ValueError(f"sampling mode must be one of {SAMPLING_MODES}, got {mode!r}")
        if global_batch_size < 1:
            raise ValueError(f"global batch size must be positive, got {global_batch_size}")
        if world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is not valid for world size {world_size}")
        if global_batch_size % world_size:
            raise ValueError(
                f"global batch size {global_batch_size} is not divisible by world size {world_size}"
            )
        sizes = [int(size) for size in subset_sizes]
        if not sizes or any(size < 0 for size in sizes) or sum(sizes) == 0:
            raise ValueError(f"subset sizes must be non-negative with a positive total, got {sizes}")
        self.subset_sizes = sizes
        self.global_batch_size = global_batch_size
        self.mode = mode
        self.seed = seed
        self.drop_last = drop_last
        self.rank = rank
        self.world_size = world_size
        self._offsets = np.cumsum([0] + sizes)
        self.batches_per_epoch = self._count_batches_per_epoch()
        if self.batches_per_epoch == 0:
            where = "any subset" if mode == "per_subset" else "the dataset"
            raise ValueError(
                f"batch size {global_batch_size} with drop_last=True leaves no batch: {where} has fewer rows"
            )
        self._start = 0  # global batch number where the next iterator begins

    @property
    def subsets_without_batches(self) -> list[int]:
        """Subsets that never appear (``per_subset`` mode, ``drop_last``, fewer rows than a batch)."""
        if self.mode == "mixed" or not self.drop_last:
            return []
        return [s for s, size in enumerate(self.subset_sizes) if size < self.global_batch_size]

    @property
    def local_batch_size(self) -> int:
        return self.global_batch_size // self.world_size

    def _count_batches_per_epoch(self) -> int:
        def count(rows: int) -> int:
            if self.drop_last:
                return rows // self.global_batch_size
            return -(-rows // self.global_batch_size)

        if self.mode == "mixed":
            return count(sum(self.subset_sizes))
        return sum(count(size) for size in self.subset_sizes)

    def epoch_batches(self, epoch: int) -> np.ndarray:
        """All global batches of ``epoch`` as a [batches_per_epoch, global_batch_size] array."""
        rng = np.random.default_rng([self.seed, epoch])
        batch_size = self.global_batch_size
        if self.mode == "mixed":
            order = rng.permutation(int(self._offsets[-1]))
            return _cut_into_batches(order, batch_size, self.drop_last)
        per_subset = [
            _cut_into_batches(self._offsets[s] + rng.permutation(size), batch_size, self.drop_last)
            for s, size in enumerate(self.subset_sizes)
            if size > 0
        ]
        batches = np.concatenate(per_subset, axis=0)
        return batches[rng.permutation(len(batches))]

    def __iter__(self) -> Iterator[list[int]]:
        low = self.rank * self.local_batch_size
        high = low + self.local_batch_size
        epoch, batch = divmod(self._start, self.batches_per_epoch)
        while True:
            plan = self.epoch_batches(epoch)
            for row in plan[batch:]:
                yield row[low:high].tolist()
            epoch, batch = epoch + 1, 0

    def _fingerprint(self) -> dict:
        return {
            "subset_sizes": list(self.subset_sizes),
            "global_batch_size": self.global_batch_size,
            "mode": self.mode,
            "seed": self.seed,
            "drop_last": self.drop_last,
        }

    def state_dict(self, batches_consumed: int) -> dict:
        """The data position after the training loop took ``batches_consumed`` batches from this
        sampler's iterator, plus what defines the batch sequence (checked on load)."""
        if batches_consumed < 0:
            raise ValueError(f"batches_consumed must be non-negative, got {batches_consumed}")
        position = self._start + batches_consumed
        epoch, batch = divmod(position, self.batches_per_epoch)
        return {"epoch": epoch, "batch": batch, "global_batch": position, **self._fingerprint()}

    def load_state_dict(self, state: dict) -> None:
        """Start the next iterator at the saved position; refuse data or settings that changed."""
        expected = self._fingerprint()
        changed = {key: (state.get(key), value) for key, value in expected.items() if state.get(key) != value}
        if changed:
            details = "; ".join(f"{key}: saved {old!r}, now {new!r}" for key, (old, new) in changed.items())
            raise ValueError(f"cannot resume the data position exactly, the batch plan changed ({details})")
        self._start = int(state["epoch"]) * self.batches_per_epoch + int(state["batch"])
