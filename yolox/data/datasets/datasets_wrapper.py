"""Dataset base classes: input_dim and the (mosaic, index) protocol, image caching, corrupt-image policy, concat."""
import bisect
import inspect
import os
from abc import ABCMeta, abstractmethod
from functools import wraps

import cv2
import numpy as np
from loguru import logger
from torch.utils.data import get_worker_info
from torch.utils.data.dataset import ConcatDataset as torchConcatDataset
from torch.utils.data.dataset import Dataset as torchDataset

from yolox.utils import seeded_python_and_numpy

from .image_cache import ImageCache, fingerprint_images

__all__ = [
    "Dataset",
    "CacheDataset",
    "ConcatDataset",
    "MixConcatDataset",
    "cache_read_img",
    "CorruptImageError",
    "CORRUPT_IMAGE_POLICIES",
    "decode_reduction_limit",
    "jpeg_is_truncated",
    "jpeg_tail_is_truncated",
    "JPEG_SUFFIXES",
]

CORRUPT_IMAGE_POLICIES = ("raise", "skip")


class CorruptImageError(OSError):
    """An image file is missing, unreadable, or not the size its annotation says."""


class ConcatDataset(torchConcatDataset):
    def __init__(self, datasets):
        super().__init__(datasets)
        if hasattr(self.datasets[0], "input_dim"):
            self._input_dim = self.datasets[0].input_dim
            self.input_dim = self.datasets[0].input_dim

    def _locate(self, idx):
        if idx < 0:
            if -idx > len(self):
                raise ValueError(f"index {idx} is out of range for a dataset of length {len(self)}")
            idx = len(self) + idx
        dataset_idx = bisect.bisect_right(self.cumulative_sizes, idx)
        sample_idx = idx if dataset_idx == 0 else idx - self.cumulative_sizes[dataset_idx - 1]
        return dataset_idx, sample_idx

    def pull_item(self, idx):
        dataset_idx, sample_idx = self._locate(idx)
        return self.datasets[dataset_idx].pull_item(sample_idx)

    def load_anno(self, idx):
        dataset_idx, sample_idx = self._locate(idx)
        return self.datasets[dataset_idx].load_anno(sample_idx)


class MixConcatDataset(ConcatDataset):
    """ConcatDataset whose items may be (mosaic, index) pairs, as YoloBatchSampler yields them."""

    def __getitem__(self, index):
        if not isinstance(index, (int, np.integer)):
            dataset_idx, sample_idx = self._locate(index[1])
            return self.datasets[dataset_idx][(index[0], sample_idx, *index[2:])]
        dataset_idx, sample_idx = self._locate(index)
        return self.datasets[dataset_idx][sample_idx]


class Dataset(torchDataset):
    """A torch Dataset with an `input_dim` that can be changed on the fly, and the (mosaic, index) protocol."""

    def __init__(self, input_dimension, mosaic=True):
        super().__init__()
        self.__input_dim = input_dimension[:2]
        self.enable_mosaic = mosaic

    @property
    def input_dim(self):
        """(h, w) the samples are produced at; `_input_dim`, when set, overrides the constructor's."""
        if hasattr(self, "_input_dim"):
            return self._input_dim
        return self.__input_dim

    @staticmethod
    def mosaic_getitem(getitem_fn):
        """Decorate __getitem__ so it accepts (mosaic_flag, index) or (mosaic_flag, index, seed) from
        YoloBatchSampler as well as a plain index.

        With a seed, `random` and numpy are seeded with it for this one sample, so its augmentation depends only
        on the seed (the sampler derives it from the run's seed and the sample's place in the run). In the main
        process (num_workers=0) their previous states are put back afterwards.
        """

        @wraps(getitem_fn)
        def wrapper(self, index):
            seed = None
            if isinstance(index, (tuple, list)):
                self.enable_mosaic = index[0]
                seed = index[2] if len(index) > 2 else None
                index = index[1]
            if seed is None:
                return getitem_fn(self, int(index))
            with seeded_python_and_numpy(seed, restore=get_worker_info() is None):
                return getitem_fn(self, int(index))

        return wrapper


def cache_read_img(use_cache=True):
    """Decorate read_img(self, index) so it returns a copy of the cached image when the dataset is cached."""

    def decorator(read_img_fn):
        @wraps(read_img_fn)
        def wrapper(self, index, use_cache=use_cache):
            cache = getattr(self, "_image_cache", None)
            if use_cache and cache is not None:
                return cache.get(index).copy()
            return read_img_fn(self, index)

        return wrapper

    return decorator


_REDUCED_READ_FLAGS = {2: cv2.IMREAD_REDUCED_COLOR_2, 4: cv2.IMREAD_REDUCED_COLOR_4, 8: cv2.IMREAD_REDUCED_COLOR_8}
JPEG_SUFFIXES = (".jpg", ".jpeg", ".jpe", ".jfif")


def decode_reduction_limit(img_file, hw):
    """Largest r in (1, 2, 4, 8) at which `img_file` of size hw (h, w) can be decoded reduced by `read_image_file`:
    a JPEG (libjpeg scales it while decoding, much cheaper than decoding it whole) whose sides r divides, so that
    reduced pixel i covers source pixels [r * i, r * i + r) exactly."""
    if not str(img_file).lower().endswith(JPEG_SUFFIXES):
        return 1
    h, w = int(hw[0]), int(hw[1])
    for r in (8, 4, 2):
        if h % r == 0 and w % r == 0:
            return r
    return 1


_warned_truncated = set()
_tail_checked = set()  # files whose JPEG tail was read in this process (a file does not change during a run)


def jpeg_is_truncated(img_file):
    """Whether a JPEG file lacks its end-of-image marker (FF D9), as a file cut short in a copy or download does.
    OpenCV decodes such a file without an error (grey below the cut; libjpeg only writes "Premature end of JPEG
    file" to stderr). Files that are not JPEGs by their suffix are not checked."""
    if not img_file.lower().endswith(JPEG_SUFFIXES):
        return False
    try:
        with open(img_file, "rb") as f:
            return jpeg_tail_is_truncated(f)
    except OSError:
        return False


def jpeg_tail_is_truncated(f):
    """jpeg_is_truncated of a JPEG open in binary mode (its position moves)."""
    f.seek(0, os.SEEK_END)
    f.seek(max(0, f.tell() - 16))
    # entropy-coded data stuffs every FF byte as FF 00, so FF D9 near the end can only be the marker; a few bytes
    # of padding after it are tolerated
    return b"\xff\xd9" not in f.read()


def _warn_if_truncated(img_file, where):
    """Warn once per file; each file is looked at once per process (its tail read at its first decode only)."""
    if img_file in _tail_checked:
        return
    _tail_checked.add(img_file)
    if jpeg_is_truncated(img_file):
        _warned_truncated.add(img_file)
        logger.warning(f"image {img_file} ({where}) is a truncated JPEG: it decodes grey below the cut. Replace it with "
                       f"a complete copy or remove it (python -m yolox.tools.check_data lists all such files)")


def read_image_file(img_file, expected_hw, where, size_fix, reduction=1):
    """Decode `img_file` (BGR) and check it has the (h, w) its annotation says; CorruptImageError naming the file,
    `where` it is referenced and, for a size mismatch, `size_fix` (what to correct).

    reduction 2, 4 or 8 decodes the JPEG at 1/reduction of its size (OpenCV's reduced reads; the caller checks
    `decode_reduction_limit` first); the image is then (h // reduction, w // reduction).
    """
    if not os.path.isfile(img_file):
        raise CorruptImageError(f"image file not found: {img_file} ({where})")
    img = cv2.imread(img_file, _REDUCED_READ_FLAGS[reduction] if reduction > 1 else cv2.IMREAD_COLOR)
    if img is None:
        raise CorruptImageError(f"cannot decode image {img_file} ({where}): corrupt or not an image file")
    h, w = expected_hw
    if img.shape[:2] != (h // reduction, w // reduction):
        if reduction > 1:  # e.g. not a JPEG inside: decode it whole, which also checks its size
            return read_image_file(img_file, expected_hw, where, size_fix)
        raise CorruptImageError(f"image {img_file} is {img.shape[1]}x{img.shape[0]} but {where} says {w}x{h}; {size_fix}")
    _warn_if_truncated(img_file, where)
    return img


class CacheDataset(Dataset, metaclass=ABCMeta):
    """A dataset of images resized to img_size, optionally cached once in RAM or on disk (`cache`, `cache_type`).

    Subclasses give `_image_paths()` (absolute file names), `_resized_hw` ((N, 2) h, w after the resize) and
    `load_image(index)` (decode, CorruptImageError when it cannot; see `read_image_file`). `on_corrupt_image` chooses
    what an unreadable image does: "raise" (the default) or "skip" (another image takes its place, counted in the log).
    """

    def __init__(
        self,
        input_dimension,
        num_imgs=None,
        data_dir=None,
        cache_dir_name=None,
        path_filename=None,
        cache=False,
        cache_type="ram",
        on_corrupt_image="raise",
    ):
        super().__init__(input_dimension)
        if on_corrupt_image not in CORRUPT_IMAGE_POLICIES:
            raise ValueError(
                f"on_corrupt_image={on_corrupt_image!r} is not supported; choose one of {CORRUPT_IMAGE_POLICIES}"
            )
        self.on_corrupt_image = on_corrupt_image
        self.num_skipped_images = 0
        self._bad_indices = set()
        if isinstance(cache, str):  # accept cache="ram" / "disk" as well as cache=True, cache_type=...
            cache, cache_type = True, cache
        self.cache = bool(cache)
        self.cache_type = cache_type
        self._image_cache = None
        self.cache_dir = os.path.join(data_dir, "cache", cache_dir_name) if data_dir and cache_dir_name else None
        self.path_filename = path_filename
        if self.cache:
            self.cache_images(num_imgs=num_imgs, data_dir=data_dir, cache_dir_name=cache_dir_name)

    @abstractmethod
    def _image_paths(self):
        """Absolute path of every image, in index order."""

    @abstractmethod
    def load_image(self, index):
        """Decode image `index` at its original size; CorruptImageError when it cannot."""

    def load_anno(self, index):
        """Read-only (n, 5) labels of image `index`: x1y1x2y2 in img_size pixels, class index (subclasses fill the
        flat `_labels` array and its per-image `_label_offsets`, which workers share without copying)."""
        return self._labels[self._label_offsets[index] : self._label_offsets[index + 1]]

    def img_info(self, index):
        """(h, w) of image `index` as stored on disk."""
        h, w = self._img_hw[index]
        return int(h), int(w)

    def _resized_shapes(self):
        """(N, 2) array of each image's (h, w) after resizing to img_size (subclasses fill `_resized_hw`)."""
        return self._resized_hw

    def load_resized_img(self, index):
        """Decode image `index` and resize it to fit img_size; CorruptImageError when it cannot."""
        img = self.load_image(index)
        h, w = self._resized_hw[index]
        if (h, w) == img.shape[:2]:
            return img
        return cv2.resize(img, (int(w), int(h)), interpolation=cv2.INTER_LINEAR)

    def read_img(self, index):
        """The resized image `index`, from the cache when there is one (a copy the caller may change)."""
        cached = self._cached_view(index)
        return cached.copy() if cached is not None else self.load_resized_img(index)

    def pull_unresized(self, index):
        """(image, labels (n, 5), resized (h, w), image id array) for callers that warp the image (Mosaic, MixUp).

        The image is the cached one (already resized; a read-only view) or, without a cache, the decoded file at its
        own size: the caller folds the resize to `resized (h, w)` into its warp, so no resized copy is made. labels
        are in resized-image pixels, as pull_item's. With on_corrupt_image="skip", the next readable image.
        """
        index, img = self.read_img_checked(index, copy=False, resized=False)
        resized_hw = tuple(int(v) for v in self._resized_hw[index])
        return img, self.load_anno(index).copy(), resized_hw, self._item_id(index)

    def lazy_pull(self, index):
        """pull_unresized without reading the image yet: (source, labels (n, 5), resized (h, w), source (h, w), id).

        source(reduction=1) returns the image pull_unresized would (the cached view, or the decoded file at its own
        size, source (h, w)); with reduction 2, 4 or 8 (at most `decode_reduction_limit`) a JPEG file is decoded at
        that fraction of its size, for a caller that shrinks it at least that much anyway. Mosaic calls it only for
        the tiles that show in its output. None when the image must be read to know which image it is
        (on_corrupt_image="skip" without a cache: an unreadable one is replaced by the next): use pull_unresized.
        """
        if index in self._bad_indices or (self._image_cache is None and self.on_corrupt_image != "raise"):
            return None
        labels = self.load_anno(index).copy()
        resized_hw = tuple(int(v) for v in self._resized_hw[index])
        if self._image_cache is not None:
            return (lambda reduction=1: self._image_cache.get(index)), labels, resized_hw, resized_hw, \
                self._item_id(index)
        path = self.image_path(index) if self._load_image_reduces() else None
        limit = decode_reduction_limit(path, self._img_hw[index]) if path is not None else 1

        def source(reduction=1):
            return self.load_image(index, reduction) if 1 < reduction <= limit else self.load_image(index)

        source.max_reduction = limit
        return source, labels, resized_hw, self.img_info(index), self._item_id(index)

    def _load_image_reduces(self):
        """Whether load_image takes `reduction` (a subclass may override it with load_image(index) only)."""
        if not hasattr(self, "_reduces"):
            self._reduces = "reduction" in inspect.signature(self.load_image).parameters
        return self._reduces

    def image_path(self, index):
        """File of image `index`, for a subclass whose load_image(index, reduction) can decode it reduced; None
        otherwise (the base class: images are then always decoded whole)."""
        return None

    def _item_id(self, index):
        """What pull_item returns as the image id (COCO: its id as a 1-element array; VOC: the index)."""
        return index

    # ------------------------------------------------------------------ caching
    def cache_images(self, num_imgs=None, data_dir=None, cache_dir_name=None):
        what = f"{len(self)} images of {self.cache_dir or data_dir} at {tuple(self.input_dim)}"
        cache_dir = self.cache_dir
        if self.cache_type == "disk" and cache_dir is None:
            raise ValueError("a disk cache needs data_dir and cache_dir_name to know where to write")
        fingerprint = fingerprint_images(self._image_paths(), self.input_dim) if self.cache_type == "disk" else None
        image_cache = ImageCache(self._resized_shapes(), self.cache_type, cache_dir, fingerprint)
        if not image_cache.try_open_existing():
            image_cache.check_fits(what)
            image_cache.fill(self._load_for_cache, what)
        self._image_cache = image_cache
        self._bad_indices = set(np.flatnonzero(image_cache.bad).tolist())
        if self._bad_indices:
            logger.warning(
                f"{len(self._bad_indices)} unreadable image(s) skipped while caching (on_corrupt_image='skip'); "
                f"first: {self._image_paths()[min(self._bad_indices)]}"
            )

    def _load_for_cache(self, index):
        try:
            return self.load_resized_img(index)
        except CorruptImageError as e:
            if self.on_corrupt_image == "raise":
                raise
            logger.warning(f"skipping: {e}")
            return None

    # ------------------------------------------------------------------ reading with the corrupt-image policy
    def _cached_view(self, index):
        """Read-only resized image from the cache (no copy), or None without a cache."""
        if self._image_cache is None:
            return None
        return self._image_cache.get(index)

    def read_img_checked(self, index, copy=True, resized=True):
        """(index, image): image `index`, or with on_corrupt_image="skip" the next readable one after it.

        copy=False may return a read-only view of the cache (for callers that never write into it). resized=False:
        without a cache, the image as decoded, not resized to img_size (a caller that warps it resizes on the way).
        """
        n = len(self)
        for step in range(n):
            i = (index + step) % n
            if i in self._bad_indices:
                continue
            view = self._cached_view(i)
            if view is not None:
                return i, (view.copy() if copy else view)
            try:
                return i, (self.read_img(i) if resized else self.load_image(i))
            except CorruptImageError as e:
                if self.on_corrupt_image == "raise":
                    raise
                self._bad_indices.add(i)
                self.num_skipped_images += 1
                logger.warning(
                    f"skipping: {e} ({self.num_skipped_images} image(s) skipped so far in process {os.getpid()}; "
                    "on_corrupt_image='skip')"
                )
        raise CorruptImageError(f"none of the {n} images of {self.cache_dir or 'the dataset'} could be read")
