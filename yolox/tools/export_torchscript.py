"""python -m yolox.tools.export_torchscript, or tools/export_torchscript.py in a clone.
Export a checkpoint to TorchScript.

The flags: --help. This module is the one implementation; tools/export_torchscript.py only launches it.
"""
from yolox.apps.cli import run_cli
from yolox.apps.export_cli import run_torchscript_cli

__all__ = ["main"]


def main(argv=None):
    """Run the command line with argv (default sys.argv[1:]); exits 2 on a user error, 1 on a failure."""
    return run_cli(run_torchscript_cli, argv)


if __name__ == "__main__":
    main()
