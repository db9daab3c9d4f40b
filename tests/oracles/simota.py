"""An independent, deliberately plain SimOTA written from the specification (official_numerics.md), for tests.

Python loops over images, gts and candidates; float64 throughout except the class cost, computed per pair.
"""
import math

import torch


def oracle_assign(pred_boxes, cls_logits, obj_logits, labels, level_shapes):
    """Returns {(image, anchor): (label row, class)} for the positives."""
    anchors = []
    for h, w, s in level_shapes:
        for y in range(h):
            for x in range(w):
                anchors.append(((x + 0.5) * s, (y + 0.5) * s, s))
    result = {}
    B = pred_boxes.shape[0]
    for b in range(B):
        rows = [i for i in range(labels.shape[1]) if float(labels[b, i].sum()) > 0]
        if not rows:
            continue
        gts = [labels[b, i].tolist() for i in rows]

        def inside(g, a):
            cx, cy, s = anchors[a]
            d = 1.5 * s
            return cx > g[1] - d and cx < g[1] + d and cy > g[2] - d and cy < g[2] + d

        cands = [a for a in range(len(anchors)) if any(inside(g, a) for g in gts)]
        if not cands:
            continue

        def iou(g, a):
            p = pred_boxes[b, a].tolist()
            ax1, ax2, ay1, ay2 = g[1] - g[3] / 2, g[1] + g[3] / 2, g[2] - g[4] / 2, g[2] + g[4] / 2
            bx1, bx2, by1, by2 = p[0] - p[2] / 2, p[0] + p[2] / 2, p[1] - p[3] / 2, p[1] + p[3] / 2
            iw, ih = min(ax2, bx2) - max(ax1, bx1), min(ay2, by2) - max(ay1, by1)
            inter = iw * ih if (iw > 0 and ih > 0) else 0.0
            return inter / (g[3] * g[4] + p[2] * p[3] - inter)

        def cost(g, a):
            c = 0.0
            for k in range(cls_logits.shape[-1]):
                pk = math.sqrt(torch.sigmoid(cls_logits[b, a, k]).item() * torch.sigmoid(obj_logits[b, a]).item())
                if k == int(g[0]):
                    c += -max(math.log(pk) if pk > 0 else -math.inf, -100.0)
                else:
                    c += -max(math.log(1 - pk) if pk < 1 else -math.inf, -100.0)
            return c + 3.0 * -math.log(iou(g, a) + 1e-8) + (0.0 if inside(g, a) else 1e6)

        costs = [[cost(g, a) for a in cands] for g in gts]
        claims = {}
        for gi, g in enumerate(gts):
            top = sorted((iou(g, a) for a in cands), reverse=True)[:10]
            k = max(1, int(sum(top)))
            order = sorted(range(len(cands)), key=lambda j: (costs[gi][j], j))[:k]
            for j in order:
                claims.setdefault(j, []).append(gi)
        for j, who in claims.items():
            if len(who) > 1:
                gi = min(range(len(gts)), key=lambda t: (costs[t][j], t))
            else:
                gi = who[0]
            result[(b, cands[j])] = (rows[gi], int(gts[gi][0]))
    return result
