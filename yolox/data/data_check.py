"""The statistics and problems of a dataset's splits (images, boxes, classes, box sizes, changed boxes, missing,
unreadable, truncated, resized or duplicate image files) as a structured report, its tables, and its pictures.

`check_exp_data(exp)` reads the splits as training does; tools/check_data.py prints the report and the Trainer logs it
before the first iteration (yolox.core.data_report).
"""
import copy
import hashlib
import io
import itertools
import os
from dataclasses import dataclass, field

import numpy as np
from loguru import logger

from yolox.utils.data_pictures import draw_box_grid, letterbox_tile, plot_label_statistics, write_image_atomic

from .datasets.datasets_wrapper import CorruptImageError, jpeg_is_truncated
from .samplers import InfiniteSampler

__all__ = ["SplitReport", "DataReport", "check_split", "check_datasets", "check_exp_data", "format_report",
           "log_report", "raise_if_fatal", "sample_train_batches", "write_data_pictures", "QUANTILES",
           "PICTURE_IMAGES", "DATA_CHECK_DIR"]

QUANTILES = (5, 50, 95)  # percent
PICTURE_IMAGES = 16  # images per batch picture, as the first 16 of a larger batch
TRAIN_BATCH_PICTURES = 3
DATA_CHECK_DIR = "data_check"  # folder of the pictures in a run folder
_MAX_NAMED = 5  # files named per problem in a warning line
_EXIF_ORIENTATION = 0x0112
_EXIF_TRANSPOSED = (5, 6, 7, 8)  # orientations that swap width and height (cv2.imread applies them)


@dataclass
class SplitReport:
    """What `check_split` found in one split. Lists of files are absolute paths in index order; `*_quantiles` are
    box widths / heights in pixels at img_size for QUANTILES; `box_changes` maps a reason (clipped, dropped) to the
    annotation ids the dataset changed for it. File fields are None when files were not scanned."""

    split: str
    source: str
    img_size: tuple
    images: int
    background_images: int
    boxes: int
    class_names: tuple
    category_ids: tuple
    boxes_per_class: np.ndarray
    images_per_class: np.ndarray
    width_quantiles: np.ndarray
    height_quantiles: np.ndarray
    box_changes: dict
    unknown_class_files: list
    stops_on_bad_image: bool
    missing: list = None
    unreadable: list = None
    truncated: list = None
    size_mismatch: list = None
    duplicates: list = None
    file_paths: list = field(default=None, repr=False)
    file_digests: list = field(default=None, repr=False)

    @property
    def files_scanned(self):
        return self.missing is not None

    @property
    def bad_images(self):
        """Messages for the images a data loader cannot use: missing, undecodable, or not their annotated size."""
        if not self.files_scanned:
            return []
        return ([f"image file not found: {p}" for p in self.missing]
                + [f"cannot read image {p}: {why}" for p, why in self.unreadable]
                + [f"image {p} is {fw}x{fh} but {self.source} says {aw}x{ah}"
                   + (" (after its EXIF orientation, which OpenCV applies)" if rotated else "")
                   + "; fix 'width'/'height' there or replace the file"
                   for p, (fh, fw), (ah, aw), rotated in self.size_mismatch])

    def notes(self):
        """Informative lines: how category ids map to class indices when they are not 1..K."""
        k = len(self.class_names)
        ids = list(self.category_ids or ())
        if ids and ids != list(range(1, k + 1)):
            shown = ", ".join(str(i) for i in ids[:_MAX_NAMED]) + (", ..." if k > _MAX_NAMED else "")
            return [f"{self.split}: category ids {shown} are class indices 0..{k - 1} in sorted order "
                    "(any ids work, 0-based ones too)"]
        return []

    def warnings(self):
        """One line per kind of problem that training survives."""
        out = []
        for reason, ids in self.box_changes.items():
            if ids:
                out.append(f"{self.split}: {len(ids)} box(es) {reason} in {self.source} (annotation ids "
                           f"{_first(ids)})" + (": boxes reaching past their image are clipped to it"
                                                if reason == "clipped" else
                                                ": boxes of no width, height or area are left out"
                                                if reason == "dropped" else ""))
        if not self.files_scanned:
            return out
        if self.truncated:
            out.append(f"{self.split}: {len(self.truncated)} truncated JPEG(s), which decode grey below the cut: "
                       f"{_first(self.truncated)}; replace them with complete copies")
        for group in self.duplicates:
            out.append(f"{self.split}: identical image files (same bytes, counted {len(group)} times): "
                       f"{_first(group)}; keep one")
        if not self.stops_on_bad_image:
            out.extend(f"{self.split}: {m} (skipped in training: on_corrupt_image='skip')" for m in self.bad_images)
        return out

    def fatal(self):
        """(error class, message) of each problem that stops training or evaluation."""
        out = []
        if self.unknown_class_files:
            out.append((ValueError, f"{self.split}: {len(self.unknown_class_files)} image(s) have labels of a class "
                                    f"outside the {len(self.class_names)} names {list(self.class_names)[:_MAX_NAMED]}: "
                                    f"{_first(self.unknown_class_files)}; fix those labels or the names"))
        if self.stops_on_bad_image:
            why = ("training stops at it (on_corrupt_image='raise'; 'skip' would skip it)" if self.split == "train"
                   else "evaluation stops at it")
            out.extend((CorruptImageError, f"{self.split}: {m}; {why}") for m in self.bad_images)
        return out


@dataclass
class DataReport:
    """The SplitReports by split name, the images found in two splits, and the datasets they came from."""

    splits: dict
    cross_duplicates: list = field(default_factory=list)
    datasets: dict = field(default_factory=dict, repr=False)

    def notes(self):
        return [n for r in self.splits.values() for n in r.notes()]

    def warnings(self):
        out = [w for r in self.splits.values() for w in r.warnings()]
        for (split_a, path_a), (split_b, path_b) in self.cross_duplicates[:_MAX_NAMED]:
            out.append(f"{split_b} image {path_b} has the same bytes as {split_a} image {path_a}: its AP counts an "
                       "image the model trained on")
        if len(self.cross_duplicates) > _MAX_NAMED:
            out.append(f"... {len(self.cross_duplicates)} images are in two splits in all")
        return out

    def fatal(self):
        return [f for r in self.splits.values() for f in r.fatal()]


def _first(items):
    """The first few items as text, with the count of the rest."""
    items = [str(i) for i in items]
    return ", ".join(items[:_MAX_NAMED]) + (f" (and {len(items) - _MAX_NAMED} more)" if len(items) > _MAX_NAMED else "")


# ---------------------------------------------------------------------------------------------- statistics
def _label_statistics(dataset):
    """Counts and quantiles of the flat label arrays (no loop over boxes)."""
    labels = np.asarray(dataset._labels, dtype=np.float64).reshape(-1, 5)  # (M, 5) x1y1x2y2 at img_size, class
    offsets = np.asarray(dataset._label_offsets)  # (N + 1,)
    n, k = len(offsets) - 1, len(dataset.class_names)
    per_image = np.diff(offsets)  # (N,) boxes of each image
    cls = labels[:, 4]  # (M,)
    known = (cls >= 0) & (cls < k) & (cls == np.round(cls))  # (M,)
    cls_known = cls[known].astype(np.int64)
    image_of_box = np.repeat(np.arange(n), per_image)  # (M,)
    pairs = np.unique(image_of_box[known] * k + cls_known)  # distinct (image, class)
    wh = labels[:, 2:4] - labels[:, 0:2]  # (M, 2)
    quantiles = np.percentile(wh, QUANTILES, axis=0) if len(wh) else np.full((len(QUANTILES), 2), np.nan)  # (Q, 2)
    return {
        "images": int(n),
        "background_images": int(np.count_nonzero(per_image == 0)),
        "boxes": int(len(labels)),
        "boxes_per_class": np.bincount(cls_known, minlength=k),
        "images_per_class": np.bincount(pairs % k, minlength=k) if k else np.zeros(0, np.int64),
        "width_quantiles": quantiles[:, 0],
        "height_quantiles": quantiles[:, 1],
        "unknown_class_images": np.unique(image_of_box[~known]),
    }


def _image_paths(dataset):
    paths = dataset._image_paths() if hasattr(dataset, "_image_paths") else None
    return [str(p) for p in (paths if paths is not None else (dataset.image_path(i) for i in range(len(dataset))))]


# ---------------------------------------------------------------------------------------------- files
def _header_hw(data, path):
    """(h, w) of an image file's bytes as OpenCV decodes it (EXIF orientation applied), and whether EXIF turned it;
    OSError when it is not an image."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as im:
            w, h = im.size
            rotated = im.getexif().get(_EXIF_ORIENTATION, 1) in _EXIF_TRANSPOSED
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError):
        return _decoded_hw(data, path), False  # a format PIL does not know may still be one OpenCV reads
    return ((w, h) if rotated else (h, w)), rotated


def _decoded_hw(data, path):
    import cv2

    img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if img is None:
        raise OSError("not an image file OpenCV or PIL can read")
    return img.shape[:2]


def _scan_files(paths, annotated_hw):
    """Read every file once: its digest, size as decoded, truncation; returns the file fields of SplitReport."""
    n = len(paths)
    file_hw = np.zeros((n, 2), dtype=np.int64)  # (N, 2); 0 where unreadable
    rotated = np.zeros(n, dtype=bool)
    digests = [None] * n
    missing, unreadable, truncated = [], [], []
    for i, path in enumerate(paths):
        try:
            with open(path, "rb") as f:
                data = f.read()
        except FileNotFoundError:
            missing.append(path)
            continue
        except OSError as e:
            unreadable.append((path, e.strerror or str(e)))
            continue
        digests[i] = hashlib.blake2b(data, digest_size=16).hexdigest()
        try:
            file_hw[i], rotated[i] = _header_hw(data, path)
        except OSError as e:
            unreadable.append((path, str(e)))
            continue
        if jpeg_is_truncated(path):
            truncated.append(path)
    wrong = (file_hw > 0).all(1) & (file_hw != annotated_hw).any(1)  # (N,)
    size_mismatch = [(paths[i], tuple(file_hw[i].tolist()), tuple(int(v) for v in annotated_hw[i]), bool(rotated[i]))
                     for i in np.flatnonzero(wrong)]
    return {"missing": missing, "unreadable": unreadable, "truncated": truncated, "size_mismatch": size_mismatch,
            "duplicates": _duplicate_groups(paths, digests), "file_digests": digests}


def _duplicate_groups(paths, digests):
    """Groups (lists of paths) of files with the same digest."""
    known = [i for i, d in enumerate(digests) if d is not None]
    if not known:
        return []
    _, inverse, counts = np.unique(np.array([digests[i] for i in known]), return_inverse=True, return_counts=True)
    order = np.argsort(inverse, kind="stable")  # files grouped by digest, in index order within a group
    groups = np.split(np.array(known)[order], np.cumsum(counts)[:-1])
    return [[paths[i] for i in g] for g in groups if len(g) > 1]


# ---------------------------------------------------------------------------------------------- reports
def check_split(dataset, split, scan_files=True):
    """The SplitReport of a COCO-style dataset (COCODataset or a subclass): label statistics always; with scan_files,
    every image file is read once (hashed, its header size checked, a JPEG's end checked)."""
    stats = _label_statistics(dataset)
    paths = _image_paths(dataset)
    class_ids = getattr(dataset, "class_ids", None)
    report = SplitReport(
        split=split,
        source=str(getattr(dataset, "ann_path", None) or getattr(dataset, "data_dir", "")),
        img_size=tuple(int(v) for v in dataset.img_size),
        images=stats["images"],
        background_images=stats["background_images"],
        boxes=stats["boxes"],
        class_names=tuple(dataset.class_names),
        category_ids=tuple(int(i) for i in class_ids) if class_ids is not None else None,
        boxes_per_class=stats["boxes_per_class"],
        images_per_class=stats["images_per_class"],
        width_quantiles=stats["width_quantiles"],
        height_quantiles=stats["height_quantiles"],
        box_changes={k: list(v) for k, v in (getattr(dataset, "box_report", None) or {}).items()},
        unknown_class_files=[paths[i] for i in stats["unknown_class_images"]],
        # evaluation always raises on a bad image; training as on_corrupt_image says
        stops_on_bad_image=split != "train" or getattr(dataset, "on_corrupt_image", "raise") == "raise",
        file_paths=paths,
    )
    if scan_files:
        for key, value in _scan_files(paths, np.asarray(dataset._img_hw)).items():
            setattr(report, key, value)
    return report


def _cross_duplicates(reports):
    """((split, path), (split, path)) of files with the same bytes in two splits (the first split's file first)."""
    seen, out = {}, []
    for split, report in reports.items():
        if report.file_digests is None:
            continue
        for path, digest in zip(report.file_paths, report.file_digests):
            if digest is None:
                continue
            first = seen.setdefault(digest, (split, path))
            if first[0] != split:
                out.append((first, (split, path)))
    return out


def check_datasets(datasets, scan_files=True):
    """The DataReport of {split: dataset}: each split's SplitReport and the files found in two splits."""
    reports = {}
    for split, dataset in datasets.items():
        reports[split] = check_split(dataset, split, scan_files=scan_files)
    return DataReport(splits=reports, cross_duplicates=_cross_duplicates(reports), datasets=dict(datasets))


def check_exp_data(exp, scan_files=True):
    """The DataReport of an Exp's train split (at input_size) and val split (at test_size), read as training reads
    them; the datasets' own errors (a missing file, a broken annotation) are raised as they are."""
    train = exp.get_split_dataset("train", tuple(exp.input_size), on_corrupt_image=exp.on_corrupt_image)
    val = exp.get_split_dataset("val", tuple(exp.test_size))
    return check_datasets({"train": train, "val": val}, scan_files=scan_files)


def raise_if_fatal(report):
    """Raise the first problem that stops training (ValueError or CorruptImageError), noting how many there are."""
    fatal = report.fatal()
    if fatal:
        error, message = fatal[0]
        more = f" ({len(fatal) - 1} more such problem(s) in the log above)" if len(fatal) > 1 else ""
        raise error(message + more)


# ---------------------------------------------------------------------------------------------- text
def _quantile_text(values):
    return " / ".join("-" if np.isnan(v) else f"{v:.0f}" for v in values)


def format_report(report):
    """The report as tables (tabulate): counts per split, boxes and images per class, box sizes."""
    from tabulate import tabulate

    splits = list(report.splits.values())

    def files(r, items):
        return len(items) if r.files_scanned else "not checked"

    rows = [
        ["size (h, w)"] + [f"{r.img_size[0]}x{r.img_size[1]}" for r in splits],
        ["images"] + [r.images for r in splits],
        ["background images (no boxes)"] + [r.background_images for r in splits],
        ["boxes"] + [r.boxes for r in splits],
    ]
    reasons = sorted({k for r in splits for k in r.box_changes})
    rows += [[f"boxes {reason}"] + [len(r.box_changes.get(reason, [])) for r in splits] for reason in reasons]
    rows += [
        ["labels of a class outside the names (images)"] + [len(r.unknown_class_files) for r in splits],
        ["missing image files"] + [files(r, r.missing) for r in splits],
        ["unreadable image files"] + [files(r, r.unreadable) for r in splits],
        ["truncated JPEGs"] + [files(r, r.truncated) for r in splits],
        ["size differs from the annotation"] + [files(r, r.size_mismatch) for r in splits],
        ["duplicate images (extra copies)"] + [
            sum(len(g) - 1 for g in r.duplicates) if r.files_scanned else "not checked" for r in splits],
    ]
    counts = tabulate(rows, headers=["split"] + [r.split for r in splits], tablefmt="simple")

    names = max((r.class_names for r in splits), key=len)
    ids = splits[0].category_ids
    class_rows = []
    for k, name in enumerate(names):
        row = [k] + ([ids[k]] if ids is not None and k < len(ids) else []) + [name]
        for r in splits:
            row += [int(r.boxes_per_class[k]) if k < len(r.boxes_per_class) else 0,
                    int(r.images_per_class[k]) if k < len(r.images_per_class) else 0]
        class_rows.append(row)
    class_headers = ["class"] + (["category id"] if ids is not None else []) + ["name"]
    class_headers += [f"{r.split} {what}" for r in splits for what in ("boxes", "images")]
    classes = tabulate(class_rows, headers=class_headers, tablefmt="simple")

    q = "/".join(f"{p}%" for p in QUANTILES)
    size_rows = [[r.split, f"{r.img_size[0]}x{r.img_size[1]}", _quantile_text(r.width_quantiles),
                  _quantile_text(r.height_quantiles)] for r in splits]
    sizes = tabulate(size_rows, headers=["split", "at size", f"box width {q}", f"box height {q}"], tablefmt="simple")
    sources = "\n".join(f"{r.split}: {r.source}" for r in splits)
    return f"{sources}\n\n{counts}\n\n{classes}\n\n{sizes}"


def log_report(report, out_dir=None, fatal_level="ERROR"):
    """The tables at info, the notes at info, each problem line at warning, the fatal ones at `fatal_level` (the
    trainer logs them as warnings and raises the first: one error line)."""
    logger.info("data check{}:\n{}".format(f" (pictures in {out_dir})" if out_dir else "", format_report(report)))
    for line in report.notes():
        logger.info(line)
    for line in report.warnings():
        logger.warning(line)
    for _, line in report.fatal():
        logger.log(fatal_level, line)


# ---------------------------------------------------------------------------------------------- pictures
def _sample_picture(item):
    """(image (H, W, 3) uint8, boxes (n, 4) x1y1x2y2, classes (n,)) of a training sample (CHW image, padded
    class-cx-cy-w-h targets)."""
    img, target = item[0], np.asarray(item[1], dtype=np.float64).reshape(-1, 5)  # (L, 5)
    img = np.asarray(img)
    hwc = np.ascontiguousarray(img.transpose(1, 2, 0) if img.ndim == 3 and img.shape[0] == 3 else img)
    if hwc.dtype != np.uint8:
        hwc = np.clip(hwc, 0, 255).astype(np.uint8)
    target = target[(target[:, 3] > 0) & (target[:, 4] > 0)]  # (n, 5): rows of zeros are padding
    half = target[:, 3:5] / 2  # (n, 2)
    boxes = np.concatenate([target[:, 1:3] - half, target[:, 1:3] + half], axis=1)  # (n, 4)
    return hwc, boxes, target[:, 0]


def sample_train_batches(train_dataset, batch_size, batches=TRAIN_BATCH_PICTURES, seed=0, mosaic=True,
                         images=PICTURE_IMAGES):
    """The first `images` samples of each of the first `batches` batches of a run whose data seed is `seed`, as
    [(images, boxes, classes)] lists of _sample_picture tuples. train_dataset is the loader's dataset
    (MosaicDetection): a shallow copy of it makes the samples, so the loader's state is not touched, and each sample
    is seeded by its own seed (the global `random` and numpy states are put back after each)."""
    own = copy.copy(train_dataset)
    stream = InfiniteSampler(len(own), seed=seed).iter_with_seeds()
    out = []
    for _ in range(batches):
        batch = list(itertools.islice(stream, batch_size))[:images]
        out.append([_sample_picture(own[(mosaic, idx, s)]) for idx, s in batch])
    return out


def _val_pictures(dataset, images=PICTURE_IMAGES):
    """The first readable val images letterboxed into img_size tiles, with their ground-truth boxes."""
    out = []
    for i in range(len(dataset)):
        if len(out) == images:
            break
        try:
            img, labels, _, _ = dataset.pull_item(i)
        except CorruptImageError:
            continue  # reported by the check already
        out.append((letterbox_tile(img, dataset.img_size), labels[:, :4], labels[:, 4]))
    return out


def _write_grid(path, pictures, class_names):
    images, boxes, classes = zip(*pictures)
    return write_image_atomic(path, draw_box_grid(list(images), boxes, classes, class_names))


def write_data_pictures(out_dir, train_source, val_dataset, class_names, batch_size, seed=0, mosaic=True,
                        train_labels=None, img_size=None):
    """train_batch0..2.jpg (train_source: the loader's dataset), val_batch0.jpg and labels.png (train_labels (M, 5)
    at img_size) in out_dir; returns the paths written. An unreadable image leaves its picture out with a warning;
    MatplotlibMissing (labels.png, written last) is raised."""
    os.makedirs(out_dir, exist_ok=True)
    written = []
    try:
        for b, pictures in enumerate(sample_train_batches(train_source, batch_size, seed=seed, mosaic=mosaic)):
            written.append(_write_grid(os.path.join(out_dir, f"train_batch{b}.jpg"), pictures, class_names))
    except CorruptImageError as e:
        logger.warning(f"training batch pictures left out: {e}")
    if val_dataset is not None:
        pictures = _val_pictures(val_dataset)
        if pictures:
            written.append(_write_grid(os.path.join(out_dir, "val_batch0.jpg"), pictures, class_names))
    if train_labels is not None:
        written.append(plot_label_statistics(train_labels, class_names, img_size, os.path.join(out_dir, "labels.png"),
                                             title="training labels"))
    return written
