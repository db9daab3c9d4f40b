"""YOLOX-M: depth 0.67, width 0.75, trained at 640."""
from yolox.exp.yolox_base import Exp as MyExp


class Exp(MyExp):
    def __init__(self):
        super().__init__()
        self.depth = 0.67
        self.width = 0.75
