"""YOLOv3 with the YOLOX head: Darknet-53 + YOLOFPN, leaky-ReLU head on 128/256/512 channels."""
import torch.nn as nn

from yolox.exp.yolox_base import Exp as MyExp


class Exp(MyExp):
    def __init__(self):
        super().__init__()
        self.depth = 1.0
        self.width = 1.0

    def get_model(self, sublinear=False):
        def init_yolo(M):
            for m in M.modules():
                if isinstance(m, nn.BatchNorm2d):
                    m.eps = 1e-3
                    m.momentum = 0.03

        if getattr(self, "model", None) is None:
            from yolox.models import YOLOX, YOLOFPN, YOLOXHead

            backbone = YOLOFPN()
            head = YOLOXHead(
                self.num_classes,
                self.width,
                in_channels=[128, 256, 512],
                act="lrelu",
                simota_mode=self.simota_mode,
                simota_pack_width=self.simota_pack_width,
            )
            self.model = YOLOX(backbone, head)

        self.model.apply(init_yolo)
        self.model.head.initialize_biases(1e-2)
        self.model.train()
        return self.apply_memory_format(self.model)
