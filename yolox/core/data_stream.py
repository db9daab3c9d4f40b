"""Where the training batches come from: the loader (re)started at any iteration of the run, its data a function of
the data seed and of that position only, so that a resumed run sees the batches the uninterrupted one would have."""
import random

import torch
import torch.distributed as dist
from loguru import logger

from yolox.data import DataPrefetcher
from yolox.utils import get_world_size, mix_seed

from .parts import TrainerPart

__all__ = ["DataStream", "batch_per_rank", "check_train_loader"]


class DataStream(TrainerPart):
    """The data seed (the Exp's seed, or one drawn on rank 0 and shared; kept in checkpoints as "data_seed") and the
    start of the loader's stream at a position of the run."""

    def __init__(self):
        self.seed = None
        self._warned_sampler = False

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
        return DataPrefetcher(loader, trainer.device)


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
