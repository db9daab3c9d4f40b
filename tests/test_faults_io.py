"""Faults that must not cost a run: YOLOX_FAULT, a checkpoint save on a full or failing disk, a corrupt or foreign
checkpoint given to --resume or -c, a killed DataLoader worker, and `max_train_minutes None` on the command line."""
import errno
import os
import shutil
import sys
from contextlib import contextmanager
from types import SimpleNamespace

import pytest
import torch
from loguru import logger

import yolox.tools.cli as cli
from train_helpers import FOREST_EXP, load, read_metrics, run_dir, train_argv
from yolox.core.checkpointer import save_failure_message
from yolox.core.data_stream import DataStream, DataWorkerDiedError
from yolox.core.faults import Fault, FaultInjection, parse_faults
from yolox.tools.train import main as train_main
from yolox.utils import atomic_save, load_checkpoint_file

# the runs below: two epochs of 7 iterations (batch 8), no evaluation (it is not what is tested), no history files
RUN = dict(max_epoch=2, no_aug_epochs=0, eval_interval=10, save_history_ckpt=False)
SAVE_FAULT_ITER = 8  # in the second epoch: the save at its end fails, the one after the first epoch is kept


@contextmanager
def recorded_cli(monkeypatch_context):
    """The lines run_cli logs (error, warning, exception), recorded instead of printed."""
    lines = []

    class Recorder:
        def error(self, message):
            lines.append(message)

        warning = error

        def exception(self, message):
            lines.append(f"traceback: {message}")

    monkeypatch_context.setattr(cli, "logger", Recorder())
    yield lines


def run_main(argv, fault=None):
    """tools/train.py's main in this process, with YOLOX_FAULT=fault: (exit status, the lines run_cli logged)."""
    with pytest.MonkeyPatch.context() as mp:
        if fault is None:
            mp.delenv("YOLOX_FAULT", raising=False)
        else:
            mp.setenv("YOLOX_FAULT", fault)
        with recorded_cli(mp) as lines:
            try:
                train_main(argv)
                code = 0
            except SystemExit as e:
                code = e.code
            finally:
                logger.remove()
                logger.add(sys.stderr)
    return code, lines


def one_line(lines):
    assert len(lines) == 1, lines
    assert "\n" not in lines[0] and not lines[0].startswith("traceback")
    return lines[0]


# ------------------------------------------------------------------------------------------------ YOLOX_FAULT
def test_parse_faults_accepts_the_documented_forms():
    assert parse_faults(None) == [] and parse_faults("  ") == []
    assert parse_faults("stall:rank=1:iter=30") == [Fault("stall", 1, 30)]
    assert parse_faults(" save_error:iter=5:rank=0 , worker_kill:rank=0:iter=2;stall:rank=1:iter=0;") == [
        Fault("save_error", 0, 5), Fault("worker_kill", 0, 2), Fault("stall", 1, 0)]


@pytest.mark.parametrize("text", ["stal:rank=0:iter=1", "stall:rank=0", "stall:iter=3", "stall:rank=-1:iter=3",
                                  "stall:rank=0:iter=x", "stall:rank=0:iter=1:rank=1", "stall:rank=0:it=1",
                                  "stall:rank 0:iter=1", ",;", "save_error"])
def test_parse_faults_rejects_with_one_line_naming_variable_value_and_form(text):
    with pytest.raises(ValueError) as e:
        parse_faults(text)
    message = str(e.value)
    assert "\n" not in message and message.startswith(f"YOLOX_FAULT={text!r}: ")
    assert "expected <kind>:rank=<r>:iter=<i>" in message and "stall, save_error, worker_kill" in message


def test_a_malformed_yolox_fault_stops_the_command_with_exit_status_2(tmp_path):
    code, lines = run_main(train_argv(tmp_path, **RUN), fault="stall:rank=0:iter=soon")
    assert code == 2
    assert one_line(lines).startswith("ValueError: YOLOX_FAULT='stall:rank=0:iter=soon': iter='soon' is not")


def _fake_trainer(rank=0, progress=3, pids=()):
    stream = SimpleNamespace(worker_pids=lambda: list(pids), record_worker_memory=lambda iteration: None)
    return SimpleNamespace(rank=rank, progress_in_iter=progress, data_stream=stream,
                           checkpointer=SimpleNamespace(write_fault=None))


def test_stall_sleeps_forever_on_its_rank_at_its_iteration_only(monkeypatch):
    class Slept(Exception):
        pass

    def sleep(seconds):
        raise Slept(seconds)

    part = FaultInjection("stall:rank=1:iter=3")
    monkeypatch.setattr(FaultInjection, "sleep", staticmethod(sleep))
    part.before_iter(_fake_trainer(rank=0, progress=3))  # another rank
    part.before_iter(_fake_trainer(rank=1, progress=2))  # before its iteration
    with pytest.raises(Slept):
        part.before_iter(_fake_trainer(rank=1, progress=3))


def test_worker_kill_without_workers_says_so_and_does_nothing(monkeypatch):
    messages = []
    sink = logger.add(messages.append, format="{message}")
    killed = []
    monkeypatch.setattr(os, "kill", lambda *a: killed.append(a))
    try:
        FaultInjection("worker_kill:rank=0:iter=3").before_iter(_fake_trainer(progress=3))
    finally:
        logger.remove(sink)
    assert not killed
    assert any("data_num_workers is 0, there is no DataLoader worker to kill; nothing done" in m for m in messages)


def test_save_error_arms_the_next_save_at_or_after_its_iteration():
    part = FaultInjection("save_error:rank=0:iter=3")
    trainer = _fake_trainer(progress=2)
    part.before_iter(trainer)
    assert trainer.checkpointer.write_fault is None
    trainer.progress_in_iter = 5  # at/after: a run resumed past the iteration still gets it
    part.before_iter(trainer)
    assert trainer.checkpointer.write_fault is not None


# ------------------------------------------------------------------------------------------------ atomic saves
def test_a_save_that_fails_mid_write_keeps_the_previous_file_and_leaves_no_temporary_file(tmp_path):
    from yolox.core.faults import _DiskFull

    path = tmp_path / "latest_ckpt.pth"
    atomic_save({"model": {"w": torch.zeros(3)}}, path)
    big = {"model": {"w": torch.ones(100_000)}}
    with pytest.raises(OSError) as e:
        atomic_save(big, path, wrap=_DiskFull)
    assert e.value.errno == errno.ENOSPC
    with pytest.raises(KeyboardInterrupt):  # a kill-like interruption inside torch.save

        def interrupted(f):
            raise KeyboardInterrupt

        atomic_save(big, path, wrap=interrupted)
    assert os.listdir(tmp_path) == ["latest_ckpt.pth"]
    assert torch.equal(load_checkpoint_file(path)["model"]["w"], torch.zeros(3))


def test_the_save_failure_line_names_path_free_space_and_fix(tmp_path):
    path = str(tmp_path / "last_epoch_ckpt.pth")
    full = save_failure_message(path, OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)), str(tmp_path / "x.pth"))
    assert f"could not write the checkpoint {path}: No space left on device (ENOSPC)" in full
    assert "free on that filesystem" in full and "free space there, or point output_dir" in full
    assert "no checkpoint of this run was written before" in full
    denied = save_failure_message(path, PermissionError(errno.EACCES, "Permission denied"), path)
    assert f"make {tmp_path} writable, or point output_dir elsewhere" in denied and "\n" not in denied


# ------------------------------------------------------------------------------------------------ one run, three faults
@pytest.fixture(scope="module")
def failed_save(tmp_path_factory):
    """A run whose save after its second epoch fails (YOLOX_FAULT save_error): exit status, logged lines, folder."""
    out = tmp_path_factory.mktemp("failed_save")
    code, lines = run_main(train_argv(out, **RUN), fault=f"save_error:rank=0:iter={SAVE_FAULT_ITER}")
    return SimpleNamespace(out=out, folder=run_dir(out), code=code, lines=lines)


def test_an_injected_save_error_stops_with_one_line_and_keeps_the_previous_checkpoint(failed_save):
    folder = failed_save.folder
    assert failed_save.code == 2
    line = one_line(failed_save.lines)
    latest = folder / "latest_ckpt.pth"
    assert line.startswith(f"CheckpointSaveError: could not write the checkpoint {latest}: No space left on device "
                           "(ENOSPC); ")
    assert "free on that filesystem" in line and f"{latest} is intact and --resume continues from it" in line
    assert "point output_dir at a disk with room" in line
    assert not [n for n in os.listdir(folder) if n.endswith(".tmp")]
    ckpt = load(latest)  # the first epoch's, whole
    assert ckpt["iteration"] == ckpt["iters_per_epoch"] < SAVE_FAULT_ITER + 1


def test_a_killed_data_worker_stops_with_one_line_and_resume_continues_exactly(failed_save):
    folder = failed_save.folder
    before = load(folder / "latest_ckpt.pth")
    start = before["iteration"]
    code, lines = run_main(train_argv(failed_save.out, "--resume", **RUN, data_num_workers=1),
                           fault=f"worker_kill:rank=0:iter={start + 2}")
    assert code == 2
    line = one_line(lines)
    assert line.startswith("DataWorkerDiedError: DataLoader worker pid ")
    assert f"MB at iteration {start + 2}" in line
    assert "data_num_workers 0` on the command line, now 1" in line and "--cache disk" in line
    assert "smaller batch (-b)" in line and f"--resume continues from {folder / 'latest_ckpt.pth'}" in line
    after = load(folder / "latest_ckpt.pth")
    assert after["iteration"] == start and torch.equal(after["raw_model"]["head.stems.0.conv.weight"],
                                                       before["raw_model"]["head.stems.0.conv.weight"])

    code, lines = run_main(train_argv(failed_save.out, "--resume", **RUN))
    assert code == 0, lines
    resumed = [m["iteration"] for m in read_metrics(folder) if "lr" in m and m["iteration"] > start]
    assert resumed[-before["iters_per_epoch"]:] == list(range(start + 1, 2 * before["iters_per_epoch"] + 1))
    assert load(folder / "latest_ckpt.pth")["iteration"] == 2 * before["iters_per_epoch"]


# ------------------------------------------------------------------------------------------------ corrupt checkpoints
@pytest.fixture()
def copied_run(failed_save, tmp_path):
    """A copy of the failed run's folder with a truncated latest_ckpt.pth and a whole last_epoch_ckpt.pth."""
    folder = run_dir(tmp_path)
    folder.mkdir(parents=True)
    good = failed_save.folder / "latest_ckpt.pth"
    shutil.copy(good, folder / "last_epoch_ckpt.pth")
    (folder / "latest_ckpt.pth").write_bytes(good.read_bytes()[:100_000])  # `head -c 100000`
    return tmp_path, folder


def test_resume_from_a_truncated_checkpoint_names_it_and_the_others(copied_run):
    out, folder = copied_run
    code, lines = run_main(train_argv(out, "--resume", **RUN))
    assert code == 2
    assert one_line(lines) == (
        f"CheckpointError: checkpoint '{folder / 'latest_ckpt.pth'}' is truncated (100000 bytes, its zip directory is "
        f"missing), e.g. cut short by a full disk or copy; use another checkpoint of {folder} (give it with -c): "
        "last_epoch_ckpt.pth")


@pytest.mark.parametrize("flags", [("--resume", "-c"), ("-c",)])
def test_a_file_that_is_not_a_checkpoint_given_with_c(copied_run, flags):
    out, folder = copied_run
    bad = folder / "notes.pth"
    bad.write_text("not a checkpoint\n")
    code, lines = run_main(train_argv(out, *flags, str(bad), **RUN))
    assert code == 2
    line = one_line(lines)
    assert line.startswith(f"CheckpointError: checkpoint '{bad}' is not a PyTorch checkpoint (17 bytes beginning with")
    assert line.endswith("last_epoch_ckpt.pth")  # the readable one; the truncated latest_ckpt.pth is left out


def test_fine_tuning_from_a_truncated_checkpoint(copied_run):
    out, folder = copied_run
    code, lines = run_main(train_argv(out, "-c", str(folder / "latest_ckpt.pth"), **RUN))
    assert code == 2 and "is truncated (100000 bytes" in one_line(lines) and "last_epoch_ckpt.pth" in lines[0]


def _foreign_checkpoint(path, **settings):
    from yolox.exp import get_exp

    exp = get_exp(FOREST_EXP)
    for key, value in settings.items():
        setattr(exp, key, value)
    torch.save({"model": exp.get_model().state_dict()}, path)
    return path


def test_resume_from_a_checkpoint_of_another_class_count(tmp_path):
    ckpt = _foreign_checkpoint(tmp_path / "three_classes.pth", num_classes=3)
    code, lines = run_main(train_argv(tmp_path, "--resume", "-c", str(ckpt), **RUN))
    assert code == 2
    assert one_line(lines) == (
        f"CheckpointError: checkpoint '{ckpt}' was trained for 3 classes but the Exp's model has 1 (num_classes); "
        "resume with the Exp it was trained with, add `num_classes 3` to the command line, or fine-tune from it "
        f"with -c {ckpt} without --resume (its class layers are then left out)")


def test_fine_tuning_from_a_checkpoint_of_another_model_size(tmp_path):
    ckpt = _foreign_checkpoint(tmp_path / "wider.pth", width=0.375)
    code, lines = run_main(train_argv(tmp_path, "-c", str(ckpt), **RUN))
    assert code == 2
    line = one_line(lines)
    assert line.startswith(f"CheckpointError: checkpoint '{ckpt}' holds another model than the one the Exp builds")
    assert "Use the Exp (-f / -n) the checkpoint was trained with." in line


# ------------------------------------------------------------------------------------------------ dead workers, unit
def test_the_dead_worker_line_from_torchs_two_messages(tmp_path):
    stream = DataStream()
    stream._memory, stream._memory_iteration = {4242: 812 * 2**20, 4243: 300 * 2**20}, 40
    trainer = SimpleNamespace(train_loader=SimpleNamespace(num_workers=2), file_name=str(tmp_path), epoch=0,
                              progress_in_iter=44)
    error = stream.explain_failure(RuntimeError("DataLoader worker (pid 4242) is killed by signal: Killed. "), trainer)
    assert isinstance(error, DataWorkerDiedError)
    assert str(error) == (
        "DataLoader worker pid 4242 was killed by signal Killed (as the out-of-memory killer does) during iteration "
        "45; it held about 812 MB at iteration 40 (2 workers: 1112 MB in all). Training stopped; no checkpoint of "
        "this run was written yet. Fix: fewer workers (e.g. `data_num_workers 1` on the command line, now 2), "
        "`--cache disk` instead of RAM caching, or a smaller batch (-b)")
    other = stream.explain_failure(RuntimeError("DataLoader worker (pid(s) 77) exited unexpectedly"), trainer)
    assert "DataLoader worker pid 77 exited unexpectedly" in str(other) and "not measured" in str(other)
    assert stream.explain_failure(RuntimeError("CUDA out of memory"), trainer) is None


def test_a_worker_dead_before_the_first_iteration_is_named_too(tmp_path):
    # the loader's first batches are read in before_train (the prefetcher starts there): the same one line
    from yolox.core.trainer import Trainer

    def before_train():
        raise RuntimeError("DataLoader worker (pid 4242) is killed by signal: Killed. ")

    trainer = SimpleNamespace(train_loader=SimpleNamespace(num_workers=2), file_name=str(tmp_path),
                              data_stream=DataStream(), before_train=before_train)
    trainer._dead_worker_named = lambda: Trainer._dead_worker_named(trainer)
    with pytest.raises(DataWorkerDiedError, match=r"^DataLoader worker pid 4242 was killed by signal Killed .* during "
                                                  r"the start; its memory was not measured"):
        Trainer.train(trainer)


def test_a_full_disk_under_the_closing_plots_stops_with_one_line(tmp_path):
    from yolox.core.trainer import Trainer
    from yolox.utils.checkpoint import CheckpointError

    closed = []

    class Part:
        def __init__(self, name, error=None):
            self.name, self.error = name, error

        def after_train(self, trainer, finished):
            closed.append(self.name)
            if self.error is not None:
                raise self.error

    png = str(tmp_path / "results.png")
    full = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), png)
    trainer = SimpleNamespace(parts=[Part("first"), Part("plots", full), Part("last")], _finished=True,
                              file_name=str(tmp_path))
    with pytest.raises(CheckpointError) as raised:
        Trainer._notify_end(trainer)
    line = str(raised.value)
    assert line.startswith(f"could not write {png} (the run's closing plots and tables): No space left on device "
                           "(ENOSPC); ") and "\n" not in line
    assert "free on that filesystem" in line and f"The checkpoints in {tmp_path} are kept" in line
    assert closed == ["last", "plots", "first"]  # every part closed all the same
    trainer.parts = [Part("bug", OSError(errno.EBADF, "Bad file descriptor"))]
    with pytest.raises(OSError, match="Bad file descriptor"):  # not a disk: shown as it is
        Trainer._notify_end(trainer)


def test_a_jpeg_tail_is_read_once_per_file(tmp_path, monkeypatch):
    from yolox.data.datasets import datasets_wrapper

    reads = []
    monkeypatch.setattr(datasets_wrapper, "_tail_checked", set())
    monkeypatch.setattr(datasets_wrapper, "jpeg_is_truncated", lambda f: reads.append(f) or False)
    for name in ("a.jpg", "a.jpg", "b.jpg", "a.jpg"):
        datasets_wrapper._warn_if_truncated(str(tmp_path / name), "train.json")
    assert reads == [str(tmp_path / "a.jpg"), str(tmp_path / "b.jpg")]


# ------------------------------------------------------------------------------------------------ Exp options
def test_max_train_minutes_and_patience_take_none_on_the_command_line():
    from yolox.exp import get_exp

    exp = get_exp(FOREST_EXP)
    assert exp.max_train_minutes is not None  # the forest Exp sets a budget
    exp.merge(["max_train_minutes", "None", "patience", "none"])
    assert exp.max_train_minutes is None and exp.patience is None
    exp.merge(["max_train_minutes", "none", "patience", "5", "max_epoch", "3", "seed", "none"])
    assert exp.max_train_minutes is None and exp.patience == 5 and exp.max_epoch == 3 and exp.seed is None
    exp.merge(["max_train_minutes", "2.5", "patience", "None"])
    assert exp.max_train_minutes == 2.5 and exp.patience is None
    with pytest.raises(ValueError, match="'max_epoch' is a int; got 'None'"):
        exp.merge(["max_epoch", "None"])
