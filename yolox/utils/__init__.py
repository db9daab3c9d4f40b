"""Utilities shared by the whole package; yolox.utils imports nothing else from yolox."""
from .boxes import *
from .lr_scheduler import *
from .model_utils import *
from .checkpoint import *
from .dist import *
from .visualize import *
from .profiler import *
from .ema import *
from .metric import *
from .logger import *
from .allreduce_norm import *
from .setup_env import *
from .seeding import *
from .training_curve import *
