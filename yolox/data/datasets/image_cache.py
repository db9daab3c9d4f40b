"""Storage for resized images: one flat uint8 buffer in RAM or one memory-mapped file on disk, plus an index.

One buffer instead of a list of arrays keeps DataLoader workers from copying pages on write (no per-image Python
objects whose reference counts change), so memory stays flat. The disk cache is reused across runs while its
fingerprint (input size, every image's path, size and mtime) matches, and rebuilt otherwise.
"""
import hashlib
import json
import os
import shutil
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from loguru import logger
from tqdm import tqdm

__all__ = ["ImageCache", "CacheDoesNotFitError", "available_memory_bytes", "fingerprint_images"]

_FORMAT_VERSION = 1
# bytes kept free besides the cache: the rest of training needs memory and disk too
_RAM_MARGIN = 2 << 30
_DISK_MARGIN = 1 << 30


class CacheDoesNotFitError(MemoryError):
    """The image cache would not fit in the available RAM or disk space."""


def available_memory_bytes():
    """MemAvailable from /proc/meminfo (Linux), psutil elsewhere, None if neither can tell."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        import psutil

        return psutil.virtual_memory().available
    except ImportError:
        return None


def fingerprint_images(paths, img_size):
    """A hex digest that changes when the input size or any image (path, byte size, mtime) changes."""
    digest = hashlib.sha1(f"v{_FORMAT_VERSION} {tuple(img_size)}".encode())
    for path in paths:
        try:
            st = os.stat(path)
            digest.update(f"{path}|{st.st_size}|{st.st_mtime_ns}\n".encode())
        except OSError:
            digest.update(f"{path}|missing\n".encode())
    return digest.hexdigest()


def _gib(n):
    return f"{n / (1 << 30):.2f} GiB"


class ImageCache:
    """Images of known shapes (N, h, w, 3) uint8, filled once by `fill`, read as views by `get`.

    shapes: (N, 2) int array of (h, w) per image, from the annotations, so the size is known before decoding.
    """

    def __init__(self, shapes, kind="ram", cache_dir=None, fingerprint=None):
        if kind not in ("ram", "disk"):
            raise ValueError(f"cache_type={kind!r} is not supported; use 'ram' or 'disk'")
        shapes = np.asarray(shapes, dtype=np.int64).reshape(-1, 2)
        self.kind = kind
        self.cache_dir = cache_dir
        self.fingerprint = fingerprint
        self.shapes = shapes
        sizes = shapes[:, 0] * shapes[:, 1] * 3
        self.offsets = np.zeros(len(shapes) + 1, dtype=np.int64)
        np.cumsum(sizes, out=self.offsets[1:])
        self.nbytes = int(self.offsets[-1])
        self.bad = np.zeros(len(shapes), dtype=bool)  # images that could not be read (skipped)
        self._buffer = None

    # ------------------------------------------------------------------ paths of the disk cache
    @property
    def data_path(self):
        return os.path.join(self.cache_dir, "images.u8")

    @property
    def meta_path(self):
        return os.path.join(self.cache_dir, "meta.json")

    @property
    def bad_path(self):
        return os.path.join(self.cache_dir, "bad.npy")

    # ------------------------------------------------------------------ sizing
    def check_fits(self, what):
        """Raise CacheDoesNotFitError (with the numbers and what to do) when the cache cannot fit."""
        if self.kind == "ram":
            avail = available_memory_bytes()
            if avail is None:
                logger.warning(f"cannot tell the free memory; caching {what} needs {_gib(self.nbytes)} of RAM")
                return
            if self.nbytes + _RAM_MARGIN > avail:
                raise CacheDoesNotFitError(
                    f"caching {what} in RAM needs {_gib(self.nbytes)} (+{_gib(_RAM_MARGIN)} kept free) but only "
                    f"{_gib(avail)} is available; use `--cache disk`, a smaller input size, or no cache."
                )
            logger.info(f"caching {what} in RAM: {_gib(self.nbytes)} of {_gib(avail)} available")
        else:
            os.makedirs(self.cache_dir, exist_ok=True)
            free = shutil.disk_usage(self.cache_dir).free
            if os.path.exists(self.data_path):
                free += os.path.getsize(self.data_path)  # the stale cache is replaced
            if self.nbytes + _DISK_MARGIN > free:
                raise CacheDoesNotFitError(
                    f"caching {what} on disk in {self.cache_dir} needs {_gib(self.nbytes)} "
                    f"(+{_gib(_DISK_MARGIN)} kept free) but the disk has {_gib(free)} free; free some space, "
                    f"use `--cache ram`, a smaller input size, or no cache."
                )
            logger.info(f"caching {what} on disk in {self.cache_dir}: {_gib(self.nbytes)} of {_gib(free)} free")

    # ------------------------------------------------------------------ disk reuse
    def try_open_existing(self):
        """Open a complete disk cache whose fingerprint matches; True when reused."""
        if self.kind != "disk" or not os.path.exists(self.meta_path) or not os.path.exists(self.data_path):
            return False
        try:
            with open(self.meta_path) as f:
                meta = json.load(f)
        except (OSError, ValueError):
            return False
        if (
            meta.get("version") != _FORMAT_VERSION
            or meta.get("fingerprint") != self.fingerprint
            or meta.get("nbytes") != self.nbytes
            or os.path.getsize(self.data_path) != self.nbytes
        ):
            logger.info(f"disk cache {self.cache_dir} is out of date (images or input size changed): rebuilding it")
            return False
        self._buffer = np.memmap(self.data_path, dtype=np.uint8, mode="r", shape=(max(self.nbytes, 1),))
        if os.path.exists(self.bad_path):
            self.bad = np.load(self.bad_path)
        logger.info(f"reusing the disk cache {self.cache_dir}")
        return True

    # ------------------------------------------------------------------ building
    def fill(self, load_fn, what, num_threads=None):
        """Decode every image with load_fn(i) -> (h, w, 3) uint8 or None (unreadable, skipped) into the buffer."""
        n = len(self.shapes)
        if self.kind == "ram":
            buffer = np.empty(max(self.nbytes, 1), dtype=np.uint8)
        else:
            if os.path.exists(self.meta_path):
                os.remove(self.meta_path)  # a half-written cache must never look complete
            buffer = np.memmap(self.data_path, dtype=np.uint8, mode="w+", shape=(max(self.nbytes, 1),))

        def store(i):
            img = load_fn(i)
            if img is None:
                self.bad[i] = True
                return
            h, w = self.shapes[i]
            buffer[self.offsets[i] : self.offsets[i + 1]] = np.ascontiguousarray(img).reshape(h * w * 3)

        num_threads = num_threads or min(8, os.cpu_count() or 1)
        # cv2 releases the GIL while decoding and resizing, so threads give a real speed-up
        with ThreadPoolExecutor(num_threads) as pool:
            for _ in tqdm(pool.map(store, range(n)), total=n, desc=f"caching {what}", unit="img"):
                pass

        if self.kind == "disk":
            buffer.flush()
            del buffer
            np.save(self.bad_path, self.bad)
            with open(self.meta_path, "w") as f:
                json.dump({"version": _FORMAT_VERSION, "fingerprint": self.fingerprint, "nbytes": self.nbytes}, f)
            buffer = np.memmap(self.data_path, dtype=np.uint8, mode="r", shape=(max(self.nbytes, 1),))
        else:
            buffer.setflags(write=False)
        self._buffer = buffer

    # ------------------------------------------------------------------ reading
    def get(self, i):
        """Read-only (h, w, 3) view of image i."""
        h, w = self.shapes[i]
        return self._buffer[self.offsets[i] : self.offsets[i + 1]].reshape(h, w, 3)
