"""SimOTA: hand-worked cases, agreement with a plain oracle, and the three modes giving the same assignment."""
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.oracles.simota import oracle_assign
from yolox.models import IOUloss, YOLOXHead
from yolox.models.simota import (
    SIMOTA_MODES, AnchorGrid, assign, class_cost_decomposed, class_cost_dense, kept_mask, pack_sub_batches,
    plan_buckets, scatter_kept,
)
from yolox.utils.anchors import levels_for_input

ONE_LEVEL = ((4, 4, 8),)  # a 32 x 32 image, one level of stride 8: anchor centres at 4, 12, 20, 28


def _inputs(pred_boxes, labels, num_classes=2, cls_logits=None):
    B, A, _ = pred_boxes.shape
    cls = torch.zeros(B, A, num_classes) if cls_logits is None else cls_logits
    obj = torch.zeros(B, A)
    return pred_boxes, cls, obj, labels[..., 1:5], labels[..., 0].long(), labels.sum(-1) > 0


def _far_boxes(B, A):
    return torch.tensor([100.0, 100.0, 1.0, 1.0]).repeat(B, A, 1)  # IoU 0 with everything in the image


@pytest.mark.parametrize("mode", SIMOTA_MODES)
def test_one_gt_known_candidates_and_dynamic_k(mode):
    grid = AnchorGrid.from_shapes(ONE_LEVEL)
    preds = _far_boxes(1, 16)
    preds[0, 5] = torch.tensor([12.0, 12.0, 8.0, 8.0])  # exactly the gt: IoU 1
    preds[0, 6] = torch.tensor([13.0, 12.0, 8.0, 8.0])  # 1 px right: IoU 56 / 72
    preds[0, 9] = torch.tensor([12.0, 14.0, 8.0, 8.0])  # 2 px down: IoU 48 / 80
    labels = torch.tensor([[[1.0, 12.0, 12.0, 8.0, 8.0]]])
    asg = assign(mode, *_inputs(preds, labels), grid)
    # centre prior of a gt at (12, 12): anchors with centres 4, 12, 20 on each axis = cells 0..2 -> 9 candidates;
    # top IoUs 1 + 0.778 + 0.6 = 2.38 -> k = 2 -> the two cheapest: anchors 5 and 6
    assert asg.fg_mask[0].nonzero().flatten().tolist() == [5, 6]
    assert asg.matched_gt[0, [5, 6]].tolist() == [0, 0]
    assert asg.matched_cls[0, [5, 6]].tolist() == [1, 1]
    assert torch.allclose(asg.matched_iou[0, [5, 6]], torch.tensor([1.0, 56 / 72]))
    assert asg.num_gts == 1


@pytest.mark.parametrize("mode", SIMOTA_MODES)
def test_candidate_outside_prior_only_when_prior_too_small(mode):
    """A gt centred near the corner has 4 anchors in its square; with k = 5 it also takes the cheapest outside one."""
    grid = AnchorGrid.from_shapes(ONE_LEVEL)
    preds = _far_boxes(1, 16)
    gt = torch.tensor([4.0, 4.0, 8.0, 8.0])
    for a in (0, 1, 4, 5, 2, 8):  # good boxes on four in-prior anchors and two outside ones
        preds[0, a] = gt
    labels = torch.tensor([[[0.0, 4.0, 4.0, 8.0, 8.0], [0.0, 28.0, 28.0, 2.0, 2.0]]])
    preds[0, 15] = torch.tensor([28.0, 28.0, 2.0, 2.0])
    asg = assign(mode, *_inputs(preds, labels), grid)
    fg = set(asg.fg_mask[0].nonzero().flatten().tolist())
    # gt 0: square (-8, 16) holds cells 0, 1 per axis -> anchors 0, 1, 4, 5; candidates of the image also include
    # gt 1's square (cells 2, 3) -> 10, 11, 14, 15. k(gt0) = int(4 IoUs of 1) = 4 -> only its in-prior anchors.
    assert {0, 1, 4, 5} <= fg and 2 not in fg and 8 not in fg
    assert asg.matched_gt[0, 15] == 1


@pytest.mark.parametrize("mode", SIMOTA_MODES)
def test_two_gts_compete_for_one_anchor(mode):
    grid = AnchorGrid.from_shapes(ONE_LEVEL)
    preds = _far_boxes(1, 16)
    preds[0, 5] = torch.tensor([12.0, 12.0, 8.0, 8.0])
    labels = torch.tensor([[[0.0, 12.0, 12.0, 8.0, 8.0],    # gt 0: anchor 5 predicts it exactly (IoU 1)
                            [1.0, 14.0, 12.0, 8.0, 8.0]]])  # gt 1: IoU 48 / 80 with anchor 5
    asg = assign(mode, *_inputs(preds, labels), grid)
    # both gts have k = 1 and both take anchor 5 (all else has IoU 0); gt 0 is cheaper there and keeps it
    assert asg.fg_mask[0].nonzero().flatten().tolist() == [5]
    assert asg.matched_gt[0, 5] == 0 and asg.matched_cls[0, 5] == 0
    assert asg.matched_iou[0, 5] == 1.0


@pytest.mark.parametrize("mode", SIMOTA_MODES)
def test_image_without_gt(mode):
    grid = AnchorGrid.from_shapes(ONE_LEVEL)
    preds = _far_boxes(2, 16)
    labels = torch.zeros(2, 3, 5)
    labels[1, 0] = torch.tensor([0.0, 20.0, 20.0, 6.0, 6.0])
    asg = assign(mode, *_inputs(preds, labels), grid)
    assert not asg.fg_mask[0].any()
    assert asg.fg_mask[1].sum() == 1  # nothing overlaps: k = 1
    assert asg.num_gts == 1


def test_class_cost_decomposition_matches_the_dense_one():
    torch.manual_seed(0)
    p = torch.rand(7, 5).clamp(1e-7, 1 - 1e-7)
    p[0, 0], p[1, 1] = 0.0, 1.0  # saturated scores exercise the -100 log clamp
    classes = torch.tensor([0, 1, 4])
    ref = class_cost_dense(p, classes, 5)
    assert torch.allclose(class_cost_decomposed(p[None], classes[None])[0], ref, rtol=1e-5, atol=1e-4)


def test_pack_sub_batches_respects_width_cap():
    assert pack_sub_batches([640] * 16, 10000) == [list(range(15)), [15]]
    assert pack_sub_batches([12000, 100], 10000) == [[0], [1]]  # an image wider than the cap is alone


@pytest.mark.parametrize("height,width", [(72, 100), (100, 72), (64, 96)])
def test_packed_offset_from_the_grid_and_its_sub_batches_give_the_loops_assignment(height, width):
    """The packed mode lays images side by side at the grid's pixel width (no image width passed): it covers the
    input and every anchor centre, and sub-batches of any cap give the per-image assignment."""
    grid = AnchorGrid.from_shapes(levels_for_input(height, width))
    anchor_cx, _ = grid.centres()
    assert grid.pixel_width >= width and anchor_cx.max() < grid.pixel_width
    gen = torch.Generator().manual_seed(width)
    B, A, K = 5, grid.num_anchors, 3
    labels = torch.zeros(B, 6, 5)
    for b, n in enumerate([6, 0, 3, 1, 5]):
        cxy = torch.rand(n, 2, generator=gen) * torch.tensor([width, height])  # gts up to the right edge
        wh = torch.rand(n, 2, generator=gen) * 30 + 4
        labels[b, :n] = torch.cat([torch.randint(0, K, (n, 1), generator=gen).float(), cxy, wh], 1)
    raw = torch.randn(B, A, 5 + K, generator=gen)
    args = (YOLOXHead.decode_boxes(raw[..., :4], grid), raw[..., 5:], raw[..., 4], labels[..., 1:5],
            labels[..., 0].long(), labels.sum(-1) > 0, grid)
    ref = assign("loop", *args)
    assert ref.fg_mask.any()
    for pack_width in (10000, 2 * grid.pixel_width, 1):  # one sub-batch, pairs of images, one image each
        got = assign("packed", *args, pack_width=pack_width)
        for field in ("fg_mask", "matched_gt", "matched_cls", "matched_iou"):
            assert torch.equal(getattr(got, field), getattr(ref, field)), (pack_width, field)


def test_scatter_kept_drops_the_entries_not_kept():
    index = torch.tensor([[2, 0, 2, 3], [1, 1, 0, 3]])
    keep = torch.tensor([[True, True, False, True], [True, True, False, False]])
    values = torch.tensor([[5, 6, 7, 8], [1, 2, 3, 4]])
    got = scatter_kept(index, keep, values, 4, fill=-1)
    assert got.tolist() == [[6, -1, 5, 8], [-1, got[1, 1].item(), -1, -1]] and got[1, 1] in (1, 2)
    assert scatter_kept(index, keep, values, 4, accumulate=True).tolist() == [[6, 0, 5, 8], [0, 3, 0, 0]]
    assert kept_mask(index, keep, 4).tolist() == [[True, False, True, True], [False, True, False, False]]
    assert kept_mask(index, keep, 3).shape == (2, 3)  # column 3 is past the width: dropped like the misses


def test_plan_buckets_separates_crowded_image():
    groups = plan_buckets([1000] + [2] * 15, [8000] + [50] * 15)
    assert groups == [[0], list(range(1, 16))]
    assert plan_buckets([0, 0], [0, 0]) == []
    # similar images share one bucket; the memory cap splits them
    assert plan_buckets([20] * 8, [500] * 8) == [list(range(8))]
    assert plan_buckets([20] * 8, [500] * 8, max_cells=4 * 20 * 500) == [list(range(4)), list(range(4, 8))]


# --------------------------------------------------------------------------------------------------------
# Random batches
# --------------------------------------------------------------------------------------------------------
def _random_batch(seed, counts, size, num_classes, kind, dtype):
    gen = torch.Generator().manual_seed(seed)
    B, M = len(counts), max(max(counts), 1)
    level_shapes = tuple((size // s, size // s, s) for s in (8, 16, 32))
    grid = AnchorGrid.from_shapes(level_shapes)
    A = grid.num_anchors
    labels = torch.zeros(B, M, 5)
    for b, n in enumerate(counts):
        if n == 0:
            continue
        cxy = torch.rand(n, 2, generator=gen) * size
        if kind == "tiny":
            wh = torch.rand(n, 2, generator=gen) * 2 + 0.5
        elif kind == "huge":
            wh = torch.rand(n, 2, generator=gen) * size * 2 + size / 2
        else:
            wh = torch.rand(n, 2, generator=gen) * size / 3 + 2
        if kind == "border":
            cxy = torch.where(torch.rand(n, 2, generator=gen) < 0.5, torch.zeros_like(cxy), cxy)
            cxy = torch.where(torch.rand(n, 2, generator=gen) < 0.3, torch.full_like(cxy, float(size)), cxy)
            cxy[::3] = torch.round(cxy[::3] / 4) * 4  # on multiples of half a stride: exact prior boundaries
        if kind == "duplicate" and n > 1:
            cxy[1::2], wh[1::2] = cxy[0::2][: len(cxy[1::2])], wh[0::2][: len(wh[1::2])]
        cls = torch.randint(0, num_classes, (n, 1), generator=gen).float()
        labels[b, :n] = torch.cat([cls, cxy, wh], 1)
    raw = torch.randn(B, A, 4 + 1 + num_classes, generator=gen) * 1.5
    if kind == "duplicate":
        raw[:, 1::2] = raw[:, 0::2][:, : raw[:, 1::2].shape[1]]
    raw = raw.to(dtype)
    reg = raw[..., :4]
    boxes = YOLOXHead.decode_boxes(reg, grid)
    if kind in ("normal", "duplicate"):  # make some predictions overlap the gts well
        for b, n in enumerate(counts):
            if n:
                pick = torch.randint(0, A, (min(n * 3, A),), generator=gen)
                src = labels[b, torch.randint(0, n, (len(pick),), generator=gen), 1:5]
                boxes[b, pick] = (src * (1 + 0.1 * torch.randn(len(pick), 4, generator=gen))).to(dtype)
    return boxes, raw[..., 5:], raw[..., 4], labels, grid


def _assign_all(boxes, cls, obj, labels, grid):
    return {mode: assign(mode, boxes, cls, obj, labels[..., 1:5], labels[..., 0].long(), labels.sum(-1) > 0, grid)
            for mode in SIMOTA_MODES}


def _assert_same(results):
    ref = results["loop"]
    for mode, asg in results.items():
        assert torch.equal(asg.fg_mask, ref.fg_mask), mode
        assert torch.equal(asg.matched_gt, ref.matched_gt), mode
        assert torch.equal(asg.matched_cls, ref.matched_cls), mode
        assert torch.equal(asg.matched_iou, ref.matched_iou), mode
        assert asg.num_gts == ref.num_gts


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**31 - 1),
       counts=st.lists(st.sampled_from([0, 0, 1, 2, 3, 7, 20, 60]), min_size=1, max_size=5),
       kind=st.sampled_from(["normal", "tiny", "huge", "border", "duplicate"]),
       dtype=st.sampled_from([torch.float32, torch.float16, torch.bfloat16]))
def test_modes_agree_on_random_batches(seed, counts, kind, dtype):
    boxes, cls, obj, labels, grid = _random_batch(seed, counts, 128, 4, kind, dtype)
    _assert_same(_assign_all(boxes, cls, obj, labels, grid))


@pytest.mark.parametrize("kind", ["normal", "border", "duplicate"])
def test_modes_agree_with_hundreds_of_gts(kind):
    boxes, cls, obj, labels, grid = _random_batch(3, [320, 0, 5, 1], 256, 6, kind, torch.float32)
    _assert_same(_assign_all(boxes, cls, obj, labels, grid))


@pytest.mark.parametrize("seed", range(4))
def test_modes_agree_with_plain_oracle(seed):
    boxes, cls, obj, labels, grid = _random_batch(seed, [0, 1, 4, 9], 64, 3, "normal", torch.float32)
    expected = oracle_assign(boxes.double(), cls.double(), obj.double(), labels.double(), grid.level_shapes)
    for mode, asg in _assign_all(boxes, cls, obj, labels, grid).items():
        got = {(b, a): (int(asg.matched_gt[b, a]), int(asg.matched_cls[b, a]))
               for b, a in asg.fg_mask.nonzero().tolist()}
        assert got == expected, mode


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**31 - 1), use_l1=st.booleans(),
       counts=st.lists(st.sampled_from([0, 1, 5, 30]), min_size=1, max_size=4))
def test_losses_agree_across_modes(seed, use_l1, counts):
    num_classes, size = 3, 128
    head = YOLOXHead(num_classes, width=0.25)
    head.use_l1 = use_l1
    boxes, cls, obj, labels, grid = _random_batch(seed, counts, size, num_classes, "normal", torch.float32)
    gen = torch.Generator().manual_seed(seed)
    outputs = torch.randn(len(counts), grid.num_anchors, 5 + num_classes, generator=gen)
    losses = {}
    for mode in SIMOTA_MODES:
        head.simota_mode = mode
        losses[mode] = head.get_losses(outputs, labels, grid)
    for mode, values in losses.items():
        for got, ref in zip(values, losses["loop"]):
            assert torch.allclose(torch.as_tensor(got), torch.as_tensor(ref), rtol=1e-5, atol=1e-7), mode


def test_unknown_mode_is_a_clear_error():
    grid = AnchorGrid.from_shapes(ONE_LEVEL)
    with pytest.raises(ValueError, match="simota_mode"):
        assign("fast", *_inputs(_far_boxes(1, 16), torch.zeros(1, 1, 5)), grid)


@pytest.mark.parametrize("mode", SIMOTA_MODES)
def test_assignment_under_autocast(mode):
    boxes, cls, obj, labels, grid = _random_batch(5, [3, 10], 64, 3, "normal", torch.bfloat16)
    ref = assign("loop", boxes, cls, obj, labels[..., 1:5], labels[..., 0].long(), labels.sum(-1) > 0, grid)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = assign(mode, boxes, cls, obj, labels[..., 1:5], labels[..., 0].long(), labels.sum(-1) > 0, grid)
    assert got.matched_iou.dtype == torch.float32
    assert torch.equal(got.fg_mask, ref.fg_mask) and torch.equal(got.matched_gt, ref.matched_gt)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_modes_agree_on_cuda():
    boxes, cls, obj, labels, grid = _random_batch(1, [5, 0, 40], 128, 4, "normal", torch.float16)
    cpu = _assign_all(boxes, cls, obj, labels, grid)
    dev = torch.device("cuda")
    grid_cuda = AnchorGrid(*(t.to(dev) for t in grid[:3]), grid.level_shapes)
    gpu = _assign_all(boxes.to(dev), cls.to(dev), obj.to(dev), labels.to(dev), grid_cuda)
    for mode in SIMOTA_MODES:
        assert torch.equal(gpu[mode].fg_mask.cpu(), cpu["loop"].fg_mask)


def test_out_of_memory_falls_back_to_the_loop_with_one_warning(monkeypatch):
    from loguru import logger

    import yolox.models.simota as simota

    def exhausted(*args, **kwargs):
        raise torch.OutOfMemoryError("simulated: CUDA out of memory")

    monkeypatch.setattr(simota, "assign_batched", exhausted)
    monkeypatch.setattr(simota, "_warned_oom", False)
    messages = []
    sink = logger.add(lambda m: messages.append(str(m)), level="WARNING")
    try:
        boxes, cls, obj, labels, grid = _random_batch(2, [4, 1], 64, 3, "normal", torch.float32)
        args = (boxes, cls, obj, labels[..., 1:5], labels[..., 0].long(), labels.sum(-1) > 0, grid)
        first = simota.assign("batched", *args)
        simota.assign("batched", *args)
    finally:
        logger.remove(sink)
    ref = simota.assign("loop", *args)
    assert torch.equal(first.fg_mask, ref.fg_mask) and torch.equal(first.matched_gt, ref.matched_gt)
    assert len([m for m in messages if "ran out of memory" in m]) == 1


def _sync_ops(fn):
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        fn()
    names = [e.name for e in prof.events()]
    hidden = sum(names.count(n) for n in ("aten::nonzero", "aten::_local_scalar_dense", "aten::item"))
    return hidden, names.count("simota::host_sync")


@pytest.mark.parametrize("batch", [2, 8])
def test_batched_loss_path_has_one_host_sync(batch):
    """Assignment and losses in "batched" mode: no .item() / nonzero, one deliberate sync, whatever the batch."""
    num_classes = 3
    head = YOLOXHead(num_classes, width=0.25, simota_mode="batched")
    head.use_l1 = True
    boxes, cls, obj, labels, grid = _random_batch(1, [5, 0, 30, 2, 1, 9, 3, 4][:batch], 128, num_classes, "normal",
                                                  torch.float32)
    outputs = torch.randn(batch, grid.num_anchors, 5 + num_classes, requires_grad=True)
    hidden, deliberate = _sync_ops(lambda: head.get_losses(outputs, labels, grid)[0].backward())
    assert hidden == 0 and deliberate == 1
    head.simota_mode = "loop"
    hidden, _ = _sync_ops(lambda: head.get_losses(outputs, labels, grid))
    assert hidden >= batch  # the reference synchronises per image


@pytest.mark.parametrize("mode", ["loop", "batched"])
def test_diverging_negative_prediction_keeps_gradients_finite(mode):
    """A huge (but finite) box at an anchor that is not a positive must not turn the gradients into NaN."""
    num_classes = 2
    head = YOLOXHead(num_classes, width=0.25, simota_mode=mode)
    head.use_l1 = True
    head.iou_loss = IOUloss(reduction="none", loss_type="giou")  # its enclosing box overflows to inf
    grid = AnchorGrid.from_shapes(((8, 8, 8), (4, 4, 16), (2, 2, 32)))
    labels = torch.tensor([[[1.0, 48.0, 48.0, 10.0, 10.0]]])  # far from anchor 0, the first negative
    outputs = torch.zeros(1, grid.num_anchors, 5 + num_classes)
    outputs[0, 0, 2:4] = 80.0  # exp(80) * 8 is finite, its square is not
    outputs.requires_grad_(True)
    loss = head.get_losses(outputs, labels, grid)[0]
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(outputs.grad).all()
