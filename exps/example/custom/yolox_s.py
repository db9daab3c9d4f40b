#!/usr/bin/env python
"""YOLOX-S on your own COCO-format data: copy this file and set data_dir, the annotation files and num_classes.

Layout expected (datasets/README.md):
    <data_dir>/annotations/instances_train2017.json   <data_dir>/train2017/*.jpg
    <data_dir>/annotations/instances_val2017.json     <data_dir>/val2017/*.jpg
"""
import os

from yolox.exp import Exp as MyExp


class Exp(MyExp):
    def __init__(self):
        super().__init__()
        self.depth = 0.33
        self.width = 0.50
        self.exp_name = os.path.split(os.path.realpath(__file__))[1].split(".")[0]

        # where the data is: <data_dir>/annotations/<train_ann>, images in <data_dir>/train2017 (docs/custom_data.md)
        self.data_dir = "datasets/coco128"
        self.train_ann = "instances_train2017.json"
        self.val_ann = "instances_val2017.json"

        self.num_classes = 71  # the number of categories in the annotation files

        self.max_epoch = 300
        self.data_num_workers = 4
        self.eval_interval = 1
        # an unreadable image: "raise" stops with its name, "skip" replaces it and counts it in the log
        self.on_corrupt_image = "raise"
