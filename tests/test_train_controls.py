"""Training controls asked of the official YOLOX: early stopping (Exp.patience), frozen layers (Exp.freeze), extending a
finished run with --resume and a larger max_epoch, and results.csv / results.png."""
import csv
import sys
from types import SimpleNamespace

import pytest
import torch
from loguru import logger

from train_helpers import FOREST_EXP, load, read_metrics, run_dir, tiny_opts, train_argv
from yolox.core.early_stopping import EarlyStopping
from yolox.core.freeze import freeze_layers, freeze_prefixes
from yolox.core.results_table import RESULTS_COLUMNS, ResultsTable, plot_results, read_results, write_results
from yolox.exp import get_exp
from yolox.tools.cli import run_cli
from yolox.tools.train import run_train_cli


@pytest.fixture(autouse=True)
def _reset_logger():
    yield
    logger.remove()
    logger.add(sys.stderr)


def fixed_aps(monkeypatch, aps):
    """Evaluations return these AP50:95 values in turn (AP50 twice as much), without running the model."""
    from yolox.exp.yolox_base import Exp

    values = iter(aps)

    def fake_eval(self, model, evaluator, is_distributed, half=False, return_outputs=False):
        ap = next(values)
        result = (ap, min(1.0, 2 * ap), "fixed AP for the test")
        return (result, None) if return_outputs else result

    monkeypatch.setattr(Exp, "eval", fake_eval)


def controls_argv(output_dir, *flags, **overrides):
    return train_argv(output_dir, *flags, **{"check_data": False, "random_size": "4,4", **overrides})


def results_rows(folder):
    with open(folder / "results.csv", newline="") as f:
        reader = csv.DictReader(f)
        assert tuple(reader.fieldnames) == RESULTS_COLUMNS
        return list(reader)


# ------------------------------------------------------------------------------------------------ early stopping
def test_early_stopping_counts_evaluations_since_the_best():
    part = EarlyStopping(2)
    trainer = SimpleNamespace(epoch=0)
    stops = []
    for epoch, ap in enumerate([0.1, 0.2, 0.15, 0.2, 0.3, 0.1, 0.1]):
        trainer.epoch = epoch
        part.evaluated(trainer, ap, 2 * ap)
        stops.append(part.should_stop())
    assert stops == [False, False, False, True, False, False, True]  # 0.2 again is no improvement
    assert (part.best_ap, part.best_epoch, part.stale) == (0.3, 5, 2)
    resumed = EarlyStopping(3)
    resumed.load_state_dict(part.state_dict(trainer), trainer)
    assert (resumed.best_ap, resumed.best_epoch, resumed.stale) == (0.3, 5, 2) and not resumed.should_stop()
    assert not EarlyStopping(None).should_stop()
    for bad in (0, -1, 2.5, "3"):
        with pytest.raises(ValueError, match="patience"):
            EarlyStopping(bad)


def test_patience_stops_the_run_and_a_resume_keeps_the_count(tmp_path, monkeypatch):
    fixed_aps(monkeypatch, [0.1] * 10)
    trainer = run_train_cli(controls_argv(tmp_path, max_epoch=4, patience=1))
    folder = run_dir(tmp_path)
    log = (folder / "train_log.txt").read_text()
    stop_line = "no AP50:95 improvement in 1 evaluations (best 0.1000 at epoch 1): stopping after epoch 2 of 4"
    assert stop_line in log and "---> start train epoch3" not in log
    assert trainer.epoch == 1 and trainer.max_epoch == 2
    assert "Training of experiment is done" in log and (folder / "training_curve.png").exists()  # a finished run
    latest = load(folder / "latest_ckpt.pth")
    assert latest["start_epoch"] == 2 and latest["early_stopping"] == {"best_ap": 0.1, "best_epoch": 1, "stale": 1}
    rows = results_rows(folder)
    assert [r["epoch"] for r in rows] == ["1", "2"] and [r["AP50_95"] for r in rows] == ["0.10000"] * 2
    assert (folder / "results.png").exists()
    iterations = max(m["iteration"] for m in read_metrics(folder))

    # resumed with the same patience: the count says stop, before any iteration
    run_train_cli(controls_argv(tmp_path, "--resume", max_epoch=4, patience=1))
    log = (folder / "train_log.txt").read_text()
    assert log.count("no AP50:95 improvement in 1 evaluations") == 2
    assert max(m["iteration"] for m in read_metrics(folder)) == iterations
    assert len(results_rows(folder)) == 2

    # with patience 2 the one evaluation counted before goes on counting: one more epoch, then stop
    trainer = run_train_cli(controls_argv(tmp_path, "--resume", max_epoch=4, patience=2))
    log = (folder / "train_log.txt").read_text()
    assert "no AP50:95 improvement in 2 evaluations (best 0.1000 at epoch 1): stopping after epoch 3 of 4" in log
    assert "---> start train epoch4" not in log and trainer.epoch == 2
    assert [r["epoch"] for r in results_rows(folder)] == ["1", "2", "3"]


# ------------------------------------------------------------------------------------------------ frozen layers
def test_freeze_values_and_the_optimiser_leaves_frozen_parameters_out():
    assert freeze_prefixes(None) == ()
    assert freeze_prefixes("backbone") == ("backbone.backbone",)
    assert freeze_prefixes("backbone+neck") == ("backbone",)
    assert freeze_prefixes("backbone.backbone.dark2,head.stems") == ("backbone.backbone.dark2", "head.stems")
    with pytest.raises(ValueError, match="Exp.freeze"):
        freeze_prefixes(3)

    exp = get_exp(None, "yolox-nano")
    model = exp.get_model()
    count, bns = freeze_layers(model, ("backbone.backbone.dark2", "head.stems"))
    frozen = {n for n, p in model.named_parameters() if not p.requires_grad}
    assert frozen and all(n.startswith(("backbone.backbone.dark2.", "head.stems.")) for n in frozen)
    assert count == sum(p.numel() for n, p in model.named_parameters() if n in frozen)
    assert bns and not any(bn.training for bn in bns) and model.head.cls_convs.training
    optimised = {id(p) for group in exp.get_optimizer(8).param_groups for p in group["params"]}
    assert optimised == {id(p) for p in model.parameters() if p.requires_grad}
    with pytest.raises(ValueError, match=r"'backbone\.dark9' names no module of the model, whose top-level "
                                         r"modules are backbone, head"):
        freeze_layers(model, ("backbone.dark9",))


def test_a_frozen_backbone_keeps_its_weights_and_bn_statistics_while_the_rest_trains(tmp_path, monkeypatch):
    fixed_aps(monkeypatch, [0.1] * 5)
    exp = get_exp(FOREST_EXP)
    torch.manual_seed(0)
    start = {k: v.clone() for k, v in exp.get_model().state_dict().items()}
    ckpt = tmp_path / "start.pth"
    torch.save({"model": start}, ckpt)

    trainer = run_train_cli(controls_argv(tmp_path, "-c", str(ckpt), max_epoch=1, freeze="backbone"))
    log = (run_dir(tmp_path) / "train_log.txt").read_text()
    assert "frozen layers (Exp.freeze): backbone.backbone: " in log
    trained = trainer.model.state_dict()
    backbone = [k for k in start if k.startswith("backbone.backbone.")]
    assert any(k.endswith("running_mean") for k in backbone)
    for k in backbone:  # weights and BN running statistics (and their update count)
        assert torch.equal(trained[k], start[k]), k
    for prefix in ("backbone.C3_p4.", "head.cls_preds."):  # the neck and the head learned
        assert any(not torch.equal(trained[k], start[k]) for k in start if k.startswith(prefix)), prefix
    assert not trainer.model.backbone.backbone.stem.conv.bn.training and trainer.model.head.training
    optimised = sum(p.numel() for group in trainer.optimizer.param_groups for p in group["params"])
    assert optimised == sum(p.numel() for p in trainer.model.parameters() if p.requires_grad)
    assert optimised < sum(p.numel() for p in trainer.model.parameters())


def test_a_freeze_prefix_that_matches_nothing_exits_2_with_one_line(tmp_path, capsys):
    logger.remove()
    logger.add(lambda message: sys.stderr.write(message), level="INFO")
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        run_cli(run_train_cli, controls_argv(tmp_path, max_epoch=1, freeze="backbone.dark9"))
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and "Traceback" not in err
    errors = [line for line in err.splitlines() if "| ERROR" in line]
    assert len(errors) == 1 and "'backbone.dark9' names no module of the model" in errors[0], err[-3000:]


# ------------------------------------------------------------------------------------------------ extending a run
def test_a_finished_run_extended_with_resume_follows_the_cosine_to_the_new_end(tmp_path, monkeypatch):
    fixed_aps(monkeypatch, [0.1, 0.2, 0.3])
    opts = dict(no_aug_epochs=0, eval_interval=2)
    run_train_cli(controls_argv(tmp_path, max_epoch=2, **opts))
    folder = run_dir(tmp_path)
    before = read_metrics(folder)
    iters = load(folder / "latest_ckpt.pth")["iters_per_epoch"]

    trainer = run_train_cli(controls_argv(tmp_path, "--resume", max_epoch=3, **opts))
    log = (folder / "train_log.txt").read_text()
    assert "the run is extended from 2 to 3 epochs (with a fresh max_train_minutes): epoch 3 follow" in log
    assert trainer.epoch == 2 and load(folder / "latest_ckpt.pth")["start_epoch"] == 3
    added = [m for m in read_metrics(folder)[len(before):] if "lr" in m]
    assert [m["iteration"] for m in added] == list(range(2 * iters + 1, 3 * iters + 1))

    exp = get_exp(FOREST_EXP)
    exp.merge(tiny_opts(tmp_path, max_epoch=3, **opts))
    schedule = exp.get_lr_scheduler(exp.basic_lr_per_img * 8, iters)
    lrs = [m["lr"] for m in added]
    assert lrs == pytest.approx([schedule.update_lr(m["iteration"]) for m in added], rel=1e-9)
    assert lrs[0] > [m["lr"] for m in before if "lr" in m][-1]  # back up the cosine of a 3-epoch run
    assert all(a > b for a, b in zip(lrs, lrs[1:])) and lrs[-1] == pytest.approx(schedule.update_lr(3 * iters))

    rows = results_rows(folder)  # kept through the resume; AP only in epochs with an evaluation (the last: always)
    assert [(r["epoch"], r["AP50_95"], r["AP50"]) for r in rows] == [("1", "", ""), ("2", "0.10000", "0.20000"),
                                                                      ("3", "0.20000", "0.40000")]
    assert all(float(r["total_loss"]) > 0 and float(r["epoch_time_s"]) > 0 and r["precision"] == "" for r in rows)

    run_train_cli(controls_argv(tmp_path, "--resume", max_epoch=3, **opts))  # nothing left: one warning
    assert "the checkpoint is at epoch 3 and max_epoch is 3: no epoch left to train" in (
        folder / "train_log.txt").read_text()


# ------------------------------------------------------------------------------------------------ results.csv
def test_results_table_keeps_the_rows_up_to_the_resumed_epoch(tmp_path):
    path = tmp_path / "results.csv"
    write_results(path, [{"epoch": str(e), "total_loss": "1.5", "AP50": ""} for e in (1, 2, 3, 4)])
    table = ResultsTable()
    table.before_train(SimpleNamespace(rank=0, file_name=str(tmp_path), start_epoch=2))
    assert [r["epoch"] for r in read_results(path)] == ["1", "2"] and [r["epoch"] for r in table.rows] == ["1", "2"]
    assert not [p for p in tmp_path.iterdir() if ".tmp" in p.name]
    ResultsTable().before_train(SimpleNamespace(rank=0, file_name=str(tmp_path), start_epoch=0))  # a fresh run
    assert read_results(path) == []
    pytest.importorskip("matplotlib")
    plot_results([{"epoch": "1", "total_loss": "2.0", "lr": "0.01", "AP50": "0.2"},
                  {"epoch": "2", "total_loss": "1.0", "lr": "0.005", "AP50": ""}], tmp_path / "results.png")
    assert (tmp_path / "results.png").stat().st_size > 0
