"""Running a command line's main: user errors as one clear log line and exit status 2, bugs with a traceback."""
import sys

from loguru import logger

from yolox.core import NonFiniteLossError, TrainingInterrupted
from yolox.core.launch import ProcessLost
from yolox.data import CorruptImageError
from yolox.utils import CheckpointError, MatplotlibMissing

__all__ = ["USER_ERRORS", "EXIT_USER_ERROR", "EXIT_INTERRUPTED", "run_cli", "user_message", "apply_test_overrides"]

# Errors whose message already tells the user which file or value to fix.
USER_ERRORS = (CheckpointError, FileNotFoundError, ValueError, NotImplementedError, CorruptImageError,
               MatplotlibMissing)
EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130

_WORKER_TRACEBACK = "Original Traceback (most recent call last):"


def user_message(error):
    """`Type: message` of an error, without the traceback that DataLoader workers put into re-raised messages."""
    text = str(error)
    if _WORKER_TRACEBACK in text:
        # "Caught X in DataLoader worker process 0.\nOriginal Traceback ...\nX: the message": keep the message
        marker = f"{type(error).__name__}: "
        tail = text.rsplit(marker, 1)
        text = tail[1].strip() if len(tail) == 2 else text.splitlines()[-1]
    return f"{type(error).__name__}: {text}"


def run_cli(main, argv=None):
    """Call main(argv); exit 2 on a user error (message only), 130 after a clean Ctrl-C stop, 1 on anything else
    (with traceback). A launched process that failed has said why itself; its exit status is passed on."""
    try:
        return main(argv)
    except (*USER_ERRORS, NonFiniteLossError) as e:
        logger.error(user_message(e))
        sys.exit(EXIT_USER_ERROR)
    except TrainingInterrupted as e:
        logger.warning(str(e))
        sys.exit(getattr(e, "exit_code", EXIT_INTERRUPTED))
    except ProcessLost as e:
        if str(e):
            logger.error(str(e))
        sys.exit(e.exit_code)
    except KeyboardInterrupt:
        logger.warning("interrupted")
        sys.exit(EXIT_INTERRUPTED)
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

