"""Where the training batches come from: the loader (re)started at any iteration of the run, its data a function of
the data seed and of that position only, so that a resumed run sees the batches the uninterrupted one would have."""
import os
import random
import re

import torch
import torch.distributed as dist
from loguru import logger

from yolox.data import DataPrefetcher
from yolox.utils import get_world_size, mix_seed

from .parts import TrainerPart

__all__ = ["DataStream", "DataWorkerDiedError", "batch_per_rank", "check_train_loader", "resident_memory"]

# torch's messages for a worker that died: the SIGCHLD handler's and the one of a queue read that timed out
_WORKER_DIED = re.compile(r"DataLoader worker \(pid(?:\(s\))? ([\d, ]+)\) "
                          r"(?:is killed by signal: ([^.\n]+)|exited unexpectedly)")


class DataWorkerDiedError(ValueError):
    """A DataLoader worker process died (the out-of-memory killer's SIGKILL, most often): one line naming it, the memory
    it held and the fix. A ValueError for yolox.tools.cli: a setting (data_num_workers, --cache, -b) is the fix."""


class DataStream(TrainerPart):
    """The data seed (the Exp's seed, or one drawn on rank 0 and shared; kept in checkpoints as "data_seed") and the
    start of the loader's stream at a position of the run."""

    def __init__(self):
        self.seed = None
        self._warned_sampler = False
        self._prefetcher = None
        self._memory = {}  # worker pid -> resident bytes, read at `_memory_iteration` (the last logged iteration)
        self._memory_iteration = None

    def state_dict(self, trainer):
        return {"data_seed": self.seed}

    def load_state_dict(self, ckpt, trainer):
        self.seed = ckpt.get("data_seed")

    def start(self, trainer, progress):
        """A DataPrefetcher over trainer.train_loader from iteration `progress` of the run (0-based, all epochs)."""
        loader = trainer.train_loader
        sampler = _infinite_sampler(loader)
        if sampler is not None:
            if self.seed is None:
                seed = getattr(trainer.exp, "seed", None)
                self.seed = seed if seed is not None else _shared_random_seed(trainer)
            sampler.set_seed(self.seed)
            sampler.set_start(progress * batch_per_rank(loader, trainer.args.batch_size))
        elif progress > 0 and not self._warned_sampler:
            self._warned_sampler = True
            logger.warning("the Exp's train loader has no InfiniteSampler: a resumed run sees other data than the "
                           "uninterrupted run would have")
        epoch = progress // max(trainer.max_iter, 1)
        generator = torch.Generator()
        generator.manual_seed(mix_seed(self.seed or 0, epoch, trainer.rank))
        loader.generator = generator  # worker seeds from (seed, epoch, global rank) + worker id
        logger.info("init prefetcher, this might take one minute or less...")
        self._prefetcher = DataPrefetcher(loader, trainer.device)
        return self._prefetcher

    # ---------------------------------------------------------------------------------------- the loader's workers
    def worker_pids(self):
        """The process ids of the running loader's worker processes ([] with data_num_workers 0)."""
        iterator = getattr(self._prefetcher, "loader", None)
        return [w.pid for w in getattr(iterator, "_workers", None) or [] if w.pid is not None]

    def record_worker_memory(self, iteration):
        """Read each worker's resident memory (/proc/<pid>/status, a few microseconds): what a message says when one
        dies later. iteration: the run's iterations done."""
        memory = {pid: resident_memory(pid) for pid in self.worker_pids()}
        memory = {pid: rss for pid, rss in memory.items() if rss is not None}
        if memory:
            self._memory, self._memory_iteration = memory, iteration

    def after_iter(self, trainer):
        if (trainer.iter + 1) % trainer.exp.print_interval == 0:
            self.record_worker_memory(trainer.progress_in_iter + 1)

    def explain_failure(self, error, trainer):
        """A DataWorkerDiedError for torch's error about a dead loader worker (else None): the worker's pid, the memory
        it (and the others) held at the last logged iteration, the fix, the checkpoint to resume from."""
        match = _WORKER_DIED.search(str(error))
        if match is None:
            return None
        pids = [int(p) for p in re.findall(r"\d+", match.group(1))]
        signal_name = match.group(2)
        how = f"was killed by signal {signal_name}" if signal_name else "exited unexpectedly"
        if signal_name and "Kill" in signal_name:
            how += " (as the out-of-memory killer does)"
        held = [self._memory[p] for p in pids if p in self._memory]
        if held:
            memory = (f"it held about {sum(held) / 2**20:.0f} MB at iteration {self._memory_iteration} "
                      f"({len(self._memory)} workers: {sum(self._memory.values()) / 2**20:.0f} MB in all)")
        else:
            memory = "its memory was not measured (no logged iteration yet)"
        workers = getattr(trainer.train_loader, "num_workers", None)
        fewer = f"data_num_workers {max(workers // 2, 0)}" if workers else "a lower data_num_workers"
        latest = os.path.join(trainer.file_name, "latest_ckpt.pth")
        resume = (f"--resume continues from {latest}" if os.path.isfile(latest)
                  else "no checkpoint of this run was written yet")
        where = f"iteration {trainer.progress_in_iter + 1}" if hasattr(trainer, "epoch") else "the start"
        worker = "DataLoader worker" + (f" pid {pids[0]}" if len(pids) == 1 else f"s pids {', '.join(map(str, pids))}")
        return DataWorkerDiedError(
            f"{worker} {how} during {where}; {memory}. Training stopped; {resume}. Fix: fewer workers (e.g. "
            f"`{fewer}` on the command line, now {workers}), `--cache disk` instead of RAM caching, or a smaller "
            "batch (-b)"
        )


def resident_memory(pid):
    """Resident memory of process `pid` in bytes (VmRSS of /proc/<pid>/status), or None where it cannot be read."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024  # kB
    except (OSError, ValueError, IndexError):
        return None
    return None


def batch_per_rank(loader, batch_size):
    """The images per batch of this process: the loader's batch sampler's, else the -b share of one process."""
    batch_sampler = getattr(loader, "batch_sampler", None)
    return int(getattr(batch_sampler, "batch_size", None) or batch_size // get_world_size())


def _infinite_sampler(loader):
    """The loader's InfiniteSampler (anything with set_start), or None for a custom sampler."""
    sampler = getattr(getattr(loader, "batch_sampler", None), "sampler", None)
    return sampler if callable(getattr(sampler, "set_start", None)) else None


def _shared_random_seed(trainer):
    """A random seed drawn on rank 0 and given to every rank (the Exp has seed None)."""
    seed = torch.tensor([random.SystemRandom().randrange(2**62)], dtype=torch.int64,
                        device=trainer.collective_device())
    if trainer.is_distributed:
        dist.broadcast(seed, 0)
    return int(seed.item())


def check_train_loader(exp, loader, batch_size):
    """The epoch length against print_interval (a warning), and a COCO-format training set's categories against the
    Exp's num_classes (a user error)."""
    max_iter = len(loader)
    if exp.print_interval > max_iter:
        logger.warning(
            f"print_interval {exp.print_interval} is above the {max_iter} iterations of an epoch (batch "
            f"{batch_size} over {get_world_size()} process(es)): no progress line, and no loss in "
            f"metrics.jsonl or the training curve; set print_interval to {max_iter} or less"
        )
    dataset = getattr(loader, "dataset", None)
    dataset = getattr(dataset, "_dataset", dataset)  # the set inside MosaicDetection
    class_ids = getattr(dataset, "class_ids", None)
    if class_ids is not None and len(class_ids) != exp.num_classes:
        raise ValueError(
            f"{getattr(dataset, 'ann_path', 'the training set')} has {len(class_ids)} categories but the Exp has "
            f"num_classes = {exp.num_classes}; set `self.num_classes = {len(class_ids)}` in the Exp file or "
            f"add `num_classes {len(class_ids)}` to the command line"
        )
