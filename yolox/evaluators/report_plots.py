"""The files of the run report: PR/F1/P/R curves and confusion matrices (matplotlib, an optional extra), the confusion
matrix as csv and the per-class table as text (always), and val_batch pictures (cv2); each file written whole or
not at all (temporary name, then os.replace)."""
import csv
import io
import os

import cv2
import numpy as np

from yolox.utils import MatplotlibMissing, color_for
from yolox.utils.data_pictures import write_image_atomic

from .run_report import RunReport

__all__ = ["write_report", "write_confusion_csv", "plot_pr_curve", "plot_confidence_curve", "plot_confusion_matrix",
           "draw_val_batch", "write_val_batch", "REPORT_TABLE_FILE", "CONFUSION_CSV_FILE"]

REPORT_TABLE_FILE = "per_class_table.txt"
CONFUSION_CSV_FILE = "confusion_matrix.csv"
_LEGEND_MAX_CLASSES = 20  # beyond this a per-class legend hides the plot: the thin lines stay, unlabelled
_ANNOTATE_MAX_CLASSES = 30  # numbers in the confusion matrix's cells up to this many classes
_TILE_MAX = 640  # side of one image of a val_batch grid
_GRID_MAX = 1920  # longest side of a val_batch picture
_MAX_GRID_IMAGES = 16


def _temporary_name(path):
    """A temporary name beside path with its suffix (the encoders read the format from it)."""
    folder, name = os.path.split(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    stem, suffix = os.path.splitext(name)
    return os.path.join(folder, f".{stem}.{os.getpid()}.tmp{suffix}")  # the process id keeps two writers apart


def _write_atomic(path, write):
    """Call write(temporary path), then move the file onto path; nothing is left behind on an error."""
    tmp = _temporary_name(path)
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path


def _write_text(path, text):
    def write(tmp):
        with open(tmp, "w", newline="") as f:
            f.write(text)

    return _write_atomic(path, write)


def _pyplot():
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise MatplotlibMissing(
            "drawing the run report's curves needs matplotlib: pip install matplotlib (or pip install -e '.[plot]')"
        ) from None
    return plt


def _save_figure(plt, fig, path, dpi=110):
    try:
        return _write_atomic(path, lambda tmp: fig.savefig(tmp, dpi=dpi, format="png"))
    finally:
        plt.close(fig)


def write_confusion_csv(report: RunReport, path):
    """The counts [predicted, true] with class names as header and first column, "background" last."""
    names = list(report.class_names) + ["background"]
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["predicted \\ true"] + names)
    for name, row in zip(names, report.confusion.tolist()):
        writer.writerow([name] + row)
    return _write_text(path, buffer.getvalue())


def _per_class_lines(ax, x, curves, report, labels):
    """Thin per-class lines (labelled only when the legend stays readable)."""
    labelled = len(report.class_names) <= _LEGEND_MAX_CLASSES
    for k in np.flatnonzero(report.has_instances):
        ax.plot(x, curves[k], linewidth=0.8, alpha=0.6 if labelled else 0.25,
                color=np.asarray(color_for(k)[::-1]) / 255, label=labels[k] if labelled else None)


def _finish_axes(ax, xlabel, ylabel, title):
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.01)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(bbox_to_anchor=(1.02, 1), loc="upper left", fontsize=7)


def plot_pr_curve(report: RunReport, path):
    """PR_curve.png: interpolated precision against recall per class (AP50 in the legend) and for all classes."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(9, 6))
    labels = [f"{n} {ap:.3f}" for n, ap in zip(report.class_names, report.ap50)]
    _per_class_lines(ax, report.recall_grid, report.pr_curve, report, labels)
    mean_pr = report.pr_curve[report.has_instances].mean(axis=0) if report.has_instances.any() else report.recall_grid * 0
    ax.plot(report.recall_grid, mean_pr, linewidth=3, color="#1f4e9c",
            label=f"all classes {report.mean(report.ap50):.3f} AP50")
    _finish_axes(ax, "recall", "precision", f"precision-recall at IoU {report.iou}")
    fig.tight_layout()
    return _save_figure(plt, fig, path)


_CURVES = {"F1": ("f1_curve", "F1"), "P": ("p_curve", "precision"), "R": ("r_curve", "recall")}


def plot_confidence_curve(report: RunReport, which, path):
    """F1_curve.png, P_curve.png or R_curve.png (which = "F1", "P" or "R") against confidence, best F1 marked."""
    attr, ylabel = _CURVES[which]
    plt = _pyplot()
    curves = getattr(report, attr)  # (K, C)
    fig, ax = plt.subplots(figsize=(9, 6))
    _per_class_lines(ax, report.conf_grid, curves, report, list(report.class_names))
    mean = curves[report.has_instances].mean(axis=0) if report.has_instances.any() else report.conf_grid * 0
    best = int(np.argmin(np.abs(report.conf_grid - report.best_conf)))
    ax.plot(report.conf_grid, mean, linewidth=3, color="#1f4e9c",
            label=f"all classes {mean[best]:.3f} at {report.best_conf:.3f}")
    ax.axvline(report.best_conf, color="#c44e52", linestyle="--", linewidth=1,
               label=f"best F1 {report.best_f1:.3f} at conf {report.best_conf:.3f}")
    _finish_axes(ax, "confidence", ylabel, f"{ylabel} against confidence (best F1 at {report.best_conf:.3f})")
    fig.tight_layout()
    return _save_figure(plt, fig, path)


def _column_normalised(cm):
    """cm with each column (true class) summing to 1; an empty column stays 0."""
    total = cm.sum(axis=0, keepdims=True).astype(np.float64)  # (1, K+1)
    return np.divide(cm, total, out=np.zeros(cm.shape), where=total > 0)


def plot_confusion_matrix(report: RunReport, path, normalize=False):
    """confusion_matrix(_normalized).png: rows predicted, columns true, background last; normalised per column."""
    plt = _pyplot()
    cm = _column_normalised(report.confusion) if normalize else report.confusion
    names = list(report.class_names) + ["background"]
    n = len(names)
    side = min(14, max(6, 0.18 * n + 3))  # 81 rows stay legible at 14 inches
    fig, ax = plt.subplots(figsize=(side + 1.5, side))
    shown = np.where(cm > 0, cm, np.nan)  # empty cells blank, so the structure shows
    image = ax.imshow(shown, cmap="Blues", vmin=0, vmax=1 if normalize else None, interpolation="nearest")
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    font = 8 if n <= _ANNOTATE_MAX_CLASSES else 5
    ax.set_xticks(np.arange(n))
    ax.set_yticks(np.arange(n))
    ax.set_xticklabels(names, rotation=90, fontsize=font)
    ax.set_yticklabels(names, fontsize=font)
    if n <= _ANNOTATE_MAX_CLASSES:
        peak = np.nanmax(shown) if np.isfinite(shown).any() else 1
        for (i, j), v in np.ndenumerate(cm):
            if v > 0:
                ax.text(j, i, f"{v:.2f}" if normalize else str(int(v)), ha="center", va="center", fontsize=6,
                        color="white" if v > 0.6 * peak else "black")
    ax.set_xlabel("true")
    ax.set_ylabel("predicted")
    kind = "normalised per true class" if normalize else "counts"
    ax.set_title(f"confusion matrix ({kind}), IoU {report.iou}, conf {report.confusion_conf:.3f}")
    fig.tight_layout()
    return _save_figure(plt, fig, path)


def write_report(report: RunReport, out_dir):
    """Write the report's files into out_dir and return their paths: the csv and the table first, then the PNGs.

    Without matplotlib, MatplotlibMissing is raised once the csv and the table are written."""
    os.makedirs(out_dir, exist_ok=True)
    written = [write_confusion_csv(report, os.path.join(out_dir, CONFUSION_CSV_FILE)),
               _write_text(os.path.join(out_dir, REPORT_TABLE_FILE), report.table())]
    _pyplot()  # fail here, after the files that need no matplotlib
    written.append(plot_pr_curve(report, os.path.join(out_dir, "PR_curve.png")))
    for which in ("F1", "P", "R"):
        written.append(plot_confidence_curve(report, which, os.path.join(out_dir, f"{which}_curve.png")))
    written.append(plot_confusion_matrix(report, os.path.join(out_dir, "confusion_matrix.png")))
    written.append(plot_confusion_matrix(report, os.path.join(out_dir, "confusion_matrix_normalized.png"), True))
    return written


# ---------------------------------------------------------------------------------------------------------------
# val_batch pictures


def _tile(img, side):
    """(img resized to fit a side x side tile at its top left on grey 114, the scale applied)."""
    h, w = img.shape[:2]
    scale = min(side / h, side / w)
    tile = np.full((side, side, 3), 114, dtype=np.uint8)
    nh, nw = max(1, int(round(h * scale))), max(1, int(round(w * scale)))
    resized = cv2.resize(img, (nw, nh), interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
    if resized.ndim == 2:
        resized = cv2.cvtColor(resized, cv2.COLOR_GRAY2BGR)
    tile[:nh, :nw] = resized[:, :, :3]
    return tile, scale


def _draw_labelled_boxes(tile, boxes, classes, texts):
    """Boxes (n, 4) x1y1x2y2 in tile pixels, coloured by class, with their texts; in place."""
    font = cv2.FONT_HERSHEY_SIMPLEX
    for box, cls, text in zip(np.round(boxes).astype(int), classes, texts):
        color = color_for(cls)
        cv2.rectangle(tile, (box[0], box[1]), (box[2], box[3]), color, 1)
        (tw, th), _ = cv2.getTextSize(text, font, 0.35, 1)
        y = max(box[1], th + 2)
        cv2.rectangle(tile, (box[0], y - th - 2), (box[0] + tw + 1, y), color, -1)
        cv2.putText(tile, text, (box[0], y - 2), font, 0.35, (255, 255, 255), 1, cv2.LINE_AA)


def _name(class_names, cls):
    return class_names[cls] if 0 <= cls < len(class_names) else f"class {cls}"


def _grid(tiles, captions):
    """Tiles (each side x side x 3) in a near-square grid with white separators and a caption each."""
    n, side = len(tiles), tiles[0].shape[0]
    cols = int(np.ceil(np.sqrt(n)))
    rows = int(np.ceil(n / cols))
    grid = np.full((rows * side, cols * side, 3), 255, dtype=np.uint8)
    for i, tile in enumerate(tiles):
        r, c = divmod(i, cols)
        if captions is not None:
            cv2.putText(tile, str(captions[i]), (3, side - 5), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (255, 255, 255), 1,
                        cv2.LINE_AA)
        grid[r * side:(r + 1) * side, c * side:(c + 1) * side] = tile
        cv2.rectangle(grid, (c * side, r * side), ((c + 1) * side - 1, (r + 1) * side - 1), (255, 255, 255), 1)
    return grid


def draw_val_batch(images, labels, preds, class_names, conf=0.25, captions=None):
    """(labels picture, predictions picture) of up to 16 images (each (h, w, 3) BGR uint8, any size) in a grid.

    labels: per image an (n, 5) array x1y1x2y2 + class index in that image's pixels; preds: per image (m, 6)
    x1y1x2y2 + score + class index, drawn when score >= conf with "name score"."""
    n = min(len(images), _MAX_GRID_IMAGES)
    if n == 0:
        raise ValueError("draw_val_batch needs at least one image")
    cols = int(np.ceil(np.sqrt(n)))
    side = int(min(_TILE_MAX, _GRID_MAX // cols))
    label_tiles, pred_tiles = [], []
    for i in range(n):
        tile, scale = _tile(np.asarray(images[i]), side)
        gt = np.asarray(labels[i], dtype=np.float64).reshape(-1, 5)
        det = np.asarray(preds[i], dtype=np.float64).reshape(-1, 6)
        det = det[det[:, 4] >= conf]
        gt_cls, det_cls = gt[:, 4].astype(int), det[:, 5].astype(int)
        label_tile, pred_tile = tile, tile.copy()
        _draw_labelled_boxes(label_tile, gt[:, :4] * scale, gt_cls, [_name(class_names, c) for c in gt_cls])
        _draw_labelled_boxes(pred_tile, det[:, :4] * scale, det_cls,
                             [f"{_name(class_names, c)} {s:.2f}" for c, s in zip(det_cls, det[:, 4])])
        label_tiles.append(label_tile)
        pred_tiles.append(pred_tile)
    captions = None if captions is None else list(captions)[:n]
    return _grid(label_tiles, captions), _grid(pred_tiles, captions)


def write_val_batch(out_dir, index, images, labels, preds, class_names, conf=0.25, captions=None):
    """val_batch{index}_labels.jpg and val_batch{index}_pred.jpg in out_dir (see draw_val_batch); their paths."""
    label_img, pred_img = draw_val_batch(images, labels, preds, class_names, conf=conf, captions=captions)
    return [write_image_atomic(os.path.join(out_dir, f"val_batch{index}_labels.jpg"), label_img),
            write_image_atomic(os.path.join(out_dir, f"val_batch{index}_pred.jpg"), pred_img)]
