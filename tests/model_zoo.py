"""Build the published model sizes without the Exp system, and read the reference state-dict layout."""
import re
from pathlib import Path

import torch
from torch import nn

from yolox.models import YOLOFPN, YOLOPAFPN, YOLOX, YOLOXHead

SIZES = {  # name: (depth, width, depthwise, test size)
    "yolox-nano": (0.33, 0.25, True, 416),
    "yolox-tiny": (0.33, 0.375, False, 416),
    "yolox-s": (0.33, 0.50, False, 640),
    "yolox-m": (0.67, 0.75, False, 640),
    "yolox-l": (1.0, 1.0, False, 640),
    "yolox-x": (1.33, 1.25, False, 640),
    "yolov3": (1.0, 1.0, False, 640),
}


def build(name, num_classes=80, **head_kwargs):
    depth, width, depthwise, _ = SIZES[name]
    if name == "yolov3":
        model = YOLOX(YOLOFPN(), YOLOXHead(num_classes, width, in_channels=[128, 256, 512], act="lrelu", **head_kwargs))
    else:
        backbone = YOLOPAFPN(depth, width, depthwise=depthwise)
        model = YOLOX(backbone, YOLOXHead(num_classes, width, depthwise=depthwise, **head_kwargs))
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.eps, m.momentum = 1e-3, 0.03
    model.head.initialize_biases(1e-2)
    return model


def perturb_weights(model, seed=0, scale=0.05):
    """Add N(0, scale) noise to every float tensor (BN variances kept positive): non-trivial outputs for export and
    runtime comparisons. Returns the model."""
    torch.manual_seed(seed)
    with torch.no_grad():
        for name, t in model.state_dict().items():
            if t.is_floating_point():
                t.add_(torch.randn_like(t) * scale)
                if name.endswith("running_var"):
                    t.abs_().add_(0.5)
    return model


def reference_layouts():
    """{model name: [(param name, shape tuple), ...]} from shared/reference/official_state_dict_layout.txt."""
    candidates = [Path(__file__).resolve().parents[2] / "shared" / "reference",
                  Path(__file__).resolve().parent / "data"]
    for folder in candidates:
        path = folder / "official_state_dict_layout.txt"
        if path.exists():
            break
    else:
        return None
    layouts, current = {}, None
    for line in path.read_text().splitlines():
        m = re.match(r"## (\S+): (\d+) entries, (\d+) parameters", line)
        if m:
            current = layouts.setdefault(m.group(1), {"entries": int(m.group(2)), "params": int(m.group(3)), "names": []})
            continue
        if current is None or not line.strip() or line.startswith("#"):
            continue
        name, shape = line.split(" ", 1)
        dims = tuple(int(d) for d in re.findall(r"\d+", shape))
        current["names"].append((name, dims))
    return layouts
