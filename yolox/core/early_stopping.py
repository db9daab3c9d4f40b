"""The run's length beyond max_epoch: stopping early when AP50:95 no longer improves (Exp.patience, official issue
#1789), and extending a run with --resume and a larger max_epoch (official issue #1145)."""
from loguru import logger

from .parts import TrainerPart

__all__ = ["EarlyStopping", "RunExtension", "check_patience"]


def check_patience(patience):
    """Exp.patience as None (never stop early, as officially) or a whole number >= 1."""
    if patience is None:
        return None
    if isinstance(patience, bool) or not isinstance(patience, int) or patience < 1:
        raise ValueError(f"Exp.patience={patience!r} must be a whole number of evaluations >= 1 (e.g. `patience 10`), "
                         "or None to train every epoch")
    return patience


class EarlyStopping(TrainerPart):
    """Stops the run when AP50:95 has not improved for `patience` evaluations: after the checkpoints of that evaluation
    (which hold the count), the run ends as a finished one. The first evaluation sets the best; the count is kept in
    checkpoints, so a resumed run goes on counting (and one resumed past its patience stops at once)."""

    def __init__(self, patience):
        self.patience = check_patience(patience)
        self.best_ap = None  # the best AP50:95 seen, and the (1-based) epoch of its evaluation
        self.best_epoch = None
        self.stale = 0  # evaluations since the best one

    def evaluated(self, trainer, ap50_95, ap50):
        """Count the evaluation before its checkpoints are saved, so that they hold the count. Counted with or without
        a patience, so that a run resumed with one knows its past."""
        if self.best_ap is None or ap50_95 > self.best_ap:
            self.best_ap, self.best_epoch, self.stale = float(ap50_95), trainer.epoch + 1, 0
        else:
            self.stale += 1

    def should_stop(self):
        return self.patience is not None and self.stale >= self.patience

    def before_train(self, trainer):
        if self.should_stop() and trainer.start_epoch > 0:  # resumed from the checkpoint of a stop
            self._stop(trainer, trainer.start_epoch)

    def after_epoch(self, trainer, evaluated):
        if evaluated and self.should_stop():
            self._stop(trainer, trainer.epoch + 1)

    def _stop(self, trainer, epochs_done):
        logger.info(f"no AP50:95 improvement in {self.stale} evaluations (best {self.best_ap:.4f} at epoch "
                    f"{self.best_epoch}): stopping after epoch {epochs_done} of {trainer.max_epoch} (patience "
                    f"{self.patience})")
        trainer.set_max_epoch(epochs_done)  # the loop ends after this epoch as after its last one

    def state_dict(self, trainer):
        return {"early_stopping": {"best_ap": self.best_ap, "best_epoch": self.best_epoch, "stale": self.stale}}

    def load_state_dict(self, ckpt, trainer):
        state = ckpt.get("early_stopping")
        if state:
            self.best_ap, self.best_epoch, self.stale = state["best_ap"], state["best_epoch"], int(state["stale"])


class RunExtension(TrainerPart):
    """--resume with another max_epoch than the checkpoint's run. Longer: the run goes on as if it had been that long
    from the start (the cosine lr of the new length, mosaic until max_epoch - no_aug_epochs), and a run that had ended
    gets a fresh Exp.max_train_minutes for the added epochs. With no epoch left, one warning says how to extend."""

    def __init__(self):
        self.extended_from = None  # the checkpoint's max_epoch when this run is longer
        self.fresh_budget = False

    def load_state_dict(self, ckpt, trainer):
        """After the time budget's state (which may restore the max_epoch it fitted) is loaded."""
        before = ckpt.get("max_epoch")
        if before is None or int(before) >= trainer.max_epoch:
            return
        self.extended_from = int(before)
        if trainer.time_budget is not None and int(ckpt.get("start_epoch", 0)) >= self.extended_from:
            # the finished run spent its budget: the added epochs get one of their own, counted from now
            trainer.run_time.start_time = trainer.run_time.clock()
            self.fresh_budget = True

    def before_train(self, trainer):
        start, end, exp = trainer.start_epoch, trainer.max_epoch, trainer.exp
        if getattr(trainer.args, "resume", False) and start >= end:
            logger.warning(f"the checkpoint is at epoch {start} and max_epoch is {end}: no epoch left to train; give a "
                           f"larger max_epoch (e.g. `--resume max_epoch {start + max(exp.no_aug_epochs, 10)}`) to "
                           "extend the run")
        if self.extended_from is None:
            return
        lr = trainer.lr_scheduler.update_lr(start * trainer.max_iter + trainer.start_iter)
        last_mosaic = end - exp.no_aug_epochs - 1  # the loop's last phase begins at epoch max_epoch - no_aug_epochs
        mosaic = f"mosaic on until epoch {last_mosaic}, " if start < last_mosaic else ""
        budget = " (with a fresh max_train_minutes)" if self.fresh_budget else ""
        added = f"epoch {end}" if start + 1 == end else f"epochs {start + 1}-{end}"
        logger.info(f"the run is extended from {self.extended_from} to {end} epochs{budget}: {added} follow the "
                    f"schedule of a {end}-epoch run: {mosaic}lr {lr:.3e} at epoch {start + 1} on the cosine to its end")
