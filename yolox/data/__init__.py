"""Data pipeline: datasets, Mosaic/MixUp, transforms, samplers, the DataLoader and the CUDA prefetcher."""
from .data_augment import TrainTransform, ValTransform
from .data_prefetcher import DataPrefetcher
from .data_yaml import DataYaml, read_data_yaml
from .dataloading import DataLoader, channels_last_collate, get_yolox_datadir, worker_init_reset_seed
from .datasets import *  # noqa: F401,F403
from .samplers import InfiniteSampler, YoloBatchSampler
from .data_check import DataReport, SplitReport, check_datasets, check_exp_data, check_split
