"""python -m yolox.tools.export_openvino, or tools/export_openvino.py in a clone.
Convert an ONNX export (tools/export_onnx.py) to an OpenVINO IR (.xml + .bin) with OpenVINO's own converter; or, with
-c, export a checkpoint to ONNX first (-f / -n as for tools/export_onnx.py, or none for a checkpoint of
tools/train.py). The IR keeps the ONNX file's yolox_* metadata, the class names included.

The flags: --help. This module is the one implementation; tools/export_openvino.py only launches it.
"""
import argparse
import os

from loguru import logger

from yolox.tools.cli import run_cli

__all__ = ["make_parser", "run_openvino_cli", "main"]


def make_parser():
    parser = argparse.ArgumentParser("YOLOX OpenVINO deploy: convert an ONNX export to an OpenVINO IR (.xml + .bin)")
    parser.add_argument("-i", "--onnx", default=None, type=str,
                        help="the ONNX file written by tools/export_onnx.py (raw or --decode_in_inference outputs)")
    parser.add_argument("--output-name", type=str, default=None,
                        help="the IR's .xml (default: the ONNX name; yolox.xml with -c)")
    parser.add_argument("--compress-to-fp16", action="store_true",
                        help="store the weights in half precision (half the size, outputs move by about 1e-3)")
    parser.add_argument("-c", "--ckpt", default=None, type=str,
                        help="instead of -i: a checkpoint, exported to ONNX (batch 1, beside the IR) and converted")
    parser.add_argument("-f", "--exp_file", default=None, type=str, help="with -c: experiment description file")
    parser.add_argument("-n", "--name", type=str, default=None, help="with -c: model name")
    parser.add_argument("-expn", "--experiment-name", type=str, default=None)
    parser.add_argument("--decode_in_inference", action="store_true", help="with -c: decode in inference or not")
    parser.add_argument("opts", help="with -c: Exp options as `key value` pairs", default=None,
                        nargs=argparse.REMAINDER)
    return parser


def _onnx_from_checkpoint(args, output_name):
    """Export -c to the ONNX file beside the IR (batch 1, the Exp's test_size, class names in its metadata)."""
    from yolox.apps.export import export_onnx
    from yolox.tools.export_onnx import build_export_model

    exp, model = build_export_model(args)
    onnx_path = os.path.splitext(output_name)[0] + ".onnx"
    return export_onnx(model, onnx_path, (1, 3, *exp.test_size), class_names=exp.class_names)


def run_openvino_cli(argv=None):
    """Write the IR; returns what yolox.deploy.export_openvino returns. User errors are raised (main() turns them
    into one log line and exit status 2)."""
    from yolox.deploy import export_openvino

    args = make_parser().parse_args(argv)
    logger.info("args value: {}".format(args))
    if (args.onnx is None) == (args.ckpt is None):
        raise ValueError("give the ONNX file to convert with -i, or a checkpoint with -c (exported to ONNX first)")
    if args.onnx is None:
        args.output_name = args.output_name or "yolox.xml"
        args.onnx = _onnx_from_checkpoint(args, args.output_name)
    return export_openvino(args.onnx, args.output_name, compress_to_fp16=args.compress_to_fp16)


def main(argv=None):
    """Run the command line with argv (default sys.argv[1:]); exits 2 on a user error, 1 on a failure."""
    return run_cli(run_openvino_cli, argv)


if __name__ == "__main__":
    main()
