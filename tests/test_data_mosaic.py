"""Mosaic/MixUp and the transforms: the fast pipeline against the direct official algorithm, output validity."""
import math
import random

import cv2
import numpy as np
import pytest

from test_data_helpers import FOREST, make_coco
from tests.oracles.mosaic import DirectMosaicDetection
from tests.oracles.train_transform import DirectTrainTransform, _augment_hsv_int16
from yolox.data import COCODataset, MosaicDetection, TrainTransform, ValTransform
from yolox.data.data_augment import augment_hsv, get_affine_matrix, preproc

MOSAIC_KW = dict(degrees=10.0, translate=0.1, mosaic_scale=(0.1, 2), mixup_scale=(0.5, 1.5), shear=2.0,
                 enable_mixup=True, mosaic_prob=1.0, mixup_prob=1.0)


@pytest.fixture(scope="module")
def forest416():
    return COCODataset(str(FOREST), "train.json", "train", img_size=(416, 416), cache=True)


@pytest.fixture(scope="module")
def mixed_sizes(tmp_path_factory):
    """Images of several aspect ratios (letterboxing, 114 borders, MixUp padding all show up)."""
    root = tmp_path_factory.mktemp("mixed")
    make_coco(root, [(90, 160), (160, 90), (128, 128), (60, 200), (200, 120), (100, 100)], boxes_per_image=3)
    return COCODataset(str(root), img_size=(128, 128), cache=True)


def _compare(fast, direct, index, seed):
    random.seed(seed)
    np.random.seed(seed)
    a, la, _, _ = fast[(True, index)]
    random.seed(seed)
    np.random.seed(seed)
    b, lb, _, _ = direct[(True, index)]
    return a, la, b, lb


@pytest.fixture(scope="module")
def forest416_files():
    """No cache: the fast path warps the decoded files, folding the official resize in."""
    return COCODataset(str(FOREST), "train.json", "train", img_size=(416, 416), cache=False)


@pytest.fixture(scope="module")
def mixed_sizes_files(mixed_sizes):
    return COCODataset(mixed_sizes.data_dir, img_size=(128, 128), cache=False)


@pytest.mark.parametrize("case", ["forest", "forest_files", "mixed", "mixed_files", "mixed_rescaled"])
def test_fast_mosaic_equals_direct_official_algorithm(case, forest416, forest416_files, mixed_sizes,
                                                      mixed_sizes_files):
    """Same seed => same random parameters => same boxes and the same image up to interpolation."""
    ds = {"forest": forest416, "forest_files": forest416_files, "mixed_files": mixed_sizes_files}.get(case,
                                                                                                   mixed_sizes)
    size = (416, 416) if case.startswith("forest") else (128, 128)
    if case == "mixed_rescaled":  # the images were resized for 128; the mosaic is built at 160 (resize path)
        size = (160, 160)
    fast = MosaicDetection(ds, size, **MOSAIC_KW)
    direct = DirectMosaicDetection(ds, size, **MOSAIC_KW)
    if case == "mixed_rescaled":
        ds._input_dim = size
    blurred = []
    try:
        for seed in range(12):
            a, la, b, lb = _compare(fast, direct, seed % len(ds), seed)
            assert a.shape == b.shape == (size[0], size[1], 3) and a.dtype == np.uint8
            np.testing.assert_allclose(la, lb, rtol=0, atol=1e-9)
            diff = np.abs(a.astype(np.int16) - b.astype(np.int16))
            assert (diff > 40).mean() < 0.01, (seed, (diff > 40).mean())
            if not case.endswith("_files"):
                # interpolation: a single composed warp instead of resize + warp (or two resizes for MixUp)
                assert diff.mean() < 1.5, (seed, diff.mean())
            blur = [cv2.GaussianBlur(x, (0, 0), 1.0).astype(np.int16) for x in (a, b)]
            blurred.append(np.abs(blur[0] - blur[1]).mean())
    finally:
        if case == "mixed_rescaled":
            del ds._input_dim
    # From the files, the official interpolates twice (the resize to img_size, then the warp) and this path once:
    # its pixels are sharper, so they are compared after a blur that evens out sharpness but not geometry (a
    # half-pixel shift of the warps raises this mean above 2, a wrong MixUp scale above 6).
    assert np.mean(blurred) < 1.2 and max(blurred) < 2.0, np.round(blurred, 2)


def test_mixup_blend_is_the_exact_floor_average(mixed_sizes):
    """Without interpolation (no jitter, no affine) the fast MixUp reproduces the official float blend bit for bit."""
    kw = dict(MOSAIC_KW, degrees=0.0, translate=0.0, mosaic_scale=(1.0, 1.0), mixup_scale=(1.0, 1.0), shear=0.0)
    fast = MosaicDetection(mixed_sizes, (128, 128), **kw)
    direct = DirectMosaicDetection(mixed_sizes, (128, 128), **kw)
    for seed in range(6):
        a, la, b, lb = _compare(fast, direct, seed, seed)
        np.testing.assert_allclose(la, lb)
        assert (np.abs(a.astype(int) - b.astype(int)) <= 1).mean() > 0.97


def test_mixup_blend_floor_average_for_every_pair_of_bytes():
    """blend_mixup_into gives floor((a + b) / 2) for all 256 x 256 byte pairs, and halves the rows and columns
    outside the MixUp image's content (the official blends them with zero padding)."""
    from yolox.data.mosaic_warp import blend_mixup_into

    a = np.repeat(np.arange(256, dtype=np.uint8), 256).reshape(256, 256, 1).repeat(3, axis=2)  # (256, 256, 3)
    b = np.ascontiguousarray(a.transpose(1, 0, 2))  # every (a, b) pair once
    out = np.full((260, 263, 3), 201, dtype=np.uint8)
    out[:256, :256] = a
    identity = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])  # output pixel -> the same source pixel
    blend_mixup_into(out, b, identity, (256, 256))
    expected = (a.astype(np.int32) + b.astype(np.int32)) // 2
    np.testing.assert_array_equal(out[:256, :256], expected)
    assert (out[256:] == 100).all() and (out[:, 256:] == 100).all()


def test_mosaic_outputs_shapes_and_valid_boxes(forest416):
    ds = MosaicDetection(forest416, (416, 416), preproc=TrainTransform(max_labels=120), **MOSAIC_KW)
    random.seed(3)
    np.random.seed(3)
    for i in range(16):
        img, labels, img_info, img_id = ds[(True, i)]
        assert img.shape == (3, 416, 416) and img.dtype == np.float32
        assert 0 <= img.min() and img.max() <= 255
        assert labels.shape == (120, 5) and labels.dtype == np.float32
        real = labels[labels.sum(1) > 0]
        assert (real[:, 0] == 0).all()
        cx, cy, w, h = real[:, 1], real[:, 2], real[:, 3], real[:, 4]
        assert (w > 1).all() and (h > 1).all()
        eps = 1e-3
        assert (cx - w / 2 >= -eps).all() and (cx + w / 2 <= 416 + eps).all()
        assert (cy - h / 2 >= -eps).all() and (cy + h / 2 <= 416 + eps).all()
        assert img_info == (416, 416) and img_id.shape == (1,)


def test_close_mosaic_and_flag_off_give_plain_samples(forest416):
    ds = MosaicDetection(forest416, (416, 416), preproc=None, **MOSAIC_KW)
    plain, target = forest416.pull_item(5)[:2]
    img, labels, _, _ = ds[(False, 5)]
    assert np.array_equal(img, plain) and np.array_equal(labels, target)
    ds.close_mosaic()
    img, labels, _, _ = ds[(True, 5)]
    assert np.array_equal(img, plain) and np.array_equal(labels, target)


def test_affine_matrix_follows_official_draw_order():
    random.seed(11)
    M, scale = get_affine_matrix((640, 480), degrees=10.0, translate=0.1, scales=(0.5, 1.5), shear=2.0)
    random.seed(11)
    angle, s = random.uniform(-10, 10), random.uniform(0.5, 1.5)
    shx, shy = math.tan(random.uniform(-2, 2) * math.pi / 180), math.tan(random.uniform(-2, 2) * math.pi / 180)
    tx, ty = random.uniform(-0.1, 0.1) * 640, random.uniform(-0.1, 0.1) * 480
    R = cv2.getRotationMatrix2D((0, 0), angle, s)
    expected = np.array([R[0] + shy * R[1], R[1] + shx * R[0]])
    expected[:, 2] = (tx, ty)
    np.testing.assert_allclose(M, expected)
    assert scale == s


def test_hsv_lookup_table_equals_official_int16_arithmetic():
    base = np.random.default_rng(0).integers(0, 256, (64, 80, 3), dtype=np.uint8)
    for seed in range(64):  # every combination of kept and zeroed gains, and of their signs, shows up
        a, b = base.copy(), base.copy()
        np.random.seed(seed)
        augment_hsv(a)
        np.random.seed(seed)
        _augment_hsv_int16(b)
        assert np.array_equal(a, b)


def test_train_transform_equals_the_official_algorithm(forest416):
    """Mosaic images through TrainTransform and DirectTrainTransform (the official as written), same draws: the
    same float image, bit for bit, and the same labels; the caller's image is left as it was."""
    mosaic = MosaicDetection(forest416, (416, 416), preproc=None, **MOSAIC_KW)
    fast, direct = TrainTransform(max_labels=120), DirectTrainTransform(max_labels=120)
    for seed in range(8):
        random.seed(seed)
        np.random.seed(seed)
        img, labels = mosaic[(True, seed)][:2]
        img_before = img.copy()
        state = random.getstate(), np.random.get_state()
        a, la = fast(img, labels.copy(), (416, 416))
        assert np.array_equal(img, img_before)
        random.setstate(state[0])
        np.random.set_state(state[1])
        b, lb = direct(img.copy(), labels.copy(), (416, 416))
        assert a.dtype == b.dtype == np.float32 and a.flags.c_contiguous
        assert np.array_equal(a, b), seed
        np.testing.assert_allclose(la, lb, rtol=0, atol=1e-4)
        random.setstate(state[0])
        np.random.set_state(state[1])
        c, lc = TrainTransform(max_labels=120, image_dtype=np.uint8)(img, labels.copy(), (416, 416))
        assert c.dtype == np.uint8 and c.transpose(1, 2, 0).flags.c_contiguous  # (C, H, W) view of HWC memory
        assert np.array_equal(c, a) and np.array_equal(lc, la) and not np.may_share_memory(c, img)


def test_uint8_train_transform_never_returns_the_callers_memory():
    # no HSV, no flip, already the input size: the one case where the image would pass through untouched
    img = np.random.default_rng(1).integers(0, 256, (64, 96, 3), dtype=np.uint8)
    targets = np.array([[10, 20, 50, 60, 0]], dtype=np.float64)
    t = TrainTransform(max_labels=4, flip_prob=0.0, hsv_prob=0.0, image_dtype=np.uint8)
    for boxes in (targets, targets[:0], np.array([[1, 1, 1.5, 1.5, 0]])):  # kept, none, all degenerate
        out, _ = t(img, boxes.copy(), (64, 96))
        assert out.shape == (3, 64, 96) and np.array_equal(out, img.transpose(2, 0, 1))
        assert not np.may_share_memory(out, img) and out.transpose(1, 2, 0).flags.c_contiguous


def test_train_transform_boxes_flip_degenerate_and_padding():
    img = np.zeros((100, 200, 3), np.uint8)
    targets = np.array([[10, 20, 50, 60, 2], [0, 0, 0.5, 30, 1], [150, 10, 190, 90, 0]], dtype=np.float64)
    t = TrainTransform(max_labels=4, flip_prob=0.0, hsv_prob=0.0)
    out, labels = t(img, targets.copy(), (100, 100))  # r = 0.5
    assert out.shape == (3, 100, 100) and labels.shape == (4, 5)
    np.testing.assert_allclose(labels[:2], [[2, 15, 20, 20, 20], [0, 85, 25, 20, 40]])
    assert (labels[2:] == 0).all()  # the 0.25-pixel-wide box is dropped, the rest is padding
    assert (out[:, 50:, :] == 114).all()  # letterbox pad below the resized image

    flipped = TrainTransform(max_labels=4, flip_prob=1.0, hsv_prob=0.0)(img, targets.copy(), (100, 100))[1]
    np.testing.assert_allclose(flipped[:2, 1], [100 - 15, 100 - 85])

    only_degenerate = np.array([[0, 0, 0.5, 30, 1]])
    assert (t(img, only_degenerate, (100, 100))[1] == 0).all()
    empty_img, empty = t(img, np.zeros((0, 5)), (64, 64))
    assert empty_img.shape == (3, 64, 64) and (empty == 0).all()


def test_val_transform_plain_and_legacy():
    img = np.full((50, 100, 3), (10, 20, 30), np.uint8)
    out, _ = ValTransform()(img, None, (64, 64))
    assert out.dtype == np.float32 and out.shape == (3, 64, 64)
    assert out[:, 0, 0].tolist() == [10, 20, 30] and (out[:, 40:, :] == 114).all()  # BGR 0-255, no normalisation
    legacy, _ = ValTransform(legacy=True)(img, None, (64, 64))
    expected = (np.array([30, 20, 10]) / 255 - [0.485, 0.456, 0.406]) / [0.229, 0.224, 0.225]
    np.testing.assert_allclose(legacy[:, 0, 0], expected, rtol=1e-5)
    same, r = preproc(np.zeros((64, 64, 3), np.uint8), (64, 64))
    assert r == 1.0 and same.flags.c_contiguous


class _CountingReads:
    """Counts forest416_files.load_image calls by reduction while active."""

    def __init__(self, dataset):
        self.dataset, self.calls = dataset, []

    def __enter__(self):
        original = type(self.dataset).load_image

        def counted(ds, index, reduction=1):
            self.calls.append(reduction)
            return original(ds, index, reduction)

        self.dataset.load_image = counted.__get__(self.dataset)
        return self

    def __exit__(self, *exc):
        del self.dataset.load_image


def _samples(ds, seeds, index_of=lambda seed: seed):
    out = []
    for seed in seeds:
        random.seed(seed)
        np.random.seed(seed)
        out.append(ds[(True, index_of(seed))][:2])
    return out


def test_mosaic_reads_only_the_tiles_it_shows(forest416_files, monkeypatch):
    """Tiles outside the output are never decoded; the rest is decoded once, reduced where the warp shrinks it by 2x
    or more; the samples are those of the path that decodes every image in full (same boxes, same pixels but
    where a reduced decode was used)."""
    kw = dict(MOSAIC_KW)
    lazy = MosaicDetection(forest416_files, (416, 416), **kw)
    n = 24
    with _CountingReads(forest416_files) as reads:
        got = _samples(lazy, range(n), lambda s: s % len(forest416_files))
    # without lazy_pull: the eager path (every tile and the MixUp image decoded whole, as before)
    monkeypatch.setattr(forest416_files, "lazy_pull", lambda index: None)
    eager = MosaicDetection(forest416_files, (416, 416), **kw)
    with _CountingReads(forest416_files) as eager_reads:
        want = _samples(eager, range(n), lambda s: s % len(forest416_files))
    assert len(eager_reads.calls) == 5 * n and set(eager_reads.calls) == {1}
    assert len(reads.calls) < 0.9 * 5 * n, len(reads.calls)  # ~1.5 of the 4 tiles do not show at these settings
    assert reads.calls.count(2) + reads.calls.count(4) > 0  # mosaic_scale down to 0.1: some tiles shrink 2x+
    for (a, la), (b, lb) in zip(got, want):
        np.testing.assert_array_equal(la, lb)
        diff = np.abs(a.astype(np.int16) - b.astype(np.int16))
        # A reduced decode is averaged by libjpeg where the whole-image warp samples 1 pixel of every 2-4: the
        # textures of strongly shrunk tiles differ pixel by pixel (mean up to ~3.6 on a mosaic at scale 0.1-0.2)
        # but not once blurred (0.9 there; 1.8 with a one-pixel shift), and no pixel of a tile is misplaced.
        blur = [cv2.GaussianBlur(x, (0, 0), 1.0).astype(np.int16) for x in (a, b)]
        assert np.abs(blur[0] - blur[1]).mean() < 1.2 and (diff > 40).mean() < 0.005
    # with full decodes only, the lazy path draws exactly the eager path's pixels
    monkeypatch.undo()
    monkeypatch.setattr("yolox.data.datasets.datasets_wrapper.decode_reduction_limit", lambda *a: 1)  # no reduction
    assert all(np.array_equal(a, b) and np.array_equal(la, lb)
               for (a, la), (b, lb) in zip(_samples(lazy, range(8), lambda s: s % len(forest416_files)), want[:8]))


def test_an_image_drawn_twice_in_a_sample_is_decoded_once(tmp_path, monkeypatch):
    """Two images, so every sample draws one of them at least twice among its 4 tiles and the MixUp image: at
    most one decode per image (PNG files: never reduced), and the very samples of decoding each draw anew."""
    make_coco(tmp_path, [(64, 64), (64, 64)], boxes_per_image=3)
    ds = COCODataset(str(tmp_path), img_size=(64, 64), cache=False)
    mosaic = MosaicDetection(ds, (64, 64), preproc=None, **MOSAIC_KW)
    per_sample, got = [], []
    with _CountingReads(ds) as reads:
        for seed in range(12):
            before = len(reads.calls)
            got += _samples(mosaic, [seed], lambda s: s % 2)
            per_sample.append(len(reads.calls) - before)
    assert 0 < max(per_sample) <= 2 and sum(per_sample) < 12 * 4
    monkeypatch.setattr("yolox.data.datasets.mosaicdetection._read_once", lambda source, index, reads: source)
    with _CountingReads(ds) as reads:
        want = _samples(mosaic, range(12), lambda s: s % 2)
    assert len(reads.calls) > sum(per_sample)  # without the memo the repeats are decoded again
    for (a, la), (b, lb) in zip(got, want):
        np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(la, lb)


def test_reduced_decode_and_its_limits(forest416_files, tmp_path):
    from yolox.data.datasets.datasets_wrapper import decode_reduction_limit, read_image_file

    path = forest416_files.image_path(0)
    hw = forest416_files.img_info(0)  # 400 x 400
    assert decode_reduction_limit(path, hw) == 8 and decode_reduction_limit("x.png", hw) == 1
    assert decode_reduction_limit("x.JPG", (300, 400)) == 4 and decode_reduction_limit("x.jpg", (301, 400)) == 1
    full = read_image_file(path, hw, "test", "")
    half = read_image_file(path, hw, "test", "", reduction=2)
    assert half.shape == (200, 200, 3)
    area = cv2.resize(full, (200, 200), interpolation=cv2.INTER_AREA)
    assert np.abs(half.astype(int) - area).mean() < 3.0  # libjpeg's scaled IDCT is close to an area average
    # a PNG named .jpg: OpenCV cannot scale it while decoding and resizes it; the shape still says 1/2
    fake = tmp_path / "fake.jpg"
    cv2.imencode(".png", full)[1].tofile(str(fake))
    assert read_image_file(str(fake), hw, "test", "", reduction=2).shape == (200, 200, 3)


def test_lazy_pull_defers_to_the_eager_path_when_it_must(tmp_path):
    """on_corrupt_image='skip' without a cache must decode to know which image a tile is: lazy_pull says None."""
    make_coco(tmp_path, [(64, 64)] * 3)
    ds = COCODataset(str(tmp_path), img_size=(64, 64), cache=False, on_corrupt_image="skip")
    assert ds.lazy_pull(0) is None
    ds = COCODataset(str(tmp_path), img_size=(64, 64), cache=False)
    source, labels, resized_hw, src_hw, _ = ds.lazy_pull(1)
    assert src_hw == (64, 64) and resized_hw == (64, 64) and source.max_reduction == 1  # PNG files
    np.testing.assert_array_equal(source(), ds.load_image(1))
    np.testing.assert_array_equal(labels, ds.load_anno(1))

    class OwnLoader(COCODataset):  # a user's subclass whose load_image takes no reduction: never asked for one
        def load_image(self, index):
            return super().load_image(index)

    ds = OwnLoader(str(tmp_path), img_size=(64, 64), cache=False)
    ds.image_path = lambda index: "x.jpg"  # a JPEG name: 64 x 64 would allow reduction 8
    assert ds.lazy_pull(0)[0].max_reduction == 1


def _box_statistics(padded_labels):
    """Per-sample box counts and the pooled (w, h, cx, cy) of the boxes TrainTransform kept (min side > 1 pixel:
    the rows of zeros are padding, and the official fallback's degenerate boxes do not count as boxes)."""
    counts, boxes = [], []
    for labels in padded_labels:
        kept = labels[np.minimum(labels[:, 3], labels[:, 4]) > 1]
        counts.append(len(kept))
        boxes.append(kept[:, [3, 4, 1, 2]])  # w, h, cx, cy
    return counts, np.concatenate(boxes).astype(np.float64)


def test_fast_pipeline_has_the_box_distribution_of_the_official_algorithm():
    """The benchmarked configuration (bench_data: yolox_s settings at 640, JPEG files decoded per sample, tiles
    skipped or decoded reduced, TrainTransform in uint8) against the direct official algorithm (Mosaic on a 2x
    canvas, MixUp and TrainTransform in float32, every image decoded whole), the same seed per sample: the same
    number of boxes in every sample, and the same quantiles of box width, height and centre."""
    from benchmarks.data_pipeline import default_train_transform, make_mosaic, recorded_reads

    files = COCODataset(str(FOREST), "train.json", "train", img_size=(640, 640), cache=False)
    fast, direct = (make_mosaic(files, impl, (640, 640), default_train_transform(impl)) for impl in ("fast", "direct"))
    n = 96
    seeds = range(1000, 1000 + n)
    index_of = lambda seed: seed % len(files)  # noqa: E731
    fast_counts, fast_boxes = _box_statistics(lab for _, lab in _samples(fast, seeds, index_of))
    direct_counts, direct_boxes = _box_statistics(lab for _, lab in _samples(direct, seeds, index_of))

    assert fast_counts == direct_counts and sum(fast_counts) > 20 * n, (sum(fast_counts), sum(direct_counts))
    q = [0.05, 0.25, 0.5, 0.75, 0.95]
    for name, col in zip(("width", "height", "centre x", "centre y"), range(4)):
        np.testing.assert_allclose(np.quantile(fast_boxes[:, col], q), np.quantile(direct_boxes[:, col], q),
                                   rtol=0, atol=1e-3, err_msg=name)
    # and the samples took the fast path's shortcuts: tiles left unread, some decoded reduced
    reads = recorded_reads(make_mosaic(files, "fast", (640, 640)), files, 48)
    assert len(reads) < 0.8 * 5 * 48 and any(reduction > 1 for _, reduction in reads)
