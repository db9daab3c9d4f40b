#!/usr/bin/env python
"""YOLOv3 (Darknet-53) as published; settings in yolox/exp/default/yolov3.py. Copy this file to make your own."""
from yolox.exp.default.yolov3 import Exp as PublishedExp


class Exp(PublishedExp):
    def __init__(self):
        super().__init__()
        # override attributes here, e.g. self.num_classes = 20, self.max_epoch = 100, self.data_dir = "datasets/my"
