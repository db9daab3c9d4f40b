"""Weights that detect the bundled trees without training, for benchmarks and tests that need real detections.

No published weights can be fetched here, and random ones detect nothing: past a few dozen layers their features no
longer depend on the image. Two steps fix that in a second: every BatchNorm takes the statistics of the given images
(so each layer passes a signal of unit scale on), then the head's 1x1 objectness and box convolutions are fitted by
ridge regression to the images' ground truth (objectness high in the cell holding a box centre, at the level of the
box's size, low elsewhere; the box's offsets and log size there). The result is a detector of those very images:
its AP on them is well above zero (about 0.09 AP50:95 for yolox-nano at 160 px on the forest val tiles), and its
scores are spread like a trained model's.
"""
import contextlib
import io
import os

import numpy as np
import torch
from torch import nn

__all__ = ["forest_images", "recalibrate_bn", "fit_head", "detector_like"]


def forest_images(size, split="val", data_dir=None):
    """(images (B, 3, size, size) float32 tensor letterboxed as ValTransform does, gt boxes: list of (G, 4) x, y, w, h
    tensors at that letterboxed scale, file names) of the bundled forest set's `split`."""
    from yolox.data import COCODataset, ValTransform, get_yolox_datadir

    data_dir = data_dir or os.path.join(get_yolox_datadir(), "forest")
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints its progress
        dataset = COCODataset(data_dir, f"{split}.json", split, (size, size), ValTransform())
    images, boxes, names = [], [], []
    for i in range(len(dataset)):
        img, _, _, img_id = dataset[i]
        img_id = int(np.asarray(img_id).reshape(-1)[0])
        info = dataset.coco.loadImgs(img_id)[0]
        ratio = min(size / info["height"], size / info["width"])
        anns = dataset.coco.loadAnns(dataset.coco.getAnnIds(imgIds=[img_id]))
        images.append(img)
        boxes.append(torch.tensor([a["bbox"] for a in anns], dtype=torch.float32).reshape(-1, 4) * ratio)
        names.append(os.path.join(data_dir, split, info["file_name"]))
    return torch.from_numpy(np.stack(images)), boxes, names


def recalibrate_bn(model, images, min_var=1e-2):
    """Set every BatchNorm's running statistics to those of `images` (B, 3, H, W); returns the model in eval mode.

    min_var bounds how much a near-constant channel is scaled up (by 1 / sqrt(var + eps)), and with it how much
    the rounding differences between runtimes grow layer after layer: at 1e-2 PyTorch's float32 and float64
    outputs differ by about 7e-4 (and the fitted head finds the trees best), at 0.1 by 2e-5 as trained weights do
    (the features then say less about the image)."""
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    momenta = [m.momentum for m in bns]
    for m in bns:
        m.momentum = 1.0  # the running statistics become this batch's
    model.train()
    with torch.no_grad():
        for k, level in enumerate(model.backbone(images)):
            model.head._level_outputs(k, level)  # the head's BatchNorms too (its train forward needs labels)
    for m, momentum in zip(bns, momenta):
        m.momentum = momentum
        m.running_var.clamp_(min=min_var)
    return model.eval()


def _ridge(features, targets, lam):
    """(C + 1, T) weights and bias of the least-squares fit features (N, C) -> targets (N, T), ridge lam."""
    a = torch.cat([features, torch.ones(features.shape[0], 1)], 1).double()  # (N, C + 1)
    gram = a.T @ a + lam * torch.eye(a.shape[1], dtype=torch.float64)
    return torch.linalg.solve(gram, a.T @ targets.double()).float()


def _sharpen(weights, features, positive, negative_logit, positive_logit):
    """The ridge fit shrinks its predictions towards the mean; map them linearly (the ranking kept) so that the
    positives' mean logit is positive_logit / 2 and the negatives' negative_logit: scores then span (0, 1) as a
    trained model's do."""
    z = torch.cat([features, torch.ones(features.shape[0], 1)], 1) @ weights  # (N, 1) fitted logits
    if not positive.any() or positive.all():
        return weights
    zp, zn = z[positive].mean(), z[~positive].mean()
    scale = (positive_logit / 2 - negative_logit) / (zp - zn).clamp(min=1e-6)
    weights = weights * scale
    weights[-1] += negative_logit - scale * zn
    return weights


def _head_features(model, images):
    """{level: (B, C, h, w)} inputs of the objectness convolutions (the regression branch's features)."""
    feats = {}
    hooks = [conv.register_forward_hook(lambda m, inp, out, k=k: feats.__setitem__(k, inp[0]))
             for k, conv in enumerate(model.head.obj_preds)]
    try:
        with torch.no_grad():
            model(images)
    finally:
        for h in hooks:
            h.remove()
    return feats


def _level_targets(boxes, level, stride, h, w, num_levels, negative_logit, positive_logit):
    """For one image: objectness logits (h * w,) and the (cell index (P,), reg targets (P, 4)) of its boxes whose
    size puts them at `level` (8-16 px at stride 8, 16-32 at 16, ... ), one cell each: the one holding the centre."""
    obj = torch.full((h * w,), negative_logit)
    centre = boxes[:, :2] + boxes[:, 2:] / 2  # (G, 2)
    size = (boxes[:, 2] * boxes[:, 3]).clamp(min=1e-6).sqrt()  # (G,)
    box_level = torch.clamp(torch.floor(torch.log2(size / 8) + 0.5), 0, num_levels - 1)
    sel = box_level == level
    cell = (centre[sel] / stride).long()  # (P, 2) x, y
    cell[:, 0].clamp_(0, w - 1)
    cell[:, 1].clamp_(0, h - 1)
    index = cell[:, 1] * w + cell[:, 0]  # (P,)
    obj[index] = positive_logit
    reg = torch.cat([centre[sel] / stride - cell, torch.log(boxes[sel, 2:] / stride)], 1)  # (P, 4)
    return obj, index, reg


def fit_head(model, images, gt_boxes, ridge=1.0, negative_logit=-8.0, positive_logit=4.0, class_logit_std=0.0,
             seed=0):
    """Fit the objectness and box 1x1 convolutions of each level to the images' gt boxes (see the module doc).

    Class scores: with class_logit_std 0 every class gets logit 4 (one class: confident); otherwise random
    weights spread each class's logits by that std around -1, so that the best class varies from anchor to anchor.
    """
    head = model.head
    feats = _head_features(model, images)
    g = torch.Generator().manual_seed(seed)
    for k, stride in enumerate(head.strides):
        f = feats[k]  # (B, C, h, w)
        b, c, h, w = f.shape
        x = f.permute(0, 2, 3, 1).reshape(b, h * w, c)  # (B, h * w, C)
        per_image = [_level_targets(boxes, k, stride, h, w, len(head.strides), negative_logit, positive_logit)
                     for boxes in gt_boxes]
        obj_t = torch.stack([t[0] for t in per_image]).reshape(-1)  # (B * h * w,)
        obj_w = _ridge(x.reshape(-1, c), obj_t[:, None], ridge)  # (C + 1, 1)
        obj_w = _sharpen(obj_w, x.reshape(-1, c), obj_t > negative_logit, negative_logit, positive_logit)
        rows = torch.cat([x[i, t[1]] for i, t in enumerate(per_image)])  # (P, C)
        reg_t = torch.cat([t[2] for t in per_image])  # (P, 4)
        with torch.no_grad():
            head.obj_preds[k].weight.copy_(obj_w[:c].T.reshape(1, c, 1, 1))
            head.obj_preds[k].bias.copy_(obj_w[c])
            if rows.shape[0] > 8:  # enough boxes at this level to fit their regression
                reg_w = _ridge(rows, reg_t, ridge * 10)  # (C + 1, 4)
                head.reg_preds[k].weight.copy_(reg_w[:c].T.reshape(4, c, 1, 1))
                head.reg_preds[k].bias.copy_(reg_w[c])
            cls = head.cls_preds[k]
            if class_logit_std > 0:
                cls_in = cls.weight.shape[1]
                cls.weight.copy_(torch.randn(cls.weight.shape, generator=g) * class_logit_std / cls_in ** 0.5)
                cls.bias.fill_(-1.0)
            else:
                cls.weight.zero_()
                cls.bias.fill_(4.0)
    return model


def detector_like(model, images, gt_boxes, class_logit_std=0.0, seed=0, min_var=1e-2, negative_logit=-8.0):
    """recalibrate_bn then fit_head: `model` (changed in place, eval mode) detects the boxes of `images`."""
    recalibrate_bn(model, images, min_var)
    return fit_head(model, images, gt_boxes, class_logit_std=class_logit_std, seed=seed,
                    negative_logit=negative_logit).eval()
