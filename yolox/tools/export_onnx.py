"""python -m yolox.tools.export_onnx, or tools/export_onnx.py in a clone.
Export a checkpoint to ONNX (the official flags); the model flags and build_export_model are shared with
yolox.tools.export_torchscript and yolox.tools.export_openvino. A checkpoint written by tools/train.py needs no -f / -n
(it describes its model); the file's metadata carries the class names (yolox_class_names).

The flags: --help. This module is the one implementation; tools/export_onnx.py only launches it.
"""
import argparse
import os

from loguru import logger

from yolox.apps.export import exp_model_for_export, export_onnx
from yolox.apps.weights_exp import class_names_for_weights, exp_for_weights
from yolox.tools.cli import run_cli

__all__ = ["make_parser", "add_model_arguments", "build_export_model", "run_onnx_cli", "main"]


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
    exp, model = build_export_model(args)
    return export_onnx(model, args.output_name, (args.batch_size, 3, *exp.test_size), opset=args.opset,
                       dynamic=args.dynamic, simplify=not args.no_onnxsim, input_node=args.input,
                       output_node=args.output, class_names=exp.class_names)


def main(argv=None):
    """Run the command line with argv (default sys.argv[1:]); exits 2 on a user error, 1 on a failure."""
    return run_cli(run_onnx_cli, argv)


if __name__ == "__main__":
    main()
