"""Keep image-sized buffers in the process heap (glibc), so building a sample does not page-fault its arrays in.

glibc's malloc serves every allocation above a threshold (128 KiB to start) with its own mmap and gives it back
with munmap when it is freed. A Mosaic+MixUp sample at 640 allocates a dozen arrays of 0.5-5 MB (decoded JPEGs, the
mosaic, its HSV copy, the float CHW tensor): each one is mapped afresh and its pages are faulted in and zeroed by
the kernel on first touch, about 3,600 page faults per sample. Measured on a 2-core CPU (forest tiles, yolox-s
at 640, uncached): 32 samples/s with glibc's defaults, 52 with the buffers kept in the heap, where freed memory is
reused by the next sample without a trip to the kernel.
"""
import ctypes
import ctypes.util
import os
import platform

__all__ = ["keep_image_buffers_in_heap"]

# mallopt parameters of glibc's <malloc.h>
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
# allocations up to 16 MiB (a float 640x640 image is 4.7 MiB) come from the heap; up to 64 MiB of free heap
# is kept for the next batch (a worker holds a batch of samples: 8 float images at 640 take 38 MiB)
MMAP_THRESHOLD = 16 << 20
TRIM_THRESHOLD = 64 << 20
_applied = None


def keep_image_buffers_in_heap(mmap_threshold=MMAP_THRESHOLD, trim_threshold=TRIM_THRESHOLD):
    """Raise glibc's mmap and trim thresholds in this process; True when they were set, False where not glibc.

    Call it in processes that build samples (DataLoader workers, or the main process when it loads data itself).
    YOLOX_MALLOC_TUNING=0 in the environment turns it off (glibc's defaults are kept).
    """
    global _applied
    if os.environ.get("YOLOX_MALLOC_TUNING", "1") == "0":
        return False
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    if _applied == (mmap_threshold, trim_threshold):
        return True
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    ok = mallopt(_M_MMAP_THRESHOLD, int(mmap_threshold)) == 1 and mallopt(_M_TRIM_THRESHOLD, int(trim_threshold)) == 1
    _applied = (mmap_threshold, trim_threshold) if ok else None
    return ok
