"""YOLOPAFPN: CSPDarknet backbone plus the PAN neck of YOLOX."""
import torch
from torch import nn

from .darknet import CSPDarknet
from .network_blocks import BaseConv, CSPLayer, DWConv

__all__ = ["YOLOPAFPN"]


class YOLOPAFPN(nn.Module):
    """Returns (pan_out2, pan_out1, pan_out0) at strides 8, 16, 32."""

    def __init__(self, depth=1.0, width=1.0, in_features=("dark3", "dark4", "dark5"),
                 in_channels=(256, 512, 1024), depthwise=False, act="silu"):
        super().__init__()
        self.backbone = CSPDarknet(depth, width, depthwise=depthwise, act=act)
        self.in_features = in_features
        self.in_channels = in_channels
        Conv = DWConv if depthwise else BaseConv
        c0, c1, c2 = (int(c * width) for c in in_channels)  # 256w, 512w, 1024w
        n = round(3 * depth)

        self.upsample = nn.Upsample(scale_factor=2, mode="nearest")
        self.lateral_conv0 = BaseConv(c2, c1, 1, 1, act=act)
        self.C3_p4 = CSPLayer(2 * c1, c1, n, False, depthwise=depthwise, act=act)
        self.reduce_conv1 = BaseConv(c1, c0, 1, 1, act=act)
        self.C3_p3 = CSPLayer(2 * c0, c0, n, False, depthwise=depthwise, act=act)
        self.bu_conv2 = Conv(c0, c0, 3, 2, act=act)
        self.C3_n3 = CSPLayer(2 * c0, c1, n, False, depthwise=depthwise, act=act)
        self.bu_conv1 = Conv(c1, c1, 3, 2, act=act)
        self.C3_n4 = CSPLayer(2 * c1, c2, n, False, depthwise=depthwise, act=act)

    def forward(self, x):
        features = self.backbone(x)
        x2, x1, x0 = (features[f] for f in self.in_features)  # strides 8, 16, 32

        fpn_out0 = self.lateral_conv0(x0)  # 1024w -> 512w, /32
        f_out0 = self.C3_p4(torch.cat([self.upsample(fpn_out0), x1], 1))  # 512w, /16
        fpn_out1 = self.reduce_conv1(f_out0)  # 512w -> 256w, /16
        pan_out2 = self.C3_p3(torch.cat([self.upsample(fpn_out1), x2], 1))  # 256w, /8

        p_out1 = self.bu_conv2(pan_out2)  # 256w, /16
        pan_out1 = self.C3_n3(torch.cat([p_out1, fpn_out1], 1))  # 512w, /16
        p_out0 = self.bu_conv1(pan_out1)  # 512w, /32
        pan_out0 = self.C3_n4(torch.cat([p_out0, fpn_out0], 1))  # 1024w, /32
        return pan_out2, pan_out1, pan_out0
