#!/usr/bin/env python
"""Evaluate a YOLOX checkpoint: COCO (or VOC) AP on the Exp's validation set, or forward/NMS speed (--speed)."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # run from a checkout too

from yolox.apps.cli import run_cli  # noqa: E402
from yolox.apps.evaluate import run_eval_cli  # noqa: E402

if __name__ == "__main__":
    run_cli(run_eval_cli)
