"""Experiments: BaseExp, the YOLOX Exp with its factories, and get_exp to load one by file or by name."""
from .base_exp import BaseExp
from .build import get_exp, get_exp_by_file, get_exp_by_name
from .yolox_base import Exp, check_exp_value
from .checkpoint_match import load_exp_weights, matching_published_models, mismatch_hint
