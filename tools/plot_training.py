#!/usr/bin/env python
"""Draw the training curve (losses and AP per evaluation against the iteration) of a run from its metrics.jsonl.

    python tools/plot_training.py YOLOX_outputs/yolox_nano_forest            # writes training_curve.png there
    python tools/plot_training.py YOLOX_outputs/yolox_nano_forest -o curve.png
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # run from a checkout too

from yolox.apps.cli import run_cli  # noqa: E402
from yolox.core.trainer import CURVE_FILE, METRICS_FILE  # noqa: E402
from yolox.utils import plot_training_curve  # noqa: E402


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run", help="a run folder (output_dir/experiment-name) or its metrics.jsonl")
    p.add_argument("-o", "--output", default=None, help=f"PNG to write (default: {CURVE_FILE} in the run)")
    args = p.parse_args(argv)
    metrics = args.run if args.run.endswith(".jsonl") else os.path.join(args.run, METRICS_FILE)
    if not os.path.isfile(metrics):
        raise FileNotFoundError(f"{metrics} not found: give the folder of a run made by tools/train.py")
    out = args.output or os.path.join(os.path.dirname(os.path.abspath(metrics)), CURVE_FILE)
    print(plot_training_curve(metrics, out, title=os.path.basename(os.path.dirname(os.path.abspath(metrics)))))


if __name__ == "__main__":
    run_cli(main)
