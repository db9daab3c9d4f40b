"""The run's checkpoints: what a resume restores (the one place that writes and reads that state), the files written
atomically by rank 0 (`<name>_ckpt.pth`, best_ckpt.pth), and the files read back to resume a run or to fine-tune
from, with one clear message when a file does not fit the model."""
import errno
import os
import shutil

from loguru import logger

from yolox.exp import describe_run, mismatch_hint
from yolox.utils import (
    CheckpointError,
    CheckpointMismatchError,
    CheckpointSaveError,
    atomic_save,
    check_fits,
    checkpoint_num_classes,
    get_rng_states,
    unwrap_model,
    load_checkpoint_file,
    state_dict_from_checkpoint,
)

__all__ = ["Checkpointer", "make_output_dir", "check_fits_or_explain", "save_failure_message",
           "output_failure_message", "DISK_ERRNOS"]


class Checkpointer:
    """The checkpoints of `trainer`'s run, in trainer.file_name (read when used: a Trainer subclass may change it),
    loaded onto trainer.device."""

    def __init__(self, trainer):
        self.trainer = trainer
        self._description = None
        # a function wrapping the next save's open file (atomic_save's wrap), used once: yolox.core.faults sets it
        self.write_fault = None

    def description(self):
        """What every checkpoint of the run carries beside the training state (yolox.exp.CHECKPOINT_KEYS): class
        names, the Exp's plain settings, the model's config; computed at the first save, kept for the run."""
        if self._description is None:
            trainer = self.trainer
            self._description = describe_run(trainer.exp, unwrap_model(trainer.model), _class_names(trainer.exp),
                                             exp_file=getattr(trainer.args, "exp_file", None))
        return self._description

    @property
    def folder(self):
        return self.trainer.file_name

    @property
    def device(self):
        return self.trainer.device

    def path(self, name):
        return os.path.join(self.folder, f"{name}_ckpt.pth")

    def save(self, state, name, best=False):
        """Write `<name>_ckpt.pth` (and best_ckpt.pth with best), each whole or not at all (rank 0 calls it)."""
        path = self.path(name)
        logger.info("Save weights to {}".format(path))
        self._write(state, path)
        if best:
            self._write(state, os.path.join(self.folder, "best_ckpt.pth"))

    def _write(self, state, path):
        """atomic_save; a failure (a full disk, an I/O error, no permission) is a CheckpointSaveError of one line."""
        wrap, self.write_fault = self.write_fault, None
        try:
            atomic_save(state, path, wrap=wrap)
        except OSError as e:
            raise CheckpointSaveError(save_failure_message(path, e, self.path("latest"))) from e

    # ---------------------------------------------------------------------------------------- the training state
    @staticmethod
    def state(trainer, next_iteration=None):
        """Everything a resume restores: the Trainer's own state and each part's (trainer.parts); "model" holds the
        EMA weights (as the published files), "raw_model" the trained ones; class names, Exp settings and model
        config ride along (a resume ignores them). next_iteration: where the resumed run starts (default: the next
        epoch)."""
        if next_iteration is None:
            next_iteration = (trainer.epoch + 1) * trainer.max_iter
        raw = unwrap_model(trainer.model).state_dict()
        ema = trainer.ema_model if trainer.use_model_ema else None
        state = {
            "start_epoch": next_iteration // trainer.max_iter,
            "model": ema.ema.state_dict() if ema is not None else raw,
            "optimizer": trainer.optimizer.state_dict(),
            "best_ap": trainer.best_ap,
            "curr_ap": trainer.curr_ap,
            "iteration": next_iteration,
            "iters_per_epoch": trainer.max_iter,
            "input_size": list(trainer.input_size),
            "rng": get_rng_states(),
        }
        checkpointer = getattr(trainer, "checkpointer", None)
        if checkpointer is not None:
            state.update(checkpointer.description())  # "class_names", "exp" (a dict of settings), "model_config"
        for part in trainer.parts:
            state.update(part.state_dict(trainer))
        if ema is not None:
            state["raw_model"] = raw
            state["ema_updates"] = ema.updates
        if trainer.scaler.is_enabled():
            state["scaler"] = trainer.scaler.state_dict()
        return state

    def resume(self, trainer, model):
        """--resume: load the checkpoint (-c, or the run's latest_ckpt.pth) into model, the optimiser, the scaler,
        the Trainer's scores, input size and start epoch, and the parts; returns it for what is built later (the
        EMA, the position in the epoch, the RNG states)."""
        ckpt_file = self.resume_file(trainer.args.ckpt)
        ckpt = self.load_for_resume(model, ckpt_file)
        if "optimizer" in ckpt:
            try:
                trainer.optimizer.load_state_dict(ckpt["optimizer"])
            except (ValueError, KeyError, TypeError) as e:
                raise CheckpointError(
                    f"checkpoint {ckpt_file!r}: its optimizer state does not fit this run's optimizer ({e}), e.g. "
                    "written with other frozen layers or another optimizer; resume with the settings it was "
                    f"written with, or fine-tune from its weights with -c {ckpt_file} (without --resume)"
                ) from e
        if "scaler" in ckpt and trainer.scaler.is_enabled():
            trainer.scaler.load_state_dict(ckpt["scaler"])
        trainer.best_ap = float(ckpt.get("best_ap", 0.0))
        trainer.curr_ap = float(ckpt.get("curr_ap", 0.0))
        if ckpt.get("input_size") is not None:
            trainer.input_size = tuple(int(v) for v in ckpt["input_size"])
        for part in trainer.parts:
            part.load_state_dict(ckpt, trainer)
        if trainer.args.start_epoch is not None:
            trainer.start_epoch = trainer.args.start_epoch - 1
            ckpt.pop("iteration", None)  # -e: from the start of that epoch
        else:
            trainer.start_epoch = int(ckpt.get("start_epoch", 0))
        logger.info(f"loaded checkpoint '{ckpt_file}' (epoch {trainer.start_epoch})")
        return ckpt

    @staticmethod
    def resume_position(ckpt, max_iter, start_epoch):
        """(epoch, iteration in it) to resume at, now that the epoch length is known (mid-epoch checkpoints of a
        stop); the start of start_epoch for a fresh run or one written with another epoch length."""
        if ckpt is None or "iteration" not in ckpt:
            return start_epoch, 0
        if int(ckpt.get("iters_per_epoch", -1)) != max_iter:
            logger.warning(f"the checkpoint was written with {ckpt.get('iters_per_epoch')} iterations per epoch and "
                           f"this run has {max_iter} (batch size or data changed): resuming at epoch "
                           f"{start_epoch + 1} from its first iteration")
            return start_epoch, 0
        return divmod(int(ckpt["iteration"]), max_iter)

    @staticmethod
    def restore_ema(ema, ckpt, max_iter, start_epoch, start_iter):
        """The EMA from a checkpoint of this project; else (a fresh run, or an official checkpoint, whose "model" is
        the EMA and was loaded into the model) rebuilt as the official does."""
        if ckpt is not None and "raw_model" in ckpt:
            ema.ema.load_state_dict(ckpt["model"])
            ema.updates = int(ckpt.get("ema_updates", max_iter * start_epoch))
        else:
            ema.updates = max_iter * start_epoch + start_iter

    # ---------------------------------------------------------------------------------------- the files
    def resume_file(self, ckpt_arg):
        """The checkpoint --resume continues from: -c, or the run's latest_ckpt.pth."""
        ckpt_file = ckpt_arg or self.path("latest")
        if not os.path.isfile(ckpt_file):
            raise FileNotFoundError(
                f"--resume found no checkpoint at {ckpt_file}: train without --resume to start afresh, or give "
                "the checkpoint to resume with -c (and the experiment name with -expn)"
            )
        return ckpt_file

    def load_for_resume(self, model, ckpt_file):
        """Load the raw weights a run was training (the EMA of an official or older file) into model; returns the
        whole checkpoint for the rest of the state."""
        logger.info(f"resume training from {ckpt_file}")
        ckpt = load_checkpoint_file(ckpt_file, map_location=self.device)
        weights = state_dict_from_checkpoint(ckpt, ckpt_file)  # a file that holds no weights stops here
        if isinstance(ckpt.get("raw_model"), dict):
            weights = ckpt["raw_model"]
        else:
            logger.warning(f"{ckpt_file} holds only the EMA weights (an official or older checkpoint): training "
                           "continues from them, so the resumed run is close to, not equal to, the original")
        check_fits_or_explain(model, weights, ckpt_file)
        model.load_state_dict(weights)
        return ckpt

    def load_for_fine_tuning(self, model, ckpt_file):
        """Load the checkpoint's weights where names and shapes fit; skip the class-prediction tensors of another
        class count (one log line), and refuse a checkpoint of another model size."""
        state_dict = state_dict_from_checkpoint(load_checkpoint_file(ckpt_file, map_location=self.device), ckpt_file)
        model_sd = model.state_dict()
        other_shape = [k for k, v in state_dict.items() if k in model_sd and v.shape != model_sd[k].shape]
        structural = [k for k in other_shape if ".cls_preds." not in k]
        if structural or not any(k in model_sd for k in state_dict):
            check_fits_or_explain(model, state_dict, ckpt_file)  # raises with the details
        kept = {k: v for k, v in state_dict.items() if k in model_sd and k not in other_shape}
        missing = [k for k in model_sd if k not in kept]
        if other_shape:
            logger.info(f"fine-tuning: {len(other_shape)} tensors of another shape left as initialised "
                        f"(another class count): {', '.join(other_shape)}")
        if missing and len(missing) > len(other_shape):
            logger.warning(f"fine-tuning: {len(missing) - len(other_shape)} model tensors are not in {ckpt_file} "
                           f"(e.g. {[k for k in missing if k not in other_shape][0]})")
        model.load_state_dict(kept, strict=False)


def _class_names(exp):
    """class_names_for_exp(exp); class numbers, with a warning, when the Exp's names do not fit (never stops a run)."""
    from yolox.apps.class_names import class_names_for_exp

    try:
        return class_names_for_exp(exp)
    except ValueError as e:
        logger.warning(f"checkpoints name the classes by number: {e}")
        return [str(i) for i in range(int(exp.num_classes))]


def check_fits_or_explain(model, state_dict, path):
    """check_fits, naming the published model a checkpoint of another size holds, or the class counts when only the
    class predictions differ."""
    try:
        check_fits(model, state_dict, path)
    except CheckpointMismatchError as e:
        if e.mismatched and not (e.missing or e.unexpected) and all(".cls_preds." in k for k in e.mismatched):
            found = checkpoint_num_classes(state_dict)
            have = checkpoint_num_classes(model.state_dict())
            raise CheckpointError(
                f"checkpoint {path!r} was trained for {found} classes but the Exp's model has {have} "
                f"(num_classes); resume with the Exp it was trained with, add `num_classes {found}` to the command "
                f"line, or fine-tune from it with -c {path} without --resume (its class layers are then left out)"
            ) from None
        raise CheckpointError(f"{e}{mismatch_hint(state_dict)}") from None


def save_failure_message(path, error, latest):
    """One line: the file that could not be written, why, the free space of its filesystem, what is kept, the fix."""
    reason, free, fix = _write_failure(path, error)
    if os.path.isfile(latest):
        kept = f"{latest} is intact and --resume continues from it"
    else:
        kept = "no checkpoint of this run was written before"
    return f"could not write the checkpoint {path}: {reason}; {free}. Training stopped; {kept}. Fix: {fix}"


DISK_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EIO, errno.EACCES, errno.EPERM, errno.EROFS)


def output_failure_message(path, error, run_folder):
    """One line for a file of the run's closing outputs (plots, tables, the report) that could not be written."""
    reason, free, fix = _write_failure(path, error)
    return (f"could not write {path} (the run's closing plots and tables): {reason}; {free}. The checkpoints in "
            f"{run_folder} are kept (`tools/eval.py -c best_ckpt.pth --report` draws the report again). Fix: {fix}")


def _write_failure(path, error):
    """(why, the free space of path's filesystem, the fix) of an OSError writing path."""
    folder = os.path.dirname(os.path.abspath(path))
    code = errno.errorcode.get(error.errno, "") if error.errno is not None else ""
    reason = f"{error.strerror or error}{f' ({code})' if code else ''}"
    try:
        free = f"{_size(shutil.disk_usage(folder).free)} free on that filesystem"
    except OSError:
        free = "the free space of that filesystem is unknown"
    if error.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        fix = f"make {folder} writable, or point output_dir elsewhere (e.g. `output_dir /other/disk/YOLOX_outputs`)"
    else:
        fix = ("free space there, or point output_dir at a disk with room (e.g. `output_dir /other/disk/YOLOX_outputs`"
               " on the command line)")
    return reason, free, fix


def _size(n_bytes):
    return f"{n_bytes / 2**30:.1f} GB" if n_bytes >= 2**30 else f"{n_bytes / 2**20:.0f} MB"


def make_output_dir(path):
    """Create the run folder and check that it can be written, with one clear message when it cannot."""
    try:
        os.makedirs(path, exist_ok=True)
        probe = os.path.join(path, f".write_test_{os.getpid()}")
        with open(probe, "w"):
            pass
        os.remove(probe)
    except OSError as e:
        raise CheckpointError(
            f"cannot write to the output folder {path} ({e.strerror or e}); set output_dir in the Exp or on the "
            "command line (e.g. `output_dir /tmp/YOLOX_outputs`), or choose another -expn"
        ) from None
