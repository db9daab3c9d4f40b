"""Per-iteration learning-rate schedules of YOLOX (cos, warmcos, yoloxwarmcos, yoloxsemiwarmcos, multistep)."""
import math
from functools import partial

__all__ = ["LRScheduler", "cos_lr", "warm_cos_lr", "yolox_warm_cos_lr", "yolox_semi_warm_cos_lr", "multistep_lr"]

SCHEDULERS = ("cos", "warmcos", "yoloxwarmcos", "yoloxsemiwarmcos", "multistep")


class LRScheduler:
    """Maps an iteration count (from 0) to a learning rate.

    Args:
        name: one of SCHEDULERS.
        lr: the peak learning rate (after warm-up).
        iters_per_epoch, total_epochs: define total_iters = iters_per_epoch * total_epochs.
        kwargs: schedule options, stored as attributes as in the official release:
            warmup_epochs, warmup_lr_start, no_aug_epochs, min_lr_ratio (warm-up schedules),
            semi_epoch, iters_per_epoch_semi (yoloxsemiwarmcos), milestones (epochs), gamma (multistep).
    """

    def __init__(self, name, lr, iters_per_epoch, total_epochs, **kwargs):
        self.name = name
        self.lr = lr
        self.iters_per_epoch = iters_per_epoch
        self.total_epochs = total_epochs
        self.total_iters = iters_per_epoch * total_epochs
        self.__dict__.update(kwargs)
        self.lr_func = self._get_lr_func(name)

    def update_lr(self, iters):
        """Learning rate for iteration `iters` (0-based, counted over the whole run)."""
        return self.lr_func(iters)

    def _require(self, *keys):
        missing = [k for k in keys if not hasattr(self, k)]
        if missing:
            raise ValueError(
                f"LRScheduler '{self.name}' needs the keyword argument(s) {', '.join(missing)}; "
                f"pass them to LRScheduler(...) (the Exp's get_lr_scheduler does this)."
            )

    def _get_lr_func(self, name):
        if self.total_iters <= 0:
            raise ValueError(
                "LRScheduler needs iters_per_epoch * total_epochs > 0; "
                f"got {self.iters_per_epoch} x {self.total_epochs}"
            )
        if name == "cos":
            return partial(cos_lr, self.lr, self.total_iters)
        if name == "warmcos":
            self._require("warmup_epochs")
            warmup_total_iters = self.iters_per_epoch * self.warmup_epochs
            warmup_lr_start = getattr(self, "warmup_lr_start", 1e-6)
            return partial(warm_cos_lr, self.lr, self.total_iters, warmup_total_iters, warmup_lr_start)
        if name == "yoloxwarmcos":
            self._require("warmup_epochs", "no_aug_epochs")
            return partial(
                yolox_warm_cos_lr,
                self.lr,
                getattr(self, "min_lr_ratio", 0.2),
                self.total_iters,
                self.iters_per_epoch * self.warmup_epochs,
                getattr(self, "warmup_lr_start", 0),
                self.iters_per_epoch * self.no_aug_epochs,
            )
        if name == "yoloxsemiwarmcos":
            self._require("warmup_epochs", "no_aug_epochs", "semi_epoch", "iters_per_epoch_semi")
            return partial(
                yolox_semi_warm_cos_lr,
                self.lr,
                getattr(self, "min_lr_ratio", 0.2),
                getattr(self, "warmup_lr_start", 0),
                self.total_iters,
                self.iters_per_epoch * self.semi_epoch,
                self.iters_per_epoch * self.no_aug_epochs,
                self.iters_per_epoch * self.warmup_epochs,
                self.iters_per_epoch_semi * self.semi_epoch,
                self.iters_per_epoch,
                self.iters_per_epoch_semi,
            )
        if name == "multistep":
            self._require("milestones")
            # milestones are given in epochs; the schedule works in iterations
            milestones = [int(self.total_iters * m / self.total_epochs) for m in self.milestones]
            return partial(multistep_lr, self.lr, milestones, getattr(self, "gamma", 0.1))
        raise ValueError(f"Scheduler '{name}' is not supported; choose one of {', '.join(SCHEDULERS)}.")


def _warmup(lr, warmup_lr_start, warmup_total_iters, iters, power):
    """Warm-up ramp from warmup_lr_start at iteration 0 to lr at warmup_total_iters."""
    return (lr - warmup_lr_start) * pow(iters / float(warmup_total_iters), power) + warmup_lr_start


def cos_lr(lr, total_iters, iters):
    """Cosine decay from lr to 0 over total_iters."""
    return lr * 0.5 * (1.0 + math.cos(math.pi * iters / total_iters))


def warm_cos_lr(lr, total_iters, warmup_total_iters, warmup_lr_start, iters):
    """Linear warm-up, then cosine decay to 0."""
    if warmup_total_iters > 0 and iters <= warmup_total_iters:
        return _warmup(lr, warmup_lr_start, warmup_total_iters, iters, 1)
    return lr * 0.5 * (1.0 + math.cos(math.pi * (iters - warmup_total_iters) / (total_iters - warmup_total_iters)))


def yolox_warm_cos_lr(lr, min_lr_ratio, total_iters, warmup_total_iters, warmup_lr_start, no_aug_iter, iters):
    """Quadratic warm-up, cosine decay to lr * min_lr_ratio, then flat for the last no_aug_iter iterations."""
    min_lr = lr * min_lr_ratio
    if warmup_total_iters > 0 and iters <= warmup_total_iters:
        return _warmup(lr, warmup_lr_start, warmup_total_iters, iters, 2)
    if iters >= total_iters - no_aug_iter:
        return min_lr
    progress = (iters - warmup_total_iters) / (total_iters - warmup_total_iters - no_aug_iter)
    return min_lr + 0.5 * (lr - min_lr) * (1.0 + math.cos(math.pi * progress))


def yolox_semi_warm_cos_lr(
    lr,
    min_lr_ratio,
    warmup_lr_start,
    total_iters,
    normal_iters,
    no_aug_iters,
    warmup_total_iters,
    semi_iters,
    iters_per_epoch,
    iters_per_epoch_semi,
    iters,
):
    """yoloxwarmcos for the normal epochs, then the cosine continues at the pace of the semi-supervised epochs."""
    min_lr = lr * min_lr_ratio
    span = total_iters - warmup_total_iters - no_aug_iters
    if warmup_total_iters > 0 and iters <= warmup_total_iters:
        return _warmup(lr, warmup_lr_start, warmup_total_iters, iters, 2)
    if iters >= normal_iters + semi_iters:
        return min_lr
    if iters <= normal_iters:
        progress = (iters - warmup_total_iters) / span
    else:
        # a semi-supervised iteration advances the cosine by iters_per_epoch / iters_per_epoch_semi normal ones
        semi_progress = (iters - normal_iters) * iters_per_epoch / iters_per_epoch_semi
        progress = (normal_iters - warmup_total_iters + semi_progress) / span
    return min_lr + 0.5 * (lr - min_lr) * (1.0 + math.cos(math.pi * progress))


def multistep_lr(lr, milestones, gamma, iters):
    """lr multiplied by gamma once for every milestone (in iterations) already reached."""
    for milestone in milestones:
        if iters >= milestone:
            lr *= gamma
    return lr
