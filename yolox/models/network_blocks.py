"""Convolution blocks shared by the backbones, necks and head (names match the published checkpoints)."""
import torch
from torch import nn

__all__ = [
    "get_activation", "SiLU", "BaseConv", "DWConv", "Bottleneck", "ResLayer", "SPPBottleneck", "CSPLayer", "Focus",
]


class SiLU(nn.Module):
    """x * sigmoid(x) written out, for exporters without a SiLU operator (the official export scripts swap it in for
    nn.SiLU with replace_module). Same values as nn.SiLU."""

    @staticmethod
    def forward(x):
        return x * torch.sigmoid(x)


def get_activation(name="silu", inplace=True):
    """Build the activation named `name` ("silu", "relu" or "lrelu")."""
    if name == "silu":
        return nn.SiLU(inplace=inplace)
    if name == "relu":
        return nn.ReLU(inplace=inplace)
    if name == "lrelu":
        return nn.LeakyReLU(0.1, inplace=inplace)
    raise ValueError(f"unsupported activation {name!r}; expected 'silu', 'relu' or 'lrelu'")


class BaseConv(nn.Module):
    """Conv2d (no bias, 'same' padding) -> BatchNorm2d -> activation."""

    def __init__(self, in_channels, out_channels, ksize, stride, groups=1, bias=False, act="silu"):
        super().__init__()
        pad = (ksize - 1) // 2
        self.conv = nn.Conv2d(in_channels, out_channels, ksize, stride, pad, groups=groups, bias=bias)
        self.bn = nn.BatchNorm2d(out_channels, eps=1e-3, momentum=0.03)
        # The official builds every activation in place. For SiLU that saves nothing in training: its backward needs
        # its input, which autograd then copies before the in-place write (one more pass over every feature map);
        # out of place, the same values cost 5-9% less per training step (yolox-nano, CPU). ReLU and LeakyReLU
        # differentiate from their output and stay in place.
        self.act = get_activation(act, inplace=act != "silu")

    def forward(self, x):
        return self.act(self.bn(self.conv(x)))

    def fuseforward(self, x):
        """Forward after the BN has been folded into `conv` (see yolox.utils.fuse_model)."""
        return self.act(self.conv(x))


class DWConv(nn.Module):
    """Depthwise conv (`dconv`) followed by a pointwise 1x1 conv (`pconv`)."""

    def __init__(self, in_channels, out_channels, ksize, stride=1, act="silu"):
        super().__init__()
        self.dconv = BaseConv(in_channels, in_channels, ksize, stride, groups=in_channels, act=act)
        self.pconv = BaseConv(in_channels, out_channels, 1, 1, groups=1, act=act)

    def forward(self, x):
        return self.pconv(self.dconv(x))


class Bottleneck(nn.Module):
    """1x1 reduce then 3x3 conv, with a residual when `shortcut` and the channel counts agree."""

    def __init__(self, in_channels, out_channels, shortcut=True, expansion=0.5, depthwise=False, act="silu"):
        super().__init__()
        hidden = int(out_channels * expansion)
        Conv = DWConv if depthwise else BaseConv
        self.conv1 = BaseConv(in_channels, hidden, 1, stride=1, act=act)
        self.conv2 = Conv(hidden, out_channels, 3, stride=1, act=act)
        self.use_add = shortcut and in_channels == out_channels

    def forward(self, x):
        y = self.conv2(self.conv1(x))
        return y + x if self.use_add else y


class ResLayer(nn.Module):
    """Darknet residual block: 1x1 to c/2, 3x3 back to c (LeakyReLU), plus the input."""

    def __init__(self, in_channels):
        super().__init__()
        mid = in_channels // 2
        self.layer1 = BaseConv(in_channels, mid, ksize=1, stride=1, act="lrelu")
        self.layer2 = BaseConv(mid, in_channels, ksize=3, stride=1, act="lrelu")

    def forward(self, x):
        return x + self.layer2(self.layer1(x))


class SPPBottleneck(nn.Module):
    """Spatial pyramid pooling: concat of the input and its 5/9/13 max-pools (stride 1), between two 1x1 convs."""

    def __init__(self, in_channels, out_channels, kernel_sizes=(5, 9, 13), activation="silu"):
        super().__init__()
        hidden = in_channels // 2
        self.conv1 = BaseConv(in_channels, hidden, 1, stride=1, act=activation)
        self.m = nn.ModuleList([nn.MaxPool2d(kernel_size=k, stride=1, padding=k // 2) for k in kernel_sizes])
        self.conv2 = BaseConv(hidden * (len(kernel_sizes) + 1), out_channels, 1, stride=1, act=activation)

    def forward(self, x):
        x = self.conv1(x)
        x = torch.cat([x] + [pool(x) for pool in self.m], dim=1)
        return self.conv2(x)


class CSPLayer(nn.Module):
    """CSP bottleneck with 3 convs: conv3(cat[m(conv1(x)), conv2(x)])."""

    def __init__(self, in_channels, out_channels, n=1, shortcut=True, expansion=0.5, depthwise=False, act="silu"):
        super().__init__()
        hidden = int(out_channels * expansion)
        self.conv1 = BaseConv(in_channels, hidden, 1, stride=1, act=act)
        self.conv2 = BaseConv(in_channels, hidden, 1, stride=1, act=act)
        self.conv3 = BaseConv(2 * hidden, out_channels, 1, stride=1, act=act)
        self.m = nn.Sequential(*[Bottleneck(hidden, hidden, shortcut, 1.0, depthwise, act=act) for _ in range(n)])

    def forward(self, x):
        x1 = self.m(self.conv1(x))
        x2 = self.conv2(x)
        return self.conv3(torch.cat((x1, x2), dim=1))


class Focus(nn.Module):
    """Space-to-depth (2x2 pixels to channels, official order) followed by a BaseConv."""

    def __init__(self, in_channels, out_channels, ksize=1, stride=1, act="silu"):
        super().__init__()
        self.conv = BaseConv(in_channels * 4, out_channels, ksize, stride, act=act)

    def forward(self, x):
        # x: (B, C, H, W) -> (B, 4C, H/2, W/2)
        top_left = x[..., ::2, ::2]
        bot_left = x[..., 1::2, ::2]
        top_right = x[..., ::2, 1::2]
        bot_right = x[..., 1::2, 1::2]
        return self.conv(torch.cat((top_left, bot_left, top_right, bot_right), dim=1))
