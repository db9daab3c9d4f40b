"""Fast Mosaic/MixUp rendering: each source image is warped straight into the output, in uint8, without copies.

The official builds a 2x canvas, pastes four resized images and warps the whole canvas, then builds the MixUp
image with two resizes, a flip, a zero pad and a crop, and blends in float32. Every one of those steps is an affine
map of pixel coordinates, so each source image goes through a single composed warp here, and the 50/50 blend is
the exact integer floor((a + b) / 2) of the official float blend. Same geometry, up to interpolation.
"""
import math

import cv2
import numpy as np

__all__ = [
    "resize_map",
    "mosaic_tile_matrix",
    "warp_mosaic_tiles",
    "decode_reduction",
    "mixup_inverse_matrix",
    "blend_mixup_into",
]

_GRAY = (114, 114, 114)


def resize_map(src_len, dst_len):
    """(a, b) with src = a * dst + b: where cv2.resize (INTER_LINEAR) samples the source for a destination pixel."""
    f = src_len / dst_len
    return f, 0.5 * f - 0.5


def mosaic_tile_matrix(M, src_hw, resized_hw, large, small, crop_origin):
    """(2, 3) matrix from the local pixel coordinates of a source crop to the output, through the mosaic canvas.

    M: (2, 3) canvas -> output affine. src_hw: source image (h0, w0); resized_hw: (h, w) it is resized to in the
    canvas; large / small: the tile's canvas rect and resized-image rect (x1, y1, x2, y2) of get_mosaic_coordinate;
    crop_origin: (x, y) of the crop's pixel (0, 0) in the source.
    """
    ax, bx = resize_map(src_hw[1], resized_hw[1])  # source x = ax * resized x + bx
    ay, by = resize_map(src_hw[0], resized_hw[0])
    # canvas x = resized x + pad = (source x - bx) / ax + pad, source x = local x + crop x
    kx, ky = 1.0 / ax, 1.0 / ay
    cx = (crop_origin[0] - bx) / ax + large[0] - small[0]
    cy = (crop_origin[1] - by) / ay + large[1] - small[1]
    local_to_canvas = np.array([[kx, 0.0, cx], [0.0, ky, cy]])
    A = M[:, :2] @ local_to_canvas  # (2, 3): linear part composed, translation column follows
    A[:, 2] += M[:, 2]
    return A


def _source_crop(small, src_hw, resized_hw):
    """Source pixel range [x0, x1) x [y0, y1) that the resized rect `small` was sampled from."""
    fx, fy = src_hw[1] / resized_hw[1], src_hw[0] / resized_hw[0]
    x0 = min(max(int(round(small[0] * fx)), 0), src_hw[1])
    x1 = min(max(int(round(small[2] * fx)), 0), src_hw[1])
    y0 = min(max(int(round(small[1] * fy)), 0), src_hw[0])
    y1 = min(max(int(round(small[3] * fy)), 0), src_hw[0])
    return x0, y0, x1, y1


def _largest_singular_value(m):
    """Larger singular value of a 2x2 matrix, in closed form."""
    (a, b), (c, d) = m.tolist()
    t = a * a + b * b + c * c + d * d
    det = a * d - b * c
    return np.sqrt(0.5 * (t + np.sqrt(max(t * t - 4.0 * det * det, 0.0))))


def decode_reduction(source_px_per_output_px, max_reduction):
    """The reduction (1, 2, 4 or 8, at most max_reduction) at which to decode an image that the output shrinks by
    at least `source_px_per_output_px` in every direction: the largest r that still leaves at least one decoded
    pixel per output pixel, so the warp samples as finely as from the whole image."""
    r = 1
    while r * 2 <= max_reduction and source_px_per_output_px >= r * 2:
        r *= 2
    return r


def _tile_outline(A, w, h):
    """Output (4, 2) corners of a w x h crop under A (crop pixels -> output), grown by one pixel: centres -1 .. w and
    -1 .. h, so the half-pixel strips at tile edges, where the official blends neighbouring canvas pixels, are
    drawn too (no gray seams)."""
    return np.array([[-1.0, -1.0, 1.0], [w, -1.0, 1.0], [w, h, 1.0], [-1.0, h, 1.0]]) @ A.T


def warp_mosaic_tiles(out, tiles, M):
    """Draw the mosaic of `tiles` warped by M into `out` (H, W, 3) uint8, which holds 114 where nothing is drawn.

    tiles: [(source, source (h0, w0), resized (h, w), large rect, small rect)] in the official order. source is the
    image (h0, w0, 3) uint8, or a function source(reduction=1) that reads it (CacheDataset.lazy_pull): it is called
    only for a tile that shows in the output, and with reduction r > 1 (the image at 1/r of its size, up to its
    `max_reduction`) when the warp shrinks the tile by r or more anyway.
    Each tile's source crop is warped into the output box it can reach (bilinear) and copied through a mask of
    its outline grown by one source pixel; later tiles overwrite, like later pastes. (A masked copy rather than
    warpAffine's BORDER_TRANSPARENT, which leaves outside pixels alone but costs twice as much per pixel.)
    Returns the number of images read (the tiles that show).
    """
    dsize = (out.shape[1], out.shape[0])
    num_read = 0
    for source, src_hw, resized_hw, large, small in tiles:
        x0, y0, x1, y1 = _source_crop(small, src_hw, resized_hw)
        if x1 <= x0 or y1 <= y0:
            continue
        A = mosaic_tile_matrix(M, src_hw, resized_hw, large, small, (x0, y0))  # crop pixels -> output
        if callable(source):
            ox0, oy0, ox1, oy1 = _points_bbox(_tile_outline(A, x1 - x0, y1 - y0), dsize)
            if ox1 <= ox0 or oy1 <= oy0:
                continue  # the tile does not show: its image is never read
            # output pixels per source pixel, at most, in any direction: its inverse is the shrink factor
            reduction = decode_reduction(1.0 / max(_largest_singular_value(A[:, :2]), 1e-6),
                                         getattr(source, "max_reduction", 1))
            img = source(reduction)
            num_read += 1
            if img.shape[:2] != tuple(src_hw):  # reduced: the same geometry through the smaller image
                src_hw = img.shape[:2]
                x0, y0, x1, y1 = _source_crop(small, src_hw, resized_hw)
                if x1 <= x0 or y1 <= y0:
                    continue
                A = mosaic_tile_matrix(M, src_hw, resized_hw, large, small, (x0, y0))
        else:
            img = source
            num_read += 1
        w, h = x1 - x0, y1 - y0
        outline = _tile_outline(A, w, h)  # (4, 2)
        ox0, oy0, ox1, oy1 = _points_bbox(outline, dsize)
        if ox1 <= ox0 or oy1 <= oy0:
            continue
        # The mask's rasterisation may take output pixels up to one pixel beyond the outline, so the crop gets a
        # replicated border wide enough that every masked pixel samples the tile itself, never warpAffine's
        # constant border. (warpAffine's own BORDER_REPLICATE on the crop takes twice as long: its outside pixels
        # go through the slow path, where a constant border is cheap.)
        out_px = 1.0 / max(_smallest_singular_value(A[:, :2]), 1e-6)  # source pixels per output pixel (at most)
        pad = 2 + int(np.ceil(out_px))
        crop = cv2.copyMakeBorder(img[y0:y1, x0:x1], pad, pad, pad, pad, cv2.BORDER_REPLICATE)
        A[:, 2] += A[:, :2] @ (-pad, -pad)  # padded crop pixels -> output
        A[:, 2] -= (ox0, oy0)
        box_wh = (ox1 - ox0, oy1 - oy0)
        warped = cv2.warpAffine(crop, A, box_wh, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
        mask = np.zeros((box_wh[1], box_wh[0]), dtype=np.uint8)
        # outline in 1/16 pixel units, relative to the box
        poly = np.round((outline - (ox0, oy0)) * 16).astype(np.int32)
        cv2.fillConvexPoly(mask, poly, 255, lineType=cv2.LINE_8, shift=4)
        cv2.copyTo(warped, mask, dst=out[oy0:oy1, ox0:ox1])
    return num_read


def _smallest_singular_value(m):
    """Smaller singular value of a 2x2 matrix, in closed form (numpy's svd costs more than the rest of a tile)."""
    (a, b), (c, d) = m.tolist()
    t = a * a + b * b + c * c + d * d
    det = a * d - b * c
    return np.sqrt(max(0.5 * (t - np.sqrt(max(t * t - 4.0 * det * det, 0.0))), 0.0))


def _points_bbox(pts, dsize):
    """Integer (x0, y0, x1, y1) of the output pixels around points pts (N, 2), inside dsize (w, h)."""
    xs, ys = pts[:, 0].tolist(), pts[:, 1].tolist()  # a few points: Python's min/max beat numpy's reductions
    x0 = max(math.floor(min(xs)), 0)
    y0 = max(math.floor(min(ys)), 0)
    x1 = min(math.ceil(max(xs)) + 1, dsize[0])
    y1 = min(math.ceil(max(ys)) + 1, dsize[1])
    return x0, y0, x1, y1


def mixup_inverse_matrix(src_hw, input_hw, jit_hw, offset, flip, pixels_hw=None):
    """(2, 3) output -> source matrix of the official MixUp image, and the (w, h) of its non-zero part.

    The official letterboxes the source into input_hw (resized to int(w0 * r) x int(h0 * r) on 114), resizes that
    canvas to jit_hw, flips it if `flip`, pads it with zeros and crops the output size at `offset` (x, y).
    src_hw: the source's (h0, w0) in that geometry; pixels_hw: the size of the array actually sampled when it is
    not src_hw (an image decoded at its file size, whose resize to src_hw is folded in here too).
    """
    h0, w0 = src_hw
    ph, pw = pixels_hw if pixels_hw is not None else src_hw
    H, W = input_hw
    oh, ow = jit_hw
    r = min(H / h0, W / w0)
    hr, wr = int(h0 * r), int(w0 * r)
    # source = (jittered + 0.5) * k - 0.5 along each axis (the cv2 resizes composed: their factors multiply)
    kx = (W / ow) * (w0 / wr) * (pw / w0)
    ky = (H / oh) * (h0 / hr) * (ph / h0)
    xo, yo = offset
    if flip:  # jittered x = ow - 1 - (x + xo)
        row_x = [-kx, 0.0, kx * (ow - 1 - xo + 0.5) - 0.5]
    else:
        row_x = [kx, 0.0, kx * (xo + 0.5) - 0.5]
    row_y = [0.0, ky, ky * (yo + 0.5) - 0.5]
    return np.array([row_x, row_y]), (ow - xo, oh - yo)


def blend_mixup_into(out, src, B, content_wh):
    """out = floor((out + mixup) / 2) in place; the MixUp image is src sampled through B (output -> source) inside
    the content rect [0, w) x [0, h) (114 around the letterboxed source) and zero outside it, as officially."""
    H, W = out.shape[:2]
    rw, rh = min(W, content_wh[0]), min(H, content_wh[1])
    if rw > 0 and rh > 0:
        mix = cv2.warpAffine(
            src, B, (rw, rh), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP, borderValue=_GRAY
        )  # (rh, rw, 3)
        region = out[:rh, :rw]
        # one pass: 0.5 a + 0.5 b - 0.25 is k - 0.25 or k + 0.25 for k = (a + b) // 2, which OpenCV rounds to k
        # (exact in float32; the test checks all 65536 pairs)
        cv2.addWeighted(region, 0.5, mix, 0.5, -0.25, dst=region)
    # blending with the zero padding halves the pixel
    out[rh:] >>= 1
    out[:rh, rw:] >>= 1
    return out
