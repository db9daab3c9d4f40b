"""Logging set-up for training and evaluation (loguru): the console and a log file on rank 0, errors elsewhere.
`WandbLogger` lives in wandb_logger.py and is importable from here too, as from the official module."""
import inspect
import os
import sys

from loguru import logger

from .wandb_logger import WandbLogger

__all__ = ["setup_logger", "StreamToLoguru", "redirect_sys_output", "get_caller_name", "LOGURU_FORMAT", "WandbLogger"]

# the official line layout, so that tools reading official logs read these too
LOGURU_FORMAT = (
    "<green>{time:YYYY-MM-DD HH:mm:ss}</green> | "
    "<level>{level: <8}</level> | "
    "<cyan>{name}</cyan>:<cyan>{line}</cyan> - <level>{message}</level>"
)


def get_caller_name(depth=0):
    """Module name (`__name__`) of the caller, `depth` frames further up."""
    frame = inspect.currentframe().f_back
    for _ in range(depth):
        frame = frame.f_back
    return frame.f_globals["__name__"]


class StreamToLoguru:
    """A file-like stream that sends what the modules named in `caller_names` print to loguru, and passes the
    rest through to the real stdout."""

    def __init__(self, level="INFO", caller_names=("apex", "pycocotools")):
        self.level = level
        self.caller_names = caller_names

    def write(self, buf):
        module_name = get_caller_name(depth=1).split(".")[0]
        if module_name in self.caller_names:
            for line in buf.rstrip().splitlines():
                logger.opt(depth=2).log(self.level, line.rstrip())
        else:
            sys.__stdout__.write(buf)

    def flush(self):
        sys.__stdout__.flush()

    def isatty(self):
        return False


def redirect_sys_output(log_level="INFO"):
    """Route sys.stdout and sys.stderr through StreamToLoguru (official helper; setup_logger does not call it)."""
    redirect_logger = StreamToLoguru(log_level)
    sys.stderr = redirect_logger
    sys.stdout = redirect_logger


def setup_logger(save_dir, distributed_rank=0, filename="log.txt", mode="a"):
    """Send loguru's output to the console and to `save_dir/filename` on rank 0; other ranks only show errors.

    mode "a" appends to an existing file, "o" overwrites it. Unlike the official release, sys.stdout and
    sys.stderr are left alone (what other libraries print stays visible as they print it).
    """
    logger.remove()
    save_file = os.path.join(save_dir, filename)
    if distributed_rank == 0:
        if mode == "o" and os.path.exists(save_file):
            os.remove(save_file)
        logger.add(sys.stderr, format=LOGURU_FORMAT, level="INFO")
        logger.add(save_file, format=LOGURU_FORMAT, level="INFO", mode="a")
    else:
        logger.add(sys.stderr, format=f"[rank {distributed_rank}] " + LOGURU_FORMAT, level="ERROR")
    return logger
