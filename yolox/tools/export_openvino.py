"""python -m yolox.tools.export_openvino, or tools/export_openvino.py in a clone.
Convert an ONNX export to an OpenVINO IR (.xml + .bin) with OpenVINO's own converter.

The flags: --help. This module is the one implementation; tools/export_openvino.py only launches it.
"""
from yolox.apps.cli import run_cli
from yolox.apps.export_cli import run_openvino_cli

__all__ = ["main"]


def main(argv=None):
    """Run the command line with argv (default sys.argv[1:]); exits 2 on a user error, 1 on a failure."""
    return run_cli(run_openvino_cli, argv)


if __name__ == "__main__":
    main()
