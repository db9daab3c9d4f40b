#!/usr/bin/env python
"""The chaos benchmark: a two-process run on the forest tiles, stopped by faults at random moments (SIGKILL to a
rank, SIGTERM to the launcher, a failed checkpoint save) and resumed after each, against the run left alone.

    python benchmarks/bench_chaos.py --faults 20 --json chaos.json
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the repository root: run anywhere

from benchmarks import chaos  # noqa: E402
from benchmarks.arguments import choice_list, print_and_save  # noqa: E402
from benchmarks.chaos import FAULT_KINDS, ChaosConfig, format_chaos_table, run_chaos  # noqa: E402
from yolox.tools.cli import run_cli  # noqa: E402

__all__ = ["make_parser", "run", "main"]


def make_parser():
    p = argparse.ArgumentParser("YOLOX chaos benchmark", description=chaos.__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--faults", type=int, default=20, help="faults to inject (default 20)")
    p.add_argument("--kinds", default=",".join(FAULT_KINDS), help=f"from {', '.join(FAULT_KINDS)}")
    p.add_argument("--epochs", type=int, default=0, help="epochs of the run (default: 4 x faults + 4)")
    p.add_argument("--seed", type=int, default=0, help="seed of the faults' kinds and moments")
    p.add_argument("--workdir", default="/tmp/yolox_chaos", help="where both runs go (emptied first)")
    p.add_argument("--json", default=None, help="also write the result to this file")
    return p


def run(argv=None):
    args = make_parser().parse_args(argv)
    kinds = choice_list(args.kinds, FAULT_KINDS, "--kinds")
    if args.faults < 1:
        raise ValueError(f"--faults {args.faults}: at least 1")
    result = run_chaos(ChaosConfig(faults=args.faults, kinds=kinds, epochs=args.epochs, seed=args.seed,
                                   workdir=args.workdir))
    return print_and_save(format_chaos_table(result), result, args.json)


def main(argv=None):
    """Run the command line with argv (default sys.argv[1:]); exits 2 on a user error, 1 on a failure."""
    return run_cli(run, argv)


if __name__ == "__main__":
    main()
