"""The index of a YOLO-txt split: its image files, their header sizes, truncated JPEGs and the boxes of their label
files, parsed in bulk and cached beside the labels (rebuilt when any image or label file changes)."""
import os
import tempfile
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
from loguru import logger

from ..data_yaml import IMAGE_SUFFIXES
from .datasets_wrapper import JPEG_SUFFIXES, jpeg_tail_is_truncated

__all__ = ["SplitIndex", "CACHE_SUFFIX", "label_path_of", "list_split_images", "load_split_index",
           "read_image_size", "parse_label_texts", "class_id_error"]

CACHE_SUFFIX = ".yolox_cache.npz"
_CACHE_VERSION = 1
# Coordinates are normalised to [0, 1]; values a little outside are clipped, values beyond these are not
# normalised at all (pixels, most likely), which clipping would turn into wrong boxes silently.
_COORD_LIMITS = (-0.5, 1.5)
_CHUNK = 512  # images per task of the header thread pool
_SHOWN_CHARS = 80


@dataclass
class SplitIndex:
    """What a split's files say. Boxes are x1y1x2y2 normalised to the (EXIF-oriented) image, clipped to [0, 1]."""

    image_paths: list  # N absolute image paths, in split order
    hw: np.ndarray  # (N, 2) int64 height, width from the headers (0 where unreadable)
    readable: np.ndarray  # (N,) bool: the header could be read
    truncated: np.ndarray  # (N,) bool: a JPEG without its end marker
    box_image: np.ndarray  # (M,) int64 image row of each box
    box_class: np.ndarray  # (M,) int64 class id as written in the label file
    box_line: np.ndarray  # (M,) int64 1-based line of the box in its label file
    boxes: np.ndarray  # (M, 4) float64 x1y1x2y2 in [0, 1]
    clipped: int = 0  # boxes clipped to the image
    dropped: int = 0  # boxes of no area after clipping, left out
    first_clipped: str = ""  # "file, line n" of the first clipped or dropped box, for the warning
    from_cache: bool = False
    cache_path: str = ""
    seconds: float = 0.0
    header_errors: dict = field(default_factory=dict)  # image path -> why its header could not be read

    def label_path(self, row):
        return label_path_of(self.image_paths[row])


# ---------------------------------------------------------------------------------------------------- listing
def label_path_of(image_path):
    """The label file of an image: the last `images` folder of its path replaced by `labels`, the suffix by .txt."""
    head, sep, tail = image_path.rpartition(f"{os.sep}images{os.sep}")
    stem = os.path.splitext(f"{head}{os.sep}labels{os.sep}{tail}" if sep else image_path)[0]
    return stem + ".txt"


def _is_image(name):
    return os.path.splitext(name)[1].lower() in IMAGE_SUFFIXES


def _images_under(folder):
    """Image files under `folder` and its subfolders, sorted by path (os.scandir: no stat per file)."""
    found, stack = [], [folder]
    while stack:
        with os.scandir(stack.pop()) as entries:
            for entry in entries:
                if entry.is_dir():
                    stack.append(entry.path)
                elif _is_image(entry.name):
                    found.append(entry.path)
    found.sort()
    return found


def _images_in_list(txt_path):
    """The image paths listed in a .txt file, one a line; relative ones are relative to the file's folder."""
    folder = os.path.dirname(txt_path)
    with open(txt_path, encoding="utf-8") as f:
        lines = [line.strip() for line in f]
    return [os.path.normpath(os.path.join(folder, line)) for line in lines if line and _is_image(line)]


def list_split_images(data_yaml, split):
    """Absolute paths of the images of `split`; ValueError naming the yaml when a source is missing or all are
    empty."""
    images = []
    for source in data_yaml.split_sources(split):
        path = os.path.normpath(os.path.join(data_yaml.root, os.path.expanduser(source)))
        if os.path.isdir(path):
            images += _images_under(path)
        elif os.path.isfile(path) and path.lower().endswith(".txt"):
            images += _images_in_list(path)
        elif os.path.isfile(path) and _is_image(path):
            images.append(path)
        else:
            what = "is not a folder, a .txt list or an image" if os.path.exists(path) else "does not exist"
            raise ValueError(f"{data_yaml.path}: {split} source '{source}' ({path}) {what}; fix '{split}:' (relative "
                             f"paths are relative to the dataset root {data_yaml.root})")
    if not images:
        raise ValueError(f"{data_yaml.path}: the {split} split ({', '.join(data_yaml.split_sources(split))} under "
                         f"{data_yaml.root}) has no images ({', '.join(IMAGE_SUFFIXES)}); point '{split}:' at them")
    return images


# ---------------------------------------------------------------------------------------------------- files
def _stat_pair(path):
    """(size, mtime_ns) of a file, (-1, -1) when it does not exist."""
    try:
        st = os.stat(path)
    except OSError:
        return -1, -1
    return st.st_size, st.st_mtime_ns


def file_fingerprint(image_paths, label_paths):
    """(N, 4) int64: size and mtime of each image and of its label file (-1 where missing); any added, removed or
    changed file changes it."""
    out = np.empty((len(image_paths), 4), dtype=np.int64)
    for i, (img, lbl) in enumerate(zip(image_paths, label_paths)):
        out[i, :2] = _stat_pair(img)
        out[i, 2:] = _stat_pair(lbl)
    return out


def _pil_header(fp):
    """(height, width, EXIF orientation) of an image (a path or a binary file) from its header, by PIL, without
    decoding it."""
    from PIL import ExifTags, Image

    with Image.open(fp) as im:
        w, h = im.size
        # getexif() is cheap only when the header carried EXIF; it would decode a PNG without it to look further
        has_exif = "exif" in im.info or im.format == "TIFF"
        return h, w, im.getexif().get(ExifTags.Base.Orientation, 1) if has_exif else 1


def read_image_size(path):
    """(height, width) of an image from its header, with the EXIF orientation applied as cv2.imread applies it:
    orientations 5-8 turn the image by 90 degrees."""
    with open(path, "rb") as f:
        return _oriented_size(f)


def _oriented_size(f):
    h, w, orientation = _pil_header(f)
    if w <= 0 or h <= 0:
        raise ValueError(f"its header says {w}x{h}")
    return (w, h) if orientation in (5, 6, 7, 8) else (h, w)


def _image_header(path):
    """((height, width) as read_image_size gives it, whether it is a truncated JPEG), the file opened once."""
    with open(path, "rb") as f:
        hw = _oriented_size(f)
        return hw, path.lower().endswith(JPEG_SUFFIXES) and jpeg_tail_is_truncated(f)


def _read_chunk(image_paths, label_paths):
    """Header size, readability, truncation and label bytes of a run of images (one thread-pool task)."""
    rows = []
    for img, lbl in zip(image_paths, label_paths):
        try:
            (hw, truncated), error = _image_header(img), ""
        except Exception as e:  # PIL raises OSError, SyntaxError, ValueError or its DecompressionBombError
            (hw, truncated), error = ((0, 0), False), f"{type(e).__name__}: {(str(e).splitlines() or [''])[0]}"
        try:
            with open(lbl, "rb") as f:
                text = f.read()
        except FileNotFoundError:
            text = b""  # no label file: a background image
        except OSError as e:
            raise ValueError(f"cannot read label file {lbl} ({e.strerror or e}); make it readable or remove it") \
                from None
        rows.append((hw, error, truncated, text))
    return rows


def _read_files(image_paths, label_paths, threads):
    """Per image: (h, w), header error text, truncated flag, label-file bytes (headers read in a thread pool)."""
    chunks = [(image_paths[i:i + _CHUNK], label_paths[i:i + _CHUNK]) for i in range(0, len(image_paths), _CHUNK)]
    if threads <= 1 or len(chunks) == 1:
        results = [_read_chunk(*c) for c in chunks]
    else:
        with ThreadPoolExecutor(threads) as pool:
            results = list(pool.map(lambda c: _read_chunk(*c), chunks))
    return [row for rows in results for row in rows]


# ---------------------------------------------------------------------------------------------------- labels
def _shown(line):
    text = line.decode("utf-8", "replace").strip()
    return text if len(text) <= _SHOWN_CHARS else text[:_SHOWN_CHARS] + "..."


def _line_error(label_paths, file_of, line_no, lines, k, problem):
    """ValueError for line k (global) of the label texts: the file, its line number, the line and the problem."""
    return ValueError(f"{label_paths[file_of[k]]}, line {line_no[k]}: '{_shown(lines[k])}' {problem}")


def _first_unparsable(lines, ntok):
    """(global line, bad token) of the first token that is not a finite number (the slow path, run on errors)."""
    for k in np.flatnonzero(ntok).tolist():
        for token in lines[k].split():
            try:
                value = float(token)
            except ValueError:
                return k, token
            if not np.isfinite(value):
                return k, token
    return None, None


def _parse_numbers(lines, ntok):
    """All tokens of all lines as one float64 array (T,), or None when one is not a finite number."""
    text = b" ".join(lines).decode("latin-1")  # latin-1 maps every byte: odd bytes fail the number parse below
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # older numpy only warns when it stops at a token that is not a number
        try:
            values = np.fromstring(text, dtype=np.float64, sep=" ")
        except (ValueError, DeprecationWarning):
            return None
    if len(values) != int(ntok.sum()) or not np.isfinite(values).all():
        return None
    return values


def _segment_boxes(values, starts, counts):
    """Enclosing x1y1x2y2 (S, 4) of segment lines whose points (x y pairs) follow the class at `starts`."""
    out = np.empty((len(starts), 4), dtype=np.float64)
    for j, (s, n) in enumerate(zip(starts.tolist(), counts.tolist())):
        pts = values[s + 1 : s + n].reshape(-1, 2)  # (P, 2) x, y
        out[j, :2] = pts.min(axis=0)
        out[j, 2:] = pts.max(axis=0)
    return out


def parse_label_texts(texts, label_paths):
    """Parse the label files of a split at once: texts[i] is the bytes of label_paths[i] (b"" when absent).

    Returns (file_of (M,), line (M,), class id (M,), x1y1x2y2 (M, 4) normalised, unclipped); ValueError naming the
    file and line of the first line that is not `class cx cy w h` or a segment `class x1 y1 ... xn yn`.
    """
    counts = np.zeros(len(texts), dtype=np.int64)
    lines = []
    for i, text in enumerate(texts):
        if text:
            split = text.split(b"\n")
            lines += split
            counts[i] = len(split)
    file_of = np.repeat(np.arange(len(texts)), counts)  # (L,) file of each line
    line_no = np.arange(len(lines)) - np.repeat(np.cumsum(counts) - counts, counts) + 1  # (L,) 1-based
    ntok = np.fromiter(map(len, map(bytes.split, lines)), dtype=np.int64, count=len(lines))  # (L,) tokens

    bad = (ntok > 0) & (ntok != 5) & ((ntok < 7) | (ntok % 2 == 0))
    if bad.any():
        k = int(np.argmax(bad))
        raise _line_error(label_paths, file_of, line_no, lines, k,
                          f"has {ntok[k]} values; a box line needs class cx cy w h (5 values), a segment line class "
                          f"x1 y1 x2 y2 ... xn yn (at least 3 points): fix or remove the line")
    values = _parse_numbers(lines, ntok)
    if values is None:
        k, token = _first_unparsable(lines, ntok)
        if k is None:
            raise ValueError(f"the label files of {os.path.dirname(label_paths[0])} hold a value numpy cannot read")
        raise _line_error(label_paths, file_of, line_no, lines, k,
                          f"has the value '{token.decode('utf-8', 'replace')}'; every value must be a finite number: "
                          f"fix the line")

    keep = np.flatnonzero(ntok)  # (M,) non-blank lines
    starts = (np.cumsum(ntok) - ntok)[keep]  # (M,) offset of each line's class in values
    n = ntok[keep]
    cls = values[starts]
    not_whole = (cls != np.floor(cls)) | (cls < 0)
    if not_whole.any():
        k = keep[int(np.argmax(not_whole))]
        raise _line_error(label_paths, file_of, line_no, lines, k,
                          "starts with a class id that is not a whole number >= 0; the first value is the class id")

    is_coord = np.ones(len(values), dtype=bool)
    is_coord[starts] = False
    coords = values[is_coord]  # (T - M,) every value but the class ids
    if len(coords) and (coords.min() < _COORD_LIMITS[0] or coords.max() > _COORD_LIMITS[1]):
        line_of_value = np.repeat(np.arange(len(keep)), n - 1)  # (T - M,) line of each coordinate
        far = (coords < _COORD_LIMITS[0]) | (coords > _COORD_LIMITS[1])
        k = keep[line_of_value[int(np.argmax(far))]]
        raise _line_error(label_paths, file_of, line_no, lines, k,
                          "has a coordinate far outside [0, 1]; YOLO labels are normalised: divide x and width by the "
                          "image width, y and height by its height")

    xyxy = np.empty((len(keep), 4), dtype=np.float64)
    is_box = n == 5
    box = values[starts[is_box, None] + np.arange(1, 5)]  # (B, 4) cx, cy, w, h
    xyxy[is_box] = np.concatenate([box[:, :2] - box[:, 2:] / 2, box[:, :2] + box[:, 2:] / 2], axis=1)
    xyxy[~is_box] = _segment_boxes(values, starts[~is_box], n[~is_box])
    return file_of[keep], line_no[keep], cls.astype(np.int64), xyxy


def class_id_error(index, ids, yaml_path):
    """ValueError naming the first label line whose class id is not among the yaml's ids, or None."""
    known = np.isin(index.box_class, np.asarray(ids, dtype=np.int64))
    if known.all():
        return None
    j = int(np.argmin(known))
    shown = ", ".join(map(str, ids[:20])) + (", ..." if len(ids) > 20 else "")
    return ValueError(f"{index.label_path(index.box_image[j])}, line {index.box_line[j]}: class id "
                      f"{index.box_class[j]} is not among the class ids of {yaml_path} ({shown}); fix the label or "
                      f"add the class to names")


# ---------------------------------------------------------------------------------------------------- build
def build_split_index(image_paths, threads=None):
    """Read every image header and label file of a split (see SplitIndex); ValueError on a bad label line."""
    label_paths = [label_path_of(p) for p in image_paths]
    threads = threads or min(8, 2 * (os.cpu_count() or 1))  # threads overlap file reads; parsing holds the GIL
    rows = _read_files(image_paths, label_paths, threads)
    hw = np.array([r[0] for r in rows], dtype=np.int64).reshape(-1, 2)
    errors = [r[1] for r in rows]
    file_of, line, cls, xyxy = parse_label_texts([r[3] for r in rows], label_paths)

    clipped_xyxy = np.clip(xyxy, 0.0, 1.0)
    was_clipped = (clipped_xyxy != xyxy).any(axis=1)  # (M,)
    empty = (clipped_xyxy[:, 2] <= clipped_xyxy[:, 0]) | (clipped_xyxy[:, 3] <= clipped_xyxy[:, 1])  # (M,)
    flagged = np.flatnonzero(was_clipped | empty)
    first = f"{label_paths[file_of[flagged[0]]]}, line {line[flagged[0]]}" if len(flagged) else ""
    index = SplitIndex(
        image_paths=list(image_paths), hw=hw, readable=np.array([not e for e in errors], dtype=bool),
        truncated=np.array([r[2] for r in rows], dtype=bool), box_image=file_of[~empty], box_class=cls[~empty],
        box_line=line[~empty], boxes=clipped_xyxy[~empty], clipped=int((was_clipped & ~empty).sum()),
        dropped=int(empty.sum()), first_clipped=first,
        header_errors={image_paths[i]: e for i, e in enumerate(errors) if e},
    )
    return index


# ---------------------------------------------------------------------------------------------------- cache
def cache_path_of(image_paths):
    """Where a split's index is cached: beside the label folder of its first image."""
    return os.path.dirname(label_path_of(image_paths[0])) + CACHE_SUFFIX


def _paths_blob(paths):
    return np.frombuffer("\n".join(paths).encode("utf-8", "surrogateescape"), dtype=np.uint8)


def _save_index(index, fingerprint, path):
    """Write the index atomically (temp file + os.replace); a folder that is not writable only skips the cache."""
    arrays = dict(
        version=np.array(_CACHE_VERSION), paths=_paths_blob(index.image_paths), fingerprint=fingerprint,
        hw=index.hw, readable=index.readable, truncated=index.truncated, box_image=index.box_image,
        box_class=index.box_class, box_line=index.box_line, boxes=index.boxes,
        counts=np.array([index.clipped, index.dropped]), first_clipped=np.array(index.first_clipped),
        header_errors=np.array(["\n".join(f"{k}\t{v}" for k, v in index.header_errors.items())]),
    )
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(prefix=os.path.basename(path), suffix=".tmp", dir=os.path.dirname(path))
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
        os.replace(tmp, path)
        return True
    except OSError as e:
        logger.debug(f"the index of {len(index.image_paths)} images is not cached: cannot write {path} ({e})")
        if tmp is not None and os.path.exists(tmp):
            os.remove(tmp)
        return False


def _errors_from_text(text):
    return dict(line.split("\t", 1) for line in text.splitlines() if "\t" in line)


def _load_index(path, image_paths, fingerprint):
    """The cached index when it exists and was made from exactly these files (paths, sizes, mtimes), else None."""
    if not os.path.isfile(path):
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            if int(z["version"]) != _CACHE_VERSION or not np.array_equal(z["fingerprint"], fingerprint):
                return None
            if not np.array_equal(z["paths"], _paths_blob(image_paths)):
                return None
            clipped, dropped = z["counts"].tolist()
            index = SplitIndex(
                image_paths=list(image_paths), hw=z["hw"], readable=z["readable"], truncated=z["truncated"],
                box_image=z["box_image"], box_class=z["box_class"], box_line=z["box_line"], boxes=z["boxes"],
                clipped=clipped, dropped=dropped, first_clipped=str(z["first_clipped"]), from_cache=True,
                header_errors=_errors_from_text(str(z["header_errors"][0])),
            )
    except Exception as e:  # noqa: BLE001 - a cache that cannot be read (broken, other version) is only rebuilt
        logger.debug(f"ignoring the index cache {path}: {e}")
        return None
    return index


def load_split_index(data_yaml, split, threads=None, use_cache=True):
    """The index of `split` of a DataYaml: read from its cache when no image or label file changed since it was
    written, else built (and cached). Logs which, and how long it took."""
    start = time.perf_counter()
    image_paths = list_split_images(data_yaml, split)
    fingerprint = file_fingerprint(image_paths, [label_path_of(p) for p in image_paths])
    path = cache_path_of(image_paths)
    index = _load_index(path, image_paths, fingerprint) if use_cache else None
    if index is None:
        index = build_split_index(image_paths, threads)
        if use_cache and _save_index(index, fingerprint, path):
            index.cache_path = path
        how = "built"
    else:
        index.cache_path = path
        how = f"read from cache {path}"
    index.seconds = time.perf_counter() - start
    logger.info(f"{data_yaml.path} ({split}): index of {len(image_paths)} images, {len(index.boxes)} boxes {how} "
                f"in {index.seconds:.2f} s" + (f" (cached in {index.cache_path})" if how == "built"
                                                and index.cache_path else ""))
    return index
