"""The chaos benchmark: a short two-process training run on the bundled forest tiles (gloo, CPU), stopped by faults
at random moments and resumed after each one with --resume, against the same run left alone.

Faults: `kill` (SIGKILL to a random rank, as the out-of-memory killer does), `term` (SIGTERM to the launcher, as a
cluster's preemption does) and `save_error` (YOLOX_FAULT=save_error: a checkpoint save fails with ENOSPC). A fault
is survived when the run stopped with a non-zero status, its latest_ckpt.pth loads, and the next --resume goes on
from it. At the end the weights (EMA and trained) are compared with the uninterrupted run's.
"""
import os
import random
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch

__all__ = ["ChaosConfig", "run_chaos", "format_chaos_table", "FAULT_KINDS"]

ROOT = Path(__file__).resolve().parent.parent
FOREST_EXP = ROOT / "exps" / "example" / "forest" / "yolox_nano_forest.py"
TRAIN_PY = ROOT / "tools" / "train.py"
FAULT_KINDS = ("kill", "term", "save_error")
EPOCHS_PER_FAULT = 4


@dataclass
class ChaosConfig:
    faults: int = 20
    kinds: tuple = FAULT_KINDS
    epochs: int = 0  # 0: enough for the faults (EPOCHS_PER_FAULT per fault: a fault lands up to 2 s after a new
    # checkpoint, and a fast CPU trains several of these short epochs in that time)
    size: int = 128
    batch: int = 8
    seed: int = 0
    workdir: str = "/tmp/yolox_chaos"
    timeout_s: float = 600  # of one segment of the run


def _opts(config, out, epochs):
    opts = {"output_dir": out, "input_size": f"{config.size},{config.size}", "test_size": f"{config.size},{config.size}",
            "random_size": "3,5", "max_epoch": epochs, "warmup_epochs": 1, "no_aug_epochs": 1,
            "eval_interval": epochs, "print_interval": 1, "data_num_workers": 0, "test_conf": 1e-5, "seed": 3,
            "basic_lr_per_img": 0.01 / 4, "check_data": False, "run_report": False, "save_history_ckpt": False}
    return [str(x) for kv in opts.items() for x in kv]


def _start(config, out, epochs, resume, env_extra=None):
    argv = [sys.executable, str(TRAIN_PY), "-f", str(FOREST_EXP), "-d", "2", "-b", str(config.batch)]
    if resume:
        argv.append("--resume")
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1", **(env_extra or {}))
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    env.pop("YOLOX_FAULT", None) if not env_extra else None
    return subprocess.Popen(argv + _opts(config, out, epochs), cwd=str(ROOT), env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


def _latest(folder):
    return folder / "yolox_nano_forest" / "latest_ckpt.pth"


def _load(path):
    return torch.load(path, map_location="cpu", weights_only=True)


def _stamp(path):
    try:
        return path.stat().st_mtime_ns
    except FileNotFoundError:
        return None


def _ranks(launcher):
    out = subprocess.run(["pgrep", "-P", str(launcher.pid), "-f", "multiprocessing.spawn"], capture_output=True,
                         text=True).stdout.split()
    return [int(p) for p in out]


def _wait_new_checkpoint(proc, path, since, timeout_s):
    """True once `path` was replaced after `since` (its mtime), False if the run ended first."""
    deadline = time.time() + timeout_s
    while time.time() < deadline and proc.poll() is None:
        stamp = _stamp(path)
        if stamp is not None and stamp != since:
            return True
        time.sleep(0.05)
    return False


def run_chaos(config: ChaosConfig, log=print):
    """{"rows": one per fault, "faults", "survived", "max_abs_diff", ...}."""
    rng = random.Random(config.seed)
    work = Path(config.workdir)
    if work.exists():
        import shutil

        shutil.rmtree(work)
    epochs = config.epochs or EPOCHS_PER_FAULT * config.faults + 4
    ref_dir, chaos_dir = work / "reference", work / "chaos"

    log(f"reference: {epochs} epochs, 2 processes, uninterrupted")
    start = time.time()
    ref = _start(config, str(ref_dir), epochs, resume=False)
    ref_out = ref.communicate(timeout=config.timeout_s * 4)[0]
    if ref.returncode != 0:
        raise RuntimeError(f"the reference run failed:\n{ref_out[-3000:]}")
    ref_seconds = time.time() - start

    rows, resume, latest = [], False, _latest(chaos_dir)
    while len(rows) < config.faults:
        kind = rng.choice(config.kinds)
        since = _stamp(latest)
        before = _load(latest)["iteration"] if since is not None else 0
        env = None
        if kind == "save_error":
            iters = _load(latest)["iters_per_epoch"] if since is not None else 6
            env = {"YOLOX_FAULT": f"save_error:rank=0:iter={before + rng.randint(1, 2 * iters)}"}
        proc = _start(config, str(chaos_dir), epochs, resume, env)
        fault_time = None
        if kind in ("kill", "term"):
            if _wait_new_checkpoint(proc, latest, since, config.timeout_s):
                time.sleep(rng.uniform(0.0, 2.0))
                fault_time = time.time()
                if kind == "kill":
                    ranks = _ranks(proc)
                    if ranks:
                        os.kill(rng.choice(ranks), signal.SIGKILL)
                elif proc.poll() is None:
                    proc.send_signal(signal.SIGTERM)
        try:
            out = proc.communicate(timeout=config.timeout_s)[0]
        except subprocess.TimeoutExpired:
            proc.kill()
            out = proc.communicate()[0]
            raise RuntimeError(f"fault {len(rows) + 1} ({kind}): the run did not stop within {config.timeout_s} s")
        stopped_s = None if fault_time is None else time.time() - fault_time
        (work / f"fault_{len(rows) + 1:02d}_{kind}.log").write_text(out)  # what the run printed, to look at
        if proc.returncode == 0:  # the run ended before the fault: a longer run is needed
            raise RuntimeError(f"the run finished before fault {len(rows) + 1}; give more --epochs")
        # loads: the checkpoint on disk is whole (none yet when the run's first save was the one that failed)
        after = _load(latest)["iteration"] if latest.exists() else 0
        survived = after >= before and "Traceback" not in out
        rows.append({"fault": len(rows) + 1, "kind": kind, "exit": proc.returncode, "stopped_s": stopped_s,
                     "iteration_before": before, "iteration_after": after, "survived": survived,
                     "line": _fault_line(out)})
        log(f"fault {len(rows)}/{config.faults}: {kind}, exit {proc.returncode}, latest at iteration {after}"
            f"{'' if stopped_s is None else f', stopped in {stopped_s:.1f} s'}")
        resume = True

    final = _start(config, str(chaos_dir), epochs, resume=True)
    final_out = final.communicate(timeout=config.timeout_s * 4)[0]
    if final.returncode != 0:
        raise RuntimeError(f"the last resume failed:\n{final_out[-3000:]}")
    a, b = _load(_latest(ref_dir)), _load(latest)
    diff = max(float((a[key][k].float() - b[key][k].float()).abs().max()) if a[key][k].numel() else 0.0
               for key in ("model", "raw_model") for k in a[key])
    return {"rows": rows, "faults": len(rows), "survived": sum(r["survived"] for r in rows),
            "max_abs_diff": diff, "same_iteration": a["iteration"] == b["iteration"], "epochs": epochs,
            "reference_s": ref_seconds}


def _fault_line(out):
    """The run's first error line (else its last warning), without the log's time and place prefix."""
    errors = [line for line in out.splitlines() if "| ERROR" in line]
    warnings = [line for line in out.splitlines() if "| WARNING" in line]
    line = errors[0] if errors else warnings[-1] if warnings else ""
    return line.split(" - ", 1)[-1][:160]


def format_chaos_table(result):
    from tabulate import tabulate

    table = [(r["fault"], r["kind"], r["exit"], "-" if r["stopped_s"] is None else f"{r['stopped_s']:.1f}",
              f"{r['iteration_before']} -> {r['iteration_after']}", "yes" if r["survived"] else "NO", r["line"])
             for r in result["rows"]]
    rows = tabulate(table, headers=["fault", "kind", "exit", "stopped in s", "latest iteration", "survived",
                                    "the run's last line"], tablefmt="github")
    summary = tabulate([(result["faults"], result["survived"], f"{result['max_abs_diff']:.3g}",
                         "yes" if result["same_iteration"] else "NO")],
                       headers=["faults tried", "survived", "max |weight difference| vs uninterrupted",
                                "same final iteration"], tablefmt="github")
    return rows + "\n\n" + summary
