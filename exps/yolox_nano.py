#!/usr/bin/env python
"""YOLOX-Nano as published; its settings live in yolox/exp/default/yolox_nano.py. Copy this file to make your own."""
from yolox.exp.default.yolox_nano import Exp as PublishedExp


class Exp(PublishedExp):
    def __init__(self):
        super().__init__()
        # override attributes here, e.g. self.num_classes = 20, self.max_epoch = 100, self.data_dir = "datasets/my"
