#!/usr/bin/env python
"""Deployment on the CPU in one table: AP50:95 and AP50 on an Exp's val set beside the latency per image at batch 1
and 8, per backend and precision (PyTorch, ONNX Runtime float32 / INT8, OpenVINO float32 / bfloat16 / INT8), and the
ratio to the official release's PyTorch path.

    python benchmarks/bench_deploy.py -c YOLOX_outputs/yolox_nano_forest/best_ckpt.pth --official /tmp/official/yolox-0.3.0:/tmp/official_deps
    python benchmarks/bench_deploy.py --arch yolox-s --size 640 --official /tmp/official/yolox-0.3.0:/tmp/official_deps

--official takes the folder of an unpacked official release (e.g. `pip download yolox==0.3.0 --no-deps
--no-binary :all:` and untar it), optionally followed by ':' and a folder holding its extra dependency thop.
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the repository root: run anywhere

from benchmarks import deploy_table  # noqa: E402
from benchmarks.arguments import choice_list, int_list, print_and_save  # noqa: E402
from benchmarks.deploy_table import PATHS, DeployBenchConfig, format_deploy_table, run_deploy_benchmark  # noqa: E402
from yolox.tools.cli import run_cli  # noqa: E402

__all__ = ["make_parser", "run", "main"]


def make_parser():
    p = argparse.ArgumentParser("YOLOX deployment benchmark (AP and latency per backend)", description=deploy_table.__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-f", "--exp_file", default=None, help="the Exp whose val set is scored (default: the forest Exp)")
    p.add_argument("-c", "--ckpt", default=None, help="the checkpoint (default: weights fitted to the forest val tiles)")
    p.add_argument("--arch", default="yolox-nano", help="without -c: the architecture to fit (yolox-nano ... yolox-x)")
    p.add_argument("--size", type=int, default=None, help="square test size (default: the Exp's test_size)")
    p.add_argument("--batches", default="1,8", help="batch sizes of the latency, comma-separated")
    p.add_argument("--paths", default=",".join(PATHS), help=f"from {', '.join(PATHS)}")
    p.add_argument("--repeats", type=int, default=10, help="timed calls per batch size and path")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--calib", type=int, default=300, help="calibration images of the INT8 paths (the val set's)")
    p.add_argument("--official", default=None, help="official release folder[:folder of its dependencies]")
    p.add_argument("--threads", type=int, default=0, help="threads of every runtime (0: their defaults)")
    p.add_argument("--json", default=None, help="also write the result to this file")
    p.add_argument("opts", nargs=argparse.REMAINDER, help="Exp options as `key value` pairs")
    return p


def run(argv=None):
    args = make_parser().parse_args(argv)
    paths = choice_list(args.paths, PATHS, "--paths")
    batches = int_list(args.batches, "--batches")
    config = DeployBenchConfig(exp_file=args.exp_file, ckpt=args.ckpt, arch=args.arch, size=args.size,
                               batches=batches, paths=paths, repeats=args.repeats, warmup=args.warmup,
                               calib=args.calib, official=args.official, threads=args.threads, opts=args.opts or ())
    result = run_deploy_benchmark(config)
    return print_and_save(format_deploy_table(result), result, args.json)


def main(argv=None):
    """Run the command line with argv (default sys.argv[1:]); exits 2 on a user error, 1 on a failure."""
    return run_cli(run, argv)


if __name__ == "__main__":
    main()
