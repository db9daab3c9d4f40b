#!/usr/bin/env python
"""Train a YOLOX model: python tools/train.py -f exps/yolox_s.py -d 8 -b 64 --fp16 (see --help; the official flags)."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # run from a checkout too

from yolox.tools.train import main  # noqa: E402

if __name__ == "__main__":
    main()
