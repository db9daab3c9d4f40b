"""Faults of a multi-process run, with gloo on the CPU: a killed rank, a lost machine, a stalled rank, a silent peer,
and SIGTERM to the launcher; the watchdog and the NCCL settings at unit level."""
import importlib
import os
import signal
import subprocess
import sys
import threading
import time
from datetime import timedelta

import pytest
from loguru import logger

from train_helpers import FOREST_EXP, ROOT, TRAIN_PY, free_port, run_dir, subprocess_env, tiny_opts

from yolox.core.watchdog import EXIT_PEER_LOST, EXIT_STALLED, Watchdog, describe_where, thread_stacks

launch_module = importlib.import_module("yolox.core.launch")  # the module (yolox.core.launch is also the function)

STOP_BOUND_S = 60  # a death that a socket or the launcher sees stops the run in seconds (about 4 s measured here)


# ------------------------------------------------------------------------------------------------ unit level
class _FakeTrainer:
    rank, is_distributed, file_name = 0, False, "/tmp/run"
    epoch, iter, max_epoch, max_iter = 2, 4, 10, 13


class _Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


def _captured_errors():
    lines = []
    handle = logger.add(lambda m: lines.append(str(m)), level="ERROR")
    return lines, handle


def test_the_watchdog_names_a_stalled_process_with_its_stacks_and_stops_it():
    clock, exits = _Clock(), []
    dog = Watchdog(stall_timeout=30, clock=clock, exit=exits.append)
    trainer = _FakeTrainer()
    dog.mark(trainer, 2)  # in the training step of epoch 3, iter 5
    lines, handle = _captured_errors()
    try:
        clock.now += 29
        dog.check()
        assert exits == []  # not yet: within stall_timeout
        clock.now += 2
        dog.check()
    finally:
        logger.remove(handle)
    assert exits == [EXIT_STALLED]
    text = "\n".join(lines)
    assert "rank 0 (machine 0)" in text and "made no progress for 31 s" in text
    assert "epoch 3/10, iter 5/13 (training step)" in text and "--resume" in text
    assert "test_faults_dist.py" in text and "--- thread MainThread ---" in text  # the stacks of its threads


def test_the_watchdog_leaves_evaluation_and_an_unwatched_run_alone():
    clock, exits = _Clock(), []
    dog = Watchdog(stall_timeout=30, clock=clock, exit=exits.append)
    dog.mark(_FakeTrainer(), 4)  # evaluation: left to the longer collective timeout
    clock.now += 10_000
    dog.check()
    off = Watchdog(stall_timeout=None, clock=clock, exit=exits.append)
    off.mark(_FakeTrainer(), 2)
    clock.now += 10_000
    off.check()
    assert exits == []


class _DictStore:
    """The calls the watchdog makes of the rendezvous store (c10d Store), in a dict; get() of a key never set fails
    as the real store does after its timeout, at once."""

    def __init__(self):
        self.data = {}

    def set(self, key, value):
        self.data[key] = value.encode() if isinstance(value, str) else bytes(value)

    def get(self, key):
        if key not in self.data:
            raise AssertionError(f"get({key!r}) of a key never set would wait for the store's timeout")
        return self.data[key]

    def add(self, key, amount):
        value = int(self.data.get(key, b"0")) + amount
        self.data[key] = str(value).encode()
        return value

    def check(self, keys):
        return all(k in self.data for k in keys)


def _store_watchdogs(world_size=3, heartbeat_timeout=5):
    """Watchdogs of ranks 0..world_size-1 sharing one in-process store (as the rendezvous store), on one clock."""
    store = _DictStore()
    clock, exits = _Clock(), []
    dogs = []
    for rank in range(world_size):
        dog = Watchdog(stall_timeout=None, heartbeat_timeout=heartbeat_timeout, clock=clock, exit=exits.append)
        dog.rank, dog.world_size, dog.store, dog.run_folder = rank, world_size, store, "/tmp/run"
        dog.mark(_FakeTrainer(), 2)
        dog._beat()
        dogs.append(dog)
    return dogs, clock, exits


def test_a_peer_that_finished_or_stopped_is_not_called_lost_but_a_silent_one_is():
    dogs, clock, exits = _store_watchdogs()
    dogs[0].check()  # rank 0 records every peer's beat
    dogs[1].stop()  # rank 1 finished its run (or its collective failed): it stops beating on purpose
    lines, handle = _captured_errors()
    try:
        clock.now += 6  # past heartbeat_timeout for both rank 1 and rank 2, which went silent
        dogs[0].check()
    finally:
        logger.remove(handle)
    assert exits == [EXIT_PEER_LOST]
    assert len(lines) == 1 and "rank 2 (machine 2)" in lines[0] and "no heartbeat for 6 s" in lines[0], lines


def test_after_a_failed_collective_the_lost_peer_is_the_silent_one_that_did_not_stop():
    dogs, clock, exits = _store_watchdogs()
    dogs[1].stop()  # rank 1's collective failed too: it stops, as rank 0 does
    dogs[0].stop()
    line = dogs[0].find_lost_peer(wait=0.01)  # rank 2 was killed: neither beats nor said it stopped
    assert line is not None and line.startswith("rank 2 (machine 2), host ") and "was lost (its connection closed" in line
    assert dogs[0]._peer_where(7) is None  # a rank that never wrote where it is: None at once


class _EndedProcess:
    """What supervise() needs of a process that has already ended with `exitcode` (no fork in the test process)."""

    def __init__(self, exitcode, pid):
        self.exitcode, self.pid = exitcode, pid
        read, write = os.pipe()
        os.close(write)  # the read end is ready at once, as a dead process's sentinel
        self.sentinel = read

    def join(self, timeout=None):
        pass

    def is_alive(self):
        return False


def test_the_launcher_shows_a_failed_process_traceback_once_and_removes_the_error_files(tmp_path):
    import multiprocessing
    import pickle

    error_files = [str(tmp_path / "error0.pickle"), str(tmp_path / "error1.pickle")]
    with open(error_files[0], "wb") as f:  # what torch's process wrapper writes for an exception of process 0
        pickle.dump("Traceback (most recent call last):\n  ...\nZeroDivisionError: division by zero", f)
    processes = [_EndedProcess(1, 4242), _EndedProcess(0, 4243)]
    board = launch_module.new_board(multiprocessing.get_context("spawn"), 2)
    lines, handle = _captured_errors()
    try:
        with pytest.raises(launch_module.ProcessLost) as lost:
            launch_module.supervise(processes, board, 0, 2, grace_s=5, error_files=error_files)
    finally:
        logger.remove(handle)
        for p in processes:
            os.close(p.sentinel)
    assert lost.value.exit_code == 1 and "rank 0 (machine 0, pid 4242) ended with exit status 1" in str(lost.value)
    assert len(lines) == 1 and "rank 0 (machine 0) raised:" in lines[0] and "ZeroDivisionError" in lines[0]
    assert not any(os.path.exists(f) for f in error_files)


def test_a_repeated_stop_signal_within_a_second_is_one_request(monkeypatch):
    from yolox.core import stop_request as module

    now = [50.0]
    monkeypatch.setattr(module.time, "monotonic", lambda: now[0])
    stop = module.StopRequest()
    stop._handle(signal.SIGINT, None)  # the terminal's Ctrl-C reaches the process ...
    now[0] += 0.01
    stop._handle(signal.SIGINT, None)  # ... and again through the launcher: still one clean stop
    assert stop.requested
    now[0] += 2.0
    with pytest.raises(KeyboardInterrupt):  # a second Ctrl-C of the user: stop at once
        stop._handle(signal.SIGINT, None)


def test_thread_stacks_show_every_thread():
    release = threading.Event()
    t = threading.Thread(target=release.wait, name="sleeper", daemon=True)
    t.start()
    try:
        text = thread_stacks()
    finally:
        release.set()
    assert "--- thread sleeper ---" in text and "--- thread MainThread ---" in text
    assert describe_where({"epoch": 0, "stage": "starting"}) == "before the first iteration (starting)"


def test_a_signal_that_lands_inside_the_logger_is_handled_without_a_logging_error(capfd):
    # a stop signal may interrupt the main thread while it writes a log line; a handler that logged there would
    # meet loguru's non-reentrant lock ("Logging error in Loguru Handler", a traceback beside a clean stop)
    import signal as signal_module
    from types import SimpleNamespace

    from loguru import logger

    from yolox.core.stop_request import StopRequest

    stop = StopRequest()
    fired, lines = [], []

    def sink(message):  # runs with the handler's lock held, as the interrupted main thread would
        lines.append(str(message))
        if not fired:
            fired.append(True)
            stop._handle(signal_module.SIGTERM, None)
            launch_module.supervise.__globals__["signal_safe_warning"]("SIGTERM: every process stops")

    sink_id = logger.add(sink)
    try:
        logger.info("an iteration's line")
        assert stop.requested and fired
        stop.agree(SimpleNamespace(is_distributed=False), not_finite=False)  # the next step logs the stop's line
    finally:
        logger.remove(sink_id)
    err = capfd.readouterr().err
    assert "Logging error" not in err and "Traceback" not in err, err
    assert "| WARNING  | yolox.core.launch - SIGTERM: every process stops" in err
    assert "stop requested (SIGTERM): finishing this iteration" in lines[-1]
    assert stop.agreed


def test_nccl_is_set_up_to_fail_rather_than_wait(monkeypatch):
    environ = {"TORCH_NCCL_HEARTBEAT_TIMEOUT_SEC": "123"}  # what the user set stays
    applied = launch_module.configure_nccl_faults(environ)
    assert environ["TORCH_NCCL_ASYNC_ERROR_HANDLING"] == "1" and environ["TORCH_NCCL_ENABLE_MONITORING"] == "1"
    assert environ["TORCH_NCCL_BLOCKING_WAIT"] == "0" and environ["TORCH_NCCL_HEARTBEAT_TIMEOUT_SEC"] == "123"
    assert "TORCH_NCCL_HEARTBEAT_TIMEOUT_SEC" not in applied
    # training collectives time out well under torch's 30 minutes, and well over the watchdog's stall_timeout;
    # the barriers around evaluation and cache building get the longer timeout
    from yolox.exp import get_exp

    exp = get_exp(FOREST_EXP, None)
    assert timedelta(seconds=exp.stall_timeout) < launch_module.TRAIN_TIMEOUT < timedelta(minutes=30)
    assert launch_module.SLOW_TIMEOUT > launch_module.TRAIN_TIMEOUT

    calls = {}
    monkeypatch.setattr(launch_module.dist, "init_process_group", lambda **kw: calls.update(init=kw))
    monkeypatch.setattr(launch_module.comm, "make_slow_group", lambda timeout: calls.update(slow=timeout))
    for key in launch_module.nccl_fault_settings():
        monkeypatch.delenv(key, raising=False)
    launch_module._init_group("nccl", launch_module.TRAIN_TIMEOUT, init_method="env://")
    assert calls["init"]["backend"] == "nccl" and calls["init"]["timeout"] == launch_module.TRAIN_TIMEOUT
    assert calls["slow"] == launch_module.SLOW_TIMEOUT
    assert os.environ["TORCH_NCCL_ASYNC_ERROR_HANDLING"] == "1"


# ------------------------------------------------------------------------------------------------ processes
def _start(argv, env=None, **popen):
    env = dict(subprocess_env(1), PYTHONUNBUFFERED="1", **(env or {}))
    return subprocess.Popen([sys.executable, TRAIN_PY, *argv], env=env, cwd=str(ROOT), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, **popen)


def _wait_for(path, proc, timeout=300):
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None:
        if path.exists():
            return
        time.sleep(0.05)
    out = proc.communicate(timeout=60)[0] if proc.poll() is not None else ""
    raise AssertionError(f"{path} did not appear\n{out[-3000:]}")


def _ranks(launcher):
    pids = subprocess.run(["pgrep", "-P", str(launcher.pid), "-f", "multiprocessing.spawn"], capture_output=True,
                          text=True).stdout.split()
    return [int(p) for p in pids]


def _two_process_argv(out, *flags, **overrides):
    return ["-f", FOREST_EXP, "-d", "2", "-b", "8", *flags, *tiny_opts(out, **overrides)]


def test_a_rank_killed_in_d2_stops_the_run_with_one_line(tmp_path):
    proc = _start(_two_process_argv(tmp_path, max_epoch=6))
    _wait_for(run_dir(tmp_path) / "latest_ckpt.pth", proc)
    ranks = _ranks(proc)
    assert len(ranks) == 2
    os.kill(ranks[1], signal.SIGKILL)
    killed = time.time()
    out = proc.communicate(timeout=STOP_BOUND_S + 60)[0]
    assert time.time() - killed < STOP_BOUND_S, out[-3000:]
    assert proc.returncode == 128 + signal.SIGKILL, out[-3000:]
    line = next(line for line in out.splitlines() if "was killed by SIGKILL" in line)
    assert "rank 1 (machine 0, pid" in line and "at epoch " in line and "iter " in line and "--resume" in line
    assert "Training of experiment is done" not in out and "Traceback" not in out


def _two_machines(tmp_path, extra=(), env=None):
    url = f"tcp://127.0.0.1:{free_port()}"
    procs = []
    for machine in (0, 1):
        argv = ["-f", FOREST_EXP, "-d", "1", "-b", "8", "--num_machines", "2", "--machine_rank", str(machine),
                "--dist-url", url, *tiny_opts(tmp_path / f"machine{machine}", max_epoch=6), *extra]
        procs.append(_start(argv, env=env, start_new_session=True))  # a machine is a process group here
    return procs


def _fault_machine1(tmp_path, signum, extra=()):
    """Two "machines"; once machine 0 saved a checkpoint, `signum` goes to every process of machine 1. Returns
    (machine 0's exit status, its output, seconds from the signal to machine 0's end); both are gone after."""
    machine0, machine1 = _two_machines(tmp_path, extra)
    try:
        _wait_for(run_dir(tmp_path / "machine0") / "latest_ckpt.pth", machine0)
        os.killpg(machine1.pid, signum)  # the whole machine: its launcher and its process
        signalled = time.time()
        out = machine0.communicate(timeout=STOP_BOUND_S + 60)[0]
        seconds = time.time() - signalled
    finally:
        for p in (machine0, machine1):
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
            p.communicate()
    return machine0.returncode, out, seconds


def test_a_lost_machine_stops_the_other_with_one_line_naming_it(tmp_path):
    code, out, seconds = _fault_machine1(tmp_path, signal.SIGKILL)
    assert seconds < STOP_BOUND_S, out[-3000:]
    assert code == EXIT_PEER_LOST, out[-3000:]
    line = next(line for line in out.splitlines() if "was lost" in line)
    assert "rank 1 (machine 1)" in line and "last heard from at" in line and "--resume" in line
    assert "Traceback" not in out


@pytest.mark.slow
def test_a_silent_peer_is_called_lost_after_the_heartbeat_timeout(tmp_path):
    # SIGSTOP: the process neither dies nor closes its sockets, as a machine cut off from the network; gloo would
    # wait for its collective timeout (15 minutes), the heartbeat notices in heartbeat_timeout seconds
    code, out, seconds = _fault_machine1(tmp_path, signal.SIGSTOP, extra=("heartbeat_timeout", "4"))
    assert seconds < STOP_BOUND_S, out[-3000:]
    assert code == EXIT_PEER_LOST, out[-3000:]
    assert "no heartbeat for" in out and "rank 1 (machine 1)" in out


def test_an_injected_stall_is_named_with_its_stack(tmp_path):
    proc = _start(_two_process_argv(tmp_path, max_epoch=4, stall_timeout=3),
                  env={"YOLOX_FAULT": "stall:rank=1:iter=8"})
    out = proc.communicate(timeout=300)[0]
    assert proc.returncode != 0, out[-3000:]
    stalled = next(line for line in out.splitlines() if "made no progress for" in line)
    assert "rank 1 (machine 0)" in stalled and "stall_timeout 3" in stalled
    assert "--- thread MainThread ---" in out and "faults.py" in out  # the stalled thread's stack: the injected sleep
    assert "rank 0 (machine 0)" not in stalled


def test_sigterm_to_the_launcher_saves_latest_and_the_resumed_run_is_exact(tmp_path):
    from train_helpers import assert_state_dicts_close, load

    full, cut = tmp_path / "full", tmp_path / "cut"
    opts = dict(max_epoch=3, eval_interval=3, save_history_ckpt=False)
    reference = _start(_two_process_argv(full, **opts))
    proc = _start(_two_process_argv(cut, **opts))
    folder = run_dir(cut)
    _wait_for(folder / "latest_ckpt.pth", proc)  # end of epoch 1
    proc.send_signal(signal.SIGTERM)  # as a cluster's preemption does
    out = proc.communicate(timeout=300)[0]
    assert proc.returncode == 128 + signal.SIGTERM, out[-3000:]
    assert "training stopped (SIGTERM)" in out and "Traceback" not in out
    stopped_at = load(folder / "latest_ckpt.pth")["iteration"]
    assert stopped_at > load(folder / "latest_ckpt.pth")["iters_per_epoch"]  # saved mid-run, after the signal

    resumed = _start(_two_process_argv(cut, "--resume", **opts))
    out = resumed.communicate(timeout=600)[0]
    assert resumed.returncode == 0, out[-3000:]
    ref_out = reference.communicate(timeout=600)[0]
    assert reference.returncode == 0, ref_out[-3000:]
    a, b = load(run_dir(full) / "latest_ckpt.pth"), load(folder / "latest_ckpt.pth")
    assert a["iteration"] == b["iteration"]
    assert_state_dicts_close(a["model"], b["model"])
    assert_state_dicts_close(a["raw_model"], b["raw_model"])
