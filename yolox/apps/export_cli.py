"""The command lines of tools/export_onnx.py and tools/export_torchscript.py (official flags), and of
tools/export_openvino.py (ONNX file -> OpenVINO IR)."""
import argparse
import os

from loguru import logger

from yolox.exp import load_exp_weights

from .export import export_onnx, export_torchscript, prepare_for_export

__all__ = ["make_onnx_parser", "make_torchscript_parser", "make_openvino_parser", "build_export_model",
           "run_onnx_cli", "run_torchscript_cli", "run_openvino_cli"]


def _common(parser, default_output):
    parser.add_argument("--output-name", type=str, default=default_output, help="output name of models")
    parser.add_argument("--batch-size", type=int, default=1, help="batch size")
    parser.add_argument("-f", "--exp_file", default=None, type=str, help="experiment description file")
    parser.add_argument("-expn", "--experiment-name", type=str, default=None)
    parser.add_argument("-n", "--name", type=str, default=None, help="model name")
    parser.add_argument("-c", "--ckpt", default=None, type=str, help="ckpt path")
    parser.add_argument("--decode_in_inference", action="store_true", help="decode in inference or not")
    parser.add_argument("opts", help="Modify config options using the command-line", default=None,
                        nargs=argparse.REMAINDER)
    return parser


def make_onnx_parser():
    parser = argparse.ArgumentParser("YOLOX onnx deploy")
    parser.add_argument("--input", default="images", type=str, help="input node name of onnx model")
    parser.add_argument("--output", default="output", type=str, help="output node name of onnx model")
    parser.add_argument("-o", "--opset", default=11, type=int, help="onnx opset version")
    parser.add_argument("--dynamic", action="store_true",
                        help="free batch dimension (height and width stay the Exp's test_size)")
    parser.add_argument("--no-onnxsim", action="store_true",
                        help="do not simplify the graph (with onnxsim, or onnxslim, when installed)")
    return _common(parser, "yolox.onnx")


def make_openvino_parser():
    parser = argparse.ArgumentParser("YOLOX OpenVINO deploy: convert an ONNX export to an OpenVINO IR (.xml + .bin)")
    parser.add_argument("-i", "--onnx", required=True, type=str,
                        help="the ONNX file written by tools/export_onnx.py (raw or --decode_in_inference outputs)")
    parser.add_argument("--output-name", type=str, default=None, help="the IR's .xml (default: the ONNX name)")
    parser.add_argument("--compress-to-fp16", action="store_true",
                        help="store the weights in half precision (half the size, outputs move by about 1e-3)")
    return parser


def make_torchscript_parser():
    return _common(argparse.ArgumentParser("YOLOX torchscript deploy"), "yolox.torchscript.pt")


def build_export_model(args):
    """(exp, model) with the checkpoint loaded (weights only; class count checked) and the head set for export."""
    from yolox.exp import get_exp

    exp = get_exp(args.exp_file, args.name)
    exp.merge(args.opts)
    if not args.experiment_name:
        args.experiment_name = exp.exp_name
    model = exp.get_model()
    if args.ckpt is None:
        ckpt_file = os.path.join(exp.output_dir, args.experiment_name, "best_ckpt.pth")
    else:
        ckpt_file = args.ckpt
    load_exp_weights(model, ckpt_file, num_classes=exp.num_classes)
    logger.info("loading checkpoint done.")
    return exp, prepare_for_export(model, args.decode_in_inference)


def run_onnx_cli(argv=None):
    args = make_onnx_parser().parse_args(argv)
    logger.info("args value: {}".format(args))
    exp, model = build_export_model(args)
    return export_onnx(model, args.output_name, (args.batch_size, 3, *exp.test_size), opset=args.opset,
                       dynamic=args.dynamic, simplify=not args.no_onnxsim, input_node=args.input,
                       output_node=args.output)


def run_torchscript_cli(argv=None):
    args = make_torchscript_parser().parse_args(argv)
    logger.info("args value: {}".format(args))
    exp, model = build_export_model(args)
    return export_torchscript(model, args.output_name, (args.batch_size, 3, *exp.test_size))


def run_openvino_cli(argv=None):
    from yolox.deploy import export_openvino

    args = make_openvino_parser().parse_args(argv)
    logger.info("args value: {}".format(args))
    return export_openvino(args.onnx, args.output_name, compress_to_fp16=args.compress_to_fp16)
