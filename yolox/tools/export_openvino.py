"""python -m yolox.tools.export_openvino, or tools/export_openvino.py in a clone.
Convert an ONNX export (tools/export_onnx.py) to an OpenVINO IR (.xml + .bin) with OpenVINO's own converter.

The flags: --help. This module is the one implementation; tools/export_openvino.py only launches it.
"""
import argparse

from loguru import logger

from yolox.tools.cli import run_cli

__all__ = ["make_parser", "run_openvino_cli", "main"]


def make_parser():
    parser = argparse.ArgumentParser("YOLOX OpenVINO deploy: convert an ONNX export to an OpenVINO IR (.xml + .bin)")
    parser.add_argument("-i", "--onnx", required=True, type=str,
                        help="the ONNX file written by tools/export_onnx.py (raw or --decode_in_inference outputs)")
    parser.add_argument("--output-name", type=str, default=None, help="the IR's .xml (default: the ONNX name)")
    parser.add_argument("--compress-to-fp16", action="store_true",
                        help="store the weights in half precision (half the size, outputs move by about 1e-3)")
    return parser


def run_openvino_cli(argv=None):
    """Write the IR; returns what yolox.deploy.export_openvino returns. User errors are raised (main() turns them
    into one log line and exit status 2)."""
    from yolox.deploy import export_openvino

    args = make_parser().parse_args(argv)
    logger.info("args value: {}".format(args))
    return export_openvino(args.onnx, args.output_name, compress_to_fp16=args.compress_to_fp16)


def main(argv=None):
    """Run the command line with argv (default sys.argv[1:]); exits 2 on a user error, 1 on a failure."""
    return run_cli(run_openvino_cli, argv)


if __name__ == "__main__":
    main()
