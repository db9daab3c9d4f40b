"""Timing of the whole training step (forward, assignment, loss, backward, SGD, EMA) on one real batch, for each
SimOTA mode, beside the official release's step on the same batch (used by benchmarks/bench_train.py).

The batch comes from the bundled photographs (datasets/forest) through the Exp's own Mosaic pipeline at the model's
input size, so the assignment sees real boxes; it is reused for every step, so data loading is not timed. The
official release is timed in a subprocess that imports it from a source folder given by the caller (nothing of it is
part of this project); both sides build the published COCO model (80 classes) and run the same sequence of calls.
"""
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from typing import Optional, Sequence, Tuple

import torch

from yolox.core.stage_profile import StageClock, profile_table, stage_hooks
from yolox.core.step import TrainStep
from yolox.models.simota import SIMOTA_MODES
from yolox.utils import ModelEMA
from benchmarks.official_release import check_official_package, official_release_env

__all__ = ["StepBenchConfig", "real_batch", "time_our_step", "time_official_step", "profile_our_step",
           "run_step_benchmark", "format_step_table", "DEFAULT_MODELS"]

DEFAULT_MODELS = (("yolox-nano", 416), ("yolox-s", 640))
LR = 0.01 / 64  # per image; a fixed lr for both sides (the official optimizer starts at warm-up lr 0)


@dataclass
class StepBenchConfig:
    models: Sequence[Tuple[str, int]] = DEFAULT_MODELS
    batch_size: int = 8
    modes: Sequence[str] = SIMOTA_MODES
    steps: int = 10  # timed steps per round
    warmup: int = 3
    rounds: int = 2  # ours and the official alternate, round after round, to spread the machine's noise
    official: Optional[str] = None  # source folder of the official release (the folder holding its yolox/)
    profile: Tuple[str, int, str] = ("yolox-nano", 416, "batched")
    seed: int = 0
    threads: int = 0  # 0: torch's default
    extra: dict = field(default_factory=dict)


def real_batch(exp_name, size, batch_size, seed=0):
    """(imgs (B, 3, size, size) float32, targets (B, 120, 5)) from datasets/forest through the Exp's Mosaic."""
    from yolox.data import COCODataset, InfiniteSampler, MosaicDetection, TrainTransform, YoloBatchSampler
    from yolox.data import get_yolox_datadir
    from yolox.exp import get_exp

    exp = get_exp(None, exp_name)
    data_dir = os.path.join(get_yolox_datadir(), "forest")
    dataset = COCODataset(data_dir, "train.json", "train", img_size=(size, size))
    mosaic = MosaicDetection(dataset, (size, size), preproc=TrainTransform(max_labels=120), degrees=exp.degrees,
                             translate=exp.translate, mosaic_scale=exp.mosaic_scale, mixup_scale=exp.mixup_scale,
                             shear=exp.shear, enable_mixup=exp.enable_mixup, mosaic_prob=1.0,
                             mixup_prob=exp.mixup_prob)
    batch = next(iter(YoloBatchSampler(InfiniteSampler(len(dataset), seed=seed), batch_size, False)))
    samples = [mosaic[item] for item in batch]
    imgs = torch.from_numpy(__import__("numpy").stack([s[0] for s in samples]))
    targets = torch.from_numpy(__import__("numpy").stack([s[1] for s in samples]))
    return imgs, targets


def _our_step(exp_name, mode, batch_size, clock=None):
    from yolox.exp import get_exp

    exp = get_exp(None, exp_name)
    exp.simota_mode = mode
    model = exp.get_model().train()
    optimizer = exp.get_optimizer(batch_size)
    for group in optimizer.param_groups:
        group["lr"] = LR * batch_size
    return TrainStep(model, optimizer, None, ModelEMA(model, 0.9998), "cpu", clock=clock)


def _timed(step, imgs, targets, steps, warmup):
    for _ in range(warmup):
        step(imgs, targets)
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        step(imgs, targets)
        times.append(1000.0 * (time.perf_counter() - start))
    return times


def time_our_step(exp_name, mode, imgs, targets, steps=10, warmup=3):
    """ms of each of `steps` training steps of this project's model (after `warmup` untimed ones)."""
    return _timed(_our_step(exp_name, mode, imgs.shape[0]), imgs, targets, steps, warmup)


# Run in a subprocess whose sys.path starts with the official release: it uses the official package's own API
# (get_exp, get_optimizer, ModelEMA) and times the calls its Trainer makes in one iteration.
_OFFICIAL_SCRIPT = r"""
import json, sys, time
import torch
exp_name, batch_file, steps, warmup, lr, threads = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), \
    float(sys.argv[5]), int(sys.argv[6])
if threads > 0:
    torch.set_num_threads(threads)
import yolox
from yolox.exp import get_exp
from yolox.utils import ModelEMA
imgs, targets = torch.load(batch_file)
exp = get_exp(None, exp_name)
model = exp.get_model().train()
optimizer = exp.get_optimizer(imgs.shape[0])
for g in optimizer.param_groups:
    g["lr"] = lr * imgs.shape[0]
ema = ModelEMA(model, 0.9998)
def step():
    outputs = model(imgs, targets)
    loss = outputs["total_loss"]
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    ema.update(model)
for _ in range(warmup):
    step()
times = []
for _ in range(steps):
    t = time.perf_counter()
    step()
    times.append(1000.0 * (time.perf_counter() - t))
print(json.dumps({"package": yolox.__file__, "times": times}))
"""


def time_official_step(official, exp_name, imgs, targets, steps=10, warmup=3, threads=0):
    """ms of each of `steps` steps of the official release (a subprocess).

    official: the release's source folder, optionally followed (os.pathsep-separated) by folders holding its extra
    dependencies (thop), e.g. "/src/YOLOX:/src/official_deps".
    """
    official_dir, env = official_release_env(official)
    with tempfile.TemporaryDirectory() as tmp:
        batch_file = os.path.join(tmp, "batch.pt")
        torch.save((imgs, targets), batch_file)
        proc = subprocess.run(
            [sys.executable, "-c", _OFFICIAL_SCRIPT, exp_name, batch_file, str(steps), str(warmup), str(LR),
             str(threads)],
            cwd=tmp, env=env, capture_output=True, text=True,
        )
    if proc.returncode != 0:
        raise RuntimeError(f"the official step failed in {official_dir}:\n{proc.stderr[-3000:]}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    check_official_package(result["package"], official_dir)
    return result["times"]


def profile_our_step(exp_name, mode, imgs, targets, steps=10, warmup=3):
    """Per-stage ms of the step (data excluded: the batch is reused), as tools/train.py --profile prints it."""
    clock = StageClock("cpu")
    step = _our_step(exp_name, mode, imgs.shape[0], clock=clock)
    with stage_hooks(step.model, clock):
        for i in range(warmup + steps):
            clock.recording = i >= warmup
            clock.start()
            clock.mark("data wait")
            step(imgs, targets)
            clock.end_iteration()
    return clock.per_iteration_ms()


def run_step_benchmark(config: StepBenchConfig, log=print):
    """Rows {model, size, batch, impl, median_ms, times_ms, speedup} and the profile of config.profile."""
    if config.threads > 0:
        torch.set_num_threads(config.threads)
    rows = []
    for exp_name, size in config.models:
        imgs, targets = real_batch(exp_name, size, config.batch_size, config.seed)
        gts = int((targets.sum(-1) > 0).sum())
        times = {m: [] for m in config.modes}
        official = []
        for r in range(config.rounds):
            for mode in config.modes:
                times[mode] += time_our_step(exp_name, mode, imgs, targets, config.steps, config.warmup)
                log(f"{exp_name} {size} {mode} round {r + 1}: median {statistics.median(times[mode]):.1f} ms")
            if config.official:
                official += time_official_step(config.official, exp_name, imgs, targets, config.steps,
                                               config.warmup, config.threads)
                log(f"{exp_name} {size} official round {r + 1}: median {statistics.median(official):.1f} ms")
        base = statistics.median(official) if official else None
        entries = ([("official", official)] if official else []) + [(m, times[m]) for m in config.modes]
        for impl, t in entries:
            med = statistics.median(t)
            rows.append({"model": exp_name, "size": size, "batch": config.batch_size, "gts": gts, "impl": impl,
                         "median_ms": med, "times_ms": t, "speedup": (base / med) if base else None})
    profile = None
    if config.profile:
        exp_name, size, mode = config.profile
        imgs, targets = real_batch(exp_name, size, config.batch_size, config.seed)
        profile = profile_our_step(exp_name, mode, imgs, targets, config.steps, config.warmup)
    return rows, profile


def format_step_table(rows):
    from tabulate import tabulate

    table = [(r["model"], f"{r['size']}x{r['size']}", r["batch"], r["gts"], r["impl"], f"{r['median_ms']:.0f}",
              f"{min(r['times_ms']):.0f}-{max(r['times_ms']):.0f}",
              f"{r['speedup']:.2f}x" if r["speedup"] else "-") for r in rows]
    return tabulate(table, headers=["model", "input", "batch", "gts", "step", "median ms", "range ms",
                                    "vs official"], tablefmt="github")


def format_profile(per_stage_ms, config: StepBenchConfig):
    exp_name, size, mode = config.profile
    return profile_table(per_stage_ms, f"profile of one step: {exp_name} {size}x{size}, batch {config.batch_size}, "
                                       f"simota_mode {mode}, CPU, {torch.get_num_threads()} threads (batch reused: "
                                       "no data wait)")
