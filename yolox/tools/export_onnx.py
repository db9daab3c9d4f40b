"""python -m yolox.tools.export_onnx, or tools/export_onnx.py in a clone.
Export a checkpoint to ONNX.

The flags: --help. This module is the one implementation; tools/export_onnx.py only launches it.
"""
from yolox.apps.cli import run_cli
from yolox.apps.export_cli import run_onnx_cli

__all__ = ["main"]


def main(argv=None):
    """Run the command line with argv (default sys.argv[1:]); exits 2 on a user error, 1 on a failure."""
    return run_cli(run_onnx_cli, argv)


if __name__ == "__main__":
    main()
