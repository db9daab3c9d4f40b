"""YOLOX models: blocks, backbones, necks, head, losses and SimOTA label assignment."""
from .darknet import CSPDarknet, Darknet
from .losses import IOUloss
from .network_blocks import (
    BaseConv,
    Bottleneck,
    CSPLayer,
    DWConv,
    Focus,
    ResLayer,
    SiLU,
    SPPBottleneck,
    get_activation,
)
from .simota import SIMOTA_MODES, AnchorGrid, Assignment, assign
from .yolo_fpn import YOLOFPN
from .yolo_head import YOLOXHead
from .yolo_pafpn import YOLOPAFPN
from .yolox import YOLOX
from .build import (
    create_yolox_model,
    yolov3,
    yolox_custom,
    yolox_l,
    yolox_m,
    yolox_nano,
    yolox_s,
    yolox_tiny,
    yolox_x,
)
