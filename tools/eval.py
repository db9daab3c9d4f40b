#!/usr/bin/env python
"""Evaluate a YOLOX checkpoint: COCO (or VOC) AP on the Exp's validation set, or forward/NMS speed (--speed)."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # run from a checkout too

from yolox.tools.eval import main  # noqa: E402

if __name__ == "__main__":
    main()
