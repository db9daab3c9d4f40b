"""Running a command line's main: user errors as one clear log line and exit status 2, bugs with a traceback."""
import sys

from loguru import logger

from yolox.utils import CheckpointError

__all__ = ["USER_ERRORS", "run_cli"]

# Errors whose message already tells the user which file or value to fix.
USER_ERRORS = (CheckpointError, FileNotFoundError, ValueError, NotImplementedError)


def run_cli(main, argv=None):
    """Call main(argv); exit 2 on a user error (message only), 1 on anything else (with traceback)."""
    try:
        return main(argv)
    except USER_ERRORS as e:
        logger.error(f"{type(e).__name__}: {e}")
        sys.exit(2)
    except Exception:
        logger.exception("failed")
        sys.exit(1)


def apply_test_overrides(exp, args):
    """--conf, --nms and --tsize of eval/demo override the Exp's test_conf, nmsthre and test_size."""
    if args.conf is not None:
        exp.test_conf = args.conf
    if args.nms is not None:
        exp.nmsthre = args.nms
    if args.tsize is not None:
        exp.test_size = (args.tsize, args.tsize)
