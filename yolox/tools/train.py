"""python -m yolox.tools.train, or tools/train.py in a clone.
Train a YOLOX model (the official flags, e.g. -f exps/yolox_s.py -d 8 -b 64 --fp16): the parser, the checks of the
command before any process starts, and the launch of the training processes.

The flags: --help. This module is the one implementation; tools/train.py only launches it.
"""
import argparse
import os
import random
import sys
import time
import warnings

import torch
import torch.backends.cudnn as cudnn
from loguru import logger

from yolox.tools.cli import EXIT_INTERRUPTED, EXIT_USER_ERROR, USER_ERRORS, run_cli, user_message

__all__ = ["make_parser", "parse_args", "train_main", "run_train_cli", "training_processes", "LOGGERS", "main"]

LOGGERS = ("tensorboard", "wandb", "mlflow")  # the choices of -l


def make_parser():
    parser = argparse.ArgumentParser("YOLOX train parser")
    parser.add_argument("-expn", "--experiment-name", type=str, default=None)
    parser.add_argument("-n", "--name", type=str, default=None, help="model name")
    # distributed
    parser.add_argument("--dist-backend", default="nccl", type=str,
                        help="distributed backend: nccl for GPUs (gloo is used on the CPU whatever is given)")
    parser.add_argument("--dist-url", default=None, type=str,
                        help="url used to set up distributed training, e.g. tcp://<host of machine 0>:<port>")
    parser.add_argument("-b", "--batch-size", type=int, default=64, help="batch size over all processes")
    parser.add_argument("-d", "--devices", default=None, type=int,
                        help="processes on this machine: GPUs with CUDA (default all), CPU processes otherwise "
                             "(default 1; they share the cores)")
    parser.add_argument("-f", "--exp_file", default=None, type=str, help="plz input your experiment description file")
    parser.add_argument("--resume", default=False, action="store_true", help="resume training")
    parser.add_argument("-c", "--ckpt", default=None, type=str, help="checkpoint file")
    parser.add_argument("-e", "--start_epoch", default=None, type=int, help="resume training start epoch")
    parser.add_argument("--num_machines", default=1, type=int, help="num of node for training")
    parser.add_argument("--machine_rank", default=0, type=int, help="node rank for multi-node training")
    parser.add_argument("--fp16", dest="fp16", default=False, action="store_true",
                        help="Adopting mix precision training (float16 + GradScaler on CUDA, bfloat16 on the CPU).")
    parser.add_argument("--cache", type=str, nargs="?", const="ram", default=None,
                        help="Caching imgs to ram or disk for fast training (--cache alone means ram).")
    parser.add_argument("-o", "--occupy", dest="occupy", default=False, action="store_true",
                        help="occupy GPU memory first for training.")
    parser.add_argument("-l", "--logger", type=str, default=None, choices=list(LOGGERS),
                        help="Logger to be used for metrics: tensorboard (the default when it is installed), wandb "
                             "(options as `wandb-<key> <value>` after the Exp options, e.g. wandb-project yolox) or "
                             "mlflow (configured by MLFLOW_* and YOLOX_MLFLOW_* environment variables)")
    parser.add_argument("--profile", type=int, default=0, metavar="N",
                        help="time N iterations after a warm-up, print the per-stage table and stop")
    parser.add_argument("opts", help="Modify config options using the command-line", default=None,
                        nargs=argparse.REMAINDER)
    return parser


def parse_args(argv=None):
    """The parsed command line; `--cache` directly followed by Exp options (`--cache max_epoch 10`) means RAM."""
    args = make_parser().parse_args(argv)
    if args.cache is not None and args.cache not in ("ram", "disk"):
        args.opts = [args.cache] + list(args.opts or [])
        args.cache = "ram"
    return args


def training_processes(devices, num_machines=1):
    """Processes on this machine for -d: every GPU by default with CUDA, one CPU process otherwise."""
    n_cuda = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if devices is None:
        return max(n_cuda, 1)
    if devices < 1:
        raise ValueError(f"-d/--devices must be at least 1; got {devices}")
    if n_cuda and devices > n_cuda:
        raise ValueError(f"-d {devices} asks for more GPUs than the {n_cuda} found on this machine; use -d {n_cuda} "
                         "or fewer (CUDA_VISIBLE_DEVICES limits what is found)")
    if num_machines < 1:
        raise ValueError(f"--num_machines must be at least 1; got {num_machines}")
    return devices


def train_main(exp, args):
    """One training process (the official tools/train.py main(exp, args)): seeds, backend settings, then
    exp.get_trainer(args).train(); returns the trainer."""
    from yolox.utils import configure_nccl, configure_omp

    if exp.seed is not None:
        random.seed(exp.seed)
        torch.manual_seed(exp.seed)
        cudnn.deterministic = True
        warnings.warn("You have chosen to seed training. This will turn on the CUDNN deterministic setting, "
                      "which can slow down your training considerably!")
    if torch.cuda.is_available():
        configure_nccl()
        configure_omp()
        cudnn.benchmark = True
    trainer = exp.get_trainer(args)
    trainer.train()
    return trainer


def _process_main(exp, args):
    """train_main() in a launched process: a user error or a stop is logged once and becomes the exit status, so the
    launcher reports it without a traceback per process."""
    from yolox.core import NonFiniteLossError, TrainingInterrupted

    from yolox.core.watchdog import EXIT_PEER_LOST, explain_collective_failure

    try:
        train_main(exp, args)
    except (*USER_ERRORS, NonFiniteLossError) as e:
        logger.error(user_message(e))
        sys.exit(EXIT_USER_ERROR)
    except TrainingInterrupted as e:
        logger.warning(str(e))
        sys.exit(getattr(e, "exit_code", EXIT_INTERRUPTED))
    except KeyboardInterrupt:  # a second Ctrl-C: stopped at once, without a checkpoint (torch's wrapper says 0)
        logger.warning("interrupted")
        sys.exit(EXIT_INTERRUPTED)
    except Exception as e:  # a collective that failed because another process died: one line, not a traceback
        line = explain_collective_failure(e)
        if line is None:
            raise
        logger.error(line)
        sys.exit(EXIT_PEER_LOST)


def _check_before_launch(exp, args, world_size):
    from yolox.core.launch import launched_by_torchrun

    if args.batch_size < 1:
        raise ValueError(f"-b/--batch-size must be at least 1; got {args.batch_size}")
    if args.batch_size % world_size != 0:
        raise ValueError(
            f"-b {args.batch_size} is the batch over all {world_size} processes and must divide evenly among them; "
            f"use e.g. -b {max(world_size, args.batch_size - args.batch_size % world_size)}"
        )
    if args.start_epoch is not None and args.start_epoch < 1:
        raise ValueError(f"-e/--start_epoch counts from 1; got {args.start_epoch}")
    if args.resume:
        ckpt = args.ckpt or os.path.join(exp.output_dir, args.experiment_name, "latest_ckpt.pth")
        if not os.path.isfile(ckpt):
            raise FileNotFoundError(
                f"--resume found no checkpoint at {ckpt}: train without --resume to start afresh, or give the "
                "checkpoint to resume with -c (and its experiment name with -expn)"
            )
    elif args.ckpt is not None and not os.path.isfile(args.ckpt):
        raise FileNotFoundError(f"-c {args.ckpt}: no such checkpoint file to fine-tune from")
    if args.machine_rank == 0 and not launched_by_torchrun():
        from yolox.core.trainer import make_output_dir

        make_output_dir(os.path.join(exp.output_dir, args.experiment_name))  # a clear message before any process
    if args.profile < 0:
        raise ValueError(f"--profile takes a number of iterations >= 1; got {args.profile}")


def _exp_options(opts):
    """The trailing options for Exp.merge: all but the `wandb-<key> <value>` pairs, which are WandbLogger's."""
    from yolox.utils import split_wandb_options

    return split_wandb_options(opts)[0]


def _choose_logger(args):
    """-l tensorboard, wandb and mlflow must work when asked (a missing package is a clear error here, before any
    process starts); by default tensorboard is used only when it is installed."""
    from yolox.utils import WandbLogger, import_logger_package, split_wandb_options

    args.logger_explicit = args.logger is not None
    wandb_opts = split_wandb_options(args.opts)[1]
    if wandb_opts and args.logger != "wandb":
        first = next(iter(wandb_opts))
        raise ValueError(f"wandb-{first} is an option of -l wandb, but the logger is "
                         f"{args.logger or 'the default (tensorboard)'}: add -l wandb, or leave out the wandb- options")
    if args.logger in ("wandb", "mlflow"):
        import_logger_package(args.logger)
        WandbLogger.options_from(args.opts)  # unknown wandb- keys and bad values fail now
        return
    if args.logger is None:
        try:
            import tensorboard  # noqa: F401
        except ImportError:
            args.logger = None
            return
        args.logger = "tensorboard"


def run_train_cli(argv=None, start_time=None):
    """Parse argv, build and check the Exp, then train in this process or launch the processes; user errors are
    raised (main() turns them into one log line and exit status 2).

    start_time: time.time() at which the run started, for Exp.max_train_minutes (default: now; main() passes the
    start of its process, so that its imports count too).
    """
    start_time = time.time() if start_time is None else start_time
    from yolox.core import launch
    from yolox.core.launch import TRAIN_TIMEOUT, launched_by_torchrun
    from yolox.exp import check_exp_value, get_exp
    from yolox.utils import configure_module

    configure_module()
    args = parse_args(argv)
    args.start_time = start_time
    exp = get_exp(args.exp_file, args.name)
    exp.merge(_exp_options(args.opts))
    check_exp_value(exp)
    if not args.experiment_name:
        args.experiment_name = exp.exp_name
    _choose_logger(args)

    num_gpu = training_processes(args.devices, args.num_machines)
    world_size = int(os.environ["WORLD_SIZE"]) if launched_by_torchrun() else num_gpu * args.num_machines
    _check_before_launch(exp, args, world_size)
    if args.cache is not None:
        exp.dataset = exp.get_dataset(cache=True, cache_type=args.cache)

    dist_url = "auto" if args.dist_url is None else args.dist_url
    if world_size == 1 and not launched_by_torchrun():
        return train_main(exp, args)
    launch(_process_main, num_gpu, args.num_machines, args.machine_rank, backend=args.dist_backend,
           dist_url=dist_url, args=(exp, args), timeout=TRAIN_TIMEOUT)
    return None


def main(argv=None):
    """Run the command line with argv (default sys.argv[1:]); exits 2 on a user error, 1 on a failure."""
    from yolox.core.time_budget import process_start_time

    start = process_start_time()  # Exp.max_train_minutes counts the whole command, its imports included
    return run_cli(lambda args: run_train_cli(args, start_time=start), argv)


if __name__ == "__main__":
    main()
