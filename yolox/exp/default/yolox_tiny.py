"""YOLOX-Tiny: depth 0.33, width 0.375, trained and tested at 416 with lighter augmentation (no MixUp)."""
from yolox.exp.yolox_base import Exp as MyExp


class Exp(MyExp):
    def __init__(self):
        super().__init__()
        self.depth = 0.33
        self.width = 0.375
        self.input_size = (416, 416)
        self.mosaic_scale = (0.5, 1.5)
        self.random_size = (10, 20)
        self.test_size = (416, 416)
        self.enable_mixup = False
