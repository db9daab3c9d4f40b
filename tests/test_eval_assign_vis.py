"""tools/visualize_assign.py: SimOTA's positives drawn on real (bundled) images, one colour per gt."""
import os

import cv2
import numpy as np
import pytest
import torch

from yolox.apps.assign_vis import assign_image, assignment_dataset, chw_to_bgr, draw_assignment
from yolox.tools.visualize_assign import run_assign_vis_cli
from yolox.utils import color_for

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXP_TEXT = '''
from yolox.exp import Exp as BaseExp


class Exp(BaseExp):
    def __init__(self):
        super().__init__()
        self.depth = 0.33
        self.width = 0.125
        self.num_classes = 1
        self.data_dir = {data!r}
        self.val_ann = "val.json"
        self.test_size = (224, 224)
        self.output_dir = {out!r}

    def get_eval_dataset(self, **kwargs):
        from yolox.data import COCODataset, ValTransform

        return COCODataset(data_dir=self.data_dir, json_file=self.val_ann, name="val", img_size=self.test_size,
                           preproc=ValTransform())
'''


@pytest.fixture(scope="module")
def exp_file(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("assign")
    path = tmp / "forest_assign.py"
    path.write_text(EXP_TEXT.format(data=os.path.join(ROOT, "datasets", "forest"), out=str(tmp / "out")))
    return path


def test_positives_sit_in_their_gt_centre_prior_and_are_drawn_in_its_colour(exp_file):
    from yolox.exp import get_exp

    exp = get_exp(str(exp_file))
    torch.manual_seed(0)
    model = exp.get_model()
    img, labels, _, _ = assignment_dataset(exp, "val")[0]
    fg, matched, centres, strides = assign_image(model, torch.as_tensor(img), labels, mode="loop")
    real = np.nonzero(labels.sum(1) > 0)[0]
    assert len(real) > 5 and fg.any()
    counts = np.bincount(matched[fg].numpy(), minlength=len(labels))
    assert ((counts[real] >= 1) & (counts[real] <= 10)).all()  # dynamic k is between 1 and 10
    for a in np.nonzero(fg.numpy())[0]:  # SimOTA's centre prior: within 1.5 strides of the gt centre
        _, cx, cy, _, _ = labels[matched[a]]
        assert abs(centres[a, 0] - cx) < 1.5 * strides[a] and abs(centres[a, 1] - cy) < 1.5 * strides[a]
    assert model.training is True  # the caller's mode is restored
    # every mode of the assigner gives the same picture
    fg_b, matched_b, _, _ = assign_image(model, torch.as_tensor(img), labels, mode="batched")
    assert torch.equal(fg, fg_b) and torch.equal(matched[fg], matched_b[fg_b])

    picture = draw_assignment(chw_to_bgr(img), labels, fg, matched, centres, strides)
    for a in np.nonzero(fg.numpy())[0]:
        x, y = (int(round(v)) for v in centres[a].tolist())
        if 0 <= x < picture.shape[1] and 0 <= y < picture.shape[0]:
            # dots of neighbouring gts may overlap: the pixel has the colour of one of the gts assigned here
            near = {int(matched[b]) for b in np.nonzero(fg.numpy())[0] if (centres[b] - centres[a]).abs().max() < 8}
            assert tuple(picture[y, x]) in {color_for(g) for g in near}


def test_cli_writes_one_picture_per_image(exp_file):
    written = run_assign_vis_cli(["-f", str(exp_file), "--split", "val", "-b", "2", "--max-batch", "1"])
    assert [os.path.basename(p) for p in written] == ["assign_vis_0_0.png", "assign_vis_0_1.png"]
    for path in written:
        picture = cv2.imread(path)
        assert picture.shape == (224, 224, 3)
        assert np.all(picture == np.array(color_for(0), np.uint8), axis=-1).sum() > 20  # the first gt's box and dots
