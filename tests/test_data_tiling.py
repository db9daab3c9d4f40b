"""Tiling of large annotated images into a COCO-format set (the bundled forest dataset's builder)."""
import numpy as np
import pytest

from test_data_helpers import smooth_image
from yolox.data import COCODataset
from yolox.data.tiling import boxes_in_tile, parse_voc_boxes, tile_region, tile_starts, write_coco_split


@pytest.mark.parametrize("length", [400, 401, 799, 1035, 1249, 2299, 2472])
def test_tile_starts_cover_the_length(length):
    starts = tile_starts(length, 400)
    assert starts[0] == 0 and starts[-1] == max(length - 400, 0)
    assert len(starts) == -(-length // 400)
    assert all(b - a <= 400 for a, b in zip(starts, starts[1:]))  # no gap between neighbours
    assert tile_starts(300, 400) == [0]


def test_boxes_in_tile_keeps_mostly_inside_and_clips():
    boxes = np.array([
        [110, 110, 150, 150],  # inside
        [90, 120, 130, 140],   # 75% inside: kept, clipped at x = 100
        [60, 120, 110, 140],   # 20% inside: dropped
        [300, 300, 320, 320],  # outside
        [199, 150, 230, 160],  # 1 pixel wide inside: dropped
    ])
    out = boxes_in_tile(boxes, 100, 100, 100, 100, min_visible=0.6)
    np.testing.assert_allclose(out, [[10, 10, 50, 50], [0, 20, 30, 40]])


def test_parse_voc_and_tile_region_round_trip(tmp_path):
    xml = ("<annotation><size><width>800</width><height>400</height></size>"
           "<object><name>Tree</name><bndbox><xmin>10</xmin><ymin>20</ymin><xmax>50</xmax><ymax>60</ymax></bndbox>"
           "</object><object><name>Dead</name><bndbox><xmin>700</xmin><ymin>300</ymin><xmax>760</xmax>"
           "<ymax>390</ymax></bndbox></object></annotation>")
    boxes, names, (w, h) = parse_voc_boxes(xml)
    assert names == ["Tree", "Dead"] and (w, h) == (800, 400) and boxes.shape == (2, 4)
    image = smooth_image(400, 800, seed=0)
    tiles = tile_region(image, boxes, (0, 0, 800, 400), tile=400)
    assert [(x, y) for x, y, _, _ in tiles] == [(0, 0), (400, 0)]
    assert tiles[0][3].tolist() == [[10, 20, 50, 60]] and tiles[1][3].tolist() == [[300, 300, 360, 390]]
    n_img, n_box = write_coco_split(str(tmp_path), "train", [(f"t{i}.jpg", t[2], t[3]) for i, t in enumerate(tiles)],
                                    "tree")
    assert (n_img, n_box) == (2, 2)
    ds = COCODataset(str(tmp_path), "train.json", "train", img_size=(400, 400))
    assert ds._classes == ("tree",) and len(ds) == 2
    np.testing.assert_allclose(ds.load_anno(1), [[300, 300, 360, 390, 0]])
    assert np.abs(ds.pull_item(0)[0].astype(int) - image[:, :400]).mean() < 3  # JPEG, quality 90
    with pytest.raises(ValueError, match="smaller than one 400x400 tile"):
        tile_region(image, boxes, (0, 0, 300, 400), tile=400)
