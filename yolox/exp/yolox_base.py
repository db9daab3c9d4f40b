"""The YOLOX Exp: official attributes and defaults, and the factories for model, data, optimizer, scheduler, evaluator.

Factories import inside the method, as the official release and users' Exp files do, so that `yolox.exp` only
needs the packages an Exp actually uses.
"""
import random

import torch
import torch.distributed as dist
import torch.nn as nn

from ..models.simota import SIMOTA_MODES
from .base_exp import BaseExp

__all__ = ["Exp", "check_exp_value", "SIMOTA_MODES"]



def _set_bn_hyperparams(model):
    """Every BatchNorm2d gets eps=1e-3, momentum=0.03, as the published weights were trained with."""
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.eps = 1e-3
            m.momentum = 0.03


def _check_simota_mode(exp):
    mode = getattr(exp, "simota_mode", "batched")
    if mode not in SIMOTA_MODES:
        raise ValueError(
            f"Exp {getattr(exp, 'exp_name', type(exp).__name__)!r}: simota_mode={mode!r} is not supported; "
            f"choose one of {', '.join(repr(m) for m in SIMOTA_MODES)} (e.g. `simota_mode loop` on the command line)."
        )


def _sgd(params, **kwargs):
    """torch.optim.SGD with its fused kernel (one kernel for all tensors, CPU and CUDA; torch >= 2.4), else the
    foreach implementation (a few ops over all tensors) rather than the default per-tensor loop on the CPU."""
    try:
        return torch.optim.SGD(params, fused=True, **kwargs)
    except (TypeError, RuntimeError, ValueError):
        return torch.optim.SGD(params, foreach=True, **kwargs)


def _world_size(is_distributed):
    return dist.get_world_size() if is_distributed and dist.is_available() and dist.is_initialized() else 1


class Exp(BaseExp):
    def __init__(self):
        super().__init__()

        # ---------------- model config ---------------- #
        # detect classes number of model
        self.num_classes = 80
        # factor of model depth
        self.depth = 1.00
        # factor of model width
        self.width = 1.00
        # activation name. For example, if using "relu", then "silu" will be replaced to "relu".
        self.act = "silu"
        # label assignment implementation (this project): "loop" = the official per-image SimOTA, "packed" = the
        # batch packed side by side in sub-batches of total width <= simota_pack_width, "batched" = one padded pass.
        # All three give the same assignment.
        self.simota_mode = "batched"
        self.simota_pack_width = 10000
        # memory format of the model's weights and activations (this project): channels_last makes the convolutions
        # of both training and inference faster on CPUs (oneDNN) and on GPUs with tensor cores; same numbers
        self.channels_last = True

        # ---------------- dataloader config ---------------- #
        # set worker to 4 for shorter dataloader init time
        # If your training process cost many memory, reduce this value.
        self.data_num_workers = 4
        # dtype of the training images in the loader's batches (this project): "uint8" carries the same 0-255
        # values as the official "float32" in a quarter of the bytes that workers copy to the main process (1.3x
        # the samples/s with workers at 640); the trainer casts the batch to its float type on the device
        self.train_image_dtype = "uint8"
        self.input_size = (640, 640)  # (height, width)
        # Actual multiscale ranges: [640 - 5 * 32, 640 + 5 * 32].
        # To disable multiscale training, set the value to 0.
        self.multiscale_range = 5
        # You can uncomment this line to specify a multiscale range
        # self.random_size = (14, 26)
        self.random_size = None
        # dir of dataset images, if data_dir is None, this project will use `datasets` dir
        self.data_dir = None
        # name of annotation file for training
        self.train_ann = "instances_train2017.json"
        # name of annotation file for evaluation
        self.val_ann = "instances_val2017.json"
        # name of annotation file for testing
        self.test_ann = "instances_test2017.json"
        # (this project) an annotation file is a name under <data_dir>/annotations/ as officially, or a path relative
        # to data_dir, or an absolute path; the images of each split are in these folders under data_dir. A Roboflow
        # COCO export: data_dir, train_ann "train/_annotations.coco.json", val_ann "valid/...", val_name "valid"
        self.train_name = "train2017"
        self.val_name = "val2017"
        self.test_name = "test2017"
        # (this project) the YOLO-txt layout of Ultralytics: the path of its data.yaml. Its splits, class names and
        # num_classes replace the COCO settings above (docs/custom_data.md)
        self.data_yaml = None
        # (this project) class names in class-index order; None: from the data (data.yaml names, the COCO
        # categories sorted by id, or the COCO/VOC lists). Checkpoints, logs, pictures and exports carry them
        self.class_names = None
        # an unreadable or corrupt training image: "raise" stops with its file name, "skip" uses the next readable
        # image instead and counts it in the log (evaluation always raises: a skipped image would bias the AP)
        self.on_corrupt_image = "raise"
        # (this project) before the first iteration, log the data's summary and problems and write labels.png and
        # pictures of the first batches into <run>/data_check/ (what tools/check_data.py does); False: skip it
        self.check_data = True
        # (this project) at the end of a finished run, write the run report of its last evaluation (per-class P, R
        # and AP, PR/F1 curves, confusion matrix, val predictions: docs/report.md) into the run folder
        self.run_report = True

        # --------------- transform config ----------------- #
        # prob of applying mosaic aug
        self.mosaic_prob = 1.0
        # prob of applying mixup aug
        self.mixup_prob = 1.0
        # prob of applying hsv aug
        self.hsv_prob = 1.0
        # prob of applying flip aug
        self.flip_prob = 0.5
        # rotation angle range, for example, if set to 2, the true range is (-2, 2)
        self.degrees = 10.0
        # translate range, for example, if set to 0.1, the true range is (-0.1, 0.1)
        self.translate = 0.1
        self.mosaic_scale = (0.1, 2)
        # apply mixup aug or not
        self.enable_mixup = True
        self.mixup_scale = (0.5, 1.5)
        # shear angle range, for example, if set to 2, the true range is (-2, 2)
        self.shear = 2.0

        # --------------  training config --------------------- #
        # epoch number used for warmup
        self.warmup_epochs = 5
        # max training epoch
        self.max_epoch = 300
        # wall-clock budget of the run in minutes (this project; None: max_epoch decides, as officially): from the
        # end of the warm-up the trainer lowers max_epoch to what fits, evaluations and the no-aug epochs included
        self.max_train_minutes = None
        # (this project) stop when AP50:95 has not improved for this many evaluations; None: every epoch, as officially
        self.patience = None
        # (this project) layers kept as they are: "backbone", "backbone+neck" or a list of module-name prefixes
        self.freeze = None
        # (this project) seconds without a training iteration before a process is called stalled: its threads' stacks
        # go to the log and the run stops (well under the 15-minute collective timeout of training); None: no watch
        self.stall_timeout = 600
        # (this project) seconds a process of a multi-process run may stay silent (no heartbeat through the rendezvous
        # store) before the others call it lost and stop; a death that a socket shows is noticed in seconds anyway
        self.heartbeat_timeout = 60
        # minimum learning rate during warmup
        self.warmup_lr = 0
        self.min_lr_ratio = 0.05
        # learning rate for one image. During training, lr will multiply batchsize.
        self.basic_lr_per_img = 0.01 / 64.0
        # name of LRScheduler
        self.scheduler = "yoloxwarmcos"
        # last #epoch to close augmention like mosaic
        self.no_aug_epochs = 15
        # apply EMA during training
        self.ema = True
        # EMA of the weights (this project makes the official constants settable): decay ema_decay, ramped up as
        # 1 - exp(-updates / ema_ramp_updates); a run of a few thousand iterations wants a shorter ramp
        self.ema_decay = 0.9998
        self.ema_ramp_updates = 2000

        # weight decay of optimizer
        self.weight_decay = 5e-4
        # momentum of optimizer
        self.momentum = 0.9
        # log period in iter, for example,
        # if set to 1, user could see log every iteration.
        self.print_interval = 10
        # eval period in epoch, for example,
        # if set to 1, model will be evaluate after every epoch.
        self.eval_interval = 10
        # save history checkpoint or not.
        # If set to False, yolox will only save latest and best ckpt.
        self.save_history_ckpt = True
        # name of experiment (set by BaseExp to the base name of the file defining the Exp class)

        # -----------------  testing config ------------------ #
        # output image size during evaluation/test
        self.test_size = (640, 640)
        # confidence threshold during evaluation/test,
        # boxes whose scores are less than test_conf will be filtered
        self.test_conf = 0.01
        # nms threshold
        self.nmsthre = 0.65

    # ------------------------------------------------------------------ model
    def get_model(self):
        from yolox.models import YOLOX, YOLOPAFPN, YOLOXHead

        _check_simota_mode(self)
        self.sync_classes_with_data()
        if getattr(self, "model", None) is None:
            in_channels = [256, 512, 1024]
            backbone = YOLOPAFPN(self.depth, self.width, in_channels=in_channels, act=self.act)
            head = YOLOXHead(
                self.num_classes,
                self.width,
                in_channels=in_channels,
                act=self.act,
                simota_mode=self.simota_mode,
                simota_pack_width=self.simota_pack_width,
            )
            self.model = YOLOX(backbone, head)

        _set_bn_hyperparams(self.model)
        self.model.head.initialize_biases(1e-2)
        self.model.train()
        return self.apply_memory_format(self.model)

    def apply_memory_format(self, model):
        """The model in the Exp's memory format (channels_last unless self.channels_last is False), in place."""
        if getattr(self, "channels_last", False):
            model.to(memory_format=torch.channels_last)
        return model

    # ------------------------------------------------------------------ data (the four factories below use yolox.data)
    def get_dataset(self, cache: bool = False, cache_type: str = "ram"):
        """The training dataset without Mosaic (get_data_loader wraps it): COCO json, or YOLO-txt with data_yaml.

        cache: cache the images (in RAM or on disk, by cache_type) before training starts.
        """
        from yolox.data import TrainTransform

        return self.get_split_dataset(
            "train",
            img_size=self.input_size,
            preproc=TrainTransform(max_labels=50, flip_prob=self.flip_prob, hsv_prob=self.hsv_prob),
            cache=cache,
            cache_type=cache_type,
            on_corrupt_image=self.on_corrupt_image,
        )

    def get_split_dataset(self, split, img_size, preproc=None, **kwargs):
        """The "train", "val" or "test" split of the Exp's data as a COCO-style dataset (this project): the
        YOLO-txt split of data_yaml when it is set, else the COCO json `<split>_ann` with images in `<split>_name`.
        kwargs go to the dataset (cache, cache_type, on_corrupt_image)."""
        self.sync_classes_with_data()
        if getattr(self, "data_yaml", None):
            from yolox.data import YOLODataset

            return YOLODataset(self.data_yaml, split, img_size=img_size, preproc=preproc, **kwargs)
        from yolox.data import COCODataset

        default_names = {"train": "train2017", "val": "val2017", "test": "test2017"}
        return COCODataset(
            data_dir=self.data_dir,
            json_file=getattr(self, f"{split}_ann"),
            name=getattr(self, f"{split}_name", default_names[split]),
            img_size=img_size,
            preproc=preproc,
            require_annotations=split != "test",  # a test-dev image list has no boxes
            **kwargs,
        )

    def sync_classes_with_data(self):
        """With data_yaml set, num_classes and class_names become the yaml's (this project); else nothing."""
        if not getattr(self, "data_yaml", None):
            return
        from yolox.data import read_data_yaml

        names = list(read_data_yaml(self.data_yaml).names)
        if self.num_classes != len(names) and getattr(self, "_synced_yaml", None) != self.data_yaml:
            from loguru import logger

            logger.info(f"num_classes = {len(names)} from {self.data_yaml} (the Exp said {self.num_classes})")
        self.num_classes = len(names)
        self.class_names = names
        self._synced_yaml = self.data_yaml

    def get_data_loader(self, batch_size, is_distributed, no_aug=False, cache_img: str = None):
        """The infinite training loader: Mosaic/MixUp dataset, YoloBatchSampler, seeded workers.

        cache_img: None, "ram" or "disk"; with a cache the dataset must have been built (by get_dataset) before launch.
        The booleans of release 0.3.0 (its tools/train.py passes --cache as True/False) also work: False is None,
        True caches in RAM here, in each process.
        """
        from yolox.data import (
            DataLoader,
            InfiniteSampler,
            MosaicDetection,
            TrainTransform,
            YoloBatchSampler,
            channels_last_collate,
            worker_init_reset_seed,
        )
        from yolox.utils import wait_for_the_master

        if cache_img is False:
            cache_img = None
        # with a cache, self.dataset is created before launch; otherwise here, after launch
        if getattr(self, "dataset", None) is None:
            with wait_for_the_master():
                if cache_img is True:
                    self.dataset = self.get_dataset(cache=True, cache_type="ram")
                elif cache_img is not None:
                    raise ValueError(
                        f"cache_img={cache_img!r} needs the dataset built before launch "
                        "(exp.dataset = exp.get_dataset(cache=True, cache_type=...)); pass cache_img=None otherwise."
                    )
                else:
                    self.dataset = self.get_dataset(cache=False, cache_type="ram")

        self.dataset = MosaicDetection(
            dataset=self.dataset,
            mosaic=not no_aug,
            img_size=self.input_size,
            preproc=TrainTransform(max_labels=120, flip_prob=self.flip_prob, hsv_prob=self.hsv_prob,
                                   image_dtype=self.train_image_dtype),
            degrees=self.degrees,
            translate=self.translate,
            mosaic_scale=self.mosaic_scale,
            mixup_scale=self.mixup_scale,
            shear=self.shear,
            enable_mixup=self.enable_mixup,
            mosaic_prob=self.mosaic_prob,
            mixup_prob=self.mixup_prob,
        )

        if len(self.dataset) == 0:
            source = getattr(self.dataset._dataset, "ann_path", None) or f"data_dir {self.data_dir}"
            raise ValueError(f"the training set has no images ({source}); check train_ann and data_dir in the Exp")
        batch_size = batch_size // _world_size(is_distributed)
        sampler = InfiniteSampler(len(self.dataset), seed=self.seed if self.seed else 0)
        batch_sampler = YoloBatchSampler(sampler=sampler, batch_size=batch_size, drop_last=False, mosaic=not no_aug)

        dataloader_kwargs = {
            "num_workers": self.data_num_workers,
            "pin_memory": torch.cuda.is_available(),
            "batch_sampler": batch_sampler,
            # each worker gets its own random seed, also with the 'fork' start method (pytorch issue 63311)
            "worker_init_fn": worker_init_reset_seed,
            # uint8 images come as (C, H, W) views of (H, W, C) arrays: stacked as channels_last batches
            "collate_fn": channels_last_collate,
        }
        return DataLoader(self.dataset, **dataloader_kwargs)

    def get_eval_dataset(self, **kwargs):
        """The val split (the test split with testdev=True); legacy=True for the old normalised preprocessing."""
        from yolox.data import ValTransform

        testdev = kwargs.get("testdev", False)
        legacy = kwargs.get("legacy", False)
        return self.get_split_dataset("test" if testdev else "val", img_size=self.test_size,
                                      preproc=ValTransform(legacy=legacy))

    def get_eval_loader(self, batch_size, is_distributed, **kwargs):
        valdataset = self.get_eval_dataset(**kwargs)

        if is_distributed:
            batch_size = batch_size // _world_size(is_distributed)
            sampler = torch.utils.data.distributed.DistributedSampler(valdataset, shuffle=False)
        else:
            sampler = torch.utils.data.SequentialSampler(valdataset)

        dataloader_kwargs = {
            "num_workers": self.data_num_workers,
            "pin_memory": torch.cuda.is_available(),
            "sampler": sampler,
            "batch_size": batch_size,
            # the trainer evaluates with this loader again and again: keep its workers instead of restarting them
            "persistent_workers": self.data_num_workers > 0,
        }
        return torch.utils.data.DataLoader(valdataset, **dataloader_kwargs)

    # ------------------------------------------------------------------ training helpers
    def random_resize(self, data_loader, epoch, rank, is_distributed):
        """A new multi-scale training size (h, w), multiple of 32, drawn on rank 0 and shared with every rank."""
        # nccl only moves CUDA tensors; gloo and single-process runs use the CPU
        use_cuda = is_distributed and dist.is_initialized() and dist.get_backend() == "nccl"
        tensor = torch.zeros(2, dtype=torch.long, device="cuda" if use_cuda else "cpu")

        if rank == 0:
            size_factor = self.input_size[1] * 1.0 / self.input_size[0]
            random_size = getattr(self, "random_size", None)
            if random_size is None:
                base = int(self.input_size[0] / 32)
                random_size = (base - self.multiscale_range, base + self.multiscale_range)
            size = random.randint(*random_size)
            tensor[0] = int(32 * size)
            tensor[1] = 32 * int(size * size_factor)

        if is_distributed:
            dist.barrier()
            dist.broadcast(tensor, 0)

        return (int(tensor[0].item()), int(tensor[1].item()))

    def preprocess(self, inputs, targets, tsize):
        """Resize a batch (B, 3, H, W) to tsize (h, w) and scale the targets' cx, cy, w, h (columns 1-4) with it."""
        scale_y = tsize[0] / self.input_size[0]
        scale_x = tsize[1] / self.input_size[1]
        if scale_x != 1 or scale_y != 1:
            inputs = nn.functional.interpolate(inputs, size=tsize, mode="bilinear", align_corners=False)
            targets[..., 1::2] = targets[..., 1::2] * scale_x  # cx, w
            targets[..., 2::2] = targets[..., 2::2] * scale_y  # cy, h
        return inputs, targets

    def get_optimizer(self, batch_size):
        """SGD with nesterov: BN weights without decay, other weights with weight_decay, biases without decay;
        parameters with requires_grad False (Exp.freeze) are left out."""
        if "optimizer" not in self.__dict__:
            if self.warmup_epochs > 0:
                lr = self.warmup_lr
            else:
                lr = self.basic_lr_per_img * batch_size

            model = self.model if getattr(self, "model", None) is not None else self.get_model()
            pg0, pg1, pg2 = [], [], []  # BN weights, other weights, biases
            for name, module in model.named_modules():
                if hasattr(module, "bias") and isinstance(module.bias, nn.Parameter) and module.bias.requires_grad:
                    pg2.append(module.bias)
                weight = getattr(module, "weight", None)
                if not isinstance(weight, nn.Parameter) or not weight.requires_grad:
                    continue
                # the official test is by type or by the name "bn" (BaseConv names its norm layer bn)
                if isinstance(module, nn.modules.batchnorm._BatchNorm) or "bn" in name:
                    pg0.append(weight)
                else:
                    pg1.append(weight)

            optimizer = _sgd(pg0, lr=lr, momentum=self.momentum, nesterov=True)
            optimizer.add_param_group({"params": pg1, "weight_decay": self.weight_decay})
            optimizer.add_param_group({"params": pg2})
            self.optimizer = optimizer

        return self.optimizer

    def get_lr_scheduler(self, lr, iters_per_epoch):
        from yolox.utils import LRScheduler

        return LRScheduler(
            self.scheduler,
            lr,
            iters_per_epoch,
            self.max_epoch,
            warmup_epochs=self.warmup_epochs,
            warmup_lr_start=self.warmup_lr,
            no_aug_epochs=self.no_aug_epochs,
            min_lr_ratio=self.min_lr_ratio,
        )

    # ------------------------------------------------------------------ evaluation and training
    def get_evaluator(self, batch_size, is_distributed, testdev=False, legacy=False):
        from yolox.evaluators import COCOEvaluator

        return COCOEvaluator(
            dataloader=self.get_eval_loader(batch_size, is_distributed, testdev=testdev, legacy=legacy),
            img_size=self.test_size,
            confthre=self.test_conf,
            nmsthre=self.nmsthre,
            num_classes=self.num_classes,
            testdev=testdev,
        )

    def get_trainer(self, args):
        from yolox.core import Trainer

        # NOTE: the trainer is not kept as an attribute of the exp (the exp must stay picklable)
        return Trainer(self, args)

    def eval(self, model, evaluator, is_distributed, half=False, return_outputs=False):
        return evaluator.evaluate(model, is_distributed, half, return_outputs=return_outputs)


def check_exp_value(exp: Exp):
    """Raise ValueError for Exp values that cannot train: sizes not multiples of 32, intervals below 1, more
    no-augmentation epochs than epochs, an unknown simota_mode."""
    for attr in ("input_size", "test_size"):
        size = getattr(exp, attr, None)
        if size is None:
            continue
        h, w = size
        if h % 32 != 0 or w % 32 != 0:
            raise ValueError(
                f"Exp {exp.exp_name!r}: {attr}={tuple(size)} must be multiples of 32 (the largest stride); "
                f"e.g. {attr} {32 * max(1, round(h / 32))},{32 * max(1, round(w / 32))}."
            )
    for attr in ("eval_interval", "print_interval", "max_epoch"):
        value = getattr(exp, attr, 1)
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"Exp {exp.exp_name!r}: {attr}={value!r} must be a whole number >= 1")
    no_aug, max_epoch = getattr(exp, "no_aug_epochs", 0), getattr(exp, "max_epoch", 1)
    if not 0 <= no_aug <= max_epoch:
        raise ValueError(f"Exp {exp.exp_name!r}: no_aug_epochs={no_aug} must lie between 0 and max_epoch={max_epoch}")
    _check_simota_mode(exp)
