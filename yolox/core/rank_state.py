"""What differs between the processes of a run, given back to each on --resume: the batch-norm statistics of the
model and of its EMA (each process keeps its own between evaluations, as DDP leaves buffers rank-local here) and the
random generators. Without it a resumed multi-process run starts every rank from rank 0's statistics, and drifts
from the uninterrupted one."""
from loguru import logger

from yolox.utils import gather, get_rng_states, unwrap_model

from .parts import TrainerPart

__all__ = ["RankLocalState"]

KEY = "rank_local"


def _buffers(module):
    return {name: b.detach().cpu().clone() for name, b in module.named_buffers()}


class RankLocalState(TrainerPart):
    """collect(trainer) on every rank before a checkpoint is written (one gather to rank 0, of buffers only: a few
    hundred kB for the large models); the checkpoint carries the list by rank under "rank_local"."""

    def __init__(self):
        self.collected = None  # rank 0: [{"buffers", "ema_buffers", "rng"}] by rank
        self.restored = None  # this rank's entry of the checkpoint resumed from

    def collect(self, trainer):
        if not trainer.is_distributed:
            return
        ema = trainer.ema_model.ema if getattr(trainer, "ema_model", None) is not None else None
        mine = {"buffers": _buffers(unwrap_model(trainer.model)), "ema_buffers": _buffers(ema) if ema else {},
                "rng": get_rng_states()}
        self.collected = gather(mine, dst=0) or None

    def state_dict(self, trainer):
        return {KEY: self.collected} if self.collected else {}

    def load_state_dict(self, ckpt, trainer):
        entries = ckpt.get(KEY)
        world = len(entries) if entries else 1
        if not trainer.is_distributed or not entries:
            return
        from yolox.utils import get_world_size

        if world != get_world_size():
            logger.warning(f"the checkpoint comes from {world} processes and this run has {get_world_size()}: every "
                           "process starts from rank 0's batch-norm statistics (the run is not an exact continuation)")
            return
        self.restored = entries[trainer.rank]

    def before_train(self, trainer):
        """Put this rank's own statistics back (the model and the EMA exist now)."""
        if self.restored is None:
            return
        _load_buffers(unwrap_model(trainer.model), self.restored["buffers"])
        if getattr(trainer, "ema_model", None) is not None:
            _load_buffers(trainer.ema_model.ema, self.restored["ema_buffers"])

    def rng_states(self, default):
        """This rank's random generators to resume with (rank 0's, the checkpoint's "rng", when none were kept)."""
        return self.restored["rng"] if self.restored is not None else default


def _load_buffers(module, values):
    own = dict(module.named_buffers())
    for name, value in values.items():
        if name in own:
            own[name].copy_(value.to(own[name].device))
