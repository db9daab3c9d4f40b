"""Pictures of a dataset's labels: labels.png (class histogram, box sizes, box centres; matplotlib) and grids of
images with their boxes and class names (cv2), each file written whole or not at all."""
import os

import cv2
import numpy as np

from .training_curve import MatplotlibMissing
from .visualize import color_for

__all__ = ["plot_label_statistics", "draw_box_grid", "write_image_atomic", "letterbox_tile"]

_MAX_GRID_SIDE = 1920  # a picture of a batch of 64 at 640 would be 5120 pixels wide
_MAX_SCATTER_POINTS = 20000


def _atomic_target(path):
    """(temporary file in path's folder with its suffix, its name): the caller writes it, then os.replace."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    stem, suffix = os.path.splitext(os.path.basename(path))
    # the process id keeps two writers apart; the suffix tells the encoders the format
    return os.path.join(folder, f".{stem}.{os.getpid()}.tmp{suffix}")


def write_image_atomic(path, img):
    """Encode img (BGR uint8) by path's suffix and write it to path through a temporary file."""
    ok, data = cv2.imencode(os.path.splitext(path)[1], img)
    if not ok:
        raise ValueError(f"cannot encode a picture for {path}: use a .jpg or .png name")
    tmp = _atomic_target(path)
    try:
        with open(tmp, "wb") as f:
            f.write(data.tobytes())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path


def _pyplot():
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise MatplotlibMissing(
            "drawing labels.png needs matplotlib: pip install matplotlib (or pip install -e '.[plot]')"
        ) from None
    return plt


def plot_label_statistics(labels, class_names, img_size, out_path, title=None):
    """labels.png of labels (M, 5) x1y1x2y2+class at img_size (h, w): boxes per class, box width against height,
    and a heat map of the box centres."""
    plt = _pyplot()
    labels = np.asarray(labels, dtype=np.float64).reshape(-1, 5)
    h_in, w_in = img_size
    wh = labels[:, 2:4] - labels[:, 0:2]  # (M, 2)
    centres = (labels[:, 0:2] + labels[:, 2:4]) / 2  # (M, 2) x, y
    k = max(len(class_names), int(labels[:, 4].max()) + 1 if len(labels) else 0)
    per_class = np.bincount(labels[:, 4].astype(np.int64).clip(0), minlength=k)  # (K,)

    fig, (ax_cls, ax_wh, ax_xy) = plt.subplots(1, 3, figsize=(15, 4.6))
    names = [class_names[i] if i < len(class_names) else f"#{i}" for i in range(k)]
    ax_cls.bar(np.arange(k), per_class, color="#4878d0")
    ax_cls.set_xticks(np.arange(k))
    ax_cls.set_xticklabels(names, rotation=90 if k > 8 else 0, fontsize=8 if k > 20 else 9)
    ax_cls.set_ylabel("boxes")
    ax_cls.set_title("boxes per class")

    # a fixed subsample (its own generator) keeps the scatter readable and leaves the global RNGs alone
    shown = wh
    if len(wh) > _MAX_SCATTER_POINTS:
        shown = wh[np.random.default_rng(0).choice(len(wh), _MAX_SCATTER_POINTS, replace=False)]
    ax_wh.scatter(shown[:, 0], shown[:, 1], s=3, alpha=0.3, color="#d65f5f")
    ax_wh.set_xlim(0, w_in)
    ax_wh.set_ylim(0, h_in)
    ax_wh.set_xlabel(f"box width (pixels at {w_in}x{h_in})")
    ax_wh.set_ylabel("box height")
    ax_wh.set_title("box sizes")

    heat, _, _ = np.histogram2d(centres[:, 1], centres[:, 0], bins=(40, 40), range=((0, h_in), (0, w_in)))
    image = ax_xy.imshow(heat, extent=(0, w_in, h_in, 0), cmap="viridis", aspect="auto")
    fig.colorbar(image, ax=ax_xy, label="boxes")
    ax_xy.set_xlabel("box centre x")
    ax_xy.set_ylabel("box centre y")
    ax_xy.set_title("box centres")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    tmp = _atomic_target(out_path)
    try:
        fig.savefig(tmp, dpi=100, format="png")
        os.replace(tmp, out_path)
    finally:
        plt.close(fig)
        if os.path.exists(tmp):
            os.remove(tmp)
    return out_path


def letterbox_tile(img, tile_hw):
    """img (h, w, 3) uint8 at the top left of a grey (114) tile of tile_hw, as the letterbox pads it."""
    tile = np.full((int(tile_hw[0]), int(tile_hw[1]), 3), 114, dtype=np.uint8)
    h, w = min(img.shape[0], tile.shape[0]), min(img.shape[1], tile.shape[1])
    tile[:h, :w] = img[:h, :w]
    return tile


def _draw_boxes(tile, boxes, classes, class_names, scale):
    """Boxes (n, 4) x1y1x2y2 (scaled by `scale`) with their class names on tile, in place."""
    font, font_scale = cv2.FONT_HERSHEY_SIMPLEX, 0.35
    for box, cls in zip(np.round(boxes * scale).astype(int), classes.astype(int)):
        color = color_for(cls)
        cv2.rectangle(tile, (box[0], box[1]), (box[2], box[3]), color, 1)
        name = class_names[cls] if 0 <= cls < len(class_names) else f"class {cls}"
        cv2.putText(tile, name, (box[0], max(box[1] - 2, 8)), font, font_scale, color, 1, cv2.LINE_AA)


def draw_box_grid(images, boxes, classes, class_names, captions=None):
    """One picture of images (each (h, w, 3) BGR uint8, all the same size) in a near-square grid, each with its
    boxes (n, 4) x1y1x2y2 and classes (n,) drawn; shrunk so that its longer side is at most 1920 pixels."""
    n = len(images)
    if n == 0:
        raise ValueError("draw_box_grid needs at least one image")
    h, w = images[0].shape[:2]
    cols = int(np.ceil(np.sqrt(n)))
    rows = int(np.ceil(n / cols))
    scale = min(1.0, _MAX_GRID_SIDE / max(cols * w, rows * h))
    th, tw = max(1, int(h * scale)), max(1, int(w * scale))
    grid = np.full((rows * th, cols * tw, 3), 255, dtype=np.uint8)
    for i, img in enumerate(images):
        tile = cv2.resize(img, (tw, th), interpolation=cv2.INTER_AREA) if (th, tw) != img.shape[:2] else img.copy()
        _draw_boxes(tile, np.asarray(boxes[i], dtype=np.float64).reshape(-1, 4), np.asarray(classes[i]).reshape(-1),
                    class_names, scale)
        if captions is not None:
            cv2.putText(tile, str(captions[i]), (3, th - 4), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (255, 255, 255), 1,
                        cv2.LINE_AA)
        r, c = divmod(i, cols)
        grid[r * th:(r + 1) * th, c * tw:(c + 1) * tw] = tile
        cv2.rectangle(grid, (c * tw, r * th), ((c + 1) * tw - 1, (r + 1) * th - 1), (255, 255, 255), 1)
    return grid
