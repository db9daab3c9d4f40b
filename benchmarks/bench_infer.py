#!/usr/bin/env python
"""CPU inference speed: ms per image of the forward pass and the postprocessing for PyTorch eager, PyTorch fused
(channels_last), ONNX Runtime and OpenVINO, batch 1 and 8, beside the official release's PyTorch path.

    python benchmarks/bench_infer.py --official /tmp/official/yolox-0.3.0:/tmp/official_deps --json infer.json
    python benchmarks/bench_infer.py --models yolox-nano:416 --batches 1 --repeats 5

--official takes the folder of an unpacked official release (e.g. `pip download yolox==0.3.0 --no-deps
--no-binary :all:` and untar it), optionally followed by ':' and a folder holding its extra dependency thop.
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the repository root: run anywhere

from benchmarks import infer  # noqa: E402
from benchmarks.arguments import choice_list, int_list, model_sizes, write_json  # noqa: E402
from benchmarks.infer import (  # noqa: E402
    DEFAULT_MODELS, IMPLS, InferBenchConfig, format_infer_table, run_infer_benchmark,
)
from yolox.tools.cli import run_cli  # noqa: E402

__all__ = ["make_parser", "run", "main"]


def make_parser():
    # --help explains the measurement: the logic module's description
    p = argparse.ArgumentParser("YOLOX CPU inference benchmark", description=infer.__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", type=model_sizes, default=DEFAULT_MODELS,
                   help="comma-separated name:size (default yolox-nano:416,yolox-s:640)")
    p.add_argument("--batches", default="1,8", help="batch sizes, comma-separated")
    p.add_argument("--impls", default=",".join(IMPLS), help=f"our implementations, from {', '.join(IMPLS)}")
    p.add_argument("--repeats", type=int, default=10, help="timed calls per batch size and implementation")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--conf", type=float, default=0.001, help="score threshold of the postprocessing")
    p.add_argument("--nms", type=float, default=0.65)
    p.add_argument("--official", default=None, help="official release folder[:folder of its dependencies]")
    p.add_argument("--threads", type=int, default=0, help="threads of every runtime (0: their defaults)")
    p.add_argument("--json", default=None, help="also write the rows to this file")
    return p


def run(argv=None):
    """The benchmark with the flags argv (default sys.argv[1:]); returns the table's rows."""
    args = make_parser().parse_args(argv)
    impls = choice_list(args.impls, IMPLS, "--impls")
    batches = int_list(args.batches, "--batches", high=8, why="the bundled val tiles make 8 images")
    config = InferBenchConfig(models=args.models, batches=batches, impls=impls, repeats=args.repeats,
                              warmup=args.warmup, conf=args.conf, nms=args.nms, official=args.official,
                              threads=args.threads)
    rows = run_infer_benchmark(config)
    print(format_infer_table(rows))
    write_json(args.json, {"config": {k: getattr(config, k) for k in config.__dataclass_fields__}, "rows": rows})
    return rows


def main(argv=None):
    """Run the command line with argv (default sys.argv[1:]); exits 2 on a user error, 1 on a failure."""
    return run_cli(run, argv)


if __name__ == "__main__":
    main()
