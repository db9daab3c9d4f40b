"""python -m yolox.tools.export_onnx, or tools/export_onnx.py in a clone.
Export a checkpoint to ONNX (the official flags); the model flags and build_export_model are shared with
yolox.tools.export_torchscript and yolox.tools.export_openvino. A checkpoint written by tools/train.py needs no -f / -n
(it describes its model); the file's metadata carries the class names (yolox_class_names).

--nms puts the decoding, the score threshold and the per-class NMS in the graph (yolox.deploy.onnx_nms): the file
returns num_dets (B, 1), boxes (B, M, 4), scores (B, M) and classes (B, M) per image, with the Exp's test_conf and
nmsthre (or --conf / --nms-thre) baked in and recorded in its metadata; M = --max-det (default: the anchor count).
--int8 also writes <name>_int8.onnx for ONNX Runtime (static QDQ, calibrated on --calib images of the Exp's data
as evaluation preprocesses them: yolox.deploy.quantize), the fastest CPU path where the CPU has no VNNI.

The flags: --help. This module is the one implementation; tools/export_onnx.py only launches it.
"""
import argparse
import os

from loguru import logger

from yolox.apps.export import exp_model_for_export, export_onnx
from yolox.apps.weights_exp import class_names_for_weights, exp_for_weights
from yolox.deploy import NMS_MIN_OPSET, NMSSettings
from yolox.tools.cli import run_cli

__all__ = ["make_parser", "add_model_arguments", "build_export_model", "run_onnx_cli", "check_nms_arguments", "main"]


def add_model_arguments(parser, default_output):
    """The flags that name the model and the output file, common to the ONNX and TorchScript exports."""
    parser.add_argument("--output-name", type=str, default=default_output, help="output name of models")
    parser.add_argument("--batch-size", type=int, default=1, help="batch size")
    parser.add_argument("-f", "--exp_file", default=None, type=str, help="experiment description file")
    parser.add_argument("-expn", "--experiment-name", type=str, default=None)
    parser.add_argument("-n", "--name", type=str, default=None, help="model name")
    parser.add_argument("-c", "--ckpt", default=None, type=str,
                        help="ckpt path (without -f / -n: a checkpoint of tools/train.py, which describes its model)")
    parser.add_argument("--decode_in_inference", action="store_true", help="decode in inference or not")
    parser.add_argument("opts", help="Modify config options using the command-line", default=None,
                        nargs=argparse.REMAINDER)
    return parser


def make_parser():
    parser = argparse.ArgumentParser("YOLOX onnx deploy")
    parser.add_argument("--input", default="images", type=str, help="input node name of onnx model")
    parser.add_argument("--output", default="output", type=str, help="output node name of onnx model")
    parser.add_argument("-o", "--opset", default=11, type=int, help="onnx opset version")
    parser.add_argument("--dynamic", action="store_true",
                        help="free batch dimension (height and width stay the Exp's test_size)")
    parser.add_argument("--no-onnxsim", action="store_true",
                        help="do not simplify the graph (with onnxsim, or onnxslim, when installed)")
    parser.add_argument("--nms", action="store_true",
                        help="NMS in the graph (implies --decode_in_inference; opset >= 11): outputs num_dets, boxes "
                             "(x1y1x2y2), scores, classes per image instead of --output")
    parser.add_argument("--max-det", type=int, default=None,
                        help="with --nms: most detections per image (default: the anchor count, e.g. 8400 at 640, "
                             "so that nothing postprocess keeps is cut; 100-300 is plenty for deployment)")
    parser.add_argument("--conf", type=float, default=None, help="with --nms: score threshold (default: test_conf)")
    parser.add_argument("--nms-thre", type=float, default=None,
                        help="with --nms: NMS IoU threshold (default: the Exp's nmsthre)")
    parser.add_argument("--int8", action="store_true",
                        help="also write <output-name>_int8.onnx, quantised for ONNX Runtime (static QDQ, per-channel "
                             "weights) and calibrated on the Exp's images as evaluation preprocesses them")
    parser.add_argument("--calib", type=int, default=None,
                        help="with --int8: how many images calibrate (default 300, spread over the split)")
    parser.add_argument("--calib-split", default="val", choices=["val", "train"],
                        help="with --int8: the Exp's split to calibrate on (default val)")
    return add_model_arguments(parser, "yolox.onnx")


def build_export_model(args):
    """(exp, model) for the parsed model flags: the Exp of -f / -n or of the checkpoint itself, the checkpoint (-c,
    default the run's best_ckpt.pth) loaded and the head set for export; exp.class_names are the names to export."""
    exp = exp_for_weights(args.exp_file, args.name, args.ckpt, backend="torch")
    exp.merge(args.opts)
    if not args.experiment_name:
        args.experiment_name = exp.exp_name
    if args.ckpt is None:
        ckpt_file = os.path.join(exp.output_dir, args.experiment_name, "best_ckpt.pth")
    else:
        ckpt_file = args.ckpt
    model = exp_model_for_export(exp, ckpt_file, args.decode_in_inference)
    exp.class_names = class_names_for_weights(exp, ckpt_file)
    return exp, model


def run_onnx_cli(argv=None):
    """Write the ONNX file; returns its path. User errors are raised (main() turns them into one log line and exit
    status 2)."""
    args = make_parser().parse_args(argv)
    logger.info("args value: {}".format(args))
    check_nms_arguments(args)
    if args.nms:
        args.decode_in_inference = True  # the NMS works on decoded boxes
    check_int8_arguments(args)
    exp, model = build_export_model(args)
    nms = NMSSettings(_or(args.conf, exp.test_conf), _or(args.nms_thre, exp.nmsthre), args.max_det) if args.nms \
        else None
    path = export_onnx(model, args.output_name, (args.batch_size, 3, *exp.test_size), opset=args.opset,
                       dynamic=args.dynamic, simplify=not args.no_onnxsim, input_node=args.input,
                       output_node=args.output, class_names=exp.class_names, nms=nms)
    if not args.int8:
        return path
    from yolox.deploy.quantize import calibration_images, quantize_onnx_static

    images = calibration_images(exp, args.calib, args.calib_split)
    return quantize_onnx_static(path, images, os.path.splitext(path)[0] + "_int8.onnx")


def check_int8_arguments(args):
    """One-line ValueErrors for the INT8 flags, before the checkpoint is read."""
    from yolox.deploy.quantize import check_calib_flags

    args.calib = check_calib_flags(args.int8, args.calib, args.calib_split)
    if args.int8 and args.batch_size != 1 and not args.dynamic:
        raise ValueError(f"--int8 with --batch-size {args.batch_size}: calibration feeds one image at a time; export "
                         "with --batch-size 1 or add --dynamic (the INT8 model then runs any batch)")
    if args.int8 and args.nms:
        raise ValueError("--int8 with --nms: quantise the plain export (the NMS part stays float anyway); export "
                         "twice for both files")


def check_nms_arguments(args):
    """One-line ValueErrors for flags that cannot make a file: before the checkpoint is read."""
    if args.batch_size < 1:
        raise ValueError(f"--batch-size {args.batch_size}: the export needs a batch of at least 1 (add --dynamic "
                         "for a free batch)")
    if not args.nms:
        given = [flag for flag, value in (("--max-det", args.max_det), ("--conf", args.conf),
                                          ("--nms-thre", args.nms_thre)) if value is not None]
        if given:
            raise ValueError(f"{', '.join(given)} apply to NMS in the graph: add --nms (or drop them)")
        return
    if args.opset < NMS_MIN_OPSET:
        raise ValueError(f"--opset {args.opset} is too old for --nms: NonMaxSuppression and ScatterElements need "
                         f"opset >= {NMS_MIN_OPSET}; pass -o {NMS_MIN_OPSET} or higher")
    if args.max_det is not None and args.max_det < 1:
        raise ValueError(f"--max-det {args.max_det}: keep at least 1 detection per image (or leave it out for all)")
    for flag, value in (("--conf", args.conf), ("--nms-thre", args.nms_thre)):
        if value is not None and not 0.0 <= value <= 1.0:
            raise ValueError(f"{flag} {value}: a threshold between 0 and 1")


def _or(value, default):
    return default if value is None else value


def main(argv=None):
    """Run the command line with argv (default sys.argv[1:]); exits 2 on a user error, 1 on a failure."""
    return run_cli(run_onnx_cli, argv)


if __name__ == "__main__":
    main()
