"""tools/demo.py's logic: drawing, class names from the Exp, and the command line writing drawn pictures/videos."""
import json

import cv2
import numpy as np
import pytest
import torch

from yolox.apps.class_names import class_names_for_exp
from yolox.tools.demo import run_demo_cli
from yolox.utils import color_for, vis

EXP_TEXT = '''
from yolox.exp import Exp as BaseExp


class Exp(BaseExp):
    def __init__(self):
        super().__init__()
        self.depth = 0.33
        self.width = 0.125
        self.num_classes = 2
        self.test_size = (64, 96)
        self.data_dir = {data!r}
        self.val_ann = "val.json"
        self.output_dir = {out!r}
'''


def test_vis_draws_boxes_in_class_colours_and_skips_low_scores():
    img = np.zeros((100, 120, 3), np.uint8)
    vis(img, [[10, 30, 60, 80], [70, 10, 110, 90]], [0.9, 0.2], [1, 0], conf=0.5, class_names=["a", "b"])
    assert tuple(img[55, 10]) == color_for(1)  # left edge of the kept box
    assert tuple(img[50, 70]) == (0, 0, 0)  # the box under conf is not drawn
    assert img[22:30, 10:40].any()  # label above the box


@pytest.fixture()
def tiny(tmp_path):
    """A custom-data Exp (categories named in its val json), a confident checkpoint, and a folder of images."""
    (tmp_path / "data" / "annotations").mkdir(parents=True)
    cats = [{"id": 1, "name": "tree"}, {"id": 2, "name": "stump"}]
    (tmp_path / "data" / "annotations" / "val.json").write_text(
        json.dumps({"images": [], "annotations": [], "categories": cats}))
    exp_file = tmp_path / "tiny_demo_exp.py"
    exp_file.write_text(EXP_TEXT.format(data=str(tmp_path / "data"), out=str(tmp_path / "out")))
    from yolox.exp import get_exp

    exp = get_exp(str(exp_file))
    model = exp.get_model()
    with torch.no_grad():  # every anchor confident, class 0 ("tree") first: boxes are certain to be drawn
        for conv in model.head.obj_preds:
            conv.bias.fill_(8.0)
        for conv in model.head.cls_preds:
            conv.bias.copy_(torch.tensor([8.0, -8.0]))
    ckpt = tmp_path / "tiny.pth"
    torch.save({"model": model.state_dict()}, ckpt)
    images = tmp_path / "images"
    images.mkdir()
    # smooth grey gradients: JPEG re-encoding changes them by a level or two, drawn boxes by far more
    gradient = np.repeat(np.linspace(60, 200, 140, dtype=np.uint8)[None, :, None], 90, 0).repeat(3, 2)
    for name in ("b.png", "a.jpg"):
        cv2.imwrite(str(images / name), gradient)
    return exp, exp_file, ckpt, images, tmp_path


def test_class_names_come_from_the_exp(tiny):
    exp = tiny[0]
    assert class_names_for_exp(exp) == ["tree", "stump"]
    exp.class_names = ("x", "y")
    assert class_names_for_exp(exp) == ["x", "y"]
    exp.class_names = ("x",)
    with pytest.raises(ValueError, match="1 class_names but num_classes = 2"):
        class_names_for_exp(exp)


def test_demo_folder_writes_drawn_pictures(tiny):
    _, exp_file, ckpt, images, tmp = tiny
    written = run_demo_cli(["image", "-f", str(exp_file), "-c", str(ckpt), "--path", str(images), "--save_result",
                            "--conf", "0.25", "--device", "cpu"])
    assert sorted(p.split("/")[-1] for p in written) == ["a.jpg", "b.png"]
    for path in written:
        assert "/out/tiny_demo_exp/vis_res/" in path
        drawn = cv2.imread(path)
        original = cv2.imread(str(images / path.split("/")[-1]))
        assert drawn.shape == original.shape
        if path.endswith(".png"):  # lossless: the "tree" colour appears where the grey image did not have it
            tree = np.all(drawn == np.array(color_for(0), np.uint8), axis=-1).sum()
            assert tree > np.all(original == np.array(color_for(0), np.uint8), axis=-1).sum() + 50
        else:
            assert np.abs(drawn.astype(int) - original).max(axis=-1).mean() > 10


def test_demo_video_writes_a_video(tiny):
    _, exp_file, ckpt, _, tmp = tiny
    video = tmp / "clip.mp4"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"mp4v"), 5, (96, 64))
    for i in range(3):
        writer.write(np.full((64, 96, 3), 40 * i, np.uint8))
    writer.release()
    out = run_demo_cli(["video", "-f", str(exp_file), "-c", str(ckpt), "--path", str(video), "--save_result"])
    cap = cv2.VideoCapture(out)
    frames = 0
    while cap.read()[0]:
        frames += 1
    assert frames == 3


def test_demo_user_errors(tiny):
    _, exp_file, ckpt, images, tmp = tiny
    with pytest.raises(FileNotFoundError, match="nowhere"):
        run_demo_cli(["image", "-f", str(exp_file), "-c", str(ckpt), "--path", str(tmp / "nowhere")])
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            run_demo_cli(["image", "-f", str(exp_file), "-c", str(ckpt), "--path", str(images), "--device", "gpu"])
    with pytest.raises(ValueError, match="demo type"):
        run_demo_cli(["photo", "-f", str(exp_file), "-c", str(ckpt)])
    with pytest.raises(ValueError, match="no --path given: give an image or a folder of images"):
        run_demo_cli(["image", "-f", str(exp_file), "-c", str(ckpt)])
    with pytest.raises(ValueError, match="no --path given"):
        run_demo_cli(["video", "-f", str(exp_file), "-c", str(ckpt)])
