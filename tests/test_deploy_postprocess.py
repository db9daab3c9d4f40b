"""postprocess over the whole batch at once gives, image by image, exactly what the per-image version gives."""
import pytest
import torch
import torchvision

from yolox.utils import grouped_nms, postprocess


def per_image_postprocess(prediction, num_classes, conf_thre, nms_thre, class_agnostic):
    """The per-image postprocess this package had before the batched one (the official algorithm, input unchanged)."""
    output = [None for _ in range(prediction.shape[0])]
    centre, size = prediction[..., :2], prediction[..., 2:4]
    boxes_xyxy = torch.cat([centre - size / 2, centre + size / 2], dim=-1)
    for i in range(prediction.shape[0]):
        image_pred = prediction[i]
        class_conf, class_pred = torch.max(image_pred[:, 5 : 5 + num_classes], dim=1, keepdim=True)
        keep = image_pred[:, 4] * class_conf[:, 0] >= conf_thre
        detections = torch.cat(
            (boxes_xyxy[i], image_pred[:, 4:5], class_conf, class_pred.to(image_pred.dtype)), dim=1)[keep]
        if detections.shape[0] == 0:
            continue
        scores = detections[:, 4] * detections[:, 5]
        if class_agnostic:
            keep_idx = torchvision.ops.nms(detections[:, :4], scores, nms_thre)
        else:
            keep_idx = torchvision.ops.batched_nms(detections[:, :4], scores, detections[:, 6], nms_thre)
        output[i] = detections[keep_idx]
    return output


def random_predictions(batch, anchors, num_classes, seed, size=320.0, quantise=None):
    """(B, A, 5 + K) decoded-looking outputs: clustered boxes (so that NMS removes many), scores in [0, 1]."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.rand(batch, 24, 2, generator=g) * size  # 24 objects per image
    which = torch.randint(0, 24, (batch, anchors), generator=g)
    cxcy = centres.gather(1, which[..., None].expand(-1, -1, 2)) + torch.randn(batch, anchors, 2, generator=g) * 6
    wh = torch.rand(batch, anchors, 2, generator=g) * 60 + 8
    scores = torch.rand(batch, anchors, 1 + num_classes, generator=g)
    if quantise:  # equal scores and equal best classes: the order of ties must match too
        scores = (scores * quantise).round() / quantise
    return torch.cat([cxcy, wh, scores], -1)


def assert_same(got, ref):
    assert len(got) == len(ref)
    for i, (a, b) in enumerate(zip(got, ref)):
        assert (a is None) == (b is None), f"image {i}: one side has no detections"
        if a is not None:
            assert a.shape == b.shape, f"image {i}: {a.shape[0]} detections, expected {b.shape[0]}"
            assert torch.equal(a, b), f"image {i}: detections differ"


@pytest.mark.parametrize("class_agnostic", [False, True])
@pytest.mark.parametrize("batch,anchors,num_classes,conf,seed", [
    (6, 3000, 4, 0.05, 0),  # > 1000 candidates per image and in all: torchvision's NMS per group on both sides
    (5, 400, 3, 0.2, 1),  # a few hundred in all: one NMS over the whole batch, groups moved apart
    (4, 2500, 1, 0.3, 2),  # one class
    (3, 1500, 6, 0.0, 3),  # every anchor a candidate
])
def test_batched_equals_per_image(batch, anchors, num_classes, conf, seed, class_agnostic):
    pred = random_predictions(batch, anchors, num_classes, seed)
    before = pred.clone()
    got = postprocess(pred, num_classes, conf, 0.45, class_agnostic)
    assert torch.equal(pred, before), "the input must be left unchanged"
    ref = per_image_postprocess(pred, num_classes, conf, 0.45, class_agnostic)
    assert_same(got, ref)
    assert sum(d.shape[0] for d in got if d is not None) > batch * 20  # non-trivial: many boxes kept ...
    cands = (pred[..., 4] * pred[..., 5:].amax(-1) >= conf).sum().item()
    assert sum(d.shape[0] for d in got if d is not None) < cands  # ... and many removed


def _canonical(dets):
    """Rows by decreasing score, equal scores by their values: the order NMS leaves among ties made canonical."""
    keys = torch.cat([-(dets[:, 4:5] * dets[:, 5:6]), dets], 1).tolist()
    return sorted(keys)


@pytest.mark.parametrize("class_agnostic", [False, True])
def test_ties_in_scores_and_classes(class_agnostic):
    """Equal scores and equal best classes everywhere. Class-agnostic, the order matches exactly; class-aware, the
    per-image code ordered equal scores by torchvision's unstable sort (its per-class path), so the rows are the same
    and in the same score order, and ties come here in anchor order."""
    pred = random_predictions(4, 1200, 5, seed=4, quantise=4)  # scores in {0, .25, .5, .75, 1}
    got = postprocess(pred, 5, 0.1, 0.5, class_agnostic)
    ref = per_image_postprocess(pred, 5, 0.1, 0.5, class_agnostic)
    if class_agnostic:
        assert_same(got, ref)
        return
    for a, b in zip(got, ref):
        assert torch.equal(a[:, 4] * a[:, 5], b[:, 4] * b[:, 5])
        assert _canonical(a) == _canonical(b)


def test_images_without_candidates_are_none_and_rows_sorted():
    pred = random_predictions(4, 800, 2, seed=5)
    pred[1, :, 4] = 0.0  # image 1: no objectness
    pred[3, :, 4] = 0.0
    got = postprocess(pred, 2, 0.1, 0.45)
    assert got[1] is None and got[3] is None and got[0] is not None and got[2] is not None
    for d in (got[0], got[2]):
        s = d[:, 4] * d[:, 5]
        assert torch.all(s[:-1] >= s[1:])
    assert postprocess(pred, 2, 2.0, 0.45) == [None] * 4


def test_grouped_nms_is_per_group_nms():
    """Each group's kept boxes are exactly torchvision.ops.nms of that group alone, whichever path is taken."""
    for n, seed in ((300, 6), (1800, 7)):
        pred = random_predictions(1, n, 1, seed)[0]
        boxes = torch.cat([pred[:, :2] - pred[:, 2:4] / 2, pred[:, :2] + pred[:, 2:4] / 2], 1)
        scores = pred[:, 4]
        groups = torch.randint(0, 40, (n,), generator=torch.Generator().manual_seed(seed)) * 1000  # far apart ids
        keep = grouped_nms(boxes, scores, groups, 0.5)
        assert torch.all(scores[keep][:-1] >= scores[keep][1:])
        for gid in groups.unique():
            idx = torch.nonzero(groups == gid)[:, 0]
            ref = idx[torchvision.ops.nms(boxes[idx], scores[idx], 0.5)]
            assert torch.equal(keep[groups[keep] == gid], ref)
