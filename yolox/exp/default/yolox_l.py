"""YOLOX-L: depth 1.0, width 1.0, trained at 640."""
from yolox.exp.yolox_base import Exp as MyExp


class Exp(MyExp):
    def __init__(self):
        super().__init__()
        self.depth = 1.0
        self.width = 1.0
