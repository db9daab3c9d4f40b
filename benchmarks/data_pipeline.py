"""Throughput and memory measurements of the Mosaic/MixUp pipeline (used by benchmarks/bench_data.py and the tests)."""
import os
import random
import time

import numpy as np
import torch

from tests.oracles.mosaic import DirectMosaicDetection
from tests.oracles.train_transform import DirectTrainTransform
from yolox.data import (
    DataLoader, InfiniteSampler, MosaicDetection, TrainTransform, YoloBatchSampler, channels_last_collate,
    worker_init_reset_seed,
)

__all__ = ["IMPLEMENTATIONS", "make_mosaic", "samples_per_second", "loader_samples_per_second", "memory_over_samples",
           "decode_seconds", "DECODES_PER_SAMPLE", "recorded_reads", "replay_seconds"]

# a Mosaic+MixUp sample decodes four tiles and the MixUp image
DECODES_PER_SAMPLE = 5

IMPLEMENTATIONS = {"fast": MosaicDetection, "direct": DirectMosaicDetection}


def make_mosaic(dataset, impl="fast", img_size=(640, 640), preproc=None, **kwargs):
    """A Mosaic+MixUp wrapper of `dataset` with the official yolox_s settings (mosaic and mixup always on)."""
    params = dict(
        degrees=10.0,
        translate=0.1,
        mosaic_scale=(0.1, 2),
        mixup_scale=(0.5, 1.5),
        shear=2.0,
        enable_mixup=True,
        mosaic_prob=1.0,
        mixup_prob=1.0,
    )
    params.update(kwargs)
    return IMPLEMENTATIONS[impl](dataset, img_size, mosaic=True, preproc=preproc, **params)


def samples_per_second(mosaic_dataset, num_samples, seed=0):
    """Samples per second of mosaic_dataset[(True, i)] in this process (after one warm-up sample)."""
    random.seed(seed)
    np.random.seed(seed)
    n = len(mosaic_dataset)
    mosaic_dataset[(True, 0)]
    start = time.perf_counter()
    for i in range(num_samples):
        mosaic_dataset[(True, i % n)]
    return num_samples / (time.perf_counter() - start)


def decode_seconds(dataset, num_images=200, seed=0):
    """Mean seconds of one dataset.load_image (the JPEG decode alone) over random images of `dataset`."""
    rng = random.Random(seed)
    indices = [rng.randrange(len(dataset)) for _ in range(num_images)]
    dataset.load_image(indices[0])
    start = time.perf_counter()
    for i in indices:
        dataset.load_image(i)
    return (time.perf_counter() - start) / num_images


def recorded_reads(mosaic_dataset, dataset, num_samples, seed=0):
    """[(index, reduction)] of the dataset.load_image calls that `num_samples` samples of mosaic_dataset make (the
    tiles that show and the MixUp image, each maybe reduced), in order; the same samples as samples_per_second."""
    calls = []
    original = dataset.load_image

    def recording(index, reduction=1):
        calls.append((index, reduction))
        return original(index, reduction)

    dataset.load_image = recording
    try:
        random.seed(seed)
        np.random.seed(seed)
        n = len(mosaic_dataset)
        mosaic_dataset[(True, 0)]
        del calls[:]
        for i in range(num_samples):
            mosaic_dataset[(True, i % n)]
    finally:
        del dataset.load_image
    return calls


def replay_seconds(dataset, calls):
    """Seconds that the decodes `calls` [(index, reduction)] take alone, one after the other."""
    start = time.perf_counter()
    for index, reduction in calls:
        dataset.load_image(index, reduction)
    return time.perf_counter() - start


def _collate_images(batch):
    """The images stacked as the trainer's loader does (channels_last_collate: in a worker, straight into the shared
    memory that carries the batch to the main process); labels (ragged without TrainTransform) stay a list."""
    return channels_last_collate([b[0] for b in batch]), [b[1] for b in batch]


def _loader(mosaic_dataset, num_workers, batch_size, seed=0):
    sampler = InfiniteSampler(len(mosaic_dataset), seed=seed)
    batch_sampler = YoloBatchSampler(sampler=sampler, batch_size=batch_size, drop_last=False, mosaic=True)
    return DataLoader(
        mosaic_dataset,
        batch_sampler=batch_sampler,
        num_workers=num_workers,
        worker_init_fn=worker_init_reset_seed,
        collate_fn=_collate_images,
    )


def loader_samples_per_second(mosaic_dataset, num_workers, num_samples, batch_size=8, seed=0):
    """Samples per second through a DataLoader with num_workers workers (timed after the first batch)."""
    torch.manual_seed(seed)
    it = iter(_loader(mosaic_dataset, num_workers, batch_size, seed))
    next(it)  # workers started and warm
    num_batches = max(1, num_samples // batch_size)
    start = time.perf_counter()
    for _ in range(num_batches):
        next(it)
    elapsed = time.perf_counter() - start
    del it
    return num_batches * batch_size / elapsed


def _status_kib(pid, field):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def _private_kib(pid):
    """Private (unshared) resident memory of pid in KiB, batch tensors in shared memory left out.

    That is what a worker really owns: it grows when pages shared with the main process get copied on write, or
    when the worker's own heap grows. Shared-memory segments (torch's batch tensors in flight) come and go with
    the queue and would only add noise.
    """
    total, counting = 0, True
    with open(f"/proc/{pid}/smaps") as f:
        for line in f:
            first = line.split(maxsplit=1)[0]
            if "-" in first and not first.endswith(":"):  # a mapping header: "start-end perms offset dev inode path"
                fields = line.split()
                path = fields[5] if len(fields) > 5 else ""
                counting = not any(k in path for k in ("/dev/shm", "memfd:", "torch_"))
            elif counting and first in ("Private_Clean:", "Private_Dirty:"):
                total += int(line.split()[1])
    return total


def memory_over_samples(mosaic_dataset, num_workers=2, num_samples=2000, batch_size=16, every=200, seed=0):
    """[(samples, main RSS MiB, workers' RSS MiB, workers' private MiB)], one row per `every` samples (Linux /proc).

    Memory is read after every batch and each row keeps the window's minimum: a worker read in the middle of a
    sample holds that sample's temporary arrays, which are not growth. Workers' private memory is what grows when
    pages shared with the main process get copied on write, or when a worker's heap grows.
    """
    if not os.path.exists("/proc/self/smaps"):
        raise RuntimeError("memory_over_samples reads /proc/<pid>/smaps (Linux only)")
    torch.manual_seed(seed)
    it = iter(_loader(mosaic_dataset, num_workers, batch_size, seed))
    rows, window, seen = [], [], 0
    while seen < num_samples:
        next(it)
        seen += batch_size
        pids = [w.pid for w in getattr(it, "_workers", [])]
        window.append(
            (
                _status_kib(os.getpid(), "VmRSS") / 1024,
                sum(_status_kib(p, "VmRSS") for p in pids) / 1024,
                sum(_private_kib(p) for p in pids) / 1024,
            )
        )
        if seen % every < batch_size or seen >= num_samples:
            rows.append((seen,) + tuple(min(w[k] for w in window) for k in range(3)))
            window = []
    del it
    return rows


def default_train_transform(impl="fast"):
    """The trainer's TrainTransform (impl "fast", uint8 images as the Exp's train_image_dtype) or the official
    algorithm as written (impl "direct", float32 images)."""
    if impl == "direct":
        return DirectTrainTransform(max_labels=120, flip_prob=0.5, hsv_prob=1.0)
    return TrainTransform(max_labels=120, flip_prob=0.5, hsv_prob=1.0, image_dtype=np.uint8)
