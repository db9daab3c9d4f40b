#!/usr/bin/env python
"""Benchmark the whole training step (forward, SimOTA, loss, backward, SGD, EMA) on one real batch, per SimOTA mode,
beside the official release's step; then the per-stage profile of one configuration.

    python benchmarks/bench_train.py --official /path/to/YOLOX       # yolox-nano 416 and yolox-s 640, batch 8
    python benchmarks/bench_train.py --models yolox-nano:416 --steps 5 --json out.json

--official takes the folder of an unpacked official release (e.g. `pip download yolox==0.3.0 --no-deps
--no-binary :all:` and untar it), optionally followed by ':' and a folder holding its extra dependency thop.
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the repository root: run anywhere

from benchmarks.arguments import choice_list, model_sizes, write_json  # noqa: E402
from benchmarks.train_step import (  # noqa: E402
    DEFAULT_MODELS, StepBenchConfig, format_profile, format_step_table, run_step_benchmark,
)
from yolox.models.simota import SIMOTA_MODES  # noqa: E402
from yolox.tools.cli import run_cli  # noqa: E402

__all__ = ["parse_args", "run", "main"]


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


def run(argv=None):
    """The benchmark with the flags argv (default sys.argv[1:]); returns (rows, per-stage profile or None)."""
    args = parse_args(argv)
    modes = choice_list(args.modes, SIMOTA_MODES, "--modes")
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
    write_json(args.json, {"rows": rows, "profile": per_stage})
    return rows, per_stage


def main(argv=None):
    """Run the command line with argv (default sys.argv[1:]); exits 2 on a user error, 1 on a failure."""
    return run_cli(run, argv)


if __name__ == "__main__":
    main()
