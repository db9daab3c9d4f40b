"""YOLOX models: blocks, backbones, necks, head, losses and SimOTA label assignment."""
from .darknet import CSPDarknet, Darknet
from .losses import IOUloss
from .network_blocks import BaseConv, Bottleneck, CSPLayer, DWConv, Focus, ResLayer, SPPBottleneck, get_activation
from .simota import SIMOTA_MODES, AnchorGrid, Assignment, assign
from .yolo_fpn import YOLOFPN
from .yolo_head import YOLOXHead
from .yolo_pafpn import YOLOPAFPN
from .yolox import YOLOX
