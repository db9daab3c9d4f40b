"""Shared pieces of the training tests: small, fast runs of the bundled forest Exp, in this process or in others."""
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
FOREST_EXP = str(ROOT / "exps" / "example" / "forest" / "yolox_nano_forest.py")
TRAIN_PY = str(ROOT / "tools" / "train.py")
EVAL_PY = str(ROOT / "tools" / "eval.py")


# The lr of the runs of a few epochs below (0.01 per batch of 4). They check mechanics (checkpoints, best_ckpt.pth,
# loggers, resumes) and were calibrated at this lr: at the forest recipe's present one (0.02 per batch of 4), 1-2
# epochs at 128 px leave AP at 0, and a run whose AP never rises above 0 writes no best_ckpt.pth (as the official).
TINY_LR_PER_IMG = 0.01 / 4


def tiny_opts(output_dir, **overrides):
    """`key value` Exp options for a run of a few seconds: 128 px, short schedule, an evaluation every epoch."""
    opts = {
        "basic_lr_per_img": TINY_LR_PER_IMG,
        "output_dir": str(output_dir),
        "input_size": "128,128",
        "test_size": "128,128",
        "random_size": "3,5",
        "max_epoch": 2,
        "warmup_epochs": 1,
        "no_aug_epochs": 1,
        "eval_interval": 1,
        "print_interval": 1,
        "data_num_workers": 0,
        "test_conf": 1e-5,
        "seed": 3,
        "save_history_ckpt": True,  # the forest Exp keeps no epoch_N_ckpt.pth; the trainer's tests look at them
        # the data check and the run report cost seconds per run: their own tests turn them on
        "check_data": False,
        "run_report": False,
    }
    opts.update(overrides)
    return [str(x) for kv in opts.items() for x in kv]


def train_argv(output_dir, *flags, batch=8, **overrides):
    return ["-f", FOREST_EXP, "-d", "1", "-b", str(batch), *flags, *tiny_opts(output_dir, **overrides)]


# The one-epoch run that several modules only read (the forest_one_epoch fixture of conftest.py, run once a session):
# 128 px, batch 8, 7 iterations, one evaluation at its end.
ONE_EPOCH = dict(max_epoch=1, no_aug_epochs=0)


def run_dir(output_dir, name="yolox_nano_forest"):
    return Path(output_dir) / name


def read_metrics(folder):
    path = Path(folder) / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def subprocess_env(threads=2):
    env = dict(os.environ)
    env["OMP_NUM_THREADS"] = str(threads)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    return env


def run_tool(script, argv, timeout=600, **kwargs):
    """Run tools/<script> in a fresh interpreter; returns the CompletedProcess (stdout and stderr as text)."""
    return subprocess.run([sys.executable, script, *argv], capture_output=True, text=True, timeout=timeout,
                          env=kwargs.pop("env", subprocess_env()), cwd=str(ROOT), **kwargs)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def load(path):
    return torch.load(path, map_location="cpu", weights_only=True)


def assert_state_dicts_close(a, b, atol=1e-6):
    assert a.keys() == b.keys()
    for k in a:
        if a[k].is_floating_point():
            assert torch.allclose(a[k], b[k], atol=atol, rtol=1e-5), k
        else:
            assert torch.equal(a[k], b[k]), k


def record_first_batches(exp, args, out_dir, batches=3):
    """Train with a Trainer that writes, per rank, a digest of its first batches (for the distributed tests)."""
    import hashlib

    import torch.distributed as dist

    from yolox.core import Trainer

    class RecordingTrainer(Trainer):
        digests = []

        def train_one_iter(self):
            inps, targets = self.prefetcher.next_input, self.prefetcher.next_target
            if len(self.digests) < batches:
                self.digests.append(hashlib.sha1(inps.numpy().tobytes() + targets.numpy().tobytes()).hexdigest())
            super().train_one_iter()

    RecordingTrainer(exp, args).train()
    rank = dist.get_rank() if dist.is_initialized() else 0
    (Path(out_dir) / f"rank{rank}.json").write_text(json.dumps(RecordingTrainer.digests))
