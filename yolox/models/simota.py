"""SimOTA label assignment: one cost/matching core driven three ways ("loop", "packed", "batched").

Every mode returns the same dense, per-anchor `Assignment` (B, A), so the loss does not care which one ran.
Shapes: B images, A anchors, M label rows per image (padded), G gts, C candidate anchors, K classes.
"""
from typing import List, NamedTuple, Sequence

import torch
import torch.nn.functional as F
from loguru import logger
from torch.profiler import record_function

# AnchorGrid and levels_for_input live in yolox.utils.anchors; importable from here too, as before
from ..utils.anchors import AnchorGrid, levels_for_input  # noqa: F401

__all__ = [
    "SIMOTA_MODES", "AnchorGrid", "Assignment", "assign", "assign_loop", "assign_packed", "assign_batched",
    "in_centre_prior", "pairwise_iou_cxcywh", "class_cost_dense", "class_cost_decomposed", "cost_key",
    "dynamic_k", "simota_match", "scatter_kept", "kept_mask", "pack_sub_batches", "plan_buckets",
]

SIMOTA_MODES = ("loop", "packed", "batched")
CENTRE_RADIUS = 1.5
TOPK_IOU = 10  # dynamic k is estimated from the 10 largest IoUs of a gt
IOU_COST_WEIGHT = 3.0
BCE_LOG_CLAMP = -100.0  # torch.nn.functional.binary_cross_entropy clamps each log at -100


class Assignment(NamedTuple):
    """Per-anchor result of the assignment; entries where `fg_mask` is False are 0."""

    fg_mask: torch.Tensor  # (B, A) bool, anchor is a positive
    matched_gt: torch.Tensor  # (B, A) int64, row of the label tensor (0..M-1) the positive is matched to
    matched_cls: torch.Tensor  # (B, A) int64, class of that gt
    matched_iou: torch.Tensor  # (B, A) float32, IoU of the anchor's predicted box with that gt
    num_gts: int  # real gts in the batch (known on the host)


# ----------------------------------------------------------------------------------------------------------
# Scatter without boolean indexing: entries to skip go to a spare column past the end, which is then dropped.
# ----------------------------------------------------------------------------------------------------------
def scatter_kept(index, keep, values, width, fill=0, accumulate=False):
    """A (..., width) tensor filled with `fill` that holds `values` at the columns `index` where `keep` is True.

    index, keep (..., L); values (..., L), or True for a bool mask; accumulate: values meeting in a column are
    summed, otherwise one of them is kept. Every entry is scattered, those not kept into a spare column `width` that
    is cut off afterwards: no boolean indexing, whose result size would need a host synchronisation.
    """
    dtype = values.dtype if torch.is_tensor(values) else torch.bool
    out = torch.full((*index.shape[:-1], width + 1), fill, dtype=dtype, device=index.device)  # (..., width + 1)
    spare_index = torch.where(keep, index, torch.full_like(index, width))  # (..., L)
    if accumulate:
        out.scatter_add_(-1, spare_index, values)
    else:
        out.scatter_(-1, spare_index, values)
    return out[..., :width]


def kept_mask(index, keep, width):
    """(..., width) bool, True at the columns that `index` (..., L) names where `keep` (..., L) is True."""
    return scatter_kept(index, keep, True, width, fill=False)


# ----------------------------------------------------------------------------------------------------------
# Shared elementwise pieces. Every mode calls these same functions, so equal inputs give bit-equal values.
# ----------------------------------------------------------------------------------------------------------
def in_centre_prior(gt_cx, gt_cy, anchor_cx, anchor_cy, anchor_stride, radius=CENTRE_RADIUS):
    """True where the anchor centre lies strictly inside the square of half-side radius*stride around the gt centre.

    Arguments broadcast against each other (e.g. gt (..., G, 1) with anchors (..., 1, C)); the arithmetic order is the
    official one, so every mode decides boundary cases identically.
    """
    dist = anchor_stride * radius
    c_l = anchor_cx - (gt_cx - dist)
    c_r = (gt_cx + dist) - anchor_cx
    c_t = anchor_cy - (gt_cy - dist)
    c_b = (gt_cy + dist) - anchor_cy
    return (c_l > 0) & (c_r > 0) & (c_t > 0) & (c_b > 0)


def pairwise_iou_cxcywh(a, b):
    """IoU of (cx, cy, w, h) boxes `a` (..., 4) and `b` (..., 4), broadcast; zero where the boxes do not overlap.

    Every mode calls this one function (in-place steps only reuse buffers), so equal boxes give bit-equal IoUs.
    """
    a_x1, a_x2 = a[..., 0] - a[..., 2] / 2, a[..., 0] + a[..., 2] / 2
    a_y1, a_y2 = a[..., 1] - a[..., 3] / 2, a[..., 1] + a[..., 3] / 2
    b_x1, b_x2 = b[..., 0] - b[..., 2] / 2, b[..., 0] + b[..., 2] / 2
    b_y1, b_y2 = b[..., 1] - b[..., 3] / 2, b[..., 1] + b[..., 3] / 2
    inter = torch.minimum(a_x2, b_x2).sub_(torch.maximum(a_x1, b_x1)).clamp_(min=0)  # overlap width
    inter.mul_(torch.minimum(a_y2, b_y2).sub_(torch.maximum(a_y1, b_y1)).clamp_(min=0))  # x overlap height
    union = (a[..., 2] * a[..., 3]) + (b[..., 2] * b[..., 3])
    return inter.div_(union.sub_(inter))


def candidate_scores(cls_logits, obj_logits):
    """p = sqrt(sigmoid(cls) * sigmoid(obj)) in float32 with autocast off: (..., C, K) and (..., C) -> (..., C, K)."""
    return cls_logits.float().sigmoid().mul_(obj_logits.float().sigmoid().unsqueeze(-1)).sqrt_()


def class_cost_dense(p, gt_classes, num_classes):
    """The official class cost: sum over classes of BCE(p, one_hot), built as a (G, C, K) tensor (loop, packed).

    p: (C, K) float32 scores of the candidates, gt_classes: (G,) int64. Returns (G, C).
    """
    num_gt, num_cand = gt_classes.numel(), p.shape[0]
    one_hot = F.one_hot(gt_classes.long(), num_classes).float()  # (G, K)
    return F.binary_cross_entropy(
        p.unsqueeze(0).expand(num_gt, num_cand, num_classes),
        one_hot.unsqueeze(1).expand(num_gt, num_cand, num_classes),
        reduction="none",
    ).sum(-1)


def class_cost_decomposed(p, gt_classes):
    """The same class cost without the (G, C, K) tensor.

    sum_k BCE(p_k, onehot_k) = sum_k -log(1 - p_k) + [-log(p_c) + log(1 - p_c)] for the gt class c, with each log
    clamped at -100 as binary_cross_entropy does. p: (n, C, K), gt_classes: (n, G) int64. Returns (n, G, C).
    """
    n, C, K = p.shape
    G = gt_classes.shape[-1]
    base = p.neg().log1p_().clamp_(min=BCE_LOG_CLAMP).sum(-1).neg_()  # (n, C) cost if every class were negative
    idx = torch.arange(C, device=p.device) * K + gt_classes.long().unsqueeze(-1)  # (n, G, C) into p viewed (n, C*K)
    p_gt = torch.gather(p.reshape(n, C * K), 1, idx.reshape(n, G * C)).view(n, G, C)  # score for the gt's class
    cost = p_gt.neg().log1p_().clamp_(min=BCE_LOG_CLAMP).add_(base.unsqueeze(1))  # + log(1 - p_c)
    return cost.sub_(p_gt.log_().clamp_(min=BCE_LOG_CLAMP))  # - log(p_c)


COST_RESOLUTION = 1024  # costs are compared on a 1/1024 grid (see cost_key)


def outside_cost(num_classes):
    """Stand-in for the official 1e6 outside-prior term: larger than any inside cost (class cost <= 100 K, IoU cost
    <= 3 x 18.43), so it orders pairs exactly as 1e6 does while keeping float32 keys precise."""
    return 100.0 * (num_classes + 1)


def prior_penalty(geometry, num_classes):
    """0 for pairs inside the centre prior, outside_cost for the others: (..., G, C) bool -> float32."""
    return (~geometry).float() * outside_cost(num_classes)


def invalid_key_floor(num_classes, num_candidates):
    """Keys at or above this belong to pairs that must never match (penalty >= 2 x outside_cost)."""
    return round(2 * outside_cost(num_classes) * COST_RESOLUTION) * num_candidates


def cost_key(cls_cost, ious, penalty):
    """Unique integer sort key of cost = class cost + 3 * (-log(IoU + 1e-8)) + 1e6 * (outside the centre prior).

    penalty (..., G, C) float32 is 0 inside the centre prior, outside_cost(K) outside it and >= 2 x outside_cost
    for pairs that must never match (padding, other images). The key orders pairs as the official cost does, on a
    grid of 1/1024, then by candidate index: the modes compute the class cost in different ways, so costs that are
    mathematically equal can differ in the last bit; on the grid they tie, and ties go to the lower index in every
    mode, so all modes pick the same anchors. cls_cost, ious: (..., G, C) float32. Returns (..., G, C) int64.
    """
    C = cls_cost.shape[-1]
    inner = torch.add(ious, 1e-8).log_().mul_(-IOU_COST_WEIGHT).add_(cls_cost).add_(penalty)  # cost, outside = 1e6
    return inner.mul_(COST_RESOLUTION).round_().long().mul_(C).add_(torch.arange(C, device=inner.device))


def dynamic_k(ious):
    """max(1, int(sum of the 10 largest IoUs)) per gt. ious: (..., G, C) with invalid pairs set to 0 -> (..., G)."""
    n = min(TOPK_IOU, ious.shape[-1])
    top = torch.topk(ious, n, dim=-1).values if n > 0 else ious.new_zeros(*ious.shape[:-1], 0)
    # Sequential sum over a fixed length of 10 (zeros padded): the same additions in the same order in every mode.
    total = torch.zeros_like(ious[..., 0])
    for j in range(TOPK_IOU):
        if j < n:
            total = total + top[..., j]
    return total.int().clamp(min=1)


def simota_match(key, ious, invalid_from):
    """Dynamic-k matching of gts to candidates, for a whole padded batch at once.

    key: (B, G, C) int64 from cost_key; ious: (B, G, C) float32, 0 for pairs that must never match; keys at or above
    `invalid_from` never match. Each gt takes its k lowest-cost candidates; a candidate taken by several gts goes to
    the gt with the lowest cost in its column (first on ties). Returns fg (B, C) bool, matched (B, C) int64 gt index
    and the IoU of each candidate with its matched gt (B, C).
    """
    B, G, C = key.shape
    device = key.device
    if G == 0 or C == 0:
        return (torch.zeros(B, C, dtype=torch.bool, device=device), torch.zeros(B, C, dtype=torch.long, device=device),
                torch.zeros(B, C, dtype=ious.dtype, device=device))
    ks = dynamic_k(ious)  # (B, G)
    n = min(TOPK_IOU, C)  # k <= 10
    top_key, top_idx = torch.topk(key, n, dim=-1, largest=False)  # (B, G, n) cheapest first (keys are unique)
    picked = (torch.arange(n, device=device) < ks.unsqueeze(-1)) & (top_key < invalid_from)  # (B, G, n)
    top_idx, picked = top_idx.reshape(B, G * n), picked.reshape(B, G * n)
    gt_of_pick = torch.arange(G, device=device).view(1, G, 1).expand(B, G, n).reshape(B, G * n)
    claims = scatter_kept(top_idx, picked, torch.ones_like(top_idx), C, accumulate=True)  # (B, C) gts taking each
    owner = scatter_kept(top_idx, picked, gt_of_pick, C)  # (B, C) right wherever exactly one gt claims the candidate
    matched = torch.where(claims > 1, key.argmin(1), owner)  # (B, C) lowest-cost gt where several claim it
    matched_iou = torch.gather(ious, 1, matched.unsqueeze(1)).squeeze(1)  # (B, C)
    return claims > 0, matched, matched_iou


def _finish(fg, matched_gt, matched_iou, gt_classes, num_gts, matched_cls=None):
    """Assignment from per-anchor (B, A) results; entries off the positives are zeroed (unless already zero)."""
    if matched_cls is not None:
        return Assignment(fg, matched_gt, matched_cls, matched_iou, num_gts)
    matched_gt = torch.where(fg, matched_gt, torch.zeros_like(matched_gt))
    cls = torch.gather(gt_classes.long(), 1, matched_gt)  # (B, A)
    zero = torch.zeros((), dtype=matched_iou.dtype, device=matched_iou.device)
    return Assignment(fg, matched_gt, torch.where(fg, cls, torch.zeros_like(cls)), torch.where(fg, matched_iou, zero),
                      num_gts)


# ----------------------------------------------------------------------------------------------------------
# "loop": the official algorithm, image by image (host synchronisation per image, as the official release).
# ----------------------------------------------------------------------------------------------------------
@torch.no_grad()
def assign_loop(pred_boxes, cls_logits, obj_logits, gt_boxes, gt_classes, gt_valid, grid: AnchorGrid):
    """Per-image SimOTA with the official class cost over a (G, C, K) tensor.

    pred_boxes (B, A, 4) decoded cx, cy, w, h; cls_logits (B, A, K); obj_logits (B, A); gt_boxes (B, M, 4) cx, cy, w, h;
    gt_classes (B, M); gt_valid (B, M) bool.
    """
    B, A, K = cls_logits.shape
    device = pred_boxes.device
    fg = torch.zeros(B, A, dtype=torch.bool, device=device)
    matched_gt = torch.zeros(B, A, dtype=torch.long, device=device)
    matched_iou = torch.zeros(B, A, dtype=torch.float32, device=device)
    anchor_cx, anchor_cy = grid.centres()  # (A,)
    num_gts = int(gt_valid.sum().item())
    for b in range(B):
        rows = torch.nonzero(gt_valid[b]).squeeze(1)  # (G,) label rows of the real gts
        if rows.numel() == 0:
            continue
        gts = gt_boxes[b, rows].float()  # (G, 4)
        geometry_all = in_centre_prior(gts[:, 0:1], gts[:, 1:2], anchor_cx, anchor_cy, grid.strides)  # (G, A)
        cand = torch.nonzero(geometry_all.any(0)).squeeze(1)  # (C,) anchors inside some gt's centre prior
        if cand.numel() == 0:
            continue
        geometry = geometry_all[:, cand]  # (G, C)
        ious = pairwise_iou_cxcywh(gts.unsqueeze(1), pred_boxes[b, cand].float().unsqueeze(0))  # (G, C)
        with torch.autocast(device_type=device.type, enabled=False):
            p = candidate_scores(cls_logits[b, cand], obj_logits[b, cand])  # (C, K)
            cls_cost = class_cost_dense(p, gt_classes[b, rows], K)  # (G, C)
        key = cost_key(cls_cost, ious, prior_penalty(geometry, K))  # (G, C)
        fg_c, match_c, iou_c = simota_match(key[None], ious[None], invalid_key_floor(K, cand.numel()))  # (1, C)
        fg[b, cand] = fg_c[0]
        matched_gt[b, cand] = rows[match_c[0]]
        matched_iou[b, cand] = iou_c[0]
    return _finish(fg, matched_gt, matched_iou, gt_classes, num_gts)


# ----------------------------------------------------------------------------------------------------------
# "packed": the training-acceleration study's batch -- images side by side along x, width-capped sub-batches.
# ----------------------------------------------------------------------------------------------------------
def pack_sub_batches(widths: Sequence[int], pack_width: int) -> List[List[int]]:
    """Greedy sub-batches of consecutive images whose total width stays <= pack_width (at least one image each)."""
    groups, current, total = [], [], 0
    for i, w in enumerate(widths):
        if current and total + w > pack_width:
            groups.append(current)
            current, total = [], 0
        current.append(i)
        total += w
    if current:
        groups.append(current)
    return groups


@torch.no_grad()
def assign_packed(pred_boxes, cls_logits, obj_logits, gt_boxes, gt_classes, gt_valid, grid: AnchorGrid,
                  pack_width=10000):
    """SimOTA on images laid side by side with an x offset S (the grid's pixel width, at least the image width), in
    sub-batches of total width <= pack_width. The packed cost matrix is (sum G) x (sum C) x K, as in the study; pairs
    from different images are masked so the result equals the per-image assignment. Packed coordinates are float64
    so offsets stay exact.
    """
    B, A, K = cls_logits.shape
    device = pred_boxes.device
    offset = float(grid.pixel_width)  # S >= the image width and past every anchor centre
    fg = torch.zeros(B, A, dtype=torch.bool, device=device)
    matched_gt = torch.zeros(B, A, dtype=torch.long, device=device)
    matched_iou = torch.zeros(B, A, dtype=torch.float32, device=device)
    num_gts = int(gt_valid.sum().item())
    anchor_cx, anchor_cy = grid.centres()
    for group in pack_sub_batches([grid.pixel_width] * B, pack_width):
        n = len(group)
        imgs = torch.tensor(group, device=device)
        shift = torch.arange(n, device=device, dtype=torch.float64) * offset  # (n,)
        valid = gt_valid[imgs]  # (n, M)
        gt_img, gt_row = torch.nonzero(valid, as_tuple=True)  # (Gp,) image slot and label row of each packed gt
        if gt_img.numel() == 0:
            continue
        gts = gt_boxes[imgs[gt_img], gt_row].double()  # (Gp, 4)
        gts[:, 0] += shift[gt_img]
        # packed anchors: every image's anchors, shifted by its offset -> (n * A,)
        p_cx = (anchor_cx.double().unsqueeze(0) + shift.unsqueeze(1)).reshape(-1)
        p_cy = anchor_cy.double().repeat(n)
        p_stride = grid.strides.double().repeat(n)
        geometry_all = in_centre_prior(gts[:, 0:1], gts[:, 1:2], p_cx, p_cy, p_stride)  # (Gp, n*A)
        # A gt square near an image's right edge reaches past the offset into the next image: mask those pairs
        anchor_img = torch.arange(n, device=device).repeat_interleave(A)  # (n*A,)
        geometry_all &= gt_img.unsqueeze(1) == anchor_img.unsqueeze(0)
        cand = torch.nonzero(geometry_all.any(0)).squeeze(1)  # (Cp,) packed candidate indices
        if cand.numel() == 0:
            continue
        cand_img, cand_anchor = cand // A, cand % A
        geometry = geometry_all[:, cand]  # (Gp, Cp)
        # IoU is translation invariant: computed on each image's own fp32 coordinates it rounds exactly as the loop
        preds = pred_boxes[imgs[cand_img], cand_anchor].float()  # (Cp, 4)
        gts32 = gt_boxes[imgs[gt_img], gt_row].float()  # (Gp, 4)
        same_image = gt_img.unsqueeze(1) == cand_img.unsqueeze(0)  # (Gp, Cp) cross-image pairs never match
        ious = pairwise_iou_cxcywh(gts32.unsqueeze(1), preds.unsqueeze(0))  # (Gp, Cp)
        ious = torch.where(same_image, ious, torch.zeros_like(ious))
        with torch.autocast(device_type=device.type, enabled=False):
            p = candidate_scores(cls_logits[imgs[cand_img], cand_anchor], obj_logits[imgs[cand_img], cand_anchor])
            cls_cost = class_cost_dense(p, gt_classes[imgs[gt_img], gt_row], K)  # (Gp, Cp)
        penalty = prior_penalty(geometry, K) + (~same_image).float() * 2 * outside_cost(K)
        key = cost_key(cls_cost, ious, penalty)  # (Gp, Cp)
        fg_c, match_c, iou_c = simota_match(key[None], ious[None], invalid_key_floor(K, cand.numel()))
        fg[imgs[cand_img], cand_anchor] = fg_c[0]
        matched_gt[imgs[cand_img], cand_anchor] = gt_row[match_c[0]]
        matched_iou[imgs[cand_img], cand_anchor] = iou_c[0]
    return _finish(fg, matched_gt, matched_iou, gt_classes, num_gts)


# ----------------------------------------------------------------------------------------------------------
# "batched": gts padded to (B, G_max), candidates to (B, C_max); no loop over images or gts, one host sync.
# ----------------------------------------------------------------------------------------------------------
SLOT_OFFSETS = (-2, -1, 0, 1, 2)  # grid cells around floor(centre / stride) that may hold a centre-prior anchor
# The batched path keeps about ten (G, C) 4-byte tensors alive at its peak; the loop keeps (G, C, K) ones.
BATCHED_BYTES_PER_CELL_OVER_LOOP = 10
# Far-away boxes for padding: IoU exactly 0 with every real box.
PAD_GT_BOX = (-1e7, -1e7, 1.0, 1.0)
PAD_PRED_BOX = (-2e7, -2e7, 1.0, 1.0)
# Merging two buckets saves one pass of ~150 small ops; worth it while the extra padding stays below this many
# (G, C) cells (measured: ~23 ns per cell on one CPU core for the whole pipeline, ~1.5 ms of dispatch per bucket).
BUCKET_MERGE_CELLS = {"cpu": 64 * 1024, "cuda": 4 * 1024 * 1024}


def centre_prior_candidates(gt_boxes, gt_valid, grid: AnchorGrid):
    """Anchors inside each gt's centre prior, found without comparing every gt with every anchor.

    A square of half-side 1.5 strides holds at most 3 anchor centres per axis and level, all within 2 cells of
    floor(centre / stride); each of those slots is tested with the exact centre-prior predicate.
    gt_boxes (B, M, 4), gt_valid (B, M) -> slot anchors (B, M, S) int64, slot hits (B, M, S) bool, candidate mask of
    each image (B, A) bool, with S = 25 x levels.
    """
    B, M, _ = gt_boxes.shape
    A = grid.num_anchors
    device = gt_boxes.device
    cx, cy = gt_boxes[..., 0].float(), gt_boxes[..., 1].float()  # (B, M)
    offs = torch.arange(SLOT_OFFSETS[0], SLOT_OFFSETS[-1] + 1, device=device)  # no host-to-device copy
    slot_idx, slot_ok = [], []
    level_start = 0
    for h, w, stride in grid.level_shapes:
        limit = float(max(h, w) + 4)
        fx = torch.floor(cx / stride).clamp(-limit, limit).long()  # (B, M)
        fy = torch.floor(cy / stride).clamp(-limit, limit).long()
        gx = (fx.unsqueeze(-1) + offs).unsqueeze(-2)  # (B, M, 1, 5) cell x of each slot
        gy = (fy.unsqueeze(-1) + offs).unsqueeze(-1)  # (B, M, 5, 1) cell y
        inside = ((gx >= 0) & (gx < w)) & ((gy >= 0) & (gy < h))  # (B, M, 5, 5)
        idx = level_start + gy.clamp(0, h - 1) * w + gx.clamp(0, w - 1)  # (B, M, 5, 5) anchor index
        slot_idx.append(idx.reshape(B, M, -1))
        slot_ok.append(inside.reshape(B, M, -1))
        level_start += h * w
    idx = torch.cat(slot_idx, -1)  # (B, M, S)
    ok = torch.cat(slot_ok, -1)
    anchor_cx, anchor_cy = grid.centres()
    prior = in_centre_prior(cx.unsqueeze(-1), cy.unsqueeze(-1), anchor_cx[idx], anchor_cy[idx], grid.strides[idx])
    hit = ok & prior & gt_valid.unsqueeze(-1)  # (B, M, S)
    return idx, hit, kept_mask(idx.reshape(B, -1), hit.reshape(B, -1), A)


def _filled_box(values, device):
    """A (4,) float32 tensor of `values`, filled on the device by kernels (no blocking host-to-device copy)."""
    box = torch.empty(4, device=device)
    for j, v in enumerate(values):
        box[j] = v
    return box


def compact(mask, width):
    """Indices of the True entries of each row, in order, padded to `width`: (n, L) bool -> (n, width) int64, with
    a (n, width) bool telling the real entries. A cumulative sum replaces sorting or nonzero (no host sync)."""
    n, L = mask.shape
    pos = torch.cumsum(mask, dim=1) - 1  # (n, L) slot of each True entry
    return scatter_kept(pos, mask, torch.arange(L, device=mask.device).expand(n, L), width), kept_mask(pos, mask, width)


def plan_buckets(gt_counts: Sequence[int], cand_counts: Sequence[int], merge_cells=64 * 1024,
                 max_cells=1 << 24) -> List[List[int]]:
    """Group images so that the padded work, sum over groups of (n x G_max x C_max + merge_cells), is smallest.

    merge_cells is the fixed cost of running one more group, in (G, C) cells. Images are ordered from the most to
    the least crowded (G x C) and split into consecutive groups by dynamic programming (B is small); no group
    exceeds max_cells unless it is a single image. Images without gts or candidates are left out.
    """
    order = sorted(range(len(gt_counts)), key=lambda i: (-gt_counts[i] * cand_counts[i], i))
    order = [i for i in order if gt_counts[i] > 0 and cand_counts[i] > 0]
    n = len(order)
    best = [0.0] + [float("inf")] * n  # best[j]: cost of grouping the first j images
    cut = [0] * (n + 1)
    for j in range(1, n + 1):
        g_max = c_max = 0
        for i in range(j - 1, -1, -1):  # group = order[i:j]
            g_max, c_max = max(g_max, gt_counts[order[i]]), max(c_max, cand_counts[order[i]])
            cells = (j - i) * g_max * c_max
            if cells > max_cells and j - i > 1:
                break
            cost = best[i] + merge_cells + cells
            if cost < best[j]:
                best[j], cut[j] = cost, i
    groups, j = [], n
    while j > 0:
        groups.append(order[cut[j]:j])
        j = cut[j]
    return groups[::-1]


@torch.no_grad()
def assign_batched(pred_boxes, cls_logits, obj_logits, gt_boxes, gt_classes, gt_valid, grid: AnchorGrid,
                   merge_cells=None):
    """SimOTA for the whole batch with padded (n, G_max, C_max) tensors and the decomposed class cost.

    One host synchronisation (the gt and candidate counts) plans buckets of similar images, so one crowded image
    does not pad the others; inside a bucket nothing loops over images or gts.
    """
    B, A, K = cls_logits.shape
    device = pred_boxes.device
    if merge_cells is None:
        merge_cells = BUCKET_MERGE_CELLS.get(device.type, BUCKET_MERGE_CELLS["cuda"])
    slot_idx, slot_hit, cand = centre_prior_candidates(gt_boxes, gt_valid, grid)  # (B, M, S) x2, (B, A)
    with record_function("simota::host_sync"):
        gt_counts, cand_counts = torch.stack([gt_valid.sum(1), cand.sum(1)]).tolist()  # the one host sync
    num_gts = int(sum(gt_counts))
    S = slot_idx.shape[-1]
    pad_gt, pad_pred = _filled_box(PAD_GT_BOX, device), _filled_box(PAD_PRED_BOX, device)
    out_cost, never = outside_cost(K), 2 * outside_cost(K)
    # A bucket may hold several images' (G, C) tensors while it stays below what the per-image loop needs for its
    # largest image, whose class cost alone is G x C x K.
    largest = max([g * c for g, c in zip(gt_counts, cand_counts)] + [0])
    max_cells = max(merge_cells, largest * max(1, K // BATCHED_BYTES_PER_CELL_OVER_LOOP))
    groups = plan_buckets(gt_counts, cand_counts, merge_cells=merge_cells, max_cells=max_cells)
    # every bucket's image indices in one non-blocking copy (a plain torch.tensor(list, device) would block)
    flat_imgs = torch.tensor([i for g in groups for i in g] or [0], dtype=torch.long,
                             pin_memory=device.type == "cuda").to(device, non_blocking=True)
    found = []  # per bucket, (n * C,) each: candidate's anchor in the batch (B * A), positive?, gt row, class, IoU
    start = 0
    for group in groups:
        n = len(group)
        imgs = flat_imgs[start:start + n]  # (n,)
        start += n
        G = max(gt_counts[i] for i in group)
        C = max(cand_counts[i] for i in group)
        rows, g_ok = compact(gt_valid[imgs], G)  # (n, G) label rows of the real gts
        anchors, c_ok = compact(cand[imgs], C)  # (n, C) candidate anchors, ascending
        gts = torch.gather(gt_boxes[imgs].float(), 1, rows.unsqueeze(-1).expand(n, G, 4))  # (n, G, 4)
        gts = torch.where(g_ok.unsqueeze(-1), gts, pad_gt)
        g_cls = torch.gather(gt_classes[imgs].long(), 1, rows)  # (n, G)
        flat = (imgs.unsqueeze(1) * A + anchors).reshape(-1)  # (n*C,) index into (B*A)
        preds = pred_boxes.reshape(B * A, 4).index_select(0, flat).float().view(n, C, 4)
        preds = torch.where(c_ok.unsqueeze(-1), preds, pad_pred)

        # the pairs inside the centre prior, from the slots already tested, mapped to candidate columns: (n, G, C)
        column = scatter_kept(anchors, c_ok, torch.arange(C, device=device).expand(n, C), A, fill=C)  # (n, A)
        g_slots = torch.gather(slot_idx[imgs], 1, rows.unsqueeze(-1).expand(n, G, S))  # (n, G, S)
        g_hits = torch.gather(slot_hit[imgs], 1, rows.unsqueeze(-1).expand(n, G, S)) & g_ok.unsqueeze(-1)
        inside = kept_mask(torch.gather(column, 1, g_slots.reshape(n, -1)).view(n, G, S), g_hits, C)  # (n, G, C)
        # penalty: 0 inside the centre prior, out_cost outside, >= never for padding: (n, G, C)
        penalty = ((~g_ok).float() * never).unsqueeze(2) + ((~c_ok).float() * never + out_cost).unsqueeze(1)
        penalty.masked_fill_(inside, 0.0)

        ious = pairwise_iou_cxcywh(gts.unsqueeze(2), preds.unsqueeze(1))  # (n, G, C), 0 for padding
        with torch.autocast(device_type=device.type, enabled=False):
            p = candidate_scores(cls_logits.reshape(B * A, K).index_select(0, flat).view(n, C, K),
                                 obj_logits.reshape(B * A).index_select(0, flat).view(n, C))  # (n, C, K)
            cls_cost = class_cost_decomposed(p, g_cls)  # (n, G, C)
        key = cost_key(cls_cost, ious, penalty)  # (n, G, C)
        fg_c, match_c, iou_c = simota_match(key, ious, invalid_key_floor(K, C))  # (n, C)
        found.append((flat, (fg_c & c_ok).reshape(-1), torch.gather(rows, 1, match_c).reshape(-1),
                      torch.gather(g_cls, 1, match_c).reshape(-1), iou_c.reshape(-1)))
    if not found:  # no gt has a candidate: nothing to write
        none = flat_imgs[:0]  # (0,) int64
        found.append((none, none.bool(), none, none, none.float()))
    flat, positive, gt_row, gt_cls, gt_iou = (torch.cat(parts) for parts in zip(*found))  # (N,) each
    # the positives written into (B, A) outputs, zero elsewhere
    fg = kept_mask(flat, positive, B * A).view(B, A)
    matched_gt, matched_cls, matched_iou = (scatter_kept(flat, positive, values, B * A).view(B, A)
                                            for values in (gt_row, gt_cls, gt_iou))
    return _finish(fg, matched_gt, matched_iou, gt_classes, num_gts, matched_cls)


# ----------------------------------------------------------------------------------------------------------
# Dispatch
# ----------------------------------------------------------------------------------------------------------
_warned_oom = False


def assign(mode, pred_boxes, cls_logits, obj_logits, gt_boxes, gt_classes, gt_valid, grid: AnchorGrid,
           pack_width=10000):
    """Run SimOTA in `mode` ("loop", "packed" or "batched"); all give the same Assignment.

    On an out-of-memory error in "packed" or "batched" the batch is assigned image by image on the same device
    (one warning per process), instead of moving to the CPU as the official release does (known to hang there).
    """
    if mode not in SIMOTA_MODES:
        raise ValueError(f"simota_mode={mode!r} is not one of {SIMOTA_MODES}; set it in your Exp file")
    args = (pred_boxes, cls_logits, obj_logits, gt_boxes, gt_classes, gt_valid, grid)
    if mode == "loop":
        return assign_loop(*args)
    try:
        if mode == "packed":
            return assign_packed(*args, pack_width=pack_width)
        return assign_batched(*args)
    except torch.OutOfMemoryError:
        global _warned_oom
        if not _warned_oom:
            logger.warning(f"SimOTA '{mode}' ran out of memory on {pred_boxes.device}; assigning this batch image by "
                           "image on the same device (further occurrences are not reported). A smaller batch or "
                           "simota_mode 'loop' avoids it.")
            _warned_oom = True
        if pred_boxes.is_cuda:
            torch.cuda.empty_cache()
        return assign_loop(*args)
