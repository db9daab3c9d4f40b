"""Samplers: an endless seeded rank-aware index stream; a batch sampler tagging each batch with the mosaic flag."""
import itertools
from typing import Optional

import torch
import torch.distributed as dist
from torch.utils.data.sampler import BatchSampler as torchBatchSampler
from torch.utils.data.sampler import Sampler

__all__ = ["InfiniteSampler", "YoloBatchSampler"]


class YoloBatchSampler(torchBatchSampler):
    """Yields batches of (mosaic, index) pairs; the flag is read once per batch, so `mosaic = False` takes effect
    from the next batch sampled (the DataLoader's workers may already hold a few batches made with mosaic)."""

    def __init__(self, *args, mosaic=True, **kwargs):
        super().__init__(*args, **kwargs)
        self.mosaic = mosaic

    def __iter__(self):
        for batch in super().__iter__():
            mosaic = self.mosaic
            yield [(mosaic, idx) for idx in batch]


class InfiniteSampler(Sampler):
    """Endless indices of a dataset of `size`: a new permutation each pass from a generator seeded with `seed`,
    the same on every rank; rank r takes every world_size-th index starting at r, so ranks never overlap.
    """

    def __init__(self, size: int, shuffle: bool = True, seed: Optional[int] = 0, rank=0, world_size=1):
        if size <= 0:
            raise ValueError(f"InfiniteSampler needs a non-empty dataset; got size={size}")
        self._size = size
        self._shuffle = shuffle
        self._seed = int(seed or 0)
        if dist.is_available() and dist.is_initialized():
            self._rank = dist.get_rank()
            self._world_size = dist.get_world_size()
        else:
            self._rank = rank
            self._world_size = world_size

    def __iter__(self):
        yield from itertools.islice(self._infinite_indices(), self._rank, None, self._world_size)

    def _infinite_indices(self):
        g = torch.Generator()
        g.manual_seed(self._seed)
        while True:
            if self._shuffle:
                yield from torch.randperm(self._size, generator=g).tolist()
            else:
                yield from range(self._size)

    def __len__(self):
        return self._size // self._world_size
