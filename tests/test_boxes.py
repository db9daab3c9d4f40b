"""Box conversions, pairwise IoU and postprocess (threshold + NMS) against hand-checked and brute-force references."""
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from yolox.utils import (
    adjust_box_anns,
    bboxes_iou,
    cxcywh2xyxy,
    filter_box,
    matrix_iou,
    postprocess,
    xyxy2cxcywh,
    xyxy2xywh,
)


def _random_xyxy(n, generator, scale=100.0):
    xy = torch.rand((n, 2), generator=generator) * scale
    wh = torch.rand((n, 2), generator=generator) * scale / 2 + 1.0
    return torch.cat([xy, xy + wh], dim=1)


def _iou_reference(a, b):
    """Plain-Python IoU of two xyxy boxes."""
    iw = min(a[2], b[2]) - max(a[0], b[0])
    ih = min(a[3], b[3]) - max(a[1], b[1])
    inter = iw * ih if iw > 0 and ih > 0 else 0.0
    area_a = (a[2] - a[0]) * (a[3] - a[1])
    area_b = (b[2] - b[0]) * (b[3] - b[1])
    return inter / (area_a + area_b - inter)


def test_conversions_hand_values_and_in_place():
    boxes = np.array([[10.0, 20.0, 30.0, 60.0]])
    out = xyxy2xywh(boxes.copy())
    np.testing.assert_allclose(out, [[10, 20, 20, 40]])
    out = xyxy2cxcywh(boxes.copy())
    np.testing.assert_allclose(out, [[20, 40, 20, 40]])
    back = cxcywh2xyxy(np.array([[20.0, 40.0, 20.0, 40.0]]))
    np.testing.assert_allclose(back, boxes)
    # the official functions convert in place and return the same object
    t = torch.tensor([[10.0, 20.0, 30.0, 60.0, 7.0]])
    res = xyxy2cxcywh(t)
    assert res is t
    assert torch.equal(t, torch.tensor([[20.0, 40.0, 20.0, 40.0, 7.0]]))  # extra columns untouched


def test_conversions_round_trip():
    g = torch.Generator().manual_seed(0)
    boxes = _random_xyxy(50, g)
    assert torch.allclose(cxcywh2xyxy(xyxy2cxcywh(boxes.clone())), boxes, atol=1e-4)


def test_bboxes_iou_hand_values():
    a = torch.tensor([[0.0, 0.0, 10.0, 10.0]])
    b = torch.tensor(
        [
            [0.0, 0.0, 10.0, 10.0],  # same box
            [5.0, 0.0, 15.0, 10.0],  # half overlap: 50 / 150
            [10.0, 0.0, 20.0, 10.0],  # touching edge: tl == br on x -> zero
            [20.0, 20.0, 30.0, 30.0],  # disjoint (br - tl negative on both axes: product positive, masked)
        ]
    )
    iou = bboxes_iou(a, b)
    assert iou.shape == (1, 4)
    assert torch.allclose(iou, torch.tensor([[1.0, 1.0 / 3.0, 0.0, 0.0]]))


def test_bboxes_iou_matches_reference_and_cxcywh_form():
    g = torch.Generator().manual_seed(1)
    a = _random_xyxy(7, g).double()
    b = _random_xyxy(9, g).double()
    iou = bboxes_iou(a, b)
    ref = torch.tensor([[_iou_reference(x.tolist(), y.tolist()) for y in b] for x in a], dtype=torch.float64)
    assert torch.allclose(iou, ref, atol=1e-12)
    iou_c = bboxes_iou(xyxy2cxcywh(a.clone()), xyxy2cxcywh(b.clone()), xyxy=False)
    assert torch.allclose(iou_c, ref, atol=1e-9)
    np.testing.assert_allclose(matrix_iou(a.numpy(), b.numpy()), ref.numpy(), atol=1e-9)


def test_bboxes_iou_rejects_wrong_shapes():
    with pytest.raises(IndexError, match=r"\(N, 4\)"):
        bboxes_iou(torch.zeros(3, 5), torch.zeros(2, 4))


def test_adjust_box_anns_scales_shifts_and_clips():
    bbox = np.array([[10.0, 10.0, 50.0, 80.0]])
    out = adjust_box_anns(bbox, 2.0, 5, -30, 100, 100)
    np.testing.assert_allclose(out, [[25, 0, 100, 100]])


def test_filter_box_keeps_areas_strictly_between():
    boxes = torch.tensor([[0.0, 0.0, 2.0, 2.0], [0.0, 0.0, 5.0, 5.0], [0.0, 0.0, 20.0, 20.0], [0, 0, 3.0, 3.0]])
    kept = filter_box(boxes, (3, 10))  # areas 4, 25, 400, 9 -> keep 25 only (9 is not > 9)
    assert kept.tolist() == [[0.0, 0.0, 5.0, 5.0]]


def _pred(rows, num_classes):
    """(1, A, 5 + K) from rows of (cx, cy, w, h, obj, class_index, class_score)."""
    out = torch.zeros((1, len(rows), 5 + num_classes))
    for i, (cx, cy, w, h, obj, c, s) in enumerate(rows):
        out[0, i, :5] = torch.tensor([cx, cy, w, h, obj])
        out[0, i, 5 + c] = s
    return out


def test_postprocess_hand_case():
    pred = _pred(
        [
            (50, 50, 20, 20, 0.9, 0, 0.9),  # score 0.81
            (52, 50, 20, 20, 0.8, 0, 0.9),  # overlaps the first, same class: suppressed
            (52, 50, 20, 20, 0.8, 1, 0.9),  # same place, other class: kept (0.72)
            (10, 10, 4, 4, 0.5, 2, 0.1),  # score 0.05 < conf 0.1: dropped
        ],
        num_classes=3,
    )
    original = pred.clone()
    out = postprocess(pred, num_classes=3, conf_thre=0.1, nms_thre=0.45)
    assert torch.equal(pred, original)  # input left unchanged
    assert len(out) == 1 and out[0].shape == (2, 7)
    det = out[0]
    assert torch.allclose(det[0], torch.tensor([40.0, 40.0, 60.0, 60.0, 0.9, 0.9, 0.0]))
    assert torch.allclose(det[1], torch.tensor([42.0, 40.0, 62.0, 60.0, 0.8, 0.9, 1.0]))
    agnostic = postprocess(pred, num_classes=3, conf_thre=0.1, nms_thre=0.45, class_agnostic=True)
    assert agnostic[0].shape == (1, 7) and agnostic[0][0, 6] == 0


def test_postprocess_none_for_empty_and_below_threshold():
    pred = _pred([(50, 50, 20, 20, 0.2, 0, 0.2)], num_classes=2)
    empty = torch.zeros((1, 0, 7))
    assert postprocess(torch.cat([pred, pred]), 2, conf_thre=0.5) == [None, None]
    assert postprocess(empty, 2) == [None]


def test_postprocess_rejects_too_few_channels():
    with pytest.raises(ValueError, match="num_classes"):
        postprocess(torch.zeros((1, 4, 6)), num_classes=80)


def _reference_postprocess(pred, num_classes, conf_thre, nms_thre):
    """Greedy per-class NMS in plain Python; returns sorted tuples for one image."""
    rows = []
    for r in pred.tolist():
        cls_scores = r[5 : 5 + num_classes]
        c = max(range(num_classes), key=lambda k: (cls_scores[k], -k))
        score = r[4] * cls_scores[c]
        if score >= conf_thre:
            box = [r[0] - r[2] / 2, r[1] - r[3] / 2, r[0] + r[2] / 2, r[1] + r[3] / 2]
            rows.append((score, box, c))
    rows.sort(key=lambda x: -x[0])
    kept = []
    for score, box, c in rows:
        if all(k[2] != c or _iou_reference(k[1], box) <= nms_thre for k in kept):
            kept.append((score, box, c))
    return kept


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 2**31 - 1), st.integers(1, 30), st.integers(1, 4))
def test_postprocess_matches_greedy_reference(seed, num_anchors, num_classes):
    g = torch.Generator().manual_seed(seed)
    pred = torch.rand((1, num_anchors, 5 + num_classes), generator=g, dtype=torch.float64)
    pred[..., :2] *= 60
    pred[..., 2:4] = pred[..., 2:4] * 30 + 2
    out = postprocess(pred, num_classes, conf_thre=0.2, nms_thre=0.5)[0]
    ref = _reference_postprocess(pred[0], num_classes, 0.2, 0.5)
    if not ref:
        assert out is None
        return
    assert out.shape == (len(ref), 7)
    got = sorted(((d[4] * d[5]).item(), d[:4].tolist(), int(d[6])) for d in out)
    want = sorted((s, b, c) for s, b, c in ref)
    for (gs, gb, gc), (ws, wb, wc) in zip(got, want):
        assert gc == wc and abs(gs - ws) < 1e-9 and np.allclose(gb, wb, atol=1e-9)


def test_anchor_grid_and_box_decoding_by_hand():
    from yolox.utils.anchors import AnchorGrid, decode_boxes, decode_outputs, levels_for_input

    levels = levels_for_input(20, 36)  # ceil(size / stride): (3, 5, 8), (2, 3, 16), (1, 2, 32)
    assert levels == ((3, 5, 8), (2, 3, 16), (1, 2, 32))
    grid = AnchorGrid.from_shapes(levels)
    assert grid.num_anchors == 15 + 6 + 2 and grid.pixel_width == 64  # 2 cells of 32 span 64 pixels
    assert (grid.x_shifts[6].item(), grid.y_shifts[6].item(), grid.strides[6].item()) == (1.0, 1.0, 8.0)
    cx, cy = grid.centres()
    assert (cx[6].item(), cy[6].item()) == (12.0, 12.0)
    raw = torch.zeros(1, grid.num_anchors, 6)
    raw[0, 6] = torch.tensor([0.5, -0.25, 0.0, float(np.log(2.0)), 0.7, 0.1])
    boxes = decode_boxes(raw[..., :4], grid)  # (raw + cell) * stride, exp(raw) * stride
    assert torch.allclose(boxes[0, 6], torch.tensor([12.0, 6.0, 8.0, 16.0]))
    assert torch.allclose(boxes[0, -1], torch.tensor([32.0, 0.0, 32.0, 32.0]))  # level 32, cell (1, 0)
    decoded = decode_outputs(raw, grid)
    assert torch.equal(decoded[..., :4], boxes) and torch.equal(decoded[..., 4:], raw[..., 4:])
