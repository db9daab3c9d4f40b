#!/usr/bin/env python
"""YOLOX-S on your own data: copy this file, point it at your data, train (docs/custom_data.md walks through it).

    python tools/check_data.py -f exps/example/custom/yolox_s.py      # look at the data first
    python tools/train.py -f exps/example/custom/yolox_s.py -d 1 -b 8 -c yolox_s.pth --cache
"""
from yolox.exp.default.yolox_s import Exp as PublishedExp


class Exp(PublishedExp):
    def __init__(self):
        super().__init__()
        # YOLO-txt (Ultralytics; a Roboflow, CVAT or Label Studio "YOLO" export): the data.yaml that lists the
        # splits and the class names; num_classes and class_names come from it
        self.data_yaml = "datasets/mydata/data.yaml"

        # COCO json instead (any layout): remove data_yaml above and say where the files are, e.g. for a Roboflow
        # "COCO" export in datasets/mydata/{train,valid}/ with _annotations.coco.json beside the images:
        # self.data_dir = "datasets/mydata"
        # self.train_ann = "train/_annotations.coco.json"   # or a name under <data_dir>/annotations/
        # self.val_ann = "valid/_annotations.coco.json"
        # self.train_name, self.val_name = "train", "valid"  # the image folders under data_dir
        # self.num_classes = 3                               # the number of categories in the json files

        self.input_size = (640, 640)  # (height, width), multiples of 32: larger for small objects, smaller for speed
        self.test_size = (640, 640)  # evaluate and deploy at the size you trained at
        self.max_epoch = 100  # a fine-tuned model converges well before the 300 epochs of COCO from scratch
        self.no_aug_epochs = 10
        self.eval_interval = 5
        self.data_num_workers = 4
