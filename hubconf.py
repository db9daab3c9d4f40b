"""torch.hub entry points: torch.hub.load("<this repository or its folder>", "yolox_s", pretrained=True).

    model = torch.hub.load("Megvii-BaseDetection/YOLOX", "yolox_nano")          # from GitHub
    model = torch.hub.load("/path/to/clone", "yolox_nano", source="local", pretrained=False)
    model = torch.hub.load(..., "yolox_custom", ckpt_path="best_ckpt.pth", exp_path="exps/my_exp.py")

Pretrained weights come from the official release through torch.hub's cache (`torch.hub.get_dir()/checkpoints`).
"""
dependencies = ["torch", "torchvision", "numpy", "cv2", "loguru", "tabulate", "pycocotools"]

from yolox.models import (  # noqa: E402,F401
    yolov3,
    yolox_custom,
    yolox_l,
    yolox_m,
    yolox_nano,
    yolox_s,
    yolox_tiny,
    yolox_x,
)
