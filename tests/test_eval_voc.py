"""VOC AP on a small hand-made case, against values worked out by hand (in the comments)."""
import numpy as np
import pytest
import torch

from yolox.evaluators import VOCEvaluator
from yolox.evaluators.voc_eval import class_pr_curve, parse_rec, voc_ap, voc_eval
from yolox.evaluators.voc_evaluator import voc_map

# Class 0 "dog": image a has G1 [0,0,9,9], G2 [20,20,29,29] and a difficult G3 [40,40,49,49];
# image b has G4 [0,0,9,9] and G5 [60,0,79,19]. Four non-difficult gts.
# Class 1 "cat": image b has one gt [50,50,69,69].
GT = {
    "a": [("dog", [0, 0, 9, 9], 0), ("dog", [20, 20, 29, 29], 0), ("dog", [40, 40, 49, 49], 1)],
    "b": [("dog", [0, 0, 9, 9], 0), ("dog", [60, 0, 79, 19], 0), ("cat", [50, 50, 69, 69], 0)],
}
# Dog detections, by falling score:
#   0.9 a G1 exact -> TP;  0.8 a G1 again -> FP (duplicate);  0.7 a G3 (difficult) -> ignored;
#   0.6 b nowhere -> FP;  0.5 b G4 exact -> TP.
#   cumulative tp = 1 1 1 1 2, fp = 0 1 1 2 2 (the ignored one adds to neither)
#   recall = 1/4 1/4 1/4 1/4 2/4, precision = 1 1/2 1/2 1/3 1/2
#   area AP: envelope 1 up to recall 1/4, then 1/2 up to 2/4: 1/4 * 1 + 1/4 * 1/2 = 0.375
#   VOC07: t = 0, .1, .2 -> 1; t = .3, .4, .5 -> 1/2; t = .6 ... 1 -> 0: (3 + 1.5) / 11 = 0.4090909...
DOG_DETS = [("a", 0.9, [0, 0, 9, 9]), ("a", 0.8, [0, 0, 9, 9]), ("a", 0.7, [40, 40, 49, 49]),
            ("b", 0.6, [100, 100, 110, 110]), ("b", 0.5, [0, 0, 9, 9])]
# Cat detections: 0.9 [50,50,69,59] has IoU 200/400 = 0.5 exactly, not > 0.5 -> FP;
#   0.4 [52,50,69,69] has IoU 360/400 = 0.9 -> TP. recall 0 1, precision 0 1/2 -> AP 0.5 (both metrics).
CAT_DETS = [("b", 0.9, [50, 50, 69, 59]), ("b", 0.4, [52, 50, 69, 69])]


def _gt_for(name):
    return {k: (np.array([b for n, b, _ in objs if n == name], dtype=float).reshape(-1, 4),
                np.array([d for n, _, d in objs if n == name], dtype=bool)) for k, objs in GT.items()}


def test_pr_curve_by_hand():
    rec, prec, npos = class_pr_curve(DOG_DETS, _gt_for("dog"))
    assert npos == 4
    np.testing.assert_allclose(rec, [1 / 4, 1 / 4, 1 / 4, 1 / 4, 2 / 4])
    np.testing.assert_allclose(prec, [1, 1 / 2, 1 / 2, 1 / 3, 1 / 2])


@pytest.mark.parametrize("use_07, dog_ap", [(False, 0.375), (True, 4.5 / 11)])
def test_voc_ap_by_hand(use_07, dog_ap):
    rec, prec, _ = class_pr_curve(DOG_DETS, _gt_for("dog"))
    assert voc_ap(rec, prec, use_07_metric=use_07) == pytest.approx(dog_ap, abs=1e-12)
    rec, prec, _ = class_pr_curve(CAT_DETS, _gt_for("cat"))
    np.testing.assert_allclose(rec, [0, 1])
    assert voc_ap(rec, prec, use_07_metric=use_07) == pytest.approx(0.5, abs=1e-12)


def test_voc_ap_simple_curves():
    assert voc_ap([1.0], [1.0]) == 1.0 and voc_ap([1.0], [1.0], use_07_metric=True) == pytest.approx(1.0)
    # half recall at full precision: area 0.5; 11-point: t = 0 ... 0.5 (6 points) -> 6 / 11
    assert voc_ap([0.5], [1.0]) == 0.5 and voc_ap([0.5], [1.0], True) == pytest.approx(6 / 11)


def _write_voc(root):
    (root / "Annotations").mkdir(parents=True)
    for name, objs in GT.items():
        body = "".join(
            f"<object><name>{n}</name><difficult>{d}</difficult><bndbox><xmin>{b[0]}</xmin><ymin>{b[1]}</ymin>"
            f"<xmax>{b[2]}</xmax><ymax>{b[3]}</ymax></bndbox></object>" for n, b, d in objs
        )
        (root / "Annotations" / f"{name}.xml").write_text(f"<annotation><filename>{name}.jpg</filename>{body}</annotation>")


def test_file_based_voc_eval(tmp_path):
    _write_voc(tmp_path)
    assert parse_rec(tmp_path / "Annotations" / "a.xml")[2] == {"name": "dog", "difficult": 1, "bbox": [40, 40, 49, 49]}
    (tmp_path / "set.txt").write_text("a\nb\n")
    (tmp_path / "det_dog.txt").write_text("".join(f"{k} {s} {' '.join(map(str, b))}\n" for k, s, b in DOG_DETS))
    _, _, ap = voc_eval(str(tmp_path / "det_{}.txt"), str(tmp_path / "Annotations" / "{}.xml"),
                        str(tmp_path / "set.txt"), "dog", use_07_metric=True)
    assert ap == pytest.approx(4.5 / 11, abs=1e-12)
    with pytest.raises(ValueError, match="nothere.xml"):
        parse_rec(tmp_path / "nothere.xml")


def test_voc_map_class_without_gt_is_nan():
    dets = {"a": (np.array([[0, 0, 9, 9]]), np.array([2]), np.array([0.9]))}
    gts = {k: (np.array([b for _, b, _ in o], float), np.array([{"dog": 0, "cat": 1}[n] for n, _, _ in o]),
               np.array([d for *_, d in o], bool)) for k, o in GT.items()}
    aps = voc_map(dets, gts, num_classes=3, use_07_metric=False)
    assert aps.shape == (3, 10) and np.isnan(aps[2]).all() and (aps[:2] == 0).all()


# ---- the evaluator over a loader, with a stand-in model that outputs the detections above ----
SIZES = {"a": (100, 120), "b": (80, 160)}  # (h, w); with TEST_SIZE the resize ratio is 0.5 for both
TEST_SIZE = (50, 80)


class _VOCLike(torch.utils.data.Dataset):
    _classes = ("dog", "cat")
    image_set = [("2007", "test")]

    def __init__(self, root):
        self.ids = [(str(root), "a"), (str(root), "b")]
        self._annopath = "%s/Annotations/%s.xml"

    def __len__(self):
        return len(self.ids)

    def __getitem__(self, i):
        return torch.zeros(3, *TEST_SIZE), np.zeros((1, 5)), SIZES[self.ids[i][1]], i


class _DetModel(torch.nn.Module):
    """Emits the hand-made detections, 0-based (XML minus 1) and letterboxed (x 0.5), as (B, A, 5 + 2)."""

    def __init__(self):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(1))

    def forward(self, imgs):
        out = torch.zeros(2, 8, 7)
        for b, key in enumerate("ab"):
            dets = [(c, s, bx) for c, ds in ((0, DOG_DETS), (1, CAT_DETS)) for k, s, bx in ds if k == key]
            for a, (c, s, (x1, y1, x2, y2)) in enumerate(dets):
                x1, y1, x2, y2 = ((v - 1) * 0.5 for v in (x1, y1, x2, y2))
                out[b, a, :5] = torch.tensor([(x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1, s])
                out[b, a, 5 + c] = 1.0
        return out


def test_voc_evaluator_full_pass(tmp_path):
    _write_voc(tmp_path)
    loader = torch.utils.data.DataLoader(_VOCLike(tmp_path), batch_size=2)
    # nmsthre 1.0 keeps the duplicate detection, which the hand computation counts as a false positive.
    ev = VOCEvaluator(loader, TEST_SIZE, confthre=0.01, nmsthre=1.0, num_classes=2)
    (map5095, map50, summary), dets = ev.evaluate(_DetModel(), return_outputs=True)
    assert map50 == pytest.approx((4.5 / 11 + 0.5) / 2, abs=1e-9)  # VOC07 metric chosen from the 2007 image set
    assert 0 < map5095 < map50
    assert "VOC07 11-point" in summary and "| dog" in summary and "Average forward time" in summary
    np.testing.assert_allclose(dets[1][0][0], np.array(CAT_DETS[0][2]) - 1, atol=1e-4)  # back to original pixels
    ev.use_07_metric = False
    assert ev.evaluate(_DetModel())[1] == pytest.approx((0.375 + 0.5) / 2, abs=1e-9)


def test_voc_evaluator_on_the_real_voc_dataset(tmp_path):
    """The same case through yolox.data.VOCDetection (VOC2007 folder layout), as the VOC Exp builds it."""
    import cv2

    from yolox.data import AnnotationTransform, ValTransform, VOCDetection

    root = tmp_path / "VOC2007"
    _write_voc(root)
    for name, (h, w) in SIZES.items():  # the dataset reads the image size from the XML
        xml = (root / "Annotations" / f"{name}.xml").read_text()
        size = f"<size><width>{w}</width><height>{h}</height><depth>3</depth></size>"
        (root / "Annotations" / f"{name}.xml").write_text(xml.replace("</filename>", "</filename>" + size))
    (root / "JPEGImages").mkdir()
    for name, (h, w) in SIZES.items():
        cv2.imwrite(str(root / "JPEGImages" / f"{name}.jpg"), np.zeros((h, w, 3), np.uint8))
    (root / "ImageSets" / "Main").mkdir(parents=True)
    (root / "ImageSets" / "Main" / "test.txt").write_text("a\nb\n")
    dataset = VOCDetection(str(tmp_path), image_sets=[("2007", "test")], img_size=TEST_SIZE, preproc=ValTransform(),
                           target_transform=AnnotationTransform({"dog": 0, "cat": 1}))
    ev = VOCEvaluator(torch.utils.data.DataLoader(dataset, batch_size=2), TEST_SIZE, 0.01, 1.0, num_classes=2)
    _, map50, summary = ev.evaluate(_DetModel())
    assert map50 == pytest.approx((4.5 / 11 + 0.5) / 2, abs=1e-9) and "| cat" in summary
