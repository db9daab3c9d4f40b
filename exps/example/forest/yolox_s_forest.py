"""YOLOX-S on the bundled tree-crown dataset: the forest recipe (exps/example/forest/yolox_nano_forest.py) with the
YOLOX-S model (depth 0.33, width 0.50, plain convolutions). docs/deploy.md measures its INT8 export.

    python tools/train.py -f exps/example/forest/yolox_s_forest.py -d 1 -b 4 --cache
"""
import os

from yolox.exp import Exp as BaseExp
from yolox.exp import get_exp

ForestExp = type(get_exp(os.path.join(os.path.dirname(os.path.abspath(__file__)), "yolox_nano_forest.py")))


class Exp(ForestExp):
    def __init__(self):
        super().__init__()
        self.depth = 0.33
        self.width = 0.50

    def get_model(self, sublinear=False):
        return BaseExp.get_model(self)  # the nano Exp's model is depthwise; YOLOX-S's is not
