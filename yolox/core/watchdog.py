"""The run's watchdog: one thread per training process that names a stalled process (no training iteration for
Exp.stall_timeout seconds: the stacks of its threads go to the log) or a lost one (its heartbeat through the
rendezvous store stopped for Exp.heartbeat_timeout seconds), in one line, and stops the run instead of leaving the
others waiting in a collective for its timeout.

Cheap by design: the main thread only writes a few numbers per iteration (no lock, no collective, no syscall); the
thread beats once per `interval` through the store the process group already has (one `add` and one `set` per
process; rank 0 also reads the others' beats).
"""
import json
import os
import socket
import sys
import threading
import time
import traceback

import torch.distributed as dist
from loguru import logger

from .parts import TrainerPart

__all__ = ["Watchdog", "EXIT_STALLED", "EXIT_PEER_LOST", "STAGES", "attach_board", "board_where", "thread_stacks",
           "active_watchdog", "explain_collective_failure", "describe_where"]

EXIT_STALLED = 124  # as timeout(1): the process gave up waiting on itself
EXIT_PEER_LOST = 75  # EX_TEMPFAIL: a temporary failure, to retry (--resume continues the run)

# where a process is; the stall timeout applies to the training stages only (evaluation and checkpoints of a big
# dataset may take longer and are left to the longer collective timeout around them)
STAGES = ("starting", "loading data", "training step", "after the iteration", "evaluation", "between epochs", "done")
TRAINING_STAGES = frozenset((1, 2, 3))
_BOARD_FIELDS = 6  # epoch, max_epoch, iter, max_iter, stage, progress counter

_LOST_KEY = "yolox/lost"
_STOPPED_KEY = "yolox/stopped"  # /<rank>: that process stopped beating on purpose (finished, or stopping)
_ACTIVE = None  # the watchdog running in this process, for the launcher's exception handler
_BOARD = None  # (shared array, slot) when a launcher on this machine watches this process


def attach_board(board, slot):
    """Let the launcher see this process's whereabouts: `board` is a shared integer array of _BOARD_FIELDS per
    process (multiprocessing.Array), `slot` this process's local rank."""
    global _BOARD
    _BOARD = (board, slot)


def new_board(context, processes):
    """The shared array a launcher gives its processes (zeros: "starting")."""
    return context.Array("q", processes * _BOARD_FIELDS, lock=False)


def board_where(board, slot):
    """{epoch, max_epoch, iter, max_iter, stage} of process `slot` as last written to the board (1-based epoch and
    iteration; 0 before the first one)."""
    values = list(board[slot * _BOARD_FIELDS:(slot + 1) * _BOARD_FIELDS])
    epoch, max_epoch, it, max_iter, stage, counter = values
    return {"epoch": epoch, "max_epoch": max_epoch, "iter": it, "max_iter": max_iter,
            "stage": STAGES[stage] if 0 <= stage < len(STAGES) else "?", "counter": counter}


def describe_where(where):
    """'epoch 3/10, iter 5/13 (training step)' from a whereabouts dict."""
    if not where or not where.get("epoch"):
        return f"before the first iteration ({where.get('stage', 'starting') if where else 'starting'})"
    return (f"epoch {where['epoch']}/{where['max_epoch']}, iter {where['iter']}/{where['max_iter']} "
            f"({where['stage']})")


def thread_stacks():
    """The stack of every thread of this process, as text (most recent call last)."""
    names = {t.ident: t.name for t in threading.enumerate()}
    lines = []
    for ident, frame in sys._current_frames().items():
        lines.append(f"--- thread {names.get(ident, ident)} ---")
        lines.extend(line.rstrip("\n") for line in traceback.format_stack(frame))
    return "\n".join(lines)


def active_watchdog():
    return _ACTIVE


def _default_store():
    """The key-value store of the default process group (the rendezvous), or None."""
    try:
        return dist.distributed_c10d._get_default_store()
    except (AttributeError, RuntimeError, ValueError):
        return None


class Watchdog(TrainerPart):
    """stall_timeout: seconds without progress in a training stage before this process calls itself stalled (None
    or <= 0: not watched). heartbeat_timeout: seconds of silence before a peer is called lost. interval: seconds
    between beats. exit: what stops the process (os._exit: a stalled main thread cannot be interrupted)."""

    def __init__(self, stall_timeout=600, heartbeat_timeout=60, interval=1.0, clock=time.monotonic, exit=os._exit):
        self.stall_timeout = float(stall_timeout) if stall_timeout and stall_timeout > 0 else None
        self.heartbeat_timeout = float(heartbeat_timeout) if heartbeat_timeout and heartbeat_timeout > 0 else None
        self.interval = float(interval)
        self.clock = clock
        self._exit = exit
        self.where = {"epoch": 0, "max_epoch": 0, "iter": 0, "max_iter": 0, "stage": 0, "counter": 0}
        self.last_progress = clock()
        self.rank, self.world_size, self.local_size, self.run_folder = 0, 1, 1, None
        self.store = None
        self._stop = threading.Event()
        self._thread = None
        self._peer_beats = {}  # rank -> (beat count, clock time it last changed)
        self._store_failing_since = None
        self._waiting_note = None

    # -- the main thread's marks ------------------------------------------------------------------------------
    def mark(self, trainer, stage):
        """This process is at `stage` (an index of STAGES) of the trainer's current epoch and iteration."""
        where = self.where
        where["epoch"] = getattr(trainer, "epoch", -1) + 1
        where["max_epoch"] = trainer.max_epoch
        where["iter"] = getattr(trainer, "iter", -1) + 1
        where["max_iter"] = getattr(trainer, "max_iter", 0)
        where["stage"] = stage
        where["counter"] += 1
        self.last_progress = self.clock()
        if _BOARD is not None:
            board, slot = _BOARD
            base = slot * _BOARD_FIELDS
            board[base:base + _BOARD_FIELDS] = [where["epoch"], where["max_epoch"], where["iter"], where["max_iter"],
                                                stage, where["counter"]]

    def before_train(self, trainer):
        global _ACTIVE
        self.rank = trainer.rank
        self.world_size = dist.get_world_size() if trainer.is_distributed else 1
        self.run_folder = trainer.file_name
        self.local_size = _local_size()
        self.store = _default_store() if self.world_size > 1 else None
        if self.store is not None:
            self._beat()
        _ACTIVE = self
        if self.stall_timeout is None and self.store is None:
            return
        self._thread = threading.Thread(target=self._run, name="yolox-watchdog", daemon=True)
        self._thread.start()

    def before_iter(self, trainer):
        self.mark(trainer, 1)

    def data_ready(self, trainer):
        self.mark(trainer, 2)

    def after_iter(self, trainer):
        self.mark(trainer, 3)

    def epoch_trained(self, trainer):
        self.mark(trainer, 4)

    def after_epoch(self, trainer, evaluated):
        self.mark(trainer, 5)

    def after_train(self, trainer, finished):
        if finished:
            self.mark(trainer, 6)
        self.stop()  # still the active one: a failed collective is explained with where it stood

    def stop(self):
        """Stop watching and beating; the others learn (through the store) that this process's silence from now on
        is no loss: it finished, or it is stopping after a failed collective."""
        if not self._stop.is_set() and self.store is not None:
            try:
                self.store.set(f"{_STOPPED_KEY}/{self.rank}", "1")
            except Exception:  # noqa: BLE001 - the store's host is gone: nobody scans any more
                pass
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=5 * self.interval)
        self._thread = None

    # -- the thread -----------------------------------------------------------------------------------------------
    def _run(self):
        while not self._stop.wait(self.interval):
            try:
                self.check()
            except Exception as e:  # noqa: BLE001 - the watchdog must never take the run down by mistake
                logger.debug(f"watchdog check failed: {e}")

    def check(self):
        """One round: beat, stop when a peer was declared lost, find lost peers (rank 0), find a stall."""
        if self.store is not None:
            if not self._store_round():
                return
        self._check_stall()

    def identity(self, rank=None):
        rank = self.rank if rank is None else rank
        return f"rank {rank} (machine {rank // self.local_size})"

    def _beat(self):
        self.store.add(f"yolox/beat/{self.rank}", 1)
        info = dict(self.where, stage=STAGES[self.where["stage"]], host=socket.gethostname(), pid=os.getpid())
        self.store.set(f"yolox/where/{self.rank}", json.dumps(info))

    def _store_round(self):
        """False when this process is being stopped."""
        try:
            self._beat()
            if self.store.check([_LOST_KEY]):
                self._stop_for(self.store.get(_LOST_KEY).decode(), EXIT_PEER_LOST, announce=False)
                return False
            if self.rank == 0:
                self._scan_beats()
            self._store_failing_since = None
        except Exception as e:  # noqa: BLE001 - the store's host (rank 0) is gone, or the network
            now = self.clock()
            if self._store_failing_since is None:
                self._store_failing_since = now
            elif self.heartbeat_timeout is not None and now - self._store_failing_since > self.heartbeat_timeout:
                self._stop_for(f"{self.identity(0)}, which hosts the run's rendezvous store, does not answer since "
                               f"{now - self._store_failing_since:.0f} s ({type(e).__name__}: "
                               f"{str(e).splitlines()[0] if str(e) else ''})", EXIT_PEER_LOST, announce=False)
                return False
        return True

    def _peer_where(self, rank):
        key = f"yolox/where/{rank}"
        try:  # check first: get() of a key never set waits for the store's timeout
            return json.loads(self.store.get(key).decode()) if self.store.check([key]) else None
        except Exception:  # noqa: BLE001
            return None

    def _stopped(self, rank):
        """Whether process `rank` stopped beating on purpose (see stop())."""
        return bool(self.store.check([f"{_STOPPED_KEY}/{rank}"]))

    def peer_beats(self):
        """{rank: beat count} of every other process (0 for one that never beat)."""
        return {r: int(self.store.add(f"yolox/beat/{r}", 0)) for r in range(self.world_size) if r != self.rank}

    def _scan_beats(self):
        if self.heartbeat_timeout is None:
            return
        now = self.clock()
        for rank, beat in self.peer_beats().items():
            if self._stopped(rank):
                continue
            last = self._peer_beats.get(rank)
            if last is None or last[0] != beat:
                self._peer_beats[rank] = (beat, now)
            elif now - last[1] > self.heartbeat_timeout:
                self._stop_for(self.lost_line(rank, f"no heartbeat for {now - last[1]:.0f} s"), EXIT_PEER_LOST)

    def lost_line(self, rank, why):
        where = self._peer_where(rank) or {}
        host = f", host {where['host']}, pid {where['pid']}" if "host" in where else ""
        return (f"{self.identity(rank)}{host} was lost ({why}; last heard from at {describe_where(where)}); every "
                f"process of the run stops. {self._resume_hint()}")

    def _resume_hint(self):
        path = os.path.join(self.run_folder, "latest_ckpt.pth") if self.run_folder else "latest_ckpt.pth"
        return f"Resume with --resume (from {path})"

    def _check_stall(self):
        if self.stall_timeout is None or self.where["stage"] not in TRAINING_STAGES:
            return
        idle = self.clock() - self.last_progress
        if idle <= self.stall_timeout:
            self._waiting_note = None
            return
        behind = self._ranks_behind()
        if behind:  # a peer is behind this process: this one is waiting for it in a collective
            if self._waiting_note != behind:
                self._waiting_note = behind
                logger.warning(f"{self.identity()} has waited {idle:.0f} s for {', '.join(map(self.identity, behind))}"
                               ", which is behind it")
            return
        logger.error(f"stacks of the threads of {self.identity()} (pid {os.getpid()}), stalled:\n{thread_stacks()}")
        self._stop_for(f"{self.identity()}, host {socket.gethostname()}, pid {os.getpid()}, made no progress for "
                       f"{idle:.0f} s (stall_timeout {self.stall_timeout:.0f}) at {describe_where(self._where_text())}"
                       f"; the stacks of its threads are in its log. Every process of the run stops. "
                       f"{self._resume_hint()}", EXIT_STALLED)

    def _where_text(self):
        return dict(self.where, stage=STAGES[self.where["stage"]])

    def _ranks_behind(self):
        """The other ranks whose progress counter is below this one's (none in a single process)."""
        if self.store is None:
            return []
        behind = []
        for rank in range(self.world_size):
            if rank != self.rank:
                where = self._peer_where(rank)
                if where is not None and where.get("counter", 0) < self.where["counter"]:
                    behind.append(rank)
        return behind

    def _stop_for(self, line, status, announce=True):
        """Log the one line, tell the other processes (through the store) and end this process."""
        logger.error(line)
        if announce and self.store is not None:
            try:
                self.store.set(_LOST_KEY, line)
            except Exception:  # noqa: BLE001 - the others learn it from their own collectives then
                pass
        sys.stderr.flush()
        self._stop.set()
        self._exit(status)

    # -- the main thread, after a collective failed ----------------------------------------------------------
    def find_lost_peer(self, wait=None):
        """The line naming a lost process: one already announced in the store, else the peer whose heartbeat does
        not move for three intervals (None when every peer still beats)."""
        if self.store is None:
            return None
        wait = 3 * self.interval + 0.5 if wait is None else wait
        try:
            if self.store.check([_LOST_KEY]):
                return self.store.get(_LOST_KEY).decode()
            first = self.peer_beats()
            time.sleep(wait)
            if self.store.check([_LOST_KEY]):
                return self.store.get(_LOST_KEY).decode()
            second = self.peer_beats()
            # the processes that stopped on purpose (the others whose collective failed too) are not the lost one
            silent = [r for r in second if second[r] == first.get(r) and not self._stopped(r)]
        except Exception:  # noqa: BLE001 - the store is gone with the process that hosts it
            return (f"{self.identity(0)}, which hosts the run's rendezvous store, is gone; every process of the run "
                    f"stops. {self._resume_hint()}")
        if not silent:
            return None
        return self.lost_line(silent[0], "its connection closed")


def _local_size():
    from yolox.utils import get_local_size

    return get_local_size()


_COLLECTIVE_WORDS = ("gloo", "nccl", "connection", "closed by peer", "broken pipe", "timed out", "socket")


def explain_collective_failure(error):
    """The one line naming the lost or stalled process when `error` is a collective that failed because of it, in a
    process of a multi-process run; None otherwise (the error is then shown as it is)."""
    watchdog = active_watchdog()
    if watchdog is None or watchdog.store is None:
        return None
    dist_error = getattr(dist, "DistError", None)
    looks_collective = (dist_error is not None and isinstance(error, dist_error)) or (
        isinstance(error, RuntimeError) and any(w in str(error).lower() for w in _COLLECTIVE_WORDS))
    if not looks_collective:
        return None
    watchdog.stop()
    line = watchdog.find_lost_peer()
    where = describe_where(watchdog._where_text())
    if line is None:
        return (f"{watchdog.identity()} stops: a collective failed at {where} "
                f"({type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}). "
                f"{watchdog._resume_hint()}")
    return f"{watchdog.identity()} stops at {where}: {line}"
