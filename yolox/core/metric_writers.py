"""Where a run's numbers go: the console (the official log line), metrics.jsonl, tensorboard, wandb and mlflow.

The Trainer makes one MetricRecord per logged iteration and per evaluation and hands it to one list of writers
(`MetricWriters.write`); each writer shows what it shows of it. Rank 0 writes everything; the other ranks only log.
"""
import datetime
import functools
import json
import os
from dataclasses import dataclass, field

from loguru import logger

from yolox.utils import MatplotlibMissing, MlflowLogger, WandbLogger, plot_training_curve

from .parts import TrainerPart, call_each

__all__ = ["MetricRecord", "MetricWriter", "ConsoleWriter", "JsonlWriter", "TensorboardWriter", "WandbWriter",
           "MlflowWriter", "MetricWriters", "METRICS_FILE", "CURVE_FILE"]

# one JSON object per logged iteration and per evaluation, appended by rank 0 beside train_log.txt: the same numbers
# as the log lines, at full precision, for curves and scripts
METRICS_FILE = "metrics.jsonl"
CURVE_FILE = "training_curve.png"  # drawn from METRICS_FILE at the end of a finished run (matplotlib)


@dataclass
class MetricRecord:
    """kind: "train" (a logged iteration) or "eval" (an evaluation); iteration and epoch: 1-based, of the run;
    values: the numbers metrics.jsonl keeps (train: lr, the loss terms, iter_time / data_time averages, size, rss_gb,
    gpu_mem_mb; eval: AP50_95, AP50); context: what only some writers show (the console line's progress and ETA,
    the evaluation's summary, the best AP, the predictions for wandb's images)."""

    kind: str
    iteration: int
    epoch: int
    values: dict
    context: dict = field(default_factory=dict)

    def losses(self):
        return {k: v for k, v in self.values.items() if k.endswith("_loss")}

    def train_scalars(self):
        """The trackers' names of a train record: train/lr and train/<loss term>."""
        return {"train/lr": self.values["lr"], **{f"train/{k}": v for k, v in self.losses().items()}}

    def eval_scalars(self):
        return {"val/COCOAP50": self.values["AP50"], "val/COCOAP50_95": self.values["AP50_95"]}


class MetricWriter:
    """One destination of the run's numbers; every method does nothing by default."""

    wants_predictions = False  # whether write() of an evaluation needs the per-image predictions in its context

    def write(self, record):
        pass

    def checkpoint_saved(self, folder, epoch, update_best, metadata):
        """After the checkpoints of an evaluation are saved (epoch: 0-based, the trainer's self.epoch)."""

    def close(self, trainer, finished):
        """At the end of training; finished: every epoch ran (not a stop or an error)."""


class ConsoleWriter(MetricWriter):
    """The official progress line of each logged iteration, and the evaluation's summary."""

    def write(self, record):
        ctx = record.context
        if record.kind == "eval":
            logger.info("\n" + (ctx.get("summary") or ""))
            logger.info(f"Evaluation at epoch {record.epoch}/{ctx['max_epoch']}, iteration {record.iteration}: "
                        f"AP50:95 {record.values['AP50_95']:.4f}, AP50 {record.values['AP50']:.4f}, "
                        f"best AP50:95 {ctx['best_ap']:.4f}")
            return
        v = record.values
        progress_str = "epoch: {}/{}, iter: {}/{}".format(record.epoch, ctx["max_epoch"], ctx["iter"],
                                                          ctx["max_iter"])
        mem_str = "gpu mem: {:.0f}Mb, mem: {:.1f}Gb".format(v["gpu_mem_mb"], v["rss_gb"])
        time_str = ", ".join("{}: {:.3f}s".format(k, v[k]) for k in ctx["time_keys"])
        loss_str = ", ".join("{}: {:.1f}".format(k, x) for k, x in record.losses().items())
        eta_str = "ETA: {}".format(datetime.timedelta(seconds=int(ctx["eta_seconds"])))
        logger.info("{}, {}, {}, {}, lr: {:.3e}".format(progress_str, mem_str, time_str, loss_str, v["lr"])
                    + ", size: {:d}, {}".format(v["size"], eta_str))


class JsonlWriter(MetricWriter):
    """metrics.jsonl beside train_log.txt, and training_curve.png drawn from it when the run finishes."""

    def __init__(self, folder):
        self.path = os.path.join(folder, METRICS_FILE)

    def write(self, record):
        with open(self.path, "a") as f:
            f.write(json.dumps({"iteration": record.iteration, "epoch": record.epoch, **record.values}) + "\n")

    def close(self, trainer, finished):
        if not finished or not os.path.isfile(self.path):
            return
        out = os.path.join(os.path.dirname(self.path), CURVE_FILE)
        try:
            plot_training_curve(self.path, out,
                                title=f"{trainer.args.experiment_name}: best AP50:95 {trainer.best_ap:.3f}")
        except MatplotlibMissing as e:
            logger.info(f"no {CURVE_FILE}: {e}")
            return
        logger.info(f"training curve: {out}")


class TensorboardWriter(MetricWriter):
    """tensorboard/ scalars: the losses and lr per logged iteration, the AP per epoch."""

    def __init__(self, summary_writer):
        self.tb = summary_writer

    def write(self, record):
        if record.kind == "eval":
            for k, v in record.eval_scalars().items():
                self.tb.add_scalar(k, v, record.epoch)
            return
        for k, v in record.train_scalars().items():
            self.tb.add_scalar(k, v, record.iteration)

    def close(self, trainer, finished):
        self.tb.close()


class WandbWriter(MetricWriter):
    """-l wandb: the scalars, the first validation images with their boxes, the checkpoints as artifacts."""

    def __init__(self, wandb_logger):
        self.wandb = wandb_logger
        self.wants_predictions = wandb_logger.num_log_images > 0

    def write(self, record):
        if record.kind == "eval":
            self.wandb.log_metrics({**record.eval_scalars(), "train/epoch": record.epoch})
            self.wandb.log_images(record.context.get("predictions"))
            return
        self.wandb.log_metrics(record.train_scalars(), step=record.iteration)

    def checkpoint_saved(self, folder, epoch, update_best, metadata):
        self.wandb.save_checkpoint(folder, "last_epoch", update_best, metadata)

    def close(self, trainer, finished):
        self.wandb.finish(exit_code=0 if finished else 1)  # a run that did not reach its last epoch: failed


class MlflowWriter(MetricWriter):
    """-l mlflow: the scalars, the settings, and the checkpoints as artifacts (YOLOX_MLFLOW_* settings)."""

    def __init__(self, mlflow_logger, args, exp):
        self.mlflow, self.args, self.exp = mlflow_logger, args, exp

    def write(self, record):
        if record.kind == "eval":
            scores = {**record.eval_scalars(), "val/best_ap": record.context["best_ap"]}
            self.mlflow.on_log(self.args, self.exp, record.epoch, scores)
            return
        self.mlflow.on_log(self.args, self.exp, record.iteration, record.train_scalars())

    def checkpoint_saved(self, folder, epoch, update_best, metadata):
        self.mlflow.save_checkpoints(self.args, self.exp, folder, epoch, metadata, update_best)

    def close(self, trainer, finished):
        self.mlflow.on_train_end(self.args, trainer.file_name, trainer.tracker_metadata(),
                                 status="FINISHED" if finished else "KILLED")


class MetricWriters(TrainerPart):
    """The run's writers as one: write(record) goes to each. Built in before_train, once the evaluator exists (wandb
    takes its validation images from it): the console everywhere, the files and the -l logger on rank 0."""

    def __init__(self):
        self.writers = [ConsoleWriter()]

    @property
    def wants_predictions(self):
        return any(w.wants_predictions for w in self.writers)

    def write(self, record):
        for writer in self.writers:
            writer.write(record)

    def checkpoint_saved(self, folder, epoch, update_best, metadata):
        for writer in self.writers:
            writer.checkpoint_saved(folder, epoch, update_best, metadata)

    def before_train(self, trainer):
        if trainer.rank != 0:
            return
        self.writers.append(JsonlWriter(trainer.file_name))
        choice = getattr(trainer.args, "logger", None)
        if choice == "tensorboard":
            writer = _tensorboard_writer(trainer)
            if writer is not None:
                trainer.tblogger = writer.tb
                self.writers.append(writer)
        elif choice == "wandb":
            trainer.wandb_logger = WandbLogger.initialize_from_args(trainer.args, trainer.exp,
                                                                    trainer.evaluator.dataloader.dataset)
            self.writers.append(WandbWriter(trainer.wandb_logger))
        elif choice == "mlflow":
            trainer.mlflow_logger = MlflowLogger()
            trainer.mlflow_logger.setup(args=trainer.args, exp=trainer.exp)
            self.writers.append(MlflowWriter(trainer.mlflow_logger, trainer.args, trainer.exp))

    def after_train(self, trainer, finished):
        """Close the writers, the trackers before the curve, each even when another fails (the first error is
        raised after); the Trainer's logger attributes are cleared as the trackers end."""
        writers, self.writers = self.writers, [ConsoleWriter()]
        try:
            call_each(functools.partial(writer.close, trainer, finished) for writer in reversed(writers))
        finally:
            trainer.tblogger = trainer.wandb_logger = trainer.mlflow_logger = None


def _tensorboard_writer(trainer):
    """tensorboard/ in the run folder; None when tensorboard is not installed and -l did not ask for it."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        if getattr(trainer.args, "logger_explicit", True):
            raise ValueError(
                "-l tensorboard needs the tensorboard package: pip install -e '.[tensorboard]' "
                "(or pip install tensorboard), or leave out -l"
            ) from None
        logger.info("tensorboard is not installed: no tensorboard/ scalars (pip install -e '.[tensorboard]')")
        return None
    return TensorboardWriter(SummaryWriter(os.path.join(trainer.file_name, "tensorboard")))
