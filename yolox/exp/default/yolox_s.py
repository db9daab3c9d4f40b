"""YOLOX-S: depth 0.33, width 0.50, trained at 640."""
from yolox.exp.yolox_base import Exp as MyExp


class Exp(MyExp):
    def __init__(self):
        super().__init__()
        self.depth = 0.33
        self.width = 0.50
