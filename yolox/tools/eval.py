"""python -m yolox.tools.eval, or tools/eval.py in a clone.
COCO (or VOC) AP of a checkpoint on the Exp's validation set, or --speed.

The flags: --help. This module is the one implementation; tools/eval.py only launches it.
"""
from yolox.apps.cli import run_cli
from yolox.apps.evaluate import run_eval_cli

__all__ = ["main"]


def main(argv=None):
    """Run the command line with argv (default sys.argv[1:]); exits 2 on a user error, 1 on a failure."""
    return run_cli(run_eval_cli, argv)


if __name__ == "__main__":
    main()
