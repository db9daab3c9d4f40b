"""python -m yolox.tools.eval, or tools/eval.py in a clone.
COCO (or VOC) AP of a checkpoint on the Exp's validation set, or --speed: the official flags, checkpoint loading,
fusion, and the evaluation in one process or several.

-c takes a PyTorch checkpoint, an ONNX file (run by ONNX Runtime) or an OpenVINO IR .xml (run by OpenVINO); see
make_parser for what --fuse, --fp16 and -d do with an exported model. Without -f / -n, a checkpoint written by
tools/train.py is enough: its model and its data come from the settings it carries, which `key value` options
override (e.g. `data_dir /data/forest` or `data_yaml data.yaml`).

The flags: --help. This module is the one implementation; tools/eval.py only launches it.
"""
import argparse
import os
import random
import warnings

import torch
from loguru import logger

import yolox.utils as yutils
from yolox.apps.predictor import load_backend
from yolox.apps.weights_exp import exp_for_weights
from yolox.core.eval_report import enable_report, save_eval_report
from yolox.deploy import BACKENDS, backend_for_file
from yolox.exp import load_exp_weights
from yolox.tools.cli import EXIT_USER_ERROR, USER_ERRORS, apply_test_overrides, run_cli, user_message
from yolox.utils import fuse_model, get_local_rank, get_model_info

__all__ = ["make_parser", "eval_main", "run_eval_cli", "process_count", "eval_device", "main"]


def make_parser():
    parser = argparse.ArgumentParser("YOLOX Eval")
    parser.add_argument("-expn", "--experiment-name", type=str, default=None)
    parser.add_argument("-n", "--name", type=str, default=None, help="model name")
    # distributed
    parser.add_argument("--dist-backend", default="nccl", type=str, help="distributed backend (gloo on CPU)")
    parser.add_argument("--dist-url", default=None, type=str, help="url used to set up distributed evaluation")
    parser.add_argument("-b", "--batch-size", type=int, default=64, help="batch size (over all processes)")
    parser.add_argument("-d", "--devices", default=None, type=int,
                        help="number of processes: GPUs with CUDA (default all), CPU processes otherwise (default 1)")
    parser.add_argument("--num_machines", default=1, type=int, help="num of node for evaluation")
    parser.add_argument("--machine_rank", default=0, type=int, help="node rank for multi-node evaluation")
    parser.add_argument("-f", "--exp_file", default=None, type=str, help="please input your experiment description file")
    parser.add_argument("-c", "--ckpt", default=None, type=str,
                        help="weights: a .pth checkpoint, an .onnx file or an OpenVINO .xml (a checkpoint of "
                             "tools/train.py needs no -f / -n: it holds its Exp's settings, data included)")
    parser.add_argument("--backend", default=None, choices=list(BACKENDS),
                        help="runtime for -c (default: by its suffix: .onnx onnxruntime, .xml openvino, else torch). "
                             "An exported model runs in one CPU process (-d 1), in float32 (no --fp16); --fuse is a "
                             "no-op for it; a batch-1 export is fed one image at a time whatever -b is")
    parser.add_argument("--conf", default=None, type=float, help="test conf")
    parser.add_argument("--nms", default=None, type=float, help="test nms threshold")
    parser.add_argument("--tsize", default=None, type=int, help="test img size")
    parser.add_argument("--seed", default=None, type=int, help="eval seed")
    parser.add_argument("--fp16", dest="fp16", default=False, action="store_true",
                        help="Adopting mix precision evaluating (CUDA only).")
    parser.add_argument("--fuse", dest="fuse", default=False, action="store_true", help="Fuse conv and bn for testing.")
    parser.add_argument("--legacy", dest="legacy", default=False, action="store_true",
                        help="To be compatible with older versions")
    parser.add_argument("--test", dest="test", default=False, action="store_true", help="Evaluating on test-dev set.")
    parser.add_argument("--speed", dest="speed", default=False, action="store_true",
                        help="speed test only: average forward and NMS time per image, no AP")
    parser.add_argument("--report", nargs="?", const="", default=None, metavar="DIR",
                        help="also write the run report from the same detections: per-class P, R, AP table, "
                             "PR/F1/P/R curves, confusion matrices (+ csv) and val_batch pictures, into DIR "
                             "(default: the run folder <output_dir>/<experiment name>/)")
    parser.add_argument("opts", help="Modify config options using the command-line", default=None,
                        nargs=argparse.REMAINDER)
    return parser


def process_count(devices):
    """How many evaluation processes: -d, or every GPU with CUDA, or one CPU process."""
    n_cuda = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if devices is None:
        return max(n_cuda, 1)
    if devices < 1:
        raise ValueError(f"-d/--devices must be at least 1; got {devices}")
    if n_cuda and devices > n_cuda:
        raise ValueError(f"-d {devices} asks for more GPUs than the {n_cuda} visible here")
    return devices


def eval_device(rank):
    return torch.device(f"cuda:{rank}") if torch.cuda.is_available() else torch.device("cpu")


def _setup_logging(file_name, rank):
    setup_logger = getattr(yutils, "setup_logger", None)
    if setup_logger is not None:
        setup_logger(file_name, distributed_rank=rank, filename="val_log.txt", mode="a")
    elif rank == 0:
        logger.add(os.path.join(file_name, "val_log.txt"), mode="a")


def _exported_backend(args, num_gpu):
    """The name of the runtime of an exported -c (None for a PyTorch checkpoint); its flags checked."""
    if args.ckpt is None:
        if args.backend not in (None, "torch"):
            raise ValueError(f"--backend {args.backend} needs -c with the exported model (.onnx or .xml)")
        return None
    name = backend_for_file(args.ckpt, args.backend)
    if name == "torch":
        return None
    if num_gpu * args.num_machines > 1:
        raise ValueError(f"{args.ckpt} runs in {name} in one process; drop -d / --num_machines (or use -d 1)")
    return name


def eval_main(exp, args, num_gpu):
    """Evaluate in this process (one of num_gpu); returns (AP50:95, AP50, summary) or the speed line on rank 0."""
    if args.seed is not None:
        random.seed(args.seed)
        torch.manual_seed(args.seed)
        torch.backends.cudnn.deterministic = True
        warnings.warn("You have chosen to seed testing. This will turn on the CUDNN deterministic setting, ")
    is_distributed = num_gpu > 1
    torch.backends.cudnn.benchmark = True
    rank = get_local_rank()
    file_name = os.path.join(exp.output_dir, args.experiment_name)
    if rank == 0:
        os.makedirs(file_name, exist_ok=True)
    _setup_logging(file_name, rank)
    logger.info("Args: {}".format(args))

    apply_test_overrides(exp, args)
    if _exported_backend(args, num_gpu) is not None:
        return _eval_exported(exp, args)

    model = exp.get_model()
    logger.info("Model Summary: {}".format(get_model_info(model, exp.test_size)))
    device = eval_device(rank)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    model.to(device).eval()
    if args.speed and args.ckpt is None:
        logger.info("speed test with the model's initial weights (no -c given)")
    else:
        ckpt_file = args.ckpt if args.ckpt is not None else os.path.join(file_name, "best_ckpt.pth")
        logger.info("loading checkpoint from {}".format(ckpt_file))
        load_exp_weights(model, ckpt_file, num_classes=exp.num_classes, map_location=device)
        logger.info("loaded checkpoint done.")
    evaluator = exp.get_evaluator(args.batch_size, is_distributed, args.test, args.legacy)
    evaluator.per_class_AP = True
    evaluator.per_class_AR = True
    if args.test and hasattr(evaluator, "testdev_file"):
        evaluator.testdev_file = os.path.join(file_name, "yolox_testdev_2017.json")
    _enable_report(evaluator, args)

    if args.fuse:
        logger.info("\tFusing model...")
        model = fuse_model(model)
    half = args.fp16
    if half and device.type != "cuda":
        logger.warning("--fp16 needs CUDA; evaluating in float32 on the CPU")
        half = False

    # Every process holds the same weights and evaluates its own shard of the loader; no DDP wrapper is needed
    # for inference, and results are gathered to rank 0 by the evaluator.
    if args.speed:
        line = evaluator.speed_test(model, is_distributed, half)
        logger.info(line)
        return line
    result = evaluator.evaluate(model, is_distributed, half, None, None, exp.test_size)
    if rank == 0:
        logger.info("\n" + result[2])
        _write_report(evaluator, args, file_name)
    return result


def _eval_exported(exp, args):
    """Evaluate an .onnx / .xml in this process through its backend (the same evaluator and postprocessing)."""
    logger.info("loading {} model from {}".format(backend_for_file(args.ckpt, args.backend), args.ckpt))
    backend = load_backend(exp, args.ckpt, args.backend, device="cpu", fuse=args.fuse, fp16=args.fp16)
    evaluator = exp.get_evaluator(args.batch_size, False, args.test, args.legacy)
    evaluator.per_class_AP = True
    evaluator.per_class_AR = True
    if args.test and hasattr(evaluator, "testdev_file"):
        evaluator.testdev_file = os.path.join(exp.output_dir, args.experiment_name, "yolox_testdev_2017.json")
    _enable_report(evaluator, args)
    if args.speed:
        line = evaluator.speed_test(backend, False, False)
        logger.info(line)
        return line
    result = evaluator.evaluate(backend, False, False, None, None, exp.test_size)
    logger.info("\n" + result[2])
    _write_report(evaluator, args, os.path.join(exp.output_dir, args.experiment_name))
    return result


def _enable_report(evaluator, args):
    """--report: the evaluator keeps its report; refused for an evaluator without one, ignored with --speed / --test."""
    if args.report is None:
        return
    if args.speed or args.test:
        flag = "--speed" if args.speed else "--test"
        logger.warning(f"--report needs an evaluation against ground truth; ignored with {flag}")
        return
    if not enable_report(evaluator):
        raise ValueError(f"--report needs a COCO-style evaluator; the Exp's get_evaluator gives "
                         f"{type(evaluator).__name__}: evaluate without --report")


def _write_report(evaluator, args, run_folder):
    """Rank 0, after the evaluation: the report's files into --report DIR (default the run folder)."""
    report = getattr(evaluator, "last_report", None)
    if args.report is None or report is None:
        return
    save_eval_report(report, evaluator.dataloader.dataset, args.report or run_folder)


def _report_took_an_option(args, exp):
    """`--report data_dir /x`: argparse gave --report the first word of the `key value` options; put it back."""
    if args.report and len(args.opts or []) % 2 == 1 and hasattr(exp, args.report):
        args.opts = [args.report] + list(args.opts)
        args.report = ""


def _exp_for_eval(args):
    """The Exp of -f / -n; else the one a checkpoint of tools/train.py describes (an export holds no data settings)."""
    if args.exp_file is None and args.name is None and args.ckpt is not None:
        if backend_for_file(args.ckpt, args.backend) != "torch":
            raise ValueError(f"{args.ckpt} does not say which data to evaluate on: pass its Exp with -f or -n, or "
                             "evaluate the .pth checkpoint it was exported from")
    return exp_for_weights(args.exp_file, args.name, args.ckpt, args.backend)


def run_eval_cli(argv=None):
    """Parse argv, build the Exp (from -f / -n, or from the checkpoint -c alone), and evaluate in one process or
    launch several."""
    args = make_parser().parse_args(argv)
    exp = _exp_for_eval(args)
    _report_took_an_option(args, exp)
    exp.merge(args.opts)
    if not args.experiment_name:
        args.experiment_name = exp.exp_name
    num_gpu = process_count(args.devices)
    _exported_backend(args, num_gpu)  # an exported model's flags checked before any process starts
    if num_gpu * args.num_machines == 1:
        return eval_main(exp, args, num_gpu)

    from yolox.core import launch

    backend = args.dist_backend
    if not torch.cuda.is_available() and backend == "nccl":
        logger.info("no CUDA: using the gloo backend for the CPU processes")
        backend = "gloo"
    dist_url = "auto" if args.dist_url is None else args.dist_url
    launch(_eval_process, num_gpu, args.num_machines, args.machine_rank, backend=backend, dist_url=dist_url,
           args=(exp, args, num_gpu))
    return None


def _eval_process(exp, args, num_gpu):
    """eval_main in a launched process: a user error is logged as its one line and becomes exit status 2."""
    try:
        eval_main(exp, args, num_gpu)
    except USER_ERRORS as e:
        logger.error(user_message(e))
        raise SystemExit(EXIT_USER_ERROR) from None


def main(argv=None):
    """Run the command line with argv (default sys.argv[1:]); exits 2 on a user error, 1 on a failure."""
    return run_cli(run_eval_cli, argv)


if __name__ == "__main__":
    main()
