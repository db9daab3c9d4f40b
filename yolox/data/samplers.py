"""Samplers: an endless seeded rank-aware index stream that can start anywhere, each sample with its own seed;
a batch sampler tagging each batch with the mosaic flag.

The stream is a function of the seed alone: pass k is a permutation drawn from mix_seed(seed, k), and the sample at
global stream position p gets the augmentation seed mix_seed(seed, p). So the data of any iteration (which images,
and how each is augmented) depends only on the seed and that iteration's place in the run, not on how many batches
came before in this process, which worker made it or how many workers there are: a run resumed at iteration i sees
exactly what the uninterrupted run saw, and two ranks never see the same sample or the same augmentation.
"""
from typing import Optional

import torch
import torch.distributed as dist
from torch.utils.data.sampler import BatchSampler as torchBatchSampler
from torch.utils.data.sampler import Sampler

from yolox.utils import mix_seed

__all__ = ["InfiniteSampler", "YoloBatchSampler"]

_SAMPLE_SEED_TAG = 0x5EED  # separates the augmentation seeds from the permutation seeds


class YoloBatchSampler(torchBatchSampler):
    """Yields batches of (mosaic, index) pairs, or (mosaic, index, sample seed) triples when the sampler gives
    seeds (InfiniteSampler does); the flag is read once per batch, so `mosaic = False` takes effect from the next
    batch sampled (the DataLoader's workers may already hold a few batches made with mosaic)."""

    def __init__(self, *args, mosaic=True, **kwargs):
        super().__init__(*args, **kwargs)
        self.mosaic = mosaic

    def __iter__(self):
        with_seeds = getattr(self.sampler, "iter_with_seeds", None)
        if with_seeds is None:
            for batch in super().__iter__():
                mosaic = self.mosaic
                yield [(mosaic, idx) for idx in batch]
            return
        batch = []
        for idx, seed in with_seeds():
            batch.append((idx, seed))
            if len(batch) == self.batch_size:
                mosaic = self.mosaic
                yield [(mosaic, i, s) for i, s in batch]
                batch = []
        if batch and not self.drop_last:
            mosaic = self.mosaic
            yield [(mosaic, i, s) for i, s in batch]


class InfiniteSampler(Sampler):
    """Endless indices of a dataset of `size`: pass k of the stream is a permutation drawn from (seed, k), the same
    on every rank; rank r takes every world_size-th index starting at r, so ranks never overlap.

    `set_start(n)` makes the next iteration begin at this rank's n-th sample (n samples already consumed), for
    resuming; `iter_with_seeds()` yields (index, augmentation seed) pairs.
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
        self._start = 0  # samples of this rank to skip at the next iteration

    def set_seed(self, seed: int):
        """Use another seed for the order and the augmentation seeds (the trainer's run seed when the Exp has none)."""
        self._seed = int(seed)

    @property
    def seed(self):
        return self._seed

    def set_start(self, samples_consumed: int):
        """Begin the next iteration after this rank's first `samples_consumed` samples."""
        if samples_consumed < 0:
            raise ValueError(f"set_start needs a count >= 0; got {samples_consumed}")
        self._start = int(samples_consumed)

    def _permutation(self, k):
        if not self._shuffle:
            return list(range(self._size))
        g = torch.Generator()
        g.manual_seed(mix_seed(self._seed, k))
        return torch.randperm(self._size, generator=g).tolist()

    def iter_with_seeds(self):
        """(dataset index, augmentation seed) of this rank's samples, from the start set by set_start."""
        position = self._start * self._world_size + self._rank  # global stream position of the first sample
        current_pass, perm = None, None
        while True:
            k, offset = divmod(position, self._size)
            if k != current_pass:
                current_pass, perm = k, self._permutation(k)
            yield perm[offset], mix_seed(self._seed, _SAMPLE_SEED_TAG, position)
            position += self._world_size

    def __iter__(self):
        for idx, _ in self.iter_with_seeds():
            yield idx

    def __len__(self):
        return self._size // self._world_size
