"""The Exp system: official defaults, merge casting and errors, get_exp by name and by file, factories."""
import os
import sys
import types

import pytest
import torch
import torch.nn as nn

from yolox.exp import BaseExp, Exp, check_exp_value, get_exp
from yolox.exp.build import EXP_NAMES
from yolox.exp.yolox_base import SIMOTA_MODES

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

OFFICIAL_DEFAULTS = dict(
    num_classes=80, depth=1.00, width=1.00, act="silu", data_num_workers=4, input_size=(640, 640),
    multiscale_range=5, random_size=None, data_dir=None, train_ann="instances_train2017.json",
    val_ann="instances_val2017.json", test_ann="instances_test2017.json", mosaic_prob=1.0, mixup_prob=1.0,
    hsv_prob=1.0, flip_prob=0.5, degrees=10.0, translate=0.1, mosaic_scale=(0.1, 2), enable_mixup=True,
    mixup_scale=(0.5, 1.5), shear=2.0, warmup_epochs=5, max_epoch=300, warmup_lr=0, min_lr_ratio=0.05,
    basic_lr_per_img=0.01 / 64.0, scheduler="yoloxwarmcos", no_aug_epochs=15, ema=True, weight_decay=5e-4,
    momentum=0.9, print_interval=10, eval_interval=10, save_history_ckpt=True, exp_name="yolox_base",
    test_size=(640, 640), test_conf=0.01, nmsthre=0.65, seed=None, output_dir="./YOLOX_outputs",
    simota_mode="batched", simota_pack_width=10000,
)  # fmt: skip

PUBLISHED = {
    "yolox-nano": dict(depth=0.33, width=0.25, input_size=(416, 416), test_size=(416, 416), random_size=(10, 20),
                       mosaic_scale=(0.5, 1.5), mosaic_prob=0.5, enable_mixup=False, exp_name="yolox_nano"),
    "yolox-tiny": dict(depth=0.33, width=0.375, input_size=(416, 416), test_size=(416, 416), random_size=(10, 20),
                       mosaic_scale=(0.5, 1.5), mosaic_prob=1.0, enable_mixup=False, exp_name="yolox_tiny"),
    "yolox-s": dict(depth=0.33, width=0.50, input_size=(640, 640), enable_mixup=True, exp_name="yolox_s"),
    "yolox-m": dict(depth=0.67, width=0.75, input_size=(640, 640), exp_name="yolox_m"),
    "yolox-l": dict(depth=1.0, width=1.0, input_size=(640, 640), exp_name="yolox_l"),
    "yolox-x": dict(depth=1.33, width=1.25, input_size=(640, 640), exp_name="yolox_x"),
    "yolov3": dict(depth=1.0, width=1.0, input_size=(640, 640), exp_name="yolov3"),
}  # fmt: skip

PARAMS = {
    "yolox-nano": 912159, "yolox-tiny": 5055855, "yolox-s": 8968255, "yolox-m": 25326495,
    "yolox-l": 54208895, "yolox-x": 99071455, "yolov3": 63724767,
}  # fmt: skip


def test_official_defaults():
    exp = Exp()
    for key, value in OFFICIAL_DEFAULTS.items():
        assert getattr(exp, key) == value, key
        assert type(getattr(exp, key)) is type(value), key
    assert isinstance(exp, BaseExp)
    assert set(SIMOTA_MODES) == {"loop", "packed", "batched"}


@pytest.mark.parametrize("name", list(PUBLISHED))
def test_published_exps_by_name_and_file(name):
    exp = get_exp(None, name)
    for key, value in PUBLISHED[name].items():
        assert getattr(exp, key) == value, (name, key)
    assert get_exp(None, name.replace("-", "_").upper()).exp_name == exp.exp_name
    # the thin exps/ file subclasses the packaged Exp without changing it, and is named after itself
    from_file = get_exp(os.path.join(REPO, "exps", EXP_NAMES[name] + ".py"))
    assert isinstance(from_file, type(exp))
    assert vars(from_file) == vars(exp)


def test_exp_repr_is_a_table_of_public_attributes():
    exp = get_exp(None, "yolox-s")
    exp._private = 1
    text = repr(exp)
    assert "keys" in text and "values" in text and "max_epoch" in text and "'yolox_s'" in text
    assert "_private" not in text


# ---------------------------------------------------------------- merge


def test_merge_casts_to_the_existing_types():
    exp = Exp()
    exp.merge([
        "max_epoch", "100", "basic_lr_per_img", "1e-4", "ema", "False", "save_history_ckpt", "0",
        "input_size", "(320, 480)", "test_size", "416,416", "mosaic_scale", "0.5,2", "act", "relu",
        "seed", "42", "data_dir", "/data/coco", "random_size", "[10, 20]", "warmup_lr", "0.001",
        "enable_mixup", "true", "simota_mode", "loop",
    ])  # fmt: skip
    assert exp.max_epoch == 100 and type(exp.max_epoch) is int
    assert exp.basic_lr_per_img == pytest.approx(1e-4) and type(exp.basic_lr_per_img) is float
    assert exp.ema is False and exp.save_history_ckpt is False and exp.enable_mixup is True
    assert exp.input_size == (320, 480) and exp.test_size == (416, 416)
    assert exp.mosaic_scale == (0.5, 2.0) and all(type(v) is float for v in exp.mosaic_scale)
    assert exp.act == "relu" and exp.simota_mode == "loop"
    assert exp.seed == 42 and exp.data_dir == "/data/coco" and exp.random_size == [10, 20]
    assert exp.warmup_lr == pytest.approx(0.001)  # an int default still takes a fractional value
    exp.merge(["seed", "None"])
    assert exp.seed is None
    exp.merge([])
    exp.merge(None)


def test_merge_gives_a_setting_back_to_none_where_a_base_exp_has_it_none():
    """The forest Exp sets max_train_minutes (None in the base Exp): `max_train_minutes None` on the command line
    turns the run back into an open-ended one; a setting that is None nowhere still refuses "None"."""
    forest = get_exp(os.path.join(os.path.dirname(__file__), "..", "exps", "example", "forest", "yolox_nano_forest.py"))
    assert forest.max_train_minutes is not None
    forest.merge(["max_train_minutes", "None"])
    assert forest.max_train_minutes is None
    with pytest.raises(ValueError, match="max_epoch"):
        forest.merge(["max_epoch", "None"])


def test_merge_errors_name_the_key():
    exp = Exp()
    with pytest.raises(ValueError, match=r"no attribute 'max_epochs'.*Did you mean 'max_epoch'"):
        exp.merge(["max_epochs", "10"])
    with pytest.raises(ValueError, match="key value"):
        exp.merge(["max_epoch", "10", "ema"])
    with pytest.raises(ValueError, match="'ema' is a bool"):
        exp.merge(["ema", "maybe"])
    with pytest.raises(ValueError, match="'max_epoch' is a int"):
        exp.merge(["max_epoch", "ten"])
    with pytest.raises(ValueError, match="'input_size' is a int"):
        exp.merge(["input_size", "640,abc"])
    with pytest.raises(ValueError, match="no attribute 'get_model'"):
        exp.merge(["get_model", "1"])  # methods are not settings
    with pytest.raises(ValueError, match="no attribute 'bad_key'"):
        exp.merge(["max_epoch", "10", "bad_key", "1"])
    assert exp.max_epoch == 300  # a failed merge changes nothing, not even the valid pairs before the bad one


# ---------------------------------------------------------------- get_exp errors and user files


def test_get_exp_errors():
    with pytest.raises(ValueError, match="valid names: yolox-nano, yolox-tiny, yolox-s"):
        get_exp(None, "yolox-q")
    with pytest.raises(ValueError, match="needs an exp file"):
        get_exp()
    with pytest.raises(FileNotFoundError, match="no_such_exp.py"):
        get_exp("/nonexistent/dir/no_such_exp.py")


def test_get_exp_by_file_user_exp(tmp_path):
    path = tmp_path / "my_custom_exp.py"
    path.write_text(
        "import os\n"
        "from yolox.exp import Exp as MyExp\n\n"
        "class Exp(MyExp):\n"
        "    def __init__(self):\n"
        "        super().__init__()\n"
        "        self.num_classes = 3\n"
        "        self.depth, self.width = 0.33, 0.25\n"
    )
    exp = get_exp(str(path))
    assert exp.num_classes == 3 and exp.exp_name == "my_custom_exp"
    # a file that sets exp_name keeps it; a copy of a thin file is named after the copy
    named = tmp_path / "named.py"
    named.write_text("from yolox.exp import Exp as E\n\nclass Exp(E):\n    def __init__(self):\n"
                     "        super().__init__()\n        self.exp_name = 'custom'\n")  # fmt: skip
    assert get_exp(str(named)).exp_name == "custom"
    copy = tmp_path / "my_s.py"
    copy.write_text(open(os.path.join(REPO, "exps", "yolox_s.py")).read())
    assert get_exp(str(copy)).exp_name == "my_s"
    # a file whose name shadows a loaded module does not replace that module
    shadow = tmp_path / "yolox.py"
    shadow.write_text(path.read_text())
    assert get_exp(str(shadow)).num_classes == 3
    assert sys.modules["yolox"].__file__ != str(shadow)


def test_exp_from_file_pickles_by_module_name():
    import pickle

    exp = get_exp(os.path.join(REPO, "exps", "yolox_tiny.py"))
    exp.max_epoch = 7
    clone = pickle.loads(pickle.dumps(exp))  # what spawning worker processes does with the exp
    assert type(clone) is type(exp) and clone.max_epoch == 7 and clone.exp_name == "yolox_tiny"


def test_get_exp_by_file_without_exp_class(tmp_path):
    path = tmp_path / "not_an_exp.py"
    path.write_text("x = 1\n")
    with pytest.raises(ImportError, match=r"not_an_exp.py does not define a class named `Exp`"):
        get_exp(str(path))


def test_check_exp_value():
    exp = Exp()
    check_exp_value(exp)
    exp.input_size = (600, 640)
    with pytest.raises(ValueError, match=r"input_size=\(600, 640\) must be multiples of 32"):
        check_exp_value(exp)
    exp.input_size = (640, 640)
    exp.simota_mode = "fast"
    with pytest.raises(ValueError, match="simota_mode='fast' is not supported"):
        check_exp_value(exp)
    with pytest.raises(ValueError, match="simota_mode='fast'"):
        exp.get_model()


# ---------------------------------------------------------------- factories that need no model


class SmallNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, bias=False)
        self.bn = nn.BatchNorm2d(4)
        self.pred = nn.Conv2d(4, 2, 1)
        self.ln = nn.GroupNorm(2, 4)


def test_get_optimizer_groups():
    exp = Exp()
    exp.model = SmallNet()
    opt = exp.get_optimizer(batch_size=64)
    assert isinstance(opt, torch.optim.SGD) and opt.defaults["nesterov"]
    assert exp.get_optimizer(64) is opt  # cached as in the official release
    groups = [set(map(id, g["params"])) for g in opt.param_groups]
    net = exp.model
    assert groups[0] == {id(net.bn.weight)}
    assert groups[1] == {id(net.conv.weight), id(net.pred.weight), id(net.ln.weight)}
    assert groups[2] == {id(net.bn.bias), id(net.pred.bias), id(net.ln.bias)}
    assert [g["weight_decay"] for g in opt.param_groups] == [0, exp.weight_decay, 0]
    assert opt.param_groups[0]["lr"] == exp.warmup_lr
    exp2 = Exp()
    exp2.model, exp2.warmup_epochs = SmallNet(), 0
    assert exp2.get_optimizer(32).param_groups[0]["lr"] == pytest.approx(exp2.basic_lr_per_img * 32)


def test_get_lr_scheduler_uses_exp_values():
    exp = Exp()
    sched = exp.get_lr_scheduler(0.01, iters_per_epoch=10)
    assert sched.update_lr(50) == pytest.approx(0.01)  # end of the 5 warm-up epochs
    assert sched.update_lr(3000 - 150) == pytest.approx(0.01 * exp.min_lr_ratio)


def test_preprocess_and_random_resize():
    exp = Exp()
    imgs = torch.rand(2, 3, 640, 640)
    targets = torch.tensor([[[1.0, 320.0, 160.0, 64.0, 32.0]]]).repeat(2, 1, 1)
    out, t = exp.preprocess(imgs, targets.clone(), (320, 480))
    assert out.shape == (2, 3, 320, 480)
    assert t[0, 0].tolist() == pytest.approx([1.0, 240.0, 80.0, 48.0, 16.0])
    same, t_same = exp.preprocess(imgs, targets.clone(), (640, 640))
    assert same is imgs and torch.equal(t_same, targets)

    sizes = {exp.random_resize(None, 0, 0, False) for _ in range(60)}
    assert all(h % 32 == 0 and h == w and 15 * 32 <= h <= 25 * 32 for h, w in sizes) and len(sizes) > 3
    exp.random_size, exp.input_size = (10, 12), (640, 960)
    sizes = {exp.random_resize(None, 0, 0, False) for _ in range(40)}
    assert sizes <= {(320, 480), (352, 512), (384, 576)}  # width follows the 1.5 aspect ratio


def test_eval_delegates_to_the_evaluator():
    calls = []

    class FakeEvaluator:
        def evaluate(self, model, is_distributed, half, return_outputs=False):
            calls.append((model, is_distributed, half, return_outputs))
            return (0.5, 0.3, "summary")

    assert Exp().eval("m", FakeEvaluator(), False, half=True) == (0.5, 0.3, "summary")
    assert calls == [("m", False, True, False)]


# ---------------------------------------------------------------- get_model (needs yolox.models)


@pytest.mark.parametrize("name", list(PUBLISHED))
def test_get_model_of_every_exp(name):
    exp = get_exp(None, name)
    exp.simota_mode = "packed"
    with torch.device("meta"):  # structure and counts without allocating the big models
        model = exp.get_model()
    assert exp.get_model() is model  # cached in exp.model
    assert sum(p.numel() for p in model.parameters()) == PARAMS[name]
    assert model.training
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert bns and all(m.eps == 1e-3 and m.momentum == 0.03 for m in bns)
    assert model.head.simota_mode == "packed" and model.head.simota_pack_width == 10000
    depthwise_convs = [m for m in model.modules() if isinstance(m, nn.Conv2d) and m.groups > 1]
    assert bool(depthwise_convs) == (name == "yolox-nano")
    acts = {type(m) for m in model.head.modules() if isinstance(m, (nn.SiLU, nn.LeakyReLU, nn.ReLU))}
    assert acts == ({nn.LeakyReLU} if name == "yolov3" else {nn.SiLU})


def test_get_model_initialises_biases_and_optimizer_covers_every_parameter():
    exp = get_exp(None, "yolox-nano")
    model = exp.get_model()
    prior = -torch.log(torch.tensor((1 - 0.01) / 0.01))
    for conv in list(model.head.cls_preds) + list(model.head.obj_preds):
        assert torch.allclose(conv.bias, prior.expand_as(conv.bias))
    opt = exp.get_optimizer(16)
    in_groups = [id(p) for g in opt.param_groups for p in g["params"]]
    assert sorted(in_groups) == sorted(id(p) for p in model.parameters())  # each parameter exactly once
    assert all(p.dim() == 1 for p in opt.param_groups[0]["params"])  # BN weights
    assert all(p.dim() == 4 for p in opt.param_groups[1]["params"])  # conv weights


# ---------------------------------------------------------------- data and evaluator factories on a tiny COCO set


def _write_tiny_coco(root, num_images=3):
    import json

    import cv2
    import numpy as np

    rng = np.random.default_rng(0)
    os.makedirs(root / "annotations")
    for split in ("train2017", "val2017"):
        os.makedirs(root / split)
        images, anns = [], []
        for i in range(num_images):
            cv2.imwrite(str(root / split / f"{i}.jpg"), rng.integers(0, 255, (96, 128, 3), dtype=np.uint8))
            images.append({"id": i + 1, "file_name": f"{i}.jpg", "width": 128, "height": 96})
            anns.append({"id": i + 1, "image_id": i + 1, "category_id": 7, "bbox": [10, 20, 50, 40],
                         "area": 2000, "iscrowd": 0})  # fmt: skip
        data = {"images": images, "annotations": anns, "categories": [{"id": 7, "name": "thing"}]}
        (root / "annotations" / f"instances_{split}.json").write_text(json.dumps(data))


def test_data_and_evaluator_factories_on_tiny_coco(tmp_path):
    _write_tiny_coco(tmp_path)
    exp = get_exp(None, "yolox-nano")
    exp.data_dir, exp.num_classes, exp.data_num_workers = str(tmp_path), 1, 0
    exp.input_size = exp.test_size = (128, 128)

    imgs, targets = next(iter(exp.get_data_loader(batch_size=2, is_distributed=False)))[:2]
    assert imgs.shape == (2, 3, 128, 128) and targets.shape == (2, 120, 5)  # MosaicDetection pads to 120 labels
    assert imgs.dtype == torch.uint8 and targets.dtype == torch.float32  # train_image_dtype; the trainer casts
    exp.train_image_dtype, exp.dataset = "float32", None  # the official batches (from a new dataset)
    assert next(iter(exp.get_data_loader(batch_size=2, is_distributed=False)))[0].dtype == torch.float32
    assert (targets.sum(-1) > 0).any()

    evaluator = exp.get_evaluator(batch_size=2, is_distributed=False)
    assert type(evaluator).__name__ == "COCOEvaluator"
    assert evaluator.num_classes == 1 and tuple(evaluator.img_size) == (128, 128)
    assert evaluator.confthre == exp.test_conf and evaluator.nmsthre == exp.nmsthre
    val_imgs = next(iter(evaluator.dataloader))[0]
    assert val_imgs.shape == (2, 3, 128, 128)
