"""YOLOFPN: Darknet-53 backbone plus the FPN neck of YOLOv3."""
import torch
from torch import nn

from .darknet import Darknet
from .network_blocks import BaseConv

__all__ = ["YOLOFPN"]


class YOLOFPN(nn.Module):
    """Returns (out_dark3, out_dark4, x0) with 128, 256, 512 channels at strides 8, 16, 32."""

    def __init__(self, depth=53, in_features=("dark3", "dark4", "dark5")):
        super().__init__()
        self.backbone = Darknet(depth)
        self.in_features = in_features
        self.out1_cbl = self._make_cbl(512, 256, 1)
        self.out1 = self._make_embedding([256, 512], 512 + 256)
        self.out2_cbl = self._make_cbl(256, 128, 1)
        self.out2 = self._make_embedding([128, 256], 256 + 128)
        self.upsample = nn.Upsample(scale_factor=2, mode="nearest")

    @staticmethod
    def _make_cbl(in_channels, out_channels, ksize):
        return BaseConv(in_channels, out_channels, ksize, stride=1, act="lrelu")

    def _make_embedding(self, filters_list, in_filters):
        return nn.Sequential(
            self._make_cbl(in_filters, filters_list[0], 1),
            self._make_cbl(filters_list[0], filters_list[1], 3),
            self._make_cbl(filters_list[1], filters_list[0], 1),
            self._make_cbl(filters_list[0], filters_list[1], 3),
            self._make_cbl(filters_list[1], filters_list[0], 1),
        )

    def forward(self, inputs):
        features = self.backbone(inputs)
        x2, x1, x0 = (features[f] for f in self.in_features)
        x1_in = torch.cat([self.upsample(self.out1_cbl(x0)), x1], 1)  # 768, /16
        out_dark4 = self.out1(x1_in)  # 256, /16
        x2_in = torch.cat([self.upsample(self.out2_cbl(out_dark4)), x2], 1)  # 384, /8
        out_dark3 = self.out2(x2_in)  # 128, /8
        return out_dark3, out_dark4, x0
