#!/usr/bin/env python
"""YOLOX-Nano on the bundled tree-crown dataset (datasets/forest: 49 train / 7 val tiles of 400x400, one class).

    python tools/train.py -f exps/example/forest/yolox_nano_forest.py -d 1 -b 8
"""
import os

from yolox.data import get_yolox_datadir
from yolox.exp.default.yolox_nano import Exp as NanoExp


class Exp(NanoExp):
    def __init__(self):
        super().__init__()
        self.num_classes = 1
        self.data_dir = os.path.join(get_yolox_datadir(), "forest")
        self.train_ann = "train.json"
        self.val_ann = "val.json"
        # image folders under data_dir (the COCO default would be train2017 / val2017)
        self.train_name = "train"
        self.val_name = "val"

        # 400x400 tiles: train at 416, multi-scale 320-512; tree crowns are small, so no zoom-out below 0.5
        self.input_size = (416, 416)
        self.test_size = (416, 416)
        self.random_size = (10, 16)
        self.mosaic_prob = 1.0
        self.mosaic_scale = (0.5, 1.5)
        self.enable_mixup = False
        self.degrees = 10.0  # aerial views have no "up": rotations are harmless
        self.flip_prob = 0.5

        # ~1000 boxes in 49 images: about 6 iterations per epoch at batch 8, so more epochs than COCO's 300 would
        # take on a small set are not needed; lr per image as officially (0.01 per 64 images)
        self.max_epoch = 120
        self.warmup_epochs = 5
        self.no_aug_epochs = 15
        self.basic_lr_per_img = 0.01 / 64.0
        self.print_interval = 5
        self.eval_interval = 10
        self.data_num_workers = 2
        self.test_conf = 0.01
        self.nmsthre = 0.45  # crowns touch each other: a lower NMS threshold than COCO's 0.65 merges them

    def get_dataset(self, cache: bool = False, cache_type: str = "ram"):
        from yolox.data import COCODataset, TrainTransform

        return COCODataset(
            data_dir=self.data_dir,
            json_file=self.train_ann,
            name=self.train_name,
            img_size=self.input_size,
            preproc=TrainTransform(max_labels=120, flip_prob=self.flip_prob, hsv_prob=self.hsv_prob),
            cache=cache,
            cache_type=cache_type,
            on_corrupt_image=self.on_corrupt_image,
        )

    def get_eval_dataset(self, **kwargs):
        from yolox.data import COCODataset, ValTransform

        return COCODataset(
            data_dir=self.data_dir,
            json_file=self.val_ann,
            name=self.val_name,
            img_size=self.test_size,
            preproc=ValTransform(legacy=kwargs.get("legacy", False)),
        )
