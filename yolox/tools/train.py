"""python -m yolox.tools.train, or tools/train.py in a clone.
Train a YOLOX model (the official flags, e.g. -f exps/yolox_s.py -d 8 -b 64 --fp16).

The flags: --help. This module is the one implementation; tools/train.py only launches it.
"""
from yolox.apps.cli import run_cli
from yolox.apps.train import run_train_cli

__all__ = ["main"]


def main(argv=None):
    """Run the command line with argv (default sys.argv[1:]); exits 2 on a user error, 1 on a failure."""
    from yolox.core.time_budget import process_start_time

    start = process_start_time()  # Exp.max_train_minutes counts the whole command, its imports included
    return run_cli(lambda args: run_train_cli(args, start_time=start), argv)


if __name__ == "__main__":
    main()
