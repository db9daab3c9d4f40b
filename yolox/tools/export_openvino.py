"""python -m yolox.tools.export_openvino, or tools/export_openvino.py in a clone.
Convert an ONNX export (tools/export_onnx.py) to an OpenVINO IR (.xml + .bin) with OpenVINO's own converter; or, with
-c, export a checkpoint to ONNX first (-f / -n as for tools/export_onnx.py, or none for a checkpoint of
tools/train.py). The IR keeps the ONNX file's yolox_* metadata, the class names included.

--int8 writes an INT8 IR instead, quantised after training with NNCF (yolox.deploy.quantize) and calibrated on
--calib images of the Exp's data (its val split by default), preprocessed as evaluation does:

    python tools/export_openvino.py -c best_ckpt.pth --int8 --calib 300 --output-name model_int8.xml
    python tools/export_openvino.py -i model.onnx -f exps/my_exp.py --int8

The flags: --help. This module is the one implementation; tools/export_openvino.py only launches it.
"""
import argparse
import os

from loguru import logger

from yolox.deploy.quantize import CALIB_SPLITS, DEFAULT_CALIB, check_calib_flags, import_nncf
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
    parser.add_argument("--int8", action="store_true",
                        help="quantise to INT8 with NNCF, calibrated on the Exp's images (needs -f / -n, or -c of "
                             "tools/train.py; default output: <name>_int8.xml)")
    parser.add_argument("--calib", type=int, default=None,
                        help=f"with --int8: how many images calibrate (default {DEFAULT_CALIB}, spread over the split)")
    parser.add_argument("--calib-split", default="val", choices=list(CALIB_SPLITS),
                        help="with --int8: the Exp's split to calibrate on (default val: the images evaluation "
                             "feeds, and the one split every Exp defines; no labels are used)")
    parser.add_argument("opts", help="with -c: Exp options as `key value` pairs", default=None,
                        nargs=argparse.REMAINDER)
    return parser


def _onnx_from_checkpoint(args, output_name):
    """(exp, path): -c exported to the ONNX file beside the IR (batch 1, the Exp's test_size, class names in its
    metadata); with --int8 the float file drops the IR's _int8 suffix (yolox_int8.xml -> yolox.onnx)."""
    from yolox.apps.export import export_onnx
    from yolox.tools.export_onnx import build_export_model

    exp, model = build_export_model(args)
    stem = os.path.splitext(output_name)[0]
    if args.int8 and stem.endswith("_int8"):
        stem = stem[:-len("_int8")]
    return exp, export_onnx(model, stem + ".onnx", (1, 3, *exp.test_size), class_names=exp.class_names)


def _calibration_exp(args, exp):
    """The Exp whose images calibrate --int8: the one -c built, else that of -f / -n (an ONNX file says nothing
    about its data)."""
    if exp is not None:
        return exp
    from yolox.exp import get_exp

    exp = get_exp(args.exp_file, args.name)
    exp.merge(args.opts)
    return exp


def _int8_output_name(args):
    if args.output_name:
        return args.output_name
    if args.onnx is None:
        return "yolox_int8.xml"
    return os.path.splitext(args.onnx)[0] + "_int8.xml"


def _check_int8_flags(args):
    """The --int8 flags checked before any export: a user error costs nothing."""
    args.calib = check_calib_flags(args.int8, args.calib, args.calib_split)
    if not args.int8:
        return
    if args.compress_to_fp16:
        raise ValueError("--compress-to-fp16 and --int8 exclude each other: INT8 stores its weights in 8 bits")
    import_nncf()  # the one-line error about the missing extra before a minute of export
    if args.onnx is not None and args.exp_file is None and args.name is None:
        raise ValueError(f"--int8 calibrates on the Exp's images, and {args.onnx} does not say which data it was "
                         "trained on: pass its Exp with -f <exp file> or -n <model name> (or quantise from the "
                         "checkpoint of tools/train.py with -c)")


def _quantize(args, exp, onnx_path):
    from yolox.deploy.quantize import calibration_images, model_input_size, quantize_openvino

    images = calibration_images(exp, args.calib, args.calib_split, input_size=model_input_size(onnx_path))
    return quantize_openvino(onnx_path, images, args.output_name)


def run_openvino_cli(argv=None):
    """Write the IR; returns what yolox.deploy.export_openvino returns. User errors are raised (main() turns them
    into one log line and exit status 2)."""
    from yolox.deploy import export_openvino

    args = make_parser().parse_args(argv)
    logger.info("args value: {}".format(args))
    if (args.onnx is None) == (args.ckpt is None):
        raise ValueError("give the ONNX file to convert with -i, or a checkpoint with -c (exported to ONNX first)")
    _check_int8_flags(args)
    exp = None
    if args.int8:
        args.output_name = _int8_output_name(args)
    if args.onnx is None:
        args.output_name = args.output_name or "yolox.xml"
        exp, args.onnx = _onnx_from_checkpoint(args, args.output_name)
    if args.int8:
        return _quantize(args, _calibration_exp(args, exp), args.onnx)
    return export_openvino(args.onnx, args.output_name, compress_to_fp16=args.compress_to_fp16)


def main(argv=None):
    """Run the command line with argv (default sys.argv[1:]); exits 2 on a user error, 1 on a failure."""
    return run_cli(run_openvino_cli, argv)


if __name__ == "__main__":
    main()
