"""python -m yolox.tools.demo, or tools/demo.py in a clone.
Detect objects in an image, a folder, a video or a camera.

The flags: --help. This module is the one implementation; tools/demo.py only launches it.
"""
from yolox.apps.cli import run_cli
from yolox.apps.demo_cli import run_demo_cli

__all__ = ["main"]


def main(argv=None):
    """Run the command line with argv (default sys.argv[1:]); exits 2 on a user error, 1 on a failure."""
    return run_cli(run_demo_cli, argv)


if __name__ == "__main__":
    main()
