"""The numbers of the run report (Ultralytics-style validation plots) from the COCO ground truth and the same
detections list that pycocotools receives: per-class P, R, F1 against confidence, PR curves and AP50, the confusion
matrix, and the per-class table.

How the numbers are made (all at one IoU threshold, 0.5 by default):

* Matching, as pycocotools matches: within each (image, class), detections in order of score take the not yet
  matched non-crowd gt of highest IoU >= iou (IoU of xywh boxes, no +1). A detection left unmatched whose
  intersection over its own area with a crowd gt (iscrowd=1) of its class is >= iou is ignored: neither TP nor FP,
  and crowd gts count as no instance. Detections are ranked by (score desc, image id, position in the list), the
  order of pycocotools' stable sorts. The greedy order is kept without a loop over detections: every round, each
  unresolved detection proposes its best still-free gt, and a proposal is final when no higher-ranked unresolved
  detection has that gt among its candidates (the higher ones then take other gts, so this one gets it whatever they
  do). Each round is vectorised over all remaining (detection, gt) pairs; the number of rounds is the longest chain
  of detections competing for the same gts (a handful in practice; RunReport.match_rounds records it).
* Because matching is greedy in score order, the matching of the detections above any confidence c is the global
  matching restricted to them: one matching gives the TP/FP counts at every confidence.
* Curves: P(c) = TP/(TP+FP) (0 where nothing is detected at or above c), R(c) = TP/instances, F1 = 2PR/(P+R), on
  1000 confidences linspace(0, 1); a detection counts at c when score >= c. The best F1 is the maximum over c of the
  mean F1 over the classes with instances; its confidence is the one to deploy with, and the per-class P and R of the
  table are read there.
* PR curve and AP50, as COCO: precision made non-increasing in recall, read at the 101 recall points 0, 0.01, ..,
  1 (the first detection reaching each recall; 0 past the last recall), AP50 = their mean. This agrees with
  pycocotools' AP at IoU 0.5 (area "all") except where pycocotools keeps only the 100 best detections per image and
  class (maxDets; `max_dets=100` here does the same) or ignores gts whose "area" field is outside [0, 1e10].
* Confusion matrix (K+1)x(K+1), rows = predicted class + background, columns = true class + background (the
  Ultralytics orientation, predicted x true), at the best-F1 confidence or a given one: detections below it are
  dropped; the TP matches above fill the diagonal; the remaining detections (not ignored) then match the remaining
  non-crowd gts of any class the same greedy way (those are the class confusions, always off the diagonal); a gt
  matched by no detection counts in the background row, a detection matching no gt in the background column.
* The table's AP50 and AP50:95 come from pycocotools when a finished COCOeval (or its eval["precision"]) is given
  (`coco_per_class_ap`); this module's own AP50 is RunReport.ap50.
"""
import itertools
from dataclasses import dataclass, field
from typing import List, Optional

import numpy as np
from tabulate import tabulate

__all__ = ["RunReport", "build_report", "coco_per_class_ap", "greedy_match", "CONF_POINTS", "RECALL_POINTS"]

CONF_POINTS = 1000  # confidences of the P, R, F1 curves
RECALL_POINTS = 101  # recall points of COCO's interpolated PR curve


@dataclass
class RunReport:
    """Per-class numbers and curves of one evaluation; arrays indexed by class (K,) unless said."""

    class_names: List[str]
    iou: float
    num_images: int
    images: np.ndarray  # (K,) images holding at least one non-crowd instance of the class
    instances: np.ndarray  # (K,) non-crowd gts
    conf_grid: np.ndarray  # (C,) confidences of the curves
    p_curve: np.ndarray  # (K, C)
    r_curve: np.ndarray  # (K, C)
    f1_curve: np.ndarray  # (K, C)
    recall_grid: np.ndarray  # (101,)
    pr_curve: np.ndarray  # (K, 101) interpolated precision at each recall point
    ap50: np.ndarray  # (K,) this module's AP at `iou`, nan for a class without instances
    best_conf: float  # confidence of the best mean F1: the one to deploy with
    best_f1: float
    precision: np.ndarray  # (K,) at best_conf
    recall: np.ndarray  # (K,) at best_conf
    confusion: np.ndarray  # (K+1, K+1) int64 counts, [predicted, true], index K = background
    confusion_conf: float  # confidence the confusion matrix was counted at
    coco_ap50: Optional[np.ndarray] = None  # (K,) from pycocotools when given
    coco_ap50_95: Optional[np.ndarray] = None  # (K,)
    match_rounds: int = 0  # rounds of the vectorised greedy matching (per-class and class-agnostic together)
    num_detections: int = 0
    extra: dict = field(default_factory=dict)

    @property
    def has_instances(self):
        """(K,) bool: classes with at least one instance, the ones the means run over."""
        return self.instances > 0

    def mean(self, values):
        """Mean of a (K,) array over the classes with instances (nan when there are none)."""
        values = np.asarray(values, dtype=np.float64)[self.has_instances]
        return float(np.nanmean(values)) if values.size and not np.all(np.isnan(values)) else float("nan")

    def table_rows(self):
        """[class, images, instances, P, R, AP50, AP50:95] rows, "all" first (AP from pycocotools when given)."""
        ap50 = self.coco_ap50 if self.coco_ap50 is not None else self.ap50
        ap = self.coco_ap50_95 if self.coco_ap50_95 is not None else np.full(len(self.class_names), np.nan)
        rows = [["all", self.num_images, int(self.instances.sum()), self.mean(self.precision),
                 self.mean(self.recall), self.mean(ap50), self.mean(ap)]]
        for k, name in enumerate(self.class_names):
            rows.append([name, int(self.images[k]), int(self.instances[k]), float(self.precision[k]),
                         float(self.recall[k]), float(ap50[k]), float(ap[k])])
        return rows

    def table(self, tablefmt="github"):
        """The per-class table as text; AP50:95 is empty without pycocotools' results."""
        headers = ["class", "images", "instances", "P", "R", "AP50", "AP50:95"]
        text = tabulate(self.table_rows(), headers=headers, tablefmt=tablefmt, floatfmt=".3f", missingval="-")
        return text + f"\nP and R at confidence {self.best_conf:.3f} (best mean F1 {self.best_f1:.3f}), IoU {self.iou}\n"


# ---------------------------------------------------------------------------------------------------------------
# reading the inputs


def _lookup(sorted_ids, ids):
    """(position of each id in sorted_ids (N,), whether it is there (N,))."""
    pos = np.searchsorted(sorted_ids, ids)
    if len(sorted_ids) == 0:
        return pos, np.zeros(len(ids), dtype=bool)
    return pos, (pos < len(sorted_ids)) & (sorted_ids[np.minimum(pos, len(sorted_ids) - 1)] == ids)


def _gt_arrays(coco_gt, cat_index):
    """Ground truths of the images of coco_gt: (image index (G,), class (G,), xywh (G, 4), crowd (G,)), image ids."""
    img_ids = np.asarray(sorted(coco_gt.getImgIds()), dtype=np.int64)  # pycocotools evaluates them sorted
    anns = [a for a in coco_gt.anns.values() if a["category_id"] in cat_index]  # annotation order, as pycocotools
    g = len(anns)
    ann_img = np.fromiter((a["image_id"] for a in anns), np.int64, g)
    img, known = _lookup(img_ids, ann_img)  # (G,) an annotation of an image not listed is not evaluated
    cls = np.fromiter((cat_index[a["category_id"]] for a in anns), np.int64, g)
    box = np.fromiter(itertools.chain.from_iterable(a["bbox"] for a in anns), np.float64, 4 * g).reshape(g, 4)
    crowd = np.fromiter((bool(a.get("iscrowd", 0)) for a in anns), bool, g)
    return img[known], cls[known], box[known], crowd[known], img_ids


def _det_arrays(data_list, img_ids, cat_index):
    """Detections of data_list: (image index (D,), class (D,), xywh (D, 4), score (D,)), in list order."""
    d = len(data_list)
    det_img = np.fromiter((r["image_id"] for r in data_list), np.int64, d)
    det_cat = np.fromiter((r["category_id"] for r in data_list), np.int64, d)
    box = np.fromiter(itertools.chain.from_iterable(r["bbox"] for r in data_list), np.float64, 4 * d).reshape(d, 4)
    score = np.fromiter((r["score"] for r in data_list), np.float64, d)
    img, found = _lookup(img_ids, det_img)
    bad = ~found
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise ValueError(f"detection {i} has image_id {det_img[i]}, which is not an image of the ground truth; "
                         f"detections must use the ids of the evaluated annotation file")
    cats = np.asarray(sorted(cat_index), dtype=np.int64)
    pos, found = _lookup(cats, det_cat)
    bad = ~found
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise ValueError(f"detection {i} has category_id {det_cat[i]}, not a category of the ground truth "
                         f"({len(cats)} ids from {cats[0]} to {cats[-1]}); map class indices through the dataset's "
                         f"class_ids")
    return img, pos.astype(np.int64), box, score


def _rank_order(img, cls, score):
    """Permutation ranking detections by (class, score desc, image, list position): pycocotools' stable sorts."""
    return np.lexsort((np.arange(len(score)), img, -score, cls))


def _cap_per_group(img, cls, max_dets):
    """(D,) bool keeping the first max_dets of each (image, class) in the given (ranked) order."""
    key = img * (int(cls.max(initial=0)) + 1) + cls  # (D,)
    order = np.argsort(key, kind="stable")
    sorted_key = key[order]
    starts = np.flatnonzero(np.r_[True, sorted_key[1:] != sorted_key[:-1]])
    pos = np.arange(len(key)) - np.repeat(starts, np.diff(np.r_[starts, len(key)]))  # place within its group
    keep = np.empty(len(key), bool)
    keep[order] = pos < max_dets
    return keep


# ---------------------------------------------------------------------------------------------------------------
# matching


def _group_pairs(det_key, gt_key):
    """All (detection, gt) index pairs with equal keys: (det (P,), gt (P,)), det-major."""
    gt_order = np.argsort(gt_key, kind="stable")
    sorted_keys = gt_key[gt_order]
    lo = np.searchsorted(sorted_keys, det_key, "left")  # (D,)
    counts = np.searchsorted(sorted_keys, det_key, "right") - lo
    pair_det = np.repeat(np.arange(len(det_key)), counts)  # (P,)
    offset = np.arange(len(pair_det)) - np.repeat(np.cumsum(counts) - counts, counts)
    return pair_det, gt_order[np.repeat(lo, counts) + offset]


def _pair_iou(det_box, gt_box, crowd=False):
    """IoU of paired xywh boxes (P, 4) and (P, 4), as pycocotools computes it; intersection over the detection's
    area for crowd gts."""
    w = np.minimum(det_box[:, 0] + det_box[:, 2], gt_box[:, 0] + gt_box[:, 2]) - np.maximum(det_box[:, 0],
                                                                                            gt_box[:, 0])
    h = np.minimum(det_box[:, 1] + det_box[:, 3], gt_box[:, 1] + gt_box[:, 3]) - np.maximum(det_box[:, 1],
                                                                                            gt_box[:, 1])
    inter = np.where((w > 0) & (h > 0), w * h, 0.0)  # (P,)
    det_area = det_box[:, 2] * det_box[:, 3]
    union = det_area if crowd else det_area + gt_box[:, 2] * gt_box[:, 3] - inter
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(union > 0, inter / union, 0.0)


def greedy_match(det_key, det_box, gt_key, gt_box, iou_thr):
    """Greedy matching in rank order (detection index = rank) of detections to gts of equal key with IoU >= iou_thr:
    (gt index per detection (D,), -1 unmatched; rounds run)."""
    match = np.full(len(det_key), -1, dtype=np.int64)
    pd, pg = _group_pairs(det_key, gt_key)
    iou = _pair_iou(det_box[pd], gt_box[pg])
    keep = iou >= iou_thr
    pd, pg, iou = pd[keep], pg[keep], iou[keep]
    # ascending (det, iou, gt): the last pair of a detection is its best gt; ties go to the later gt as in pycocotools
    order = np.lexsort((pg, iou, pd))
    pd, pg = pd[order], pg[order]
    taken = np.zeros(len(gt_key), dtype=bool)
    first_claim = np.empty(len(gt_key), dtype=np.int64)  # highest-ranked unresolved detection wanting each gt
    rounds = 0
    while pd.size:
        rounds += 1
        last = np.r_[pd[1:] != pd[:-1], True]  # (P,) the pair holding each detection's proposal
        prop_d, prop_g = pd[last], pg[last]
        first_claim[pg] = len(det_key)
        np.minimum.at(first_claim, pg, pd)
        final = first_claim[prop_g] == prop_d  # no higher-ranked detection could still take this gt
        match[prop_d[final]] = prop_g[final]
        taken[prop_g[final]] = True
        done = np.zeros(len(det_key), dtype=bool)
        done[prop_d[final]] = True
        alive = ~taken[pg] & ~done[pd]  # a detection left without pairs stays unmatched
        pd, pg = pd[alive], pg[alive]
    return match, rounds


def _crowd_ignored(det_key, det_box, gt_key, gt_box, iou_thr):
    """(D,) bool: detections covering a crowd gt of equal key by intersection/own area >= iou_thr."""
    ignored = np.zeros(len(det_key), dtype=bool)
    if len(gt_key) and len(det_key):
        pd, pg = _group_pairs(det_key, gt_key)
        ignored[pd[_pair_iou(det_box[pd], gt_box[pg], crowd=True) >= iou_thr]] = True
    return ignored


# ---------------------------------------------------------------------------------------------------------------
# curves


def _counts_at_confidences(cls, score, weights, k, grid):
    """(K, C) sum of weights of the detections of each class with score >= each confidence of grid."""
    bins = np.searchsorted(grid, score, side="right")  # (D,) number of grid confidences <= score
    c = len(grid)
    hist = np.bincount(cls * (c + 1) + bins, weights=weights, minlength=k * (c + 1)).reshape(k, c + 1)
    return np.cumsum(hist[:, ::-1], axis=1)[:, ::-1][:, 1:]  # entry j: bins > j, i.e. score >= grid[j]


def _interpolated_pr(cls, tp, n_gt, recall_grid):
    """(K, R) COCO's interpolated precision at the recall points, from ranked (class, score desc) detections.

    cls (D,) sorted, tp (D,) bool. Exact in integers: the first detection reaching recall r is the first whose
    cumulative TP count m satisfies m / n_gt >= r (evaluated in float, as pycocotools does).
    """
    k, r = len(n_gt), len(recall_grid)
    out = np.zeros((k, r))
    if len(cls) == 0:
        return out
    starts = np.searchsorted(cls, np.arange(k), "left")  # (K,)
    ends = np.searchsorted(cls, np.arange(k), "right")
    cum_tp = np.cumsum(tp)  # (D,) global; within a class subtract the count before its start
    base = np.where(starts > 0, cum_tp[np.maximum(starts - 1, 0)], 0)  # (K,)
    local_tp = cum_tp - base[cls]
    local_n = np.arange(len(cls)) - starts[cls] + 1
    precision = local_tp / local_n  # (D,)
    # non-increasing envelope within each class: a running max from the right, lifted per class so classes stay apart
    lift = 2.0 * (k - 1 - cls)  # (D,) precision <= 1 < 2: a later (in reverse) class never sees an earlier one's max
    envelope = np.maximum.accumulate((precision + lift)[::-1])[::-1] - lift
    n = np.maximum(n_gt, 1).astype(np.int64)  # (K,)
    # smallest integer m with float(m / n) >= r, found from ceil and corrected by one either way
    m = np.ceil(recall_grid[None, :] * n[:, None]).astype(np.int64)  # (K, R)
    m = np.where((m - 1) / n[:, None] >= recall_grid[None, :], m - 1, m)
    m = np.where(m / n[:, None] < recall_grid[None, :], m + 1, m)
    first = np.searchsorted(cum_tp, base[:, None] + m, side="left")  # (K, R) first global index with that count
    first = np.maximum(first, starts[:, None])  # m == 0: the class's first detection
    valid = (first < ends[:, None]) & (n_gt[:, None] > 0)
    out[valid] = envelope[np.minimum(first, len(cls) - 1)][valid]
    return out


# ---------------------------------------------------------------------------------------------------------------
# pycocotools' numbers


def coco_per_class_ap(coco_eval, iou=0.5):
    """(AP at `iou` (K,), AP50:95 (K,)) per category from a finished COCOeval (or its eval["precision"] array),
    area "all", the largest maxDets; nan for a category without gts."""
    precision = coco_eval.eval["precision"] if hasattr(coco_eval, "eval") else np.asarray(coco_eval)
    # precision: (T iou, R recall, K cat, A area, M maxdets), -1 where a category has no gts
    p = precision[:, :, :, 0, -1]  # (T, R, K)
    iou_thrs = getattr(getattr(coco_eval, "params", None), "iouThrs", np.linspace(0.5, 0.95, 10))
    t = int(np.argmin(np.abs(np.asarray(iou_thrs) - iou)))
    valid = p > -1

    def mean(x, v, axes):
        s = np.where(v, x, 0).sum(axis=axes)
        n = v.sum(axis=axes)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(n > 0, s / np.maximum(n, 1), np.nan)

    return mean(p[t], valid[t], 0), mean(p, valid, (0, 1))


# ---------------------------------------------------------------------------------------------------------------
# the report


def _confusion(k, det_cls, det_img, det_box, det_score, det_match, det_ignored, gt_img, gt_cls, gt_box, conf, iou):
    """(K+1, K+1) counts [predicted, true] at conf (detections ranked); also the rounds of the class-agnostic pass."""
    cm = np.zeros((k + 1, k + 1), dtype=np.int64)
    above = (det_score >= conf) & ~det_ignored  # (D,)
    tp = above & (det_match >= 0)
    np.add.at(cm, (det_cls[tp], gt_cls[det_match[tp]]), 1)
    gt_free = np.ones(len(gt_cls), dtype=bool)
    gt_free[det_match[tp]] = False
    rest = np.flatnonzero(above & (det_match < 0))  # ranked order kept: the greedy pass sees them by score
    rest = rest[np.argsort(-det_score[rest], kind="stable")]
    free = np.flatnonzero(gt_free)
    cross, rounds = greedy_match(det_img[rest], det_box[rest], gt_img[free], gt_box[free], iou)
    hit = cross >= 0
    np.add.at(cm, (det_cls[rest[hit]], gt_cls[free[cross[hit]]]), 1)
    np.add.at(cm, (det_cls[rest[~hit]], np.full((~hit).sum(), k)), 1)  # detections on nothing: background column
    missed = np.ones(len(gt_cls), dtype=bool)
    missed[det_match[tp]] = False
    missed[free[cross[hit]]] = False
    np.add.at(cm, (np.full(missed.sum(), k), gt_cls[missed]), 1)  # gts found by nothing: background row
    return cm, rounds


def build_report(coco_gt, data_list, class_names=None, iou=0.5, conf=None, coco_eval=None, max_dets=None):
    """RunReport of detections data_list (COCO result dicts, as given to COCOeval) against pycocotools COCO coco_gt.

    class_names follow the sorted category ids (default: the categories' names); conf: confidence of the confusion
    matrix (default the best-F1 one); coco_eval: a finished COCOeval (or eval["precision"]) for the table's AP
    columns; max_dets: keep only the best max_dets detections per image and class, as pycocotools' maxDets.
    """
    cat_ids = sorted(coco_gt.getCatIds())
    if class_names is None:
        class_names = [coco_gt.cats[c]["name"] for c in cat_ids]
    class_names = list(class_names)
    if len(class_names) != len(cat_ids):
        raise ValueError(f"{len(class_names)} class names for {len(cat_ids)} categories in the ground truth; the "
                         f"names must follow the sorted category ids")
    k = len(cat_ids)
    cat_index = {c: i for i, c in enumerate(cat_ids)}
    gt_img, gt_cls, gt_box, gt_crowd, img_ids = _gt_arrays(coco_gt, cat_index)
    det_img, det_cls, det_box, det_score = _det_arrays(data_list, img_ids, cat_index)

    order = _rank_order(det_img, det_cls, det_score)  # (D,) from here on, detection index = rank
    det_img, det_cls, det_box, det_score = det_img[order], det_cls[order], det_box[order], det_score[order]
    if max_dets is not None and len(det_img):
        keep = _cap_per_group(det_img, det_cls, max_dets)
        det_img, det_cls, det_box, det_score = det_img[keep], det_cls[keep], det_box[keep], det_score[keep]

    group = lambda img, cls: img * k + cls  # noqa: E731  one key per (image, class)
    real = np.flatnonzero(~gt_crowd)  # (G',) indices of non-crowd gts
    r_img, r_cls, r_box = gt_img[real], gt_cls[real], gt_box[real]
    match, rounds = greedy_match(group(det_img, det_cls), det_box, group(r_img, r_cls), r_box, iou)
    crowd = np.flatnonzero(gt_crowd)
    ignored = np.zeros(len(det_img), dtype=bool)
    unmatched = np.flatnonzero(match < 0)
    ignored[unmatched] = _crowd_ignored(group(det_img[unmatched], det_cls[unmatched]), det_box[unmatched],
                                        group(gt_img[crowd], gt_cls[crowd]), gt_box[crowd], iou)

    instances = np.bincount(r_cls, minlength=k)  # (K,)
    images = np.bincount(np.unique(group(r_img, r_cls)) % k, minlength=k)
    counted = ~ignored
    tp = (match >= 0)[counted]
    c_cls, c_score = det_cls[counted], det_score[counted]

    conf_grid = np.linspace(0, 1, CONF_POINTS)
    tp_at = _counts_at_confidences(c_cls, c_score, tp.astype(np.float64), k, conf_grid)  # (K, C)
    n_at = _counts_at_confidences(c_cls, c_score, None, k, conf_grid)
    with np.errstate(divide="ignore", invalid="ignore"):
        p_curve = np.where(n_at > 0, tp_at / np.maximum(n_at, 1), 0.0)
        r_curve = tp_at / np.maximum(instances, 1)[:, None]
        f1_curve = np.where(p_curve + r_curve > 0, 2 * p_curve * r_curve / (p_curve + r_curve), 0.0)
    has = instances > 0
    mean_f1 = f1_curve[has].mean(axis=0) if has.any() else np.zeros(CONF_POINTS)  # (C,)
    best = int(np.argmax(mean_f1))

    recall_grid = np.linspace(0, 1, RECALL_POINTS)
    pr_curve = _interpolated_pr(c_cls, tp, instances, recall_grid)  # (K, 101)
    ap50 = np.where(has, pr_curve.mean(axis=1), np.nan)

    cm_conf = float(conf_grid[best] if conf is None else conf)
    cm, cm_rounds = _confusion(k, det_cls, det_img, det_box, det_score, match, ignored, r_img, r_cls, r_box,
                               cm_conf, iou)
    coco_ap50 = coco_ap = None
    if coco_eval is not None:
        coco_ap50, coco_ap = coco_per_class_ap(coco_eval, iou)
    return RunReport(
        class_names=class_names, iou=iou, num_images=len(img_ids), images=images, instances=instances,
        conf_grid=conf_grid, p_curve=p_curve, r_curve=r_curve, f1_curve=f1_curve, recall_grid=recall_grid,
        pr_curve=pr_curve, ap50=ap50, best_conf=float(conf_grid[best]), best_f1=float(mean_f1[best]),
        precision=p_curve[:, best], recall=r_curve[:, best], confusion=cm, confusion_conf=cm_conf,
        coco_ap50=coco_ap50, coco_ap50_95=coco_ap, match_rounds=rounds + cm_rounds, num_detections=len(det_img),
    )
