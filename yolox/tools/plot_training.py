"""python -m yolox.tools.plot_training, or tools/plot_training.py in a clone.
Draw the training curve (losses and AP per evaluation against the iteration) of a run from its metrics.jsonl.

The flags: --help. This module is the one implementation; tools/plot_training.py only launches it.
"""
import argparse
import os

from yolox.core.trainer import CURVE_FILE, METRICS_FILE
from yolox.tools.cli import run_cli
from yolox.utils import plot_training_curve

__all__ = ["make_parser", "run_plot_training_cli", "main"]

DESCRIPTION = """\
Draw the training curve (losses and AP per evaluation against the iteration) of a run from its metrics.jsonl.

    python tools/plot_training.py YOLOX_outputs/yolox_nano_forest            # writes training_curve.png there
    python tools/plot_training.py YOLOX_outputs/yolox_nano_forest -o curve.png
"""


def make_parser():
    p = argparse.ArgumentParser(description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run", help="a run folder (output_dir/experiment-name) or its metrics.jsonl")
    p.add_argument("-o", "--output", default=None, help=f"PNG to write (default: {CURVE_FILE} in the run)")
    return p


def run_plot_training_cli(argv=None):
    """Write the curve's PNG and print its path. User errors are raised (main() turns them into one log line and
    exit status 2)."""
    args = make_parser().parse_args(argv)
    metrics = args.run if args.run.endswith(".jsonl") else os.path.join(args.run, METRICS_FILE)
    if not os.path.isfile(metrics):
        raise FileNotFoundError(f"{metrics} not found: give the folder of a run made by tools/train.py")
    out = args.output or os.path.join(os.path.dirname(os.path.abspath(metrics)), CURVE_FILE)
    print(plot_training_curve(metrics, out, title=os.path.basename(os.path.dirname(os.path.abspath(metrics)))))


def main(argv=None):
    """Run the command line with argv (default sys.argv[1:]); exits 2 on a user error, 1 on a failure."""
    return run_cli(run_plot_training_cli, argv)


if __name__ == "__main__":
    main()
