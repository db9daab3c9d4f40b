"""Cut large annotated images into fixed-size tiles and write them as a COCO-format dataset (JPEG + json)."""
import json
import math
import os
import xml.etree.ElementTree as ET

import cv2
import numpy as np

__all__ = ["tile_starts", "boxes_in_tile", "parse_voc_boxes", "tile_region", "write_coco_split"]


def tile_starts(length, tile):
    """Start offsets of ceil(length / tile) tiles evenly spread over [0, length), the last one ending at length.

    Neighbouring tiles overlap a little instead of leaving a short tile at the end; length <= tile gives [0].
    """
    if length <= tile:
        return [0]
    n = math.ceil(length / tile)
    return [int(round(i * (length - tile) / (n - 1))) for i in range(n)]


def boxes_in_tile(boxes, x0, y0, tile_w, tile_h, min_visible=0.6, min_size=2.0):
    """Boxes (N, 4) x1y1x2y2 that keep at least `min_visible` of their area inside the tile, clipped to it and
    shifted to tile coordinates; boxes thinner than min_size pixels after clipping are left out. Returns (M, 4)."""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    clipped = boxes.copy()
    clipped[:, 0::2] = np.clip(boxes[:, 0::2] - x0, 0, tile_w)
    clipped[:, 1::2] = np.clip(boxes[:, 1::2] - y0, 0, tile_h)
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    w = clipped[:, 2] - clipped[:, 0]
    h = clipped[:, 3] - clipped[:, 1]
    keep = (area > 0) & (w * h >= min_visible * area) & (w >= min_size) & (h >= min_size)
    return clipped[keep]


def parse_voc_boxes(xml_text):
    """(boxes (N, 4) float x1y1x2y2 in pixel-edge coordinates, class names, (width, height)) of a VOC XML string."""
    root = ET.fromstring(xml_text)
    size = root.find("size")
    width, height = int(size.findtext("width")), int(size.findtext("height"))
    boxes, names = [], []
    for obj in root.iter("object"):
        bb = obj.find("bndbox")
        boxes.append([float(bb.findtext(k)) for k in ("xmin", "ymin", "xmax", "ymax")])
        names.append(obj.findtext("name").strip())
    return np.array(boxes, dtype=np.float64).reshape(-1, 4), names, (width, height)


def tile_region(image, boxes, region, tile=400, min_visible=0.6):
    """Tiles of `image` inside region (x0, y0, x1, y1): [(x, y, tile image (tile, tile, 3), boxes (M, 4))].

    The region must be at least one tile wide and high; boxes are in image pixels.
    """
    rx0, ry0, rx1, ry1 = region
    if rx1 - rx0 < tile or ry1 - ry0 < tile:
        raise ValueError(f"region {region} is smaller than one {tile}x{tile} tile")
    out = []
    for ty in tile_starts(ry1 - ry0, tile):
        for tx in tile_starts(rx1 - rx0, tile):
            x, y = rx0 + tx, ry0 + ty
            crop = image[y : y + tile, x : x + tile]
            out.append((x, y, crop, boxes_in_tile(boxes, x, y, tile, tile, min_visible)))
    return out


def write_coco_split(out_dir, split, tiles, category, jpeg_quality=90, info=None):
    """Write tiles [(file_name, image, boxes (M, 4))] as <out_dir>/<split>/*.jpg and <out_dir>/annotations/<split>.json.

    One category {"id": 1, "name": category}; returns (number of images, number of boxes).
    """
    img_dir = os.path.join(out_dir, split)
    os.makedirs(img_dir, exist_ok=True)
    os.makedirs(os.path.join(out_dir, "annotations"), exist_ok=True)
    images, annotations = [], []
    for image_id, (file_name, image, boxes) in enumerate(tiles, start=1):
        ok, data = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, jpeg_quality])
        if not ok:
            raise RuntimeError(f"could not encode {file_name} as JPEG")
        with open(os.path.join(img_dir, file_name), "wb") as f:
            f.write(data.tobytes())
        images.append({"id": image_id, "file_name": file_name, "width": image.shape[1], "height": image.shape[0]})
        for x1, y1, x2, y2 in boxes.tolist():
            w, h = round(x2 - x1, 2), round(y2 - y1, 2)
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image_id,
                    "category_id": 1,
                    "bbox": [round(x1, 2), round(y1, 2), w, h],
                    "area": round(w * h, 2),
                    "iscrowd": 0,
                }
            )
    coco = {
        "info": info or {},
        "images": images,
        "annotations": annotations,
        "categories": [{"id": 1, "name": category, "supercategory": category}],
    }
    with open(os.path.join(out_dir, "annotations", f"{split}.json"), "w") as f:
        json.dump(coco, f, indent=1)
    return len(images), len(annotations)
