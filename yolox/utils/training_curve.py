"""The training curve of a run: its losses and its AP per evaluation against the iteration, read from the run's
metrics.jsonl (written by the Trainer beside train_log.txt) and drawn with matplotlib (an optional extra)."""
import json
import os

__all__ = ["read_run_metrics", "plot_training_curve", "MatplotlibMissing"]

LOSS_SERIES = ("total_loss", "iou_loss", "conf_loss", "cls_loss", "l1_loss")


class MatplotlibMissing(ImportError):
    """matplotlib is not installed; the message says how to install it."""


def read_run_metrics(path):
    """(train records, evaluation records) of a metrics.jsonl, each sorted by iteration; a record written twice for
    one iteration (a resumed run repeats the iterations after its checkpoint) keeps its last value."""
    train, evals = {}, {}
    with open(path) as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            record = json.loads(line)
            (evals if "AP50" in record else train)[record["iteration"]] = record
    return [train[k] for k in sorted(train)], [evals[k] for k in sorted(evals)]


def plot_training_curve(metrics_path, out_path, title=None):
    """Draw the losses and AP50 (and AP50:95) per evaluation against the iteration into out_path (a PNG)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise MatplotlibMissing(
            "drawing the training curve needs matplotlib: pip install matplotlib (or pip install -e '.[plot]')"
        ) from None
    train, evals = read_run_metrics(metrics_path)
    fig, (ax_loss, ax_ap) = plt.subplots(1, 2, figsize=(11, 4.2))
    iterations = [r["iteration"] for r in train]
    for name in LOSS_SERIES:
        values = [r.get(name) for r in train]
        if any(v for v in values):
            ax_loss.plot(iterations, values, label=name, linewidth=1.2 if name == "total_loss" else 0.9)
    ax_loss.set_xlabel("iteration")
    ax_loss.set_ylabel("loss")
    ax_loss.set_title("training losses")
    ax_loss.grid(alpha=0.3)
    if train:
        ax_loss.legend(fontsize=8)
    eval_iters = [r["iteration"] for r in evals]
    ax_ap.plot(eval_iters, [r["AP50"] for r in evals], "o-", label="AP50", markersize=3)
    ax_ap.plot(eval_iters, [r["AP50_95"] for r in evals], "s-", label="AP50:95", markersize=3)
    ax_ap.set_xlabel("iteration")
    ax_ap.set_ylabel("AP (val)")
    ax_ap.set_ylim(0, max([0.1] + [r["AP50"] for r in evals]) * 1.1)
    ax_ap.set_title("COCO AP per evaluation")
    ax_ap.grid(alpha=0.3)
    ax_ap.legend(fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(out_path)), exist_ok=True)
    fig.savefig(out_path, dpi=110)
    plt.close(fig)
    return out_path
