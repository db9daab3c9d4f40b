"""Experiments: BaseExp, the YOLOX Exp with its factories, get_exp to load one by file or by name, and
exp_from_checkpoint to rebuild one from a checkpoint that describes itself."""
from .base_exp import BaseExp
from .build import get_exp, get_exp_by_file, get_exp_by_name
from .yolox_base import Exp, check_exp_value
from .checkpoint_match import load_exp_weights, matching_published_models, mismatch_hint
from .from_checkpoint import (CHECKPOINT_KEYS, CheckpointExp, checkpoint_describes_itself, describe_run,
                              exp_from_checkpoint)
