"""python -m yolox.tools.model_info, or tools/model_info.py in a clone.
Print params, GFLOPs, output shape and forward time of the published YOLOX models (a real forward pass each).

The flags: --help. This module is the one implementation; tools/model_info.py only launches it.
"""
import argparse
import json
import sys

from loguru import logger

__all__ = ["make_parser", "main"]


def make_parser():
    from yolox.exp.build import EXP_NAMES

    parser = argparse.ArgumentParser("YOLOX model info")
    parser.add_argument(
        "-n",
        "--name",
        nargs="+",
        default=None,
        metavar="NAME",
        help=f"models to describe (default: all): {', '.join(EXP_NAMES)}",
    )
    parser.add_argument("--runs", type=int, default=1, help="timed forward passes per model (mean is reported)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed forward passes before timing")
    parser.add_argument("--device", default="cpu", help="cpu or cuda[:N]")
    parser.add_argument("--json", action="store_true", help="print the rows as JSON instead of a table")
    return parser


def main(argv=None):
    """Print the table (or JSON) for argv (default sys.argv[1:]); returns 0. An unknown -n exits 2 with argparse's
    usage message."""
    args = make_parser().parse_args(argv)
    from yolox.exp.build import canonical_exp_name
    from yolox.exp.model_info import describe_models, format_model_table

    try:
        names = [canonical_exp_name(n) for n in args.name] if args.name else None
    except ValueError as e:
        make_parser().error(str(e))
    rows = describe_models(
        names,
        runs=args.runs,
        warmup=args.warmup,
        device=args.device,
        progress=lambda name: logger.info(f"building and running {name}"),
    )
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        print(format_model_table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
