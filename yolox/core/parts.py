"""The trainer's parts: each one concern of a run (the time budget, the metric writers, the profile, ...), called at
the loop's hooks. A new feature is a part added to `Trainer.parts`, not a branch added to the loop."""

__all__ = ["TrainerPart", "call_each"]


class TrainerPart:
    """A concern of a training run. Every hook gets the Trainer and does nothing by default.

    Order of the hooks: model_built(trainer, model) (before the optimiser is made and a resume loads), before_train
    (the model, loader and evaluator are built), before_epoch, before_iter and after_iter (around each training
    iteration), epoch_trained (the epoch's iterations are done; evaluation and checkpoint follow), evaluated(trainer,
    ap50_95, ap50) (after an evaluation, before its checkpoints), after_epoch(trainer, evaluated),
    after_train(trainer, finished). A part with state to resume returns it from
    state_dict(trainer) (its keys go into the checkpoint beside the Trainer's) and takes it back in
    load_state_dict(ckpt, trainer) when a run resumes.
    """

    def model_built(self, trainer, model):
        pass

    def before_train(self, trainer):
        pass

    def before_epoch(self, trainer):
        pass

    def before_iter(self, trainer):
        pass

    def after_iter(self, trainer):
        pass

    def epoch_trained(self, trainer):
        pass

    def evaluated(self, trainer, ap50_95, ap50):
        pass

    def after_epoch(self, trainer, evaluated):
        pass

    def after_train(self, trainer, finished):
        pass

    def state_dict(self, trainer):
        return {}

    def load_state_dict(self, ckpt, trainer):
        pass


def call_each(calls):
    """Call every function of `calls`, even when one fails: closing a run must close everything; the first error is
    raised after the last call."""
    errors = []
    for call in calls:
        try:
            call()
        except Exception as e:  # noqa: BLE001 - raised below, once the others have run
            errors.append(e)
    if errors:
        raise errors[0]
