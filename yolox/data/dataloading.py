"""The YOLOX DataLoader (YoloBatchSampler by default, close_mosaic), seeded workers, and the datasets directory."""
import gc
import os
import random

import numpy as np
import torch
from torch.utils.data.dataloader import DataLoader as torchDataLoader
from torch.utils.data.dataloader import default_collate

from yolox.utils import get_rank, mix_seed
from yolox.utils.heap import keep_image_buffers_in_heap

from .samplers import YoloBatchSampler

__all__ = [
    "DataLoader", "get_yolox_datadir", "worker_init_reset_seed", "list_collate", "channels_last_collate",
    "DATASETS_README",
]


def get_yolox_datadir():
    """Where datasets live: $YOLOX_DATADIR when set, else `datasets/` of the checkout that holds this package."""
    yolox_datadir = os.getenv("YOLOX_DATADIR", None)
    if yolox_datadir is None:
        import yolox

        yolox_path = os.path.dirname(os.path.dirname(os.path.abspath(yolox.__file__)))
        yolox_datadir = os.path.join(yolox_path, "datasets")
    return yolox_datadir


# shown in every "dataset not found" message
DATASETS_README = "datasets/README.md"


def worker_init_reset_seed(worker_id):
    """Seed `random`, numpy and torch of a DataLoader worker from torch's per-worker seed and the global rank.

    torch gives worker k the seed base + k, with base drawn from the loader's generator (or the main process's
    torch generator) when the iterator starts: workers augment differently, and the same generator state
    reproduces a run (the official uses uuid4 here, which makes runs irreproducible). The rank is mixed in so that
    ranks started from the same seed do not draw the same numbers in their worker k. (Training samples are
    seeded one by one as well, from their place in the run: see yolox.data.samplers.)
    """
    seed = mix_seed(torch.initial_seed(), get_rank()) % 2**32
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    # Objects inherited from the parent are never collected here; freezing them keeps the collector from
    # writing into their pages, which would copy those pages into this worker one by one (memory growth).
    gc.freeze()
    # the sample's image arrays are reused from the heap instead of being mapped and faulted in afresh
    keep_image_buffers_in_heap()


class DataLoader(torchDataLoader):
    """torch DataLoader that batches through a YoloBatchSampler unless a batch_sampler is given.

    `close_mosaic()` turns Mosaic/MixUp off for the batches sampled from then on (the last no-aug epochs).
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if not isinstance(self.batch_sampler, YoloBatchSampler) and self.batch_sampler is not None:
            # the default torch BatchSampler was built from sampler/batch_size/drop_last: wrap the same settings
            batch_sampler = YoloBatchSampler(
                self.batch_sampler.sampler, self.batch_sampler.batch_size, self.batch_sampler.drop_last
            )
            object.__setattr__(self, "batch_sampler", batch_sampler)

    def close_mosaic(self):
        self.batch_sampler.mosaic = False


def list_collate(batch):
    """Collate a batch keeping list/tuple fields as lists (one entry per sample) instead of stacking them."""
    items = list(zip(*batch))
    for i in range(len(items)):
        if isinstance(items[i][0], (list, tuple)):
            items[i] = list(items[i])
        else:
            items[i] = default_collate(items[i])
    return items


def _hwc_views(images):
    """True when every entry is a (C, H, W) numpy view of (H, W, C) memory (C > 1), all of one shape and dtype."""
    first = images[0]
    if not (isinstance(first, np.ndarray) and first.ndim == 3 and first.shape[0] > 1):
        return False
    return all(
        isinstance(a, np.ndarray) and a.shape == first.shape and a.dtype == first.dtype
        and a.transpose(1, 2, 0).flags.c_contiguous
        for a in images
    )


def _stack_channels_last(images):
    """[(C, H, W) views of (H, W, C) arrays] -> (N, C, H, W) tensor in channels_last memory, one plain copy each.

    In a DataLoader worker the batch is written straight into shared memory, as default_collate does.
    """
    hwc = [torch.from_numpy(a.transpose(1, 2, 0)) for a in images]  # (H, W, C) each, contiguous
    out = None
    if torch.utils.data.get_worker_info() is not None:
        storage = hwc[0]._typed_storage()._new_shared(len(hwc) * hwc[0].numel(), device=hwc[0].device)
        out = hwc[0].new(storage).resize_(len(hwc), *hwc[0].shape)
    return torch.stack(hwc, 0, out=out).permute(0, 3, 1, 2)  # (N, H, W, C) memory seen as (N, C, H, W)


def channels_last_collate(batch):
    """default_collate, except that images given as (C, H, W) views of (H, W, C) arrays (TrainTransform with
    uint8 images) are stacked into a channels_last (N, C, H, W) tensor: the memory format of the model's
    activations, so neither the worker nor the model transposes the image. Anything else: default_collate."""
    elem = batch[0]
    if isinstance(elem, np.ndarray):
        return _stack_channels_last(batch) if _hwc_views(batch) else default_collate(batch)
    if isinstance(elem, (tuple, list)) and len(elem) > 0:
        images = [b[0] for b in batch]
        if _hwc_views(images):
            rest = default_collate([tuple(b[1:]) for b in batch]) if len(elem) > 1 else []
            return [_stack_channels_last(images), *rest]
    return default_collate(batch)
