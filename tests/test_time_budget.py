"""Exp.max_train_minutes: the epochs that fit a wall-clock budget, and a run that the budget shortens."""
import random
import sys

import pytest
from loguru import logger

from train_helpers import FOREST_EXP, TINY_LR_PER_IMG, load, read_metrics, run_dir, train_argv
from yolox.tools.train import run_train_cli
from yolox.core.time_budget import TimeBudget, evaluations_after, fit_max_epoch
from yolox.core import Trainer
from yolox.core.parts import TrainerPart
from yolox.exp import Exp, get_exp


@pytest.fixture(autouse=True)
def _reset_logger():
    yield
    logger.remove()
    logger.add(sys.stderr)


def _evaluations_by_the_trainers_rule(epochs_done, total, eval_interval, no_aug_epochs):
    """The Trainer evaluates after epoch e (1-based) when e % eval_interval == 0, and after every no-aug epoch."""
    return sum(1 for e in range(epochs_done + 1, total + 1) if e % eval_interval == 0 or e > total - no_aug_epochs)


@pytest.mark.parametrize("eval_interval,no_aug", [(1, 0), (5, 2), (25, 6), (10, 15), (7, 0)])
def test_evaluations_counted_as_the_trainer_runs_them(eval_interval, no_aug):
    for done in range(0, 40, 3):
        for total in range(done + no_aug + 1, 80):
            assert evaluations_after(done, total, eval_interval, no_aug) == \
                _evaluations_by_the_trainers_rule(done, total, eval_interval, no_aug), (done, total)


def test_fit_max_epoch_is_the_longest_schedule_that_fits():
    # 5 epochs done in 50 s; 10 s per epoch, 2 s per evaluation, every 5 epochs and in the 2 plain epochs.
    # 19 epochs: 50 + 14 * 10 + 4 evaluations * 2 = 198 s <= 200; 20 epochs: 208 s.
    assert fit_max_epoch(200, 50, 5, 10.0, 2.0, 5, 2, 300) == 19
    assert fit_max_epoch(208, 50, 5, 10.0, 2.0, 5, 2, 300) == 20
    assert fit_max_epoch(10_000, 50, 5, 10.0, 2.0, 5, 2, 30) == 30  # never beyond the Exp's max_epoch
    # nothing fits any more: one more epoch with mosaic, then the plain phase
    assert fit_max_epoch(40, 50, 5, 10.0, 2.0, 5, 2, 300) == 8


def test_time_budget_plans_from_the_end_of_the_warm_up_until_the_plain_phase():
    budget = TimeBudget(minutes=10.0, margin=0.0)  # 600 s
    for _ in range(4):
        budget.record_epoch(10.0)
    assert budget.plan(40, 4, 300, 300, warmup_epochs=5, eval_interval=10, no_aug_epochs=5) is None  # warming up
    budget.record_epoch(10.0)
    # 50 s spent; no evaluation seen yet: counted as 2.5 s
    planned = budget.plan(50, 5, 300, 300, warmup_epochs=5, eval_interval=10, no_aug_epochs=5)
    assert planned == fit_max_epoch(600, 50, 5, 10.0, 2.5, 10, 5, 300) and 50 <= planned < 60
    budget.record_eval(2.5)
    assert budget.estimate() == (10.0, 2.5)
    assert budget.plan(50, 5, planned, 300, 5, 10, 5) is None  # it fits: unchanged
    assert budget.plan(300, 6, planned, 300, 5, 10, 5) < planned  # far behind: shorter
    # with a margin of 30 s (570 of 600 s): 54 epochs fit it at 50 s spent
    budget.margin = 0.05
    assert budget.plan(50, 5, 54, 300, 5, 10, 5) is None
    # 10 s behind: 53 fit the margin, 56 the whole budget: within the tolerance of 2 epochs, unchanged
    assert budget.plan(60, 5, 54, 300, 5, 10, 5) is None
    # a schedule of 57 epochs no longer fits the whole budget (56): moved to the margin's fit at once
    assert budget.plan(60, 5, 57, 300, 5, 10, 5) == 53
    budget.margin = 0.0
    assert budget.plan(300, planned - 5, planned, 300, 5, 10, 5) is None  # the plain phase has begun
    # the machine turned faster: epochs of 5 s from now on, and the schedule grows again (not beyond the Exp's)
    for _ in range(budget.window):
        budget.record_epoch(5.0)
    longer = budget.plan(100, 10, planned, 300, 5, 10, 5)
    assert longer == fit_max_epoch(600, 100, 10, 5.0, 2.5, 10, 5, 300) > planned + 2
    assert budget.plan(100, 10, longer - 1, 300, 5, 10, 5) is None  # one more epoch would fit: not worth a change
    assert budget.plan(0, 10, 20, 30, 5, 10, 5) == 30  # up to the ceiling only


class SimulatedMachine(TrainerPart):
    """A machine on which a training iteration takes `iter_s` seconds and an evaluation `eval_s`: the Trainer's clock
    (its `clock` argument) reads this part's time, so that a run's length is the same on any machine."""

    def __init__(self, iter_s, eval_s):
        self.now, self.iter_s, self.eval_s = 1000.0, iter_s, eval_s

    def clock(self):
        return self.now

    def after_iter(self, trainer):
        self.now += self.iter_s

    def epoch_trained(self, trainer):  # after the time budget read the epoch's end: the evaluation follows
        if (trainer.epoch + 1) % trainer.exp.eval_interval == 0:
            self.now += self.eval_s


@pytest.fixture
def simulated_machine(monkeypatch):
    """Trainers built by the Exp run on a SimulatedMachine (iterations of 0.25 s, evaluations of 0.5 s)."""

    def get_trainer(exp, args):
        machine = SimulatedMachine(iter_s=0.25, eval_s=0.5)
        trainer = Trainer(exp, args, clock=machine.clock)
        trainer.parts.append(machine)
        return trainer

    monkeypatch.setattr(Exp, "get_trainer", get_trainer)


def test_a_run_with_a_time_budget_ends_within_it(tmp_path, simulated_machine):
    """40 epochs asked, 12 s allowed on a simulated machine (iterations of 0.25 s, evaluations of 0.5 s): the schedule is cut when the warm-up ends, the plain phase still runs, the lr ends at its minimum (the cosine was
    refitted), the run's time stays within the budget, and the checkpoint keeps the fitted max_epoch for a resume."""
    trainer = run_train_cli(train_argv(tmp_path, max_epoch=40, warmup_epochs=3, no_aug_epochs=1, eval_interval=2,
                                       max_train_minutes=0.2, save_history_ckpt=False))
    folder = run_dir(tmp_path)
    log = (folder / "train_log.txt").read_text()
    assert "max_train_minutes 0.2:" in log and "--->No mosaic aug now!" in log
    assert 5 <= trainer.max_epoch < 40
    last = load(folder / "last_epoch_ckpt.pth")
    assert last["max_epoch"] == trainer.max_epoch == last["start_epoch"] and last["max_epoch_asked"] == 40
    assert last["train_seconds"] <= 0.2 * 60
    metrics = read_metrics(folder)
    steps = [m for m in metrics if "lr" in m]
    assert steps[-1]["iteration"] == trainer.max_epoch * trainer.max_iter
    assert steps[-1]["lr"] == pytest.approx(TINY_LR_PER_IMG * 8 * get_exp(FOREST_EXP).min_lr_ratio)  # batch 8
    assert [m["epoch"] for m in metrics if "AP50" in m][-1] == trainer.max_epoch

    # a resume keeps the fitted schedule (here: the run is complete, nothing is left to train)
    resumed = run_train_cli(train_argv(tmp_path, "--resume", max_epoch=40, warmup_epochs=3, no_aug_epochs=1,
                                       eval_interval=2, max_train_minutes=0.2, save_history_ckpt=False))
    assert resumed.max_epoch == trainer.max_epoch and resumed.start_epoch == trainer.max_epoch


def test_a_burst_of_slow_epochs_does_not_cut_the_schedule_but_a_lasting_slowdown_does():
    budget = TimeBudget(minutes=10.0, margin=0.0, window=40)  # 600 s
    for _ in range(20):
        budget.record_epoch(5.0)
    assert budget.estimate()[0] == 5.0
    for _ in range(8):  # a minute of another process on the cores: 8 epochs at 4x the time
        budget.record_epoch(20.0)
    assert budget.estimate()[0] == 5.0
    for _ in range(12):  # back to normal
        budget.record_epoch(5.0)
    assert budget.estimate()[0] == 5.0
    for _ in range(10):  # slower for good: the mean follows the share of slow epochs in the window (the last 40:
        budget.record_epoch(8.0)  # 22 of 5 s, the burst's 8, left out, and 10 of 8 s)
    assert budget.estimate()[0] == pytest.approx((22 * 5.0 + 10 * 8.0) / 32)
    for _ in range(30):  # until they fill it
        budget.record_epoch(8.0)
    assert budget.estimate()[0] == 8.0


def test_multi_scale_noise_does_not_move_the_schedule_back_and_forth():
    """Epochs 0.68-1.4x the mean by the multi-scale size, drawn at random (as a 288-416 run makes them): the
    schedule fitted after every epoch changes a few times, not at every other epoch, and the run ends within the
    budget."""
    rng = random.Random(0)
    budget = TimeBudget(minutes=19.0)
    max_epoch, elapsed, epoch, changes = 420, 10.0, 0, 0
    while epoch < max_epoch:
        seconds = 2.9 * rng.choice((0.68, 0.84, 1.0, 1.19, 1.4))
        budget.record_epoch(seconds)
        elapsed += seconds
        epoch += 1
        if epoch % 25 == 0 or epoch > max_epoch - 6:
            budget.record_eval(0.7)
            elapsed += 0.7
        planned = budget.plan(elapsed, epoch, max_epoch, 420, 15, 25, 6)
        if planned is not None:
            max_epoch, changes = planned, changes + 1
    assert 300 < max_epoch < 420 and changes <= 12  # a 20-epoch median made 72 changes here
    assert 0.95 * 19.0 * 60 < elapsed <= 19.0 * 60
