"""Backbones: CSPDarknet (YOLOX) and Darknet-21/53 (YOLOv3)."""
from torch import nn

from .network_blocks import BaseConv, CSPLayer, DWConv, Focus, ResLayer, SPPBottleneck

__all__ = ["CSPDarknet", "Darknet"]


def _run_stages(backbone, x):
    """Run stem, dark2 ... dark5 in order; return {name: output} for the names in backbone.out_features."""
    outputs = {}
    for name in ("stem", "dark2", "dark3", "dark4", "dark5"):
        x = getattr(backbone, name)(x)
        if name in backbone.out_features:
            outputs[name] = x
    return outputs


class Darknet(nn.Module):
    """Darknet-21 / Darknet-53 returning the features named in `out_features`."""

    depth2blocks = {21: [1, 2, 2, 1], 53: [2, 8, 8, 4]}

    def __init__(self, depth, in_channels=3, stem_out_channels=32, out_features=("dark3", "dark4", "dark5")):
        super().__init__()
        if depth not in self.depth2blocks:
            raise ValueError(f"Darknet depth {depth} is not supported; use one of {sorted(self.depth2blocks)}")
        self.out_features = out_features
        self.stem = nn.Sequential(
            BaseConv(in_channels, stem_out_channels, ksize=3, stride=1, act="lrelu"),
            *self.make_group_layer(stem_out_channels, num_blocks=1, stride=2),
        )
        in_channels = stem_out_channels * 2  # 64
        blocks = self.depth2blocks[depth]
        self.dark2 = nn.Sequential(*self.make_group_layer(in_channels, blocks[0], stride=2))
        in_channels *= 2  # 128
        self.dark3 = nn.Sequential(*self.make_group_layer(in_channels, blocks[1], stride=2))
        in_channels *= 2  # 256
        self.dark4 = nn.Sequential(*self.make_group_layer(in_channels, blocks[2], stride=2))
        in_channels *= 2  # 512
        self.dark5 = nn.Sequential(
            *self.make_group_layer(in_channels, blocks[3], stride=2),
            *self.make_spp_block([in_channels, in_channels * 2], in_channels * 2),
        )

    def make_group_layer(self, in_channels, num_blocks, stride=1):
        """A stride-2 3x3 conv doubling the channels, then `num_blocks` ResLayers."""
        return [
            BaseConv(in_channels, in_channels * 2, ksize=3, stride=stride, act="lrelu"),
            *[ResLayer(in_channels * 2) for _ in range(num_blocks)],
        ]

    def make_spp_block(self, filters_list, in_filters):
        return [
            BaseConv(in_filters, filters_list[0], 1, stride=1, act="lrelu"),
            BaseConv(filters_list[0], filters_list[1], 3, stride=1, act="lrelu"),
            SPPBottleneck(filters_list[1], filters_list[0], activation="lrelu"),
            BaseConv(filters_list[0], filters_list[1], 3, stride=1, act="lrelu"),
            BaseConv(filters_list[1], filters_list[0], 1, stride=1, act="lrelu"),
        ]

    def forward(self, x):
        return _run_stages(self, x)


class CSPDarknet(nn.Module):
    """CSPDarknet with depth/width multipliers; `depthwise` builds the nano variant."""

    def __init__(self, dep_mul, wid_mul, out_features=("dark3", "dark4", "dark5"), depthwise=False, act="silu"):
        super().__init__()
        if not out_features:
            raise ValueError("CSPDarknet needs at least one output feature")
        self.out_features = out_features
        Conv = DWConv if depthwise else BaseConv
        base_channels = int(wid_mul * 64)  # 64
        base_depth = max(round(dep_mul * 3), 1)  # 3

        self.stem = Focus(3, base_channels, ksize=3, act=act)
        self.dark2 = nn.Sequential(
            Conv(base_channels, base_channels * 2, 3, 2, act=act),
            CSPLayer(base_channels * 2, base_channels * 2, n=base_depth, depthwise=depthwise, act=act),
        )
        self.dark3 = nn.Sequential(
            Conv(base_channels * 2, base_channels * 4, 3, 2, act=act),
            CSPLayer(base_channels * 4, base_channels * 4, n=base_depth * 3, depthwise=depthwise, act=act),
        )
        self.dark4 = nn.Sequential(
            Conv(base_channels * 4, base_channels * 8, 3, 2, act=act),
            CSPLayer(base_channels * 8, base_channels * 8, n=base_depth * 3, depthwise=depthwise, act=act),
        )
        self.dark5 = nn.Sequential(
            Conv(base_channels * 8, base_channels * 16, 3, 2, act=act),
            SPPBottleneck(base_channels * 16, base_channels * 16, activation=act),
            CSPLayer(base_channels * 16, base_channels * 16, n=base_depth, shortcut=False,
                     depthwise=depthwise, act=act),
        )

    def forward(self, x):
        return _run_stages(self, x)
