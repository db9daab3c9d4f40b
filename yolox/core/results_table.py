"""results.csv and results.png in the run folder: one row per epoch (mean losses, lr, AP, precision, recall, time),
the table users of other detectors look for first; drawn as one picture per column at the end of training."""
import csv
import math
import os
import time

from loguru import logger

from yolox.utils import MatplotlibMissing

from .parts import TrainerPart
from .step import LOSS_KEYS

__all__ = ["ResultsTable", "RESULTS_FILE", "RESULTS_PLOT", "RESULTS_COLUMNS", "read_results", "write_results",
           "plot_results"]

RESULTS_FILE = "results.csv"
RESULTS_PLOT = "results.png"
LOSS_COLUMNS = ("total_loss", "iou_loss", "conf_loss", "cls_loss", "l1_loss")
# AP50, AP50_95 (the names of metrics.jsonl), precision and recall are empty in epochs without evaluation
RESULTS_COLUMNS = ("epoch", *LOSS_COLUMNS, "lr", "AP50", "AP50_95", "precision", "recall", "epoch_time_s")


def read_results(path):
    """The rows of a results.csv as dicts of strings, sorted by epoch; [] when there is no file. Rows whose epoch is
    not a number (a hand-edited file) are left out."""
    if not os.path.isfile(path):
        return []
    with open(path, newline="") as f:
        rows = [row for row in csv.DictReader(f) if str(row.get("epoch", "")).strip().isdigit()]
    return sorted(rows, key=lambda row: int(row["epoch"]))


def write_results(path, rows):
    """Write the rows whole or not at all (a temporary file renamed over the old one)."""
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=RESULTS_COLUMNS, restval="", extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    os.replace(tmp, path)


def _cell(value, fmt=".6g"):
    return "" if value is None or (isinstance(value, float) and math.isnan(value)) else format(float(value), fmt)


def precision_recall(report):
    """(precision, recall) of an evaluation's report: mean over the classes of a RunReport-like object (or a dict)
    with precision and recall; (None, None) without one."""
    if report is None:
        return None, None
    values = []
    for name in ("precision", "recall"):
        value = report.get(name) if isinstance(report, dict) else getattr(report, name, None)
        if value is not None and getattr(value, "ndim", 0) > 0:
            value = report.mean(value) if hasattr(report, "mean") else float(value.mean())
        values.append(value)
    return tuple(values)


class ResultsTable(TrainerPart):
    """Rank 0 writes results.csv after every epoch (the whole file, atomically); a resumed run keeps the rows up to
    its checkpoint's epoch and a fresh one starts a new table. results.png at the end of a finished run."""

    def __init__(self):
        self.path = None
        self.rows = []
        self._loss_start = {}  # each loss meter's running total at the start of the epoch
        self._iters = 0
        self._epoch_start = None
        self._lr = None
        self._eval = None  # (AP50_95, AP50) of this epoch's evaluation

    def before_train(self, trainer):
        if trainer.rank != 0:
            return
        self.path = os.path.join(trainer.file_name, RESULTS_FILE)
        # rows after the checkpoint's epoch belong to epochs this run trains again (none for a fresh run)
        self.rows = [row for row in read_results(self.path) if int(row["epoch"]) <= trainer.start_epoch]
        if os.path.isfile(self.path):
            write_results(self.path, self.rows)

    def before_epoch(self, trainer):
        # .get: indexing the meters would create empty ones, which the log line would then print
        self._loss_start = {k: m.total for k in LOSS_KEYS if (m := trainer.meter.get(k)) is not None}
        self._iters, self._eval, self._epoch_start = 0, None, time.time()

    def after_iter(self, trainer):
        self._iters += 1

    def epoch_trained(self, trainer):
        self._lr = trainer.optimizer.param_groups[0]["lr"]  # the log line's lr: the one set after the last step

    def evaluated(self, trainer, ap50_95, ap50):
        self._eval = (ap50_95, ap50)

    def _epoch_losses(self, trainer):
        """The mean of each loss term over this epoch's iterations (the meters' running totals never reset)."""
        means = {}
        for key in LOSS_COLUMNS:
            meter = trainer.meter.get(key)
            if meter is not None and self._iters:
                means[key] = (meter.total - self._loss_start.get(key, 0.0)) / self._iters
        return means

    def after_epoch(self, trainer, evaluated):
        if trainer.rank != 0 or self.path is None:
            return
        ap50_95, ap50 = self._eval if self._eval is not None else (None, None)
        precision, recall = precision_recall(getattr(trainer, "last_eval_report", None) if self._eval else None)
        row = {"epoch": str(trainer.epoch + 1), "lr": _cell(self._lr), "AP50": _cell(ap50, ".5f"),
               "AP50_95": _cell(ap50_95, ".5f"), "precision": _cell(precision, ".5f"), "recall": _cell(recall, ".5f"),
               "epoch_time_s": _cell(time.time() - self._epoch_start, ".2f")}
        row.update({k: _cell(v) for k, v in self._epoch_losses(trainer).items()})
        self.rows = [r for r in self.rows if int(r["epoch"]) < trainer.epoch + 1] + [row]
        write_results(self.path, self.rows)

    def after_train(self, trainer, finished):
        if trainer.rank != 0 or not finished or not self.rows:
            return
        out = os.path.join(trainer.file_name, RESULTS_PLOT)
        try:
            plot_results(self.rows, out, title=f"{trainer.args.experiment_name}: results per epoch")
        except MatplotlibMissing as e:
            logger.info(f"no {RESULTS_PLOT}: {e}")
            return
        logger.info(f"results per epoch: {self.path} and {out}")


def plot_results(rows, out_path, title=None):
    """One small plot per column of results.csv (losses, lr, AP, precision and recall) against the epoch, as PNG."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib.ticker import MaxNLocator
    except ImportError:
        raise MatplotlibMissing("drawing results.png needs matplotlib: pip install matplotlib "
                                "(or pip install -e '.[plot]')") from None
    panels = [(k,) for k in LOSS_COLUMNS] + [("lr",), ("AP50", "AP50_95"), ("precision", "recall")]
    fig, axes = plt.subplots(2, 4, figsize=(14, 6))
    for ax, columns in zip(axes.flat, panels):
        for column in columns:
            points = [(int(r["epoch"]), float(r[column])) for r in rows if r.get(column)]
            if points:
                ax.plot(*zip(*points), "o-" if len(points) < 30 else "-", markersize=3, label=column)
        if not ax.lines:
            ax.text(0.5, 0.5, "no values", ha="center", va="center", transform=ax.transAxes, color="gray")
        ax.set_title(" and ".join(columns), fontsize=10)
        ax.set_xlabel("epoch", fontsize=8)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        if len(columns) > 1 and ax.lines:
            ax.legend(fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    tmp = f"{out_path}.tmp{os.getpid()}.png"
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    os.replace(tmp, out_path)
