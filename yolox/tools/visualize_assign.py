"""python -m yolox.tools.visualize_assign, or tools/visualize_assign.py in a clone.
Draw what SimOTA assigns on the Exp's training images.

The flags: --help. This module is the one implementation; tools/visualize_assign.py only launches it.
"""
from yolox.apps.cli import run_cli
from yolox.apps.assign_vis_cli import run_assign_vis_cli

__all__ = ["main"]


def main(argv=None):
    """Run the command line with argv (default sys.argv[1:]); exits 2 on a user error, 1 on a failure."""
    return run_cli(run_assign_vis_cli, argv)


if __name__ == "__main__":
    main()
