"""Drawing of detections on images: `vis()` and the colour palette shared by demo and assignment pictures."""
import colorsys

import cv2
import numpy as np

__all__ = ["vis", "color_for", "_COLORS"]


def _make_palette(n: int = 80) -> np.ndarray:
    """(n, 3) RGB in [0, 1]: hues stepped by the golden ratio so neighbouring class ids look different."""
    colors = []
    for i in range(n):
        hue = (i * 0.618033988749895) % 1.0
        sat = 0.65 + 0.35 * ((i // 7) % 2)  # alternate saturation so hue collisions stay apart
        val = 0.95 - 0.25 * ((i // 3) % 2)
        colors.append(colorsys.hsv_to_rgb(hue, sat, val))
    return np.asarray(colors, dtype=np.float32)


_COLORS = _make_palette(80)


def color_for(index: int) -> tuple:
    """BGR colour (0-255 ints) for a class id or any other index; the palette wraps around."""
    rgb = _COLORS[int(index) % len(_COLORS)]
    return tuple(int(c * 255) for c in rgb[::-1])


def vis(img, boxes, scores, cls_ids, conf=0.5, class_names=None):
    """Draw boxes (N, 4) x1y1x2y2 with "name:score%" labels on `img` (BGR, modified in place) and return it.

    Boxes whose score is below `conf` are skipped. A class id outside `class_names` is labelled by its number.
    """
    boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
    scores = np.asarray(scores, dtype=np.float32).reshape(-1)
    cls_ids = np.asarray(cls_ids).reshape(-1)
    scale = max(img.shape[:2]) / 640.0
    thickness = max(1, int(round(2 * scale)))
    font_scale = max(0.4, 0.5 * scale)
    font = cv2.FONT_HERSHEY_SIMPLEX
    for box, score, cls_id in zip(boxes, scores, cls_ids):
        if score < conf:
            continue
        cls_id = int(cls_id)
        x0, y0, x1, y1 = (int(round(v)) for v in box)
        color = color_for(cls_id)
        name = class_names[cls_id] if class_names is not None and 0 <= cls_id < len(class_names) else str(cls_id)
        text = "{}:{:.1f}%".format(name, score * 100)
        # White text on dark colours, black on light ones, so the label stays readable.
        txt_color = (0, 0, 0) if np.mean(_COLORS[cls_id % len(_COLORS)]) > 0.5 else (255, 255, 255)
        (tw, th), baseline = cv2.getTextSize(text, font, font_scale, 1)
        cv2.rectangle(img, (x0, y0), (x1, y1), color, thickness)
        # Label above the box, or inside it when the box touches the top edge.
        ty = y0 - 2 if y0 - th - baseline - 2 >= 0 else y0 + th + baseline + 1
        cv2.rectangle(img, (x0, ty - th - baseline), (x0 + tw + 1, ty + 1), color, -1)
        cv2.putText(img, text, (x0, ty - baseline + 1), font, font_scale, txt_color, 1, cv2.LINE_AA)
    return img
