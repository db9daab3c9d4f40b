#!/usr/bin/env python
"""Benchmark the whole training step (forward, SimOTA, loss, backward, SGD, EMA) on one real batch, per SimOTA mode,
beside the official release's step; then the per-stage profile of one configuration.

    python tools/bench_train.py --official /path/to/YOLOX            # yolox-nano 416 and yolox-s 640, batch 8
    python tools/bench_train.py --models yolox-nano:416 --steps 5 --json out.json

--official takes the folder of an unpacked official release (e.g. `pip download yolox==0.3.0 --no-deps
--no-binary :all:` and untar it), optionally followed by ':' and a folder holding its extra dependency thop.
"""
import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # run from a checkout too

from yolox.apps.cli import model_sizes, run_cli  # noqa: E402
from yolox.core.train_bench import (  # noqa: E402
    DEFAULT_MODELS, StepBenchConfig, format_profile, format_step_table, run_step_benchmark,
)
from yolox.models.simota import SIMOTA_MODES  # noqa: E402


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", type=model_sizes, default=DEFAULT_MODELS,
                   help="comma-separated name:size (default yolox-nano:416,yolox-s:640)")
    p.add_argument("--modes", default=",".join(SIMOTA_MODES), help="SimOTA modes, comma-separated")
    p.add_argument("-b", "--batch-size", type=int, default=8)
    p.add_argument("--steps", type=int, default=10, help="timed steps per round")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--rounds", type=int, default=2, help="rounds alternating ours and the official")
    p.add_argument("--official", default=None, help="official release folder[:folder of its dependencies]")
    p.add_argument("--profile", default="yolox-nano:416:batched", help="name:size:mode to profile ('' for none)")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument("--json", default=None, help="also write the rows and the profile to this file")
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    modes = tuple(m for m in args.modes.split(",") if m)
    bad = [m for m in modes if m not in SIMOTA_MODES]
    if bad:
        raise ValueError(f"--modes {bad}: choose from {', '.join(SIMOTA_MODES)}")
    profile = None
    if args.profile:
        name, size, mode = args.profile.split(":")
        profile = (name, int(size), mode)
    config = StepBenchConfig(models=args.models, batch_size=args.batch_size, modes=modes, steps=args.steps,
                             warmup=args.warmup, rounds=args.rounds, official=args.official, profile=profile,
                             threads=args.threads)
    rows, per_stage = run_step_benchmark(config)
    print(format_step_table(rows))
    if per_stage is not None:
        print()
        print(format_profile(per_stage, config))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"rows": rows, "profile": per_stage}, f, indent=1)


if __name__ == "__main__":
    run_cli(main)
