"""The anchor points of YOLOX's levels and the decoding of raw box outputs on them: one decoding for the head (training
and eval), SimOTA and the deployment helpers (demo_postprocess)."""
import math
from typing import NamedTuple, Sequence, Tuple

import torch

__all__ = ["AnchorGrid", "levels_for_input", "decode_boxes", "decode_outputs"]


class AnchorGrid(NamedTuple):
    """The anchor points of all levels, flattened level by level (stride 8 first), row-major within a level."""

    x_shifts: torch.Tensor  # (A,) grid x of each anchor, float32
    y_shifts: torch.Tensor  # (A,) grid y, float32
    strides: torch.Tensor  # (A,) stride of each anchor's level, float32
    level_shapes: Tuple[Tuple[int, int, int], ...]  # per level (h, w, stride)

    @classmethod
    def from_shapes(cls, level_shapes: Sequence[Tuple[int, int, int]], device=None):
        """The grid of levels (h, w, stride), e.g. levels_for_input(height, width)."""
        xs, ys, ss = [], [], []
        for h, w, stride in level_shapes:
            yv, xv = torch.meshgrid(torch.arange(h, device=device), torch.arange(w, device=device), indexing="ij")
            xs.append(xv.reshape(-1))
            ys.append(yv.reshape(-1))
            ss.append(torch.full((h * w,), float(stride), device=device))
        return cls(torch.cat(xs).float(), torch.cat(ys).float(), torch.cat(ss),
                   tuple((int(h), int(w), int(s)) for h, w, s in level_shapes))

    @property
    def num_anchors(self):
        return self.x_shifts.numel()

    @property
    def pixel_width(self):
        """Width in pixels that the cells of the widest level span, max(w * stride): at least the input width (each
        level has ceil(input width / stride) columns) and past every anchor centre."""
        return max(w * s for _, w, s in self.level_shapes)

    def centres(self):
        """Anchor centres used by the centre prior: ((x + 0.5) * stride, (y + 0.5) * stride), each (A,)."""
        return (self.x_shifts + 0.5) * self.strides, (self.y_shifts + 0.5) * self.strides


def levels_for_input(height, width, strides=(8, 16, 32)):
    """(h, w, stride) per level for an input of height x width pixels, as the network's feature maps have them."""
    return tuple((math.ceil(height / s), math.ceil(width / s), s) for s in strides)


def decode_boxes(reg, grid: AnchorGrid):
    """Raw (B, A, 4) regression -> (B, A, 4) cx, cy, w, h in input pixels: (raw + cell) * stride, exp(raw) * stride."""
    xy = torch.stack([grid.x_shifts, grid.y_shifts], -1).to(reg.dtype)  # (A, 2)
    s = grid.strides.to(reg.dtype).unsqueeze(-1)  # (A, 1)
    return torch.cat([(reg[..., :2] + xy) * s, torch.exp(reg[..., 2:4]) * s], dim=-1)


def decode_outputs(outputs, grid: AnchorGrid):
    """Concatenated (B, A, 4 + 1 + K) outputs with raw boxes -> the same with columns 0-3 decoded (decode_boxes); the
    score columns are kept as they are."""
    return torch.cat([decode_boxes(outputs[..., :4], grid), outputs[..., 4:]], dim=-1)
