"""python -m yolox.tools.demo, or tools/demo.py in a clone.
Detect objects in an image, a folder, a video or a camera (the official flags): open the weights in their backend,
run the demo.

-c takes a PyTorch checkpoint, an ONNX file (ONNX Runtime) or an OpenVINO IR .xml; --backend overrides the choice
made from the suffix. Without -f / -n the model comes from -c alone: a checkpoint written by tools/train.py, or an
export, describes itself. Boxes are labelled with the class names the weights carry, else the Exp's.

The flags: --help. This module is the one implementation; tools/demo.py only launches it.
"""
import argparse
import os
import time

from loguru import logger

from yolox.apps.demo import image_demo, imageflow_demo
from yolox.apps.predictor import Predictor, load_backend
from yolox.apps.weights_exp import class_names_for_weights, exp_for_weights
from yolox.deploy import BACKENDS, backend_for_file
from yolox.tools.cli import apply_test_overrides, run_cli
from yolox.utils import get_model_info

__all__ = ["make_parser", "run_demo_cli", "main"]

DEMO_TYPES = ("image", "video", "webcam")


def make_parser():
    parser = argparse.ArgumentParser("YOLOX Demo!")
    parser.add_argument("demo", default="image", help="demo type, eg. image, video and webcam")
    parser.add_argument("-expn", "--experiment-name", type=str, default=None)
    parser.add_argument("-n", "--name", type=str, default=None, help="model name")
    parser.add_argument("--path", default=None,
                        help="path to an image, a folder of images or a video (needed by the image and video demos)")
    parser.add_argument("--camid", type=int, default=0, help="webcam demo camera id")
    parser.add_argument("--save_result", action="store_true",
                        help="whether to save the inference result of image/video")
    parser.add_argument("-f", "--exp_file", default=None, type=str, help="please input your experiment description file")
    parser.add_argument("-c", "--ckpt", default=None, type=str,
                        help="weights: a .pth checkpoint, an .onnx file or an OpenVINO .xml (without -f / -n: "
                             "a checkpoint of tools/train.py or an export, which describe their model)")
    parser.add_argument("--backend", default=None, choices=list(BACKENDS),
                        help="runtime for -c (default: by its suffix: .onnx onnxruntime, .xml openvino, else torch)")
    parser.add_argument("--device", default="cpu", type=str, help="device to run our model, can either be cpu or gpu")
    parser.add_argument("--conf", default=0.3, type=float, help="test conf")
    parser.add_argument("--nms", default=0.3, type=float, help="test nms threshold")
    parser.add_argument("--tsize", default=None, type=int, help="test img size")
    parser.add_argument("--fp16", dest="fp16", default=False, action="store_true",
                        help="Adopting mix precision evaluating (GPU only; PyTorch checkpoints only).")
    parser.add_argument("--legacy", dest="legacy", default=False, action="store_true",
                        help="To be compatible with older versions")
    parser.add_argument("--fuse", dest="fuse", default=False, action="store_true",
                        help="Fuse conv and bn for testing (a no-op for .onnx / .xml: their runtimes fuse).")
    # No trailing `key value` opts here (as officially): they would swallow every flag after the demo type.
    return parser


def _check_demo_input(args):
    """The demo type and, for image and video, an existing --path: checked before any model is built."""
    if args.demo not in DEMO_TYPES:
        raise ValueError(f"demo type {args.demo!r} is not one of {', '.join(DEMO_TYPES)}")
    if args.demo == "webcam":
        return
    what = "give an image or a folder of images (demo image) or a video (demo video) with --path"
    if args.path is None:
        raise ValueError(f"no --path given: {what}")
    if not os.path.exists(args.path):
        raise FileNotFoundError(f"--path {args.path!r} does not exist: {what}")


def run_demo_cli(argv=None):
    """Returns the written files (images) or video path; nothing is written without --save_result. User errors are
    raised (main() turns them into one log line and exit status 2)."""
    args = make_parser().parse_args(argv)
    _check_demo_input(args)
    exp = exp_for_weights(args.exp_file, args.name, args.ckpt, args.backend)
    if not args.experiment_name:
        args.experiment_name = exp.exp_name
    file_name = os.path.join(exp.output_dir, args.experiment_name)
    vis_folder = os.path.join(file_name, "vis_res") if args.save_result else None
    if vis_folder:
        os.makedirs(vis_folder, exist_ok=True)
    logger.info("Args: {}".format(args))

    apply_test_overrides(exp, args)

    ckpt_file = args.ckpt if args.ckpt is not None else os.path.join(file_name, "best_ckpt.pth")
    if backend_for_file(ckpt_file, args.backend) == "torch":
        logger.info("Model Summary: {}".format(get_model_info(exp.get_model(), exp.test_size)))
    logger.info("loading checkpoint from {}".format(ckpt_file))
    backend = load_backend(exp, ckpt_file, args.backend, device=args.device, fuse=args.fuse, fp16=args.fp16)
    logger.info("loaded checkpoint done.")

    class_names = class_names_for_weights(exp, ckpt_file, backend, args.backend)
    shown = ", ".join(class_names[:10]) + (", ..." if len(class_names) > 10 else "")
    logger.info(f"labelling boxes with {len(class_names)} class names: {shown}")
    predictor = Predictor(backend, exp, class_names, legacy=args.legacy)
    current_time = time.localtime()
    if args.demo == "image":
        return image_demo(predictor, vis_folder, args.path, current_time, args.save_result)
    return imageflow_demo(predictor, vis_folder, current_time, args.demo, path=args.path, camid=args.camid,
                          save_result=args.save_result)


def main(argv=None):
    """Run the command line with argv (default sys.argv[1:]); exits 2 on a user error, 1 on a failure."""
    return run_cli(run_demo_cli, argv)


if __name__ == "__main__":
    main()
